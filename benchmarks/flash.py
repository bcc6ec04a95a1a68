"""Flash below int8: the distilled student pruned, clustered or soft-thresholded, QAT that keeps
the structure, int8, and TFLite-Micro LUT compression, against its plain int8 model.

    # start from bench.py's distilled students (3 seeds)
    python benchmarks/flash.py --from runs/bench_fused
    # a slice: distils its own tiny student first
    python benchmarks/flash.py --quick

Every variant starts from the same distilled float student of a seed and keeps the teacher
guiding (cached logits, the T and lambda the student was distilled with):
- dense: QAT only (the plain int8 model every other row is compared with);
- prune50 / prune75: magnitude pruning to 50% / 75% (polynomial schedule), then PQAT;
- shrink50 / shrink75: the soft threshold at the delta that zeroes the same share of the
  kernel weights as pruning, then PQAT (the zeros are not trained again);
- cluster16 / cluster8: 16 / 8 shared values per kernel (k-means++), CQAT, then LUT compression
  (4-bit / 3-bit indices);
- prune50+cluster16: both, PCQAT, LUT compression.
The structured variants fine-tune for --structure-epochs before their QAT; dense does not.

Each is exported (`run_export`) and measured: test accuracy of the int8 .tflite on LiteRT over
the whole test split (a LUT-compressed model is checked bit-exact against it on the TFLM
interpreter, so it has the same accuracy; TFLM's Python interpreter takes 12 ms an image here,
too slow for 21 models x 10,000 images), .tflite / device / gzip / compressed bytes, the TFLM
arena, the share of zeros and the distinct values per channel in the int8 kernels. Writes
benchmarks/results/<name>.json, .md and a plot; `python benchmarks/readme_table.py` copies the
table into the README.
"""

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import flash_report as R  # noqa: E402 - sibling scripts, importable once the folder is on the path
from bench import machine  # noqa: E402

log = logging.getLogger("flash")

# name -> (distill settings, export compression); shrink deltas are filled in per seed.
VARIANTS = {
    "dense": ([], "none"),
    "prune50": (["distill.prune=0.5"], "none"),
    "prune75": (["distill.prune=0.75"], "none"),
    "shrink50": ([], "none"),
    "shrink75": ([], "none"),
    "cluster16": (["distill.cluster=16"], "lut"),
    "cluster8": (["distill.cluster=8"], "lut"),
    "prune50+cluster16": (["distill.prune=0.5", "distill.cluster=16"], "lut"),
}
SHRINK_TO = {"shrink50": 0.5, "shrink75": 0.75}
# Settings the variants inherit from the run that distilled the student.
INHERITED = (
    "data.dataset",
    "data.batch_size",
    "data.limit",
    "data.augment",
    "data.normalize",
    "data.val_split",
    "distill.temperature",
    "distill.lam",
    "distill.alpha",
    "distill.lr",
    "distill.guidance",
    "distill.views",
    "teacher.logits",
)


def portable(value):
    """A path in or next to the repository as a relative one, so results read the same on every
    clone."""
    if not isinstance(value, (str, Path)) or "/" not in str(value):
        return value
    path, root = Path(value).resolve(), ROOT.resolve()
    for base, prefix in ((root, ""), (root.parent, "../")):
        if path.is_relative_to(base):
            return prefix + str(path.relative_to(base))
    return value


