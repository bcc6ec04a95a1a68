"""Clustering and pruning under distillation, through QAT, int8 export and TFLM LUT compression."""

import json

import numpy as np
import pytest
from conftest import run_cli, separable_npz

from kdq_tf.deploy import flatbuf


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from kdq_tf._keras import keras

    d = tmp_path_factory.mktemp("structure")
    npz = separable_npz(d / "d.npz", n_train=300, n_test=60, size=12, classes=3)
    with np.load(npz) as f:
        x, y = f["x_train"].astype(np.float32) / 255.0, f["y_train"]
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 1))
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
    t = keras.Model(inp, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h)))
    t.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    t.fit(x, y, epochs=3, verbose=0)
    t.save(d / "teacher.keras")
    return d, npz


def distill_qat(setup, out, *flags):
    """`kdq_tf distill` from the fixture's teacher on its data, with one QAT epoch."""
    d, npz = setup
    args = ["--dataset", f"npz:{npz}", "--teacher", d / "teacher.keras"]
    proc = run_cli("distill", *args, *flags, "--qat", "--qat-epochs", "1", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_cluster_under_distillation_then_cqat_then_lut_export(setup):
    out = setup[0] / "run_cluster"
    distill_qat(setup, out, "--epochs", "1", "--cluster", "8", "--structure-epochs", "1")
    m = json.loads((out / "metrics.json").read_text())
    s = m["student_structured"]
    assert s["cluster"] == 8 and s["max_unique"] <= 8  # every float kernel holds <= 8 values
    exp = out / "export"
    proc = run_cli("export", "--run", out, "--int8", "--compress", "lut", "--out", exp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((exp / "report.json").read_text())
    assert all(w["unique_per_channel"] <= 8 for w in r["weights"]), r[
        "weights"
    ]  # CQAT kept them through int8
    c = r["compressed"]
    assert c["tensors_compressed"] >= 1 and c["bit_exact_tflm"] == c["samples"] > 0
    assert (
        c["bytes"]
        < c["uncompressed_bytes"]
        == len((exp / "model_int8.tflite").read_bytes())
        - (r["verify"]["device_model"]["saved_bytes"])
    )
    lut = (exp / "model_int8_lut.tflite").read_bytes()
    assert len(lut) == c["bytes"]
    # the C array carries the compressed model with its DECODE -> CONV_2D pairs fused
    fused = (exp / "model_int8_lut_fused.tflite").read_bytes()
    assert f"g_model_model_data_size = {len(fused)};" in (exp / "model_data.h").read_text()
    ops = flatbuf.operator_sequence(fused)
    assert ops.count("CUSTOM:KDQ_LUT_CONV") == len(c["fused"]) >= 1
    assert ops.count("CUSTOM:TFLM_DECODE") == flatbuf.operator_sequence(lut).count(
        "CUSTOM:TFLM_DECODE"
    ) - len(c["fused"])
    assert "kdq::Register_LUT_CONV()" in (exp / "model_ops.h").read_text()
    md = (exp / "report.md").read_text()
    assert "LUT-compressed device model" in md and "fused into KDQ_LUT_CONV" in md
    assert c["fused_file"] == "model_int8_lut_fused.tflite"
    # --no-fuse-lut: the C array is the DECODE model itself, which TFLM's own DECODE reads
    plain = out / "export_decode"
    proc = run_cli(
        "export", "--run", out, "--int8", "--compress", "lut", "--no-fuse-lut", "--out", plain
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (plain / "model_int8_lut.tflite").read_bytes() == lut
    assert not (plain / "model_int8_lut_fused.tflite").exists()
    assert f"g_model_model_data_size = {len(lut)};" in (plain / "model_data.h").read_text()
    ops_h = (plain / "model_ops.h").read_text()
    assert "kdq::Register_DECODE()" in ops_h and "Register_LUT_CONV" not in ops_h
    assert "fused" not in json.loads((plain / "report.json").read_text())["compressed"]


def test_prune_under_distillation_keeps_zeros_through_pqat(setup):
    out = setup[0] / "run_prune"
    distill_qat(setup, out, "--epochs", "1", "--prune", "0.5", "--structure-epochs", "2")
    s = json.loads((out / "metrics.json").read_text())["student_structured"]
    big = [k["zeros"] for k in s["kernels"] if k["size"] >= 100]
    assert big and min(big) >= 0.45, s["kernels"]
    proc = run_cli("export", "--run", out, "--int8", "--out", out / "export")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((out / "export" / "report.json").read_text())
    zeros = [w["zeros"] for w in r["weights"] if w["bytes"] >= 100]
    assert min(zeros) >= 0.45, r["weights"]  # the sparsity survived QAT and conversion
    assert r["sizes"]["gzip_bytes"] < r["sizes"]["tflite_bytes"]


def test_shrink_from_a_trained_student_keeps_its_zeros_through_pqat(setup):
    """--student PATH.keras --epochs 0 starts from that model's weights (what benchmarks/flash.py
    does with distilled students; here the trained teacher stands in); the soft threshold's zeros
    then survive QAT and conversion."""
    from kdq_tf._keras import keras

    d = setup[0]
    out = d / "run_shrink"
    distill_qat(setup, out, "--epochs", "0", "--student", d / "teacher.keras", "--shrink", "0.1")
    m = json.loads((out / "metrics.json").read_text())
    assert (
        m["student"]["accuracy"] == m["teacher"]["accuracy"]
    )  # the same weights, untrained by --epochs 0
    start = keras.models.load_model(d / "teacher.keras", compile=False)
    kept = keras.models.load_model(out / "student.keras", compile=False)
    for a, b in zip(start.get_weights(), kept.get_weights()):
        np.testing.assert_array_equal(a, b)
    sparsity = m["shrink"]["sparsity_after"]
    assert sparsity > 0.2, m["shrink"]  # the threshold made zeros worth checking
    proc = run_cli("export", "--run", out, "--int8", "--out", out / "export")
    assert proc.returncode == 0, proc.stderr[-3000:]
    w = json.loads((out / "export" / "report.json").read_text())["weights"]
    int8_zeros = sum(t["zeros"] * t["bytes"] for t in w) / sum(t["bytes"] for t in w)
    # PQAT masks the zeros; int8 rounding can only add more (small weights rounding to 0)
    assert int8_zeros >= sparsity - 1e-9, (int8_zeros, sparsity)


@pytest.mark.parametrize("kind", ["dist", "dkd"])
def test_dist_and_dkd_distill_and_go_through_qat(setup, kind):
    """The relation (DIST) and decoupled (DKD) losses drive distillation and the QAT that
    follows it, like KL; the run records the loss and its coefficients."""
    out = setup[0] / f"run_{kind}"
    coef = ["--dist-gamma", "2"] if kind == "dist" else ["--dkd-beta", "4"]
    distill_qat(setup, out, "--soft-loss", kind, *coef, "--epochs", "3")

    def soft(name):  # the soft loss of each epoch's training batches
        rows = (out / name).read_text().splitlines()
        col = rows[0].split(",").index("soft_loss")
        return [float(r.split(",")[col]) for r in rows[1:]]

    distill, qat = soft("distill_history.csv"), soft("qat_history.csv")
    assert distill[-1] < distill[0], distill  # the loss drives the student towards the teacher
    assert len(qat) == 1 and 0 <= qat[0] < distill[0], qat  # and the QAT that follows
    d_cfg = json.loads((out / "config.json").read_text())["distill"]
    assert d_cfg["soft_loss"] == kind
    assert (d_cfg["dist_gamma"] if kind == "dist" else d_cfg["dkd_beta"]) == (
        2.0 if kind == "dist" else 4.0
    )


def test_function_matching_on_mixed_views_and_a_mixup_twin(setup):
    """--mixup with --views: the teacher's cached logits are of the mixed views, the student
    matches them (--lambda 0), QAT follows, and the scratch twin trains with mixup on mixed
    labels."""
    out = setup[0] / "run_mixup"
    flags = ["--views", "2", "--mixup", "0.4", "--lambda", "0", "--epochs", "4", "--baseline"]
    distill_qat(setup, out, *flags)
    m = json.loads((out / "metrics.json").read_text())
    assert m["guidance"]["views"] == 2 and not m["guidance"]["reused"]
    assert json.loads((out / "config.json").read_text())["data"]["mixup"] == 0.4

    def column(name, col):
        rows = (out / name).read_text().splitlines()
        i = rows[0].split(",").index(col)
        return [float(r.split(",")[i]) for r in rows[1:]]

    soft = column("distill_history.csv", "soft_loss")
    assert len(soft) == 4 and soft[-1] < soft[0], soft
    twin = column("baseline_history.csv", "loss")
    assert twin[-1] < twin[0], twin  # mixed one-hot targets under categorical cross-entropy
    assert "baseline" in m and "student_qat" in m
