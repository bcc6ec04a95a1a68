"""The bad-input matrix: every case through the CLI's `main`, a few also in a subprocess.

Each must exit with code 2, print one `kdq_tf: error:` line and no traceback,
and leave every file in the work folder as it was (nothing created or changed).
In-process calls skip a TensorFlow import per case (~6 s each on 2 cores); the
subprocess cases prove the same through the real interpreter exit code.
"""

import re
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import error_line, run_cli, separable_npz


def _keras_model(path, outputs, shape=(12, 12, 1), layer=None):
    from kdq_tf._keras import keras

    inp = keras.Input(shape)
    x = keras.layers.Flatten()(inp)
    if layer is not None:
        x = layer(x)
    keras.Model(inp, keras.layers.Dense(outputs)(x)).save(path)
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from kdq_tf._keras import keras
    from kdq_tf.config import load_config
    from kdq_tf.deploy.convert import to_tflite
    from kdq_tf.distill.qat import quantize_student
    from kdq_tf.models.students import build_student

    d = tmp_path_factory.mktemp("bad")
    good = separable_npz(d / "good.npz")  # 3 classes, 12x12x1
    np.savez(d / "nokeys.npz", x_train=np.zeros((4, 12, 12)), y_train=np.zeros(4))
    np.savez(
        d / "mismatch.npz",
        x_train=np.zeros((4, 12, 12)),
        y_train=np.zeros(3),
        x_test=np.zeros((2, 12, 12)),
        y_test=np.zeros(2),
    )
    np.savez(
        d / "flat.npz",
        x_train=np.zeros((4, 144)),
        y_train=np.zeros(4),
        x_test=np.zeros((2, 144)),
        y_test=np.zeros(2),
    )
    np.savez(
        d / "nan.npz",
        x_train=np.full((4, 12, 12), np.nan),
        y_train=np.zeros(4),
        x_test=np.zeros((2, 12, 12)),
        y_test=np.zeros(2),
    )
    separable_npz(d / "labels.npz", class_names=np.array(["a", "b"]))
    neg = dict(np.load(good))
    neg["y_train"] = neg["y_train"] - 1
    np.savez(d / "negative.npz", **neg)
    separable_npz(d / "small.npz", size=6)
    separable_npz(d / "five.npz", classes=5, size=16)  # labels 0..4: too many for a 3-class model
    (d / "empty.npz").write_bytes(b"")
    (d / "truncated.npz").write_bytes(good.read_bytes()[:200])
    (d / "notkeras.keras").write_text("not a model")
    (d / "empty.keras").write_bytes(b"")
    _keras_model(d / "wrong_out.keras", 5)
    _keras_model(d / "ln_student.keras", 3, layer=keras.layers.LayerNormalization(name="ln"))
    _keras_model(d / "lambda.keras", 3, layer=keras.layers.Lambda(lambda t: t * 2.0))
    (d / "bad_key.toml").write_text("[distill]\ntemprature = 3\n")
    (d / "bad_syntax.toml").write_text("[data\nlimit = 3\n")
    cfg = load_config(sets=[f"data.dataset=npz:{good}"]).to_json()
    for run in ("nostudent", "floatblock", "dense"):
        (d / run).mkdir()
        (d / run / "config.json").write_text(cfg)
    student = build_student("tiny_cnn", (12, 12, 1), 3)
    quantize_student(student, skip="^b1_").save(d / "floatblock" / "student_qat.h5")
    student.save(d / "dense" / "student.keras")  # a float student export quantizes; not clustered
    blob = to_tflite(quantize_student(student), "int8")
    (d / "good.tflite").write_bytes(blob)
    (d / "truncated.tflite").write_bytes(blob[: len(blob) // 2])
    (d / "garbage.tflite").write_bytes(b"\x00" * 64)
    (d / "notes.png").write_text("hello")
    np.savez(d / "nox.npz", images=np.zeros((2, 12, 12)))
    # Teacher logits for good.npz (300 training samples, 3 classes): wrong count, NaN, wrong
    # classes.
    logits = np.random.default_rng(0).normal(size=(300, 3)).astype(np.float32)
    np.savez(d / "logits_count.npz", train=logits[:299])
    np.savez(d / "logits_nan.npz", train=np.where(np.arange(300)[:, None] == 7, np.nan, logits))
    np.savez(d / "logits_classes.npz", train=np.zeros((300, 5), np.float32))
    np.savez(d / "logits_int8_noscale.npz", train_q=np.zeros((300, 3), np.int8))
    one = dict(np.load(good))
    one["y_train"] = np.zeros_like(one["y_train"])
    np.savez(d / "oneclass.npz", **one)
    flat = dict(np.load(good))
    flat["x_train"] = np.full_like(flat["x_train"], 7)
    np.savez(d / "constant.npz", **flat)
    np.savez(d / "wrongx.npz", x=np.zeros((2, 5, 12, 12, 1)))
    # Strings where numbers belong: labels, pixels, teacher logits (float and int8 scale), inputs.
    text = dict(np.load(good))
    text["y_train"] = np.array(["shirt", "shoe", "bag"])[text["y_train"]]
    np.savez(d / "string_labels.npz", **text)
    text = dict(np.load(good))
    text["x_test"] = text["x_test"].astype(str)
    np.savez(d / "string_pixels.npz", **text)
    np.savez(d / "logits_strings.npz", train=logits.astype(str))
    np.savez(
        d / "logits_scale_strings.npz",
        train_q=np.zeros((300, 3), np.int8),
        train_scale=np.full(300, "x"),
    )
    np.savez(d / "stringx.npz", x=np.full((2, 12, 12), "p"))
    return d


T, D = "teacher", "distill"
CASES = {
    # data sets (data info, teacher, distill)
    "info: unknown data set": (["data", "info", "--dataset", "svhn"], "unknown data set 'svhn'"),
    "info: missing npz": (["data", "info", "--dataset", "npz:{d}/none.npz"], "does not exist"),
    "info: empty npz": (["data", "info", "--dataset", "npz:{d}/empty.npz"], "not a readable .npz"),
    "info: truncated npz": (
        ["data", "info", "--dataset", "npz:{d}/truncated.npz"],
        "not a readable .npz",
    ),
    "info: wrong shape": (
        ["data", "info", "--dataset", "npz:{d}/flat.npz"],
        "must be \\(N, H, W\\)",
    ),
    "info: missing --data-dir": (["data", "info", "--data-dir", "{d}/nowhere"], "does not exist"),
    "teacher: npz missing keys": ([T, "--dataset", "npz:{d}/nokeys.npz"], "lacks x_test, y_test"),
    "teacher: mismatched lengths": (
        [T, "--dataset", "npz:{d}/mismatch.npz"],
        "x_train has 4 samples",
    ),
    "teacher: labels out of range": ([T, "--dataset", "npz:{d}/labels.npz"], "labels must be 0..1"),
    "teacher: negative labels": ([T, "--dataset", "npz:{d}/negative.npz"], "labels in \\[-1"),
    "teacher: images under 8x8": ([T, "--dataset", "npz:{d}/small.npz"], "at least 8x8"),
    "teacher: NaN in inputs": ([T, "--dataset", "npz:{d}/nan.npz"], "NaN or Inf"),
    "teacher: string labels": (
        [T, "--dataset", "npz:{d}/string_labels.npz"],
        "y_train holds <U5 values, not numbers",
    ),
    "info: string labels": (
        ["data", "info", "--dataset", "npz:{d}/string_labels.npz"],
        "y_train holds <U5",
    ),
    "distill: string pixels": (
        [D, "--dataset", "npz:{d}/string_pixels.npz"],
        "x_test holds <U.* not numbers",
    ),
    "teacher: one class only": ([T, "--dataset", "npz:{d}/oneclass.npz"], "only class 0"),
    "teacher: constant images": (
        [T, "--dataset", "npz:{d}/constant.npz"],
        "every training pixel is 7",
    ),
    "teacher: fewer samples than classes": (
        [T, "--dataset", "npz:{good}", "--limit", "2"],
        "2 training samples for 3 classes",
    ),
    # models
    "teacher: not a Keras file": (
        [T, "--dataset", "npz:{good}", "--teacher", "{d}/notkeras.keras"],
        "not a loadable Keras model",
    ),
    "teacher: empty Keras file": (
        [T, "--dataset", "npz:{good}", "--teacher", "{d}/empty.keras"],
        "not a loadable Keras model",
    ),
    "teacher: wrong outputs": (
        [T, "--dataset", "npz:{good}", "--teacher", "{d}/wrong_out.keras"],
        "outputs .*5.* 3 classes",
    ),
    "teacher: Lambda refused": (
        [T, "--dataset", "npz:{good}", "--teacher", "{d}/lambda.keras"],
        "--unsafe-load",
    ),
    "distill: student/class mismatch": (
        [D, "--dataset", "npz:{good}", "--student", "{d}/wrong_out.keras"],
        "outputs .*5.* 3 classes",
    ),
    "distill: unquantizable student": (
        [D, "--dataset", "npz:{good}", "--student", "{d}/ln_student.keras", "--qat"],
        "'ln'.*--qat-skip",
    ),
    "distill: unknown student": (
        [D, "--dataset", "npz:{good}", "--student", "vgg99"],
        "unknown student 'vgg99'",
    ),
    # teacher logits, fusion and views
    "distill: logits count": (
        [D, "--dataset", "npz:{good}", "--teacher-logits", "{d}/logits_count.npz"],
        "has 299 train logits but .* has 300",
    ),
    "distill: logits NaN": (
        [D, "--dataset", "npz:{good}", "--teacher-logits", "{d}/logits_nan.npz"],
        "contain NaN or Inf",
    ),
    "distill: logits classes": (
        [D, "--dataset", "npz:{good}", "--teacher-logits", "{d}/logits_classes.npz"],
        "logits for 5 classes but .* has 3",
    ),
    "distill: logits int8 without scale": (
        [D, "--dataset", "npz:{good}", "--teacher-logits", "{d}/logits_int8_noscale.npz"],
        "train_scale",
    ),
    "distill: string logits": (
        [D, "--dataset", "npz:{good}", "--teacher-logits", "{d}/logits_strings.npz"],
        "train holds <U.* values, not numbers",
    ),
    "distill: string logit scale": (
        [D, "--dataset", "npz:{good}", "--teacher-logits", "{d}/logits_scale_strings.npz"],
        "train_scale holds <U1 values",
    ),
    "distill: epochs 0 untrained": (
        [D, "--dataset", "npz:{good}", "--epochs", "0"],
        "--epochs 0 with --student tiny_cnn would export an untrained student",
    ),
    "distill: logits not npz": (
        [D, "--dataset", "npz:{good}", "--teacher-logits", "{d}/notes.png"],
        "not a readable .npz",
    ),
    "distill: logits missing": (
        [D, "--dataset", "npz:{good}", "--teacher-logits", "{d}/none.npz"],
        "does not exist",
    ),
    "distill: logits with online": (
        [
            D,
            "--dataset",
            "npz:{good}",
            "--teacher-logits",
            "{d}/logits_nan.npz",
            "--guidance",
            "online",
        ],
        "needs a teacher model",
    ),
    "distill: logits and teacher": (
        [
            D,
            "--dataset",
            "npz:{good}",
            "--teacher-logits",
            "{d}/logits_nan.npz",
            "--teacher",
            "{d}/wrong_out.keras",
        ],
        "not both",
    ),
    "distill: fusion weights count": (
        [
            D,
            "--dataset",
            "npz:{good}",
            "--teacher",
            "{d}/wrong_out.keras",
            "--teacher",
            "{d}/wrong_out.keras",
            "--teacher-weights",
            "1",
        ],
        "need 2 non-negative numbers",
    ),
    "distill: snapshot outside a run": (
        [D, "--dataset", "npz:{good}", "--teacher", "{d}/x.weights.h5"],
        "does not exist",
    ),
    "distill: views with online": (
        [D, "--dataset", "npz:{good}", "--views", "2", "--guidance", "online"],
        "needs --guidance cached",
    ),
    "distill: negative views": (
        [D, "--dataset", "npz:{good}", "--views", "-1"],
        "views must be in 0..64",
    ),
    "distill: erase out of range": (
        [D, "--dataset", "npz:{good}", "--erase", "1.5"],
        "probability",
    ),
    "distill: negative mixup": (
        [D, "--dataset", "npz:{good}", "--augment", "--mixup", "-0.2", "--lambda", "0"],
        "data.mixup must be >= 0",
    ),
    "distill: mixup with dkd": (
        [
            D,
            "--dataset",
            "npz:{good}",
            "--augment",
            "--mixup",
            "0.4",
            "--lambda",
            "0",
            "--soft-loss",
            "dkd",
        ],
        "use kl or dist",
    ),
    "distill: mixup with a hard loss": (
        [D, "--dataset", "npz:{good}", "--views", "2", "--mixup", "0.4"],
        "pass --lambda 0",
    ),
    "teacher: save-logits to a folder": (
        [T, "--dataset", "npz:{good}", "--save-logits", "{d}"],
        "is a folder",
    ),
    "teacher: save-logits not npz": (
        [T, "--dataset", "npz:{good}", "--save-logits", "{d}/l.txt"],
        "expects a .npz",
    ),
    # configuration and flags
    "teacher: unknown --set key": (
        [T, "--dataset", "npz:{good}", "--set", "teacher.epoch=1"],
        "valid keys",
    ),
    "distill: unknown TOML key": (
        [D, "--config", "{d}/bad_key.toml"],
        "valid keys in \\[distill\\]",
    ),
    "distill: invalid TOML": ([D, "--config", "{d}/bad_syntax.toml"], "not valid TOML"),
    "distill: T <= 0": ([D, "--dataset", "npz:{good}", "-T", "0"], "temperature must be > 0"),
    "distill: alpha out of range": (
        [D, "--dataset", "npz:{good}", "--alpha", "1.5"],
        "alpha must be in",
    ),
    "distill: alpha with lambda": (
        [D, "--dataset", "npz:{good}", "--alpha", "0.5", "--lambda", "0.5"],
        "not both",
    ),
    "distill: wrong type": (
        [D, "--dataset", "npz:{good}", "--set", "distill.epochs=two"],
        "expects int",
    ),
    # output folders
    "teacher: out is a file": (
        [T, "--dataset", "npz:{good}", "--out", "{d}/good.npz"],
        "existing file",
    ),
    "teacher: unwritable out": (
        [T, "--dataset", "npz:{good}", "--out", "{d}/good.npz/run"],
        "cannot write",
    ),
    "export: unwritable out": (
        ["export", "--run", "{d}/nostudent", "--out", "{d}/good.npz/sub"],
        "cannot write to output folder",
    ),
    # export, inspect, verify
    "export: run without student": (
        ["export", "--run", "{d}/nostudent", "--int8"],
        "holds no student",
    ),
    "export: missing run": (["export", "--run", "{d}/norun", "--int8"], "does not exist"),
    "export: not fully integer": (
        ["export", "--run", "{d}/floatblock", "--int8", "--out", "{d}/x/exp"],
        "float ops remain: CONV_2D",
    ),
    "teacher: missing warm start": (
        [T, "--dataset", "npz:{good}", "--set", "teacher.init={d}/none.keras"],
        "teacher.init .*none.keras does not exist",
    ),
    "export: firmware of a float model": (
        ["export", "--run", "{d}/floatblock", "--float16", "--firmware", "{d}/x/fw"],
        "--firmware needs an integer model",
    ),
    "export: no firmware samples": (
        ["export", "--run", "{d}/floatblock", "--firmware", "{d}/x/fw", "--firmware-samples", "0"],
        "firmware_samples must be in 1..1000",
    ),
    "distill: one cluster": (
        [D, "--dataset", "npz:{good}", "--cluster", "1"],
        "distill.cluster must be 0 \\(off\\) or 2..256",
    ),
    "distill: prune everything": (
        [D, "--dataset", "npz:{good}", "--prune", "1.0"],
        "strictly between 0 and 1, got 1.0",
    ),
    "distill: negative prune": (
        [D, "--dataset", "npz:{good}", "--prune", "-0.1"],
        "strictly between 0 and 1, got -0.1",
    ),
    "export: compress a float model": (
        ["export", "--run", "{d}/floatblock", "--float16", "--compress", "lut"],
        "--compress lut needs an integer model",
    ),
    "export: nothing to compress": (
        ["export", "--run", "{d}/dense", "--int8", "--compress", "lut", "--out", "{d}/x/lut"],
        "no weight tensor has few enough distinct values",
    ),
    "firmware: not a firmware folder": (
        ["firmware", "build", "{d}", "--tflm", "{d}"],
        "not a kdq_tf firmware",
    ),
    "inspect: truncated": (["inspect", "{d}/truncated.tflite"], "truncated or corrupt"),
    "inspect: garbage": (["inspect", "{d}/garbage.tflite"], "not a TFLite flatbuffer"),
    "inspect: missing": (["inspect", "{d}/none.tflite"], "does not exist"),
    "verify: truncated": (
        ["verify", "{d}/truncated.tflite", "--run", "{d}/floatblock"],
        "truncated or corrupt",
    ),
    # on-device commands
    "eval: too many labels": (
        ["eval", "{d}/good.tflite", "--dataset", "npz:{d}/five.npz"],
        "has 3 classes",
    ),
    "eval: not a model": (
        ["eval", "{d}/garbage.tflite", "--dataset", "npz:{good}"],
        "not a TFLite flatbuffer",
    ),
    "infer: missing input": (["infer", "{d}/good.tflite", "{d}/none.png"], "does not exist"),
    "infer: not an image": (["infer", "{d}/good.tflite", "{d}/notes.png"], "not a readable image"),
    "infer: npz without x": (["infer", "{d}/good.tflite", "{d}/nox.npz"], "no array named x"),
    "infer: string array": (
        ["infer", "{d}/good.tflite", "{d}/stringx.npz"],
        "holds <U1 values, not numbers",
    ),
    "infer: wrong array shape": (
        ["infer", "{d}/good.tflite", "{d}/wrongx.npz"],
        "has shape \\(2, 5, 12, 12, 1\\)",
    ),
    "sensitivity: no run": (["qat", "sensitivity", "--run", "{d}"], "holds no distilled student"),
}


def _snapshot(folder):
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def _in_process(args, capsys):
    from kdq_tf.cli import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    return SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)


SUBPROCESS = (
    "teacher: NaN in inputs",
    "distill: logits count",
    "inspect: truncated",
    "teacher: string labels",
)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, work, tmp_path, capsys):
    args, pattern = CASES[case]
    args = [a.format(d=work, good=work / "good.npz") for a in args]
    out = tmp_path / "run"
    if args[0] in (T, D) and "--out" not in args:
        args += ["--out", str(out)]
    before = _snapshot(work)
    proc = run_cli(*args) if case in SUBPROCESS else _in_process(args, capsys)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = error_line(proc)  # exactly one, and no traceback
    assert re.search(pattern, line), line
    assert not out.exists()
    assert _snapshot(work) == before  # nothing created or changed
