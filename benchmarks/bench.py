"""The kdq_tf benchmark: does distillation pay, and what it costs, in one run.

    # full: the stored teacher's logits, full training set, 3 seeds
    python benchmarks/bench.py
    # train the ResNet50 teacher again first (hours on 2 cores)
    python benchmarks/bench.py --retrain-teacher
    # a slice, a short teacher, 1 seed
    python benchmarks/bench.py --quick

Order: teacher logits (benchmarks/teachers/, fingerprints checked) -> T/lambda sweep on
the validation split -> the winners over seeds (distilled + QAT int8 against its scratch +
QAT int8 twin) -> guidance modes -> KD gain against teacher accuracy -> size, latency,
memory, scaling. Writes benchmarks/results/<name>.json and <name>.md (+ PNG plots); every
figure is computed here. `python benchmarks/readme_table.py` copies it into the README.
"""

import argparse
import json
import logging
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import kd_runs as KD  # noqa: E402 - a sibling script, importable once the folder is on the path

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
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": "none (CPU only)",
    }


def teacher_source(a, work: Path) -> dict:
    """Where the students' soft targets come from: the stored artifact, a retrained teacher, or
    --quick's."""
    import teacher_artifact as TA

    from kdq_tf import files
    from kdq_tf.config import DataConfig
    from kdq_tf.data.dataset import load_dataset
    from kdq_tf.teacher.logits_file import from_bytes

    if a.quick:
        logits, model = KD.quick_teacher(a, work)
        m = files.read_json(work / "teacher" / "metrics.json")["teacher"]
        return {
            "logits": logits,
            "model": model,
            "teacher": m,
            "snapshots": [],
            "source": "trained in this run",
            "recipe": m,
        }
    dest = Path(a.teacher_dir)
    if a.retrain_teacher:
        runs = TA.train_teacher(work / "teacher", work / "teacher.log", a.dataset)
        TA.build(runs, dest, a.views, [[work / "teacher.log"]], snapshots=(5, 10, 15, 20, 25))
    data = load_dataset(DataConfig(dataset=a.dataset))
    prov = TA.check(dest, data)
    fp = from_bytes((dest / "logits.npz").read_bytes(), "logits.npz").teacher_fp
    members = prov.get("members") or [{"config": prov["config"]["teacher"]}]
    # The online guidance row needs the weights: --teacher-model, or the members' runs where this
    # machine still has them (the repository keeps only logits).
    specs = (
        a.teacher_model.split(",")
        if a.teacher_model
        else [m["run"] for m in members if m.get("run")]
        or [str(work / "teacher" / "teacher.keras")]
    )
    online = ",".join(specs) if specs and all(Path(p).exists() for p in specs) else None
    first = _arch(members[0]["config"])
    snaps = [
        (f"{first} epoch {s['epoch']}", s["accuracy"], dest / s["file"]) for s in prov["snapshots"]
    ]
    keys = (
        "arch",
        "width",
        "epochs",
        "lr",
        "batch_size",
        "precision",
        "erase",
        "weight_decay",
        "input_size",
        "adapter",
    )
    recipes = [{k: m["config"][k] for k in keys if k in m["config"]} for m in members]
    fusion = prov.get("fusion")
    label = (
        f"{' + '.join(_arch(m['config']) for m in members)} teacher, fused (float)"
        if fusion
        else f"{first} teacher (float)"
    )
    online_sets = (
        (
            f"teacher.fusion={fusion['mode']}",
            "teacher.fusion_weights=" + ",".join(map(str, fusion["weights"])),
        )
        if fusion and len(specs) == len(fusion["weights"])
        else ()
    )
    return {
        "logits": dest / "logits.npz",
        "model": online,
        "online_sets": online_sets,
        "teacher": prov["teacher"],
        "snapshots": snaps,
        "source": f"{_shown(dest)} (fingerprint {fp}, checked)",
        "label": label,
        "recipe": recipes[0] if len(recipes) == 1 else recipes,
        "fusion": fusion,
        "members": [
            {
                "label": _arch(m["config"]),
                "hours": m.get("hours"),
                **(fusion["members"][i] if fusion else {}),
            }
            for i, m in enumerate(members)
        ],
        "hours": prov["train_hours"],
        "command": prov["command"],
    }


