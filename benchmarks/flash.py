"""Flash below int8: the distilled student pruned, clustered or soft-thresholded, QAT that keeps
the structure, int8, and TFLite-Micro LUT compression, against its plain int8 model.

    python benchmarks/flash.py --from runs/bench_fused   # start from bench.py's distilled students (3 seeds)
    python benchmarks/flash.py --quick                   # a slice: distils its own tiny student first

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
arena, the share of zeros and the distinct values per channel in the int8 kernels. Writes benchmarks/results/<name>.json, .md and a
plot; `python benchmarks/readme_table.py` copies the table into the README.
"""

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench import _save, machine  # noqa: E402 - sibling scripts, importable once the folder is on the path
from kd_study import mean_std  # noqa: E402

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
# What a user would read in the table.
LABELS = {"dense": "dense int8 (QAT)", "prune50": "pruned 50% (PQAT)", "prune75": "pruned 75% (PQAT)",
          "shrink50": "soft threshold 50% (PQAT)", "shrink75": "soft threshold 75% (PQAT)",
          "cluster16": "16 clusters (CQAT) + LUT", "cluster8": "8 clusters (CQAT) + LUT", "prune50+cluster16": "pruned 50% + 16 clusters (PCQAT) + LUT"}
# Settings the variants inherit from the run that distilled the student.
INHERITED = ("data.dataset", "data.batch_size", "data.limit", "data.augment", "data.normalize", "data.val_split",
             "distill.temperature", "distill.lam", "distill.alpha", "distill.lr", "distill.guidance",
             "distill.views", "teacher.logits")


def _flat(cfg: dict) -> dict:
    return {f"{s}.{k}": v for s, d in cfg.items() if isinstance(d, dict) for k, v in d.items()}


def base_student(a, seed: int) -> tuple[Path, dict]:
    """The seed's distilled float student and the settings it was distilled with: from --from
    (bench.py's work folder), else distilled here."""
    from kdq_tf import files, load_config, run_distill

    if a.from_:
        run = Path(a.from_) / f"seed{seed}"
        if not (run / "student.keras").is_file():
            raise SystemExit(f"flash.py: {run}/student.keras is missing; run benchmarks/bench.py with "
                             f"--work {a.from_} first, or drop --from to distil here")
    else:
        run = Path(a.work) / f"seed{seed}" / "base"
        sets = [f"run.out={run}", f"run.seed={seed}", "run.resume=true", f"data.dataset={a.dataset}",
                f"data.limit={a.limit}", f"data.batch_size={a.batch_size}", f"distill.student={a.student}",
                f"distill.epochs={a.epochs}", "qat.enabled=false", f"teacher.logits={a.teacher_logits}",
                "distill.guidance=cached", "data.augment=false"]
        if not (run / "student.keras").is_file() or "student" not in files.read_json(run / "metrics.json"):
            run_distill(load_config(sets=[s for s in sets if not s.endswith("=None")]))
    cfg = _flat(files.read_json(run / "config.json"))
    return run / "student.keras", {k: cfg[k] for k in INHERITED if cfg.get(k) is not None}


def variant_sets(a, name: str, student: Path, inherited: dict, seed: int, out: Path) -> list[str]:
    from kdq_tf.pipeline import load_student
    from kdq_tf.qat import shrink_delta_for

    sets = [f"{k}={v}" for k, v in inherited.items()]
    sets += [f"run.out={out}", f"run.seed={seed}", "run.resume=true", f"distill.student={student}",
             "distill.epochs=0", "qat.enabled=true", f"qat.epochs={a.qat_epochs}",
             f"distill.structure_epochs={a.structure_epochs}", *VARIANTS[name][0]]
    if name in SHRINK_TO:
        sets.append(f"distill.shrink={shrink_delta_for(load_student(student), SHRINK_TO[name]):.6g}")
    return sets


