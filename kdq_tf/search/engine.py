"""The search loop on an Optuna study: sample, run the trial, record, choose.

Why one objective: Optuna's pruners (ASHA, Hyperband) stop a trial from the scores it reports
per epoch, and `Trial.report` is refused in multi-objective studies. So the study maximises
validation accuracy with the budget as constraints (TPE's `constraints_func`), which lets the
pruner weed out candidates after one epoch; the accuracy/flash/instructions front is computed
afterwards from every measured trial (kdq_tf.search.front).
"""

import dataclasses
import fcntl
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from kdq_tf import files
from kdq_tf.device.targets import CORTEX_M
from kdq_tf.errors import KdqError
from kdq_tf.search import front
from kdq_tf.search import study as S
from kdq_tf.search.budget import Budget, fmt_bytes
from kdq_tf.search.rung import final_schedule, run_rung
from kdq_tf.search.space import SearchSpace, estimate
from kdq_tf.search.trial import TrialSchedule, estimated_figures, floors, run_trial, val_view

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchSettings:
    out: str
    budget: Budget
    teacher_logits: str | None = None  # a logits file (kdq_tf teacher --save-logits)
    teacher: str | None = None  # or a teacher model / run folder, run once into the search folder
    space: SearchSpace = field(default_factory=SearchSpace)
    schedule: TrialSchedule = field(default_factory=TrialSchedule)
    target: str = "cortex-m4"
    kernels: str = "auto"  # cmsis-nn | reference | auto (every set the space lists)
    trials: int | None = 20  # trained candidates (rejected ones are free and not counted)
    time_limit: float | None = None  # seconds; no new trial starts after it
    seed: int = 0
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    limit: int | None = None
    val_split: float = 0.1
    tflm: str | None = None
    storage: str | None = None  # an Optuna storage URL; None: the journal file in `out`
    study_name: str = "kdq_tf_search"
    pruner: str = "asha"
    resume: bool = False
    finalize: bool = True  # export the chosen model with its firmware, score the test split
    # The final rung (kdq_tf.search.rung): the best fitting candidates, trained again for
    # final_epochs + final_qat_epochs after the search; 0 ships the search's own pick.
    finalists: int = 3
    final_epochs: int = 12
    final_qat_epochs: int = 2

    def __post_init__(self):
        if (self.teacher_logits is None) == (self.teacher is None):
            raise KdqError("give the teacher as --teacher-logits FILE.npz or --teacher PATH")
        if self.target not in CORTEX_M:  # every image is measured on an emulated board
            raise KdqError(f"--target must be one of {', '.join(CORTEX_M)}, got {self.target!r}")
        if self.kernels not in ("auto", "cmsis-nn", "reference"):
            raise KdqError(f"--kernels must be cmsis-nn, reference or auto, got {self.kernels!r}")
        if self.kernels != "auto" and self.kernels not in self.space.kernels:
            raise KdqError(
                f"--kernels {self.kernels} is not in the space's kernels "
                f"({', '.join(self.space.kernels)})"
            )
        if self.trials is None and self.time_limit is None:
            raise KdqError("give --trials N or --time-limit, or both")
        if self.trials is not None and self.trials < 1:
            raise KdqError(f"--trials must be >= 1, got {self.trials}")
        if self.time_limit is not None and self.time_limit <= 0:
            raise KdqError(f"--time-limit must be > 0, got {self.time_limit}")
        if self.finalists < 0:
            raise KdqError(f"--finalists must be >= 0, got {self.finalists}")
        if self.final_epochs < 1 or self.final_qat_epochs < 1:
            raise KdqError(
                "--final-epochs and --final-qat-epochs must be >= 1, got "
                f"{self.final_epochs} and {self.final_qat_epochs}"
            )
        if self.pruner not in S.PRUNERS:
            raise KdqError(f"--pruner must be one of {', '.join(S.PRUNERS)}, got {self.pruner!r}")

    @property
    def kernel_sets(self) -> tuple[str, ...]:
        return self.space.kernels if self.kernels == "auto" else (self.kernels,)

    def to_dict(self) -> dict:
        return {
            "budget": self.budget.to_dict(),
            "teacher_logits": self.teacher_logits,
            "teacher": self.teacher,
            "space": self.space.to_dict(),
            "schedule": vars(self.schedule),
            **{
                k: getattr(self, k)
                for k in (
                    "target",
                    "kernels",
                    "trials",
                    "time_limit",
                    "seed",
                    "dataset",
                    "limit",
                    "val_split",
                    "study_name",
                    "pruner",
                    "finalists",
                    "final_epochs",
                    "final_qat_epochs",
                )
            },
            "storage": "journal file" if self.storage is None else "url (not recorded)",
        }