def provenance(argv) -> dict:
    """The command and the commit that produced a results file (and whether the tree had
    changes)."""
    import subprocess

    def git(*args):
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()

    return {
        "command": " ".join(
            ["python", "benchmarks/flash.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_changes": bool(git("status", "--porcelain", "--", "kdq_tf", "benchmarks")),
    }


def _flat(cfg: dict) -> dict:
    return {f"{s}.{k}": v for s, d in cfg.items() if isinstance(d, dict) for k, v in d.items()}


def base_student(a, seed: int) -> tuple[Path, dict]:
    """The seed's distilled float student and the settings it was distilled with: from --from
    (bench.py's work folder), else distilled here."""
    from kdq_tf import files, load_config, run_distill

    if a.from_:
        run = Path(a.from_) / f"seed{seed}"
        if not (run / "student.keras").is_file():
            raise SystemExit(
                f"flash.py: {run}/student.keras is missing; run benchmarks/bench.py with "
                f"--work {a.from_} first, or drop --from to distil here"
            )
    else:
        run = Path(a.work) / f"seed{seed}" / "base"
        sets = [
            f"run.out={run}",
            f"run.seed={seed}",
            "run.resume=true",
            f"data.dataset={a.dataset}",
            f"data.limit={a.limit}",
            f"data.batch_size={a.batch_size}",
            f"distill.student={a.student}",
            f"distill.epochs={a.epochs}",
            "qat.enabled=false",
            f"teacher.logits={a.teacher_logits}",
            "distill.guidance=cached",
            "data.augment=false",
        ]
        if not (run / "student.keras").is_file() or "student" not in files.read_json(
            run / "metrics.json"
        ):
            run_distill(load_config(sets=[s for s in sets if not s.endswith("=None")]))
    cfg = _flat(files.read_json(run / "config.json"))
    return run / "student.keras", {k: cfg[k] for k in INHERITED if cfg.get(k) is not None}


def variant_sets(a, name: str, student: Path, inherited: dict, seed: int, out: Path) -> list[str]:
    from kdq_tf.distill.qat import shrink_delta_for
    from kdq_tf.runs import load_student

    sets = [f"{k}={v}" for k, v in inherited.items()]
    sets += [
        f"run.out={out}",
        f"run.seed={seed}",
        "run.resume=true",
        f"distill.student={student}",
        "distill.epochs=0",
        "qat.enabled=true",
        f"qat.epochs={a.qat_epochs}",
        f"distill.structure_epochs={a.structure_epochs}",
        *VARIANTS[name][0],
    ]
    if name in SHRINK_TO:
        sets.append(
            f"distill.shrink={shrink_delta_for(load_student(student), SHRINK_TO[name]):.6g}"
        )
    return sets


def measure(run: Path, compress: str) -> dict:
    """Exports a variant (once) and measures it."""
    from kdq_tf import files, run_export

    out = run / "export"
    if not (out / "report.json").is_file():
        run_export(
            run,
            out,
            overrides={
                "export.compress": compress,
                "export.mode": "int8",
                "export.verify_samples": 500,
            },
        )
    rep = files.read_json(out / "report.json")
    m = files.read_json(run / "metrics.json")
    lut = compress == "lut"
    arena = rep["compressed"]["arena_bytes"] if lut else rep["verify"]["arena_bytes"]
    weights = rep["weights"]
    total = sum(np.prod(w["shape"]) for w in weights)
    structured = m.get("student_structured") or m.get("shrink") or {}
    return {
        "accuracy": rep["test_accuracy_litert"],
        "test_samples": rep["test_samples"],
        "val_accuracy_qat": m["student_qat"]["val_accuracy"],
        "float_accuracy_before": m["student"]["accuracy"],
        "float_accuracy_structured": structured.get("accuracy", structured.get("accuracy_after")),
        "tflite_bytes": rep["sizes"]["tflite_bytes"],
        "gzip_bytes": rep["sizes"]["gzip_bytes"],
        "device_bytes": rep["verify"]["device_model"]["bytes"],
        # what the C array carries: the LUT-compressed model where there is one
        "flash_bytes": rep["sizes"]["compressed_device_bytes"]
        if lut
        else rep["verify"]["device_model"]["bytes"],
        "arena_bytes": arena,
        "bit_exact": rep["compressed"]["bit_exact_tflm"] if lut else None,
        "bit_exact_of": rep["compressed"]["samples"] if lut else None,
        "compressed_tensors": rep["compressed"]["tensors_compressed"] if lut else 0,
        # zeros and distinct values as measured in the int8 kernels of the .tflite
        "int8_zeros": float(sum(w["zeros"] * np.prod(w["shape"]) for w in weights) / total),
        "max_unique_per_channel": max(w.get("unique_per_channel") or w["unique"] for w in weights),
        "shrink_delta": (m.get("shrink") or {}).get("delta"),
        "train_time_s": round(
            sum(v.get("train_time_s", 0) for v in m.values() if isinstance(v, dict))
            + sum(t.get("train_time_s", 0) for t in structured.get("timing", {}).values()),
            1,
        ),
    }


def firmware_rows(a, work: Path) -> dict:
    """Seed 0's dense and 16-cluster LUT models as Cortex-M4 firmware (CMSIS-NN, QEMU): bit-exact
    against the Python TFLM interpreter, flash, RAM and instructions per inference."""
    from kdq_tf import files
    from kdq_tf.config import DataConfig
    from kdq_tf.data.dataset import load_dataset
    from kdq_tf.deploy.export import firmware_project
    from kdq_tf.device.build import BuildOptions, build
    from kdq_tf.device.run import run
    from kdq_tf.errors import KdqError

    if not a.tflm:
        return {"skipped": "no TFLite-Micro tree given (--tflm '')"}
    data = load_dataset(DataConfig(dataset=a.dataset))
    x, y = data.info.preprocess.apply(data.x_test[:10]), data.y_test[:10]
    rows = {}
    try:
        for name in ("dense", "cluster16"):
            exp = work / "seed0" / name / "export"
            if not (exp / "report.json").is_file():
                continue
            model = (exp / "model_int8.tflite").read_bytes()
            lut = exp / "model_int8_lut.tflite"
            device = (
                lut.read_bytes() if lut.is_file() else None
            )  # None: firmware_project strips the model
            rep = files.read_json(exp / "report.json")
            arena = max(
                rep["verify"]["arena_bytes"], rep.get("compressed", {}).get("arena_bytes", 0)
            )
            fw = work / "firmware" / name
            shutil.rmtree(fw, ignore_errors=True)
            firmware_project(
                model, fw, "student", data.info.class_names, x, y, 10, arena, device_bytes=device
            )
            build(fw, BuildOptions("cortex-m4", "cmsis-nn", a.tflm))
            r = run(fw, "cortex-m4", "cmsis-nn")
            rows[name] = {
                "bit_exact": r["bit_exact"],
                "samples": r["samples"],
                "memory": r["memory"],
                "instructions_per_inference": r.get("instructions_per_inference"),
                "arena_used_bytes": r.get("arena_used_bytes"),
            }
            log.info(
                "firmware %s: %d/%d bit-exact, flash %s B",
                name,
                r["bit_exact"],
                r["samples"],
                r["memory"].get("flash_bytes"),
            )
    except KdqError as e:  # no tree or no toolchain here: the rest of the benchmark still stands
        log.warning("firmware rows skipped: %s", e)
        return {"skipped": str(e), **rows}
    return rows


def compressor_probe(device: bytes, method: str) -> str:
    """Whether the installed tflite-micro compresses a tensor with `method` ("Huffman": the issue
    asks; "Pruning": the one that would turn zeros into flash)."""
    from tflite_micro.tensorflow.lite.micro.compression import compress, spec

    from kdq_tf.deploy.compression import weight_tensors

    w = max(weight_tensors(device), key=lambda t: t.bytes)
    try:
        compress(device, [spec.Tensor(0, w.index, [getattr(spec, f"{method}Compression")()])])
    except Exception as e:  # the package raises its own CompressionError
        return (
            f"the installed tflite-micro refuses it: {type(e).__name__}: {str(e).splitlines()[0]}"
        )
    return f"the installed tflite-micro compressed a tensor with {method} (not measured further)"


def parse(argv):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick", action="store_true", help="a slice and one seed; distils its own students"
    )
    p.add_argument(
        "--from", dest="from_", help="bench.py's work folder: start from its seed<N>/student.keras"
    )
    p.add_argument("--name", help="results file stem (default: flash or flash_quick)")
    p.add_argument("--seeds", type=int)
    p.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated subset of: " + ", ".join(VARIANTS),
    )
    p.add_argument("--structure-epochs", type=int, default=2)
    p.add_argument("--qat-epochs", type=int, default=2)
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--student", default="tiny_cnn", help="without --from: the student to distil")
    p.add_argument("--epochs", type=int, default=3, help="without --from: distillation epochs")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--limit", type=int, help="without --from: samples per split")
    p.add_argument(
        "--teacher-logits",
        default=str(ROOT / "benchmarks" / "teachers" / "fashion_mnist_fused" / "logits.npz"),
    )
    p.add_argument(
        "--tflm",
        default=os.environ.get("TFLM_DIR", ""),
        help="TFLite-Micro tree for the Cortex-M4 firmware rows; '' skips them",
    )
    p.add_argument("--work", help="work folder (default runs/flash_<name>)")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    a = p.parse_args(argv)
    a.name = a.name or ("flash_quick" if a.quick else "flash")
    a.seeds = a.seeds or (1 if a.quick else 3)
    a.limit = a.limit or (3000 if a.quick else None)
    if a.quick:
        a.structure_epochs, a.qat_epochs = min(a.structure_epochs, 1), min(a.qat_epochs, 1)
    a.variants = [v.strip() for v in a.variants.split(",")]
    unknown = [v for v in a.variants if v not in VARIANTS]
    if unknown or "dense" not in a.variants:
        p.error(
            f"--variants needs dense and names from {', '.join(VARIANTS)}; "
            f"got {', '.join(a.variants)}"
        )
    a.work = a.work or str(ROOT / "runs" / a.name)
    return a


