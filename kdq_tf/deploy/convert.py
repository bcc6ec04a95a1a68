"""Keras model -> TFLite flatbuffer bytes. No file I/O here."""

import logging
from collections.abc import Callable, Iterable

import numpy as np

from kdq_tf._keras import tf
from kdq_tf.errors import ModelError
from kdq_tf.runtime.runner import load_interpreter

log = logging.getLogger(__name__)

MODES = ("int8", "int16x8", "float16", "float32")


def _representative(samples: np.ndarray) -> Callable[[], Iterable[list[np.ndarray]]]:
    def gen():
        for i in range(len(samples)):
            yield [samples[i : i + 1].astype(np.float32)]

    return gen


def to_tflite(model, mode: str = "int8", representative: np.ndarray | None = None) -> bytes:
    """Converts a Keras model (float or TF-MOT QAT) to a TFLite flatbuffer.

    Args:
        model: the Keras model.
        mode: "int8" (full integer, int8 input/output), "int16x8" (int16 activations,
            int8 weights), "float16" (float16 weights) or "float32". Defaults to "int8".
        representative: normalised input samples for post-training quantization;
            required for int8/int16x8 unless the model is quantization-aware.

    Returns:
        The `.tflite` bytes.

    Raises:
        ModelError: unknown mode, missing representative data, or an int8 model
            that does not end up fully integer (the message names the float ops).
    """
    if mode not in MODES:
        raise ModelError(f"conversion mode must be one of {', '.join(MODES)}, got {mode!r}")
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode in ("int8", "int16x8"):
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        if representative is not None:
            conv.representative_dataset = _representative(representative)
        elif not _is_qat(model):
            raise ModelError(
                f"{mode} conversion of a float model needs representative samples (--calib-samples)"
            )
        if mode == "int8":
            # INT8-only op sets make the converter demand a representative set even for QAT
            # models, whose ranges are already learned; for those, float_ops_in() below
            # enforces the full-integer result instead.
            if representative is not None:
                conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        else:
            conv.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            ]
            conv.inference_input_type = tf.int16
            conv.inference_output_type = tf.int16
    elif mode == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    try:
        data = conv.convert()
    except Exception as e:  # the converter raises ConverterError and friends with long MLIR dumps
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"TFLite conversion ({mode}) failed: {first}") from None
    if mode == "int8":
        float_ops = float_ops_in(data)
        if float_ops:
            raise ModelError(
                f"model is not fully integer after int8 conversion; float ops remain: "
                f"{', '.join(float_ops)}"
            )
    return bytes(data)


def _is_qat(model) -> bool:
    return any(type(layer).__name__.startswith("Quantize") for layer in model.layers)


def float_ops_in(data: bytes) -> list[str]:
    """Names of ops that read or write float32 tensors (other than constants)."""
    interp = load_interpreter(data, reference=True)  # XNNPACK would hide ops behind DELEGATE
    details = interp._get_ops_details()  # noqa: SLF001 - the only op-level view LiteRT offers
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    bad = set()
    for op in details:
        for idx in list(op["inputs"]) + list(op["outputs"]):
            if idx >= 0 and idx in tensors and tensors[idx]["dtype"] == np.float32:
                bad.add(op["op_name"])
    return sorted(bad)
