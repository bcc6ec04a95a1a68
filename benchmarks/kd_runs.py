"""The distillation runs behind bench.py: teacher logits, sweep, seeds, guidance modes, KD gain.

Every student here learns from a teacher logits file (kdq_tf.teacher.logits_file), so the
expensive teacher is trained once and its product reused: the artifact under
benchmarks/teachers/ for the full benchmark, a small teacher trained in the work
folder for --quick.
"""

import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("bench")


def student_sets(a, *, epochs=None, temperature=None, lam=None, limit=None) -> list[str]:
    limit = a.limit if limit is None else limit
    sets = [
        f"data.dataset={a.dataset}",
        f"data.batch_size={a.batch_size}",
        f"distill.student={a.student}",
        f"distill.epochs={epochs or a.epochs}",
        f"distill.lr={a.lr}",
        f"distill.temperature={temperature or a.temperature}",
        f"distill.lam={a.lam if lam is None else lam}",
        f"qat.epochs={a.qat_epochs}",
        "run.resume=true",
    ]
    return sets + ([f"data.limit={limit}"] if limit else [])


def quick_teacher(a, work: Path) -> tuple[Path, Path]:
    """--quick: trains a short ResNet50 on the slice and writes its logits file. Returns
    (logits, teacher.keras)."""
    from kdq_tf import load_config, run_teacher

    out = work / "teacher"
    logits = work / "teacher_logits.npz"
    cfg = load_config(
        sets=[
            f"data.dataset={a.dataset}",
            f"data.limit={a.limit}",
            f"run.out={out}",
            "run.resume=true",
            f"teacher.epochs={a.teacher_epochs}",
            "teacher.batch_size=64",
            "teacher.precision=auto",
            f"distill.views={a.views}",
        ]
    )
    if not logits.is_file():
        run_teacher(cfg, save_logits=str(logits))
    return logits, out / "teacher.keras"


def int8_accuracy(qat_path: Path, data) -> dict:
    """Full-int8 .tflite of a QAT model, scored on LiteRT over the whole test split."""
    from kdq_tf.deploy.convert import to_tflite
    from kdq_tf.device.micro import find_arena_size
    from kdq_tf.distill.qat import load_qat_model
    from kdq_tf.report import classification_metrics
    from kdq_tf.runtime.runner import Runner

    blob = to_tflite(load_qat_model(qat_path), "int8")
    pred = (
        Runner.from_bytes(blob).predict_logits(data.info.preprocess.apply(data.x_test)).argmax(-1)
    )
    m = classification_metrics(data.y_test, pred, data.info.num_classes)
    return {
        "accuracy": m.accuracy,
        "f1": m.f1,
        "tflite_bytes": len(blob),
        "arena_bytes": find_arena_size(blob),
        "blob": blob,
    }


def distill_run(
    a,
    out: Path,
    logits: Path,
    seed: int = 0,
    views: int = 0,
    qat=False,
    baseline=False,
    augment=False,
    erase: float = 0.0,
    guidance="cached",
    sets=(),
    twin_only=False,
    **kw,
) -> dict:
    """One `kdq_tf distill` run in `out` (resumable); `sets`: more config settings.
    `twin_only`: the scratch twin alone (kdq_tf.pipeline.run_twin), without distillation."""
    from kdq_tf import load_config, run_distill
    from kdq_tf.pipeline import run_twin

    sets = [*student_sets(a, **kw), *sets] + [
        f"run.out={out}",
        f"run.seed={seed}",
        f"teacher.logits={logits}",
        f"distill.views={views}",
        f"qat.enabled={qat}",
        f"distill.baseline={baseline}",
        f"data.augment={augment}",
        f"data.erase={erase}",
        f"distill.guidance={guidance}",
    ]
    _, m = (run_twin if twin_only else run_distill)(load_config(sets=sets))
    return m


