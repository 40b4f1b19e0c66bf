"""``bench list``: registered backbones (with their stages and default sizes), stages and policies."""

from __future__ import annotations

from backbones import get_backbone, list_backbones
from bench.augment import POLICIES
from bench.stages import STAGES


def handle(args, command: str) -> int:
    from bench.render.listing import render_listing

    print(render_listing([get_backbone(n) for n in list_backbones()], STAGES, POLICIES))
    return 0