def _arch(teacher_config: dict) -> str:
    arch = teacher_config.get("arch", "resnet50")
    return "ResNet50" if arch == "resnet50" else f"CNN-{teacher_config.get('width')}"


def other_teachers(a) -> list[tuple[str, float, Path]]:
    """--gain-also: more stored teacher artifacts as KD-gain points (label, test accuracy,
    logits)."""
    import teacher_artifact as TA

    from kdq_tf.config import DataConfig
    from kdq_tf.data.dataset import load_dataset

    if not a.gain_also:
        return []
    data = load_dataset(DataConfig(dataset=a.dataset))
    out = []
    for d in a.gain_also:
        prov = TA.check(Path(d), data)
        members = prov.get("members") or [{"config": prov["config"]["teacher"]}]
        label = " + ".join(_arch(m["config"]) for m in members) + f" ({prov['epochs']} epochs)"
        out.append((label, prov["teacher"]["accuracy"], Path(d) / "logits.npz"))
    return out


def latency(work: Path, runs: int) -> dict:
    from kdq_tf.runtime.runner import Runner, benchmark

    i8 = Runner.from_file(work / "seed0_int8.tflite", threads=1)
    f32 = Runner.from_file(work / "seed0_float32.tflite", threads=1)
    return benchmark(i8, runs=runs, warmup=50, other=f32)


def memory(a, work: Path, logits: Path) -> dict:
    """Peak RSS of a separate `kdq_tf distill` process (1 epoch, cached guidance from the logits
    file)."""
    out = work / "memory_run"
    cmd = [
        sys.executable,
        "-m",
        "kdq_tf",
        "-q",
        "distill",
        "--overwrite",
        "--teacher-logits",
        str(logits),
        "--epochs",
        "1",
        "--out",
        str(out),
        "--student",
        a.student,
        "--dataset",
        a.dataset,
    ]
    if a.limit:
        cmd += ["--limit", str(a.limit)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "distill_peak_rss_mib": max(peak, before) / 1024.0,
        "note": "ru_maxrss of the child process (Linux: KiB)",
    }


def device_rows(a, work: Path) -> dict | None:
    """The seed-0 int8 student on TFLite-Micro: host and Cortex-M4 (emulated),
    benchmarks/device.py."""
    import device

    from kdq_tf.errors import KdqError

    if not a.tflm:
        return {"skipped": "no TFLite-Micro tree given (--tflm '')"}
    try:
        return device.measure(work / "seed0_int8.tflite", a.tflm, a.dataset, work / "device", 10)
    except KdqError as e:  # no tree or no toolchain here: the rest of the benchmark still stands
        log.warning("device rows skipped: %s", e)
        return {"skipped": str(e)}


def _claim(work: Path, a) -> None:
    """Records the settings in the work folder; a folder made with other settings is refused,
    because every student run in it resumes (`run.resume=true`) and would be silently reused."""
    import hashlib

    from kdq_tf import files

    settings = {k: portable(v) for k, v in vars(a).items() if k not in ("results", "name")}
    teacher = Path(a.teacher_dir) / "provenance.json"
    if not a.quick and teacher.is_file():  # the same folder may later hold another teacher's logits
        settings["teacher_provenance_sha256"] = hashlib.sha256(teacher.read_bytes()).hexdigest()
    path = work / "bench_settings.json"
    saved = files.read_json(path)
    if saved and saved != json.loads(json.dumps(settings)):
        changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        raise SystemExit(
            f"{work} holds runs made with other settings ({', '.join(changed)}); its student runs "
            "would be reused. Remove it or give another --work"
        )
    files.write_json(path, settings)


