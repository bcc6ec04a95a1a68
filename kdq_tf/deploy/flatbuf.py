"""Reads and edits TFLite flatbuffers with the schema that ships with LiteRT. No TensorFlow.

Used for the op list (resolver generation, inspect) and for embedding kdq_tf's
metadata (class names, preprocessing) in the model's metadata buffers.
"""

import json

import numpy as np

from kdq_tf.errors import ModelError

METADATA_NAME = "kdq_tf"  # a Model.metadata entry whose buffer holds UTF-8 JSON


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as s

        return s
    except ImportError:
        pass
    try:
        from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as s

        return s
    except ImportError:
        pass
    try:
        from tensorflow.lite.python import schema_py_generated as s

        return s
    except ImportError:
        raise ModelError("no TFLite schema module found; pip install ai-edge-litert") from None


def check_tflite(data: bytes, what: str = "model") -> None:
    """Raises ModelError unless `data` looks like a complete TFLite flatbuffer."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError(f"{what} is not a TFLite flatbuffer (missing the TFL3 identifier)")


def validate(data: bytes, what: str = "model") -> None:
    """Raises ModelError unless `data` parses completely as a TFLite model (catches truncation)."""
    _model(data, what)


def _model(data: bytes, what: str = "model"):
    check_tflite(data, what)
    s = _schema()
    try:
        return s.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as e:  # truncated buffers fail deep inside flatbuffers
        raise ModelError(
            f"{what} is a truncated or corrupt TFLite flatbuffer ({type(e).__name__})"
        ) from None


def builtin_names() -> dict[int, str]:
    ops = _schema().BuiltinOperator
    return {v: k for k, v in vars(ops).items() if k.isupper() and isinstance(v, int)}


def op_names(data: bytes) -> list[str]:
    """The builtin ops the model's operators use ("CONV_2D", ...), each once, in order of first use.

    Only ops referenced by an operator count: the converter can leave unused
    codes (e.g. QUANTIZE of a QAT model with int8 I/O) in the code table.
    Custom ops come back as "CUSTOM:<name>".
    """
    model = _model(data)
    codes = _code_names(model)
    used = [op.opcodeIndex for g in model.subgraphs or [] for op in g.operators or []]
    return list(dict.fromkeys(codes[i] for i in used))


def operator_sequence(data: bytes) -> list[str]:
    """Every operator of the first subgraph, in execution order, by op name."""
    model = _model(data)
    codes = _code_names(model)
    return [codes[op.opcodeIndex] for op in (model.subgraphs or [None])[0].operators or []]


def _item_bytes(dtype: str) -> int:
    """Bytes per element of a TFLite tensor type named like numpy's; 1 for those numpy lacks
    (string, int4, resource)."""
    try:
        return np.dtype(dtype).itemsize
    except TypeError:
        return 1


def operators(data: bytes) -> list[dict]:
    """Every operator of the first subgraph, in execution order: its op name, and its inputs and
    outputs as dicts of tensor index, dtype, shape, bytes and `constant` (the tensor's data is in
    the flatbuffer, like weights; otherwise it lives in the arena); a custom operator's option
    bytes as `custom_options`."""
    s = _schema()
    model = _model(data)
    codes = _code_names(model)
    types = {v: k.lower() for k, v in vars(s.TensorType).items() if k.isupper()}
    g = (model.subgraphs or [None])[0]
    tensors = g.tensors or []

    def tensor(i: int) -> dict:
        t = tensors[i]
        shape = [int(d) for d in (t.shape if t.shape is not None else [])]
        dtype = types.get(t.type, str(t.type))
        buf = model.buffers[t.buffer] if t.buffer < len(model.buffers or []) else None
        constant = buf is not None and (buf.data is not None and len(buf.data) > 0 or buf.size > 0)
        return {
            "index": i,
            "dtype": dtype,
            "shape": shape,
            "bytes": int(np.prod(shape)) * _item_bytes(dtype),
            "constant": bool(constant),
        }

    return [
        {
            "op": codes[op.opcodeIndex],
            "inputs": [tensor(int(i)) for i in op.inputs if i >= 0],
            "outputs": [tensor(int(i)) for i in op.outputs if i >= 0],
            **({"custom_options": bytes(op.customOptions)} if op.customOptions is not None else {}),
        }
        for op in g.operators or []
    ]


def _code_names(model) -> list[str]:
    names = builtin_names()
    out = []
    for code in model.operatorCodes or []:
        # builtin_code replaced the int8 deprecated_builtin_code at 127; the larger one is valid.
        c = max(code.builtinCode, code.deprecatedBuiltinCode)
        if names.get(c) == "CUSTOM":
            cc = code.customCode
            out.append(f"CUSTOM:{cc.decode() if isinstance(cc, bytes) else cc}")
        else:
            out.append(names.get(c, f"UNKNOWN_{c}"))
    return out


def embed_metadata(data: bytes, meta: dict) -> bytes:
    """Returns the model with `meta` stored as JSON in a `kdq_tf` metadata buffer (replacing an
    old one)."""
    import flatbuffers

    s = _schema()
    model = _model(data)
    payload = json.dumps(meta, sort_keys=True).encode()
    buf = s.BufferT()
    buf.data = list(payload)
    model.buffers = list(model.buffers or []) + [buf]
    entry = s.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if _name(m) != METADATA_NAME] + [entry]
    b = flatbuffers.Builder(len(data) + len(payload) + 1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _name(m) -> str:
    return m.name.decode() if isinstance(m.name, bytes) else str(m.name)


def read_metadata(data: bytes) -> dict | None:
    """The `kdq_tf` JSON metadata embedded by export, or None."""
    model = _model(data)
    for m in model.metadata or []:
        if _name(m) == METADATA_NAME:
            raw = model.buffers[m.buffer].data
            return json.loads(bytes(bytearray(raw)).decode()) if raw is not None else None
    return None


def weight_bytes(data: bytes) -> int:
    """Bytes held in the model's constant buffers (weights, biases, and embedded metadata)."""
    model = _model(data)
    meta = {m.buffer for m in model.metadata or []}
    return sum(
        len(b.data)
        for i, b in enumerate(model.buffers or [])
        if b.data is not None and i not in meta
    )


