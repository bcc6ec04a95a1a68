"""The LUT-compressed model as the firmware embeds it: each DECODE -> CONV_2D pair fused into one
KDQ_LUT_CONV operator (template/kdq_lut_conv.cc), so a decoded kernel never sits whole in the arena.

TFLite-Micro's compression tool puts a DECODE operator before each compressed kernel; the kernel
it decodes lives in the arena while its layer runs. Where a big kernel meets small maps (small_cnn:
36,864 B of weights beside 6,272 B of activations) the arena grows by more than LUT saves in
flash. The fused operator decodes a group of output channels into scratch memory, computes them,
and moves on, so the layer needs one group's weights (and, with more than one group, that group's
output) beside its input and output. `choose_groups` picks the groups: the fewest that keep the
arena TFLM's planner lays out (`arena_plan`) within 5% of the dense model's.

The arithmetic is CONV_2D's, group by group, so the firmware's outputs are bit for bit those of
the DECODE model on the Python TFLM interpreter, which cannot load the fused one (it has no
KDQ_LUT_CONV kernel): the firmware folder keeps the DECODE model for that comparison.

Depthwise kernels keep their DECODE: theirs are small (KH x KW x C), and so is what fusing would
save. Bytes in, bytes out; no TensorFlow.
"""

import functools
import math
from dataclasses import dataclass

from kdq_tf.deploy.flatbuf import _model, _schema, operators
from kdq_tf.device import arena_plan, carray

# Operator names as flatbuf.operators reports them, kept where the resolver registers them.
FUSED, DECODE = carray.LUT_CONV, carray.DECODE
MIN_GROUP = 4  # output channels per group at least: CMSIS-NN computes 2 (4 with Helium) at once
SLACK = 20  # the arena may grow by 1/SLACK of the dense peak for the groups' scratch
OPTIONS_VERSION = 1


def options(padding: int, activation: int, stride, dilation, kernel, group: int) -> bytes:
    """The operator's 11 option bytes (kdq_lut_conv.cc): version, TfLitePadding (SAME 1,
    VALID 2), TfLiteFusedActivation (the schema's numbering), stride (w, h), dilation (w, h),
    kernel (h, w), channels per group (uint16, little-endian)."""
    return bytes([OPTIONS_VERSION, padding, activation, *stride, *dilation, *kernel]) + int(
        group
    ).to_bytes(2, "little")


def kernel_size(op: dict) -> tuple[int, int] | None:
    """(KH, KW) of a fused operator from `flatbuf.operators`, None for any other operator."""
    o = op.get("custom_options")
    if op["op"] != FUSED or not o:
        return None
    return o[7], o[8]


def arena_bound(dense_arena: int, fused: list[dict], decode_arena: int) -> int:
    """An arena the fused model fits in, for `kTensorArenaSize` (which adds its margin): the dense
    model's (`dense_arena`, the host's bisection) plus the largest group scratch and each fused
    layer's own state (options, multipliers and shifts; DECODE's states are gone), never more than
    the DECODE model's (`decode_arena`). The Python interpreter cannot load the fused model to
    bisect its arena; the firmware reports what it used."""
    if not fused or not dense_arena:
        return decode_arena
    own = sum(96 + 8 * f["cout"] for f in fused)
    return min(dense_arena + max(f["scratch_bytes"] for f in fused) + own, decode_arena)


