"""On-device commands (infer, eval, bench) with TensorFlow made unimportable."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, error_line, separable_npz
from PIL import Image

from kdq_tf.deploy import flatbuf
from kdq_tf.deploy.export import metadata_for

# Importing any of these raises ImportError in the child: the device has no TensorFlow.
_NO_TF = (
    "import sys\n"
    "for m in ('tensorflow', 'tf_keras', 'keras', "
    "'tensorflow_model_optimization', 'kdq_tf._keras'):\n"
    "    sys.modules[m] = None\n"
    "from kdq_tf.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "assert not any(k.startswith(('tensorflow', 'tf_keras')) "
    "for k in sys.modules if sys.modules[k])\n"
    "sys.exit(code)\n"
)


def run_no_tf(*args):
    return subprocess.run(
        [sys.executable, "-c", _NO_TF, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=300,
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small model trained and exported in this process (with TF), plus its data."""
    from kdq_tf._keras import keras
    from kdq_tf.config import DataConfig
    from kdq_tf.data.dataset import load_dataset
    from kdq_tf.deploy.convert import to_tflite
    from kdq_tf.models.students import build_student

    d = tmp_path_factory.mktemp("rt")
    npz = separable_npz(
        d / "data.npz",
        n_train=400,
        n_test=120,
        size=16,
        classes=4,
        class_names=np.array(["north west", "north east", "south west", "south east"]),
    )
    data = load_dataset(DataConfig(dataset=f"npz:{npz}", val_split=0.0))
    keras.utils.set_random_seed(0)
    m = build_student("tiny_cnn", data.info.input_shape, 4)
    m.compile(
        keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    m.fit(data.pipeline("train", training=True), epochs=4, verbose=0)
    rep, _ = data.sample("train", 100)
    blob = flatbuf.embed_metadata(to_tflite(m, "int8", rep), metadata_for(data.info))
    (d / "m.tflite").write_bytes(blob)
    to_tflite_f = to_tflite(m, "float32")
    (d / "f.tflite").write_bytes(to_tflite_f)
    return d, data, blob


def _expected(blob, data, x_raw):
    from kdq_tf.runtime.runner import Runner

    return Runner.from_bytes(blob).predict(data.info.preprocess.apply(x_raw))


def test_infer_without_tensorflow(exported):
    d, data, blob = exported
    x = data.x_test[:6]
    np.savez(d / "batch.npz", x=x)
    np.save(d / "one.npy", x[0, ..., 0])
    Image.fromarray(x[1, ..., 0]).resize((24, 24), Image.NEAREST).save(d / "big.png")  # wrong size
    proc = run_no_tf(
        "infer", d / "m.tflite", d / "batch.npz", d / "one.npy", d / "big.png", "--json"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    probs = _expected(blob, data, x)
    names = data.info.class_names
    assert [r["class"] for r in res[:6]] == [names[i] for i in probs.argmax(-1)]
    np.testing.assert_allclose([r["probability"] for r in res[:6]], probs.max(-1), rtol=1e-6)
    assert res[6]["class"] == res[0]["class"]  # the .npy holds the same image as batch[0]
    assert "resizing to the model's 16x16" in proc.stderr
    assert (probs.argmax(-1) == data.y_test[:6]).mean() >= 0.8  # and the answers are right


def test_eval_without_tensorflow(exported, tmp_path):
    d, data, blob = exported
    out = tmp_path / "ev.json"
    proc = run_no_tf("eval", d / "m.tflite", "--dataset", f"npz:{d / 'data.npz'}", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    expected = (_expected(blob, data, data.x_test).argmax(-1) == data.y_test).mean()
    assert res["accuracy"] == pytest.approx(expected) and res["accuracy"] > 0.9
    cm = np.asarray(res["confusion_matrix"])
    assert cm.sum() == len(data.y_test) and np.trace(cm) / cm.sum() == pytest.approx(
        res["accuracy"]
    )


def test_bench_compare(exported):
    d, _, _ = exported
    proc = run_no_tf("bench", d / "m.tflite", "--compare", d / "f.tflite", "--runs", "30", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    assert res["model"]["input_dtype"] == "int8" and res["other"]["input_dtype"] == "float32"
    assert res["model"]["runs"] == 30 and len(res["model"]["samples_ms"]) == 30
    assert res["median_ratio"] == pytest.approx(
        res["model"]["median_ms"] / res["other"]["median_ms"]
    )
    assert res["model"]["min_ms"] <= res["model"]["median_ms"] <= res["model"]["p90_ms"]


def test_runner_matches_tf_lite_interpreter(exported):
    from kdq_tf._keras import tf
    from kdq_tf.runtime.runner import Runner

    d, data, _ = exported
    x = data.info.preprocess.apply(data.x_test[:20])
    for name in ("m.tflite", "f.tflite"):
        blob = (d / name).read_bytes()
        ref = tf.lite.Interpreter(model_content=blob)
        ref.allocate_tensors()
        i, o = ref.get_input_details()[0], ref.get_output_details()[0]
        outs = []
        for sample in x:
            s = sample[None]
            if i["dtype"] == np.int8:
                scale, zero = i["quantization"]
                s = np.clip(np.round(s / scale + zero), -128, 127).astype(np.int8)
            ref.set_tensor(i["index"], s)
            ref.invoke()
            outs.append(ref.get_tensor(o["index"])[0])
        runner = Runner.from_bytes(blob)
        np.testing.assert_array_equal(runner.predict_raw(runner.quantize(x)), np.stack(outs))


@pytest.mark.parametrize("case", ["missing", "not image", "npz without x", "not tflite"])
def test_bad_input(case, exported, tmp_path):
    d, _, _ = exported
    model, inputs, pattern = d / "m.tflite", [], ""
    if case == "missing":
        inputs, pattern = [tmp_path / "nope.png"], "does not exist"
    elif case == "not image":
        (tmp_path / "notes.png").write_text("hello")
        inputs, pattern = [tmp_path / "notes.png"], "not a readable image"
    elif case == "npz without x":
        np.savez(tmp_path / "y.npz", images=np.zeros((2, 16, 16)))
        inputs, pattern = [tmp_path / "y.npz"], "no array named x"
    else:
        model = tmp_path / "bad.tflite"
        model.write_bytes(b"\x00" * 100)
        np.save(tmp_path / "x.npy", np.zeros((16, 16), np.uint8))
        inputs, pattern = [tmp_path / "x.npy"], "not a TFLite flatbuffer"
    proc = run_no_tf("infer", model, *inputs)
    assert proc.returncode == 2
    assert pattern in error_line(proc)


@pytest.mark.slow
def test_fresh_runtime_venv(exported, tmp_path):
    """pip install '.[runtime]' into an empty venv: infer, eval (npz) and bench work without
    TensorFlow."""
    d, data, _ = exported
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    py = venv / "bin" / "python"
    pip = subprocess.run(
        [py, "-m", "pip", "install", "-q", f"{ROOT}[runtime]"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    assert subprocess.run([py, "-c", "import tensorflow"], capture_output=True).returncode != 0
    kdq = venv / "bin" / "kdq_tf"
    np.savez(tmp_path / "b.npz", x=data.x_test[:3])
    for args in (
        ["infer", d / "m.tflite", tmp_path / "b.npz"],
        [
            "eval",
            d / "m.tflite",
            "--dataset",
            f"npz:{d / 'data.npz'}",
            "--out",
            tmp_path / "e.json",
        ],
        ["bench", d / "m.tflite", "--runs", "20"],
    ):
        proc = subprocess.run(
            [kdq, *map(str, args)], capture_output=True, text=True, cwd=tmp_path, timeout=300
        )
        assert proc.returncode == 0, (args, proc.stderr[-3000:])
    assert json.loads((tmp_path / "e.json").read_text())["accuracy"] > 0.9
