"""The sweep: run every cell not already done, retry out-of-memory once, append each record as it finishes."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from bench.executors import make_executor
from bench.grid import Cell, RunOptions
from bench.live import SweepView, format_seconds
from bench.provenance import stamped
from bench.record_store import still_to_do
from bench.records import RUNS, Record, append_record

@dataclasses.dataclass(frozen=True)
class SweepResult:
    records: list[Record]
    skipped: int
    write_error: str = ""

    @property
    def failed(self) -> int:
        return sum(r.status == "failed" for r in self.records)


def run_sweep(
    cells: list[Cell],
    out_dir: Path,
    cache_dir: Path,
    resume: bool = False,
    options: RunOptions = RunOptions(),
    log=None,
    command: str = "",
    executor: str = "local",
    ray_address: str | None = None,
) -> SweepResult:
    """Run every cell not already done, appending its record as soon as it finishes.

    Args:
        cells: in run order (a ``transfer`` cell before its ``finetune``).
        out_dir: holds ``runs.jsonl``, ``artifacts/`` and ``logs/``.
        cache_dir: activation and decoded-dataset cache.
        resume: skip cells whose latest record is ``ok``.
        options: how every cell is executed (resources, per-cell timeout: a cell past it is
            killed and recorded ``failed``); an out-of-memory retry adds its batch size.
        log: where progress goes (default stderr): redrawn in place on a terminal, else plain lines.
        command: the command line, stamped on every record so reports can name it.
        executor: ``local`` (one cell at a time here) or ``ray`` (a Ray task per cell).
        ray_address: cluster to join with ``executor="ray"``; none starts a local instance.
    """
    log = log or sys.stderr
    out_dir = Path(out_dir)
    todo = still_to_do(cells, out_dir, RUNS, resume, log, "cells")
    skipped = len(cells) - len(todo)
    records: list[Record] = []
    if not todo:
        return SweepResult(records, skipped)
    runner = make_executor(executor, out_dir, cache_dir, ray_address)
    sweep_start = time.perf_counter()
    with SweepView(len(todo), log) as view:
        for index, (cell, record) in enumerate(runner.map(todo, options, view.started, view.update), 1):
            if record.failure == "oom" and cell.recipe().batch_size > 1:
                smaller = cell.recipe().batch_size // 2
                view.say(f"    out of memory: retrying once at batch size {smaller}")
                record = runner.run(cell, dataclasses.replace(options, retry_batch_size=smaller), view.update)
            record = stamped(record, command=command)
            try:
                append_record(out_dir, record)
            except OSError as error:
                message = f"could not write the record of {cell.key} to {out_dir}: {error.strerror or error}; free space or fix permissions, then rerun with --resume"
                view.say(f"error: {message}")
                return SweepResult(records + [record], skipped, write_error=message)
            records.append(record)
            view.finished(cell, record)
            if record.status == "ok":
                val = "trained on" if record.val_accuracy is None else f"{record.val_accuracy:.1%}"
                outcome = f"ok  test {record.test_accuracy:.1%}  val {val}  ({record.path})"
            else:
                outcome = f"{record.status.upper()}  {record.error.splitlines()[0][:160] if record.error else ''}"
            left = view.sweep_seconds_left()
            view.say(
                f"    {index}/{len(todo)} {cell.key}: {outcome}  in {format_seconds(record.wall_seconds or 0)}; "
                f"elapsed {format_seconds(time.perf_counter() - sweep_start)}" + (f", about {format_seconds(left)} left" if left is not None else "")
            )
    return SweepResult(records, skipped)
