"""Export artifacts against independent truth: gcc-compiled arrays, LiteRT's op list, TFLM."""

import json
import shutil
import subprocess

import numpy as np
import pytest
from conftest import separable_npz

from kdq_tf._keras import keras
from kdq_tf.config import DataConfig
from kdq_tf.data.dataset import load_dataset
from kdq_tf.deploy import flatbuf
from kdq_tf.deploy.convert import to_tflite
from kdq_tf.device import carray
from kdq_tf.device.micro import MicroRunner, arena_fits, find_arena_size
from kdq_tf.distill.qat import quantize_student
from kdq_tf.errors import ModelError
from kdq_tf.models.students import build_student
from kdq_tf.runtime.runner import Runner

needs_gcc = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    p = separable_npz(
        tmp_path_factory.mktemp("x") / "d.npz", n_train=256, n_test=128, size=16, classes=4
    )
    return load_dataset(DataConfig(dataset=f"npz:{p}", val_split=0.0))


@pytest.fixture(scope="module")
def model_and_bytes(data):
    keras.utils.set_random_seed(0)
    m = build_student("ds_cnn", data.info.input_shape, 4)
    m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    m.fit(data.pipeline("train", training=True), epochs=2, verbose=0)
    rep, _ = data.sample("train", 100)
    return m, to_tflite(m, "int8", rep)


