"""Device benchmark: the benchmark's int8 student built against TFLite-Micro and run on the host
and on a Cortex-M4 (MPS2-AN386 under QEMU), with the reference and CMSIS-NN kernels.

For each build: bit-exact outputs against the Python TFLM interpreter, flash and RAM from
`size`, the arena used against the one chosen, instructions per inference (QEMU icount),
and the build time (cold: empty object cache; warm: the same build again).

    python benchmarks/device.py --model runs/bench_full/seed0_int8.tflite --tflm ../shared/tflm

`--zoo` measures every zoo student instead, on every Cortex-M target (M4, M7, M33, M55) with
both kernel sets: flash, RAM, instructions, instructions per MAC (MACs from the flatbuffer),
bit-exact against the Python TFLM interpreter; and the per-operator profile of --profile-student
on the Cortex-M4 with CMSIS-NN (table and chart). Each student's int8 model is seed 0 of the
search benchmark's final phase when it ran, else its one-epoch probe, else the untrained
student (instruction counts, flash and RAM do not depend on the weights' values; the source is
recorded). Resumable: a finished (student, target, kernels) is not run again.

    python benchmarks/device.py --zoo --tflm ../shared/tflm
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


CORES = tuple(
    (t, k)
    for t in ("cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55")
    for k in ("reference", "cmsis-nn")
)
SEARCH_WORK = Path.home() / "kdq_runs" / "search_bench"


def zoo_model(name: str, data) -> tuple[bytes, str]:
    """The student's int8 model and where it came from (see the docstring)."""
    for sub in (f"final/{name}/seed0", f"probe/{name}"):
        path = SEARCH_WORK / sub / "model_int8.tflite"
        if path.is_file():
            return path.read_bytes(), str(path)
    from kdq_tf.deploy.convert import to_tflite
    from kdq_tf.models.students import STUDENTS

    m = STUDENTS[name](data.info.input_shape, data.info.num_classes)
    x = data.info.preprocess.apply(data.x_train[:256])
    return to_tflite(m, "int8", x), "untrained (random initial weights), calibrated on 256 images"


def zoo_firmware(a, data, name: str, fw: Path) -> str:
    """Writes the student's firmware folder (`zoo_model`); returns where the model came from."""
    from kdq_tf.deploy.export import firmware_project

    model, source = zoo_model(name, data)
    x = data.info.preprocess.apply(data.x_test[: a.samples])
    firmware_project(model, fw, name, data.info.class_names, x, data.y_test[: a.samples], a.samples)
    return source


def measure_zoo(a, data, res: dict, save) -> None:
    from kdq_tf.deploy import flatbuf
    from kdq_tf.device.build import BuildOptions, build
    from kdq_tf.device.profile import macs
    from kdq_tf.device.run import run
    from kdq_tf.models.students import STUDENTS

    zoo = res.setdefault("zoo", {})
    for name in STUDENTS:
        entry = zoo.get(name)
        fw = Path(a.work) / "zoo" / name
        if entry is None:
            source = zoo_firmware(a, data, name, fw)
            device = (fw / "model_device.tflite").read_bytes()
            entry = zoo[name] = {
                "source": source,
                "macs": sum(macs(op) for op in flatbuf.operators(device)),
                "device_model_bytes": len(device),
                "runs": {},
            }
        for target, kernels in CORES:
            key = f"{target}/{kernels}"
            if key in entry["runs"]:
                continue
            build(fw, BuildOptions(target, kernels, a.tflm))
            r = run(fw, target, kernels)
            entry["runs"][key] = {
                "bit_exact": f"{r['bit_exact']}/{r['samples']}",
                "flash": r["memory"]["flash_bytes"],
                "ram": r["memory"]["ram_bytes"],
                "instructions": r["instructions_per_inference"],
                "instructions_per_mac": round(r["instructions_per_inference"] / entry["macs"], 2),
            }
            save()
            log.info("%s %s: %s", name, key, entry["runs"][key])


def zoo_table(res: dict) -> str:
    from kdq_tf.report import markdown_table

    rows = []
    for name, e in res["zoo"].items():
        for key, r in e["runs"].items():
            rows.append(
                [
                    name,
                    key,
                    r["bit_exact"],
                    f"{r['flash']:,}",
                    f"{r['ram']:,}",
                    f"{r['instructions']:,}",
                    f"{r['instructions_per_mac']:.2f}",
                ]
            )
    head = ["student", "target/kernels", "bit-exact", "flash B", "RAM B", "instructions", "per MAC"]
    return markdown_table(head, rows)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "runs" / "bench_full" / "seed0_int8.tflite"))
    p.add_argument("--tflm", default=os.environ.get("TFLM_DIR", ""))
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--work", default=str(ROOT / "runs" / "bench_device"))
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--name", default="device")
    p.add_argument("--zoo", action="store_true", help="every zoo student on every Cortex-M core")
    p.add_argument(
        "--profile-student",
        default="small_cnn,fast_cnn",
        help="students profiled per operator (comma-separated; the first is the README's)",
    )
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from kdq_tf import files

    if a.zoo:
        return main_zoo(a)

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


def main_zoo(a) -> dict:
    """`--zoo`: the zoo on every core, and the benchmark student's per-operator profile."""
    from kdq_tf import files
    from kdq_tf.config import DataConfig
    from kdq_tf.data.dataset import load_dataset
    from kdq_tf.device.profile import chart, profile
    from kdq_tf.report import profile_markdown

    out = Path(a.results)
    path = out / "device_zoo.json"
    res = files.read_json(path) or {}
    t0 = time.perf_counter()

    def save():
        res.update(
            date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            command="device.py --zoo",
        )
        files.write_json(path, portable(res))

    data = load_dataset(DataConfig(dataset=a.dataset))
    measure_zoo(a, data, res, save)
    profiles = res.setdefault("profiles", {})
    names = a.profile_student.split(",")
    for name in names:
        fw = Path(a.work) / "zoo" / name
        # A folder from an earlier run may be gone; the counts do not depend on the weights.
        source = zoo_firmware(a, data, name, fw) if not (fw / "firmware.json").is_file() else None
        prof = profile(fw, "cortex-m4", "cmsis-nn", a.tflm)
        prof["source"] = source or res["zoo"][name]["source"]
        profiles[name] = {k: v for k, v in prof.items() if k != "run"}
        files.write_bytes(out / f"profile_{name}.png", chart(prof))
        files.write_text(out / f"profile_{name}.md", profile_markdown(prof))
    res["profile"] = profiles[names[0]]  # the benchmark student's, for the README
    res["wall_time_s"] = round(res.get("wall_time_s", 0) + time.perf_counter() - t0, 1)
    save()
    md = "\n".join(
        [
            f"# Every zoo student on every core ({res['date']})",
            "",
            zoo_table(res),
            "",
            "Instructions per inference under QEMU `-icount shift=0` (SysTick ticks times each "
            "board's instructions per tick, docs/firmware.md#more-cores); per MAC: over the MACs "
            "of the model's operators. Models: "
            + "; ".join(f"{n}: `{e['source']}`" for n, e in res["zoo"].items()),
            "",
            *(profile_markdown(profiles[n]) for n in names),
        ]
    )
    files.write_text(out / "device_zoo.md", portable(md))
    print(md)
    return res


if __name__ == "__main__":
    main()
