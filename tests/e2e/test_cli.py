"""The CLI as users meet it: help, data info, and one clear line for bad input."""

import json
import os

import numpy as np
import pytest

from conftest import error_line, run_cli, separable_npz

FASHION = "/usr/share/datasets/fashion-mnist"


def test_help_commands():
    for args in (["--help"], ["teacher", "--help"], ["distill", "--help"], ["data", "info", "--help"]):
        proc = run_cli(*args)
        assert proc.returncode == 0 and "usage:" in proc.stdout
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "kdq_tf.distill", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--qat" in proc.stdout


@pytest.mark.skipif(not os.path.isdir(FASHION), reason="Debian's dataset-fashion-mnist is not installed")
def test_data_info_fashion_mnist():
    proc = run_cli("data", "info", "--dataset", "fashion_mnist", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert (info["train_samples"], info["test_samples"], info["shape"]) == (60000, 10000, "28x28x1")
    assert info["class_names"][0] == "T-shirt/top" and info["class_names"][9] == "Ankle boot"


def test_inspect_good_model(inputs):
    d, _ = inputs
    proc = run_cli("inspect", d / "good.tflite", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout)
    assert info["ops"] == ["CONV_2D", "MEAN", "RESHAPE"] and info["arena_bytes"] > 1024
    assert info["tensors"][info["inputs"][0]]["dtype"] == "int8"


def test_students_listing():
    proc = run_cli("students", "--input-shape", "32x32x3")
    assert proc.returncode == 0 and "tiny_cnn" in proc.stdout and "resnet8" in proc.stdout


def test_students_listing():
    proc = run_cli("students", "--input-shape", "32x32x3")
    assert proc.returncode == 0 and "tiny_cnn" in proc.stdout and "resnet8" in proc.stdout


def _keras_model(path, outputs, shape=(12, 12, 1), layer=None):
    from kdq_tf._keras import keras

    inp = keras.Input(shape)
    x = keras.layers.Flatten()(inp)
    if layer is not None:
        x = layer(x)
    keras.Model(inp, keras.layers.Dense(outputs)(x)).save(path)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    good = separable_npz(d / "good.npz")  # 3 classes, 12x12x1
    np.savez(d / "nokeys.npz", x_train=np.zeros((4, 12, 12)), y_train=np.zeros(4))
    np.savez(d / "mismatch.npz", x_train=np.zeros((4, 12, 12)), y_train=np.zeros(3), x_test=np.zeros((2, 12, 12)),
             y_test=np.zeros(2))
    separable_npz(d / "labels.npz", class_names=np.array(["a", "b"]))
    separable_npz(d / "small.npz", size=6)
    (d / "notkeras.keras").write_text("not a model")
    _keras_model(d / "wrong_out.keras", 5)
    from kdq_tf._keras import keras

    _keras_model(d / "ln_student.keras", 3, layer=keras.layers.LayerNormalization(name="ln"))
    # Run folders for export: one without a student, one whose QAT student keeps a float block.
    from kdq_tf.config import load_config
    from kdq_tf.convert import to_tflite
    from kdq_tf.models.students import build_student
    from kdq_tf.qat import quantize_student

    cfg = load_config(sets=[f"data.dataset=npz:{good}"]).to_json()
    for run in ("nostudent", "floatblock"):
        (d / run).mkdir()
        (d / run / "config.json").write_text(cfg)
    student = build_student("tiny_cnn", (12, 12, 1), 3)
    quantize_student(student, skip="^b1_").save(d / "floatblock" / "student_qat.h5")
    blob = to_tflite(quantize_student(student), "int8")
    (d / "good.tflite").write_bytes(blob)
    (d / "truncated.tflite").write_bytes(blob[: len(blob) // 2])
    (d / "garbage.tflite").write_bytes(b"\x00" * 64)
    return d, good


BAD = {
    "missing npz": (["teacher", "--dataset", "npz:{d}/none.npz"], "does not exist"),
    "unknown dataset": (["teacher", "--dataset", "svhn"], "unknown data set 'svhn'"),
    "npz missing keys": (["teacher", "--dataset", "npz:{d}/nokeys.npz"], "lacks x_test, y_test"),
    "npz mismatched lengths": (["teacher", "--dataset", "npz:{d}/mismatch.npz"], "x_train has 4 samples"),
    "labels out of range": (["teacher", "--dataset", "npz:{d}/labels.npz"], "labels must be 0..1"),
    "images under 8x8": (["teacher", "--dataset", "npz:{d}/small.npz"], "at least 8x8"),
    "teacher not keras": (["teacher", "--dataset", "npz:{good}", "--teacher", "{d}/notkeras.keras"],
                          "not a loadable Keras model"),
    "teacher wrong outputs": (["teacher", "--dataset", "npz:{good}", "--teacher", "{d}/wrong_out.keras"],
                              "outputs .*5.* 3 classes"),
    "unknown --set key": (["teacher", "--dataset", "npz:{good}", "--set", "teacher.epoch=1"], "valid keys"),
    "T <= 0": (["distill", "--dataset", "npz:{good}", "-T", "0"], "temperature must be > 0"),
    "alpha out of range": (["distill", "--dataset", "npz:{good}", "--alpha", "1.5"], "alpha must be in"),
    "alpha with lambda": (["distill", "--dataset", "npz:{good}", "--alpha", "0.5", "--lambda", "0.5"],
                          "not both"),
    "student/class mismatch": (["distill", "--dataset", "npz:{good}", "--student", "{d}/wrong_out.keras"],
                               "outputs .*5.* 3 classes"),
    "unquantizable student": (["distill", "--dataset", "npz:{good}", "--student", "{d}/ln_student.keras", "--qat"],
                              "'ln'.*--qat-skip"),
    "sensitivity without a run": (["qat", "sensitivity", "--run", "{d}"], "holds no distilled student"),
    "export: run without student": (["export", "--run", "{d}/nostudent", "--int8"], "holds no student"),
    "export: not fully integer": (["export", "--run", "{d}/floatblock", "--int8", "--out", "{d}/x/exp"],
                                  "float ops remain: CONV_2D"),
    "export: unwritable output": (["export", "--run", "{d}/nostudent", "--out", "{d}/good.npz/sub"],
                                  "cannot write to output folder"),
    "inspect: truncated": (["inspect", "{d}/truncated.tflite"], "truncated or corrupt"),
    "inspect: garbage": (["inspect", "{d}/garbage.tflite"], "not a TFLite flatbuffer"),
    "verify: truncated": (["verify", "{d}/truncated.tflite", "--run", "{d}/floatblock"], "truncated or corrupt"),
    "out is a file": (["teacher", "--dataset", "npz:{good}", "--out", "{d}/good.npz"], "existing file"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_one_line_exit_2(case, inputs, tmp_path):
    d, good = inputs
    args, pattern = BAD[case]
    out = tmp_path / "run"
    args = [a.format(d=d, good=good) for a in args]
    if "--out" not in args and args[0] in ("teacher", "distill"):
        args += ["--out", str(out)]
    before = sorted(p.name for p in d.iterdir())
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    import re

    assert re.search(pattern, error_line(proc)), error_line(proc)
    assert not out.exists()  # nothing half-written
    assert sorted(p.name for p in d.iterdir()) == before
