"""The Ray executor against a Ray head this test starts on loopback, compared with local."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "RAY_USAGE_STATS_ENABLED": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
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
