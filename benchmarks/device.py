"""Device benchmark: the benchmark's int8 student built against TFLite-Micro and run on the host
and on a Cortex-M4 (MPS2-AN386 under QEMU), with the reference and CMSIS-NN kernels.

For each build: bit-exact outputs against the Python TFLM interpreter, flash and RAM from
`size`, the arena used against the one chosen, instructions per inference (QEMU icount),
and the build time (cold: empty object cache; warm: the same build again).

    python benchmarks/device.py --model runs/bench_full/seed0_int8.tflite --tflm ../shared/tflm
"""

import argparse
import json
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

log = logging.getLogger("device")

BUILDS = (("host", "reference"), ("cortex-m4", "reference"), ("cortex-m4", "cmsis-nn"))


def measure(model_path: Path, tflm: str, dataset: str, work: Path, samples: int) -> dict:
    from kdq_tf.config import DataConfig
    from kdq_tf.data.dataset import load_dataset
    from kdq_tf.deploy.export import firmware_project
    from kdq_tf.device.build import BuildOptions, build
    from kdq_tf.device.run import run
    from kdq_tf.report import instruction_ratio as ratio

    data = load_dataset(DataConfig(dataset=dataset))
    x = data.info.preprocess.apply(data.x_test[:samples])
    fw = work / "firmware"
    shutil.rmtree(fw, ignore_errors=True)
    info = firmware_project(
        model_path.read_bytes(),
        fw,
        "student",
        data.info.class_names,
        x,
        data.y_test[:samples],
        samples,
    )
    cache = work / "object_cache"
    shutil.rmtree(cache, ignore_errors=True)  # cold builds: nothing cached
    runs = {}
    for target, kernels in BUILDS:
        opts = BuildOptions(target, kernels, tflm, cache=str(cache))
        cold = build(fw, opts)
        shutil.rmtree(
            fw / "build" / f"{target}-{kernels}" / "app"
        )  # the application again, TFLM cached
        warm = build(fw, opts)
        r = run(fw, target, kernels)
        r.update(
            build_cold_s=cold["build_time_s"],
            build_warm_s=warm["build_time_s"],
            tflm_objects=cold["tflm_objects_compiled"],
        )
        runs[f"{target}/{kernels}"] = r
        log.info(
            "%s/%s: %d/%d bit-exact, cold build %.0f s, warm %.0f s",
            target,
            kernels,
            r["bit_exact"],
            r["samples"],
            cold["build_time_s"],
            warm["build_time_s"],
        )
    return {
        "model": str(model_path),
        "model_bytes": model_path.stat().st_size,
        "device_model_bytes": info["model_bytes"],
        "samples": samples,
        "runs": runs,
        "instruction_ratio_reference_over_cmsis_nn": ratio(runs),
    }


def table(res: dict) -> str:
    """One row per build: the Cortex-M4 rows are labelled "Cortex-M4 (emulated)"."""
    from kdq_tf.report import markdown_table

    rows = []
    for key, r in res["runs"].items():
        target, kernels = key.split("/")
        label = "Cortex-M4 (emulated)" if target == "cortex-m4" else "host (x86-64)"
        m = r["memory"]
        rows.append(
            [
                f"{label}, {kernels}",
                f"{r['bit_exact']}/{r['samples']}",
                f"{r['correct']}/{r['samples']}",
                m["flash_bytes"],
                m["flash_model_bytes"],
                m.get("flash_tflm_bytes", ""),
                m["ram_bytes"],
                m["ram_arena_bytes"],
                r["arena_used_bytes"],
                r.get("instructions_per_inference"),
                r["build_cold_s"],
                r["build_warm_s"],
            ]
        )
    return markdown_table(
        [
            "device",
            "bit-exact vs Python TFLM",
            "correct",
            "flash B",
            "model B",
            "TFLM B",
            "RAM B",
            "arena B (chosen)",
            "arena used B",
            "instructions / inference",
            "cold build s",
            "warm build s",
        ],
        rows,
    )


def markdown(res: dict) -> str:
    lines = [
        f"# Device benchmark ({res['date']})",
        "",
        f"Model: `{res['model']}` ({res['model_bytes']:,} B; "
        f"{res['device_model_bytes']:,} B as the stripped device flatbuffer). "
        f"{res['samples']} test images "
        "embedded in the image.",
        "",
        table(res),
        "",
    ]
    if res.get("instruction_ratio_reference_over_cmsis_nn"):
        lines.append(
            f"- Cortex-M4 (emulated): reference kernels execute "
            f"{res['instruction_ratio_reference_over_cmsis_nn']}x the instructions of CMSIS-NN "
            "per inference."
        )
    lines += [
        "- Instructions: QEMU `-icount shift=0` SysTick ticks x 40 "
        "(QEMU clocks the MPS2 at 25 MHz, one instruction per ns). "
        "QEMU models no pipeline or memory wait states, so these are instruction "
        "counts, not cycles; compare them as ratios.",
        "- Flash: text + rodata + the initial values of .data; "
        "TFLM: its objects' share (CMSIS-NN included), "
        "from the linker map; RAM: data + bss (the arena is in bss). "
        "Cold build: empty object cache; warm: the application again with the TFLM objects cached.",
        f"- Machine: {res['machine']}",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "runs" / "bench_full" / "seed0_int8.tflite"))
    p.add_argument("--tflm", default=os.environ.get("TFLM_DIR", ""))
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--work", default=str(ROOT / "runs" / "bench_device"))
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--name", default="device")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from kdq_tf import files

    t0 = time.perf_counter()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    res = measure(Path(a.model), a.tflm, a.dataset, work, a.samples)
    res.update(
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        wall_time_s=round(time.perf_counter() - t0, 1),
        machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        command=" ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
    )
    res = portable(res)
    out = Path(a.results)
    files.write_json(out / f"{a.name}.json", res)
    md = markdown(res)
    files.write_text(out / f"{a.name}.md", md)
    print(md)
    print(
        json.dumps(
            {k: res[k] for k in ("instruction_ratio_reference_over_cmsis_nn", "wall_time_s")}
        )
    )
    return res


if __name__ == "__main__":
    main()