def main(argv=None) -> dict:
    a = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from kdq_tf import files, load_config

    t0 = time.perf_counter()
    rows = {v: [] for v in a.variants}
    for seed in range(a.seeds):
        student, inherited = base_student(a, seed)
        for name in a.variants:
            out = Path(a.work) / f"seed{seed}" / name.replace("+", "_")
            log.info("seed %d: %s", seed, name)
            sets = variant_sets(a, name, student, inherited, seed, out)
            cfg = load_config(sets=sets)
            if "student_qat" not in files.read_json(out / "metrics.json"):
                from kdq_tf import run_distill

                shutil.rmtree(
                    out / "export", ignore_errors=True
                )  # a new model makes the old export stale
                run_distill(cfg)
            rows[name].append(measure(out, VARIANTS[name][1]))
            r = rows[name][-1]
            log.info(
                "seed %d %s: int8 %.4f, flash %d B, gzip %d B, zeros %.3f",
                seed,
                name,
                r["accuracy"],
                r["flash_bytes"],
                r["gzip_bytes"],
                r["int8_zeros"],
            )
    res = {
        "name": a.name,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "provenance": provenance(argv),
        "settings": {
            ("from" if k == "from_" else k): portable(v)
            for k, v in vars(a).items()
            if k not in ("work", "results")
        },
        "inherited": {k: portable(v) for k, v in inherited.items()},
        "rows": rows,
    }
    res["table"] = R.summarize(rows)
    res["checks"] = R.checks(res["table"])
    dense_device = (Path(a.work) / "seed0" / "dense" / "export" / "model_int8.tflite").read_bytes()
    from kdq_tf.deploy import flatbuf

    device = flatbuf.strip_for_device(dense_device)
    res["huffman"], res["pruning_compression"] = (
        compressor_probe(device, m) for m in ("Huffman", "Pruning")
    )
    res["firmware"] = firmware_rows(a, Path(a.work))
    res["wall_time_s"] = time.perf_counter() - t0
    print(R.write(res, Path(a.results)))
    return res


if __name__ == "__main__":
    main()