def _compile_run(tmp_path, files: dict, main: str) -> bytes:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "t.cc").write_text(main)
    srcs = ["t.cc"] + [n for n in files if n.endswith(".cc")]
    subprocess.run(
        ["g++", "-std=c++17", "-Wall", "-Werror", "-o", "t", *srcs],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    return subprocess.run(["./t"], cwd=tmp_path, check=True, capture_output=True).stdout


@needs_gcc
def test_model_data_compiles_to_the_same_bytes(model_and_bytes, tmp_path):
    _, data = model_and_bytes
    h, cc = carray.model_data(data, "my-model v2")
    main = r"""
#include <cstdint>
#include <cstdio>
#include "model_data.h"
int main() {
  FILE* f = fopen("out.bin", "wb");
  fwrite(g_my_model_v2_model_data, 1, g_my_model_v2_model_data_size, f);
  fclose(f);
  printf("%u %d\n", g_my_model_v2_model_data_size,
         static_cast<int>(reinterpret_cast<uintptr_t>(g_my_model_v2_model_data) % 16));
}
"""
    out = _compile_run(tmp_path, {"model_data.h": h, "model_data.cc": cc}, main).decode().split()
    assert int(out[0]) == len(data)  # size constant
    assert out[1] == "0"  # 16-byte aligned
    assert (tmp_path / "out.bin").read_bytes() == data


@needs_gcc
def test_adversarial_class_names_round_trip(tmp_path):
    names = [
        'quote"d',
        "back\\slash",
        "*/ int injected = 1; /*",
        "new\nline",
        "tri??=graph",
        "ünïcode ✓",
        "tab\there",
        "0\\x41",
        "end\\",
    ]
    settings = carray.model_settings(
        "bad name!",
        carray.TensorSpec((1, 8, 8, 1), "int8", 0.5, -3),
        carray.TensorSpec((1, 9), "int8", 0.25, 4),
        names,
        1234,
    )
    main = r"""
#include <cstdio>
#include "model_settings.h"
int main() {
  namespace s = bad_name_settings;
  for (int i = 0; i < s::kNumClasses; ++i) { fputs(s::kClassNames[i], stdout); fputc(0, stdout); }
  printf("%d %g %d %d", s::kTensorArenaSize, s::kInputScale, s::kInputZeroPoint, s::kInputShape[1]);
}
"""
    out = _compile_run(tmp_path, {"model_settings.h": settings}, main)
    *got, tail = out.split(b"\0")
    assert [g.decode() for g in got] == names
    assert tail.decode() == "1234 0.5 -3 8"


def test_c_identifier():
    assert carray.c_identifier("my-model v2") == "my_model_v2"
    assert carray.c_identifier("3d") == "m_3d"
    assert carray.c_identifier("int") == "int_"
    assert carray.c_identifier("***") == "model"


def test_model_ops_match_litert(model_and_bytes):
    _, data = model_and_bytes
    it = Runner.from_bytes(
        data, reference=True
    ).interpreter  # no XNNPACK: its DELEGATE op hides the real ones
    litert_ops = {op["op_name"] for op in it._get_ops_details()}
    header = carray.model_ops("m", flatbuf.op_names(data))
    added = {
        line.split("resolver.")[1].split("(")[0]
        for line in header.splitlines()
        if "resolver.Add" in line
    }
    assert added == {carray.resolver_method(op) for op in litert_ops}
    assert (
        "MicroMutableOpResolver<k_m_num_ops>" in header
        and f"k_m_num_ops = {len(litert_ops)};" in header
    )
    assert carray.resolver_method("DEPTHWISE_CONV_2D") == "AddDepthwiseConv2D"
    assert carray.resolver_method("FULLY_CONNECTED") == "AddFullyConnected"


def test_tflm_and_litert_reference_agree_exactly(model_and_bytes, data):
    _, blob = model_and_bytes
    ref = Runner.from_bytes(blob, reference=True)
    x, _ = data.sample("test", 64)
    x_q = ref.quantize(x)
    micro = MicroRunner(blob, find_arena_size(blob))
    np.testing.assert_array_equal(micro.run_raw(x_q), ref.predict_raw(x_q))


def test_arena_search_is_tight(model_and_bytes, tmp_path):
    _, blob = model_and_bytes
    size = find_arena_size(blob)
    path = tmp_path / "m.tflite"
    path.write_bytes(blob)
    assert arena_fits(path, size)
    assert not arena_fits(path, size - 1024)


def test_int8_model_tracks_keras(model_and_bytes, data):
    m, blob = model_and_bytes
    r = Runner.from_bytes(blob)
    assert (
        np.dtype(r.input_details["dtype"]) == np.int8
        and np.dtype(r.output_details["dtype"]) == np.int8
    )
    x, _ = data.sample("test", 128)
    agree = (r.predict_logits(x).argmax(-1) == m.predict(x, verbose=0).argmax(-1)).mean()
    assert agree >= 0.95


def test_metadata_round_trip_keeps_outputs(model_and_bytes, data):
    _, blob = model_and_bytes
    meta = {"class_names": ["a", 'b"', "c", "d"], "preprocess": {"scale": 1 / 255}}
    with_meta = flatbuf.embed_metadata(blob, meta)
    assert flatbuf.read_metadata(with_meta) == meta and flatbuf.read_metadata(blob) is None
    x, _ = data.sample("test", 16)
    a, b = Runner.from_bytes(blob), Runner.from_bytes(with_meta)
    np.testing.assert_array_equal(a.predict_raw(a.quantize(x)), b.predict_raw(b.quantize(x)))


def test_float_ops_are_named(data):
    m = build_student("tiny_cnn", data.info.input_shape, 4)
    q = quantize_student(m, skip="^b1_")  # the first block stays float
    with pytest.raises(ModelError, match="not fully integer.*float ops remain: CONV_2D, QUANTIZE"):
        to_tflite(q, "int8")


def test_qat_converts_without_representative_set(data):
    q = quantize_student(build_student("tiny_cnn", data.info.input_shape, 4))
    blob = to_tflite(q, "int8")
    assert flatbuf.op_names(blob) == ["CONV_2D", "MEAN", "RESHAPE"]


def test_other_modes(model_and_bytes):
    m, int8 = model_and_bytes
    f32 = to_tflite(m, "float32")
    f16 = to_tflite(m, "float16")
    assert len(f32) / len(int8) > 1.8 and len(f16) < len(
        f32
    )  # a 6k-param model: overhead dominates
    assert json.dumps(flatbuf.describe(int8))  # serialisable summary for `inspect --json`
