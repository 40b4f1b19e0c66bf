"""Inject each fault into a real sweep and check exactly which records survive."""

import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from bench import sweep
from bench.grid import Cell, RunOptions
from bench.records import read_records
from conftest import ROOT, run_cli


def _cell(backbone, **overrides):
    fields = dict(backbone=backbone, stage="baseline", image_size=32, augment="none", seed=0, data="synthetic", profile="quick", weights="none")
    return Cell(**{**fields, **overrides})


@pytest.fixture(scope="module")
def fault_sweep(tmp_path_factory):
    """One sweep through every in-cell fault that ends by itself (the hang has its own test); the
    out-of-memory cell's retry is the healthy cell that runs after the faults."""
    from _pytest.monkeypatch import MonkeyPatch

    from conftest import registered

    out = tmp_path_factory.mktemp("out")
    cells = [_cell(n) for n in ("fault_raises", "fault_aborts", "fault_diverges", "fault_killed", "fault_oom_once")]
    with MonkeyPatch.context() as patch, registered("fault_backbones"):
        patch.setenv("FAULT_OOM_MARKER", str(out / "oom-marker"))
        patch.setenv("FAULT_KILL_MARKER", str(out / "kill-marker"))
        # A generous limit: a regression that hangs fails the test instead of the suite.
        result = sweep.run_sweep(cells, out, out / "cache", options=RunOptions(timeout_seconds=600), log=open(os.devnull, "w"))
    return out, result, {r.backbone: r for r in read_records(out).records}


def test_every_cell_gets_exactly_one_record(fault_sweep):
    out, result, records = fault_sweep
    assert len(read_records(out).records) == 5 and read_records(out).bad_lines == 0
    assert result.failed == 4


def test_exception_in_a_cell_is_recorded_and_the_sweep_goes_on(fault_sweep):
    _, _, records = fault_sweep
    assert records["fault_raises"].status == "failed"
    assert "RuntimeError: injected failure in the builder" in records["fault_raises"].error
    assert records["fault_raises"].failure == "exception"
    assert records["fault_oom_once"].status == "ok"  # the last cell, after four failures


def test_abort_is_recorded_with_its_signal(fault_sweep):
    assert fault_sweep[2]["fault_aborts"].status == "failed"
    assert "killed by signal SIGABRT" in fault_sweep[2]["fault_aborts"].error
    assert fault_sweep[2]["fault_aborts"].failure == "signal"


def test_hung_cell_is_killed_at_the_timeout(tmp_path, fault_backbones):
    """A cell that never returns (its builder sleeps for an hour) is killed at --cell-timeout."""
    start = time.monotonic()
    result = sweep.run_sweep([_cell("fault_hangs")], tmp_path, tmp_path / "cache", options=RunOptions(timeout_seconds=3), log=open(os.devnull, "w"))
    assert time.monotonic() - start < 30  # the deadline and the kill, not the hour
    (hung,) = read_records(tmp_path).records
    assert hung.status == "failed" and hung.failure == "timeout" and result.failed == 1
    assert hung.error.startswith("timeout: no result after 3 s"), hung.error


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


def test_a_kill_of_unknown_cause_is_recorded_and_not_retried(fault_sweep):
    out, _, records = fault_sweep
    record = records["fault_killed"]
    assert record.status == "failed" and record.failure == "signal"
    assert record.error.startswith("killed by signal SIGKILL")
    assert (out / "kill-marker").read_text() == "built\n"  # built once: no out-of-memory retry


def test_exit_code_says_a_cell_failed(tmp_path, monkeypatch, capsys):
    from bench import executors
    from bench.cli import main
    from bench.grid import failed_record

    # No child process: what a failing cell's child returns is fault_sweep's subject; this is the command's.
    monkeypatch.setattr(executors, "run_isolated", lambda cell, *args: failed_record(cell, "exception", "RuntimeError: boom"))
    code = main(["run", "--backbone", "small_cnn", "--data", "synthetic", "--profile", "quick", "--out", str(tmp_path), "--cache-dir", str(tmp_path / "cache")])
    assert code == 1
    assert "1 of 1 cells failed" in capsys.readouterr().err
    assert "RuntimeError: boom" in (tmp_path / "README.md").read_text()


