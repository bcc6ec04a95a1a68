"""TFLite-Micro LUT compression: which int8 weight tensors have few values, and the compressed
model.

A clustered tensor holds at most N distinct values, so each weight can be stored as a
log2(N)-bit index into a small table; TFLite-Micro's `compress` tool rewrites such
tensors and inserts DECODE operators that expand them at run time (the firmware registers
the DECODE kernel; no special TFLM build flag). Bytes in, bytes out; no TensorFlow.

Per-channel quantization matters here: N clusters per tensor become up to N values per
output channel after int8 conversion, but more across the tensor, because every channel
has its own scale. Per-channel tensors therefore get one value table per channel, and the
bit width follows from the largest per-channel count.
"""

import math
from dataclasses import asdict, dataclass

import numpy as np

from kdq_tf.deploy import flatbuf
from kdq_tf.device.micro import MicroRunner, find_arena_size
from kdq_tf.errors import ModelError
from kdq_tf.runtime.runner import Runner

# Operators whose input 1 is a weight tensor worth compressing (biases are int32 and small).
_WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
_INT8 = 9  # TensorType.INT8


@dataclass(frozen=True)
class WeightTensor:
    """One constant int8 weight tensor and how many distinct values it holds."""

    index: int
    name: str
    shape: tuple[int, ...]
    bytes: int
    unique: int  # over the whole tensor
    axis: int | None  # the per-channel quantization axis, None for per-tensor scales
    unique_per_channel: int | None  # the largest count over the channels (per-channel tensors)
    zeros: float  # share of exact zeros (the sparsity that survived conversion)

    def to_dict(self) -> dict:
        return asdict(self)


def weight_tensors(data: bytes) -> list[WeightTensor]:
    """The model's int8 weight tensors (filters of conv, depthwise, fully-connected), in tensor
    order."""
    model = flatbuf._model(data)  # noqa: SLF001 - the one parser of the package
    codes = flatbuf._code_names(model)  # noqa: SLF001
    g = model.subgraphs[0]
    seen, out = set(), []
    for op in g.operators or []:
        if codes[op.opcodeIndex] not in _WEIGHT_OPS or op.inputs is None or len(op.inputs) < 2:
            continue
        i = int(op.inputs[1])
        t = g.tensors[i]
        buf = model.buffers[t.buffer].data if t.buffer < len(model.buffers) else None
        if i in seen or t.type != _INT8 or buf is None or len(buf) == 0:
            continue
        seen.add(i)
        shape = tuple(int(d) for d in t.shape)
        arr = np.frombuffer(bytes(bytearray(buf)), np.int8).reshape(shape)
        q = t.quantization
        per_channel = q is not None and q.scale is not None and len(q.scale) > 1
        axis = int(q.quantizedDimension) if per_channel else None
        per = None
        if axis is not None:
            moved = np.moveaxis(arr, axis, 0).reshape(shape[axis], -1)
            per = max(len(np.unique(row)) for row in moved)
        name = t.name.decode() if isinstance(t.name, bytes) else (t.name or f"tensor {i}")
        out.append(
            WeightTensor(
                i, name, shape, arr.size, len(np.unique(arr)), axis, per, float((arr == 0).mean())
            )
        )
    return sorted(out, key=lambda w: w.index)


def _bits(values: int) -> int:
    return max(1, math.ceil(math.log2(max(values, 1))))


def lut_plan(tensors: list[WeightTensor]) -> list[dict]:
    """For each tensor: the index bit width, per-tensor or per-channel tables, and the
    estimated compressed bytes (packed indices plus value tables). Tensors that would not
    shrink get `"compress": False`, with the reason."""
    plans = []
    for w in tensors:
        # A per-channel quantized tensor gets per-channel tables: TFLM's DECODE gave wrong outputs
        # for one table over a per-channel tensor here (tests/unit/test_compression.py).
        options = (
            [("per_tensor", _bits(w.unique), 1)]
            if w.axis is None
            else [("per_channel", _bits(w.unique_per_channel), w.shape[w.axis])]
        )
        # indices packed at `bits` per value, and one table of 2^bits int8 values per channel
        # (or one)
        sized = [
            (mode, bits, math.ceil(w.bytes * bits / 8) + tables * (1 << bits))
            for mode, bits, tables in options
        ]
        mode, bits, est = min(sized, key=lambda r: r[2])
        plan = {
            "index": w.index,
            "name": w.name,
            "bytes": w.bytes,
            "mode": mode,
            "bits": bits,
            "estimate": est,
            "compress": bits < 8 and est < w.bytes,
        }
        if not plan["compress"]:
            count = w.unique if mode == "per_tensor" else w.unique_per_channel
            where = "" if mode == "per_tensor" else " in a channel"
            plan["reason"] = (
                f"{count} values{where} need {bits} bits; indices and tables would not save bytes"
            )
        plans.append(plan)
    return plans