def measure(run: Path, compress: str) -> dict:
    """Exports a variant (once) and measures it."""
    from kdq_tf import files, flatbuf, run_export

    out = run / "export"
    if not (out / "report.json").is_file():
        run_export(run, out, overrides={"export.compress": compress, "export.mode": "int8", "export.verify_samples": 500})
    rep = files.read_json(out / "report.json")
    m = files.read_json(run / "metrics.json")
    model_bytes = (out / "model_int8.tflite").read_bytes()
    lut = compress == "lut"
    device = (out / "model_int8_lut.tflite").read_bytes() if lut else flatbuf.strip_for_device(model_bytes)
    arena = rep["compressed"]["arena_bytes"] if lut else rep["verify"]["arena_bytes"]
    weights = rep["weights"]
    total = sum(np.prod(w["shape"]) for w in weights)
    structured = m.get("student_structured") or m.get("shrink") or {}
    return {"accuracy": rep["test_accuracy_litert"], "test_samples": rep["test_samples"],
            "val_accuracy_qat": m["student_qat"]["val_accuracy"],
            "float_accuracy_before": m["student"]["accuracy"],
            "float_accuracy_structured": structured.get("accuracy", structured.get("accuracy_after")),
            "tflite_bytes": rep["sizes"]["tflite_bytes"], "gzip_bytes": rep["sizes"]["gzip_bytes"],
            "device_bytes": rep["verify"]["device_model"]["bytes"], "flash_bytes": len(device),
            "arena_bytes": arena, "bit_exact": rep["compressed"]["bit_exact_tflm"] if lut else None,
            "bit_exact_of": rep["compressed"]["samples"] if lut else None,
            "compressed_tensors": rep["compressed"]["tensors_compressed"] if lut else 0,
            # zeros and distinct values as measured in the int8 kernels of the .tflite
            "int8_zeros": float(sum(w["zeros"] * np.prod(w["shape"]) for w in weights) / total),
            "max_unique_per_channel": max(w.get("unique_per_channel") or w["unique"] for w in weights),
            "shrink_delta": (m.get("shrink") or {}).get("delta"),
            "train_time_s": round(sum(v.get("train_time_s", 0) for v in m.values() if isinstance(v, dict))
                                  + sum(t.get("train_time_s", 0) for t in structured.get("timing", {}).values()), 1)}


def summarize(rows: dict) -> list[dict]:
    dense = rows["dense"]
    table = []
    for name, per_seed in rows.items():
        acc = [r["accuracy"] for r in per_seed]
        loss = [d["accuracy"] - r["accuracy"] for d, r in zip(dense, per_seed)]
        ratio = [r["flash_bytes"] / d["flash_bytes"] for d, r in zip(dense, per_seed)]
        table.append({"variant": name, "label": LABELS[name], "accuracy": mean_std(acc),
                      "loss_pts": 100 * float(np.mean(loss)), "flash_bytes": mean_std([r["flash_bytes"] for r in per_seed]),
                      "flash_ratio": float(np.max(ratio)),
                      "gzip_bytes": mean_std([r["gzip_bytes"] for r in per_seed]),
                      "gzip_ratio": float(np.mean([r["gzip_bytes"] / d["gzip_bytes"] for d, r in zip(dense, per_seed)])),
                      "arena_bytes": max(r["arena_bytes"] for r in per_seed),
                      "int8_zeros": mean_std([r["int8_zeros"] for r in per_seed]),
                      "max_unique_per_channel": max(r["max_unique_per_channel"] for r in per_seed),
                      "bit_exact": None if per_seed[0]["bit_exact"] is None else
                      f"{sum(r['bit_exact'] for r in per_seed)}/{sum(r['bit_exact_of'] for r in per_seed)}"})
    return table


def checks(table: list[dict]) -> list[dict]:
    """The issue's targets, each with its measured figure."""
    by = {r["variant"]: r for r in table}
    out = []
    if "cluster16" in by:
        c = by["cluster16"]
        out += [{"target": "16 clusters + LUT: flash <= 0.6x of the plain int8 device model (worst seed)",
                 "measured": round(c["flash_ratio"], 4), "holds": c["flash_ratio"] <= 0.6},
                {"target": "16 clusters + LUT: <= 0.5 pt below plain int8 (mean of seeds)",
                 "measured": round(c["loss_pts"], 2), "holds": c["loss_pts"] <= 0.5},
                {"target": "16 clusters + LUT: bit-exact with the uncompressed clustered int8 on TFLM",
                 "measured": c["bit_exact"], "holds": c["bit_exact"].split("/")[0] == c["bit_exact"].split("/")[1]}]
    for s in ("50", "75"):
        if f"prune{s}" in by:
            out.append({"target": f"{s}% sparsity survives PQAT and int8 conversion (zeros in the int8 kernels)",
                        "measured": round(by[f"prune{s}"]["int8_zeros"]["mean"], 4),
                        "holds": by[f"prune{s}"]["int8_zeros"]["mean"] >= int(s) / 100 - 0.02})
    return out