# An absolute path inside a string: "/" after a start, a space, a quote, "=" or ","; up to a
# space, quote, comma, backtick or bracket.
_ABS_PATH = re.compile(r"(?<![\w.~])/(?:[\w.+-]+/)*[\w.+-]+")


def portable(value):
    """Results as another clone would write them: every absolute path, also inside a longer
    string (a command line, a log line), made relative to the checkout (or to its parent, like
    ../shared/tflm), or to the home folder it was in (~/kdq_runs/bench_full); elsewhere, by name.
    """
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v) for v in value]
    if isinstance(value, str):
        return _ABS_PATH.sub(lambda m: _relative(Path(m.group(0))), value)
    return value


def _relative(p: Path) -> str:
    if p.is_relative_to(ROOT):
        return str(p.relative_to(ROOT)) or "."
    if p.is_relative_to(ROOT.parent) and p != ROOT.parent:
        return str(Path("..") / p.relative_to(ROOT.parent))
    home = p.parts[:2] == ("/", "root") and 2 or p.parts[:2] == ("/", "home") and 3
    if home and len(p.parts) > home:  # a run folder in someone's home: ~/kdq_runs/teacher_r50
        return str(Path("~", *p.parts[home:]))
    return p.name  # elsewhere (/tmp/...): by name alone


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def summarize(res: dict) -> dict:
    rows = res["quality"]["rows"]
    t = res["teacher"]["teacher"]
    names = {
        "scratch": "student from scratch (float)",
        "distilled": "student distilled (float)",
        "scratch_qat_int8": "scratch + QAT, int8 .tflite",
        "distilled_qat_int8": "distilled + QAT, int8 .tflite",
    }
    table = [
        {
            "model": res["teacher"].get("label", "ResNet50 teacher (float)"),
            "accuracy": KD.mean_std([t["accuracy"]]),
            "f1": KD.mean_std([t.get("f1", t["accuracy"])]),
            "params": t.get("params"),
            "tflite_bytes": None,
            "arena_bytes": None,
        }
    ]
    for key, label in names.items():
        r = rows[key]
        table.append(
            {
                "model": label,
                "accuracy": KD.mean_std([x["accuracy"] for x in r]),
                "f1": KD.mean_std([x["f1"] for x in r]),
                "params": r[0]["params"],
                "tflite_bytes": r[0].get("tflite_bytes"),
                "arena_bytes": r[0].get("arena_bytes"),
            }
        )
    by = {r["model"]: r["accuracy"] for r in table}
    d8, s8 = by[names["distilled_qat_int8"]], by[names["scratch_qat_int8"]]
    gain = 100 * (d8["mean"] - s8["mean"])
    noise = 100 * (d8["std"] + s8["std"])
    targets = {
        "teacher_at_least_93.5": {"teacher": t["accuracy"], "holds": t["accuracy"] >= 0.935},
        "int8_distilled_beats_int8_scratch_by_0.5pt": {
            "gain_pts": gain,
            "std_sum_pts": noise,
            "holds": gain >= 0.5 and gain > noise,
        },
        "int8_student_at_least_92.5_with_100k_params": {
            "int8": d8["mean"],
            "params": rows["distilled"][0]["params"],
            "holds": d8["mean"] >= 0.925 and rows["distilled"][0]["params"] <= 100_000,
        },
        "int8_within_0.3pt_of_float": {
            "gap_pts": 100 * (by[names["distilled"]]["mean"] - d8["mean"]),
            "holds": abs(by[names["distilled"]]["mean"] - d8["mean"]) <= 0.003,
        },
        "latency_int8_at_most_0.6x": {
            "ratio": res["latency"]["median_ratio"],
            "holds": res["latency"]["median_ratio"] <= 0.6,
        },
    }
    return {"table": table, "targets": targets, "kd_gain_pts": gain}


def pct(ms: dict) -> str:
    return f"{100 * ms['mean']:.2f}" + (f" ± {100 * ms['std']:.2f}" if ms["n"] > 1 else "")


def num(v) -> str:
    return "" if v is None else f"{v:,}"


