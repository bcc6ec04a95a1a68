"""Kill -9 in the middle of training, then --resume; and seeded runs that repeat exactly."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, run_cli, separable_npz

pytestmark = pytest.mark.slow


def _rows(path):
    if not path.is_file():
        return []
    with open(path) as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def _kill_after_first_epoch(args, history):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kdq_tf", *map(str, args)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The epoch's row is written before its checkpoint (kdq_tf.training.EpochLog), so the kill
    # waits for both: then the first epoch is one the resumed run must not train again.
    saved = history.parent / "ckpt"
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        if _rows(history) and any(saved.glob("*_backup/**/checkpoint")):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    return _rows(history)


def _check_artifacts(run):
    from kdq_tf._keras import keras

    for f in run.rglob("*"):
        if f.name.startswith(".") and f.suffix == ".tmp":
            pytest.fail(f"temp file left behind: {f}")
        if f.suffix == ".json":
            json.loads(f.read_text())
        elif f.suffix == ".keras":
            keras.models.load_model(f, compile=False)
        elif f.suffix == ".npz":
            with np.load(f) as z:
                _ = [z[k] for k in z.files]


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return separable_npz(
        tmp_path_factory.mktemp("f") / "d.npz", n_train=3000, n_test=200, size=28, classes=4
    )


def test_distill_killed_then_resumed(npz, tmp_path):
    from kdq_tf._keras import keras

    inp = keras.Input((28, 28, 1))
    keras.Model(inp, keras.layers.Dense(4)(keras.layers.Flatten()(inp))).save(tmp_path / "t.keras")
    run = tmp_path / "run"
    args = [
        "distill",
        "--dataset",
        f"npz:{npz}",
        "--teacher",
        tmp_path / "t.keras",
        "--student",
        "resnet8",
        "--epochs",
        "4",
        "--out",
        run,
    ]
    done = _kill_after_first_epoch(args, run / "distill_history.csv")
    assert done and not (run / "student.keras").exists()
    proc = run_cli(*args, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    epochs = _rows(run / "distill_history.csv")
    assert epochs == list(range(4)), epochs  # continued from the saved epoch: no epoch twice
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["student"]["epochs_run"]["train"] == 4 - len(done)
    assert {"teacher", "guidance", "student"} <= set(metrics)
    _check_artifacts(run)


def test_teacher_killed_then_resumed(tmp_path):
    npz = separable_npz(tmp_path / "small.npz", n_train=400, n_test=50, size=12, classes=3)
    run = tmp_path / "run"
    # The small CNN teacher: the same teacher stage and resume path as ResNet50, in a tenth of
    # the time (tests/e2e/test_pipeline_real_data.py trains the ResNet50).
    args = [
        "teacher",
        "--dataset",
        f"npz:{npz}",
        "--epochs",
        "3",
        "--out",
        run,
        "--set",
        "teacher.arch=cnn",
        "--set",
        "teacher.width=16",
    ]
    done = _kill_after_first_epoch(args, run / "teacher_history.csv")
    assert done and not (run / "teacher.keras").exists()
    proc = run_cli(*args, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _rows(run / "teacher_history.csv") == [0, 1, 2]
    assert json.loads((run / "metrics.json").read_text())["teacher"]["epochs_run"][
        "train"
    ] == 3 - len(done)
    _check_artifacts(run)


def test_seeded_runs_repeat_exactly(tmp_path):
    npz = separable_npz(tmp_path / "d.npz", n_train=300, n_test=100, size=12, classes=3)
    from kdq_tf._keras import keras

    inp = keras.Input((12, 12, 1))
    keras.Model(inp, keras.layers.Dense(3)(keras.layers.Flatten()(inp))).save(tmp_path / "t.keras")
    results = []
    for i in range(2):
        out = tmp_path / f"r{i}"
        proc = run_cli(
            "distill",
            "--dataset",
            f"npz:{npz}",
            "--teacher",
            tmp_path / "t.keras",
            "--epochs",
            "2",
            "--seed",
            "7",
            "--augment",
            "--guidance",
            "online",
            "--out",
            out,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        m = json.loads((out / "metrics.json").read_text())
        results.append(
            {k: {kk: vv for kk, vv in v.items() if "time" not in kk} for k, v in m.items()}
        )
        results[-1]["history"] = (out / "distill_history.csv").read_text()
    assert results[0] == results[1]
