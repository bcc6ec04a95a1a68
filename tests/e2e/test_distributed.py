"""The real tf.distribute engine on one machine: mirrored on logical CPUs, two local workers."""

import json
import os
import socket
import subprocess
import sys

import pytest
from conftest import ROOT, separable_npz

_MIRRORED_STEP = r"""
import json, sys
import numpy as np
from kdq_tf.distribute import make_strategy
from kdq_tf._keras import keras, tf
from kdq_tf.distill.distiller import Distiller
from kdq_tf.distill.losses import LossWeights

make_strategy("default", cpu_devices=2)  # two logical CPUs, configured before TF uses a device
rng = np.random.default_rng(0)
x = rng.normal(size=(32, 8, 8, 1)).astype("float32")
y = rng.integers(0, 3, 32)
t_logits = rng.normal(size=(32, 3)).astype("float32") * 3
ds = tf.data.Dataset.from_tensor_slices((x, (y, t_logits))).batch(32)  # one global batch

def step(strategy):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        inp = keras.Input((8, 8, 1))
        h = keras.layers.Conv2D(4, 3, activation="relu")(inp)
        out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h))
        student = keras.Model(inp, out)
        d = Distiller(student)
        d.compile(keras.optimizers.SGD(0.5), temperature=2.0, loss_weights=LossWeights(1.0, 0.5),
                  soft_loss=sys.argv[1])
    hist = d.fit(ds, epochs=1, verbose=0)
    return hist.history["loss"][0], [w.tolist() for w in student.get_weights()]

loss_d, w_d = step(make_strategy("default"))
mirrored = make_strategy("mirrored")
loss_m, w_m = step(mirrored)
print(json.dumps({"replicas": mirrored.num_replicas_in_sync, "loss_default": loss_d,
                  "loss_mirrored": loss_m,
                  "max_weight_diff": max(float(np.abs(np.array(a) - np.array(b)).max())
                                         for a, b in zip(w_d, w_m))}))
"""


@pytest.mark.parametrize("soft_loss", ["kl", "dist", "dkd"])
def test_mirrored_matches_default_for_one_step(soft_loss):
    """Two replicas take the same step as one: DIST's per-class correlation too, whose sums
    are added across replicas."""
    proc = subprocess.run(
        [sys.executable, "-c", _MIRRORED_STEP, soft_loss],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["replicas"] == 2
    assert r["loss_mirrored"] == pytest.approx(r["loss_default"], rel=1e-5)
    # Same update: per-example losses are averaged over the GLOBAL batch (a per-replica mean would
    # double it).
    assert r["max_weight_diff"] < 1e-5


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_two_local_workers(tmp_path):
    from kdq_tf._keras import keras

    npz = separable_npz(tmp_path / "d.npz", n_train=256, n_test=64, size=12, classes=3)
    inp = keras.Input((12, 12, 1))
    keras.Model(inp, keras.layers.Dense(3)(keras.layers.Flatten()(inp))).save(
        tmp_path / "teacher.keras"
    )
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    out = tmp_path / "run"
    procs = []
    for i in range(2):
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
        }
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kdq_tf",
                    "distill",
                    "--strategy",
                    "multiworker",
                    "--dataset",
                    f"npz:{npz}",
                    "--teacher",
                    str(tmp_path / "teacher.keras"),
                    "--epochs",
                    "1",
                    "--batch-size",
                    "32",
                    "--out",
                    str(out),
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    assert sorted(f.name for f in tmp_path.rglob("student.keras")) == [
        "student.keras"
    ]  # exactly one model
    assert (out / "student.keras").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["student"]["accuracy"] >= 0.0 and metrics["student"]["epochs_run"] == {
        "train": 1
    }
