"""The Ray executor: its driver against a stand-in for Ray (no Ray started), its loopback
handling, and against a Ray head this test starts on loopback, compared with local (slow: a
Ray head and two runs of two cells)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import types

import pytest

from bench.ray_executor import SINGLE_MACHINE_ENV, is_loopback
from bench.records import read_records
from conftest import ROOT, run_cli

ray = pytest.importorskip("ray")
RAY_CLI = str(Path(sys.executable).parent / "ray")
# CPU runs of the same cell with the same seed give the same accuracy; the tolerance only
# absorbs thread-scheduling differences in float reductions, should a platform show any.
ACCURACY_TOLERANCE = 0.01


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    port = _free_port()
    # Started as README says for a head on loopback: Ray's node address is then 127.0.0.1 and
    # its servers listen there only.
    env = {**os.environ, **SINGLE_MACHINE_ENV, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "RAY_USAGE_STATS_ENABLED": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = [RAY_CLI, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
             f"--temp-dir={tmp_path_factory.mktemp('ray')}"]
    subprocess.run(start, check=True, env=env, capture_output=True, timeout=180)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([RAY_CLI, "stop", "--force"], env=env, capture_output=True, timeout=120)


@pytest.mark.slow
def test_ray_executor_records_equal_local(tmp_path, ray_head):
    # The two stages where one cell waits for another's output (finetune starts from transfer's head).
    grid = ["--backbone", "mobilenet_v2", "--stage", "transfer", "finetune", "--data", "synthetic", "--profile", "quick", "--image-size", "32", "--cache-dir", tmp_path / "cache"]
    local = run_cli("run", *grid, "--out", tmp_path / "local")
    assert local.returncode == 0, local.stderr[-2000:]
    distributed = run_cli("run", *grid, "--out", tmp_path / "ray", "--executor", "ray", "--ray-address", ray_head, env={"RAY_USAGE_STATS_ENABLED": "0"})
    assert distributed.returncode == 0, distributed.stderr[-2000:]
    # Progress reaches the driver from the Ray tasks too: each cell starts on its first event and shows its epochs.
    for index in (1, 2):
        assert f"[{index}/2] mobilenet_v2/" in distributed.stderr and f"    [{index}/2] epoch 1/1: loss " in distributed.stderr
    local_records = {r.key: r for r in read_records(tmp_path / "local").records}
    ray_records = {r.key: r for r in read_records(tmp_path / "ray").records}
    assert set(local_records) == set(ray_records) and len(ray_records) == 2
    for key, record in ray_records.items():
        assert record.status == "ok", record.error
        assert "inline" not in record.error  # finetune waited for its transfer's saved head
        assert abs(record.test_accuracy - local_records[key].test_accuracy) <= ACCURACY_TOLERANCE
        assert abs(record.val_accuracy - local_records[key].val_accuracy) <= ACCURACY_TOLERANCE
    assert (tmp_path / "ray" / "README.md").exists()


@pytest.mark.parametrize("address, loopback", [("127.0.0.1:6379", True), ("localhost:6379", True), ("[::1]:6379", True), (None, True), ("10.0.0.5:6379", False), ("head.example:6379", False)])
def test_loopback_addresses_are_recognised(address, loopback):
    assert is_loopback(address) is loopback


# A fresh interpreter, as the bench driver is: Ray reads its node-address setting on import.
# The machine is given a routable interface by replacing what Ray asks for this node's
# outward address, so the check holds on machines that have no default route too.
_RESOLVE = """
import sys
from bench.ray_executor import keep_ray_on_loopback
if sys.argv[1] == "loopback":
    keep_ray_on_loopback("127.0.0.1:6379")
