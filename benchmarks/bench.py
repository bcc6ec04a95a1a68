"""The kdq_tf benchmark: quality, distillation cost, size, latency, memory and scaling in one run.

    python benchmarks/bench.py            # full: Fashion-MNIST, full training set, 3 seeds (an hour or more)
    python benchmarks/bench.py --quick    # a slice and 1 seed, under 10 minutes

Writes benchmarks/results/<name>.json and <name>.md (+ PNG plots); every figure is
computed here. `python benchmarks/readme_table.py` copies the table into the README.
"""

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
log = logging.getLogger("bench")


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "gpu": "none (CPU only)"}


def mean_std(values) -> dict:
    a = np.asarray(values, np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "n": len(a),
            "values": [float(v) for v in a]}


def tflite_quality(blob: bytes, data) -> dict:
    from kdq_tf.micro import find_arena_size
    from kdq_tf.report import classification_metrics
    from kdq_tf.runtime import Runner

    pred = Runner.from_bytes(blob).predict_logits(data.info.preprocess.apply(data.x_test)).argmax(-1)
    m = classification_metrics(data.y_test, pred, data.info.num_classes)
    return {"accuracy": m.accuracy, "f1": m.f1, "tflite_bytes": len(blob), "arena_bytes": find_arena_size(blob)}


def base_sets(a) -> list[str]:
    sets = [f"data.dataset={a.dataset}", f"data.batch_size={a.batch_size}", f"teacher.epochs={a.teacher_epochs}",
            f"teacher.label_smoothing={a.label_smoothing}", f"distill.epochs={a.epochs}",
            f"distill.temperature={a.temperature}", f"distill.lam={a.lam}", f"qat.epochs={a.qat_epochs}",
            f"distill.student={a.student}"]
    return sets + ([f"data.limit={a.limit}"] if a.limit else [])


def teacher_stage(a, work: Path) -> tuple[Path, dict]:
    """Trains the ResNet50 teacher once; later runs reuse it. Each training is logged as an attempt."""
    from kdq_tf import load_config, run_teacher

    out = work / "teacher"
    cfg = load_config(sets=base_sets(a) + [f"run.out={out}", "run.resume=true"])
    reused = (out / "teacher.keras").is_file() and (out / "metrics.json").is_file()
    _, metrics = run_teacher(cfg)
    t = metrics["teacher"]
    attempt = {"config": {"weights": "none", "input_size": cfg.teacher.input_size, "adapter": cfg.teacher.adapter,
                          "epochs": cfg.teacher.epochs, "batch_size": cfg.data.batch_size, "optimizer": "adam+cosine",
                          "lr": cfg.teacher.lr, "label_smoothing": cfg.teacher.label_smoothing,
                          "augment": cfg.data.augment, "train_samples": cfg.data.limit or "all"},
               "accuracy": t["accuracy"], "train_time_s": t["train_time_s"], "reused": reused}
    return out / "teacher.keras", {**t, "attempt": attempt}


def seed_runs(a, work: Path, teacher_path: Path) -> dict:
    """Per seed: scratch student, distilled student, QAT + int8 export, scratch + PTQ int8."""
    from kdq_tf import load_config, run_distill
    from kdq_tf.convert import to_tflite
    from kdq_tf.data import load_dataset
    from kdq_tf.export import run_export
    from kdq_tf.pipeline import load_student

    rows = {k: [] for k in ("scratch", "distilled", "qat_int8", "ptq_int8")}
    curves = {}
    for seed in range(a.seeds):
        out = work / f"seed{seed}"
        cfg = load_config(sets=base_sets(a) + [f"run.out={out}", f"run.seed={seed}", "run.resume=true",
                                               f"teacher.path={teacher_path}", "qat.enabled=true",
                                               "distill.baseline=true"])
        _, m = run_distill(cfg)
        data = load_dataset(cfg.data, seed=seed)
        rep = run_export(out, overrides={"export.c_array": False, "export.verify_samples": a.verify_samples})
        qat_blob = (out / "export" / "model_int8.tflite").read_bytes()
        rows["scratch"].append({**m["baseline"], "tflite_bytes": None})
        rows["distilled"].append({**m["student"], "tflite_bytes": rep["sizes"]["float32_tflite_bytes"]})
        rows["qat_int8"].append({**tflite_quality(qat_blob, data), "params": m["student_qat"]["params"],
                                 "keras_qat_accuracy": m["student_qat"]["accuracy"], "verify": rep.get("verify")})
        x_rep, _ = data.sample("train", 500, seed=seed)
        ptq = to_tflite(load_student(out / "baseline.keras"), "int8", x_rep)
        rows["ptq_int8"].append({**tflite_quality(ptq, data), "params": m["baseline"]["params"]})
        if seed == 0:
            import csv

            for stage in ("baseline", "distill", "qat"):
                with open(out / f"{stage}_history.csv") as f:
                    curves[stage] = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
            (work / "seed0_int8.tflite").write_bytes(qat_blob)
            (work / "seed0_float32.tflite").write_bytes((out / "export" / "model_float32.tflite").read_bytes())
    return {"rows": rows, "curves": curves}


