"""Teacher training throughput on this machine: architecture, batch size, precision, XLA and
adapter size.

    python benchmarks/teacher_speed.py            # every combination, ~10 s of timed steps each
    python benchmarks/teacher_speed.py --steps 5  # shorter

Each configuration builds the teacher (ResNet50, or the full-resolution CNN of
`teacher.arch=cnn`), runs warm-up steps outside the timing, then times `--steps` training
steps on random Fashion-MNIST-shaped batches. The result is images per second; compare rows
of one run only (ratios), never across machines.
Writes benchmarks/results/teacher_speed.{json,md}.
"""

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def probe(
    batch: int,
    precision: str,
    jit: bool,
    input_size: int,
    adapter: str,
    steps: int,
    arch: str = "resnet50",
    width: int = 48,
) -> dict:
    from kdq_tf._keras import keras
    from kdq_tf.config import TeacherConfig
    from kdq_tf.teacher.recipe import build_teacher_for_training

    keras.backend.clear_session()
    cfg = TeacherConfig(
        arch=arch, width=width, input_size=input_size, adapter=adapter, precision=precision, jit=jit
    )
    model, used = build_teacher_for_training((28, 28, 1), 10, cfg)
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    rng = np.random.default_rng(0)
    x = rng.random((batch, 28, 28, 1), np.float32)
    y = rng.integers(0, 10, batch)
    for _ in range(3):
        model.train_on_batch(x, y)
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    sec = time.perf_counter() - t0
    return {
        "arch": arch if arch == "resnet50" else f"cnn{width}",
        "batch": batch,
        "precision": used,
        "jit": jit,
        "input_size": input_size,
        "adapter": adapter,
        "steps": steps,
        "images_per_s": batch * steps / sec,
    }


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batches", default="32,128")
    p.add_argument("--precisions", default="float32,mixed_bfloat16")
    p.add_argument("--jit", default="off,on")
    p.add_argument(
        "--sizes", default="32", help="adapter sides; 32 pads, larger ones resize (ResNet50 only)"
    )
    p.add_argument("--archs", default="resnet50,cnn")
    p.add_argument("--width", type=int, default=48, help="the cnn teacher's first-stage filters")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    a = p.parse_args(argv)
    from kdq_tf import files
    from kdq_tf.teacher.recipe import cpu_has_bf16

    rows = []
    grid = itertools.product(
        a.archs.split(","),
        [int(v) for v in a.batches.split(",")],
        a.precisions.split(","),
        [v == "on" for v in a.jit.split(",")],
        [int(v) for v in a.sizes.split(",")],
    )
    for arch, b, prec, jit, size in grid:
        if arch == "cnn" and size != int(a.sizes.split(",")[0]):
            continue  # the cnn reads the data at its own size: one row per setting
        r = probe(b, prec, jit, size, "pad" if size == 32 else "resize", a.steps, arch, a.width)
        print(json.dumps(r), flush=True)
        rows.append(r)
    base = rows[0]["images_per_s"]
    for r in rows:
        r["vs_first"] = r["images_per_s"] / base
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu_bf16": cpu_has_bf16(),
        "rows": rows,
    }
    out = Path(a.results)
    files.write_json(out / "teacher_speed.json", res)
    lines = [
        "# Teacher training throughput",
        "",
        f"{res['date']}; CPU bf16 support: {res['cpu_bf16']}; "
        f"{a.steps} timed steps per row, after 3 warm-up "
        "steps; random inputs of 28x28x1.",
        "",
        "| teacher | batch | precision | XLA | input | images/s | vs first row |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        shown = f"{r['adapter']} {r['input_size']}" if r["arch"] == "resnet50" else "28x28 as is"
        lines.append(
            f"| {r['arch']} | {r['batch']} | {r['precision']} | {'on' if r['jit'] else 'off'} | "
            f"{shown} | {r['images_per_s']:.1f} | {r['vs_first']:.2f}x |"
        )
    files.write_text(out / "teacher_speed.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
