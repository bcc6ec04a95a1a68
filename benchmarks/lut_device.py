"""LUT on the whole image: what 16-cluster LUT compression saves on the firmware a user flashes,
with TFLM's DECODE operators and with kdq_tf's fused LUT convolution (kdq_tf.device.fuse).

For each student: its kernels snapped to 16 values per output channel (what `--cluster 16` and
CQAT leave), int8, LUT-compressed, then three firmware images on each target: dense, LUT with
DECODE, LUT fused. Each is built, run bit-exact against the Python TFLM interpreter (the DECODE
model), and rebuilt with the smallest arena the target runs it in, so RAM is what the image
needs, not the host's margin. Reported: flash, RAM (.data + .bss), the arena, instructions per
inference, and the share of the model bytes LUT saves that the whole image keeps.

The weights are the untrained student's, clustered: flash, RAM and instruction counts depend
on the layer shapes and on the number of values per channel, not on what the values are.

    python benchmarks/lut_device.py --tflm ../shared/tflm
"""

import argparse
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench import portable  # noqa: E402 - a sibling script

log = logging.getLogger("lut_device")
VARIANTS = ("dense", "lut_decode", "lut_fused")


def clustered_student(name: str, data, clusters: int = 16) -> bytes:
    """The untrained student with each output channel's kernel snapped to `clusters` evenly
    spaced values, converted to int8 on 256 training images."""
    import numpy as np

    from kdq_tf._keras import keras
    from kdq_tf.deploy.convert import to_tflite
    from kdq_tf.models.students import STUDENTS

    keras.utils.set_random_seed(0)
    m = STUDENTS[name](data.info.input_shape, data.info.num_classes)
    for layer in m.layers:
        if type(layer) not in (keras.layers.Conv2D, keras.layers.Dense):
            continue  # depthwise kernels keep their DECODE (kdq_tf.device.fuse)
        k, *rest = layer.get_weights()
        moved = np.moveaxis(k, -1, 0).copy()
        for c in range(moved.shape[0]):
            v = np.linspace(moved[c].min(), moved[c].max(), clusters)
            moved[c] = v[np.abs(moved[c][..., None] - v).argmin(-1)]
        layer.set_weights([np.moveaxis(moved, 0, -1), *rest])
    return to_tflite(m, "int8", data.info.preprocess.apply(data.x_train[:256]))


def measure(a, name: str, data, target: str, kernels: str, work: Path) -> dict:
    from kdq_tf.deploy import flatbuf
    from kdq_tf.deploy.compression import compress_lut
    from kdq_tf.deploy.export import firmware_project
    from kdq_tf.device.build import BuildOptions, build
    from kdq_tf.device.run import run
    from kdq_tf.search.trial import tight_arena

    model = clustered_student(name, data)
    dense = flatbuf.strip_for_device(model)
    small, _ = compress_lut(dense)
    x = data.info.preprocess.apply(data.x_test[: a.samples])
    y = data.y_test[: a.samples]
    rows = {}
    for variant in VARIANTS:
        fw = work / name / f"{target}-{kernels}" / variant

        def write(arena, exact, fw=fw, variant=variant):
            shutil.rmtree(fw, ignore_errors=True)
            firmware_project(
                model,
                fw,
                name,
                data.info.class_names,
                x,
                y,
                a.samples,
                arena,
                device_bytes=None if variant == "dense" else small,
                exact_arena=exact,
                fuse_lut=variant == "lut_fused",
            )

        def build_run(fw=fw):
            build(fw, BuildOptions(target, kernels, a.tflm))
            return run(fw, target, kernels)

        write(None, False)
        r = tight_arena(fw, write, target, kernels, a.tflm, build_run())
        m = r["memory"]
        rows[variant] = {
            "bit_exact": r["bit_exact"],
            "samples": r["samples"],
            # the image a user flashes carries one input, not the check's `samples`
            "flash_bytes": m["flash_bytes"]
            - m["flash_test_images_bytes"] * (r["samples"] - 1) // r["samples"],
            "flash_model_bytes": m["flash_model_bytes"],
            "flash_decode_bytes": m.get("flash_decode_bytes"),
            "ram_bytes": m["ram_bytes"],
            "arena_bytes": m["ram_arena_bytes"],
            "instructions_per_inference": r.get("instructions_per_inference"),
            "ops": flatbuf.operator_sequence((fw / "model_device.tflite").read_bytes()),
        }
        log.info("%s %s %s %s: %s", name, target, kernels, variant, rows[variant])
    d = rows["dense"]
    for variant in VARIANTS[1:]:
        v = rows[variant]
        saved_model = d["flash_model_bytes"] - v["flash_model_bytes"]
        v["kept_of_model_saving"] = round((d["flash_bytes"] - v["flash_bytes"]) / saved_model, 4)
        v["flash_vs_dense"] = round(v["flash_bytes"] / d["flash_bytes"], 4)
        v["ram_vs_dense"] = round(v["ram_bytes"] / d["ram_bytes"], 4)
        if d["instructions_per_inference"] and v["instructions_per_inference"]:
            v["instructions_vs_dense"] = round(
                v["instructions_per_inference"] / d["instructions_per_inference"], 4
            )
    return rows