def epoch_time(model_fn, ds, epochs: int = 1) -> float:
    model = model_fn()
    model.fit(ds.take(3), epochs=1, verbose=0)  # trace and warm up outside the timing
    t0 = time.perf_counter()
    model.fit(ds, epochs=epochs, verbose=0)
    return (time.perf_counter() - t0) / epochs


def cost_and_scaling(a, work: Path, teacher_path: Path) -> dict:
    """Per-epoch time of distillation under each guidance mode vs hard labels only, and vs data size."""
    from kdq_tf import guidance as G
    from kdq_tf._keras import keras, tf
    from kdq_tf.config import DataConfig
    from kdq_tf.data import load_dataset
    from kdq_tf.distiller import Distiller
    from kdq_tf.models.students import build_student
    from kdq_tf.models.teacher import load_teacher

    data = load_dataset(DataConfig(dataset=a.dataset, batch_size=a.batch_size, limit=a.cost_limit, val_split=0.0))
    info = data.info
    teacher = load_teacher(teacher_path, info.input_shape, info.num_classes)

    def student():
        keras.utils.set_random_seed(0)
        return build_student(a.student, info.input_shape, info.num_classes)

    def hard():
        m = student()
        m.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return m

    def distiller(t):
        def make():
            d = Distiller(student(), t)
            d.compile(keras.optimizers.Adam(1e-3), temperature=a.temperature)
            return d
        return make

    train = data.pipeline("train", training=True)
    base = epoch_time(hard, train, a.cost_epochs)
    out = {"samples": info.n_train, "epochs_timed": a.cost_epochs, "hard_only_epoch_s": base, "modes": {}}
    for mode in ("online", "cached", "cached-int8", "teacher-int8"):
        if mode == "online":
            build, ds, cache_bytes, err = 0.0, train, 0, 0.0
            t = teacher
        else:
            t0 = time.perf_counter()
            g = G.build_guidance(mode, teacher, data, work / f"cost_{mode}", calib_samples=200)
            build, cache_bytes, err = time.perf_counter() - t0, g.cache_bytes, g.max_abs_error
            ds = data.pipeline("train", training=True, extra=g.train_logits, augment=False)
            t = None
        sec = epoch_time(distiller(t), ds, a.cost_epochs)
        out["modes"][mode] = {"epoch_s": sec, "ratio_vs_hard": sec / base, "cache_build_s": build,
                              "cache_bytes": cache_bytes, "max_abs_logit_error": err,
                              "style": "keras-io (teacher every step)" if mode == "online" else "kdq_tf"}
    # Scaling: cached distillation, one epoch at 25/50/100% of this training slice.
    g = G.build_guidance("cached", teacher, data, work / "cost_cached")
    scaling = []
    for frac in (0.25, 0.5, 1.0):
        n = int(info.n_train * frac)
        ds = tf.data.Dataset.from_tensor_slices(
            (data.info.preprocess.apply(data.x_train[:n]), (data.y_train[:n], g.train_logits[:n]))
        ).shuffle(n, seed=0).batch(a.batch_size).prefetch(2)
        scaling.append({"fraction": frac, "samples": n, "epoch_s": epoch_time(distiller(None), ds, 1)})
    per_sample = [s["epoch_s"] / s["samples"] for s in scaling]
    return {"cost": out, "scaling": {"points": scaling,
                                     "per_sample_ms": [1e3 * p for p in per_sample],
                                     "max_over_min_per_sample": max(per_sample) / min(per_sample)}}


