"""The "Where the grid's time goes" section: the latest whole-grid run's cells, phase by
phase, from ``bench.time_spent.grid_time``."""

from __future__ import annotations

import pandas as pd

from bench.render.format import number, pct, table
from bench.time_spent import TIME_PHASES

PHASE_EXPLANATION = (
    "Extraction: computing the frozen backbone's activations into the cache (paid by the first cell "
    "of a backbone that needs them; later cells read them). Training: the training loop, or the linear "
    "probe's solver. Evaluation: the test pass and the throughput, latency and FLOP measurements. "
    "Other: loading the data, building the model, bookkeeping. Between cells: starting each cell's "
    "process and TensorFlow."
)
PHASES = (*TIME_PHASES, "other")


def _phase_cells(row) -> dict:
    """A cell's label and its minutes per phase, as both sections' tables show them."""
    return {
        "backbone": row.backbone,
        "stage": row.stage,
        "size px": row.image_size,
        "seed": row.seed,
        **{f"{phase} min": number(getattr(row, f"{phase}_minutes"), 1) for phase in PHASES},
        "wall min": number(row.wall_minutes, 1),
    }


def grid_time_section(grid: tuple[str, float, pd.DataFrame] | None) -> str:
    """The section's markdown, or empty where no record comes from a whole-grid run."""
    if grid is None:
        return ""
    command, wall_minutes, cells = grid
    total = cells["wall_minutes"].sum()
    phases = ", ".join(f"{phase} {number(cells[f'{phase}_minutes'].sum())} min" + (f" ({pct(cells[f'{phase}_minutes'].sum() / total, 0)})" if total else "") for phase in PHASES)
    lead = (
        f"The {len(cells)} cells of `{command}`, the latest run of the whole grid in one go, in run order. "
        f"Wall time: {number(wall_minutes)} min from the first cell's start to the last cell's end, "
        f"{number(wall_minutes - total)} min of it between cells; the cells' own wall times sum to {number(total)} min: {phases}. {PHASE_EXPLANATION}"
    )
    rows = [
        {
            **_phase_cells(row),
            "share of cell time": pct(row.share, 0),
            **({"status": row.status} if (cells["status"] != "ok").any() else {}),
        }
        for row in cells.itertuples()
    ]
    return "\n".join(["## Where the grid's time goes", "", lead, "", table(rows)])


def seed_cost_section(cells: pd.DataFrame) -> str:
    """The "What one seed of the grid costs" section's markdown (``bench.time_spent.seed_cost``), or
    empty where no published row has a record."""
    if cells.empty:
        return ""
    total = cells["wall_minutes"].sum()
    phases = ", ".join(f"{phase} {number(cells[f'{phase}_minutes'].sum())} min" for phase in PHASES)
    shared = int((~cells["alone"].astype(bool)).sum())
    lead = (
        f"One cell per (backbone, stage) of this report, as `bench run --all` orders them (a from-scratch backbone by its row "
        f"with the most seeds; a pretrained backbone at each stage by the row the ImageNet comparison takes), each by its lowest seed's record: "
        f"{len(cells)} cells whose own wall times sum to {number(total)} min: {phases}. These are each cell's "
        "own timings, wherever and whenever it ran, not one command's: a cell that found its backbone's activations "
        "already cached shows no extraction (the cell or run that cached them paid), and a finetune that found no saved "
        "transfer head trained one first, inside its other. **alone**: no other recorded measurement (another cell, a tuning "
        "trial, a cost or deployment row, in this report's record files or any folder below them) ran on a host of "
        "the same name during the cell (its timings did not share the cores with one); "
        + (f"{shared} of {len(cells)} did not run alone. " if shared else "every one ran alone. ")
        + PHASE_EXPLANATION
    )
    rows = [
        {
            **_phase_cells(row),
            "alone": "yes" if row.alone else "no",
            "started": str(row.started_at)[:10],
        }
        for row in cells.itertuples()
    ]
    return "\n".join(["## What one seed of the grid costs", "", lead, "", table(rows)])
