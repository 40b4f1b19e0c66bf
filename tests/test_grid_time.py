"""Where the grid's time goes: the latest whole-grid command's cells, phase by phase."""

import dataclasses
from pathlib import Path

import pytest

from bench.provenance import stamped
from bench.records import read_records
from bench.render.grid_time import grid_time_section
from bench.stats import records_frame
from bench.time_spent import grid_time, is_grid_command

FIXTURE = Path(__file__).parent / "fixtures" / "runs.jsonl"
GRID = "python -m bench run --all --data DIR --out results"


def _timed(record, command, started_at, **seconds):
    return stamped(dataclasses.replace(record, **seconds), command=command, started_at=started_at)


def _records():
    base = read_records(FIXTURE).records
    phases = dict(cache_seconds=60.0, train_seconds=240.0, eval_seconds=20.0, measure_seconds=10.0, overhead_seconds=30.0, wall_seconds=360.0)
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
    assert grid_time(records_frame([])) is None  # a folder of tuning trials only
    assert grid_time_section(None) == ""


def test_the_section_names_the_command_totals_and_failures():
    records = _records()
    text = grid_time_section(grid_time(records_frame(records)))
    assert f"`{GRID}`" in text and "Wall time: 12 min" in text
    assert "0 min of it between cells; the cells' own wall times sum to 12 min: extraction 1 min (8 %), training 8 min (67 %)" in text
    header = next(line for line in text.splitlines() if line.startswith("| backbone"))
    assert "status" not in header  # no status column when every cell is ok
    failed = [dataclasses.replace(records[1], status="failed", failure="timeout"), *records[2:]]
    assert "| failed" in grid_time_section(grid_time(records_frame(failed)))


def test_a_command_line_run_again_counts_its_latest_sitting():
    records = _records()
    again = [_timed(r, GRID, r.provenance.started_at.replace("2026-12-01", "2026-12-05")) for r in records[1:3]]
    command, wall_minutes, cells = grid_time(records_frame([*records, again[0]]))
    # The one cell of the later sitting, not both sittings with a gap of days between them.
    assert command == GRID and len(cells) == 1 and wall_minutes == pytest.approx(6.0)
    # Cells of one sitting are a process start apart, however many.
    _, wall_minutes, cells = grid_time(records_frame([*records, *again]))
    assert len(cells) == 2 and wall_minutes == pytest.approx(12.0)


def test_records_without_a_start_or_a_command_are_passed_over():
    records = _records()
    unstamped = [stamped(records[1], started_at=""), stamped(records[2], command=None), records[4]]
    assert grid_time(records_frame(unstamped)) is None
    assert len(grid_time(records_frame([*unstamped, records[2]]))[2]) == 1


def test_a_failed_cell_counts_its_unaccounted_time_as_other():
    records = _records()
    failed = dataclasses.replace(records[1], status="failed", failure="timeout", train_seconds=None, cache_seconds=None, eval_seconds=None,
                                 measure_seconds=None, overhead_seconds=None, wall_seconds=120.0)
    _, _, cells = grid_time(records_frame([failed, records[2]]))
    timed_out = cells[cells["status"] == "failed"].iloc[0]
    assert (timed_out.training_minutes, timed_out.other_minutes, timed_out.wall_minutes) == (0.0, 2.0, 2.0)
    # Without any wall time there is no share to print.
    idle = [dataclasses.replace(r, wall_seconds=0.0, **{k: 0.0 for k in ("cache_seconds", "train_seconds", "eval_seconds", "measure_seconds", "overhead_seconds")}) for r in records[1:3]]
    assert "inf" not in grid_time_section(grid_time(records_frame(idle))) and "nan" not in grid_time_section(grid_time(records_frame(idle)))


def test_the_report_counts_a_cell_that_a_later_run_replaced(tmp_path):
    """A grid cell run again later (same key, another command) is still part of what the grid cost."""
    from bench import publish
    from bench.records import append_record

    records = _records()
    rerun = stamped(records[1], command="python -m bench run --backbone x --resume", started_at="2026-12-06T10:00:00+00:00")
    for record in (*records, rerun):
        append_record(tmp_path, record)
    publish.write_report(tmp_path)
    assert f"The 2 cells of `{GRID}`" in (tmp_path / "README.md").read_text()


def _summary_and_frames(records):
    from bench.stats import summarize

    frame = records_frame(records)
    return frame, summarize(frame)


def test_records_measured_at_the_same_time_on_one_host_are_flagged():
    from bench.time_spent import overlapped

    records = _records()
    # records[1] runs 10:00-10:06 and records[2] 10:06-10:12: one after the other, not together.
    assert not overlapped(records_frame(records)).any()
    during = _timed(records[3], "python -m bench cost --all", "2026-12-01T10:03:00+00:00", wall_seconds=60.0)
    elsewhere = stamped(during, hostname="another-host")
    flags = overlapped(records_frame([*records, during]))
    assert list(flags) == [False, False, True, False, False, True]
    # Another host's measurement shares no cores; the same measurement copied twice is not two.
    assert not overlapped(records_frame([*records, elsewhere])).any()
    assert not overlapped(records_frame([*records, records[1]])).any()
    # No start or no wall time: nothing to compare.
    assert not overlapped(records_frame([*records, stamped(during, started_at="")])).any()


