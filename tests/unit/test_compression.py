"""TFLite-Micro LUT compression of clustered int8 weights, checked on the TFLM Python
interpreter."""

import numpy as np
import pytest

from kdq_tf._keras import keras
from kdq_tf.deploy import compression as C
from kdq_tf.errors import ModelError


def _model(clusters: int | None, seed: int = 0, head: int = 0) -> bytes:
    from kdq_tf.deploy.convert import to_tflite

    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    x = keras.layers.Conv2D(64, 3, padding="same")(x)
    if head:  # a 1x1 conv of head x 64 weights
        x = keras.layers.Conv2D(head, 1)(keras.layers.ReLU()(x))
    m = keras.Model(
        inp, keras.layers.Flatten()(keras.layers.GlobalAveragePooling2D(keepdims=True)(x))
    )
    if clusters:  # snap every kernel to `clusters` evenly spaced values: a clustered model, by hand
        for layer in m.layers:
            if isinstance(layer, keras.layers.Conv2D):
                k, b = layer.get_weights()
                c = np.linspace(k.min(), k.max(), clusters)
                layer.set_weights([c[np.abs(k[..., None] - c).argmin(-1)], b])
    rep = np.random.default_rng(seed).random((50, 8, 8, 1), np.float32)
    return to_tflite(m, "int8", rep)


@pytest.fixture(scope="module")
def clustered():
    return _model(16)


def test_clustered_weights_keep_at_most_n_values_per_channel(clustered):
    w = {t.shape: t for t in C.weight_tensors(clustered)}
    big = w[(64, 3, 3, 16)]
    assert big.axis == 0 and big.bytes == 64 * 9 * 16
    assert (
        big.unique_per_channel <= 16
    )  # each channel's scale maps the 16 centroids to <= 16 int8 values
    assert 0.0 <= big.zeros < 1.0


def test_plan_sizes_by_hand(clustered):
    plan = {p["bytes"]: p for p in C.lut_plan(C.weight_tensors(clustered))}
    big = plan[9216]
    # 4-bit indices (9216 / 2 bytes) and one 16-entry int8 table per output channel (64 x 16)
    assert big["mode"] == "per_channel" and big["bits"] == 4 and big["compress"]
    assert big["estimate"] == 9216 // 2 + 64 * 16
    small = plan[144]  # 16 channels of 9 weights: 16 tables of 16 would outweigh 144 bytes
    assert not small["compress"] and "would not save bytes" in small["reason"]


def test_compressed_model_is_bit_exact_on_tflm(clustered):
    from tflite_micro.python.tflite_micro import runtime

    small, plan = C.compress_lut(clustered)
    assert len(small) < len(clustered)
    assert [p["compress"] for p in plan].count(True) == 1
    x = np.random.default_rng(1).integers(-128, 128, (8, 1, 8, 8, 1)).astype(np.int8)
    outs = []
    for blob in (clustered, small):
        it = runtime.Interpreter.from_bytes(blob)
        got = []
        for xi in x:
            it.set_input(xi, 0)
            it.invoke()
            got.append(it.get_output(0).copy())
        outs.append(np.stack(got))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_unclustered_model_has_nothing_to_compress():
    with pytest.raises(
        ModelError, match="no weight tensor has few enough distinct values.*--cluster"
    ):
        C.compress_lut(_model(None))


def test_a_tensor_whose_decode_costs_more_than_it_saves_is_left_alone():
    """10x64 head: the estimate (320 B of indices + 10 tables of 16) is below its 640 B, but the
    DECODE operator and the decoded tensor's per-channel quantization eat the rest: measured."""
    from tflite_micro.tensorflow.lite.micro.compression import compress, spec

    from kdq_tf.deploy import flatbuf

    model = flatbuf.strip_for_device(_model(16, head=10))
    small, plan = C.compress_lut(model)
    head = next(p for p in plan if p["bytes"] == 640)
    assert head["estimate"] < 640 and not head["compress"] and head["saved_bytes"] <= 0
    assert "cost more" in head["reason"]
    big = next(p for p in plan if p["bytes"] == 9216)
    assert big["compress"] and big["saved_bytes"] > 0
    assert (
        len(small) == len(model) - big["saved_bytes"]
    )  # only the big tensor, with the saving measured alone
    both = compress(
        model,
        [
            spec.Tensor(
                0,
                p["index"],
                [spec.LookUpTableCompression(index_bitwidth=4, mode=spec.PerChannel(axis=0))],
            )
            for p in (big, head)
        ],
    )
    assert len(small) <= len(both)