def latency(work: Path, runs: int) -> dict:
    from kdq_tf.runtime import Runner, benchmark

    i8 = Runner.from_file(work / "seed0_int8.tflite", threads=1)
    f32 = Runner.from_file(work / "seed0_float32.tflite", threads=1)
    return benchmark(i8, runs=runs, warmup=50, other=f32)


def memory(a, work: Path, teacher_path: Path) -> dict:
    """Peak RSS of a separate `kdq_tf distill` process (1 epoch, cached guidance)."""
    out = work / "memory_run"
    cmd = [sys.executable, "-m", "kdq_tf", "-q", "distill", "--overwrite", "--teacher", str(teacher_path),
           "--epochs", "1", "--out", str(out), "--student", a.student, "--dataset", a.dataset]
    if a.limit:
        cmd += ["--limit", str(a.limit)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"distill_peak_rss_mib": max(peak, before) / 1024.0, "note": "ru_maxrss of the child process (Linux: KiB)"}


def summarize(res: dict) -> dict:
    rows = res["quality"]["rows"]
    t = res["teacher"]
    table = [{"model": "ResNet50 teacher (float)", "accuracy": mean_std([t["accuracy"]]), "f1": mean_std([t["f1"]]),
              "params": t["params"], "tflite_bytes": None, "arena_bytes": None}]
    names = {"scratch": "student from scratch (float)", "distilled": "student distilled (float)",
             "qat_int8": "distilled + QAT, int8 .tflite", "ptq_int8": "scratch + PTQ, int8 .tflite"}
    for key, label in names.items():
        r = rows[key]
        table.append({"model": label, "accuracy": mean_std([x["accuracy"] for x in r]),
                      "f1": mean_std([x["f1"] for x in r]), "params": r[0]["params"],
                      "tflite_bytes": r[0].get("tflite_bytes"), "arena_bytes": r[0].get("arena_bytes")})
    by = {r["model"]: r for r in table}
    q8 = by[names["qat_int8"]]["accuracy"]["mean"]
    targets = {
        "int8_distilled_beats_scratch": {"int8": q8, "scratch": by[names["scratch"]]["accuracy"]["mean"],
                                         "holds": q8 > by[names["scratch"]]["accuracy"]["mean"]},
        "int8_within_0.3pt_of_float": {"gap_pts": 100 * (by[names["distilled"]]["accuracy"]["mean"] - q8),
                                       "holds": abs(by[names["distilled"]]["accuracy"]["mean"] - q8) <= 0.003},
        "int8_at_least_92.5": {"int8": q8, "holds": q8 >= 0.925},
        "teacher_at_least_93.5": {"teacher": t["accuracy"], "holds": t["accuracy"] >= 0.935},
        "cached_modes_at_most_1.3x": {m: res["cost"]["modes"][m]["ratio_vs_hard"] for m in ("cached", "cached-int8")},
        "size_ratio_at_least_3.5": {"ratio": res["size"]["float32_over_int8"],
                                    "holds": res["size"]["float32_over_int8"] >= 3.5},
        "latency_int8_at_most_0.6x": {"ratio": res["latency"]["median_ratio"],
                                      "holds": res["latency"]["median_ratio"] <= 0.6},
    }
    c = targets["cached_modes_at_most_1.3x"]
    c["holds"] = all(v <= 1.3 for k, v in c.items() if k != "holds")
    return {"table": table, "targets": targets}


def pct(ms: dict) -> str:
    return f"{100 * ms['mean']:.2f}" + (f" ± {100 * ms['std']:.2f}" if ms["n"] > 1 else "")


def num(v) -> str:
    return "" if v is None else f"{v:,}"


