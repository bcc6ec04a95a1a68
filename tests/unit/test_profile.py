"""The per-operator profile's arithmetic: MACs from the flatbuffer against the Keras model's
own count, the join of a profile run's operator ticks with the model, and its output lines."""

import numpy as np
import pytest

from kdq_tf.deploy import flatbuf
from kdq_tf.deploy.convert import to_tflite
from kdq_tf.device.profile import arena_bytes, macs, table
from kdq_tf.device.run import parse_output
from kdq_tf.errors import KdqError
from kdq_tf.models.students import count_macs, ds_cnn
from kdq_tf.report import profile_markdown

QEMU_INSNS_PER_TICK = 40  # the MPS2-AN386: 25 MHz SysTick, 1 instruction per ns


@pytest.fixture(scope="module")
def ds_model():
    """ds_cnn (conv stem, depthwise and pointwise blocks, conv head) as full int8."""
    m = ds_cnn((28, 28, 1), 10, width=16)
    x = np.random.default_rng(0).normal(size=(8, 28, 28, 1)).astype(np.float32)
    return m, to_tflite(m, "int8", x)


def test_flatbuffer_macs_equal_the_keras_count(ds_model):
    m, model = ds_model
    ops = flatbuf.operators(model)
    assert {o["op"] for o in ops} >= {"CONV_2D", "DEPTHWISE_CONV_2D", "MEAN"}
    assert sum(macs(o) for o in ops) == count_macs(m)
    # The stem by hand: 3x3 stride 2 'same' on 28x28x1 -> 14x14x16, 9 products per output.
    assert macs(ops[0]) == 14 * 14 * 16 * 9
    # A depthwise 3x3 on 14x14x16: 9 products per output, one input channel each.
    dw = next(o for o in ops if o["op"] == "DEPTHWISE_CONV_2D")
    assert macs(dw) == 14 * 14 * 16 * 9
    # Its arena bytes: the int8 input and output maps; the weights and bias are constant.
    assert arena_bytes(dw) == 2 * 14 * 14 * 16
    assert [t["constant"] for t in dw["inputs"]] == [False, True, True]


def test_table_joins_ticks_with_the_model_and_checks_the_order(ds_model):
    _, model = ds_model
    ops = flatbuf.operators(model)
    samples = 4
    ticks = [
        {"index": i, "tag": o["op"], "ticks": 100 * (i + 1) * samples} for i, o in enumerate(ops)
    ]
    whole = sum(t["ticks"] for t in ticks) + 5 * samples  # 5 ticks per inference between ops
    prof = table(model, ticks, samples, whole, QEMU_INSNS_PER_TICK)
    rows = prof["operators"]
    assert [r["instructions"] for r in rows] == [
        100 * (i + 1) * QEMU_INSNS_PER_TICK for i in range(len(ops))
    ]
    assert prof["instructions_per_inference"] == whole // samples * QEMU_INSNS_PER_TICK
    assert prof["operators_share"] == pytest.approx(1 - 5 / (whole / samples))
    assert sum(r["share"] for r in rows) == pytest.approx(prof["operators_share"])
    assert rows[0]["instructions_per_mac"] == pytest.approx(
        100 * QEMU_INSNS_PER_TICK / (14 * 14 * 16 * 9), abs=0.01
    )
    md = profile_markdown(
        {
            **prof,
            "model": "m",
            "target": "cortex-m4",
            "kernels": "cmsis-nn",
            "bit_exact": 4,
            "samples": 4,
        }
    )
    assert md.count("\n| ") == len(ops) + 1 and "DEPTHWISE_CONV_2D" in md
    with pytest.raises(KdqError, match="export the firmware again"):
        table(model, ticks[:-1], samples, whole, QEMU_INSNS_PER_TICK)


def test_profile_lines_are_parsed_beside_the_samples():
    got = parse_output(
        "kdq: model m samples 1 arena 100\n"
        "kdq: sample 0 label 1 class 1 b out -3 7\n"
        "kdq: ticks 250\n"
        "kdq: op 0 CONV_2D 200\n"
        "kdq: op 1 TFLM_DECODE 50\n"
    )
    assert got["ops"] == [
        {"index": 0, "tag": "CONV_2D", "ticks": 200},
        {"index": 1, "tag": "TFLM_DECODE", "ticks": 50},
    ]
    assert got["ticks"] == 250 and got["samples"][0]["out"] == [-3, 7]
    assert "ops" not in parse_output("kdq: ticks 3\n")
