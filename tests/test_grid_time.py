"""Where the grid's time goes: the latest whole-grid command's cells, phase by phase."""

import dataclasses
from pathlib import Path

import pytest

from bench.provenance import stamped
from bench.records import read_records
from bench.render.grid_time import grid_time_section
from bench.stats import grid_time, is_grid_command, records_frame

FIXTURE = Path(__file__).parent / "fixtures" / "runs.jsonl"
GRID = "python -m bench run --all --data DIR --out results"


def _timed(record, command, started_at, **seconds):
    return stamped(dataclasses.replace(record, **seconds), command=command, started_at=started_at)


def _records():
    base = read_records(FIXTURE).records
    phases = dict(cache_seconds=60.0, train_seconds=240.0, eval_seconds=20.0, measure_seconds=10.0, wall_seconds=360.0)
    return [
        _timed(base[0], "python -m bench run --all --out old", "2026-11-01T10:00:00+00:00", **phases),
        # The grid: its second cell (by start time) is written first.
        _timed(base[2], GRID, "2026-12-01T10:06:00+00:00", **{**phases, "cache_seconds": 0.0}),
        _timed(base[1], GRID, "2026-12-01T10:00:00+00:00", **phases),
        # Later, but not a whole grid in one go: a resumed grid and a single backbone.
        _timed(base[3], "python -m bench run --all --resume --out results", "2026-12-02T10:00:00+00:00", **phases),
        _timed(base[4], "python -m bench run --backbone small_cnn --out results", "2026-12-03T10:00:00+00:00", **phases),
    ]


def test_a_whole_grid_is_run_all_without_resume():
    assert is_grid_command(GRID)
    assert not is_grid_command("python -m bench run --all --resume")
    assert not is_grid_command("python -m bench run --backbone small_cnn")
    assert not is_grid_command("python -m bench cost --all")
    assert not is_grid_command("") and not is_grid_command(None) and not is_grid_command('run --all "unclosed')


def test_the_latest_grid_cells_in_run_order_with_their_phases():
    records = _records()
    command, wall_minutes, cells = grid_time(records_frame(records))
    assert command == GRID
    assert list(cells["backbone"]) == [records[2].backbone, records[1].backbone]  # by start, not by line
    first = cells.iloc[0]
    assert (first.extraction_minutes, first.training_minutes, first.evaluation_minutes) == pytest.approx((1.0, 4.0, 0.5))
    assert first.other_minutes == pytest.approx(0.5)  # the wall time the phases do not account for
    assert cells.iloc[1].extraction_minutes == 0.0
    assert cells["share"].sum() == pytest.approx(1.0)
    # From the first start (10:00) to the last end (10:06 + 6 min).
    assert wall_minutes == pytest.approx(12.0)


def test_no_grid_no_section():
    records = [r for r in _records() if not is_grid_command(r.provenance.command)]
    assert grid_time(records_frame(records)) is None
    assert grid_time_section(None) == ""


def test_the_section_names_the_command_totals_and_failures():
    records = _records()
    text = grid_time_section(grid_time(records_frame(records)))
    assert f"`{GRID}`" in text and "Wall time: 12 min" in text
    assert "sum to 12 min: extraction 1 min (8 %), training 8 min (67 %)" in text
    header = next(line for line in text.splitlines() if line.startswith("| backbone"))
    assert "status" not in header  # no status column when every cell is ok
    failed = [dataclasses.replace(records[1], status="failed", failure="timeout"), *records[2:]]
    assert "| failed" in grid_time_section(grid_time(records_frame(failed)))
