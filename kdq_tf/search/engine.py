"""The search loop on an Optuna study: sample, run the trial, record, choose.

Why one objective: Optuna's pruners (ASHA, Hyperband) stop a trial from the scores it reports
per epoch, and `Trial.report` is refused in multi-objective studies. So the study maximises
validation accuracy with the budget as constraints (TPE's `constraints_func`), which lets the
pruner weed out candidates after one epoch; the accuracy/flash/instructions front is computed
afterwards from every measured trial (kdq_tf.search.front).
"""

import fcntl
import logging
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from kdq_tf import files
from kdq_tf.errors import KdqError
from kdq_tf.search import front
from kdq_tf.search.budget import Budget, fmt_bytes
from kdq_tf.search.space import SearchSpace, estimate
from kdq_tf.search.trial import TrialSchedule, estimated_figures, floors, run_trial, val_view

log = logging.getLogger(__name__)

JOURNAL = "study.journal"
PRUNERS = ("asha", "hyperband", "none")
# ASHA keeps the best third at a rung; against one or two others that is noise, so no trial is
# pruned at an epoch before this many trials have reached it.
PRUNE_AFTER = 4


@dataclass(frozen=True)
class SearchSettings:
    out: str
    budget: Budget
    teacher_logits: str
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

    def __post_init__(self):
        if self.target != "cortex-m4":
            raise KdqError(f"--target must be cortex-m4 (the emulated board), got {self.target!r}")
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
        if self.pruner not in PRUNERS:
            raise KdqError(f"--pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}")

    @property
    def kernel_sets(self) -> tuple[str, ...]:
        return self.space.kernels if self.kernels == "auto" else (self.kernels,)

    def to_dict(self) -> dict:
        return {
            "budget": self.budget.to_dict(),
            "teacher_logits": self.teacher_logits,
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
                )
            },
            "storage": "journal file" if self.storage is None else "url (not recorded)",
        }


def storage_for(s: SearchSettings):
    """The journal file in the search folder, or the URL the user gave (a database shared by
    workers on several machines)."""
    import optuna

    if s.storage is None:
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(Path(s.out) / JOURNAL)))
    if s.storage.startswith(("journal:", "file:")):
        from optuna.storages.journal import JournalFileBackend

        path = s.storage.split(":", 1)[1]
        return optuna.storages.JournalStorage(JournalFileBackend(path))
    return s.storage  # an SQLAlchemy URL: sqlite:///..., postgresql://...


def _pruner(name: str):
    import optuna

    if name == "asha":  # rungs at epochs 1, 3, 9..: keep the best third at each
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def _set_constraints(trial, budget: Budget, figures: dict | None) -> None:
    """One constraint per limited figure, set once per trial (Optuna ignores a second setting):
    the relative excess, > 0 when violated (TPE then steers away from it)."""
    values = budget.constraints(figures) if figures else [1.0] * len(budget.limits())
    for name, value in zip(budget.limits(), values):
        trial.set_constraint(name, value)


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


def _stale(trial) -> bool:
    """A RUNNING trial whose process (on this host) is gone: killed mid-trial."""
    if trial.user_attrs.get("host") != socket.gethostname():
        return False  # another machine's: only it knows
    try:
        os.kill(int(trial.user_attrs.get("pid", 0)), 0)
    except (OSError, ValueError):
        return True
    return trial.user_attrs.get("pid") == os.getpid()


def _requeue_stale(study) -> list[int]:
    """Marks killed trials failed and queues their candidates again: they continue from their
    last finished epoch, since every candidate trains in its own resumable folder."""
    from optuna.trial import TrialState

    done = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _stale(t):
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            study.enqueue_trial(t.params, user_attrs={"requeued_from": t.number})
            done.append(t.number)
    return done


def space_candidate(s: SearchSettings, trial):
    return s.space.candidate(trial.params)


def _trained(recs: list[dict]) -> int:
    """Distinct candidates trained (a candidate drawn again reuses its record)."""
    return len({r["candidate"]["key"] for r in recs if r["outcome"] != "rejected"})