def markdown(res: dict) -> str:
    lines = [
        "## LUT on the whole image (16 clusters per channel)",
        "",
        "| student | target | kernels | image | flash | RAM | arena | instructions "
        "| vs dense: flash / RAM / instr | kept of the model saving | bit-exact |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, rows in res["runs"].items():
        student, target, kernels = key.split("/")
        for variant in VARIANTS:
            v = rows[variant]
            vs = (
                f"{v['flash_vs_dense']:.3f} / {v['ram_vs_dense']:.3f} / "
                f"{v.get('instructions_vs_dense', float('nan')):.3f}"
                if variant != "dense"
                else ""
            )
            kept = f"{v['kept_of_model_saving']:.1%}" if variant != "dense" else ""
            instr = v["instructions_per_inference"]
            lines.append(
                f"| {student} | {target} | {kernels} | {variant} | {v['flash_bytes']:,} "
                f"| {v['ram_bytes']:,} | {v['arena_bytes']:,} "
                f"| {f'{instr:,}' if instr else '—'} | {vs} | {kept} "
                f"| {v['bit_exact']}/{v['samples']} |"
            )
    lines += [
        "",
        "Each image is rebuilt with the smallest arena its target runs it in (bisection on the "
        "target), so RAM (.data + .bss) is what the image needs. Kept of the model saving: flash "
        "saved on the whole image over model bytes saved by LUT. Untrained weights snapped to 16 "
        "values per channel (sizes and counts do not depend on the values). Bit-exact: the "
        "firmware against the Python TFLM interpreter on the DECODE model.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> dict:
    from kdq_tf import files

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tflm", default=os.environ.get("TFLM_DIR", ""))
    p.add_argument("--students", default="small_cnn,fast_cnn")
    p.add_argument(
        "--builds",
        default="cortex-m4:cmsis-nn,cortex-m4:reference,cortex-m55:cmsis-nn",
        help="target:kernels, comma-separated",
    )
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--work", default=str(ROOT / "runs" / "bench_lut_device"))
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--name", default="lut_device")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not a.tflm:
        p.error("no TFLite-Micro tree: pass --tflm DIR or set TFLM_DIR")
    from kdq_tf.config import DataConfig
    from kdq_tf.data.dataset import load_dataset

    data = load_dataset(DataConfig(dataset=a.dataset))
    out = Path(a.results)
    path = out / f"{a.name}.json"
    res = files.read_json(path) if path.is_file() else {"runs": {}}
    res["command"] = "python benchmarks/lut_device.py " + " ".join(argv or sys.argv[1:])
    res["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    t0 = time.time()
    for student in a.students.split(","):
        for b in a.builds.split(","):
            target, kernels = b.split(":")
            key = f"{student}/{target}/{kernels}"
            if key in res["runs"]:  # resumable: a finished build is not run again
                continue
            res["runs"][key] = measure(a, student, data, target, kernels, Path(a.work))
            res["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            files.write_json(path, portable(res))
            files.write_text(out / f"{a.name}.md", markdown(res))
    res["wall_time_s"] = round(res.get("wall_time_s", 0) + time.time() - t0, 1)
    files.write_json(path, portable(res))
    files.write_text(out / f"{a.name}.md", markdown(res))
    print(markdown(res))
    return res


if __name__ == "__main__":
    main()