def markdown(res: dict) -> str:
    s, c, z, lat = res["summary"], res["cost"], res["size"], res["latency"]
    lines = [f"# kdq_tf benchmark: {res['name']}", "",
             f"{res['date']}, {res['machine']['cpu']}, {res['machine']['cores']} cores, {res['machine']['gpu']}; "
             f"total {res['wall_time_s'] / 60:.1f} min. Settings: `{json.dumps(res['settings'], sort_keys=True)}`",
             "", "## Quality (test set; students: mean ± std over seeds)", "",
             "| model | test accuracy % | macro F1 % | params | .tflite bytes | TFLM arena bytes |",
             "|---|---|---|---|---|---|"]
    for r in s["table"]:
        lines.append(f"| {r['model']} | {pct(r['accuracy'])} | {pct(r['f1'])} | {num(r['params'])} | "
                     f"{num(r['tflite_bytes'])} | {num(r['arena_bytes'])} |")
    lines += ["", "## Targets", "", "| target | measured | holds |", "|---|---|---|"]
    for name, t in s["targets"].items():
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in t.items() if k != "holds"}
        lines.append(f"| {name} | {json.dumps(shown)} | {'yes' if t['holds'] else 'no'} |")
    lines += ["", f"## Distillation cost per epoch ({c['samples']} samples, vs hard labels only: "
              f"{c['hard_only_epoch_s']:.2f} s/epoch)", "",
              "| guidance | style | s/epoch | ratio | one-time cache build s | cache bytes |", "|---|---|---|---|---|---|"]
    for m, r in c["modes"].items():
        lines.append(f"| {m} | {r['style']} | {r['epoch_s']:.2f} | {r['ratio_vs_hard']:.2f}x | "
                     f"{r['cache_build_s']:.1f} | {num(r['cache_bytes'])} |")
    sc = res["scaling"]
    lines += ["", "## Size, latency, memory, scaling", "",
              f"- float32 .tflite {z['float32_bytes']:,} B / int8 {z['int8_bytes']:,} B = "
              f"{z['float32_over_int8']:.2f}x; flatbuffer overhead {z['overhead_bytes']:,} B "
              f"({100 * z['overhead_share']:.1f}% of the int8 file)",
              f"- LiteRT batch 1, 1 thread, {lat['model']['runs']} alternating runs: int8 median "
              f"{lat['model']['median_ms']:.3f} ms, float32 {lat['other']['median_ms']:.3f} ms, "
              f"ratio {lat['median_ratio']:.3f}",
              f"- peak RSS of a distill process: {res['memory']['distill_peak_rss_mib']:.0f} MiB; teacher logits "
              f"cache: float {num(c['modes']['cached']['cache_bytes'])} B, int8 "
              f"{num(c['modes']['cached-int8']['cache_bytes'])} B ({c['samples']} samples)",
              "- epoch time vs data: " + ", ".join(f"{int(p['fraction'] * 100)}% {p['epoch_s']:.2f} s"
                                                   for p in sc["points"])
              + f" (per-sample max/min {sc['max_over_min_per_sample']:.2f})",
              "", "## Teacher attempts", "", "| config | test accuracy % | train time s |", "|---|---|---|"]
    for at in res["teacher_attempts"]:
        lines.append(f"| `{json.dumps(at['config'], sort_keys=True)}` | {100 * at['accuracy']:.2f} | "
                     f"{at['train_time_s']:.0f} |")
    return "\n".join(lines) + "\n"


