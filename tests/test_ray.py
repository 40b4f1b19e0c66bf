"""The Ray executor against a Ray head this test starts on loopback, compared with local."""

import os
import socket
import subprocess
import sys
from pathlib import Path

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


def test_ray_executor_records_equal_local(tmp_path, ray_head):
    grid = ["--backbone", "mobilenet_v2", "--data", "synthetic", "--profile", "quick", "--image-size", "32", "--cache-dir", tmp_path / "cache"]
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