def describe(data: bytes) -> dict:
    """Ops, tensors (dtype, shape, quantization), sizes and metadata of any .tflite."""
    s = _schema()
    model = _model(data)
    types = {v: k for k, v in vars(s.TensorType).items() if k.isupper()}
    g = model.subgraphs[0]
    tensors = []
    for i, t in enumerate(g.tensors or []):
        q = t.quantization
        scale = list(np.asarray(q.scale).ravel()) if q is not None and q.scale is not None else []
        zero = (
            list(np.asarray(q.zeroPoint).ravel())
            if q is not None and q.zeroPoint is not None
            else []
        )
        name = t.name.decode() if isinstance(t.name, bytes) else (t.name or "")
        tensors.append(
            {
                "index": i,
                "name": name,
                "dtype": types.get(t.type, str(t.type)).lower(),
                "shape": [int(d) for d in (t.shape if t.shape is not None else [])],
                "scale": [float(v) for v in scale[:4]],
                "zero_point": [int(v) for v in zero[:4]],
                "per_channel": len(scale) > 1,
            }
        )
    w = weight_bytes(data)
    return {
        "bytes": len(data),
        "weights_bytes": w,
        "overhead_bytes": len(data) - w,
        "ops": op_names(data),
        "operators": len(g.operators or []),
        "inputs": [int(i) for i in g.inputs],
        "outputs": [int(i) for i in g.outputs],
        "tensors": tensors,
        "metadata": read_metadata(data),
    }


# Metadata TFLM reads at run time (offline memory plans); every other entry is for tools.
DEVICE_METADATA = frozenset({"OfflineMemoryAllocation"})


def strip_for_device(data: bytes) -> bytes:
    """The flatbuffer without what TFLite-Micro never reads: metadata (kdq_tf's, the
    converter's, min_runtime_version), tensor and subgraph names, signatures and the description.

    Per-channel zero points that are all equal (int8 weights and int32 biases: all 0) are kept
    as one value. TFLM's allocator broadcasts a one-value array over the channels, and its source
    names this as a space-saving optimization for weights. The converter writes 8 bytes per
    channel, about 4% of a small CNN's flatbuffer.

    Buffer indices are kept (the dropped metadata buffers are emptied, not removed), so every
    tensor still points at its weights. The full model stays the one for LiteRT and
    `kdq_tf infer`, which read the class names and preprocessing from the metadata.
    """
    import flatbuffers

    model = _model(data)
    used = {t.buffer for g in model.subgraphs or [] for t in g.tensors or []}
    keep = [m for m in model.metadata or [] if _name(m) in DEVICE_METADATA]
    for m in model.metadata or []:
        if m not in keep and m.buffer not in used:
            model.buffers[m.buffer].data = None
    model.metadata = keep or None
    model.signatureDefs = None
    model.description = None
    for g in model.subgraphs or []:
        g.name = None
        for t in g.tensors or []:
            t.name = None
            q = t.quantization
            if (
                q is not None
                and q.zeroPoint is not None
                and len(q.zeroPoint) > 1
                and len(set(q.zeroPoint)) == 1
            ):
                q.zeroPoint = q.zeroPoint[:1]
    b = flatbuffers.Builder(len(data))
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())
