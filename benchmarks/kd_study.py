"""Within reach of the teacher: the KD gain at three student sizes, and KL against DIST and DKD.

    python benchmarks/kd_study.py --part select --resume   # patience: epochs x views, on val
    python benchmarks/kd_study.py --part sizes --resume    # ds_cnn, tiny_cnn, small_cnn
    python benchmarks/kd_study.py --part losses --resume   # small_cnn with kl, dist, dkd
    python benchmarks/kd_study.py --part cost              # s/epoch: views, mixed views
    python benchmarks/kd_study.py --part report            # tables and plot from the results

Every student is distilled from the stored fused teacher's logits and QAT-trained, then scored
as a full-int8 .tflite on LiteRT over the test split. "sizes" trains each student's scratch twin
too (hard labels, same seed, epochs, schedule and augmentation, QAT, int8), so the KD gain is
distilled minus scratch, mean over --seeds seeds, against the two standard deviations added.

The schedule is the full benchmark's (benchmarks/results/full.json: epochs, QAT epochs,
learning rate, batch), with the T and lambda its validation sweep chose. "select" asks whether a
patient student does better (Beyer et al. 2022): small_cnn with KL over --grid-epochs x
--grid-views (the stored teacher's cached augmented views), seed 0, scored on the validation split
only; the cheapest schedule within --select-margin of the best becomes the schedule of "sizes" and
"losses" (rows accumulate: a later --grid-epochs 96 --grid-views 4 adds to the grid). Nothing
here is tuned on the test split. DIST and DKD keep the coefficients of their papers (kdq_tf's
defaults).

Runs go seed by seed; a student and its twin are two runs (kdq_tf.pipeline.run_twin), which
--jobs 2 trains side by side. Each is recorded in the results file as it finishes, so --resume
skips what is there even on a machine where the work folder is gone; a run cut off mid-way
resumes from its checkpoints only where that folder survived, so --start-within MIN keeps runs
from starting when they could not finish before the session ends, and --students picks the
runs that fit. small_cnn's KL runs serve both parts. Progress goes to stderr: redirect it to a
log file and commit it with the results.

Results: benchmarks/results/kd_study.json, .md and kd_study_sizes.png.
"""

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import kd_runs as KD  # noqa: E402 - a sibling script
from bench import machine, portable  # noqa: E402
from readme_table import TARGET_VERDICT, TWIN_VIEWS  # noqa: E402

from kdq_tf import files  # noqa: E402

log = logging.getLogger("kd_study")

RESULTS = ROOT / "benchmarks" / "results"
LOGITS = ROOT / "benchmarks" / "teachers" / "fashion_mnist_fused" / "logits.npz"
SIZES = ("ds_cnn", "tiny_cnn", "small_cnn")
LOSSES = ("kl", "dist", "dkd")
# issue "Within reach of the teacher": int8 test accuracy, mean of 3 seeds
TARGETS = {"small_cnn": 0.936, "tiny_cnn": 0.925}


def plan(parts) -> list[tuple[str, str, bool]]:
    """(student, soft loss, with its scratch twin) of every model the parts need, once each,
    the students with a target first: a session that ends mid-seed has spent its hours on them."""
    out = []
    if "sizes" in parts:
        out += [(s, "kl", True) for s in sorted(SIZES, key=lambda s: s not in TARGETS)]
    if "losses" in parts:
        out += [("small_cnn", loss, loss == "kl") for loss in LOSSES]
    return list(dict.fromkeys(out))


def tag(sched: dict) -> str:
    """A schedule's part of a run's key: runs of different schedules never mix."""
    return f"e{sched['epochs']}v{sched['views']}"


def schedule(full: dict) -> dict:
    """The full benchmark's schedule and its validation-chosen T and lambda."""
    s, best = full["settings"], full["sweep"]["best"]
    return {
        "epochs": s["epochs"],
        "qat_epochs": s["qat_epochs"],
        "lr": s["lr"],
        "batch_size": s["batch_size"],
        "temperature": best["temperature"],
        "lam": best["lam"],
        "views": best["views"],
    }


def run_dir(a, sched: dict, student: str, loss: str, seed: int, twin: bool) -> Path:
    """A run's work folder; the twin has its own, the same for every soft loss."""
    name = f"{student}_twin_{tag(sched)}" if twin else f"{student}_{loss}_{tag(sched)}"
    return Path(a.work) / name / f"seed{seed}"


