"""End to end on a slice of real Fashion-MNIST: teacher, then distill + QAT + baseline."""

import json
import os

import pytest
from conftest import run_cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.path.isdir("/usr/share/datasets/fashion-mnist"),
        reason="Debian's dataset-fashion-mnist is not installed",
    ),
]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "t"
    # 1. Train the ResNet50 teacher for one epoch on 3000 images (the command).
    proc = run_cli(
        "teacher", "--dataset", "fashion_mnist", "--epochs", "1", "--limit", "3000", "--out", out
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_teacher_stage(teacher_run):
    m = json.loads((teacher_run / "metrics.json").read_text())["teacher"]
    assert (teacher_run / "teacher.keras").is_file() and (teacher_run / "config.json").is_file()
    assert m["accuracy"] > 0.4  # chance is 0.1
    assert {"precision", "recall", "f1", "params", "train_time_s"} <= set(m)
    assert m["params"] > 23_000_000
    assert list((teacher_run / "tb" / "teacher").rglob("events.out.tfevents.*"))
    # 2. --resume on a finished run reuses the teacher instead of training again.
    proc = run_cli(
        "teacher",
        "--dataset",
        "fashion_mnist",
        "--epochs",
        "1",
        "--limit",
        "3000",
        "--out",
        teacher_run,
        "--resume",
    )
    assert proc.returncode == 0 and "reusing" in proc.stderr
    # 3. Without --resume or --overwrite the run is protected.
    proc = run_cli("teacher", "--dataset", "fashion_mnist", "--limit", "3000", "--out", teacher_run)
    assert proc.returncode == 2 and "--resume" in proc.stderr


def test_distill_qat_baseline(teacher_run, tmp_path):
    out = tmp_path / "d"
    proc = run_cli(
        "distill",
        "--dataset",
        "fashion_mnist",
        "--epochs",
        "2",
        "--qat",
        "--qat-epochs",
        "1",
        "--limit",
        "3000",
        "--baseline",
        "--teacher",
        teacher_run / "teacher.keras",
        "--out",
        out,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    for stage in ("teacher", "student", "student_qat", "baseline"):
        assert metrics[stage]["accuracy"] > 0.4, (stage, metrics[stage])
        assert metrics[stage]["split"] == "test"
    assert metrics["teacher"]["params"] >= 100 * metrics["student"]["params"]
    assert metrics["guidance"]["mode"] == "cached" and metrics["guidance"]["cache_bytes"] > 0
    for f in ("student.keras", "student_qat.h5", "baseline.keras", "report.md"):
        assert (out / f).is_file(), f
    assert "student_qat" in (out / "report.md").read_text()

    # Export the QAT student: the command, on the run just made.
    proc = run_cli(
        "export",
        "--run",
        out,
        "--int8",
        "--c-array",
        "--firmware",
        out / "fw",
        "--out",
        out / "export",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    exp = out / "export"
    for f in (
        "model_int8.tflite",
        "model_data.cc",
        "model_data.h",
        "model_settings.h",
        "model_ops.h",
        "report.json",
        "sample_input.h",
    ):
        assert (exp / f).is_file(), f
    for f in ("main.cc", "Makefile", "CMakeLists.txt", "README.md", "model_data.cc"):
        assert (out / "fw" / f).is_file(), f
    from kdq_tf.runtime.runner import Runner

    r = Runner.from_file(exp / "model_int8.tflite")
    assert (
        r.input_details["dtype"].__name__ == "int8" and r.output_details["dtype"].__name__ == "int8"
    )
    v = json.loads((exp / "report.json").read_text())["verify"]
    assert v["samples"] == 1000
    assert v["top1_agreement_keras_litert"] >= 0.99
    assert v["exact_outputs_tflm_vs_litert_ref"] == 1.0
    assert abs(v["accuracy_litert"] - v["accuracy_keras"]) < 0.02

    # On-device eval of the exported file (metadata gives the preprocessing) = export's figure.
    proc = run_cli(
        "eval",
        exp / "model_int8.tflite",
        "--dataset",
        "fashion_mnist",
        "--limit",
        "3000",
        "--out",
        tmp_path / "eval.json",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((exp / "report.json").read_text())
    assert report["test_samples"] == 3000
    assert (
        json.loads((tmp_path / "eval.json").read_text())["accuracy"]
        == report["test_accuracy_litert"]
    )