def plots(res: dict, out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib not installed; no plots")
        return []
    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in res["summary"]["table"]:
        size = r["tflite_bytes"] or 4 * r["params"]  # the teacher has no .tflite: float32 weight bytes
        ax.errorbar(size, 100 * r["accuracy"]["mean"], yerr=100 * r["accuracy"]["std"], fmt="o", label=r["model"])
    ax.set_xscale("log")
    ax.set_xlabel("model bytes (.tflite; teacher: float32 weights)")
    ax.set_ylabel("test accuracy %")
    ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(_save(fig, out / f"{res['name']}_accuracy_vs_size.png"))
    fig, ax = plt.subplots(figsize=(6, 4))
    for stage, rows in res["quality"]["curves"].items():
        ax.plot([r["epoch"] + 1 for r in rows], [100 * r.get("val_accuracy", r.get("accuracy", 0)) for r in rows],
                marker="o", label=f"{stage} (val)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy %")
    ax.legend()
    fig.tight_layout()
    written.append(_save(fig, out / f"{res['name']}_training_curves.png"))
    fig, ax = plt.subplots(figsize=(6, 4))
    lat = res["latency"]
    ax.hist([lat["model"]["samples_ms"], lat["other"]["samples_ms"]], bins=40, label=["int8", "float32"])
    ax.set_xlabel("latency per inference, ms (batch 1, 1 thread)")
    ax.legend()
    fig.tight_layout()
    written.append(_save(fig, out / f"{res['name']}_latency.png"))
    plt.close("all")
    return written


def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=110)
    return path.name


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a slice and one seed (under 10 minutes)")
    p.add_argument("--name", help="results file stem (default: full or quick)")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--student", default="tiny_cnn")
    p.add_argument("--seeds", type=int)
    p.add_argument("--limit", type=int, help="samples per split (default: all; quick: 6000)")
    p.add_argument("--teacher-epochs", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--qat-epochs", type=int)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--lam", type=float, default=0.5)
    # 0: label-smoothed teachers distill worse (Muller et al. 2019, "When does label smoothing help?").
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--cost-limit", type=int, help="samples for the cost/scaling timings")
    p.add_argument("--cost-epochs", type=int, default=1)
    p.add_argument("--verify-samples", type=int, default=1000)
    p.add_argument("--latency-runs", type=int, default=300)
    p.add_argument("--work", help="work folder (teacher cache, runs); default runs/bench_<name>")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    a = p.parse_args(argv)
    quick = {"seeds": 1, "limit": 6000, "teacher_epochs": 1, "epochs": 3, "qat_epochs": 1, "cost_limit": 2000}
    full = {"seeds": 3, "limit": None, "teacher_epochs": 3, "epochs": 6, "qat_epochs": 1, "cost_limit": 10000}
    for k, v in (quick if a.quick else full).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.name = a.name or ("quick" if a.quick else "full")
    return a


def main(argv=None) -> dict:
    a = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from kdq_tf import files

    t_start = time.perf_counter()
    work = Path(a.work or ROOT / "runs" / f"bench_{a.name}")
    work.mkdir(parents=True, exist_ok=True)
    results_dir = Path(a.results)
    results_dir.mkdir(parents=True, exist_ok=True)
    res = {"name": a.name, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
           "settings": {k: v for k, v in vars(a).items() if k not in ("results", "work", "name")}}
    log.info("1/6 teacher")
    teacher_path, teacher = teacher_stage(a, work)
    attempts_file = work / "teacher_attempts.json"
    attempts = files.read_json(attempts_file).get("attempts", [])
    if not teacher["attempt"]["reused"]:
        attempts.append(teacher["attempt"])
        files.write_json(attempts_file, {"attempts": attempts})
    res["teacher"] = {k: v for k, v in teacher.items() if k != "attempt"}
    res["teacher_attempts"] = attempts or [teacher["attempt"]]
    log.info("2/6 students over %d seed(s)", a.seeds)
    res["quality"] = seed_runs(a, work, teacher_path)
    log.info("3/6 distillation cost and scaling")
    res.update(cost_and_scaling(a, work, teacher_path))
    log.info("4/6 size and latency")
    from kdq_tf import flatbuf

    i8 = (work / "seed0_int8.tflite").read_bytes()
    f32 = (work / "seed0_float32.tflite").read_bytes()
    over = len(i8) - flatbuf.weight_bytes(i8)
    res["size"] = {"int8_bytes": len(i8), "float32_bytes": len(f32), "float32_over_int8": len(f32) / len(i8),
                   "overhead_bytes": over, "overhead_share": over / len(i8)}
    res["latency"] = latency(work, a.latency_runs)
    log.info("5/6 memory")
    res["memory"] = memory(a, work, teacher_path)
    res["wall_time_s"] = time.perf_counter() - t_start
    res["summary"] = summarize(res)
    log.info("6/6 writing results")
    res["plots"] = plots(res, results_dir)
    files.write_json(results_dir / f"{a.name}.json", res)
    md = markdown(res)
    files.write_text(results_dir / f"{a.name}.md", md)
    print(md)
    return res


if __name__ == "__main__":
    main()