def compress_lut(data: bytes) -> tuple[bytes, list[dict]]:
    """Runs TFLite-Micro's LUT compression on every weight tensor whose compression shrinks the
    model: estimated by `lut_plan`, then measured one tensor at a time.

    Returns:
        `(compressed model, plan)`.

    Raises:
        ModelError: no weight tensor would shrink (the model is not clustered), or the
            `tflite-micro` package has no compression module.
    """
    tensors = weight_tensors(data)
    plan = lut_plan(tensors)
    axes = {w.index: w.axis for w in tensors}
    try:
        from tflite_micro.tensorflow.lite.micro.compression import compress, spec
    except ImportError:
        raise ModelError(
            "the tflite-micro package has no compression module; pip install -U tflite-micro"
        ) from None

    def specs(chosen):
        return [
            spec.Tensor(
                0,
                p["index"],
                [
                    spec.LookUpTableCompression(
                        index_bitwidth=p["bits"],
                        mode=spec.PerChannel(axis=axes[p["index"]])
                        if p["mode"] == "per_channel"
                        else spec.PerTensor(),
                    )
                ],
            )
            for p in chosen
        ]

    # The estimate counts indices and tables only; each compressed tensor also brings a DECODE
    # operator and a decoded tensor with its own copy of the per-channel scales and zero points.
    # So each candidate is compressed alone and kept only if the whole model shrinks.
    for p in plan:
        if p["compress"]:
            p["saved_bytes"] = len(data) - len(compress(data, specs([p])))
            if p["saved_bytes"] <= 0:
                p["compress"] = False
                p["reason"] = (
                    "the DECODE operator and its decoded tensor cost more than the "
                    f"{p['bits']}-bit "
                    f"indices save ({-p['saved_bytes']} B more, measured)"
                )
    chosen = [p for p in plan if p["compress"]]
    tried = [p for p in plan if "saved_bytes" in p]
    if not chosen and tried:
        raise ModelError(
            f"LUT compression would not shrink the model: {tried[0]['name']}: {tried[0]['reason']}"
        )
    if not chosen:
        worst = min((p for p in plan), key=lambda p: p["bits"], default=None)
        raise ModelError(
            "no weight tensor has few enough distinct values for LUT compression"
            + (f" (the fewest: {worst['name']} needs {worst['bits']} bits)" if worst else "")
            + "; cluster the student first (--cluster 16)"
        )
    return bytes(compress(data, specs(chosen))), plan


def check_on_tflm(
    uncompressed: bytes, compressed: bytes, x_q: np.ndarray, plan: list[dict]
) -> dict:
    """The compressed model against the uncompressed one on the TFLM interpreter, sample by sample,
    with its own smallest arena (DECODE may need scratch memory).

    Args:
        x_q: already-quantized inputs (N, ...).
    """
    arena = find_arena_size(uncompressed)
    arena_c = find_arena_size(compressed)
    a = MicroRunner(uncompressed, arena).run_raw(x_q)
    b = MicroRunner(compressed, arena_c).run_raw(x_q)
    done = [p for p in plan if p["compress"]]
    return {
        "bytes": len(compressed),
        "uncompressed_bytes": len(uncompressed),
        "ratio": round(len(compressed) / len(uncompressed), 4),
        "arena_bytes": int(arena_c),
        "uncompressed_arena_bytes": int(arena),
        "samples": int(len(x_q)),
        "bit_exact_tflm": int(np.all(a == b, axis=tuple(range(1, a.ndim))).sum()),
        "tensors_compressed": len(done),
        "tensors": plan,
    }


def compress_device(device_bytes: bytes, model_bytes: bytes, x: np.ndarray) -> tuple[bytes, dict]:
    """`export --compress lut`: LUT-compresses the device model and checks it against the
    uncompressed one on TFLM, on `x` (normalised inputs) quantized as the full model says."""
    small, plan = compress_lut(device_bytes)
    x_q = Runner.from_bytes(model_bytes, reference=True).quantize(x)
    return small, check_on_tflm(device_bytes, small, x_q, plan)
