"""How a summary row is named in a table: its weights cell, its settings cell, and dataset or
weights labels made unique where one label covers several contents."""

from __future__ import annotations

import json

import pandas as pd

from backbones.registry import find_backbone
from bench.render.format import missing
from bench.stages import STAGES, stage_defaults
from bench.stats import is_tuned, recipe_of

# What every run table shows of a configuration; rows equal in all of these need more words.
SHOWN_COLUMNS = ["backbone", "stage", "image_size", "augment", "weights"]
# The data a configuration trained on, named where it alone tells two rows apart.
DATA_COLUMNS = {"dataset": "data", "profile": "profile"}


def weights_cell(row) -> str:
    # A transfer or finetune row without pretrained weights says so in the row itself.
    return row.weights + (" (random init, not pretrained)" if row.weights == "none" and row.stage != "baseline" else "")


def _default_batch_size(row) -> int:
    """The batch size of the row's stage, or of its backbone's own recipe for the stage."""
    spec = find_backbone(row.backbone)  # None: a plugin backbone the reporting machine does not have
    return stage_defaults(row.stage, spec.baseline_recipe if spec else None).batch_size


def settings(row, brief: bool = False) -> str:
    """How a configuration differs from its stage's defaults beyond the table's own columns;
    ``brief`` names a tuned recipe without its study and trial (the headline's short form)."""
    parts = []
    if not missing(row.batch_size) and row.stage in STAGES and int(row.batch_size) != _default_batch_size(row):
        parts.append(f"batch {int(row.batch_size)}")
    if not missing(row.batch_size_used) and row.batch_size_used != row.batch_size:
        parts.append(f"batch {int(row.batch_size_used)} after an out-of-memory retry")
    if row.precision == "mixed":
        parts.append("mixed precision")
    if row.jit_compile:
        parts.append("XLA")
    if not missing(row.val_fraction) and row.val_fraction != 0.1:
        parts.append(f"validation {row.val_fraction:g}")
    parts += [f"{name}={value}" for name, value in json.loads(row.overrides or "[]")]
    # Tuned recipes and final fits: columns only in summaries that have one.
    recipe = recipe_of(getattr(row, "recipe", None))
    if is_tuned(recipe):
        # A study may choose its stage's default (trial 0): then its cells are the default's.
        # (Records before finetune's head was always the default transfer's also name the
        # transfer trial their head came from: the default, trial 0, every time.)
        default = " = the default" if recipe.get("values") and recipe.get("values") == recipe.get("defaults") else ""
        parts.append(f"tuned recipe{default}" if brief else f"tuned recipe ({recipe['source']}){default}")
    if getattr(row, "fit_on", "train") == "train+val":
        parts.append("final fit on train + validation")
    return ", ".join(parts)


def settings_column(summary: pd.DataFrame, brief: bool = False) -> list[str] | None:
    """Each row's settings cell, or ``None`` where every cell would be empty (no column).

    Rows that match on every shown column and on their settings, and so differ only in what
    they trained on, get the dataset or profile that tells them apart: two identical-looking
    rows with different numbers would read as a contradiction.
    """
    values = [settings(row, brief) for row in summary.itertuples()]
    if summary.empty:
        return None
    shown = summary[SHOWN_COLUMNS].astype(str).assign(settings=values)
    for _, clash in shown[shown.duplicated(keep=False)].groupby(list(shown.columns)):
        varying = [column for column in DATA_COLUMNS if summary.loc[clash.index, column].nunique() > 1]
        for index in clash.index:
            data = [f"{DATA_COLUMNS[column]} {summary.at[index, column]}" for column in varying]
            position = summary.index.get_loc(index)
            values[position] = ", ".join(part for part in [values[position], *data] if part)
    return values if any(values) else None


def distinguish_labels(summary: pd.DataFrame) -> pd.DataFrame:
    """Dataset and weights labels, extended by their content id where one label covers several contents."""
    summary = summary.copy()
    for label, content in (("dataset", "dataset_id"), ("weights", "weights_id")):
        if summary.empty or content not in summary:
            continue
        ids = summary.groupby(label)[content].nunique()
        ambiguous = summary[label].isin(ids[ids > 1].index)
        summary.loc[ambiguous, label] = summary.loc[ambiguous, label] + " (" + summary.loc[ambiguous, content].astype(str) + ")"
    return summary