def _records(study, outcome: str | None = None) -> list[dict]:
    from optuna.trial import TrialState

    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        rec = t.user_attrs.get("record")
        if rec and (outcome is None or rec.get("outcome") == outcome):
            out.append(rec)
    return out


def _reported(study, step: int) -> int:
    """How many trials have a score at this epoch (this one included)."""
    return sum(step in t.intermediate_values for t in study.get_trials(deepcopy=False))


class _PruneOnEpoch:
    """Reports each distillation epoch's validation accuracy and stops the trial when the pruner
    says so (a Keras callback; built lazily so this module loads without TensorFlow)."""

    def __new__(cls, trial):
        import optuna

        from kdq_tf._keras import keras

        class Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                acc = (logs or {}).get("val_accuracy")
                if acc is None:
                    return
                trial.report(float(acc), epoch + 1)
                if _reported(trial.study, epoch + 1) >= PRUNE_AFTER and trial.should_prune():
                    raise optuna.TrialPruned(f"val accuracy {acc:.4f} after epoch {epoch + 1}")

        return Callback()


def _line(n: int, rec: dict, budget: Budget) -> str:
    c = rec["candidate"]["key"]
    if rec["outcome"] == "rejected":
        over = ", ".join(f"{k} over by {fmt_bytes(v)}" for k, v in rec["over_budget_by"].items())
        return f"trial {n} {c}: rejected before training (estimate: {over})"
    if rec["outcome"] == "failed":
        return f"trial {n} {c}: failed ({rec['why']})"
    if rec["outcome"] == "pruned":
        return f"trial {n} {c}: pruned ({rec['why']}, {rec['seconds']:.0f} s)"
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
    return (
        f"trial {n} {c} [{rec['kernels']}]: val int8 {100 * rec['val_accuracy']:.2f}%, "
        f"flash {fmt_bytes(f['flash'])}, RAM {fmt_bytes(f['ram'])}, {instr}, "
        f"bit-exact {rec['bit_exact']}: {verdict} ({rec['seconds']:.0f} s)"
    )


def run_search(s: SearchSettings) -> dict:
    """Runs (or continues) the search; writes trials.json, pareto.json/.md, search.png and,
    when a candidate fits, the chosen model's export and firmware. Returns the summary."""
    import optuna

    from kdq_tf.data.dataset import load_dataset

    data = val_view(load_dataset(_data_config(s), seed=s.seed))
    prepare(s)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=s.study_name,
        storage=storage_for(s),
        pruner=_pruner(s.pruner),
        direction="maximize",
        load_if_exists=True,
    )
    # Seeded by the history too: a resumed or joining worker draws new candidates instead of
    # replaying the first worker's draws (which would only find records to reuse).
    with warnings.catch_warnings():  # multivariate TPE is "experimental" since Optuna 2.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.sampler = optuna.samplers.TPESampler(
            seed=s.seed + len(study.trials), n_startup_trials=6, multivariate=True
        )
    if s.resume:
        requeued = _requeue_stale(study)
        if requeued:
            log.info(
                "resuming: trial(s) %s were cut off; their candidates run again from their "
                "last finished epoch",
                ", ".join(map(str, requeued)),
            )
    space_size = s.space.size()
    t0 = time.time()

    def objective(trial):
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        params = {k: trial.suggest_categorical(k, v) for k, v in s.space.choices().items()}
        c = s.space.candidate(params)
        trial.set_user_attr("key", c.key)
        measured = _records(study, "measured")
        rec = _twin_record(study, c.key, trial.number) or _run_locked(c, s, data, measured, trial)
        rec["trial"] = trial.number
        files.write_json(Path(s.out) / "trials" / f"{trial.number:04d}.json", rec)
        trial.set_user_attr("record", rec)
        log.info("%s", _line(trial.number, rec, s.budget))
        if rec["outcome"] == "measured":
            exact = rec["images"][rec["kernels"]]["exact"]  # not bit-exact: never feasible
            _set_constraints(trial, s.budget, rec["figures"] if exact else None)
            return rec["val_accuracy"]
        # Rejected or pruned: what the estimate (a lower bound) says is all that is known.
        est = estimate(space_candidate(s, trial), data.info.input_shape, data.info.num_classes)
        _set_constraints(
            trial,
            s.budget,
            estimated_figures(space_candidate(s, trial), est, s.kernel_sets, floors(measured)),
        )
        raise optuna.TrialPruned(rec["outcome"])

    def enough() -> bool:
        recs = _records(study)
        seen = {r["candidate"]["key"] for r in recs}
        return (s.trials is not None and _trained(recs) >= s.trials) or len(seen) >= space_size

    def stop(study, _trial):
        if enough():
            study.stop()

    if not enough():  # --resume of a search that already ran its trials: just report
        study.optimize(objective, timeout=s.time_limit, callbacks=[stop], gc_after_trial=True)
    wall = time.time() - t0
    return finish(s, study, data, wall)


