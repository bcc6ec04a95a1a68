"""Fused teachers and logits files through the CLI, on a data slice."""

import json

import numpy as np
import pytest
from conftest import run_cli, separable_npz

from kdq_tf.teacher import logits_file as LF


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from kdq_tf._keras import keras

    d = tmp_path_factory.mktemp("fuse")
    npz = separable_npz(d / "d.npz", n_train=200, n_test=60, size=12, classes=3)
    with np.load(npz) as f:
        x, y = f["x_train"].astype(np.float32) / 255.0, f["y_train"]
    for i, width in enumerate((4, 8)):
        keras.utils.set_random_seed(i)
        inp = keras.Input((12, 12, 1))
        h = keras.layers.Conv2D(width, 3, strides=2, activation="relu")(inp)
        m = keras.Model(inp, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h)))
        m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        m.fit(x, y, epochs=3 * (i + 1), verbose=0)
        m.save(d / f"t{i}.keras")
    return d, npz


def test_two_member_fusion_end_to_end(setup):
    d, npz = setup
    out = d / "run_fused"
    proc = run_cli(
        "distill",
        "--dataset",
        f"npz:{npz}",
        "--teacher",
        d / "t0.keras",
        "--teacher",
        d / "t1.keras",
        "--epochs",
        "1",
        "--qat",
        "--qat-epochs",
        "1",
        "--baseline",
        "--out",
        out,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    members = m["teacher"]["members"]
    assert [r["source"] for r in members] == [str(d / "t0.keras"), str(d / "t1.keras")]
    # Default weights are proportional to the members' validation accuracy.
    acc = np.array([r["val_accuracy"] for r in members])
    np.testing.assert_allclose([r["weight"] for r in members], acc / acc.sum(), rtol=1e-6)
    assert m["teacher"]["fusion"] == "logits" and 0 <= m["teacher"]["accuracy"] <= 1
    assert {"student", "student_qat", "baseline", "baseline_qat"} <= set(m)
    report = (out / "report.md").read_text()
    assert report.count("teacher member") == 2 and "baseline_qat" in report


def test_saved_logits_train_a_student_with_views(setup):
    d, npz = setup
    logits = d / "teacher_logits.npz"
    proc = run_cli(
        "teacher",
        "--dataset",
        f"npz:{npz}",
        "--teacher",
        d / "t1.keras",
        "--views",
        "2",
        "--erase",
        "0.5",
        "--save-logits",
        logits,
        "--out",
        d / "run_t",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    t = LF.from_bytes(logits.read_bytes(), "f")
    assert t.train.shape == (200, 3) and t.test.shape == (60, 3) and t.views.shape == (2, 200, 3)
    assert t.views_aug == {"flip": True, "translate": 2, "erase": 0.5}
    assert t.meta["views"] == 2 and t.data_fp
    teacher_m = json.loads((d / "run_t" / "metrics.json").read_text())["teacher"]
    with np.load(npz) as f:
        y_test = f["y_test"]
    # The file's test logits give the teacher's own test accuracy (int8 may flip a near tie).
    assert abs((t.test.argmax(-1) == y_test).mean() - teacher_m["accuracy"]) <= 1 / 60 + 1e-9

    out = d / "run_from_logits"
    proc = run_cli(
        "distill",
        "--dataset",
        f"npz:{npz}",
        "--teacher-logits",
        logits,
        "--views",
        "2",
        "--epochs",
        "2",
        "--seed",
        "3",
        "--baseline",
        "--out",
        out,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["guidance"]["views"] == 2 and m["guidance"]["source"] == str(logits)
    assert m["teacher"]["accuracy"] == pytest.approx((t.test.argmax(-1) == y_test).mean())
    assert not (out / "teacher.keras").exists()  # no teacher model was needed
    assert m["student"]["epochs_run"] == {"train": 2}

    # The twin alone (kd_study trains it beside its student) is that run's twin: the views'
    # augmentation from the file, the same seed and schedule, so the same weights.
    from kdq_tf import load_config
    from kdq_tf.pipeline import run_twin
    from kdq_tf.runs import load_student

    sets = ["distill.views=2", "distill.epochs=2", "run.seed=3", f"run.out={d / 'twin'}"]
    _, alone = run_twin(
        load_config(sets=[f"data.dataset=npz:{npz}", f"teacher.logits={logits}", *sets])
    )
    assert set(alone) == {"baseline"}  # no teacher, no student
    assert alone["baseline"]["val_accuracy"] == m["baseline"]["val_accuracy"]
    w_pair, w_alone = (load_student(p / "baseline.keras").get_weights() for p in (out, d / "twin"))
    for a, b in zip(w_pair, w_alone, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