def prepare(s: SearchSettings) -> None:
    """Checks the folder: a new search, or --resume of the one there (its settings must match)."""
    out = Path(s.out)
    saved = files.read_json(out / "search.json") if (out / "search.json").is_file() else None
    if saved and not s.resume:
        raise KdqError(
            f"{out} already holds a search; pass --resume to continue it, or choose another --out"
        )
    if saved and saved["settings"]["space"] != s.space.to_dict():
        raise KdqError(
            f"{out} holds a search over another space; --resume needs the same "
            "--space, or choose another --out"
        )
    if out.exists() and not out.is_dir():
        raise KdqError(f"--out {out} is an existing file; pass a folder")
    out.mkdir(parents=True, exist_ok=True)
    files.write_json(out / "search.json", {"settings": s.to_dict()})


def _line(n: int, rec: dict, budget: Budget) -> str:
    c = rec["candidate"]["key"]
    if rec["outcome"] == "rejected":
        over = ", ".join(f"{k} over by {fmt_bytes(v)}" for k, v in rec["over_budget_by"].items())
        return f"trial {n} {c}: rejected before training (estimate: {over})"
    if rec["outcome"] == "failed":
        return f"trial {n} {c}: failed ({rec['why']})"
    if rec["outcome"] == "pruned":
        took = "drawn again" if rec.get("reused") else f"{rec['seconds']:.0f} s"
        return f"trial {n} {c}: pruned ({rec['why']}, {took})"
    f = rec["figures"]
    instr = f"{f['instructions'] / 1e6:.2f} M instr" if f["instructions"] else "? instr"
    verdict = (
        "fits"
        if rec["fits"]
        else "over: "
        + ", ".join(
            f"{k} +{fmt_bytes(v) if k != 'instructions' else f'{v / 1e6:.2f} M'}"
            for k, v in rec["misses"].items()
            if v > 0
        )
    )
    took = "drawn again: its record reused" if rec.get("reused") else f"{rec['seconds']:.0f} s"
    return (
        f"trial {n} {c} [{rec['kernels']}]: val int8 {100 * rec['val_accuracy']:.2f}%, "
        f"flash {fmt_bytes(f['flash'])}, RAM {fmt_bytes(f['ram'])}, {instr}, "
        f"bit-exact {rec['bit_exact']}: {verdict} ({took})"
    )


def run_search(s: SearchSettings) -> dict:
    """Runs (or continues) the search; writes trials.json, pareto.json/.md, search.png and,
    when a candidate fits, the chosen model's export and firmware. Returns the summary."""
    import optuna

    from kdq_tf.data.dataset import load_dataset

    full = load_dataset(_data_config(s), seed=s.seed)
    data = val_view(full)
    prepare(s)
    if s.teacher:  # a model or a run folder: its logits, once, into the search folder
        s = dataclasses.replace(s, teacher_logits=str(teacher_logits_file(s, full)), teacher=None)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = S.create_or_load(s.study_name, S.storage_for(s.out, s.storage), S.pruner(s.pruner))
    # Seeded by the history too: a resumed or joining worker draws new candidates instead of
    # replaying the first worker's draws (which would only find records to reuse).
    with warnings.catch_warnings():  # multivariate TPE is "experimental" since Optuna 2.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.sampler = optuna.samplers.TPESampler(
            seed=s.seed + len(study.trials), n_startup_trials=6, multivariate=True
        )
    if s.resume:
        requeued = S.requeue_stale(study)
        if requeued:
            log.info(
                "resuming: trial(s) %s were cut off; their candidates run again from their "
                "last finished epoch",
                ", ".join(map(str, requeued)),
            )
    seeded = seed_with_zoo(study, s.space)
    if seeded:
        log.info("the zoo's %s are in the space: tried first", ", ".join(seeded))
    space_size = s.space.size()
    t0 = time.time()

    def objective(trial):
        for k, v in S.owner_attrs().items():
            trial.set_user_attr(k, v)
        params = {k: trial.suggest_categorical(k, v) for k, v in s.space.choices().items()}
        c = s.space.candidate(params)
        trial.set_user_attr("key", c.key)
        measured = S.records(study, "measured")
        rec = S.twin_record(study, c.key, trial.number) or _run_locked(c, s, data, measured, trial)
        rec["trial"] = trial.number
        files.write_json(Path(s.out) / "trials" / f"{trial.number:04d}.json", rec)
        trial.set_user_attr("record", rec)
        log.info("%s", _line(trial.number, rec, s.budget))
        if rec["outcome"] == "measured":
            exact = rec["images"][rec["kernels"]]["exact"]  # not bit-exact: never feasible
            S.set_constraints(trial, s.budget, rec["figures"] if exact else None)
            return rec["val_accuracy"]
        # Rejected or pruned: what the estimate (a lower bound) says is all that is known.
        est = estimate(c, data.info.input_shape, data.info.num_classes)
        S.set_constraints(
            trial, s.budget, estimated_figures(c, est, s.kernel_sets, floors(measured))
        )
        raise optuna.TrialPruned(rec["outcome"])

    def enough() -> bool:
        recs = S.records(study)
        seen = {r["candidate"]["key"] for r in recs}
        return (s.trials is not None and S.trained(recs) >= s.trials) or len(seen) >= space_size

    def stop(study, _trial):
        if enough():
            study.stop()

    if not enough():  # --resume of a search that already ran its trials: just report
        study.optimize(objective, timeout=s.time_limit, callbacks=[stop], gc_after_trial=True)
    wall = time.time() - t0
    return finish(s, study, data, wall)