def sweep(a, work: Path, logits: Path) -> dict:
    """T, lambda, then K views or none, on the validation split (seed 0, float students,
    `a.sweep_epochs`): never the test set.

    Views against none is part of the sweep because it decides the regime: augmented
    views fight over-fitting, un-augmented cached logits let the teacher do it.
    """
    rows = []

    def run(t, lam, views):
        name = f"T{t:g}_lam{lam:g}" + ("" if views == a.views else f"_views{views}")
        m = distill_run(
            a,
            work / "sweep" / name,
            logits,
            views=views,
            epochs=a.sweep_epochs,
            temperature=t,
            lam=lam,
            erase=a.view_erase if views else 0.0,
        )
        rows.append(
            {
                "temperature": t,
                "lam": lam,
                "views": views,
                "val_accuracy": m["student"]["val_accuracy"],
                "epochs": a.sweep_epochs,
            }
        )
        log.info("sweep %s: val %.4f", name, rows[-1]["val_accuracy"])
        return rows[-1]["val_accuracy"]

    best_t = max(a.sweep_t, key=lambda t: run(t, a.lam, a.views))
    lams = [v for v in a.sweep_lam if v != a.lam]
    scores = {a.lam: max(r["val_accuracy"] for r in rows if r["temperature"] == best_t)}
    scores.update({lam: run(best_t, lam, a.views) for lam in lams})
    best_lam = max(scores, key=scores.get)
    best_views = a.views
    if a.views:
        best_views = max(
            (a.views, 0),
            key=lambda v: scores[best_lam] if v == a.views else run(best_t, best_lam, 0),
        )
    return {
        "rows": rows,
        "best": {"temperature": best_t, "lam": best_lam, "views": best_views},
        "split": "val",
        "seed": 0,
    }


def seeds(a, work: Path, logits: Path, t: float, lam: float, views: int) -> dict:
    """Per seed: the distilled student (K views, or none) and its scratch twin (same augmentation),
    both QAT, int8."""
    from kdq_tf import load_config
    from kdq_tf.data.dataset import load_dataset

    rows = {k: [] for k in ("scratch", "distilled", "scratch_qat_int8", "distilled_qat_int8")}
    curves = {}
    for seed in range(a.seeds):
        out = work / f"seed{seed}"
        m = distill_run(
            a,
            out,
            logits,
            seed=seed,
            views=views,
            qat=True,
            baseline=True,
            erase=a.view_erase if views else 0.0,
            temperature=t,
            lam=lam,
        )
        data = load_dataset(
            load_config(sets=student_sets(a) + [f"run.seed={seed}"]).data, seed=seed
        )
        rows["scratch"].append(m["baseline"])
        rows["distilled"].append(m["student"])
        for key, f in (
            ("scratch_qat_int8", "baseline_qat.h5"),
            ("distilled_qat_int8", "student_qat.h5"),
        ):
            r = int8_accuracy(out / f, data)
            blob = r.pop("blob")
            rows[key].append({**r, "params": m["student_qat"]["params"]})
            if seed == 0 and key == "distilled_qat_int8":
                (work / "seed0_int8.tflite").write_bytes(blob)
        log.info(
            "seed %d: scratch int8 %.4f, distilled int8 %.4f",
            seed,
            rows["scratch_qat_int8"][-1]["accuracy"],
            rows["distilled_qat_int8"][-1]["accuracy"],
        )
        if seed == 0:
            curves = _curves(out)
            from kdq_tf.deploy.convert import to_tflite
            from kdq_tf.runs import load_student

            (work / "seed0_float32.tflite").write_bytes(
                to_tflite(load_student(out / "student.keras"), "float32")
            )
    return {"rows": rows, "curves": curves, "teacher": m["teacher"]}


def _curves(out: Path) -> dict:
    import csv

    curves = {}
    for stage in ("baseline", "distill", "qat", "baseline_qat"):
        path = out / f"{stage}_history.csv"
        if path.is_file():
            with open(path) as f:
                curves[stage] = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    return curves


def guidance_modes(
    a,
    work: Path,
    logits: Path,
    teacher_model: str | None,
    t: float,
    lam: float,
    teacher_sets: tuple[str, ...] = (),
) -> dict:
    """Accuracy and s/epoch on a slice: no augmentation + cached, K views cached, online
    (keras-io style).

    `teacher_model`: the teacher(s) for the online row (`teacher.path`), None to leave it out;
    `teacher_sets`: more teacher settings for it (a fused teacher's mode and weights).
    """
    rows = []
    common = dict(epochs=a.mode_epochs, limit=a.mode_limit, temperature=t, lam=lam)
    plans = [
        ("cached, no augmentation", dict(guidance="cached")),
        (f"cached, {a.views} views", dict(guidance="cached", views=a.views, erase=a.view_erase)),
    ]
    if teacher_model:
        plans.append(
            (
                "online (keras-io: teacher every step, augmented)",
                dict(guidance="online", augment=True, erase=a.view_erase, teacher=teacher_model),
            )
        )
    first = True
    for label, kw in plans:
        out = work / "modes" / label.split(",")[0].split(" ")[0] / str(kw.get("views", 0))
        teacher = kw.pop("teacher", None)
        if teacher is not None:
            m = _online_run(a, out, teacher, teacher_sets, **common, **kw)
        else:
            m = distill_run(a, out, logits, baseline=first, **common, **kw)
        s = m["student"]
        row = {
            "mode": label,
            "accuracy": s["accuracy"],
            "val_accuracy": s["val_accuracy"],
            "epoch_s": s["train_time_s"] / a.mode_epochs,
            "cache_bytes": m["guidance"]["cache_bytes"],
        }
        if first:
            row["hard_only_epoch_s"] = m["baseline"]["train_time_s"] / a.mode_epochs
            first = False
        rows.append(row)
    return {
        "rows": rows,
        "samples": a.mode_limit,
        "epochs": a.mode_epochs,
        "online_note": None
        if len(plans) == 3
        else "online needs the teacher's weights, which the repository "
        "does not keep; run with --teacher-model or TEACHER=retrain",
    }