def run_one(
    a, sched: dict, student: str, loss: str, seed: int, twin: bool, test: bool = True
) -> dict:
    """One distilled + QAT student, or (`twin`) its scratch twin alone; int8 accuracy on the
    test split only when `test` (the selection part never looks at it).

    A student and its twin are two runs, so that two workers train them side by side and each
    finishes in about half the hours of the pair: a session that ends kills what is unfinished.
    """
    from kdq_tf import load_config
    from kdq_tf.data.dataset import load_dataset

    t0 = time.perf_counter()
    s = SimpleNamespace(
        dataset="fashion_mnist",
        student=student,
        limit=a.limit,
        **{k: sched[k] for k in ("epochs", "qat_epochs", "lr", "batch_size")},
        temperature=sched["temperature"],
        lam=sched["lam"],
    )
    out = run_dir(a, sched, student, loss, seed, twin)
    # "seconds" is this process's share: a run resumed from checkpoints took longer in all
    resumed = (out / "ckpt").is_dir()
    m = KD.distill_run(
        s,
        out,
        LOGITS,
        seed=seed,
        views=sched["views"],
        qat=True,
        sets=[f"distill.soft_loss={loss}"],
        twin_only=twin,
    )
    if twin:
        rec = {
            "scratch_val": m["baseline"]["val_accuracy"],
            "scratch_qat_val": m["baseline_qat"]["val_accuracy"],
        }
    else:
        rec = {
            "distilled_val": m["student"]["val_accuracy"],
            "distilled_qat_val": m["student_qat"]["val_accuracy"],
            "params": m["student_qat"]["params"],
        }
    if test:
        data = load_dataset(load_config(sets=KD.student_sets(s) + [f"run.seed={seed}"]).data, seed)
        model = "baseline_qat.h5" if twin else "student_qat.h5"
        acc = KD.int8_accuracy(out / model, data)["accuracy"]
        rec["scratch_int8" if twin else "distilled_int8"] = acc
    rec["twin_seconds" if twin else "seconds"] = round(time.perf_counter() - t0, 1)
    if resumed:
        rec["twin_resumed" if twin else "resumed"] = True
    return rec


def pending(runs: dict, plan_rows, seeds: int, sched_tag: str) -> list[tuple]:
    """(key, student, loss, seed, twin) of each run not in `runs` yet, seed by seed: a record
    holds a student's "distilled_int8" and, where it has a twin, the twin's "scratch_int8"."""
    out = []
    for seed in range(seeds):
        for student, loss, with_twin in plan_rows:
            key = f"{student}/{loss}/{sched_tag}/seed{seed}"
            have = runs.get(key, {})
            if "distilled_int8" not in have:
                out.append((key, student, loss, seed, False))
            if with_twin and "scratch_int8" not in have:
                out.append((key, student, loss, seed, True))
    return out


def summarize(runs: dict, sched_tag: str, seeds: int = 3) -> dict:
    """The sizes table (KD gain per student) and the losses table (small_cnn), from the runs
    recorded as "student/loss/<tag>/seedN" at the schedule `sched_tag`. A target is met or not
    only once all `seeds` seeds are in ("target_met" None before: a mean of fewer may move)."""
    by: dict[tuple, list] = {}
    for key, r in runs.items():
        student, loss, t, _ = key.split("/")
        if t == sched_tag:
            by.setdefault((student, loss), []).append(r)
    sizes = []
    for student in SIZES:
        rs = [
            r for r in by.get((student, "kl"), []) if {"scratch_int8", "distilled_int8"} <= set(r)
        ]
        if not rs:
            continue
        kd = KD.mean_std([r["distilled_int8"] for r in rs])
        scratch = KD.mean_std([r["scratch_int8"] for r in rs])
        gain, noise = kd["mean"] - scratch["mean"], kd["std"] + scratch["std"]
        row = {
            "student": student,
            "params": rs[0]["params"],
            "scratch_int8": scratch,
            "distilled_int8": kd,
            # + 0.0: a gain that rounds to zero from below reads "+0.00", not "-0.00"
            "gain_pts": round(100 * gain, 2) + 0.0,
            "two_stds_pts": round(100 * noise, 2),
            # one seed has no spread to beat: None until a second seed of both exists
            "beats_noise": gain > noise if min(kd["n"], scratch["n"]) > 1 else None,
        }
        if student in TARGETS:
            row["target"] = TARGETS[student]
            row["target_met"] = kd["mean"] >= TARGETS[student] if kd["n"] >= seeds else None
        sizes.append(row)
    losses = []
    for loss in LOSSES:
        rs = [r for r in by.get(("small_cnn", loss), []) if "distilled_int8" in r]
        if rs:
            losses.append(
                {"loss": loss, "distilled_int8": KD.mean_std([r["distilled_int8"] for r in rs])}
            )
    kl = next((r["distilled_int8"]["mean"] for r in losses if r["loss"] == "kl"), None)
    for r in losses:
        r["vs_kl_pts"] = None if kl is None else round(100 * (r["distilled_int8"]["mean"] - kl), 2)
    return {"sizes": sizes, "losses": losses}


