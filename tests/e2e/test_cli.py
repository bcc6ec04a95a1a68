"""The CLI as users meet it: help, data info, students, inspect. (Bad input:
tests/test_bad_inputs.py.)"""

import json
import os

import pytest
from conftest import run_cli

FASHION = "/usr/share/datasets/fashion-mnist"


def test_help_commands():
    for args in (
        ["--help"],
        ["teacher", "--help"],
        ["distill", "--help"],
        ["data", "info", "--help"],
    ):
        proc = run_cli(*args)
        assert proc.returncode == 0 and "usage:" in proc.stdout
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "kdq_tf.distill", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "--qat" in proc.stdout


@pytest.mark.skipif(
    not os.path.isdir(FASHION), reason="Debian's dataset-fashion-mnist is not installed"
)
def test_data_info_fashion_mnist():
    proc = run_cli("data", "info", "--dataset", "fashion_mnist", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert (info["train_samples"], info["test_samples"], info["shape"]) == (60000, 10000, "28x28x1")
    assert info["class_names"][0] == "T-shirt/top" and info["class_names"][9] == "Ankle boot"


def test_inspect_good_model(tmp_path):
    from kdq_tf.deploy.convert import to_tflite
    from kdq_tf.distill.qat import quantize_student
    from kdq_tf.models.students import build_student

    (tmp_path / "m.tflite").write_bytes(
        to_tflite(quantize_student(build_student("tiny_cnn", (12, 12, 1), 3)), "int8")
    )
    proc = run_cli("inspect", tmp_path / "m.tflite", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout)
    assert info["ops"] == ["CONV_2D", "MEAN", "RESHAPE"] and info["arena_bytes"] > 1024
    assert info["tensors"][info["inputs"][0]]["dtype"] == "int8"


def test_students_listing():
    proc = run_cli("students", "--input-shape", "32x32x3")
    assert proc.returncode == 0 and "tiny_cnn" in proc.stdout and "resnet8" in proc.stdout
