"""Where numbers come from: record counts, data, machine, software, code, dates and commands,
for run records and for cost records."""

from __future__ import annotations

import pandas as pd

from bench.render.format import commands_line, distinct
from bench.time_spent import compute_minutes_by_seed, grid_wall_minutes


def environment_lines(frame: pd.DataFrame) -> list[str]:
    """Machine, software and code of the records in ``frame`` (runs or cost measurements)."""
    gpu = distinct(frame, "gpu")
    return [
        f"- Machine: {distinct(frame, 'cpu')}; GPU: {gpu if gpu != 'unknown' else 'none'}",
        f"- Software: TensorFlow {distinct(frame, 'tf_version')}, Keras {distinct(frame, 'keras_version')}, Python {distinct(frame, 'python_version')}",
        f"- Code: git {', '.join(sorted({str(c)[:7] for c in frame['git_commit'].dropna() if c})) or 'unknown'}"
        + (" (with uncommitted changes)" if frame["git_dirty"].fillna(False).astype(bool).any() else ""),
    ]


def provenance(frame: pd.DataFrame, bad_lines: int) -> list[str]:
    """The run records' provenance bullets: counts, data, environment, dates, compute per seed, commands."""
    wall = grid_wall_minutes(frame)
    lines = [
        f"- Records: {len(frame)} cells ({(frame.status == 'ok').sum()} ok, {(frame.status == 'failed').sum()} failed)"
        + (f"; {bad_lines} malformed line(s) in runs.jsonl skipped" if bad_lines else ""),
        f"- Data: {distinct(frame, 'dataset')}; profile: {distinct(frame, 'profile')}",
        *environment_lines(frame),
        f"- Run between {frame['started_at'].min()} and {frame['started_at'].max()}"
        + (f"; wall time {wall:.0f} min from the first cell's start to the last cell's end" if wall else ""),
    ]
    by_seed = compute_minutes_by_seed(frame)
    if len(by_seed) > 1:
        lines.append(
            f"- Compute time (the cells' wall times summed): {sum(by_seed.values()):.0f} min; "
            + ", ".join(f"seed {seed}: {minutes:.0f} min" for seed, minutes in by_seed.items())
        )
    lines += commands_line(frame)
    if ((frame["weights"] == "none") & (frame["stage"] != "baseline")).any():
        lines.append("- Rows with weights `none` in a transfer or finetune stage ran from random initialisation, not pretrained weights.")
    return lines


def runtime_lines(frame: pd.DataFrame) -> list[str]:
    """The runtimes, their versions, the threads each got and the CPU's flags, where records say them."""
    measured = frame[frame["threads"].notna()] if "threads" in frame else frame.iloc[:0]
    if measured.empty:
        return []
    versions = sorted({f"{r.runtime} {r.runtime_version}".strip() for r in measured.itertuples()})
    threads = ", ".join(str(n) for n in sorted({int(n) for n in measured["threads"]}))  # a column with gaps holds floats
    return [f"- Runtimes: {', '.join(versions)}; threads: {threads} (every runtime alike); CPU flags: {distinct(measured, 'cpu_flags')}"]


def cost_provenance(cost: pd.DataFrame, bad_lines: int) -> list[str]:
    """The cost records' provenance bullets: counts, the random inputs' shape, environment, dates, commands."""
    inputs = sorted({f"{r.native_size} px, {r.num_classes} classes (`{r.dataset}`)" for r in cost.itertuples()})
    return [
        f"- Records: {len(cost)} ({(cost.status == 'ok').sum()} ok, {(cost.status != 'ok').sum()} failed)"
        + (f"; {bad_lines} malformed line(s) in cost.jsonl skipped" if bad_lines else ""),
        f"- Inputs: random images of {'; '.join(inputs)}",
        *environment_lines(cost),
        *runtime_lines(cost),
        f"- Measured between {cost['started_at'].min()} and {cost['started_at'].max()}",
        *commands_line(cost),
    ]
