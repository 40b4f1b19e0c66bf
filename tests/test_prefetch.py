"""`bench prefetch`, offline: a local HTTP server stands in for the internet, with the files'
origins and hashes patched (tests/offline_keras.py); after the prefetch, a process whose
KERAS_HOME is the folder loads CIFAR-10 and MobileNetV2's ImageNet weights with no server at all."""

import hashlib
import http.server
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_cli

WEIGHTS_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5"
CIFAR_FILE = "cifar-10-python.tar.gz"

# What a machine without internet runs: the real loaders, nothing else.
LOAD_OFFLINE = """
import keras, numpy as np
import offline_keras  # origins point at a server that is gone; hashes are the test files'
(x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
model = keras.applications.MobileNetV2(include_top=False, weights="imagenet", input_shape=(96, 96, 3))
print(x_train.shape, int(x_train[:, 0, 0, 0].sum()), float(sum(np.abs(w).sum() for w in model.get_weights())))
"""


def _cifar_archive(path: Path) -> None:
    """Keras's CIFAR-10 layout: five training batches of 10,000 images and a test batch."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            data = np.zeros((10000, 3072), np.uint8)
            data[:, 0] = np.arange(10000) % 7  # a fingerprint the offline load must return
            payload = pickle.dumps({b"data": data, b"labels": [i % 10 for i in range(10000)]})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def _mobilenet_weights(path: Path) -> float:
    """MobileNetV2's no-top weights at 96 px, in Keras's legacy h5 layout; returns their checksum."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(3)
    model = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(96, 96, 3))
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)
    return float(sum(np.abs(w).sum() for w in model.get_weights()))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    requests = []

    def log_message(self, *args):
        _Quiet.requests.append(self.path)


def _serve(folder: Path):
    handler = lambda *a, **k: _Quiet(*a, directory=str(folder), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _load_offline(keras_home: Path, env: dict) -> subprocess.CompletedProcess:
    full = {**os.environ, **env, "KERAS_HOME": str(keras_home), "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    return subprocess.run([sys.executable, "-c", LOAD_OFFLINE], env=full, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_prefetch_fills_a_keras_home_that_loads_without_network(tmp_path):
    """Slow: a 180 MB CIFAR-10 stand-in and MobileNetV2's weights served, fetched, then loaded offline in two more TensorFlow processes."""
    origin = tmp_path / "origin"
    origin.mkdir()
    _cifar_archive(origin / CIFAR_FILE)
    checksum = _mobilenet_weights(origin / WEIGHTS_FILE)
    hashes = {name: hashlib.sha256((origin / name).read_bytes()).hexdigest() for name in (CIFAR_FILE, WEIGHTS_FILE)}
    server = _serve(origin)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    env = {"BENCH_BACKBONE_MODULES": "offline_keras", "BENCH_TEST_ORIGIN": url, "BENCH_TEST_HASHES": json.dumps(hashes)}
    home = tmp_path / "keras-home"
    try:
        done = run_cli("prefetch", "--to", home, "--backbone", "mobilenet_v2", "--image-size", "96", env=env)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"export KERAS_HOME={home.resolve()}"
    assert sorted(_Quiet.requests) == sorted(f"/{name}" for name in (CIFAR_FILE, WEIGHTS_FILE))
    # Keras's own cache layout and names
    assert (home / "datasets" / "cifar-10-batches-py-target_archive").is_file()
    assert (home / "models" / WEIGHTS_FILE).is_file()

    # The server is gone: only the cache can serve these loads.
    loaded = _load_offline(home, env)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    shape, fingerprint, weights_sum = loaded.stdout.strip().splitlines()[-1].rsplit(" ", 2)
    assert shape == "(50000, 32, 32, 3)" and int(fingerprint) == 5 * sum(np.arange(10000) % 7)
    assert float(weights_sum) == pytest.approx(checksum, rel=1e-6)
    # ... and without the prefetched folder the same load fails: the test can tell.
    assert _load_offline(tmp_path / "empty-home", env).returncode != 0


def test_a_prefetch_that_cannot_reach_its_origin_is_one_line_and_exit_2(tmp_path):
    server = _serve(tmp_path)  # a port that served once and is closed: nothing listens there
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    env = {"BENCH_BACKBONE_MODULES": "offline_keras", "BENCH_TEST_ORIGIN": url, "BENCH_TEST_HASHES": "{}"}
    failed = run_cli("prefetch", "--to", tmp_path / "other", "--backbone", "mobilenet_v2", env=env)
    assert failed.returncode == 2, failed.stderr[-2000:]
    assert failed.stderr.strip().splitlines()[-1].startswith("error: prefetch failed: CIFAR-10")
    assert "export KERAS_HOME" not in failed.stdout
