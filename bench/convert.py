"""A Keras classifier written as each runtime's model file (``bench.runtimes``), atomically.

``tensorflow``: the whole classifier as ``.keras`` (what a trained cell saves), its weights
and no optimiser state. ``onnxruntime``: the frozen inference function through tf2onnx.
``openvino*`` and ``litert*``: from a SavedModel export, since TFLite's ``from_keras_model`` does not take Keras 3 models; OpenVINO
keeps float32 weights (its saver compresses them to FP16 by default), ``openvino-int8`` is
NNCF's post-training quantisation of it; LiteRT only built-in operators (a Flex operator
cannot run in the standalone ``ai-edge-litert`` interpreter) and, for ``litert-int8``,
full-integer post-training quantisation (uint8 pixels in, exactly: the input quantisation is
calibrated to them). Both int8 conversions are calibrated on the images given. TensorFlow's
converters keep memory per call: a process should convert and end (``bench.deploy`` and
``bench.cost`` convert in a child of their own).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

from bench import files
from bench.runtimes import RUNTIMES


def model_files(path: Path) -> list[Path]:
    """The files of the model at ``path`` (an OpenVINO ``.xml`` has its weights in a ``.bin`` beside it)."""
    path = Path(path)
    return [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]


def file_mb(path: Path) -> float:
    """The size of the model at ``path``, all its files, in MB (10^6 bytes)."""
    return sum(f.stat().st_size for f in model_files(path)) / 1e6


def _inference_copy(model):
    """``model`` with its weights and none of its parts' optimiser state (a head trained on its
    own keeps its optimiser, which Keras would save beside the weights, doubling them)."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


@contextlib.contextmanager
def _saved_model(model):
    """``model`` exported as a SavedModel (its inference function) in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="bench-savedmodel-") as folder:
        model.export(os.path.join(folder, "saved_model"), format="tf_saved_model", verbose=False)
        yield os.path.join(folder, "saved_model")


def _litert_bytes(model, calibration: np.ndarray | None) -> bytes:
    import tensorflow as tf

    with _saved_model(model) as saved:
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        if calibration is None:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        else:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([image[None].astype(np.float32)] for image in calibration)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8  # pixels as they come; probabilities stay float32
        return converter.convert()


def _openvino(model, path: Path, calibration: np.ndarray | None) -> None:
    import openvino

    with _saved_model(model) as saved, tempfile.TemporaryDirectory(dir=path.parent, prefix=".bench-convert-") as folder:
        converted = openvino.convert_model(saved)
        if calibration is not None:
            import nncf

            samples = [image[None].astype(np.float32) for image in calibration]
            converted = nncf.quantize(converted, nncf.Dataset(samples), subset_size=len(samples))
        written = Path(folder) / path.name
        openvino.save_model(converted, written, compress_to_fp16=False)
        # The weights first: a reader finding the new .xml finds its .bin.
        for part, final in zip(model_files(written)[::-1], model_files(path)[::-1]):
            with files.atomic_path(final) as temporary:
                os.replace(part, temporary)


def convert(model, runtime: str, path: Path, calibration: np.ndarray | None = None) -> Path:
    """Write ``model`` (images -> probabilities) as ``runtime``'s model file at ``path``.

    Args:
        runtime: a name of ``bench.runtimes.RUNTIMES``; ``path`` takes its suffix.
        calibration: uint8 images ``(N, H, W, 3)`` the int8 quantisation is calibrated on
            (training images, never test images); only the int8 runtimes read them.

    Returns:
        ``path``, with its runtime's suffix.

    Raises:
        ValueError: an int8 runtime without calibration images.
        Exception: whatever the converter raises for a model it cannot convert (an operator
            outside LiteRT's built-ins, say); nothing is left at ``path`` then.
    """
    path = Path(path).with_suffix(RUNTIMES[runtime].suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    if RUNTIMES[runtime].int8 and (calibration is None or not len(calibration)):
        raise ValueError(f"{runtime} needs calibration images")
    calibration = calibration if RUNTIMES[runtime].int8 else None
    if runtime in ("openvino", "openvino-int8"):
        _openvino(model, path, calibration)
        return path
    if runtime in ("litert", "litert-int8"):
        files.write_bytes(path, _litert_bytes(model, calibration))
        return path
    with files.atomic_path(path) as temporary:  # its name keeps the suffix Keras picks the format by
        if runtime == "tensorflow":
            _inference_copy(model).save(temporary)
        else:
            _onnx(model, temporary)
    return path


def _onnx(model, path: Path) -> None:
    """The model's inference function, frozen, converted by tf2onnx.

    Not Keras's ``model.export(format="onnx")``: it hands tf2onnx the function unfrozen, and
    tensors a layer captures (EfficientNet-B0's Normalization constants) become extra graph
    inputs that ONNX Runtime then demands. Freezing first makes them constants.
    """
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    try:  # tf2onnx 1.17 predates NumPy 2: Keras patches it for its own ONNX export
        from keras.src.export.tf2onnx_lib import patch_tf2onnx

        patch_tf2onnx()
    except ImportError:
        pass
    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="images")
    frozen = convert_variables_to_constants_v2(tf.function(lambda images: model(images, training=False)).get_concrete_function(spec))
    tf2onnx.convert.from_graph_def(
        _erfc_as_one_minus_erf(frozen.graph.as_graph_def()), input_names=[t.name for t in frozen.inputs], output_names=[t.name for t in frozen.outputs], output_path=str(path)
    )


def _erfc_as_one_minus_erf(graph_def):
    """``graph_def`` with each Erfc (exact GELU computes one) written as 1 - Erf: tf2onnx passes
    Erfc through unconverted, and ONNX has no such operator, so ONNX Runtime refused the model."""
    import tensorflow as tf

    for node in [node for node in graph_def.node if node.op == "Erfc"]:
        dtype = node.attr["T"].type
        erf = graph_def.node.add(name=f"{node.name}/erf", op="Erf", input=node.input)
        erf.attr["T"].type = dtype
        one = graph_def.node.add(name=f"{node.name}/one", op="Const")
        one.attr["dtype"].type = dtype
        one.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(1.0, dtype=tf.as_dtype(dtype)))
        node.op = "Sub"  # keeps its name, so whatever read the Erfc reads 1 - Erf
        node.ClearField("input")
        node.input.extend([one.name, erf.name])
    return graph_def
