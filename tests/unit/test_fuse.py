"""The fused LUT convolution's graph surgery (kdq_tf.device.fuse) and the Python copy of TFLM's
greedy memory planner it sizes groups with (kdq_tf.device.arena_plan). The fused kernel's
outputs are checked against the Python interpreter in tests/e2e/test_firmware.py."""

import numpy as np
import pytest

from kdq_tf.deploy import flatbuf
from kdq_tf.device import arena_plan, fuse
from kdq_tf.device.arena_plan import Buffer, head_size


def test_planner_layouts_by_hand():
    # alive together: side by side; one after the other: the same bytes
    assert head_size([Buffer(100, 0, 1), Buffer(50, 1, 2)]) == 150
    assert head_size([Buffer(100, 0, 0), Buffer(50, 1, 1)]) == 100
    # largest first at 0; the 40 fits in the gap the 60 left above the 100 (alive at 2 only)
    bufs = [Buffer(60, 0, 1), Buffer(100, 0, 0), Buffer(40, 2, 2), Buffer(30, 1, 2)]
    # 100@0 [0..0]; 60@100 [0..1]; 40: alive with neither -> @0; 30 [1..2]: overlaps 60@100 and
    # 40@0 -> gap 40..100 holds it -> @40
    assert head_size(bufs) == 160


def test_planner_places_largest_first_and_can_fragment():
    """Largest first, each in the lowest gap among the buffers alive with it: here the head
    exceeds the most bytes alive at once (80, at time 1), which is why fuse plans with the
    planner rather than with sums."""
    a, b, c, d = Buffer(20, 1, 2), Buffer(50, 2, 2), Buffer(40, 1, 1), Buffer(20, 1, 1)
    alive = max(sum(x.size for x in (a, b, c, d) if x.first <= t <= x.last) for t in range(3))
    assert alive == 80
    # b@0; c@0 (not alive with b); a (alive with both) @50; d: above c, the gap 40..50 is too
    # small, so above a: @70
    assert head_size([a, b, c, d]) == 90


def test_buffers_follow_tflm_lifetimes():
    t = lambda i, n, c=False: {"index": i, "bytes": n, "constant": c}  # noqa: E731
    ops = [
        {"op": "A", "inputs": [t(0, 10), t(9, 99, True)], "outputs": [t(1, 20)]},
        {"op": "B", "inputs": [t(1, 20)], "outputs": [t(2, 30)]},
    ]
    got = arena_plan.buffers(ops, [0], [2], scratch={1: [5]})
    # input from the start, 16-byte aligned sizes; the graph output to the end; then scratch
    assert got == [Buffer(16, 0, 1), Buffer(32, 1, 2), Buffer(32, 2, 2), Buffer(16, 2, 2)]


def test_group_size_options_round_trip():
    o = fuse.options(2, 1, (2, 1), (1, 1), (3, 5), 300)
    assert len(o) == 11 and o[0] == fuse.OPTIONS_VERSION
    assert fuse.kernel_size({"op": "CUSTOM:KDQ_LUT_CONV", "custom_options": o}) == (3, 5)
    assert int.from_bytes(o[9:11], "little") == 300
    assert fuse.kernel_size({"op": "CONV_2D"}) is None


