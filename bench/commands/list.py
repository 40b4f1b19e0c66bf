"""``bench list``: registered backbones (with their stages and default sizes), stages and policies."""

from __future__ import annotations

from backbones import get_backbone, list_backbones
from bench.augment import POLICIES
from bench.stages import BASELINE_RECIPES, STAGES


def handle(args, command: str) -> int:
    from bench.render.listing import render_listing

    # A backbone's own baseline recipe is listed under the stage's name and the recipe's.
    stages = {**STAGES, **{f"{recipe.name} ({name})": recipe for name, recipe in BASELINE_RECIPES.items()}}
    print(render_listing([get_backbone(n) for n in list_backbones()], stages, POLICIES))
    return 0