def markdown(res: dict) -> str:
    s, z, lat, t = res["summary"], res["size"], res["latency"], res["teacher"]
    st = res["settings"]
    lines = [
        f"# kdq_tf benchmark: {res['name']}",
        "",
        f"{res['date']}, {res['machine']['cpu']}, {res['machine']['cores']} cores, "
        f"{res['machine']['gpu']}; "
        f"total {res['wall_time_s'] / 60:.1f} min. Settings: `{json.dumps(st, sort_keys=True)}`",
        "",
        f"Teacher: {t['source']}; recipe `{json.dumps(t['recipe'], sort_keys=True, default=str)}`"
        + (f"; {t['hours']:.2f} h of training" if t.get("hours") else "")
        + ".",
        "",
        *fusion_lines(t),
        f"Students: T={res['chosen']['temperature']:g}, lambda={res['chosen']['lam']:g} "
        "(chosen on the "
        f"validation split), {st['epochs']} epochs + {st['qat_epochs']} QAT, "
        + (
            f"{res['chosen']['views']} cached augmented views"
            if res["chosen"]["views"]
            else "cached logits without augmentation"
        )
        + f" (chosen on the validation split); batch {st['batch_size']}, "
        f"Adam {st['lr']:g} with cosine decay; "
        "the scratch twin has the same architecture, augmentation, epochs, schedule and QAT.",
        "",
        "## Quality (test set; students: mean ± std over seeds)",
        "",
        "| model | test accuracy % | macro F1 % | params | .tflite bytes | TFLM arena bytes |",
        "|---|---|---|---|---|---|",
    ]
    for r in s["table"]:
        lines.append(
            f"| {r['model']} | {pct(r['accuracy'])} | {pct(r['f1'])} | {num(r['params'])} | "
            f"{num(r['tflite_bytes'])} | {num(r['arena_bytes'])} |"
        )
    lines += ["", "## Targets", "", "| target | measured | holds |", "|---|---|---|"]
    for name, tg in s["targets"].items():
        shown = {
            k: (round(v, 4) if isinstance(v, float) else v) for k, v in tg.items() if k != "holds"
        }
        lines.append(f"| {name} | {json.dumps(shown)} | {'yes' if tg['holds'] else 'no'} |")
    sw = res["sweep"]
    lines += [
        "",
        f"## Sweep on the validation split (seed 0, float students, {st['sweep_epochs']} epochs)",
        "",
        "| T | lambda | cached views | val accuracy % |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['temperature']:g} | {r['lam']:g} | {r.get('views', st['views']) or 'none'} | "
        f"{100 * r['val_accuracy']:.2f} |"
        for r in sw["rows"]
    ]
    g = res["guidance"]
    lines += [
        "",
        f"## Guidance modes ({g['samples']} samples, {g['epochs']} epochs, seed 0, float students)",
        "",
        "| guidance | test accuracy % | val accuracy % | s/epoch | cache bytes |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['mode']} | {100 * r['accuracy']:.2f} | {100 * r['val_accuracy']:.2f} | "
        f"{r['epoch_s']:.2f} | "
        f"{num(r['cache_bytes'])} |"
        for r in g["rows"]
    ]
    lines.append(f"| hard labels only | | | {g['rows'][0]['hard_only_epoch_s']:.2f} | |")
    if g["online_note"]:
        lines += ["", f"_{g['online_note']}._"]
    elif (t.get("fusion") or {}).get("flip") and len(g["rows"]) > 2:
        lines += [
            "",
            "_The online row fuses the same members with the same mode and weights, "
            "without the flip "
            "test-time augmentation: its teacher sees the student's augmented image once._",
        ]
    k = res["kd_gain"]
    lines += [
        "",
        "## KD gain against teacher accuracy "
        f"(seed 0, {k['epochs']} epochs, cached, no augmentation; "
        f"scratch twin {100 * (k['scratch_accuracy'] or 0):.2f}%)",
        "",
        "| teacher | teacher test accuracy % | distilled student % | gain pts |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['teacher']} | {100 * r['teacher_accuracy']:.2f} | "
        f"{100 * r['student_accuracy']:.2f} | "
        f"{r['gain_pts']:+.2f} |"
        for r in k["rows"]
    ]
    sc = res["scaling"]
    lines += [
        "",
        "## Size, latency, memory, scaling",
        "",
        f"- float32 .tflite {z['float32_bytes']:,} B / int8 {z['int8_bytes']:,} B = "
        f"{z['float32_over_int8']:.2f}x; flatbuffer overhead {z['overhead_bytes']:,} B "
        f"({100 * z['overhead_share']:.1f}% of the int8 file)",
        f"- LiteRT batch 1, 1 thread, {lat['model']['runs']} alternating runs: int8 median "
        f"{lat['model']['median_ms']:.3f} ms, float32 {lat['other']['median_ms']:.3f} ms, "
        f"ratio {lat['median_ratio']:.3f}",
        f"- peak RSS of a distill process: {res['memory']['distill_peak_rss_mib']:.0f} MiB",
        "- epoch time vs data: "
        + ", ".join(f"{int(p['fraction'] * 100)}% {p['epoch_s']:.2f} s" for p in sc["points"])
        + f" (per-sample max/min {sc['max_over_min_per_sample']:.2f})",
    ]
    dev = res.get("device") or {}
    if dev.get("runs"):
        import device

        lines += ["", "## On the device (TFLite-Micro, seed-0 int8 student)", "", device.table(dev)]
        if dev.get("instruction_ratio_reference_over_cmsis_nn"):
            lines.append(
                f"- Cortex-M4 (emulated): reference/CMSIS-NN instructions per inference "
                f"{dev['instruction_ratio_reference_over_cmsis_nn']}x"
            )
    elif dev.get("skipped"):
        lines += ["", f"Device rows skipped: {dev['skipped']}"]
    return "\n".join(lines) + "\n"


