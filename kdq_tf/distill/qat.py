"""Quantization-aware training with TF-MOT: whole-model or per-layer policies."""

import logging
import re
from pathlib import Path

import numpy as np

from kdq_tf._keras import keras
from kdq_tf.distill.cluster_prune import scheme
from kdq_tf.distill.losses import soft_threshold
from kdq_tf.errors import ModelError

log = logging.getLogger(__name__)


def _tfmot():
    import tensorflow_model_optimization as tfmot  # heavy; only when QAT is asked for

    return tfmot.quantization.keras


def _unsupported(e: Exception) -> ModelError:
    msg = str(e)
    m = re.search(r"Layer (\S+?):?<class '([^']+)'>", msg) or re.search(r"Layer (\S+)", msg)
    layer = m.group(1).rstrip(":") if m else "?"
    kind = m.group(2).rsplit(".", 1)[-1] if m and m.lastindex and m.lastindex > 1 else ""
    return ModelError(
        f"TF-MOT cannot quantize layer {layer!r} {f'({kind}) ' if kind else ''}"
        f"of the student; keep it in float with --qat-skip '^{layer}$' or use another student"
    )


def quantize_student(
    student: keras.Model, skip: str | None = None, preserve: str = "none"
) -> keras.Model:
    """Wraps a flat Functional student for QAT (8-bit default scheme).

    Args:
        student: the trained float student.
        skip: regex; layers whose name matches stay float (annotate + apply).
        preserve: "cluster", "prune" or "prune+cluster": TF-MOT's collaborative scheme that
            keeps a stripped clustered/pruned student's structure through QAT
            (kdq_tf.distill.cluster_prune).

    Returns:
        The quantization-aware model, with the float weights copied in.

    Raises:
        ModelError: a layer TF-MOT does not support (named, with a --qat-skip hint),
            a skip regex that is invalid, or a nested/subclassed student.
    """
    qk = _tfmot()
    try:
        keep = scheme(preserve)
        if not skip and keep is None:
            return qk.quantize_model(student)
        if not skip:
            with qk.quantize_scope():
                return qk.quantize_apply(qk.quantize_annotate_model(student), scheme=keep)
        pattern = re.compile(skip)
        kept = _float_layers(student, pattern)
        log.info("QAT keeps these layers float: %s", ", ".join(sorted(kept)) or "(none matched)")

        def annotate(layer):
            if isinstance(layer, keras.layers.InputLayer) or layer.name in kept:
                return layer.__class__.from_config(layer.get_config())
            return qk.quantize_annotate_layer(layer.__class__.from_config(layer.get_config()))

        annotated = keras.models.clone_model(student, clone_function=annotate)
        annotated.set_weights(student.get_weights())
        with qk.quantize_scope():
            return (
                qk.quantize_apply(annotated)
                if keep is None
                else qk.quantize_apply(annotated, scheme=keep)
            )
    except re.error as e:
        raise ModelError(f"--qat-skip {skip!r} is not a valid regex ({e})") from None
    except (RuntimeError, ValueError) as e:
        if "not supported" in str(e) or "Layer" in str(e):
            raise _unsupported(e) from None
        raise ModelError(
            f"TF-MOT could not quantize the student: {str(e).splitlines()[0]}"
        ) from None


def _float_layers(model: keras.Model, pattern: re.Pattern) -> set[str]:
    """The layers --qat-skip keeps float: those it names, and the weightless layers that only
    consume float layers (a Flatten after a skipped 1x1-conv head).

    TF-MOT wraps the input of any quantized layer with an output quantizer; leaving a
    Flatten annotated after a skipped head made the head `quant_logits`, its output
    fake-quantized, which is not what skipping it means.
    """
    kept = set()
    for layer in model.layers:  # topological order
        inbound = [n.inbound_layers for n in layer._inbound_nodes]  # noqa: SLF001 - Keras has no public walk
        parents = {
            p.name for group in inbound for p in (group if isinstance(group, list) else [group])
        }
        follows_float = bool(parents) and parents <= kept and not layer.weights
        if pattern.search(layer.name) or follows_float:
            kept.add(layer.name)
    return kept


def load_qat_model(path: str | Path) -> keras.Model:
    """Loads a saved QAT model; TF-MOT's custom layers resolve only inside `quantize_scope`."""
    with _tfmot().quantize_scope():
        return keras.models.load_model(path, compile=False)


def shrink_kernels(model: keras.Model, delta: float) -> dict:
    """Applies the soft threshold Q(w) = sign(w)·max(0, |w| − δ) to every conv/dense kernel in
    place.

    Returns:
        `{"delta", "sparsity_before", "sparsity_after", "kernel_params"}` over those kernels.
    """
    total = zeros_before = zeros_after = 0
    for layer in model.layers:
        for w in layer.weights:
            if not _is_kernel(w):
                continue
            v = w.numpy()
            new = soft_threshold(v, delta)
            total += v.size
            zeros_before += int(np.sum(v == 0))
            zeros_after += int(np.sum(new == 0))
            w.assign(new)
    return {
        "delta": delta,
        "kernel_params": total,
        "sparsity_before": zeros_before / max(total, 1),
        "sparsity_after": zeros_after / max(total, 1),
    }


def shrink_delta_for(model: keras.Model, sparsity: float) -> float:
    """The soft-threshold delta that zeroes `sparsity` of the conv/dense kernel weights (the
    quantile of |w| over all of them), to compare --shrink with pruning at equal sparsity."""
    if not 0.0 < sparsity < 1.0:
        raise ModelError(f"sparsity must be strictly between 0 and 1, got {sparsity!r}")
    mags = [
        np.abs(w.numpy()).ravel() for layer in model.layers for w in layer.weights if _is_kernel(w)
    ]
    if not mags:
        raise ModelError("the model has no conv/dense kernels to shrink")
    return float(np.quantile(np.concatenate(mags), sparsity))


def _is_kernel(w) -> bool:
    return any(k in w.name for k in ("kernel", "depthwise_kernel"))


def layer_sensitivity(
    student: keras.Model,
    x_calib: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    calib_batches: int = 8,
    batch_size: int = 64,
) -> list[dict]:
    """Per-layer QAT sensitivity: test accuracy with only that layer quantized, versus float.

    Each conv/dense layer is fake-quantized alone (everything else kept float via
    the same annotate+apply path as --qat-skip); activation ranges are calibrated
    on a few training batches before the accuracy is measured. No training.

    Returns:
        One dict per layer: name, type, float_accuracy, quantized_accuracy, drop.
    """

    def acc(m) -> float:
        logits = m.predict(x_test, batch_size=256, verbose=0)
        return float((logits.argmax(-1) == y_test).mean())

    # BN frozen (inference mode even under training=True), so the calibration passes
    # move only the quantizers' ranges, not the moving statistics.
    frozen = keras.models.clone_model(student)
    frozen.set_weights(student.get_weights())
    for layer in frozen.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    float_acc = acc(frozen)
    rows = []
    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    for layer in frozen.layers:
        if not isinstance(layer, kinds):
            continue
        q = quantize_student(frozen, skip=f"^(?!{re.escape(layer.name)}$)")
        for i in range(min(calib_batches, int(np.ceil(len(x_calib) / batch_size)))):
            q(
                x_calib[i * batch_size : (i + 1) * batch_size], training=True
            )  # moving min/max of activations
        qa = acc(q)
        rows.append(
            {
                "layer": layer.name,
                "type": type(layer).__name__,
                "float_accuracy": float_acc,
                "quantized_accuracy": qa,
                "drop": float_acc - qa,
            }
        )
    return rows
