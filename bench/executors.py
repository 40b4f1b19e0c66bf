"""Executors: where and when cells run. ``local`` runs them here one after another; ``ray``
(``bench.ray_executor``) makes each a Ray task. Both run a cell through ``run_isolated``."""

from __future__ import annotations

from pathlib import Path

from bench.grid import Cell, RunOptions
from bench.isolation import run_isolated
from bench.records import Record

EXECUTORS = ("local", "ray")


class LocalExecutor:
    """Cells one after another on this machine, each in its own child process.

    ``RunOptions.cpus`` and ``gpus`` reserve nothing here: one cell runs at a time."""

    def __init__(self, out_dir: Path, cache_dir: Path):
        self.out_dir, self.cache_dir = out_dir, cache_dir

    def run(self, cell: Cell, options: RunOptions, on_progress=None) -> Record:
        """``on_progress(cell, event)`` gets the cell's progress events (``bench.progress``)."""
        return run_isolated(cell, self.out_dir, self.cache_dir, options, on_progress and (lambda event: on_progress(cell, event)))

    def map(self, cells: list[Cell], options: RunOptions, on_start=None, on_progress=None):
        """Yield ``(cell, record)`` as each cell finishes, in order."""
        for cell in cells:
            if on_start:
                on_start(cell)
            yield cell, self.run(cell, options, on_progress)


def make_executor(name: str, out_dir: Path, cache_dir: Path, ray_address: str | None = None):
    if name == "local":
        return LocalExecutor(out_dir, cache_dir)
    if name == "ray":
        from bench.ray_executor import RayExecutor

        return RayExecutor(out_dir, cache_dir, ray_address)
    raise ValueError(f"unknown executor {name!r}; choose from {', '.join(EXECUTORS)}")
