"""A converted model loaded into its runtime, as one interface: ``Runner.run`` on the runtime's
own input (for timing) and ``Runner.probabilities`` on uint8 images (for accuracy).

Every runtime gets the same ``threads`` for its compute and runs one operator at a time,
so a difference between runtimes is their kernels', not their thread pools': ONNX Runtime and
OpenVINO otherwise pick their own counts, TensorFlow runs independent operators side by side.
OpenVINO is held to float32 (on a CPU with bf16 it runs bf16 unless told), but for the
operators NNCF quantised to int8. Each runtime's
package is imported only by its loader: a runtime's measuring process loads nothing else.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

# Batches of test images during evaluation (as bench.training evaluates).
EVAL_BATCH_SIZE = 256


@dataclasses.dataclass(frozen=True)
class Runner:
    """A loaded model.

    Attributes:
        prepare: uint8 images ``(N, H, W, 3)`` -> the runtime's input (a tensor, a cast array).
        run: the runtime's input -> class probabilities ``(N, classes)`` as float32 NumPy, ready.
    """

    prepare: Callable
    run: Callable

    def probabilities(self, images, tta_flip: bool = False, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
        """Class probabilities of every image, averaged with its mirror image's where ``tta_flip``
        (as ``bench.training.evaluate`` averages a cell's test-time variants)."""
        parts = []
        for start in range(0, len(images), batch_size):
            batch = np.asarray(images[start : start + batch_size])
            probs = self.run(self.prepare(batch))
            if tta_flip:
                probs = (probs + self.run(self.prepare(np.ascontiguousarray(batch[:, :, ::-1])))) / 2
            parts.append(probs)
        return np.concatenate(parts)


def set_tensorflow_threads(threads: int) -> None:
    """TensorFlow's compute on ``threads`` threads, one operator at a time; before any TensorFlow op runs."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def _tensorflow(path: Path, threads: int | None) -> Runner:
    if threads:
        set_tensorflow_threads(threads)
    import keras
    import tensorflow as tf

    from bench import models  # noqa: F401  (registers the classifier's own layers for loading)

    model = keras.saving.load_model(path, compile=False)
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return Runner(prepare=tf.constant, run=lambda x: forward(x).numpy())


def _onnxruntime(path: Path, threads: int | None) -> Runner:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or 0  # 0: its own choice
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return Runner(prepare=lambda images: images.astype(np.float32), run=lambda x: session.run(None, {name: x})[0])


def _openvino(path: Path, threads: int | None) -> Runner:
    import openvino

    core = openvino.Core()
    config = {"INFERENCE_NUM_THREADS": threads or 0, "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    request = core.compile_model(core.read_model(path), "CPU", config).create_infer_request()

    def run(x):
        request.infer({0: x})
        return request.get_output_tensor(0).data.copy()  # the request's own buffer: the next call overwrites it

    return Runner(prepare=lambda images: images.astype(np.float32), run=run)


def _litert(path: Path, threads: int | None) -> Runner:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads or -1)  # -1: its own choice
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    shape = [None]

    def prepare(images):
        scale, zero_point = source["quantization"]
        if np.issubdtype(source["dtype"], np.integer) and scale:  # an int8 model's uint8 input: pixels quantised as it was calibrated
            info = np.iinfo(source["dtype"])
            return np.clip(np.round(images / scale + zero_point), info.min, info.max).astype(source["dtype"])
        return images.astype(source["dtype"])

    def run(x):
        if x.shape != shape[0]:  # a new batch size: the interpreter's tensors are reallocated once
            interpreter.resize_tensor_input(source["index"], x.shape)
            interpreter.allocate_tensors()
            shape[0] = x.shape
        interpreter.set_tensor(source["index"], x)
        interpreter.invoke()
        out = interpreter.get_tensor(target["index"])
        scale, zero_point = target["quantization"]
        return (out.astype(np.float32) - zero_point) * scale if np.issubdtype(out.dtype, np.integer) and scale else out.copy()

    return Runner(prepare=prepare, run=run)


_LOADERS = {"tensorflow": _tensorflow, "onnxruntime": _onnxruntime, "openvino": _openvino, "openvino-int8": _openvino, "litert": _litert, "litert-int8": _litert}


def load(runtime: str, path: Path, threads: int | None) -> Runner:
    """The model file at ``path`` loaded into ``runtime`` (a name of ``bench.runtimes.RUNTIMES``) on
    ``threads`` threads (``None``: the runtime's own choice; TensorFlow's can be set only before it runs anything)."""
    return _LOADERS[runtime](Path(path), threads)