import ray._private.services as services
services.node_ip_address_from_perspective = lambda address=None: "192.0.2.77"
print(services.canonicalize_bootstrap_address("127.0.0.1:6379"))
"""


def _resolved(mode: str) -> str:
    env = {key: value for key, value in os.environ.items() if key not in SINGLE_MACHINE_ENV}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", _RESOLVE, mode], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_loopback_address_is_dialled_as_given_on_a_machine_with_a_routable_interface():
    assert _resolved("default") == "192.0.2.77:6379"  # Ray's own rewrite, which the driver must avoid
    assert _resolved("loopback") == "127.0.0.1:6379"


# --------------------------------------------------------------------------- the driver, without Ray


class _Ref:
    def __init__(self, value=None, error=None):
        self.value, self.error = value, error


class _FakeRay(types.ModuleType):
    """What RayExecutor uses of Ray: init, remote tasks (run when submitted, their ObjectRef
    arguments resolved, as Ray does), wait, get, and a queue. ``finish_order`` lists the
    submission indexes in the order their tasks complete."""

    def __init__(self, finish_order):
        super().__init__("ray")
        self.finish_order, self.submitted, self.refs, self.init_kwargs = finish_order, [], [], None

    def is_initialized(self):
        return self.init_kwargs is not None

    def init(self, **kwargs):
        self.init_kwargs = kwargs

    def remote(self, function):
        fake = self

        class Task:
            def options(self, **resources):
                def remote(*args):
                    fake.submitted.append((args, resources))
                    resolved = [fake.get(a) if isinstance(a, _Ref) else a for a in args]
                    try:
                        ref = _Ref(value=function(*resolved))
                    except Exception as error:
                        ref = _Ref(error=error)
                    fake.refs.append(ref)
                    return ref

                return types.SimpleNamespace(remote=remote)

        return Task()

    def wait(self, refs, num_returns=1, timeout=None):
        first = min(refs, key=lambda ref: self.finish_order.index(self.refs.index(ref)))
        return [first], [r for r in refs if r is not first]

    def get(self, ref):
        if ref.error is not None:
            raise RuntimeError(f"RayTaskError: {ref.error}")
        return ref.value


class _Queue:
    def __init__(self, actor_options=None):
        self.items = []

    def put_nowait(self, item):
        self.items.append(item)

    def qsize(self):
        return len(self.items)

    def get_nowait_batch(self, count):
        taken, self.items = self.items[:count], self.items[count:]
        return taken


def test_ray_driver_orders_finetune_after_transfer_forwards_progress_and_records_task_failures(tmp_path, monkeypatch):
    """Through the sweep, as `--executor ray` runs it: a finetune task takes its transfer's result
    as an argument, each cell starts on its first progress event, records are appended as tasks
    finish, and a task Ray lost becomes a failed record while the sweep goes on."""
    import dataclasses
    import io

    from bench import ray_executor, sweep
    from bench.grid import Cell, RunOptions
    from bench.progress import Progress
    template = read_records(Path(__file__).parent / "fixtures" / "runs.jsonl").records[0]
    fake = _FakeRay(finish_order=[2, 0, 1])  # the baseline finishes first
    queue_module = types.ModuleType("ray.util.queue")
    queue_module.Queue = _Queue
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setitem(sys.modules, "ray.util", types.ModuleType("ray.util"))
    monkeypatch.setitem(sys.modules, "ray.util.queue", queue_module)

    def run_isolated(cell, out_dir, cache_dir, options, on_progress):
        on_progress(Progress("training", 1, 2, {"epoch": 1, "epochs": 1, "loss": 0.5}, True))
        if cell.backbone == "small_cnn":
            raise ConnectionError("node lost")
        return dataclasses.replace(template, **cell.record_fields(), status="ok")

    monkeypatch.setattr(ray_executor, "run_isolated", run_isolated)
    base = dict(image_size=32, augment="none", seed=0, data="synthetic", profile="quick")
    transfer, finetune = Cell("mobilenet_v2", "transfer", **base), Cell("mobilenet_v2", "finetune", **base)
    baseline = Cell("small_cnn", "baseline", **base)
    log = io.StringIO()
    result = sweep.run_sweep([transfer, finetune, baseline], tmp_path, tmp_path / "cache", options=RunOptions(timeout_seconds=60), log=log, executor="ray")

    (transfer_args, resources), (finetune_args, _), (baseline_args, _) = fake.submitted
    assert resources == {"num_cpus": 1, "num_gpus": 0}
    assert transfer_args[0] == transfer and transfer_args[3].timeout_seconds == 60  # the cell and its --cell-timeout travel with the task
    assert finetune_args[0] == finetune and finetune_args[-1] is fake.refs[0]  # waits for its transfer task's result
    assert len(baseline_args) == len(transfer_args)  # no dependency
    assert fake.init_kwargs["_node_ip_address"] == "127.0.0.1"  # a local instance is reached on loopback
    records = read_records(tmp_path).records
    # Appended as they finish: the baseline (lost) first, then the transfer, then its finetune.
    assert [(r.backbone, r.stage) for r in records] == [("small_cnn", "baseline"), ("mobilenet_v2", "transfer"), ("mobilenet_v2", "finetune")]
    assert [r.key for r in records] == [r.key for r in result.records]
    by_backbone = {(r.backbone, r.stage): r for r in records}
    failed = by_backbone[("small_cnn", "baseline")]
    assert failed.status == "failed" and failed.error.startswith("ray task failed: RuntimeError") and "node lost" in failed.error
    assert by_backbone[("mobilenet_v2", "transfer")].status == by_backbone[("mobilenet_v2", "finetune")].status == "ok"
    # Each cell's progress reached the driver's view: a start line and its epoch.
    text = log.getvalue()
    for cell in (transfer, finetune, baseline):
        assert f"] {cell.key} ..." in text
    assert text.count("epoch 1/1: loss 0.500") == 3
