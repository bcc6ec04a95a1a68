"""The final rung's picks and schedule (kdq_tf.search.rung), on hand-made records."""

from kdq_tf.search import rung
from kdq_tf.search.space import Candidate, SearchSpace
from kdq_tf.search.trial import TrialSchedule


def rec(key, val, flash, fits=True, trial=0):
    return {
        "candidate": {"key": key},
        "val_accuracy": val,
        "figures": {"flash": flash, "ram": 1, "instructions": 5},
        "fits": fits,
        "trial": trial,
    }


def test_finalists_are_the_best_fitting_candidates_each_once():
    measured = [
        rec("a", 0.90, 100),
        rec("b", 0.93, 100, fits=False),  # the most accurate, but over budget
        rec("c", 0.92, 120),
        rec("c", 0.92, 120, trial=7),  # drawn again: one candidate, one finalist
        rec("d", 0.92, 110),  # as accurate as c, smaller flash: ahead of it
        rec("e", 0.80, 50),
    ]
    picks = rung.finalists(measured, 3)
    assert [r["candidate"]["key"] for r in picks] == ["d", "c", "a"]
    assert picks[1]["trial"] == 0
    assert [r["candidate"]["key"] for r in rung.finalists(measured, 10)] == ["d", "c", "a", "e"]
    assert rung.finalists([rec("b", 0.9, 1, fits=False)], 3) == []


def test_a_records_candidate_is_rebuilt_exactly():
    space = SearchSpace()
    c = Candidate(0.75, 6, "hybrid", 5, (0, 2), "lut16", space.stage_widths)
    assert space.candidate(rung.params_of(c.to_dict())) == c


def test_final_schedule_is_longer_and_keeps_the_searchs_rates():
    short = TrialSchedule(epochs=3, qat_epochs=1, structure_epochs=1, lr=0.004, temperature=4.0)
    long = rung.final_schedule(short, 12, 2)
    assert (long.epochs, long.qat_epochs, long.structure_epochs) == (12, 2, 2)
    assert (long.lr, long.temperature, long.lam, long.batch_size) == (0.004, 4.0, 0.5, 128)


def _measured(c, val, trial):
    return {
        "candidate": c.to_dict(),
        "val_accuracy": val,
        "figures": {"flash": 100, "ram": 1, "instructions": 5},
        "fits": True,
        "trial": trial,
    }


def test_the_rung_trains_each_finalist_once_and_survives_a_failure(tmp_path, monkeypatch):
    import fcntl
    from types import SimpleNamespace

    import pytest

    from kdq_tf.errors import KdqError

    space = SearchSpace()
    a = Candidate(0.5, 4, "plain", 3, (1, 3), "none", space.stage_widths)
    b = Candidate(0.75, 4, "plain", 3, (1, 3), "none", space.stage_widths)
    measured = [_measured(a, 0.90, 1), _measured(b, 0.91, 2)]
    s = SimpleNamespace(out=str(tmp_path), finalists=2, space=space, schedule=TrialSchedule())
    sched = rung.final_schedule(s.schedule, 12, 2)
    trained = []

    def fake_train(s, sched, data, c, folder):
        trained.append(c.key)
        if c == b:
            raise KdqError("the firmware did not build")
        return {
            "outcome": "measured",
            "candidate": c.to_dict(),
            "val_accuracy": 0.93,
            "figures": {"flash": 100, "ram": 1, "instructions": 5},
            "fits": True,
            "kernels": "cmsis-nn",
        }

    monkeypatch.setattr(rung, "_train", fake_train)
    out = rung.run_rung(s, sched, None, measured)
    assert trained == [b.key, a.key]  # b first: more accurate in the search
    assert [r["candidate"]["key"] for r in out] == [a.key]  # b failed: left out, not fatal
    assert out[0]["search_val_accuracy"] == 0.90 and out[0]["schedule"] == vars(sched)
    assert rung.run_rung(s, sched, None, measured) == out and len(trained) == 2  # read back
    # another worker holds a's lock: a non-blocking pass leaves it for later
    with open(tmp_path / "final" / a.key / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert rung._finalist(s, sched, None, measured[0], "1/2", blocking=False) is None
    # a finalist trained on another final schedule is not reused in silence
    with pytest.raises(KdqError, match="another final schedule"):
        rung.run_rung(s, rung.final_schedule(s.schedule, 20, 2), None, measured)