def seed_with_zoo(study, space) -> list[str]:
    """Queues the zoo's students that the space holds and the study has not tried (a fresh
    search, or a resumed one from before seeding): Optuna runs queued trials before sampling.
    Returns their names."""
    tried = {t.user_attrs.get("key") for t in study.trials}
    names = []
    for name, params in space.zoo_seeds():
        if space.candidate(params).key not in tried:
            before = len(study.trials)
            study.enqueue_trial(params, user_attrs={"zoo": name}, skip_if_exists=True)
            if len(study.trials) > before:  # not already waiting in the queue
                names.append(name)
    return names


def teacher_logits_file(s: SearchSettings, data) -> Path:
    """Runs the teacher (`--teacher`: a .keras model, a teacher run folder, or several fused)
    once over the data and writes its logits into the search folder, with their provenance;
    every trial then distills from the file. Kept on --resume."""
    from kdq_tf.config import load_config
    from kdq_tf.runs import val_accuracy
    from kdq_tf.teacher.stage import load_user_teacher, write_logits_file

    path = Path(s.out) / "teacher_logits.npz"
    if path.is_file():
        return path
    cfg = load_config(
        overrides={
            **{f"data.{k}": v for k, v in vars(_data_config(s)).items()},
            "teacher.path": s.teacher,
            "run.seed": s.seed,
        }
    )
    teacher, _ = load_user_teacher(cfg, data)
    metrics = {"val_accuracy": val_accuracy(teacher, data)}  # selection data only
    write_logits_file(cfg, data, teacher, metrics, path)
    return path


