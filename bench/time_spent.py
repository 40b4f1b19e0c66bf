"""Where the time went, from the records' timings: the grid's wall time, the latest whole-grid
run's cells phase by phase, what one seed of the grid costs, records measured at the same time
as others, and compute time per seed. Nothing here formats text."""

from __future__ import annotations

import shlex

import pandas as pd

from bench.stats import STAGE_ORDER


def grid_wall_minutes(frame: pd.DataFrame) -> float | None:
    """Minutes from the first cell's start to the last cell's end, from the records' timestamps."""
    starts = pd.to_datetime(frame["started_at"], errors="coerce", utc=True)
    ends = starts + pd.to_timedelta(frame["wall_seconds"].fillna(0), unit="s")
    if starts.isna().all():
        return None
    return (ends.max() - starts.min()).total_seconds() / 60


# Where a cell's wall time goes, phase by phase, from its record's timings; ``other`` is the
# record's overhead (loading data, building the model, bookkeeping; the cell's clock starts
# after TensorFlow loads).
TIME_PHASES = {"extraction": ("cache_seconds",), "training": ("train_seconds",), "evaluation": ("eval_seconds", "measure_seconds")}
# Between one cell's end and the next one's start a run only starts a process: a longer gap
# means the same command line ran again later (another sitting).
SITTING_GAP_MINUTES = 5


def is_grid_command(command) -> bool:
    """Whether a record's command line runs the whole default grid in one go: ``bench run --all``
    without ``--resume`` (a resumed run's cells are spread over sittings, with gaps between)."""
    if not isinstance(command, str):
        return False
    try:
        words = shlex.split(command)
    except ValueError:
        return False
    return "run" in words and "--all" in words and "--resume" not in words


def grid_time(frame: pd.DataFrame) -> tuple[str, float, pd.DataFrame] | None:
    """The latest whole-grid run (``is_grid_command``; its latest sitting): its command line, its
    wall minutes (``grid_wall_minutes``) and its cells in run order, each with its minutes per
    phase (``TIME_PHASES`` and ``other``), its wall minutes and its share of the cells' wall
    time summed. ``frame`` should hold every record, replaced attempts included: a cell run
    again later is still part of what the grid cost. None where no record with a start time
    comes from such a command."""
    if frame.empty:  # no records, and so no provenance columns
        return None
    grid = frame[frame["command"].map(is_grid_command)].assign(_start=lambda f: pd.to_datetime(f["started_at"], errors="coerce", utc=True))
    grid = grid.dropna(subset=["_start"]).sort_values("_start", kind="stable")
    if grid.empty:
        return None
    cells = grid[grid["command"] == grid["command"].iloc[-1]]
    ends = cells["_start"] + pd.to_timedelta(cells["wall_seconds"].fillna(0), unit="s")
    sitting = ((cells["_start"] - ends.cummax().shift()) > pd.Timedelta(minutes=SITTING_GAP_MINUTES)).cumsum()
    cells = cells[sitting == sitting.iloc[-1]]
    rows = phase_minutes(cells)
    total = rows["wall_minutes"].sum()
    rows["share"] = rows["wall_minutes"] / total if total else 0.0
    return cells["command"].iloc[0], grid_wall_minutes(cells), rows.reset_index(drop=True)


def phase_minutes(cells: pd.DataFrame) -> pd.DataFrame:
    """Each record's label columns, its minutes per phase (``TIME_PHASES`` and ``other``) and its wall minutes."""
    rows = cells[["backbone", "stage", "image_size", "seed", "status"]].copy()
    for phase, columns in TIME_PHASES.items():
        rows[f"{phase}_minutes"] = sum(cells[c].fillna(0) for c in columns) / 60
    rows["wall_minutes"] = cells["wall_seconds"].fillna(0) / 60
    # A failed cell has no overhead of its own: its unaccounted time is its other.
    unaccounted = (rows["wall_minutes"] - sum(rows[f"{phase}_minutes"] for phase in TIME_PHASES)).clip(lower=0)
    rows["other_minutes"] = (cells["overhead_seconds"] / 60).fillna(unaccounted)
    return rows