def test_seed_cost_takes_each_rows_lowest_seed_and_says_whether_it_ran_alone():
    from bench.render.grid_time import seed_cost_section
    from bench.time_spent import grid_groups, seed_cost

    records = _records()
    second = dataclasses.replace(records[1], key=f"{records[1].key}-s1", seed=1, identity={**records[1].identity, "seed": 1})
    seed1 = _timed(second, GRID, "2026-12-01T09:00:00+00:00", wall_seconds=600.0)
    every = [*records, seed1]
    frame, summary = _summary_and_frames(every)
    groups = list(summary["group"])
    cells = seed_cost(frame, records_frame(every), groups)
    assert len(cells) == len(summary)
    assert (cells["wall_minutes"] == 6.0).all() and cells["alone"].all()  # seed 0's 6 min, not seed 1's 10
    assert (cells["seed"] == 0).all()
    busy = _timed(records[4], "python -m bench cost --all", records[1].provenance.started_at, wall_seconds=30.0)
    flagged = seed_cost(frame, records_frame([*every, busy]), groups)
    assert not flagged.set_index("backbone").loc[records[1].backbone, "alone"].all()
    text = seed_cost_section(flagged)
    assert "## What one seed of the grid costs" in text and f"{len(cells)} cells whose own wall times sum to" in text
    assert f"1 of {len(cells)} did not run alone" in text and "| no " in text
    assert seed_cost_section(seed_cost(frame, records_frame(every), [])) == ""
    # The grid's rows: from-scratch baselines and the pretrained groups given, in `run --all`'s order.
    ordered = grid_groups(summary, [g for g, s in zip(summary["group"], summary["stage"]) if s != "baseline"])
    stages = summary.set_index("group").loc[ordered, ["backbone", "stage"]]
    assert list(stages.itertuples(index=False)) == sorted(stages.itertuples(index=False), key=lambda r: (r.backbone, ["baseline", "linear", "transfer", "finetune"].index(r.stage)))
    assert grid_groups(summary.iloc[0:0], []) == []


def test_a_cell_measured_beside_a_cost_row_in_a_folder_below_did_not_run_alone(tmp_path):
    """The "alone" column sees every kind of recorded measurement, in the report's folders and below them."""
    from bench.cost_records import CostConfig, CostRecord, append_cost_record
    from bench.loading import load_timings
    from bench.provenance import Provenance
    from bench.records import append_record
    from bench.time_spent import seed_cost

    records = _records()
    for record in records:
        append_record(tmp_path, record)
    frame, summary = _summary_and_frames(records)
    groups = list(summary["group"])

    def not_alone():
        return [(cell.backbone, cell.stage) for cell in seed_cost(frame, load_timings([tmp_path]), groups).itertuples() if not cell.alone]

    assert not_alone() == []
    # records[2] (efficientnet_b0 finetune) ran 10:00-10:06; a cost row measured at 10:02 on its host shared its cores.
    host = records[2].provenance.hostname

    def cost_row(hostname, started_at):
        return CostRecord(**CostConfig("small_cnn", 32, 64).identity(), status="ok", wall_seconds=60.0, provenance=Provenance(hostname=hostname, started_at=started_at))

    (tmp_path / "deploy").mkdir()
    append_cost_record(tmp_path / "deploy", cost_row(f"{host}-elsewhere", "2026-12-01T10:02:00+00:00"))
    append_cost_record(tmp_path / "deploy", cost_row(host, "2026-12-01T11:00:00+00:00"))  # after it
    (tmp_path / "tuning").mkdir()
    (tmp_path / "tuning" / "trials.jsonl").write_text("not a record\n")  # a line that is no record leaves nothing out
    timings = load_timings([tmp_path])
    assert sorted(timings["kind"].unique()) == ["cost", "run"] and len(timings) == len(records) + 2
    assert not_alone() == []

    append_cost_record(tmp_path / "deploy", cost_row(host, "2026-12-01T10:02:00+00:00"))
    assert not_alone() == [("efficientnet_b0", "finetune")]


def test_timings_read_a_runs_file_given_by_any_name(tmp_path):
    from bench.loading import load_timings

    records = _records()
    path = tmp_path / "old-runs.jsonl"
    path.write_text("".join(r.to_json() + "\n" for r in records))
    assert list(load_timings([path])["key"]) == [r.key for r in records]
    assert load_timings([tmp_path / "missing"]).empty


def test_a_failed_or_converted_measurement_spans_the_time_it_ran(tmp_path):
    """A failed record is written when its work has ended, a converted model's row after its conversion:
    both spans still start where the work did, on this host."""
    import datetime
    import socket

    from bench.cost_records import CostConfig, CostRecord, append_cost_record
    from bench.cost import failed_cost_record
    from bench.loading import load_timings
    from bench.provenance import Provenance

    config = CostConfig("small_cnn", 32, 64)
    append_cost_record(tmp_path, failed_cost_record(config, "timeout", "killed", wall_seconds=3600.0))
    converted = CostConfig("small_cnn", 32, 64, runtime="onnxruntime")
    stamp = "2026-12-01T10:10:00+00:00"
    append_cost_record(tmp_path, CostRecord(**converted.identity(), status="ok", wall_seconds=700.0, convert_seconds=600.0, provenance=Provenance(hostname="vm", started_at=stamp)))
    failed, ok = load_timings([tmp_path]).itertuples()
    started = datetime.datetime.fromisoformat(failed.started_at)
    hour_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    assert failed.hostname == socket.gethostname() and abs((started - hour_ago).total_seconds()) < 60
    assert ok.started_at == "2026-12-01T10:00:00+00:00"  # 600 s of conversion before its stamp
