"""Inject each fault into a real sweep and check exactly which records survive."""

import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from bench import sweep
from bench.grid import Cell
from bench.records import read_records
from conftest import ROOT, run_cli


def _cell(backbone, **overrides):
    fields = dict(backbone=backbone, stage="baseline", image_size=32, augment="none", seed=0, data="synthetic", profile="quick", weights="none")
    return Cell(**{**fields, **overrides})


@pytest.fixture(scope="module")
def fault_sweep(tmp_path_factory):
    """One sweep through every in-cell fault, then a healthy cell."""
    from _pytest.monkeypatch import MonkeyPatch

    from backbones import list_backbones, registry

    patch = MonkeyPatch()
    out = tmp_path_factory.mktemp("out")
    patch.setenv(registry.MODULES_ENV_VAR, "fault_backbones")
    patch.setenv("FAULT_OOM_MARKER", str(out / "oom-marker"))
    list_backbones()
    cells = [_cell(n) for n in ("fault_raises", "fault_aborts", "fault_hangs", "fault_diverges", "fault_oom_once", "small_cnn")]
    try:
        result = sweep.run_sweep(cells, out, out / "cache", timeout_seconds=45, log=open(os.devnull, "w"))
    finally:
        import fault_backbones

        for name in fault_backbones.NAMES:
            registry.unregister_backbone(name)
        patch.undo()
    return out, result, {r.backbone: r for r in read_records(out).records}


def test_every_cell_gets_exactly_one_record(fault_sweep):
    out, result, records = fault_sweep
    assert len(read_records(out).records) == 6 and read_records(out).bad_lines == 0
    assert result.failed == 4


def test_exception_in_a_cell_is_recorded_and_the_sweep_goes_on(fault_sweep):
    _, _, records = fault_sweep
    assert records["fault_raises"].status == "failed"
    assert "RuntimeError: injected failure in the builder" in records["fault_raises"].error
    assert records["fault_raises"].failure == "exception"
    assert records["small_cnn"].status == "ok"


def test_abort_is_recorded_with_its_signal(fault_sweep):
    assert fault_sweep[2]["fault_aborts"].status == "failed"
    assert "killed by signal SIGABRT" in fault_sweep[2]["fault_aborts"].error
    assert fault_sweep[2]["fault_aborts"].failure == "signal"


def test_hung_cell_is_killed_at_the_timeout(fault_sweep):
    record = fault_sweep[2]["fault_hangs"]
    assert record.status == "failed" and record.error.startswith("timeout: no result after 45 s")
    assert record.failure == "timeout"


def test_divergence_stops_the_cell(fault_sweep):
    record = fault_sweep[2]["fault_diverges"]
    assert record.status == "failed" and record.error.startswith("diverged") and record.failure == "diverged"
    assert record.epochs == 1


def test_out_of_memory_retries_once_at_half_the_batch_size(fault_sweep):
    record = fault_sweep[2]["fault_oom_once"]
    assert record.status == "ok"
    assert record.batch_size == 64  # the stage's 128, halved
    # What was planned stays the identity: the retry is recorded beside it, not as another cell.
    assert record.identity["batch_size"] == 128


def test_exit_code_says_a_cell_failed(tmp_path, fault_backbones):
    result = run_cli("run", "--backbone", "fault_raises", "--stage", "baseline", "--data", "synthetic", "--profile", "quick", "--out", tmp_path, env={"BENCH_BACKBONE_MODULES": "fault_backbones"})
    assert result.returncode == 1, result.stderr[-1500:]
    assert "1 of 1 cells failed" in result.stderr
    assert (tmp_path / "README.md").exists()


def test_disk_full_fails_the_cell_and_keeps_earlier_records(tmp_path, monkeypatch, fault_backbones):
    real_append = sweep.append_record
    calls = []

    def append_until_full(out_dir, record):
        calls.append(record.key)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_append(out_dir, record)

    monkeypatch.setattr(sweep, "append_record", append_until_full)
    cells = [_cell("fault_raises", seed=s) for s in (0, 1, 2)]
    result = sweep.run_sweep(cells, tmp_path, tmp_path / "cache", log=open(os.devnull, "w"))
    assert "No space left on device" in result.write_error and "--resume" in result.write_error
    assert [r.key for r in read_records(tmp_path).records] == [cells[0].key]
    assert len(calls) == 2  # the sweep stopped instead of losing more cells


def test_parent_killed_mid_sweep_then_resumed(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "BENCH_BACKBONE_MODULES": "fault_backbones", "FAULT_SLOW_SECONDS": "600", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    argv = [sys.executable, "-m", "bench", "run", "--backbone", "small_cnn", "fault_slow", "--data", "synthetic", "--profile", "quick", "--out", str(out)]
    parent = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not read_records(out).records:
        time.sleep(1)
    time.sleep(2)  # now inside the slow second cell
    os.killpg(parent.pid, signal.SIGKILL)
    parent.wait()
    survived = read_records(out)
    assert [(r.backbone, r.status) for r in survived.records] == [("small_cnn", "ok")] and survived.bad_lines == 0

    env["FAULT_SLOW_SECONDS"] = "0"
    resumed = subprocess.run(argv + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-1500:]
    assert "1 of 2 cells already have an ok record; running 1" in resumed.stderr
    final = read_records(out).records
    assert [(r.backbone, r.status) for r in final] == [("small_cnn", "ok"), ("fault_slow", "ok")]