def _online_run(a, out, teacher, teacher_sets, guidance, augment, erase, **kw):
    from kdq_tf import load_config, run_distill

    sets = student_sets(a, **kw) + [
        f"run.out={out}",
        f"teacher.path={teacher}",
        f"distill.guidance={guidance}",
        f"data.augment={augment}",
        f"data.erase={erase}",
        *teacher_sets,
    ]
    return run_distill(load_config(sets=sets))[1]


def kd_gain(a, work: Path, files: list[tuple[str, float, Path]], t: float, lam: float) -> dict:
    """KD gain against teacher accuracy, with teachers taken at several points of one run.

    Seed 0, cached guidance without augmentation for every teacher; the scratch twin is
    trained once. Gain = distilled - scratch, test accuracy of float students.
    """
    rows, scratch = [], None
    for i, (name, teacher_acc, path) in enumerate(files):
        m = distill_run(
            a,
            work / "kd_gain" / f"teacher{i:02d}",
            path,
            baseline=i == 0,
            epochs=a.gain_epochs,
            temperature=t,
            lam=lam,
        )
        if i == 0:
            scratch = m["baseline"]["accuracy"]
        rows.append(
            {
                "teacher": name,
                "teacher_accuracy": teacher_acc,
                "student_accuracy": m["student"]["accuracy"],
                "gain_pts": 100 * (m["student"]["accuracy"] - scratch),
            }
        )
        log.info("kd gain %s (teacher %.4f): %+.2f pts", name, teacher_acc, rows[-1]["gain_pts"])
    return {"rows": rows, "scratch_accuracy": scratch, "epochs": a.gain_epochs}


def scaling(a, work: Path, logits: Path) -> dict:
    """One epoch of cached distillation at 25/50/100% of a slice: seconds per epoch against data
    size."""
    from kdq_tf._keras import keras, tf
    from kdq_tf.config import DataConfig
    from kdq_tf.data.dataset import load_dataset
    from kdq_tf.distill import guidance as G
    from kdq_tf.distill.distiller import Distiller
    from kdq_tf.models.students import build_student

    data = load_dataset(DataConfig(dataset=a.dataset, batch_size=a.batch_size, limit=a.cost_limit))
    g = G.from_file(logits, data, "cached")
    points = []
    for frac in (0.25, 0.5, 1.0):
        n = int(data.info.n_train * frac)
        ds = (
            tf.data.Dataset.from_tensor_slices(
                (
                    data.info.preprocess.apply(data.x_train[:n]),
                    (data.y_train[:n], g.train_logits[:n]),
                )
            )
            .shuffle(n, seed=0)
            .batch(a.batch_size)
            .prefetch(2)
        )
        keras.utils.set_random_seed(0)
        d = Distiller(build_student(a.student, data.info.input_shape, data.info.num_classes))
        d.compile(keras.optimizers.Adam(1e-3), temperature=a.temperature)
        d.fit(ds.take(3), epochs=1, verbose=0)  # trace outside the timing
        t0 = time.perf_counter()
        d.fit(ds, epochs=1, verbose=0)
        points.append({"fraction": frac, "samples": n, "epoch_s": time.perf_counter() - t0})
    per = [p["epoch_s"] / p["samples"] for p in points]
    return {
        "points": points,
        "per_sample_ms": [1e3 * p for p in per],
        "max_over_min_per_sample": max(per) / min(per),
    }


def mean_std(values) -> dict:
    v = np.asarray(values, np.float64)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "n": len(v),
        "values": [float(x) for x in v],
    }