def fusion_lines(t: dict) -> list[str]:
    """The members of a fused teacher and the fusion chosen on the validation split."""
    f = t.get("fusion")
    if not f:
        return []
    lines = [
        "| teacher | val accuracy % | test accuracy % | hours of training | fusion weight |",
        "|---|---|---|---|---|",
    ]
    for m, w in zip(t["members"], f["weights"]):
        lines.append(
            f"| {m['label']} | {100 * m['val_accuracy']:.2f} | {100 * m['accuracy']:.2f} | "
            f"{m['hours']:.2f} | {w:g} |"
        )
    lines.append(
        f"| fused (mean of {'logits' if f['mode'] == 'logits' else 'probabilities'}) | "
        f"{100 * f['val_accuracy']:.2f} | {100 * f['accuracy']:.2f} | {t['hours']:.2f} | |"
    )
    return [
        *lines,
        "",
        f"The fusion mode and weights scored best on the validation split among {f['tried']} "
        "tried; the test column is only reported.",
        "",
    ]


def pyplot():
    """matplotlib.pyplot on the file-only backend, or None (with a warning) where it is not
    installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib not installed; no plots")
        return None
    return plt


def plots(res: dict, out: Path) -> list[str]:
    plt = pyplot()
    if plt is None:
        return []
    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in res["summary"]["table"]:
        size = r["tflite_bytes"] or 4 * (
            r["params"] or 0
        )  # the teacher has no .tflite: float32 weight bytes
        if size:
            ax.errorbar(
                size,
                100 * r["accuracy"]["mean"],
                yerr=100 * r["accuracy"]["std"],
                fmt="o",
                label=r["model"],
            )
    ax.set_xscale("log")
    ax.set_xlabel("model bytes (.tflite; teacher: float32 weights)")
    ax.set_ylabel("test accuracy %")
    ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(_save(fig, out / f"{res['name']}_accuracy_vs_size.png"))
    fig, ax = plt.subplots(figsize=(6, 4))
    for stage, rows in res["quality"]["curves"].items():
        ax.plot(
            [r["epoch"] + 1 for r in rows],
            [100 * r.get("val_accuracy", r.get("accuracy", 0)) for r in rows],
            marker="o",
            label=f"{stage} (val)",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy %")
    ax.legend()
    fig.tight_layout()
    written.append(_save(fig, out / f"{res['name']}_training_curves.png"))
    k = res["kd_gain"]["rows"]
    if k:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([100 * r["teacher_accuracy"] for r in k], [r["gain_pts"] for r in k], marker="o")
        for r in k:
            ax.annotate(r["teacher"], (100 * r["teacher_accuracy"], r["gain_pts"]), fontsize=7)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("teacher test accuracy %")
        ax.set_ylabel("KD gain, pts (distilled - scratch)")
        fig.tight_layout()
        written.append(_save(fig, out / f"{res['name']}_kd_gain.png"))
    plt.close("all")
    return written


def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=110)
    return path.name


def parse(argv):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="a slice, a short teacher and one seed")
    p.add_argument("--name", help="results file stem (default: full or quick)")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--student", help="default: small_cnn (97k params); quick: tiny_cnn")
    p.add_argument("--seeds", type=int)
    p.add_argument("--limit", type=int, help="samples per split (default: all; quick: 6000)")
    p.add_argument("--teacher-epochs", type=int, help="--quick's teacher")
    p.add_argument(
        "--retrain-teacher", action="store_true", help="train the stored teacher again (hours)"
    )
    p.add_argument(
        "--teacher-dir", default=str(ROOT / "benchmarks" / "teachers" / "fashion_mnist_fused")
    )
    p.add_argument(
        "--gain-also",
        action="append",
        help="another teacher artifact folder to add to the KD-gain table "
        "(repeatable; full default: "
        "the ResNet50 member alone, benchmarks/teachers/fashion_mnist_resnet50_31ep)",
    )
    p.add_argument(
        "--teacher-model", help="the teacher's .keras, for the online guidance row (optional)"
    )
    p.add_argument("--epochs", type=int)
    p.add_argument("--qat-epochs", type=int)
    p.add_argument("--views", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="the students' Adam rate (cosine decay)")
    p.add_argument("--temperature", type=float, default=4.0, help="the sweep's starting T")
    p.add_argument("--lam", type=float, default=0.5, help="the sweep's starting lambda")
    p.add_argument(
        "--sweep-t",
        default="1,2,4",
        help="T=8 came last by 1.6 pts in the previous full sweep (git history of results/full.md)",
    )
    p.add_argument(
        "--sweep-lam", default="0.5,0.1", help="0.1: most weight on the soft loss, as published"
    )
    p.add_argument("--sweep-epochs", type=int)
    p.add_argument("--mode-epochs", type=int)
    p.add_argument("--mode-limit", type=int)
    p.add_argument("--gain-epochs", type=int)
    p.add_argument("--cost-limit", type=int, help="samples for the scaling timings")
    p.add_argument("--latency-runs", type=int, default=300)
    p.add_argument(
        "--tflm",
        default=os.environ.get("TFLM_DIR", ""),
        help="TFLite-Micro tree for the device rows (host and Cortex-M4 under QEMU); '' skips them",
    )
    p.add_argument("--work", help="work folder (runs); default runs/bench_<name>")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    a = p.parse_args(argv)
    quick = {
        "gain_also": [],
        "student": "tiny_cnn",
        "batch_size": 32,
        "lr": 1e-3,
        "seeds": 1,
        "limit": 6000,
        "teacher_epochs": 1,
        "epochs": 3,
        "qat_epochs": 1,
        "views": 2,
        "sweep_epochs": 1,
        "mode_epochs": 1,
        "mode_limit": 3000,
        "gain_epochs": 1,
        "cost_limit": 2000,
    }
    # Sized so that the whole run fits in about 65 minutes on 2 cores once the teacher logits exist;
    # 12 epochs because distillation needs patience (a 6-epoch student barely separates from its
    # twin).
    full = {
        "gain_also": [str(ROOT / "benchmarks" / "teachers" / "fashion_mnist_resnet50_31ep")],
        "student": "small_cnn",
        "batch_size": 128,
        "lr": 2e-3,
        "seeds": 3,
        "limit": None,
        "teacher_epochs": None,
        "epochs": 12,
        "qat_epochs": 2,
        "views": 4,
        "sweep_epochs": 4,
        "mode_epochs": 4,
        "mode_limit": 12000,
        "gain_epochs": 4,
        "cost_limit": 10000,
    }
    for k, v in (quick if a.quick else full).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.sweep_t = [float(v) for v in str(a.sweep_t).split(",")]
    a.sweep_lam = [float(v) for v in str(a.sweep_lam).split(",")]
    a.name = a.name or ("quick" if a.quick else "full")
    return a


def main(argv=None) -> dict:
    a = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from kdq_tf import files
    from kdq_tf.teacher.logits_file import from_bytes

    t_start = time.perf_counter()
    work = Path(a.work or ROOT / "runs" / f"bench_{a.name}")
    work.mkdir(parents=True, exist_ok=True)
    results_dir = Path(a.results)
    results_dir.mkdir(parents=True, exist_ok=True)
    _claim(work, a)
    log.info("1/7 teacher logits")
    src = teacher_source(a, work)
    views_aug = from_bytes(Path(src["logits"]).read_bytes(), "logits").views_aug or {}
    a.view_erase = views_aug.get("erase", 0.0)  # the scratch twin augments like the views
    res = {
        "name": a.name,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "settings": {
            k: portable(v) for k, v in vars(a).items() if k not in ("results", "work", "name")
        },
        "teacher": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in src.items() if k != "snapshots"
        },
    }
    log.info("2/7 T/lambda sweep on the validation split")
    res["sweep"] = KD.sweep(a, work, src["logits"])
    best = res["chosen"] = res["sweep"]["best"]
    log.info(
        "3/7 students over %d seed(s) at T=%g, lambda=%g", a.seeds, best["temperature"], best["lam"]
    )
    res["quality"] = KD.seeds(
        a, work, src["logits"], best["temperature"], best["lam"], best["views"]
    )
    log.info("4/7 guidance modes")
    res["guidance"] = KD.guidance_modes(
        a,
        work,
        src["logits"],
        src["model"],
        best["temperature"],
        best["lam"],
        src.get("online_sets", ()),
    )
    log.info("5/7 KD gain against teacher accuracy")
    gain_files = [
        *src["snapshots"],
        *other_teachers(a),
        ("final", src["teacher"]["accuracy"], Path(src["logits"])),
    ]
    res["kd_gain"] = KD.kd_gain(a, work, gain_files, best["temperature"], best["lam"])
    log.info("6/7 size, latency, memory, scaling, device")
    from kdq_tf.deploy import flatbuf

    i8 = (work / "seed0_int8.tflite").read_bytes()
    f32 = (work / "seed0_float32.tflite").read_bytes()
    over = len(i8) - flatbuf.weight_bytes(i8)
    res["size"] = {
        "int8_bytes": len(i8),
        "float32_bytes": len(f32),
        "float32_over_int8": len(f32) / len(i8),
        "overhead_bytes": over,
        "overhead_share": over / len(i8),
    }
    res["latency"] = latency(work, a.latency_runs)
    res["memory"] = memory(a, work, src["logits"])
    res["scaling"] = KD.scaling(a, work, src["logits"])
    res["device"] = device_rows(a, work)
    res["wall_time_s"] = time.perf_counter() - t_start
    res["summary"] = summarize(res)
    log.info("7/7 writing results")
    res["plots"] = plots(res, results_dir)
    files.write_json(results_dir / f"{a.name}.json", res)
    md = markdown(res)
    files.write_text(results_dir / f"{a.name}.md", md)
    print(md)
    return res


if __name__ == "__main__":
    main()