def markdown(res: dict) -> str:
    s = res["settings"]
    lines = [f"# Flash below int8 ({res['name']})", "",
             f"{res['date']}, {res['machine']['cores']} cores, {res['wall_time_s'] / 60:.1f} min. Students: "
             f"{s['from'] or 'distilled here'}; {s['seeds']} seed(s); structure fine-tuning {s['structure_epochs']} "
             f"epochs, QAT {s['qat_epochs']} epochs, teacher guiding throughout.", "",
             "Accuracy: the int8 .tflite on LiteRT, whole test split, mean ± std of seeds; a LUT-compressed "
             "model is bit-exact with it on the TFLM interpreter (last column, verify samples of every seed). "
             "Flash: the device flatbuffer (names and metadata stripped; LUT-compressed where it says so). "
             "Loss and ratios against the same seed's dense int8 model (flash: the worst seed).", "",
             "| variant | test accuracy | vs dense | flash bytes | x dense | gzip of .tflite | x dense "
             "| zeros in int8 kernels | max values per channel | TFLM arena | bit-exact |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["table"]:
        a = r["accuracy"]
        lines.append(f"| {r['label']} | {100 * a['mean']:.2f} ± {100 * a['std']:.2f}% | {-r['loss_pts']:+.2f} pts | "
                     f"{r['flash_bytes']['mean']:,.0f} | {r['flash_ratio']:.3f} | {r['gzip_bytes']['mean']:,.0f} | "
                     f"{r['gzip_ratio']:.3f} | {100 * r['int8_zeros']['mean']:.1f}% | {r['max_unique_per_channel']} | "
                     f"{r['arena_bytes']:,} | {r['bit_exact'] or '-'} |")
    lines += ["", "Targets (issue \"Flash below int8\"):", ""]
    lines += [f"- {'holds' if c['holds'] else 'MISSED'}: {c['target']}: {c['measured']}" for c in res["checks"]]
    lines += ["", "Per seed (float: the distilled student's test accuracy before, and after the structure "
              "stage or the soft threshold, before QAT):", "", "| variant | seed | int8 | float before -> structured "
              "| flash bytes | gzip | zeros | shrink delta |", "|---|---|---|---|---|---|---|---|"]
    for name, per_seed in res["rows"].items():
        for seed, r in enumerate(per_seed):
            fs, delta = r["float_accuracy_structured"], r["shrink_delta"]
            lines.append(f"| {name} | {seed} | {100 * r['accuracy']:.2f}% | "
                         f"{100 * r['float_accuracy_before']:.2f}% -> {'-' if fs is None else f'{100 * fs:.2f}%'} | "
                         f"{r['flash_bytes']:,} | {r['gzip_bytes']:,} | {100 * r['int8_zeros']:.1f}% | "
                         f"{'-' if delta is None else format(delta, '.4g')} |")
    fw = {k: v for k, v in res.get("firmware", {}).items() if isinstance(v, dict)}
    if fw:
        lines += ["", "Seed 0 as Cortex-M4 firmware (MPS2-AN386 under QEMU, CMSIS-NN kernels; flash and RAM of the "
                  "whole image from `size`):", "", "| variant | bit-exact vs Python TFLM | flash B | model B | RAM B "
                  "| instructions / inference |", "|---|---|---|---|---|---|"]
        for name, r in fw.items():
            m = r["memory"]
            lines.append(f"| {name} | {r['bit_exact']}/{r['samples']} | {m.get('flash_bytes', 0):,} | "
                         f"{m.get('flash_model_bytes', 0):,} | {m.get('ram_bytes', 0):,} | "
                         f"{r['instructions_per_inference'] or 0:,} |")
    if res.get("firmware", {}).get("skipped"):
        lines += ["", f"Firmware rows skipped: {res['firmware']['skipped']}"]
    if res.get("huffman"):
        lines += ["", f"Huffman: {res['huffman']}"]
    return "\n".join(lines) + "\n"


def firmware_rows(a, work: Path) -> dict:
    """Seed 0's dense and 16-cluster LUT models as Cortex-M4 firmware (CMSIS-NN, QEMU): bit-exact
    against the Python TFLM interpreter, flash, RAM and instructions per inference."""
    from kdq_tf import files, flatbuf
    from kdq_tf.config import DataConfig
    from kdq_tf.data import load_dataset
    from kdq_tf.errors import KdqError
    from kdq_tf.export import firmware_project
    from kdq_tf.fw_build import BuildOptions, build
    from kdq_tf.fw_run import run

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
            device = lut.read_bytes() if lut.is_file() else flatbuf.strip_for_device(model)
            arena = max(files.read_json(exp / "report.json")["verify"]["arena_bytes"],
                        files.read_json(exp / "report.json").get("compressed", {}).get("arena_bytes", 0))
            fw = work / "firmware" / name
            shutil.rmtree(fw, ignore_errors=True)
            firmware_project(model, fw, "student", data.info.class_names, x, y, 10, arena, device_bytes=device)
            build(fw, BuildOptions("cortex-m4", "cmsis-nn", a.tflm))
            r = run(fw, "cortex-m4", "cmsis-nn")
            rows[name] = {"bit_exact": r["bit_exact"], "samples": r["samples"], "memory": r["memory"],
                          "instructions_per_inference": r.get("instructions_per_inference"),
                          "arena_used_bytes": r.get("arena_used_bytes")}
            log.info("firmware %s: %d/%d bit-exact, flash %s B", name, r["bit_exact"], r["samples"],
                     r["memory"].get("flash_bytes"))
    except KdqError as e:  # no tree or no toolchain here: the rest of the benchmark still stands
        log.warning("firmware rows skipped: %s", e)
        return {"skipped": str(e), **rows}
    return rows


def huffman_probe(device: bytes) -> str:
    """Whether the installed tflite-micro compresses a tensor with Huffman (the issue asks)."""
    from tflite_micro.tensorflow.lite.micro.compression import compress, spec

    from kdq_tf.compression import weight_tensors

    w = max(weight_tensors(device), key=lambda t: t.bytes)
    try:
        compress(device, [spec.Tensor(0, w.index, [spec.HuffmanCompression()])])
    except Exception as e:  # the package raises its own CompressionError
        return f"the installed tflite-micro refuses it: {type(e).__name__}: {str(e).splitlines()[0]}"
    return "the installed tflite-micro compressed a tensor with Huffman (not measured further)"


def plot(res: dict, out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib not installed; no plot")
        return []
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, title in ((axes[0], "flash_bytes", "device flatbuffer bytes (LUT where applied)"),
                           (axes[1], "gzip_bytes", "gzip -9 of the .tflite, bytes")):
        for r in res["table"]:
            ax.errorbar(r[key]["mean"] / 1024, 100 * r["accuracy"]["mean"], yerr=100 * r["accuracy"]["std"],
                        fmt="o", label=r["label"])
        ax.set_xlabel(f"{title} / 1024")
    axes[0].set_ylabel("test accuracy % (int8, mean ± std of seeds)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    written = [_save(fig, out / f"{res['name']}_accuracy_vs_flash.png")]
    plt.close("all")
    return written


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a slice and one seed; distils its own students")
    p.add_argument("--from", dest="from_", help="bench.py's work folder: start from its seed<N>/student.keras")
    p.add_argument("--name", help="results file stem (default: flash or flash_quick)")
    p.add_argument("--seeds", type=int)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of: " + ", ".join(VARIANTS))
    p.add_argument("--structure-epochs", type=int, default=2)
    p.add_argument("--qat-epochs", type=int, default=2)
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--student", default="tiny_cnn", help="without --from: the student to distil")
    p.add_argument("--epochs", type=int, default=3, help="without --from: distillation epochs")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--limit", type=int, help="without --from: samples per split")
    p.add_argument("--teacher-logits", default=str(ROOT / "benchmarks" / "teachers" / "fashion_mnist_fused" / "logits.npz"))
    p.add_argument("--tflm", default=str(ROOT.parent / "shared" / "tflm"),
                   help="TFLite-Micro tree for the Cortex-M4 firmware rows; '' skips them")
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
        p.error(f"--variants needs dense and names from {', '.join(VARIANTS)}; got {', '.join(a.variants)}")
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

                shutil.rmtree(out / "export", ignore_errors=True)  # a new model makes the old export stale
                run_distill(cfg)
            rows[name].append(measure(out, VARIANTS[name][1]))
            r = rows[name][-1]
            log.info("seed %d %s: int8 %.4f, flash %d B, gzip %d B, zeros %.3f", seed, name, r["accuracy"],
                     r["flash_bytes"], r["gzip_bytes"], r["int8_zeros"])
    res = {"name": a.name, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
           "settings": {("from" if k == "from_" else k): v for k, v in vars(a).items() if k not in ("work", "results")},
           "inherited": inherited, "rows": rows}
    res["table"] = summarize(rows)
    res["checks"] = checks(res["table"])
    dense_device = (Path(a.work) / "seed0" / "dense" / "export" / "model_int8.tflite").read_bytes()
    from kdq_tf import flatbuf

    res["huffman"] = huffman_probe(flatbuf.strip_for_device(dense_device))
    res["firmware"] = firmware_rows(a, Path(a.work))
    res["wall_time_s"] = time.perf_counter() - t0
    Path(a.results).mkdir(parents=True, exist_ok=True)
    res["plots"] = plot(res, Path(a.results))
    files.write_json(Path(a.results) / f"{a.name}.json", res)
    md = markdown(res)
    files.write_text(Path(a.results) / f"{a.name}.md", md)
    print(md)
    return res


if __name__ == "__main__":
    main()