def test_disk_full_fails_the_cell_and_keeps_earlier_records(tmp_path, monkeypatch):
    from bench import executors
    from bench.grid import failed_record

    real_append = sweep.append_record
    calls = []

    def append_until_full(out_dir, record):
        calls.append(record.key)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_append(out_dir, record)

    monkeypatch.setattr(sweep, "append_record", append_until_full)
    # No child process: this checks what the parent does with the records it gets.
    monkeypatch.setattr(executors, "run_isolated", lambda cell, *args: failed_record(cell, "exception", "RuntimeError: boom"))
    cells = [_cell("small_cnn", seed=s) for s in (0, 1, 2)]
    result = sweep.run_sweep(cells, tmp_path, tmp_path / "cache", log=open(os.devnull, "w"))
    assert "No space left on device" in result.write_error and "--resume" in result.write_error
    assert [r.key for r in read_records(tmp_path).records] == [cells[0].key]
    assert len(calls) == 2  # the sweep stopped instead of losing more cells


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has already exited
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to watch the cell process")
def test_parent_killed_alone_takes_its_cell_with_it_then_resumed(tmp_path):
    """kill -9 of the run process only (not its group): the running cell must not live on.

    Slow (three cells' processes). The default suite covers its parts: each guard alone
    (test_each_guard_alone_ends_the_child_with_its_parent), a real child killed with its parent
    (test_cost.py's test_killing_the_parent_kills_its_measuring_child_and_keeps_whole_lines) and --resume (test_cli.py)."""
    out, marker = tmp_path / "out", tmp_path / "slow-cell.pid"
    env = {**os.environ, "BENCH_BACKBONE_MODULES": "fault_backbones", "FAULT_SLOW_SECONDS": "600", "FAULT_SLOW_MARKER": str(marker),
           "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    argv = [sys.executable, "-m", "bench", "run", "--backbone", "small_cnn", "fault_slow", "--data", "synthetic", "--profile", "quick", "--out", str(out),
            "--cache-dir", str(tmp_path / "cache")]
    parent = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not marker.exists() and parent.poll() is None:
            time.sleep(0.5)
        time.sleep(0.5)  # the pid is written in full
        cell_pid = int(marker.read_text())
        assert _alive(cell_pid)
        os.kill(parent.pid, signal.SIGKILL)  # the parent alone
        parent.wait()
        deadline = time.time() + 10
        while time.time() < deadline and _alive(cell_pid):
            time.sleep(0.1)
        assert not _alive(cell_pid), "the cell process outlived the run process"
    finally:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
    survived = read_records(out)
    assert [(r.backbone, r.status) for r in survived.records] == [("small_cnn", "ok")] and survived.bad_lines == 0
    time.sleep(1)
    assert read_records(out).records == survived.records  # nothing more is written

    env["FAULT_SLOW_SECONDS"] = "0"
    resumed = subprocess.run(argv + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-1500:]
    assert "1 of 2 cells already have an ok record; running 1" in resumed.stderr
    final = read_records(out).records
    assert [(r.backbone, r.status) for r in final] == [("small_cnn", "ok"), ("fault_slow", "ok")]


def test_exit_failure_retries_only_a_kill_the_kernel_counted_as_out_of_memory():
    from bench.isolation import exit_failure

    assert exit_failure(-signal.SIGKILL, 3, 4)[0] == "oom"
    assert "oom_kill 3 -> 4" in exit_failure(-signal.SIGKILL, 3, 4)[1]
    assert exit_failure(-signal.SIGKILL, 3, 3) == ("signal", "killed by signal SIGKILL")
    assert exit_failure(-signal.SIGKILL, None, None) == ("signal", "killed by signal SIGKILL")  # no cgroup: cause unknown
    assert exit_failure(-signal.SIGSEGV, 3, 4) == ("signal", "killed by signal SIGSEGV")  # the OOM killer sends SIGKILL only
    assert exit_failure(3, 0, 0) == ("exception", "exited with code 3 without a record")


@pytest.mark.parametrize("version", ["v2", "v1", "none"])
def test_oom_kill_counter_is_read_from_the_cells_cgroup(tmp_path, version):
    from bench.isolation import oom_kill_count

    proc = tmp_path / "cgroup"
    root = tmp_path / "sys"
    if version == "v2":
        proc.write_text("0::/user.slice/bench.scope\n")
        (root / "user.slice" / "bench.scope").mkdir(parents=True)
        (root / "user.slice" / "bench.scope" / "memory.events").write_text("low 0\nhigh 0\nmax 2\noom 2\noom_kill 2\n")
    elif version == "v1":
        proc.write_text("5:devices:/docker/x\n4:memory:/docker/x\n0::/\n")
        (root / "memory").mkdir(parents=True)  # a container sees its own cgroup at the mount's root
        (root / "memory" / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 7\n")
    else:
        proc.write_text("0::/\n")
    assert oom_kill_count(proc, root) == {"v2": 2, "v1": 7, "none": None}[version]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to watch the cell process")
@pytest.mark.parametrize("use_prctl", [True, False], ids=["prctl", "watchdog"])
def test_each_guard_alone_ends_the_child_with_its_parent(tmp_path, use_prctl):
    """PR_SET_PDEATHSIG, and the watchdog on the parent's sentinel pipe that stands in for it elsewhere."""
    script, marker = tmp_path / "parent.py", tmp_path / "child.pid"
    script.write_text(
        "import multiprocessing, os, sys, time\n"
        "from bench import isolation\n"
        "def child(path, use_prctl):\n"
        "    isolation.die_with_parent(use_prctl)\n"
        "    open(path + '.tmp', 'w').write(str(os.getpid())); os.replace(path + '.tmp', path)\n"
        "    time.sleep(600)\n"
        "if __name__ == '__main__':\n"
        "    multiprocessing.get_context('spawn').Process(target=child, args=(sys.argv[1], sys.argv[2] == 'True')).start()\n"
        "    time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen([sys.executable, str(script), str(marker), str(use_prctl)], env=env, start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not marker.exists():
            time.sleep(0.1)
        child_pid = int(marker.read_text())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 10
        while time.time() < deadline and _alive(child_pid):
            time.sleep(0.1)
        assert not _alive(child_pid)
    finally:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
