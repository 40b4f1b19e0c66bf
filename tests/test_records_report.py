import dataclasses
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench import publish
from bench.render.compare import render_comparison
from bench.render.provenance import provenance
from bench.render.runs import accuracy_cell, accuracy_table, axes_tables, cost_table, headline_table, render_headline, winners
from bench.stats import records_frame, summarize
from bench.time_spent import compute_minutes_by_seed, grid_wall_minutes
from bench.records import RUNS_FILE, append_record, latest_by_key, read_records

FIXTURE = Path(__file__).parent / "fixtures" / "runs.jsonl"


def _fixture_records():
    return read_records(FIXTURE).records


def _replace(record, **changes):
    """``record`` with ``changes`` made to its fields and, where they name it, to its identity."""
    identity = {**record.identity, **{k: v for k, v in changes.items() if k in record.identity}}
    return dataclasses.replace(record, **changes, identity=identity)


def test_fixture_loads_cleanly():
    loaded = read_records(FIXTURE)
    assert loaded.bad_lines == 0
    assert {r.stage for r in loaded.records} == {"baseline", "transfer", "finetune"}


def test_append_then_read_round_trips(tmp_path):
    record = _fixture_records()[0]
    append_record(tmp_path, record)
    append_record(tmp_path, dataclasses.replace(record, seed=1, key=record.key + "x"))
    loaded = read_records(tmp_path)
    assert loaded.records[0] == record and len(loaded.records) == 2 and loaded.bad_lines == 0


