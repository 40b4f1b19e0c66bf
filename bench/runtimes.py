"""The deployment runtimes as data: what each one is, the packages it needs and the extra that
installs them, and the machine settings every runtime is given alike (threads) or recorded
with (the CPU's vector-instruction flags). Imports nothing heavy.

``tensorflow`` is today's compiled Keras forward pass; the others run a converted file:
ONNX Runtime (``.onnx``), OpenVINO float32 and OpenVINO int8 through NNCF (``.xml`` +
``.bin``), LiteRT float32 and LiteRT full-integer int8 (``.tflite``); the int8 ones are
calibrated on training images.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path

from bench.errors import UsageError

EXTRA = "deploy"  # pip install -e ".[deploy]"


@dataclasses.dataclass(frozen=True)
class Runtime:
    """One runtime.

    Attributes:
        name: what ``--runtime`` takes and records say.
        package: the distribution whose version records carry (``runtime_version``).
        needs: modules it imports: to convert (TensorFlow's converters need only TensorFlow) and to run.
        suffix: its model file's suffix (OpenVINO writes a ``.bin`` of weights beside the ``.xml``).
        int8: full-integer quantised: its accuracy may drop, and is recorded, not checked.
    """

    name: str
    package: str
    needs: tuple[str, ...]
    suffix: str
    int8: bool = False


RUNTIMES = {
    runtime.name: runtime
    for runtime in (
        Runtime("tensorflow", "tensorflow", (), ".keras"),
        # ONNX is written by tf2onnx (bench.convert), which needs onnx.
        Runtime("onnxruntime", "onnxruntime", ("onnxruntime", "tf2onnx", "onnx"), ".onnx"),
        Runtime("openvino", "openvino", ("openvino",), ".xml"),
        # NNCF's post-training quantisation of the OpenVINO model, calibrated as litert-int8 is.
        Runtime("openvino-int8", "openvino", ("openvino", "nncf"), ".xml", int8=True),
        Runtime("litert", "ai-edge-litert", ("ai_edge_litert",), ".tflite"),
        Runtime("litert-int8", "ai-edge-litert", ("ai_edge_litert",), ".tflite", int8=True),
    )
}
REFERENCE = "tensorflow"  # what every converted model is checked against
# A float runtime whose test accuracy is further than this from TensorFlow's (in points) is a failed conversion.
FLOAT_TOLERANCE_POINTS = 0.1


def missing_modules(name: str) -> list[str]:
    """The modules ``name`` needs that this Python cannot import (empty: it is installed)."""
    return [module for module in RUNTIMES[name].needs if importlib.util.find_spec(module) is None]


def installed(names, log) -> list[str]:
    """The runtimes of ``names`` that are installed, saying one line on ``log`` for each that is not."""
    kept = []
    for name in names:
        missing = missing_modules(name)
        if missing:
            print(f"skipped runtime {name}: {', '.join(missing)} not installed; pip install -e \".[{EXTRA}]\"", file=log, flush=True)
        else:
            kept.append(name)
    return kept


def check_names(names) -> list[str]:
    """``names`` in ``RUNTIMES``'s order, each once.

    Raises:
        UsageError: an unknown name.
    """
    unknown = [name for name in names if name not in RUNTIMES]
    if unknown:
        raise UsageError(f"unknown runtime {unknown[0]!r}; choose from {', '.join(RUNTIMES)}")
    return [name for name in RUNTIMES if name in names]


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# The flags that decide which kernels a runtime picks: int8 dot products (VNNI), bf16, AMX.
_VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's vector-instruction flags that runtimes dispatch on, space-separated ("" where /proc has none)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return " ".join(flag for flag in _VECTOR_FLAGS if flag in present)
    except OSError:
        pass
    return ""