def overlapped(frame: pd.DataFrame) -> pd.Series:
    """Whether each record was measured while another one was, on a host of the same name: their
    spans (start to start + wall time) intersect, so their timings shared the cores. The same
    measurement written twice (one key, one start) does not count against itself; a record
    without a start or a wall time is never flagged."""
    starts = pd.to_datetime(frame["started_at"], errors="coerce", utc=True)
    wall_seconds = pd.to_numeric(frame["wall_seconds"], errors="coerce")
    ends = starts + pd.to_timedelta(wall_seconds, unit="s")
    flagged = pd.Series(False, index=frame.index)
    timed = frame[starts.notna() & ends.notna() & (wall_seconds > 0)]
    for _, group in timed.groupby(timed["hostname"].fillna(""), sort=False):
        begin, end = starts[group.index].to_numpy(), ends[group.index].to_numpy()
        measurement = _measurement_ids(group).to_numpy()
        intersects = (begin[:, None] < end[None, :]) & (begin[None, :] < end[:, None]) & (measurement[:, None] != measurement[None, :])
        flagged[group.index] = intersects.any(axis=1)
    return flagged


def _measurement_ids(frame: pd.DataFrame) -> pd.Series:
    """One measurement's name: its key and its start (a record copied to another file keeps both)."""
    return frame["key"].astype(str) + "@" + frame["started_at"].astype(str)


def grid_groups(summary: pd.DataFrame, pretrained_groups) -> list:
    """The configurations that stand for the default grid's cells, in the order ``bench run
    --all`` runs them (backbones by name, stages in order): each backbone trained from scratch by
    its baseline row with the most seeds, each pretrained (backbone, stage) by the row given for
    it (the ImageNet comparison's, ``imagenet_transfer.points``)."""
    if summary.empty:
        return []
    scratch = summary[summary["stage"] == "baseline"].sort_values("seeds", ascending=False, kind="stable").groupby("backbone").head(1)
    rows = pd.concat([scratch, summary[summary["group"].isin(set(pretrained_groups))]])
    rows = rows.assign(_order=rows["stage"].map(STAGE_ORDER)).sort_values(["backbone", "_order"], kind="stable")
    return list(rows["group"])


def seed_cost(frame: pd.DataFrame, timings: pd.DataFrame, groups: list) -> pd.DataFrame:
    """For each configuration (``group``, in the order given): its lowest seed's ok record in
    ``frame`` (the latest record per key), minutes per phase (``phase_minutes``), its start, and
    whether it ran alone: no other measurement among ``timings`` (``loading.load_timings``: runs,
    trials, cost and deployment rows, replaced attempts included) was taken on its host at the
    same time (``overlapped``). A group without an ok record is left out."""
    columns = ["backbone", "stage", "image_size", "seed", "status", *(f"{p}_minutes" for p in TIME_PHASES), "wall_minutes", "other_minutes", "started_at", "alone"]
    ok = frame[(frame["status"] == "ok") & frame["group"].isin(groups)]
    if ok.empty:
        return pd.DataFrame(columns=columns)
    chosen = ok.sort_values("seed", kind="stable").groupby("group", sort=False).head(1).set_index("group").loc[[g for g in groups if g in set(ok["group"])]]
    busy = set(_measurement_ids(timings[overlapped(timings)]))
    rows = phase_minutes(chosen)
    rows["started_at"] = chosen["started_at"]
    rows["alone"] = ~_measurement_ids(chosen).isin(busy).to_numpy()
    return rows.reset_index(drop=True)[columns]


def compute_minutes_by_seed(frame: pd.DataFrame) -> dict[int, float]:
    """Per seed, the cells' wall times summed, in minutes: what the seed cost, however its
    cells were spread over runs and sessions (``--resume``)."""
    return {int(seed): float(group["wall_seconds"].fillna(0).sum()) / 60 for seed, group in frame.groupby("seed")}