def _run_locked(c, s: SearchSettings, data, measured, trial) -> dict:
    """Runs the candidate, or reuses its record: two trials (two workers, or the sampler
    drawing a candidate again) never train the same candidate twice."""
    import optuna

    folder = Path(s.out) / "trials" / c.key
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = folder / "record.json"
        if done.is_file():
            rec = files.read_json(done)
            rec["reused"] = True
            return rec
        t0 = time.perf_counter()
        try:
            rec = run_trial(c, s, s.schedule, data, measured, callbacks=[S.PruneOnEpoch(trial)])
        except KdqError as e:  # one candidate's failure is a result, not the search's end
            log.warning("candidate %s failed: %s", c.key, e)
            return {
                "candidate": c.to_dict(),
                "outcome": "failed",
                "why": str(e),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        except optuna.TrialPruned as e:
            rec = {
                "candidate": c.to_dict(),
                "outcome": "pruned",
                "why": str(e),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        if rec["outcome"] != "rejected":
            files.write_json(done, rec)
        else:  # nothing trained: leave no folder behind
            (folder / ".lock").unlink(missing_ok=True)
            if not any(folder.iterdir()):
                folder.rmdir()
        return rec


def _data_config(s: SearchSettings):
    """The data section every trial's run uses (batch size included: the loaded data set's
    pipelines batch with it)."""
    from kdq_tf.search.trial import trial_config

    return trial_config(0, Path(s.out), Path(s.out), s, s.schedule).data


def finish(s: SearchSettings, study, data, wall: float) -> dict:
    """Writes the search's results; exports the chosen model when one fits."""
    recs = sorted(S.records(study), key=lambda r: r["trial"])
    # A candidate drawn again reuses its record: count and rank each candidate once.
    rank = {"measured": 0, "pruned": 1, "failed": 2, "rejected": 3}
    first: dict[str, dict] = {}
    for r in recs:
        key = r["candidate"]["key"]
        if key not in first or rank[r["outcome"]] < rank[first[key]["outcome"]]:
            first[key] = r
    measured = [r for r in first.values() if r["outcome"] == "measured"]
    t0 = time.time()
    rung = []
    if s.finalists and front.choose(measured):
        sched = final_schedule(s.schedule, s.final_epochs, s.final_qat_epochs)
        rung = run_rung(s, sched, data, measured)
    # a finalist that no longer fits (its instructions crept over) is not shipped
    chosen = front.choose(rung) or front.choose(measured)
    wall += time.time() - t0
    summary = {
        "budget": s.budget.to_dict(),
        "trials": len(recs),
        "trained": S.trained(recs),
        "rejected_before_training": sum(r["outcome"] == "rejected" for r in recs),
        "pruned": sum(r["outcome"] == "pruned" for r in first.values()),
        "failed": sum(r["outcome"] == "failed" for r in first.values()),
        "measured": len(measured),
        "fit": sum(bool(r.get("fits")) for r in measured),
        "wall_time_s": round(wall, 1),
        "pareto": front.pareto(measured),
        "final_rung": [
            {**front.row(r), "search_val_accuracy": r["search_val_accuracy"], "fits": r["fits"]}
            for r in rung
        ],
        "chosen": chosen,
        "closest": None if chosen else front.closest(recs, s.budget),
    }
    out = Path(s.out)
    files.write_json(out / "trials.json", recs)
    if chosen and s.finalize:
        summary["chosen_export"] = finalize(s, chosen)
    files.write_json(out / "pareto.json", summary)
    files.write_text(out / "pareto.md", front.markdown(summary, s.budget))
    front.plot(measured, s.budget, out / "search.png")
    return summary


def finalize(s: SearchSettings, rec: dict) -> dict:
    """The chosen model, exported from its run folder (this is where the test split is scored,
    once), and its measured firmware, copied to `chosen/firmware`, built and run again there."""
    import shutil

    from kdq_tf.deploy.export import run_export
    from kdq_tf.device import profile as device_profile
    from kdq_tf.search.trial import DECODE_VARIANT, build_and_run, kernel_set

    out = Path(s.out)
    run_dir = out / rec["run_dir"]
    # The export's C arrays are the chosen image's model: fused, or with TFLM's DECODE.
    fuse_lut = not rec["kernels"].endswith(DECODE_VARIANT)
    rep = run_export(
        run_dir,
        out / "chosen" / "export",
        overrides={"export.name": "model", "export.fuse_lut": fuse_lut},
    )
    src = run_dir.parent / rec["images"][rec["kernels"]]["firmware"]
    fw = out / "chosen" / "firmware"
    shutil.rmtree(fw, ignore_errors=True)
    shutil.copytree(src, fw, ignore=shutil.ignore_patterns("build"))
    dev = build_and_run(fw, s.target, kernel_set(rec["kernels"]), s.tflm)
    # Where its instructions go: the per-operator profile, beside the firmware. A failure here
    # costs the profile, not the search's results.
    try:
        device_profile.write(
            fw, device_profile.profile(fw, s.target, kernel_set(rec["kernels"]), s.tflm)
        )
    except KdqError as e:
        log.warning("no per-operator profile of the chosen firmware: %s", e)
    return {
        "run_dir": rec["run_dir"],
        "export": "chosen/export",
        "firmware": "chosen/firmware",
        "profile": "chosen/firmware/profile.md" if (fw / "profile.md").is_file() else None,
        "test_accuracy_int8": rep["test_accuracy_litert"],
        "bit_exact": f"{dev['bit_exact']}/{dev['samples']}",
        "ram_bytes": dev["memory"]["ram_bytes"],
        "kernels": rec["kernels"],
    }