@pytest.fixture(scope="module")
def compressed():
    from kdq_tf._keras import keras
    from kdq_tf.deploy.compression import compress_lut
    from kdq_tf.deploy.convert import to_tflite

    keras.utils.set_random_seed(0)
    m = keras.Sequential(
        [
            keras.layers.Input((10, 10, 3)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.DepthwiseConv2D(5, activation="relu"),
            keras.layers.Conv2D(40, 3, strides=2, padding="same", activation="relu6"),
            keras.layers.GlobalAveragePooling2D(),
        ]
    )
    for layer, n in zip(m.layers[1:3], (4, 8)):  # n values per output channel
        k, b = layer.get_weights()
        axis = -2 if isinstance(layer, keras.layers.DepthwiseConv2D) else -1
        moved = np.moveaxis(k, axis, 0)
        for c in range(moved.shape[0]):
            v = np.linspace(moved[c].min(), moved[c].max(), n)
            moved[c] = v[np.abs(moved[c][..., None] - v).argmin(-1)]
        layer.set_weights([np.moveaxis(moved, 0, axis), b])
    x = np.random.default_rng(0).normal(size=(32, 10, 10, 3)).astype(np.float32)
    dense = flatbuf.strip_for_device(to_tflite(m, "int8", x))
    small, plan = compress_lut(dense)
    assert sum(p["compress"] for p in plan) == 2  # the depthwise and the last convolution
    return small, dense


def test_fusion_replaces_the_decode_conv_pair_and_keeps_the_depthwise_decode(compressed):
    compressed = compressed[0]
    fused, plan = fuse.fuse_lut_convs(compressed)
    before = flatbuf.operators(compressed)
    after = flatbuf.operators(fused)
    assert [o["op"] for o in before] == [
        "CONV_2D", "CUSTOM:TFLM_DECODE", "DEPTHWISE_CONV_2D", "CUSTOM:TFLM_DECODE", "CONV_2D",
        "MEAN",
    ]  # fmt: skip
    assert [o["op"] for o in after] == [
        "CONV_2D", "CUSTOM:TFLM_DECODE", "DEPTHWISE_CONV_2D", "CUSTOM:KDQ_LUT_CONV", "MEAN",
    ]  # fmt: skip
    dec, conv, op = before[3], before[4], after[3]
    assert [p["op"] for p in plan] == [4] and plan[0]["cout"] == 40
    # input, the kernel's quantization (Cout x 1 x 1 x 1), bias, DECODE's indices and tables
    assert [t["index"] for t in op["inputs"]] == [
        conv["inputs"][0]["index"], conv["inputs"][1]["index"], conv["inputs"][2]["index"],
        *(t["index"] for t in dec["inputs"]),
    ]  # fmt: skip
    assert op["inputs"][1]["shape"] == [40, 1, 1, 1] and op["inputs"][1]["constant"]
    o = op["custom_options"]
    # SAME (TfLitePadding 1), RELU6 (3), stride 2x2, dilation 1x1, kernel 3x3, the group
    assert list(o[:9]) == [1, 1, 3, 2, 2, 1, 1, 3, 3]
    assert int.from_bytes(o[9:11], "little") == plan[0]["group"]


def test_fusion_keeps_the_kernels_scales(compressed):
    compressed = compressed[0]
    fused, _ = fuse.fuse_lut_convs(compressed)
    k = flatbuf.operators(compressed)[4]["inputs"][1]["index"]
    g0 = flatbuf._model(compressed).subgraphs[0]
    g1 = flatbuf._model(fused).subgraphs[0]
    np.testing.assert_array_equal(
        g0.tensors[k].quantization.scale, g1.tensors[k].quantization.scale
    )
    assert g1.tensors[k].quantization.quantizedDimension == 0


def test_groups_keep_the_planned_arena_within_the_limit(compressed):
    """The group chosen keeps the planned arena within 5% of the dense model's (or at the floor,
    every layer at MIN_GROUP, when that is more), is all channels or a multiple of MIN_GROUP, and
    the next larger choice would break that limit."""
    ops = flatbuf.operators(compressed[0])
    model = flatbuf._model(compressed[0])
    io = (list(model.subgraphs[0].inputs), list(model.subgraphs[0].outputs))
    layers = fuse._layers(model, ops)
    (la,) = layers
    n = fuse.choose_groups(ops, io, layers)[la.op]
    dense = fuse.planned_arena(ops, io, layers)
    floor = fuse.planned_arena(ops, io, layers, {la.op: fuse.MIN_GROUP})
    limit = max(dense + dense // fuse.SLACK, floor)
    assert fuse.planned_arena(ops, io, layers, {la.op: n}) <= limit
    assert n == la.cout or n % fuse.MIN_GROUP == 0
    if n < la.cout:
        bigger = min(la.cout, n + fuse.MIN_GROUP)
        assert fuse.planned_arena(ops, io, layers, {la.op: bigger}) > limit
    # the planner's dense arena is at least what one operator holds at once
    assert dense >= max(
        sum(t["bytes"] for t in o["inputs"] + o["outputs"] if not t["constant"])
        for o in flatbuf.operators(compressed[1])
    )


def test_a_model_without_decode_is_returned_as_is(compressed):
    dense = compressed[1]
    assert fuse.fuse_lut_convs(dense) == (dense, [])