def test_truncated_and_malformed_lines_are_skipped_and_counted(tmp_path):
    lines = FIXTURE.read_text().splitlines()
    (tmp_path / RUNS_FILE).write_text("\n".join(lines[:3]) + "\nnot json at all\n" + lines[3][: len(lines[3]) // 2])
    loaded = read_records(tmp_path)
    assert len(loaded.records) == 3 and loaded.bad_lines == 2
    # An append after a torn line still lands as a readable record of its own.
    append_record(tmp_path, _fixture_records()[4])
    again = read_records(tmp_path)
    assert len(again.records) == 4 and again.bad_lines == 2
    assert again.records[-1] == _fixture_records()[4]


def test_latest_record_per_cell_wins():
    first = _fixture_records()[0]
    later = dataclasses.replace(first, test_accuracy=0.99)
    assert latest_by_key([first, later])[first.key].test_accuracy == 0.99


def test_report_renders_tables_csv_and_plots(tmp_path):
    shutil.copy(FIXTURE, tmp_path / RUNS_FILE)
    paths = publish.write_report(tmp_path)
    names = {p.name for p in paths}
    assert {"README.md", "summary.csv", "accuracy_by_stage.png", "accuracy_vs_throughput.png", "training_curves.png"} <= names
    for p in paths:
        assert p.stat().st_size > 0
    text = (tmp_path / "README.md").read_text()
    assert "## Accuracy" in text and "## Cost" in text and "## Winners" in text
    records = _fixture_records()
    for r in records:
        assert f"| {r.backbone}" in text
    best = max(records, key=lambda r: r.test_accuracy)
    assert f"{100 * best.test_accuracy:.1f} %" in text
    assert "70.0 %" in text and "79.7 %" in text and "83.8 %" in text  # the write-up's column
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert len(summary) == len({(r.backbone, r.stage) for r in records})
    assert set(summary["stage"]) == {"baseline", "transfer", "finetune"}


def test_report_counts_bad_lines_and_lists_failures(tmp_path):
    record = _fixture_records()[0]
    failed = _replace(record, key="x/failed", backbone="x", status="failed", failure="diverged", error="diverged: the training loss became NaN")
    (tmp_path / RUNS_FILE).write_text(record.to_json() + "\n" + failed.to_json() + "\n{\"truncated")
    publish.write_report(tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert "1 malformed line(s) in runs.jsonl skipped" in text
    assert "## Failed cells" in text and "diverged" in text


def _with_seeds(record, accuracies):
    return [_replace(record, seed=i, key=f"{record.key}-s{i}", test_accuracy=a) for i, a in enumerate(accuracies)]


def test_seeds_give_mean_std_and_student_t_interval():
    base = _fixture_records()[2]
    frame = records_frame(_with_seeds(base, [0.80, 0.82, 0.84]))
    row = summarize(frame).iloc[0]
    assert row.seeds == 3
    assert row.test_accuracy == pytest.approx(0.82)
    assert row.test_accuracy_std == pytest.approx(0.02)
    assert row.test_accuracy_ci95 == pytest.approx(4.303 * 0.02 / 3**0.5)


def test_accuracy_cells_show_mean_interval_and_n():
    base = _fixture_records()[2]
    three = summarize(records_frame(_with_seeds(base, [0.80, 0.82, 0.84]))).iloc[0]
    assert accuracy_cell(three) == f"82.0 % ± {100 * 4.303 * 0.02 / 3**0.5:.1f} (n=3)"
    one = summarize(records_frame([base])).iloc[0]
    assert accuracy_cell(one) == f"{100 * base.test_accuracy:.1f} % (n=1)"  # no interval from one seed


def test_winners_name_the_rows_tied_with_the_best_and_the_leanest_by_anonymous_memory():
    a = _replace(_fixture_records()[2], peak_anon_mb=900.0, peak_rss_mb=3000.0)
    b = _replace(a, backbone="other", peak_anon_mb=1200.0, peak_rss_mb=1500.0)
    far = _replace(a, backbone="far", peak_anon_mb=1300.0)
    records = _with_seeds(a, [0.80, 0.82, 0.84]) + [dataclasses.replace(r, key="o" + r.key) for r in _with_seeds(b, [0.79, 0.81, 0.83])]
    records += [dataclasses.replace(r, key="f" + r.key) for r in _with_seeds(far, [0.50, 0.501, 0.502])]
    lines = winners(summarize(records_frame(records)))
    accuracy, _, memory = lines
    assert f"`{a.backbone}`" in accuracy.split("tied")[0] and "(n=3)" in accuracy
    assert "tied within the 95 % intervals: `other`" in accuracy and "`far`" not in accuracy
    # Anonymous memory decides, not RSS (which counts reclaimable cache pages).
    assert memory.startswith(f"- **Memory**: `{a.backbone}`") and "900 MB peak anonymous (3,000 MB RSS)" in memory


def test_only_rows_tied_with_another_are_marked_and_memory_falls_back_to_rss_where_rows_lack_anon():
    a = _replace(_fixture_records()[2], peak_anon_mb=900.0, peak_rss_mb=3000.0)
    b = _replace(a, backbone="other", peak_anon_mb=None, peak_rss_mb=1500.0)
    clear = _with_seeds(a, [0.80, 0.801, 0.802]) + [dataclasses.replace(r, key="o" + r.key) for r in _with_seeds(b, [0.50, 0.501, 0.502])]
    summary = summarize(records_frame(clear))
    assert "tied best" not in accuracy_table(summary) and "tied best" not in headline_table(summary)
    # One row without anonymous memory: the ranking goes by RSS for all rather than skip it.
    assert winners(summary)[2].startswith("- **Memory**: `other`") and "1,500 MB peak RSS" in winners(summary)[2]
    close = _with_seeds(a, [0.80, 0.82, 0.84]) + [dataclasses.replace(r, key="o" + r.key) for r in _with_seeds(b, [0.79, 0.81, 0.83])]
    assert headline_table(summarize(records_frame(close))).count("(tied best)") == 2


def test_compute_time_is_summed_per_seed_in_the_provenance():
    base = _fixture_records()[2]
    records = [dataclasses.replace(r, wall_seconds=60.0 * (r.seed + 1)) for r in _with_seeds(base, [0.8, 0.81, 0.82])]
    frame = records_frame(records)
    assert compute_minutes_by_seed(frame) == {0: 1.0, 1: 2.0, 2: 3.0}
    assert "- Compute time (the cells' wall times summed): 6 min; seed 0: 1 min, seed 1: 2 min, seed 2: 3 min" in provenance(frame, 0)


def test_seeds_that_read_the_cache_keep_the_extraction_the_first_one_paid_and_the_headline_counts_compute():
    base = _fixture_records()[2]
    records = [dataclasses.replace(r, cache_seconds=400.0 if r.seed == 0 else 1.0, wall_seconds=120.0) for r in _with_seeds(base, [0.8, 0.81, 0.82])]
    frame = records_frame(records)
    summary = summarize(frame)
    assert summary.iloc[0].cache_seconds == 400.0  # not the median, 1 s, which would hide it
    assert "(+ 400)" in headline_table(summary)
    assert "3 cells of" in render_headline(frame, summary) and "6 min of compute" in render_headline(frame, summary)


def test_overlapping_intervals_are_tied_not_losers():
    a, b = _fixture_records()[2], _replace(_fixture_records()[2], backbone="other")
    close = _with_seeds(a, [0.80, 0.82, 0.84]) + [dataclasses.replace(r, key="o" + r.key) for r in _with_seeds(b, [0.79, 0.81, 0.83])]
    summary = summarize(records_frame(close))
    assert summary["tied_best"].all()
    far = _with_seeds(a, [0.80, 0.801, 0.802]) + [dataclasses.replace(r, key="o" + r.key) for r in _with_seeds(b, [0.50, 0.501, 0.502])]
    summary = summarize(records_frame(far))
    assert summary.set_index("backbone")["tied_best"].to_dict() == {a.backbone: True, "other": False}


def test_axes_tables_and_plots_render_from_a_fixture(tmp_path):
    base = next(r for r in _fixture_records() if r.backbone == "mobilenet_v2" and r.stage == "transfer")
    grid = [
        _replace(base, key=f"{size}-{policy}", image_size=size, augment=policy, test_accuracy=0.5 + size / 1000 + (0.01 if policy == "flip-crop" else 0))
        for size in (96, 128, 160)
        for policy in ("none", "flip-crop")
    ]
    for r in grid:
        append_record(tmp_path, r)
    paths = {p.name for p in publish.write_report(tmp_path)}
    assert {"accuracy_vs_size.png", "accuracy_vs_cost.png"} <= paths
    text = (tmp_path / "README.md").read_text()
    assert "## Augmentation and input size" in text
    assert "flip-crop @ 160 px" in text and "none @ 96 px" in text
    assert "66.0 % (n=1)" in text  # 0.5 + 0.16 (flip-crop adds 0.01 at 160 px: 67.0 %)
    # Several seeds: the axes cell shows the interval and n, as the accuracy table does.
    seeded = [dataclasses.replace(r, key=f"{r.key}-s{i}", seed=i, identity={**r.identity, "seed": i}, test_accuracy=r.test_accuracy + d)
              for r in grid for i, d in enumerate((-0.01, 0.0, 0.01))]
    table = axes_tables(summarize(records_frame(seeded)))
    assert f"66.0 % ± {100 * 4.303 * 0.01 / 3**0.5:.1f} (n=3)" in table


def test_notes_file_heads_the_report(tmp_path):
    shutil.copy(FIXTURE, tmp_path / RUNS_FILE)
    (tmp_path / publish.NOTES_FILE).write_text("Data: JPEG re-encoded copy; costs accuracy.\n")
    publish.write_report(tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert text.index("JPEG re-encoded copy") < text.index("## Winners")


def test_report_merges_shard_folders(tmp_path):
    records = _fixture_records()
    shards = [tmp_path / f"shard-{i}" for i in range(2)]
    for i, shard in enumerate(shards):
        shard.mkdir()
        for record in records[i::2]:
            append_record(shard, record)
    merged = tmp_path / "merged"
    merged.mkdir()
    publish.write_report(merged, extra_inputs=shards)
    summary = pd.read_csv(merged / "summary.csv")
    assert len(summary) == len(records)
    assert "Records: 7 cells (7 ok, 0 failed)" in (merged / "README.md").read_text()


def test_cost_table_shows_min_max_over_seeds():
    base = _fixture_records()[2]
    seeded = [dataclasses.replace(r, infer_images_per_second=100.0 + 10 * r.seed) for r in _with_seeds(base, [0.8, 0.81, 0.82])]
    text = cost_table(summarize(records_frame(seeded)))
    assert "110 (64) [100-120]" in text


def test_readme_block_is_spliced_between_markers_only(tmp_path):
    shutil.copy(FIXTURE, tmp_path / RUNS_FILE)
    readme = tmp_path / "PROJECT.md"
    readme.write_text(f"# Project\n\nintro\n\n{publish.README_START}\nstale table\n{publish.README_END}\n\n## Quick start\n")
    publish.write_report(tmp_path, project_readme=readme)
    text = readme.read_text()
    assert "stale table" not in text
    assert text.startswith("# Project\n\nintro\n\n") and text.endswith(f"{publish.README_END}\n\n## Quick start\n")
    block = text[text.index(publish.README_START) : text.index(publish.README_END)]
    assert "write-up" in block.splitlines()[1] and "**Accuracy**" in block and "**Memory**" in block
    # Random-init transfer rows say so in the row itself.
    assert "**none (random init, not pretrained)**" in block
    # Running it twice changes nothing.
    publish.write_report(tmp_path, project_readme=readme)
    assert readme.read_text() == text


def test_grid_wall_time_spans_first_start_to_last_end():
    records = _fixture_records()[:2]
    frame = records_frame(records)
    first, second = (pd.Timestamp(r.provenance.started_at) for r in records)
    expected = (max(first + pd.Timedelta(seconds=records[0].wall_seconds), second + pd.Timedelta(seconds=records[1].wall_seconds)) - min(first, second)).total_seconds() / 60
    assert grid_wall_minutes(frame) == pytest.approx(expected)
    assert grid_wall_minutes(frame) > records[1].wall_seconds / 60


def test_records_from_before_the_failure_field_load_with_it(tmp_path):
    import json

    record = _fixture_records()[0]
    old = {k: v for k, v in json.loads(record.to_json()).items() if k not in ("failure", "notes")}
    lines = [
        {**old, "status": "failed", "error": "out of memory: MemoryError: x"},
        {**old, "status": "failed", "error": "timeout: no result after 5 s"},
        {**old, "status": "failed", "error": "killed by signal SIGABRT"},
        {**old, "status": "failed", "error": "diverged: the training loss became NaN"},
        {**old, "status": "failed", "error": "RuntimeError: boom"},
        {**old, "status": "ok", "error": "inline: no transfer head was saved, so this cell trained one first"},
    ]
    (tmp_path / RUNS_FILE).write_text("".join(json.dumps(line) + "\n" for line in lines))
    loaded = read_records(tmp_path).records
    assert [r.failure for r in loaded] == ["oom", "timeout", "signal", "diverged", "exception", ""]
    assert loaded[-1].error == "" and loaded[-1].notes.startswith("no transfer head was saved")


def _numeric_fields():
    from bench.records import Record

    return [f.name for f in dataclasses.fields(Record) if "None" in str(f.type) and ("float" in str(f.type) or "int" in str(f.type))]


def _broken_line(kind: str) -> str:
    import json

    ok = json.loads(_fixture_records()[0].to_json())
    if kind.startswith("null:"):
        return json.dumps({**ok, kind.removeprefix("null:"): None})
    return {
        "array": "[1, 2, 3]",
        "string": '"failure"',
        "number": "42",
        "null": "null",
        "wrong-type": json.dumps({**ok, "seed": "zero"}),
        "unknown-status": json.dumps({**ok, "status": "done"}),
        "history-not-dicts": json.dumps({**ok, "history": [1, 2]}),
        "nan-accuracy": json.dumps({**ok, "test_accuracy": float("nan")}),  # Python's json writes NaN
    }[kind]


SKIPPED_LINES = ["array", "string", "number", "null", "wrong-type", "unknown-status", "history-not-dicts", "nan-accuracy"] + [
    f"null:{name}" for name in __import__("bench.records", fromlist=["x"]).OK_REQUIRED_NUMBERS
]


@pytest.mark.parametrize("kind", SKIPPED_LINES)
def test_valid_json_that_is_no_usable_record_is_skipped_and_counted(tmp_path, kind):
    (tmp_path / RUNS_FILE).write_text(FIXTURE.read_text() + _broken_line(kind) + "\n")
    loaded = read_records(tmp_path)
    assert loaded.records == _fixture_records() and loaded.bad_lines == 1


def test_report_resume_and_compare_go_on_past_every_such_line(tmp_path):
    """None of them traces back; report counts the lines, --resume and compare ignore them."""
    from bench import sweep
    from bench.compare import compare
    from bench.grid import Cell

    out = tmp_path / "out"
    out.mkdir()
    done = Cell("efficientnet_b0", "transfer", 96, "flip", 0, data="synthetic", profile="quick")
    # A record of that very cell (its identity), among the fixture's and every kind of bad line.
    done_line = dataclasses.replace(_fixture_records()[0], **done.record_fields()).to_json() + "\n"
    (out / RUNS_FILE).write_text(FIXTURE.read_text() + "".join(_broken_line(kind) + "\n" for kind in SKIPPED_LINES) + done_line)
    publish.write_report(out)
    assert f"{len(SKIPPED_LINES)} malformed line(s) in runs.jsonl skipped" in (out / "README.md").read_text()
    resumed = sweep.run_sweep([done], out, tmp_path / "cache", resume=True, log=open(os.devnull, "w"))
    assert resumed.skipped == 1 and resumed.records == []
    text = render_comparison(compare(FIXTURE, out))
    assert "0 regression(s) beyond the noise in 7 matched cell(s)" in text and "only in NEW" in text


def test_ok_records_missing_every_optional_number_still_render(tmp_path):
    import json

    from bench.compare import compare
    from bench.records import OK_REQUIRED_NUMBERS

    optional = [name for name in _numeric_fields() if name not in OK_REQUIRED_NUMBERS]
    records = _fixture_records()
    lines = [json.dumps({**json.loads(r.to_json()), **dict.fromkeys(optional)}) for r in records]
    (tmp_path / RUNS_FILE).write_text("\n".join(lines) + "\n")
    assert len(read_records(tmp_path).records) == len(records)
    publish.write_report(tmp_path)
    assert "## Cost" in (tmp_path / "README.md").read_text()
    assert len(compare(tmp_path, tmp_path).deltas) == len(records)


def test_epoch_budgets_of_one_configuration_make_an_accuracy_for_time_curve(tmp_path):
    from bench.stats import TRAIN_FLOPS_PER_FORWARD, time_curves

    base = next(r for r in _fixture_records() if r.stage == "baseline")
    curve = [
        _replace(base, key=f"e{epochs}-s{seed}", epochs=epochs, seed=seed, test_accuracy=0.70 + epochs / 100 + seed / 1000, train_seconds=60.0 * epochs)
        for epochs in (4, 1, 2)
        for seed in (0, 1)
    ]
    # The same budgets under another augmentation: a second curve, never averaged into the first;
    # and one configuration at a single budget, which is no curve.
    other = [_replace(r, key="other-" + r.key, augment="flip") for r in curve if r.seed == 0]
    single = _replace(base, key="single", augment="none", epochs=3)
    for r in curve + other + [single]:
        append_record(tmp_path, r)
    frame = records_frame(curve + other + [single])
    curves = time_curves(frame, summarize(frame))
    assert len(curves) == 6 and curves["curve"].nunique() == 2
    first = curves[curves["augment"] == base.augment]
    assert list(first["epochs"]) == [1, 2, 4] and list(first["seeds"]) == [2, 2, 2]
    assert list(first["train_minutes"]) == [1.0, 2.0, 4.0]
    assert first["train_gflops_per_second"].iloc[0] == pytest.approx(TRAIN_FLOPS_PER_FORWARD * base.flops_per_image * base.train_images_per_second / 1e9)
    paths = {p.name for p in publish.write_report(tmp_path)}
    assert "accuracy_for_time.png" in paths
    text = (tmp_path / "README.md").read_text()
    section = text.split("## Accuracy for training time")[1].split("\n## ")[0]
    assert section.count(f"| {base.backbone} ") == 6 and "| 4 " in section and "| 3 " not in section
    # Without a second budget there is no curve: no section, no plot.
    alone = tmp_path / "alone"
    alone.mkdir()
    append_record(alone, single)
    assert "accuracy_for_time.png" not in {p.name for p in publish.write_report(alone)}
    assert "## Accuracy for training time" not in (alone / "README.md").read_text()
