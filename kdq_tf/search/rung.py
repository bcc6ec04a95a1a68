"""The final rung: the search's most accurate fitting candidates, trained again on a long schedule.

Why: the search ranks candidates on a short schedule (3 epochs by default), which is what makes a
hundred candidates affordable on 2 cores. But a short schedule favours the models that learn
fast, not the ones that end best, and the model a user deploys should have the long schedule
anyway. So the K best fitting candidates (validation accuracy of the int8 model) are distilled
again from scratch with the final schedule, each in its own resumable folder, and measured on
the firmware again; the chosen model is the best of them, still on the validation split.

What a finalist's record holds is what a trial's holds (kdq_tf.search.trial.measure_student),
plus "rung": "final" and the short schedule's "search_val_accuracy".
"""

import fcntl
import logging
from pathlib import Path

from kdq_tf import files
from kdq_tf.errors import KdqError
from kdq_tf.search import front
from kdq_tf.search.space import build_model
from kdq_tf.search.trial import TrialSchedule, measure_student

log = logging.getLogger(__name__)


def final_schedule(short: TrialSchedule, epochs: int, qat_epochs: int) -> TrialSchedule:
    """The long schedule: `epochs` of distillation, `qat_epochs` of QAT, two of clustering; the
    rest (rates, batch, temperature, lambda) as the search's."""
    return TrialSchedule(
        epochs=epochs,
        qat_epochs=qat_epochs,
        structure_epochs=max(2, short.structure_epochs),
        lr=short.lr,
        qat_lr=short.qat_lr,
        batch_size=short.batch_size,
        temperature=short.temperature,
        lam=short.lam,
    )


def finalists(measured: list[dict], k: int) -> list[dict]:
    """The k fitting records that `front.choose` would take first, one per candidate."""
    out: dict[str, dict] = {}
    for r in front.ranked(measured):
        out.setdefault(r["candidate"]["key"], r)
    return list(out.values())[:k]


def params_of(candidate: dict) -> dict:
    """A record's candidate as the space's (Optuna) parameters."""
    keys = ("width", "blocks", "block", "kernel", "compression")
    return {**{k: candidate[k] for k in keys}, "stride2": "-".join(map(str, candidate["stride2"]))}


def run_rung(s, sched: TrialSchedule, data, measured: list[dict]) -> list[dict]:
    """Trains and measures the `s.finalists` best fitting candidates on `sched`. Resumable, and
    shared by workers: each finalist trains once, under its lock, and a worker that finds one
    taken goes on to the next and reads its record back at the end. A finalist that fails
    (a firmware build, say) is left out with a warning. Returns the records, the fitting ones
    best first."""
    picks = finalists(measured, s.finalists)
    recs: dict[str, dict] = {}
    for blocking in (False, True):  # first the free finalists, then wait for the others
        for i, r in enumerate(picks, 1):
            key = r["candidate"]["key"]
            if key not in recs:
                rec = _finalist(s, sched, data, r, f"{i}/{len(picks)}", blocking)
                if rec is not None:
                    recs[key] = rec
    out = [recs[r["candidate"]["key"]] for r in picks if r["candidate"]["key"] in recs]
    out = [r for r in out if r.get("outcome") == "measured"]
    return front.ranked(out) + [r for r in out if not r.get("fits")]


def _finalist(s, sched: TrialSchedule, data, r: dict, which: str, blocking: bool):
    """One finalist's record: read back, or trained now. None when another worker holds it
    (and `blocking` is False)."""
    c = s.space.candidate(params_of(r["candidate"]))
    folder = Path(s.out) / "final" / c.key
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            return None
        done = folder / "record.json"
        if done.is_file():
            rec = files.read_json(done)
            if rec.get("schedule") != vars(sched):
                raise KdqError(
                    f"{folder} holds a finalist trained on another final schedule "
                    f"({rec.get('schedule')}); resume with the same --final-epochs and "
                    "--final-qat-epochs, or choose another --out"
                )
        else:
            log.info(
                "final rung %s: %s (val int8 %.2f%% after %d epochs), %d epochs now",
                which,
                c.key,
                100 * r["val_accuracy"],
                s.schedule.epochs,
                sched.epochs,
            )
            try:
                rec = _train(s, sched, data, c, folder)
            except KdqError as e:  # one finalist's failure is a result, not the search's end
                log.warning("finalist %s failed: %s", c.key, e)
                rec = {"candidate": c.to_dict(), "outcome": "failed", "why": str(e)}
            rec.update(trial=r["trial"], search_val_accuracy=r["val_accuracy"])
            rec["schedule"] = vars(sched)
            files.write_json(done, rec)
    if rec.get("outcome") == "measured":
        log.info(
            "final rung %s [%s]: val int8 %.2f%% (search %.2f%%), %s",
            c.key,
            rec["kernels"],
            100 * rec["val_accuracy"],
            100 * rec["search_val_accuracy"],
            "fits" if rec["fits"] else "no longer fits",
        )
    return rec


def _train(s, sched: TrialSchedule, data, c, folder: Path) -> dict:
    info = data.info
    rec = measure_student(
        lambda: build_model(c, info.input_shape, info.num_classes),
        c.clusters,
        folder,
        s,
        sched,
        data,
    )
    rec.update(
        candidate=c.to_dict(),
        rung="final",
        run_dir=str((folder / "run").relative_to(Path(s.out))),
    )
    return rec