def _im2col_bytes(op: dict) -> int:
    """The scratch CMSIS-NN's convolution takes for its im2col columns on a DSP core: two columns
    of KH x KW x Cin int16 values (0 for other operators)."""
    if op["op"] != "CONV_2D" or len(op["inputs"]) < 2:
        return 0
    _, kh, kw, cin = op["inputs"][1]["shape"]
    return 2 * 2 * -(-kh * kw * cin // 4) * 4


@dataclass(frozen=True)
class _Layer:
    """A CONV_2D that can be fused: operator index, its DECODE's, and what sizes its groups."""

    op: int
    decode: int
    kernel: int  # the decoded kernel's tensor
    cout: int
    per_channel: int  # KH x KW x Cin
    pixels: int  # output pixels (batch x H x W)

    def scratch(self, group: int) -> list[int]:
        """kdq_lut_conv.cc's requests: the group's weights, its output unless it is all of them,
        and CMSIS-NN's im2col."""
        out = group * self.pixels if group < self.cout else 0
        return [group * self.per_channel, out, 2 * 2 * -(-self.per_channel // 4) * 4]


def _layers(model, ops: list[dict]) -> list[_Layer]:
    """The int8 CONV_2Ds whose kernel one DECODE decodes for them alone, quantized on its first
    axis, not grouped."""
    s = _schema()
    g = model.subgraphs[0]
    decoded = {o["outputs"][0]["index"]: i for i, o in enumerate(ops) if o["op"] == DECODE}
    readers: dict[int, int] = {}
    for o in ops:
        for t in o["inputs"]:
            readers[t["index"]] = readers.get(t["index"], 0) + 1
    out = []
    for i, o in enumerate(ops):
        if o["op"] != "CONV_2D" or len(o["inputs"]) < 2:
            continue
        x, k, y = o["inputs"][0], o["inputs"][1], o["outputs"][0]
        w = g.tensors[k["index"]]
        q = w.quantization
        if (
            k["index"] not in decoded
            or readers[k["index"]] != 1
            or x["dtype"] != "int8"
            or y["dtype"] != "int8"
            or w.type != s.TensorType.INT8
            or (q is not None and q.quantizedDimension not in (0, None))
            or k["shape"][3] != x["shape"][-1]  # a grouped convolution
        ):
            continue
        cout, kh, kw, cin = k["shape"]
        pixels = math.prod(y["shape"][:-1])
        out.append(_Layer(i, decoded[k["index"]], k["index"], cout, kh * kw * cin, pixels))
    return out


def planned_arena(
    ops: list[dict], graph_io: tuple[list[int], list[int]], layers: list[_Layer], groups=None
) -> int:
    """The arena TFLM's planner would lay out (`arena_plan`) for the model with `layers` fused at
    `groups` channels per group (by operator index), or with no DECODE at all (every kernel a
    constant) when `groups` is None: the dense model the LUT one is compared with."""
    decoders = [i for i, o in enumerate(ops) if o["op"] == DECODE]
    if groups is None:
        removed = set(decoders)
        skip = {ops[i]["outputs"][0]["index"] for i in decoders}
        scratch = {}
    else:
        removed = {la.decode for la in layers}
        skip = {la.kernel for la in layers}
        scratch = {la.op: la.scratch(groups[la.op]) for la in layers}
    kept = [i for i in range(len(ops)) if i not in removed]
    return arena_plan.head_size(
        arena_plan.buffers(
            [ops[i] for i in kept],
            *graph_io,
            skip,
            {n: scratch.get(i, [_im2col_bytes(ops[i])]) for n, i in enumerate(kept)},
        )
    )


def choose_groups(
    ops: list[dict], graph_io: tuple[list[int], list[int]], layers: list[_Layer]
) -> dict[int, int]:
    """Channels per group for each layer (by operator index): layer by layer, the most (all, or a
    multiple of MIN_GROUP) that keep the planned arena within 1/SLACK of the dense model's, or
    within what every layer at MIN_GROUP needs when that is more. The fewest groups, since each
    group costs the convolution's im2col again."""
    groups = {la.op: min(MIN_GROUP, la.cout) for la in layers}
    dense = planned_arena(ops, graph_io, layers)
    limit = max(dense + dense // SLACK, planned_arena(ops, graph_io, layers, groups))
    for la in layers:
        for g in [la.cout, *range(la.cout - 1, groups[la.op], -1)]:
            if g != la.cout and g % MIN_GROUP:
                continue
            if planned_arena(ops, graph_io, layers, {**groups, la.op: g}) <= limit:
                groups[la.op] = g
                break
    return groups


@functools.lru_cache(maxsize=4)  # export, its C sources and its firmware fuse the same model
def fuse_lut_convs(data: bytes) -> tuple[bytes, list[dict]]:
    """The model with every int8 CONV_2D whose kernel a DECODE operator produces (for it alone)
    computed by KDQ_LUT_CONV; the model unchanged, and an empty list, when there is none.

    Returns:
        `(model, fused)`: one dict per fused layer (operator index in the input model, output
        channels, channels per group, and the scratch bytes the group needs).
    """
    import flatbuffers

    ops = operators(data)
    if not any(o["op"] == DECODE for o in ops):
        return data, []
    model = _model(data)
    layers = _layers(model, ops)
    if not layers:
        return data, []
    g = model.subgraphs[0]
    groups = choose_groups(ops, (list(g.inputs), list(g.outputs)), layers)
    plan = []
    for la in layers:
        plan.append(
            {
                "op": la.op,
                "cout": la.cout,
                "group": groups[la.op],
                "scratch_bytes": sum(la.scratch(groups[la.op])[:2]),
            }
        )
        _fuse(model, la.op, la.decode, groups[la.op])
    drop = {la.decode for la in layers}
    g.operators = [op for j, op in enumerate(g.operators) if j not in drop]
    b = flatbuffers.Builder(len(data) + 1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output()), plan


def _fuse(model, conv_index: int, decode_index: int, group: int) -> None:
    """Rewrites operator `conv_index` of the first subgraph as KDQ_LUT_CONV on the indices and
    tables DECODE operator `decode_index` read. The decoded kernel's tensor stays, as [Cout, 1, 1,
    1] with Cout zero bytes, to carry the per-channel scales the requantization needs."""
    s = _schema()
    g = model.subgraphs[0]
    conv, dec = g.operators[conv_index], g.operators[decode_index]
    x, k, b = (list(conv.inputs) + [-1])[:3]
    w = g.tensors[k]
    cout, kh, kw, _ = (int(d) for d in w.shape)
    opt = conv.builtinOptions
    buf = s.BufferT()
    buf.data = [0] * cout
    model.buffers.append(buf)
    w.shape = [cout, 1, 1, 1]
    w.shapeSignature = None
    w.buffer = len(model.buffers) - 1
    conv.opcodeIndex = _custom_code(model, FUSED.removeprefix("CUSTOM:"))
    conv.inputs = [x, k, b, *dec.inputs[:2]]
    conv.builtinOptionsType = s.BuiltinOptions.NONE
    conv.builtinOptions = None
    conv.customOptions = list(
        options(
            opt.padding + 1,  # schema SAME 0 / VALID 1 -> TfLitePadding SAME 1 / VALID 2
            opt.fusedActivationFunction,
            (opt.strideW, opt.strideH),
            (opt.dilationWFactor, opt.dilationHFactor),
            (kh, kw),
            group,
        )
    )


def _custom_code(model, name: str) -> int:
    """The index of custom operator `name` in the model's operator codes, added when missing."""
    s = _schema()
    for i, c in enumerate(model.operatorCodes):
        cc = c.customCode.decode() if isinstance(c.customCode, bytes) else c.customCode
        if max(c.builtinCode, c.deprecatedBuiltinCode) == s.BuiltinOperator.CUSTOM and cc == name:
            return i
    c = s.OperatorCodeT()
    c.builtinCode = c.deprecatedBuiltinCode = s.BuiltinOperator.CUSTOM
    c.customCode = name
    c.version = 1
    model.operatorCodes.append(c)
    return len(model.operatorCodes) - 1
