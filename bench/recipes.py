"""Recipes as files: the values a tuning study chose for one (backbone, stage), and who chose them.

A ``Recipe`` changes some of a stage's fields (``bench.stages``) for one backbone; a cell that
carries it (``bench.grid.Cell.recipes``) trains with those values, and its identity holds
their hash. A study (``bench.study``) writes its chosen recipe to
``<out>/recipes/<backbone>-<stage>.json``; ``bench run --recipes DIR`` reads it back. A
tuning trial is a cell carrying the recipe its study drew for it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from bench import files
from bench.errors import UsageError

RECIPES_DIR = "recipes"
RECIPE_SCHEMA = 1


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Values for one stage of one backbone, and the study trial that chose them.

    Attributes:
        backbone: the backbone the values were chosen for.
        stage: the stage whose fields they set.
        values: sorted ``(field, value)`` pairs, fields of ``bench.stages.Stage`` that
            ``--set`` may change too.
        study: the study that chose them.
        trial: the number of the study's trial that drew them.
    """

    backbone: str
    stage: str
    values: tuple[tuple[str, object], ...]
    study: str
    trial: int

    @property
    def source(self) -> str:
        """Who chose the values, for records and reports."""
        return f"study {self.study}, trial {self.trial}"


def recipe_path(folder: Path, backbone: str, stage: str) -> Path:
    return Path(folder) / f"{backbone}-{stage}.json"


def write_recipe(folder: Path, recipe: Recipe, **about) -> Path:
    """Write ``recipe`` into ``folder`` atomically, with what the study says ``about`` it
    (its budget, its best validation accuracy, the defaults); returns the file."""
    document = {
        "schema": RECIPE_SCHEMA,
        "backbone": recipe.backbone,
        "stage": recipe.stage,
        "values": dict(recipe.values),
        "study": recipe.study,
        "trial": recipe.trial,
        **about,
    }
    path = recipe_path(folder, recipe.backbone, recipe.stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    return files.write_text(path, json.dumps(document, indent=2, sort_keys=True) + "\n")


def read_recipe(path: Path) -> Recipe:
    """The recipe in ``path``, its values checked by the rules ``--set`` follows.

    Raises:
        UsageError: the file cannot be read, is not a recipe, or holds a value ``--set``
            would refuse; the message names the file and the fix.
    """
    from bench.options import parse_override

    fix = f"rerun `python -m bench tune` for it, or remove {path}"
    try:
        document = json.loads(Path(path).read_text())
    except OSError as error:
        raise UsageError(f"cannot read recipe file {path}: {error.strerror or error}; fix its permissions or {fix}") from None
    except ValueError as error:
        raise UsageError(f"recipe file {path} is not JSON ({error}); {fix}") from None
    if not isinstance(document, dict) or document.get("schema") != RECIPE_SCHEMA:
        raise UsageError(f"recipe file {path} is not a schema-{RECIPE_SCHEMA} recipe; {fix}")
    kinds = {"backbone": str, "stage": str, "values": dict, "study": str, "trial": int}
    wrong = [name for name, kind in kinds.items() if not isinstance(document.get(name), kind)]
    if wrong:
        raise UsageError(f"recipe file {path} lacks {', '.join(wrong)} (or has the wrong type); {fix}")
    if path.name != recipe_path(path.parent, document["backbone"], document["stage"]).name:
        raise UsageError(f"recipe file {path} holds the recipe of {document['backbone']} {document['stage']}; rename it or {fix}")
    values = []
    for name, value in document["values"].items():
        try:
            values.append(parse_override(f"{name}={value}"))
        except ValueError as error:
            raise UsageError(f"recipe file {path}: {error}; {fix}") from None
    return Recipe(document["backbone"], document["stage"], tuple(sorted(values)), document["study"], document["trial"])


def find_recipes(folder: Path, backbone: str, stages) -> tuple[Recipe, ...]:
    """The recipes ``folder`` holds for ``backbone``'s ``stages`` (those it lacks run their defaults)."""
    return tuple(read_recipe(recipe_path(folder, backbone, stage)) for stage in stages if recipe_path(folder, backbone, stage).exists())