def _verdict(row: dict) -> str:
    if row["gain_pts"] <= 0:
        return " (no gain)"
    if row["beats_noise"] is None:
        return " (one seed: no spread yet)"
    return "" if row["beats_noise"] else " (gain within the noise)"


def _pct(ms: dict) -> str:
    if ms["n"] == 1:  # no spread to give
        return f"{100 * ms['mean']:.2f}% (n=1)"
    return f"{100 * ms['mean']:.2f} ± {100 * ms['std']:.2f}% (n={ms['n']})"


def markdown(res: dict) -> str:
    s = res.get("schedule", {})
    source = "chosen on the validation split, below" if res.get("chosen") else "make bench's"
    lines = [
        "# Within reach of the teacher: KD gain by student size, KL against DIST and DKD",
        "",
        f"Teacher: `{LOGITS.relative_to(ROOT)}` (CNN-48 + ResNet50, fused). Schedule ({source}): "
        f"{s.get('epochs')} epochs + {s.get('qat_epochs')} QAT, T {s.get('temperature')}, "
        f"lambda {s.get('lam')}, {s.get('views')} cached views; int8 test accuracy on LiteRT."
        + (" " + TWIN_VIEWS.format(k=s["views"]) if s.get("views") else ""),
        "",
    ]
    if res.get("select"):
        lines += [
            "## Patience (validation split, seed 0, small_cnn, KL)",
            "",
            "| epochs | cached views | val accuracy after QAT (float) |",
            "|---|---|---|",
        ]
        chosen = res.get("chosen") or {}
        for r in sorted(res["select"].values(), key=lambda r: (r["epochs"], r["views"])):
            star = (
                " (chosen)"
                if (r["epochs"], r["views"]) == (chosen.get("epochs"), chosen.get("views"))
                else ""
            )
            lines.append(
                f"| {r['epochs']} | {r['views']} | {100 * r['distilled_qat_val']:.2f}%{star} |"
            )
        if "select_margin_pts" in res:
            lines.append(
                f"\nChosen: the cheapest schedule within {res['select_margin_pts']:g} pt of the "
                "best validation accuracy."
            )
        lines.append("")
    if res.get("cost"):
        c = res["cost"]
        lines += [
            f"## Cost per epoch ({c['samples']:,} images, small_cnn, median epoch of "
            f"{c['epochs']}; one small CNN teacher)",
            "",
            "| guidance | s/epoch | against cached logits | one-time cache build s | cache bytes |",
            "|---|---|---|---|---|",
        ]
        for r in c["rows"]:
            lines.append(
                f"| {r['guidance']} | {r['epoch_s']:.2f} | {r['ratio']:.2f}x | "
                f"{r['cache_build_s']:.1f} | {r['cache_bytes']:,} |"
            )
        lines.append("")
    summ = res.get("summary", {})
    if summ.get("sizes"):
        lines += [
            "## KD gain by student size",
            "",
            "| student | params | scratch + QAT, int8 | distilled + QAT, int8 | gain | two stds |",
            "|---|---|---|---|---|---|",
        ]
        for r in summ["sizes"]:
            lines.append(
                f"| {r['student']} | {r['params']:,} | {_pct(r['scratch_int8'])} | "
                f"{_pct(r['distilled_int8'])} | {r['gain_pts']:+.2f} pt | {r['two_stds_pts']:.2f} "
                f"pt{_verdict(r)} |"
            )
        for r in summ["sizes"]:
            if "target" in r:
                n, seeds = r["distilled_int8"]["n"], res.get("seeds", 3)
                verdict = TARGET_VERDICT.get(
                    r["target_met"], f"not decided yet ({n} of {seeds} seeds)"
                )
                lines.append(f"\n{r['student']}: target {100 * r['target']:.1f}% {verdict}.")
        lines.append("")
    if summ.get("losses"):
        lines += [
            "## Soft loss (small_cnn)",
            "",
            "| loss | distilled + QAT, int8 | against KL |",
            "|---|---|---|",
        ]
        for r in summ["losses"]:
            vs = "" if r["vs_kl_pts"] is None else f"{r['vs_kl_pts']:+.2f} pt"
            lines.append(f"| {r['loss']} | {_pct(r['distilled_int8'])} | {vs} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> str | None:
    sizes = res.get("summary", {}).get("sizes")
    if not sizes:
        return None
    from bench import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    x = [r["params"] for r in sizes]
    for key, label in (("scratch_int8", "scratch + QAT"), ("distilled_int8", "distilled + QAT")):
        ax.errorbar(
            x,
            [100 * r[key]["mean"] for r in sizes],
            yerr=[100 * r[key]["std"] for r in sizes],
            marker="o",
            capsize=3,
            label=label,
        )
    for r in sizes:
        ax.annotate(r["student"], (r["params"], 100 * r["distilled_int8"]["mean"]), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("int8 test accuracy (%)")
    ax.set_title("KD gain by student size (Fashion-MNIST)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path.relative_to(ROOT))


def select(a, res: dict, base: dict, save) -> dict:
    """The patience grid on the validation split (seed 0, small_cnn, KL); returns the winner's
    schedule. Every row is kept in res["select"]."""
    rows = res.setdefault("select", {})
    for epochs in a.grid_epochs:
        for views in a.grid_views:
            sched = {**base, "epochs": epochs, "views": views}
            if tag(sched) in rows:
                continue
            r = run_one(a, sched, "small_cnn", "kl", 0, twin=False, test=False)
            rows[tag(sched)] = {"epochs": epochs, "views": views, **r}
            log.info("select %s: val (QAT) %.2f%%", tag(sched), 100 * r["distilled_qat_val"])
            save()
    return {**base, **choose(rows.values(), a.select_margin)}


def choose(rows, margin_pts: float) -> dict:
    """The cheapest schedule (fewest epochs, then fewest views) whose validation accuracy is
    within `margin_pts` of the best: one seed's validation accuracy moves by about 0.1-0.2 pt
    from seed to seed, so a longer schedule must beat a shorter one by more than that to be
    worth its hours on every run of the study."""
    rows = list(rows)
    top = max(r["distilled_qat_val"] for r in rows)
    near = [r for r in rows if 100 * (top - r["distilled_qat_val"]) <= margin_pts + 1e-9]
    best = min(near, key=lambda r: (r["epochs"], r["views"]))
    return {"epochs": best["epochs"], "views": best["views"]}


def cost(a) -> dict:
    """Seconds per distillation epoch on a slice: cached logits, K cached views, and K cached
    mixed views (function matching), each from the same small CNN teacher trained here.

    The student's epoch does not depend on how good the teacher is, so a one-epoch teacher
    serves; the teacher sets only the one-time cache build, reported beside it. Every run starts
    afresh (a reused cache or checkpoint would time nothing). The median epoch after the first
    (which traces the graph) is the figure.
    """
    import shutil
    import statistics

    from kdq_tf import load_config, run_distill, run_teacher
    from kdq_tf._keras import keras

    class Clock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.t0)

    work = Path(a.work) / "cost"
    common = ["data.dataset=fashion_mnist", f"data.limit={a.cost_limit}", "data.batch_size=128"]
    teacher = work / "teacher"
    if not (teacher / "teacher.keras").is_file():
        shutil.rmtree(teacher, ignore_errors=True)
        t = ["teacher.arch=cnn", "teacher.width=16", "teacher.epochs=1", f"run.out={teacher}"]
        run_teacher(load_config(sets=common + t))
    k, mix = a.cost_views, a.cost_mixup
    plans = [
        ("cached logits, no augmentation", []),
        (f"cached, {k} views", [f"distill.views={k}"]),
        (
            f"cached, {k} mixed views (mixup {mix:g}, function matching)",
            [f"distill.views={k}", f"data.mixup={mix}", "distill.lam=0"],
        ),
    ]
    rows = []
    for i, (label, extra) in enumerate(plans):
        out = work / f"run{i}"
        shutil.rmtree(out, ignore_errors=True)
        clock = Clock()
        sets = common + [
            f"run.out={out}",
            f"teacher.path={teacher / 'teacher.keras'}",
            "distill.guidance=cached-int8",
            "distill.student=small_cnn",
            f"distill.epochs={a.cost_epochs}",
            "qat.enabled=false",
            *extra,
        ]
        _, m = run_distill(load_config(sets=sets), callbacks=[clock])
        rows.append(
            {
                "guidance": label,
                "epoch_s": round(statistics.median(clock.times[1:] or clock.times), 2),
                "cache_build_s": round(m["guidance"]["build_time_s"], 1),
                "cache_bytes": m["guidance"]["cache_bytes"],
            }
        )
        log.info("cost %s: %.2f s/epoch", label, rows[-1]["epoch_s"])
    for r in rows:
        r["ratio"] = round(r["epoch_s"] / rows[0]["epoch_s"], 2)
    return {"samples": a.cost_limit, "epochs": a.cost_epochs, "rows": rows}


def _worker(a, sched: dict, student: str, loss: str, seed: int, twin: bool) -> dict:
    """run_one in a worker process, its output (Keras' progress, TF's logging) to the run's
    own log file: two runs' epoch lines interleaved in one log would be unreadable."""
    out = run_dir(a, sched, student, loss, seed, twin)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "run.log", "a") as f:
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(f.fileno(), 1), os.dup2(f.fileno(), 2)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        rec = run_one(a, sched, student, loss, seed, twin)
        sys.stdout.flush(), sys.stderr.flush()
    rec["jobs"] = a.jobs
    return rec


def in_parallel(a, sched: dict, todo: list, record, work=_worker) -> None:
    """The runs of `todo` on a.jobs worker processes, in plan order, each process with
    cores // a.jobs TF threads (one each for 2 jobs on 2 cores).

    Why: these students are too small for TF to keep two cores busy in one process. On the
    2-core machine, a small_cnn train step on synthetic batches took 85 ms with TF's default
    threads and 92 ms on one thread (tiny_cnn 30 and 49 ms); real runs, with their input
    pipelines, did about 1.1-1.3x the epochs per hour side by side (docs/benchmarks.md). A run's
    "seconds" then counts time shared with another run ("jobs": 2)."""
    import concurrent.futures as cf
    import multiprocessing as mp

    # set before the workers start, so that TensorFlow reads them when it loads there (the
    # inter-op pool keeps its default size)
    threads = str(max(1, (os.cpu_count() or 1) // a.jobs))
    for var in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
        os.environ[var] = threads
    failed, queue = [], list(todo)
    with cf.ProcessPoolExecutor(a.jobs, mp_context=mp.get_context("spawn")) as pool:
        log.info("%d runs on %d workers; each logs to its work folder's run.log", len(todo), a.jobs)
        running: dict = {}
        while queue or running:
            # submitted one by one, so that none starts after --start-within
            while queue and len(running) < a.jobs and may_start(a):
                key, student, loss, seed, twin = job = queue.pop(0)
                running[pool.submit(work, a, sched, student, loss, seed, twin)] = job
            if not running:
                break
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                key, student, loss, seed, twin = running.pop(fut)
                name = f"{key}{' twin' if twin else ''}"
                run_log = run_dir(a, sched, student, loss, seed, twin) / "run.log"
                if run_log.is_file():
                    sys.stderr.write(f"----- {name}: {run_log.name} -----\n" + run_log.read_text())
                try:
                    r = fut.result()
                except Exception as e:  # the other runs go on; the exit status says it failed
                    log.error("%s failed: %s: %s", name, type(e).__name__, e)
                    failed.append(name)
                    continue
                record(key, r)
    left(queue)
    if failed:
        raise SystemExit(f"kd_study: {len(failed)} run(s) failed: {', '.join(failed)}")


def may_start(a) -> bool:
    """False once --start-within has passed: a run that cannot finish before the machine goes
    back would be lost, checkpoints and all."""
    return time.monotonic() < a.start_by


def left(queue: list) -> None:
    if queue:
        log.info("%d runs not started (--start-within); --resume runs them", len(queue))


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--part", default="all", choices=("all", "select", "sizes", "losses", "cost", "report")
    )
    p.add_argument("--grid-epochs", type=int, nargs="+", default=[12, 48])
    p.add_argument("--grid-views", type=int, nargs="+", default=[0, 4])
    p.add_argument(
        "--select-margin",
        type=float,
        default=0.15,
        help="pt of validation accuracy within which the cheaper schedule is chosen",
    )
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--cost-limit", type=int, default=6000, help="cost: images in the slice")
    p.add_argument("--cost-epochs", type=int, default=4, help="cost: epochs per timed run")
    p.add_argument("--cost-views", type=int, default=4, help="cost: K cached views")
    p.add_argument("--cost-mixup", type=float, default=0.2, help="cost: mixup's Beta(a, a)")
    p.add_argument("--work", default=str(Path.home() / "kdq_runs" / "kd_study"))
    p.add_argument("--limit", type=int, help="a slice, for trying the script")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--name", default="kd_study", help="results file stem")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs side by side, each in its own process with cores/jobs TF threads",
    )
    p.add_argument(
        "--students",
        nargs="+",
        choices=SIZES,
        default=list(SIZES),
        help="only these students' runs (to fit what is left into a session)",
    )
    p.add_argument(
        "--start-within",
        type=float,
        metavar="MIN",
        help="start no run after MIN minutes from now (those left wait for a --resume)",
    )
    a = p.parse_args(argv)
    if a.jobs < 1:
        p.error(f"--jobs: got {a.jobs}; give 1 or more runs side by side")
    if a.start_within is not None and a.start_within <= 0:
        p.error(f"--start-within: got {a.start_within:g}; give minutes > 0")
    a.start_by = time.monotonic() + 60 * a.start_within if a.start_within else float("inf")
    return a


def main(argv=None) -> dict:
    a = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    path = RESULTS / f"{a.name}.json"
    if a.part == "report" and not path.is_file():
        raise SystemExit(f"kd_study: --part report needs {path.name} in the results; run a part")
    # the report part redraws from the results, so it reads them even without --resume
    res = (
        json.loads(path.read_text()) if (a.resume or a.part == "report") and path.is_file() else {}
    )
    res.setdefault("machine", machine())
    base = schedule(json.loads((RESULTS / "full.json").read_text()))
    res["schedule"] = res.get("chosen") or base
    res["seeds"] = a.seeds
    res.setdefault("runs", {})
    parts = ("select", "sizes", "losses") if a.part == "all" else (a.part,)

    def save():
        res["summary"] = summarize(res["runs"], tag(res["schedule"]), a.seeds)
        res["plot"] = plot(res, RESULTS / f"{a.name}_sizes.png")
        res["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        files.write_json(path, portable(res))
        files.write_text(RESULTS / f"{a.name}.md", markdown(res))

    if "cost" in parts:
        res["cost"] = cost(a)
    if "select" in parts:
        res["select_margin_pts"] = a.select_margin
        res["chosen"] = res["schedule"] = select(a, res, base, save)
    rows = [r for r in plan(parts) if r[0] in a.students]
    todo = pending(res["runs"], rows, a.seeds, tag(res["schedule"]))

    def record(key, r):
        res["runs"][key] = r = {**res["runs"].get(key, {}), **r}  # a student, then its twin
        log.info(
            "%s: distilled int8 %s, scratch int8 %s",
            key,
            *(f"{100 * r[k]:.2f}%" if k in r else "-" for k in ("distilled_int8", "scratch_int8")),
        )
        save()

    if a.jobs == 1:
        while todo and may_start(a):
            key, student, loss, seed, twin = todo.pop(0)
            record(key, run_one(a, res["schedule"], student, loss, seed, twin))
        left(todo)
    else:
        in_parallel(a, res["schedule"], todo, record)
    save()
    print(markdown(res))
    return res


if __name__ == "__main__":
    main()
