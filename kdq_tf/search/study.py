"""The Optuna side of a search: the storage, the pruner, and the bookkeeping that lets a
search be killed and resumed, or shared by workers, without a candidate trained twice."""

import os
import socket
import time
from pathlib import Path

from kdq_tf.search.budget import Budget

JOURNAL = "study.journal"
PRUNERS = ("asha", "hyperband", "none")
# ASHA keeps the best third at a rung; against one or two others that is noise, so no trial is
# pruned at an epoch before this many trials have reached it.
PRUNE_AFTER = 4


def storage_for(out: str, url: str | None):
    """The journal file in the search folder, or the URL the user gave (a database shared by
    workers on several machines)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if url is None:
        return optuna.storages.JournalStorage(JournalFileBackend(str(Path(out) / JOURNAL)))
    if url.startswith("journal:"):  # a journal file elsewhere (a shared network folder)
        return optuna.storages.JournalStorage(JournalFileBackend(url.split(":", 1)[1]))
    return url  # an SQLAlchemy URL: sqlite:///..., postgresql://...


def create_or_load(name: str, storage, pruner, tries: int = 5):
    """The study, created by the first worker and loaded by the others. Two workers that start
    together on an empty database race to create Optuna's tables; the loser retries."""
    import optuna

    for attempt in range(tries):
        try:
            return optuna.create_study(
                study_name=name,
                storage=storage,
                pruner=pruner,
                direction="maximize",
                load_if_exists=True,
            )
        except Exception as e:  # sqlalchemy's IntegrityError/ProgrammingError on the schema
            if attempt == tries - 1 or not type(e).__module__.startswith("sqlalchemy"):
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def pruner(name: str):
    import optuna

    if name == "asha":  # rungs at epochs 1, 3, 9..: keep the best third at each
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def set_constraints(trial, budget: Budget, figures: dict | None) -> None:
    """One constraint per limited figure, set once per trial (Optuna ignores a second setting):
    the relative excess, > 0 when violated (TPE then steers away from it)."""
    values = budget.constraints(figures) if figures else [1.0] * len(budget.limits())
    for name, value in zip(budget.limits(), values):
        trial.set_constraint(name, value)


def process_start(pid: int) -> str | None:
    """When the process started (Linux: /proc/PID/stat field 22), to tell a reused PID from the
    process that ran a trial; None where /proc is not there."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner_attrs() -> dict:
    """What a trial records about the worker running it, for `stale`."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "pid_start": process_start(pid)}


def stale(trial) -> bool:
    """A RUNNING trial whose process (on this host) is gone: killed mid-trial."""
    if trial.user_attrs.get("host") != socket.gethostname():
        return False  # another machine's: only it knows
    pid = int(trial.user_attrs.get("pid", 0))
    if pid == os.getpid():
        return True  # this process has just started: the trial is from an earlier one
    try:
        os.kill(pid, 0)
    except (OSError, ValueError):
        return True
    started = trial.user_attrs.get("pid_start")
    return started is not None and process_start(pid) != started  # the PID was reused


def requeue_stale(study) -> list[int]:
    """Marks killed trials failed and queues their candidates again: they continue from their
    last finished epoch, since every candidate trains in its own resumable folder."""
    from optuna.trial import TrialState

    done = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if stale(t):
            study.tell(t.number, state=TrialState.FAIL)
            study.enqueue_trial(t.params, user_attrs={"requeued_from": t.number})
            done.append(t.number)
    return done


def trained(recs: list[dict]) -> int:
    """Distinct candidates trained (a candidate drawn again reuses its record)."""
    return len({r["candidate"]["key"] for r in recs if r["outcome"] != "rejected"})


def records(study, outcome: str | None = None) -> list[dict]:
    from optuna.trial import TrialState

    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        rec = t.user_attrs.get("record")
        if rec and (outcome is None or rec.get("outcome") == outcome):
            out.append(rec)
    return out


def reported(study, step: int) -> int:
    """How many trials have a score at this epoch (this one included)."""
    return sum(step in t.intermediate_values for t in study.get_trials(deepcopy=False))


def best_fitting(study, step: int) -> float | None:
    """What the best model that fits so far scored at this epoch (the fitting measured trial with
    the best int8 validation accuracy), or None when nothing fits yet."""
    from optuna.trial import TrialState

    best = None
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        rec = t.user_attrs.get("record") or {}
        if rec.get("outcome") == "measured" and rec.get("fits") and step in t.intermediate_values:
            if best is None or rec["val_accuracy"] > best[0]:
                best = (rec["val_accuracy"], t.intermediate_values[step])
    return None if best is None else best[1]


class PruneOnEpoch:
    """Reports each distillation epoch's validation accuracy and stops the trial when the pruner
    says so and it is behind the best model that fits so far at the same epoch (a Keras
    callback; built lazily so this module loads without TensorFlow).

    The pruner ranks a trial against every trial at that epoch, those over budget included. At a
    tight budget the big candidates set the bar, and ASHA would stop the small one on its way to
    being the best that fits; a trial ahead of the best fitting one at that epoch is never
    stopped. Until something fits, nothing is."""

    def __new__(cls, trial):
        import optuna

        from kdq_tf._keras import keras

        class Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                acc = (logs or {}).get("val_accuracy")
                if acc is None:
                    return
                trial.report(float(acc), epoch + 1)
                if reported(trial.study, epoch + 1) < PRUNE_AFTER or not trial.should_prune():
                    return
                best = best_fitting(trial.study, epoch + 1)
                if best is not None and acc < best:
                    raise optuna.TrialPruned(
                        f"val accuracy {acc:.4f} after epoch {epoch + 1}, behind the best that "
                        f"fits ({best:.4f} then)"
                    )

        return Callback()


def twin_record(study, key: str, number: int, poll: float = 5.0) -> dict | None:
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
            if t.user_attrs.get("record", {}).get("outcome") in ("measured", "pruned")
        ]
        if done:
            return {**done[0], "reused": True}
        if not any(t.state == TrialState.RUNNING and not stale(t) for t in twins):
            return None
        time.sleep(poll)
