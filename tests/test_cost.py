"""`bench cost`: a tiny real run, its records, table and plot; bad flags; a crashing backbone;
and the rendering of cost records (with and without the optional anonymous-memory column)."""

import dataclasses
import json
import sys

import numpy as np
import pytest
from PIL import Image

from bench import publish
from bench.cli import main
from bench.cost_records import COST_FILE, CostConfig, CostRecord, append_cost_record, read_cost_records
from bench.provenance import Provenance
from bench.records import RUNS_FILE
from conftest import run_cli

POSITIVE = ("infer_images_per_second", "latency_p50_ms", "latency_p95_ms", "flops_per_image", "total_params", "peak_rss_mb", "wall_seconds")


@pytest.fixture(scope="module")
def cost_run(tmp_path_factory):
    """One real `bench cost` (a process per measurement): two backbones that crash, then small_cnn and tests/tiny_backbones.py's tiny_probe."""
    out = tmp_path_factory.mktemp("cost") / "out"
    done = run_cli("cost", "--backbone", "fault_aborts", "fault_raises", "small_cnn", "tiny_probe", "--image-size", "32", "--batch-size", "2", "--out", out,
                   env={"BENCH_BACKBONE_MODULES": "fault_backbones,tiny_backbones"})
    return out, done


def test_tiny_cost_run_writes_records_table_and_plot(cost_run):
    out, done = cost_run
    loaded = read_cost_records(out)
    assert loaded.bad_lines == 0
    records = {r.backbone: r for r in loaded.records if r.status == "ok"}
    assert set(records) == {"small_cnn", "tiny_probe"}, done.stderr[-2000:]
    for record in records.values():
        assert record.image_size == 32 and record.batch_size == 2
        assert record.native_size == 32 and record.num_classes == 10 and record.dataset == "synthetic"
        for field in POSITIVE:
            assert getattr(record, field) > 0, field
        assert record.latency_p95_ms >= record.latency_p50_ms
        assert record.provenance.cpu and record.provenance.tf_version and record.provenance.keras_version and record.provenance.started_at
        assert record.provenance.command.startswith("python -m bench cost --backbone fault_aborts fault_raises small_cnn tiny_probe")
    # Each stage's trainable part, and only the backbone's own stages.
    small, tiny = records["small_cnn"], records["tiny_probe"]
    # the machine's matmul rate, timed beside each row: what the baseline step's rate is read against
    assert all(r.matmul_gflops > 0 for r in records.values())
    assert small.baseline_train_images_per_second > 0 and small.baseline_trainable_params == small.total_params - 1344  # BatchNorm statistics do not train
    assert small.transfer_train_images_per_second is None and small.finetune_train_images_per_second is None
    assert tiny.baseline_train_images_per_second is None
    assert tiny.transfer_train_images_per_second > 0 and tiny.finetune_train_images_per_second > 0
    # transfer trains the head; finetune the same head plus the backbone's top
    assert 0 < tiny.transfer_trainable_params < tiny.finetune_trainable_params < tiny.total_params
    # linear: one Dense layer over the 8 pooled features, timed as L-BFGS iterations
    assert tiny.linear_train_images_per_second > 0 and tiny.linear_trainable_params == (8 + 1) * 10 and small.linear_train_images_per_second is None
    table = (out / "cost.md").read_text()
    assert "| `small_cnn`  | 32" in table and "| `tiny_probe` | 32" in table and "n/a" in table, table
    assert "train img/s: linear (L-BFGS on pooled features)" in table and "rows x L-BFGS iterations per second" in table
    if sys.platform.startswith("linux"):  # /proc tells anonymous memory apart: the table shows it beside RSS
        assert all(0 < r.peak_anon_mb <= r.peak_rss_mb for r in records.values()) and "peak anon MB" in table
    assert (out / "cost_throughput_vs_gflops.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "cost 4/4: tiny_probe/32px/batch2" in done.stderr
    # `bench report` on the folder renders the same section into its README.
    assert main(["report", "--out", str(out)]) == 0
    assert "## Cost without training" in (out / "README.md").read_text()


def _square_tree(root, size=(40, 40)):
    for split in ("train", "test"):
        for name in ("cat", "dog", "eel"):
            (root / split / name).mkdir(parents=True)
            Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(root / split / name / "0.png")
    return root


@pytest.mark.parametrize("argv,message", [
    (["--backbone", "mobilenet"], "unknown backbone 'mobilenet'. Did you mean 'mobilenet_v2'?"),
    (["--backbone", "resnet50", "--image-size", "16"], "--image-size 16 is below resnet50's minimum of 32 px"),
    (["--backbone", "small_cnn", "--data", "/no/such/folder"], "--data '/no/such/folder' is neither 'synthetic', 'cifar10' nor a directory"),
    (["--backbone", "small_cnn", "--data", "{tree}"], "not square"),
    (["--backbone", "small_cnn", "--data", "{empty}"], "has no train/ subfolder"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / COST_FILE).write_text('{"earlier": "record"}\n')
    tree, empty = _square_tree(tmp_path / "tree", size=(40, 30)), tmp_path / "empty"
    empty.mkdir()
    argv = [a.format(tree=tree, empty=empty) for a in argv]
    code = main(["cost", *argv, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and message in err, err
    assert sorted(p.name for p in out.iterdir()) == [COST_FILE] and (out / COST_FILE).read_text() == '{"earlier": "record"}\n'


@pytest.mark.parametrize("argv,message", [
    (["--all", "--backbone", "small_cnn"], "not allowed with argument"),
    (["--backbone", "small_cnn", "--batch-size", "0"], "expected a positive integer"),
    (["--backbone", "small_cnn", "--precision", "half"], "invalid choice: 'half'"),
])
def test_bad_flags_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["cost", *argv])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_unwritable_out_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = main(["cost", "--backbone", "small_cnn", "--out", str(blocker / "out")])
    assert code == 2 and "pick a writable folder" in capsys.readouterr().err


def test_image_folder_sets_native_size_and_classes(tmp_path):
    from bench.cli import build_parser
    from bench.plan import CostRequest, plan_costs

    tree = _square_tree(tmp_path / "flowers", size=(48, 48))
    args = build_parser().parse_args(["cost", "--backbone", "small_cnn", "mobilenet_v2", "--batch-size", "8", "16", "--data", str(tree)])
    configs = plan_costs(CostRequest.from_args(args))
    # small_cnn trains from scratch at the data's native size; mobilenet_v2 runs at its own.
    assert [(c.backbone, c.image_size, c.batch_size) for c in configs] == [("small_cnn", 48, 8), ("small_cnn", 48, 16), ("mobilenet_v2", 128, 8), ("mobilenet_v2", 128, 16)]
    assert {(c.native_size, c.num_classes, c.dataset) for c in configs} == {(48, 3, "flowers")}
    assert len({c.key for c in configs}) == 4


def test_a_crashing_backbone_becomes_a_failed_record_and_the_rest_still_run(cost_run):
    out, done = cost_run
    assert done.returncode == 1
    records = {r.backbone: r for r in read_cost_records(out).records}
    assert records["fault_aborts"].status == "failed" and records["fault_aborts"].error.startswith("killed by signal SIGABRT")
    assert records["fault_raises"].status == "failed" and "injected failure in the builder" in records["fault_raises"].error
    assert records["small_cnn"].status == records["tiny_probe"].status == "ok"
    table = (out / "cost.md").read_text()
    assert "Failed measurements" in table and "fault_aborts" in table and "| `small_cnn`" in table


def test_a_measurement_the_oom_killer_ended_says_out_of_memory(tmp_path, monkeypatch):
    import signal

    from bench import cost
    from bench.isolation import ChildEnd

    def killed(work, args, log_file, what, *rest):
        # What run_in_child reports when the kernel's OOM killer (counted by the cgroup) sent SIGKILL.
        return ChildEnd(None, False, -signal.SIGKILL, 2, 3, 5.0)

    monkeypatch.setattr(cost, "run_in_child", killed)
    record = cost.measure_isolated(CostConfig("small_cnn", 32, 64), tmp_path)
    assert record.status == "failed" and record.error.startswith("out of memory: killed by signal SIGKILL"), record.error
    assert record.wall_seconds == 5.0


# --------------------------------------------------------------------------- rendering (no TensorFlow)


def _record(backbone="mobilenet_v2", size=128, **fields):
    config = CostConfig(backbone, size, 64)
    values = dict(
        status="ok", dtype_policy="float32", stages=["transfer", "finetune"], infer_images_per_second=300.0, infer_spread=0.04,
        latency_p50_ms=17.0, latency_p95_ms=19.0, flops_per_image=2.0e8, total_params=2_900_000, transfer_train_images_per_second=9000.0,
        finetune_train_images_per_second=600.0, transfer_trainable_params=660_000, finetune_trainable_params=2_300_000, peak_rss_mb=1300.0,
        wall_seconds=12.0,
        provenance=Provenance(cpu="AMD EPYC (2 cores)", tf_version="2.21.0", keras_version="3.15.1", python_version="3.11.7", started_at="2026-01-01T00:00:00+00:00"),
    )
    values.update(fields)
    return CostRecord(**config.identity(), **values)


def test_cost_records_render_with_optional_anon_column_failures_and_torn_lines(tmp_path):
    append_cost_record(tmp_path, _record(infer_images_per_second=100.0))
    append_cost_record(tmp_path, _record("resnet50", 64, flops_per_image=1.0e9, infer_images_per_second=200.0))
    with open(tmp_path / COST_FILE, "a") as handle:
        handle.write('{"key": "torn')  # a writer killed mid-line
    append_cost_record(tmp_path, _record(infer_images_per_second=321.0))  # a re-run supersedes the first
    append_cost_record(tmp_path, dataclasses.replace(_record("efficientnet_b0", 96), status="failed", error="killed by signal SIGKILL\nmore"))
    loaded = read_cost_records(tmp_path)
    assert len(loaded.records) == 4 and loaded.bad_lines == 1
    paths = publish.write_cost_report(tmp_path)
    assert [p.name for p in paths] == ["cost.md", "cost_throughput_vs_gflops.png"]
    text = (tmp_path / "cost.md").read_text()
    assert "| 321 ±2 %" in text and "| 100 " not in text
    assert "1 malformed line(s) in cost.jsonl skipped" in text
    assert "- `efficientnet_b0/96px/batch64/in32px-10classes`: killed by signal SIGKILL" in text
    assert "peak anon MB" not in text
    assert "linear" not in text  # no record measured the linear stage: no column, no explanation
    assert "9,000 (0.66 M)" in text and "| n/a " in text
    append_cost_record(tmp_path, _record("resnet50", 64, peak_anon_mb=812.0))
    publish.write_cost_report(tmp_path)
    text = (tmp_path / "cost.md").read_text()
    assert "peak anon MB" in text and "| 812 " in text
    assert "% of matmul" not in text  # no record timed the matmul: no column, no explanation


def test_the_baseline_step_s_rate_is_shown_against_the_matmul_peak(tmp_path):
    # 3 forward passes x 0.2 GFLOPs x 250 images/s = 150 GFLOP/s, 75 % of a 200 GFLOP/s matmul.
    append_cost_record(tmp_path, _record("small_cnn", 32, stages=["baseline"], baseline_train_images_per_second=250.0, baseline_trainable_params=500_000, matmul_gflops=200.0))
    append_cost_record(tmp_path, _record(matmul_gflops=210.0))  # no baseline step: n/a
    publish.write_cost_report(tmp_path)
    text = (tmp_path / "cost.md").read_text()
    assert "baseline GFLOP/s (% of matmul)" in text and "2,048-square matmul" in text
    assert "| 150 (75 %)" in text and text.count("| n/a ") >= 2


def test_report_adds_the_cost_section_only_when_a_cost_file_exists(tmp_path):
    from pathlib import Path

    fixture = Path(__file__).parent / "fixtures" / RUNS_FILE
    (tmp_path / RUNS_FILE).write_bytes(fixture.read_bytes())
    publish.write_report(tmp_path)
    assert "Cost without training" not in (tmp_path / "README.md").read_text()
    assert not (tmp_path / "cost.md").exists()
    append_cost_record(tmp_path, _record())
    publish.write_report(tmp_path)
    readme = (tmp_path / "README.md").read_text()
    assert "## Cost without training" in readme and "![throughput against GFLOPs](cost_throughput_vs_gflops.png)" in readme
    assert (tmp_path / "cost.md").exists() and (tmp_path / "cost_throughput_vs_gflops.png").exists()


def test_cost_only_folder_reports_without_grid_records(tmp_path):
    append_cost_record(tmp_path, _record())
    publish.write_report(tmp_path)
    readme = (tmp_path / "README.md").read_text()
    assert "## Cost without training" in readme and "- Records: 1 (1 ok, 0 failed)" in readme and "nan" not in readme


def test_config_key_holds_every_setting_that_changes_the_numbers():
    base = CostConfig("mobilenet_v2", 128, 64)
    variants = [dataclasses.replace(base, **change) for change in ({"image_size": 96}, {"batch_size": 32}, {"native_size": 64}, {"num_classes": 100}, {"precision": "mixed"}, {"jit_compile": True})]
    assert len({base.key, *(v.key for v in variants)}) == 7
    # the name of the data does not: the inputs are random either way
    assert dataclasses.replace(base, dataset="cifar10").key == base.key
    assert json.loads(_record().to_json())["key"] == base.key


@pytest.mark.parametrize("fails", ["append", "table"])
def test_disk_full_stops_with_one_line_and_keeps_earlier_records(fails, tmp_path, monkeypatch, capsys):
    import errno

    from bench import cost

    out = tmp_path / "out"
    out.mkdir()
    append_cost_record(out, _record("resnet50", 64))
    before = (out / COST_FILE).read_bytes()
    # No child process: this checks what the parent does with what it gets.
    monkeypatch.setattr(cost, "measure_isolated", lambda config, out_dir, *rest: _record(config.backbone, config.image_size))
    full = OSError(errno.ENOSPC, "No space left on device")
    if fails == "append":
        monkeypatch.setattr(cost, "append_cost_record", lambda *a: (_ for _ in ()).throw(full))
    else:
        monkeypatch.setattr(publish.files, "write_text", lambda *a: (_ for _ in ()).throw(full))
    code = main(["cost", "--backbone", "small_cnn", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith("error: could not write to") and "No space left on device" in err[-1]
    kept = (out / COST_FILE).read_bytes()
    assert kept.startswith(before) and read_cost_records(out).bad_lines == 0
    assert not (out / "cost.md").exists()


def test_killing_the_parent_kills_its_measuring_child_and_keeps_whole_lines(tmp_path):
    import os
    import signal
    import subprocess
    import time

    from conftest import ROOT

    out = tmp_path / "out"
    out.mkdir()
    append_cost_record(out, _record())
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    parent = subprocess.Popen([sys.executable, "-m", "bench", "cost", "--backbone", "small_cnn", "--out", str(out)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    logs = out / "logs"
    deadline = time.monotonic() + 120
    # The child opens its log right after asking to die with its parent.
    while not (logs.is_dir() and any(logs.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.1)
    children = subprocess.run(["pgrep", "-P", str(parent.pid), "-f", "multiprocessing.spawn"], capture_output=True, text=True).stdout.split()
    assert children, "no measuring child found"
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") and "Z" not in open(f"/proc/{pid}/stat").read().split()[2] for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(os.path.exists(f"/proc/{pid}") and "Z" not in open(f"/proc/{pid}/stat").read().split()[2] for pid in children)
    loaded = read_cost_records(out)
    assert loaded.bad_lines == 0 and [r.key for r in loaded.records] == [_record().key]