def _twin_record(study, key: str, number: int, poll: float = 5.0) -> dict | None:
    """The record of an earlier trial of the same candidate in the study, waiting for it if it
    still runs (on another worker, maybe another machine): a candidate trains once per study.
    Only earlier trials are waited for, so two workers never wait for each other."""
    from optuna.trial import TrialState

    while True:
        twins = [
            t
            for t in study.get_trials(deepcopy=False)
            if t.number < number and t.user_attrs.get("key") == key
        ]
        done = [
            t.user_attrs["record"]
            for t in twins
            if t.user_attrs.get("record", {}).get("outcome") not in (None, "rejected")
        ]
        if done:
            return {**done[0], "reused": True}
        if not any(t.state == TrialState.RUNNING and not _stale(t) for t in twins):
            return None
        time.sleep(poll)


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
            rec = run_trial(c, s, s.schedule, data, measured, callbacks=[_PruneOnEpoch(trial)])
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
        else:
            (folder / ".lock").unlink(missing_ok=True)
        return rec


def _data_config(s: SearchSettings):
    """The data section every trial's run uses (batch size included: the loaded data set's
    pipelines batch with it)."""
    from kdq_tf.search.trial import trial_config

    return trial_config(0, Path(s.out), Path(s.out), s, s.schedule).data


def finish(s: SearchSettings, study, data, wall: float) -> dict:
    """Writes the search's results; exports the chosen model when one fits."""
    recs = sorted(_records(study), key=lambda r: r["trial"])
    measured = [r for r in recs if r["outcome"] == "measured"]
    chosen = front.choose(measured)
    summary = {
        "budget": s.budget.to_dict(),
        "trials": len(recs),
        "trained": _trained(recs),
        "rejected_before_training": sum(r["outcome"] == "rejected" for r in recs),
        "pruned": sum(r["outcome"] == "pruned" for r in recs),
        "failed": sum(r["outcome"] == "failed" for r in recs),
        "measured": len(measured),
        "fit": sum(bool(r.get("fits")) for r in measured),
        "wall_time_s": round(wall, 1),
        "pareto": front.pareto(measured),
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
    from kdq_tf.search.trial import build_and_run

    out = Path(s.out)
    run_dir = out / rec["run_dir"]
    rep = run_export(run_dir, out / "chosen" / "export", overrides={"export.name": "model"})
    src = run_dir.parent / rec["images"][rec["kernels"]]["firmware"]
    fw = out / "chosen" / "firmware"
    shutil.rmtree(fw, ignore_errors=True)
    shutil.copytree(src, fw, ignore=shutil.ignore_patterns("build"))
    dev = build_and_run(fw, s.target, rec["kernels"], s.tflm)
    return {
        "run_dir": rec["run_dir"],
        "export": "chosen/export",
        "firmware": "chosen/firmware",
        "test_accuracy_int8": rep["test_accuracy_litert"],
        "bit_exact": f"{dev['bit_exact']}/{dev['samples']}",
        "ram_bytes": dev["memory"]["ram_bytes"],
        "kernels": rec["kernels"],
    }
