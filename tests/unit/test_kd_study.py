"""benchmarks/kd_study.py's plan and tables, on hand-made run records."""

import importlib.util
import json
import os
from types import SimpleNamespace

import pytest
from conftest import ROOT

spec = importlib.util.spec_from_file_location("kd_study", ROOT / "benchmarks" / "kd_study.py")
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)


def test_plan_trains_small_cnns_kl_run_once_for_both_parts():
    assert study.plan(["sizes"]) == [  # those with a target first
        ("tiny_cnn", "kl", True),
        ("small_cnn", "kl", True),
        ("ds_cnn", "kl", True),
    ]
    both = study.plan(["sizes", "losses"])
    assert both.count(("small_cnn", "kl", True)) == 1 and len(both) == 5
    # the losses part alone still trains KL's twin, so that sizes can reuse the run
    assert study.plan(["losses"]) == [
        ("small_cnn", "kl", True),
        ("small_cnn", "dist", False),
        ("small_cnn", "dkd", False),
    ]


def test_schedule_is_the_full_benchmarks_with_its_validation_choice():
    full = {
        "settings": {"epochs": 12, "qat_epochs": 2, "lr": 0.002, "batch_size": 128, "lam": 0.9},
        "sweep": {"best": {"temperature": 2.0, "lam": 0.5, "views": 0}},
    }
    s = study.schedule(full)
    assert s == {
        "epochs": 12,
        "qat_epochs": 2,
        "lr": 0.002,
        "batch_size": 128,
        "temperature": 2.0,
        "lam": 0.5,  # the sweep's, not the sweep's starting point
        "views": 0,
    }


def rec(kd, scratch=None, params=1000):
    r = {"distilled_int8": kd, "params": params}
    return r if scratch is None else {**r, "scratch_int8": scratch}


def test_kd_gain_against_two_stds_and_losses_against_kl():
    runs = {
        # tiny_cnn: distilled 92.0/92.2/92.4 (std 0.2), scratch 91.0 x3 (std 0): +1.2 > 0.2
        **{
            f"tiny_cnn/kl/e12v0/seed{i}": rec(kd, 0.91, 50_000)
            for i, kd in enumerate((0.920, 0.922, 0.924))
        },
        # ds_cnn: +0.1 against stds of 0.1 + 0.1: within the noise
        **{
            f"ds_cnn/kl/e12v0/seed{i}": rec(kd, sc, 22_000)
            for i, (kd, sc) in enumerate(((0.90, 0.90), (0.902, 0.901), (0.904, 0.902)))
        },
        **{f"small_cnn/kl/e12v0/seed{i}": rec(0.93, 0.92, 97_000) for i in range(3)},
        **{f"small_cnn/dist/e12v0/seed{i}": rec(0.935) for i in range(3)},
        "small_cnn/dkd/e12v0/seed0": rec(0.925),
        "small_cnn/dkd/e48v4/seed0": rec(0.99),  # another schedule: not in these tables
    }
    s = study.summarize(runs, "e12v0")
    sizes = {r["student"]: r for r in s["sizes"]}
    assert list(sizes) == ["ds_cnn", "tiny_cnn", "small_cnn"]  # by size, as SIZES
    t = sizes["tiny_cnn"]
    assert t["gain_pts"] == pytest.approx(1.2) and t["two_stds_pts"] == pytest.approx(0.2)
    assert t["beats_noise"] and not t["target_met"]  # 92.2% < 92.5%
    d = sizes["ds_cnn"]
    assert d["gain_pts"] == pytest.approx(0.1) and d["two_stds_pts"] == pytest.approx(0.3)
    assert not d["beats_noise"] and "target" not in d
    assert sizes["small_cnn"]["gain_pts"] == pytest.approx(1.0)
    losses = {r["loss"]: r for r in s["losses"]}
    assert losses["kl"]["vs_kl_pts"] == 0
    assert losses["dist"]["vs_kl_pts"] == pytest.approx(0.5)
    assert losses["dkd"]["distilled_int8"]["n"] == 1 and losses["dkd"]["vs_kl_pts"] == -0.5
    md = study.markdown({"summary": s, "schedule": {"epochs": 12}})
    assert "| tiny_cnn | 50,000 |" in md and "(gain within the noise)" in md
    assert "tiny_cnn: target 92.5% not met." in md
    # runs without a twin do not enter the KD-gain table
    assert study.summarize({"small_cnn/dist/e12v0/seed0": rec(0.9)}, "e12v0")["sizes"] == []
    # a gain that rounds to zero from below reads as none, not as "-0.00"
    tie = {"tiny_cnn/kl/e12v0/seed0": rec(0.93255, 0.9326, 50_000)}
    assert f"{study.summarize(tie, 'e12v0')['sizes'][0]['gain_pts']:+.2f}" == "+0.00"


def test_select_picks_the_best_validation_schedule_without_test(monkeypatch):
    from types import SimpleNamespace

    calls = []

    def fake_run(a, sched, student, loss, seed, twin, test=True):
        calls.append((sched["epochs"], sched["views"], test, seed))
        val = {(12, 0): 0.930, (12, 4): 0.925, (48, 0): 0.931, (48, 4): 0.936}
        return {"distilled_qat_val": val[sched["epochs"], sched["views"]], "params": 1}

    monkeypatch.setattr(study, "run_one", fake_run)
    a = SimpleNamespace(grid_epochs=[12, 48], grid_views=[0, 4], select_margin=0.15)
    base = {"epochs": 12, "views": 0, "qat_epochs": 2, "temperature": 2.0}
    res = {}
    chosen = study.select(a, res, base, lambda: None)
    assert chosen == {**base, "epochs": 48, "views": 4}
    assert all(not test and seed == 0 for *_, test, seed in calls) and len(calls) == 4
    assert study.select(a, res, base, lambda: None) == chosen and len(calls) == 4  # resumed
    assert "| 48 | 4 | 93.60% (chosen) |" in study.markdown({**res, "chosen": chosen})


def test_the_readme_block_shows_each_size_and_loss_and_says_what_is_not_final():
    spec = importlib.util.spec_from_file_location("readme", ROOT / "benchmarks" / "readme_table.py")
    readme = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(readme)
    runs = {
        # small_cnn: distilled 93.5/93.7/93.9 (mean 93.7, std 0.2) against scratch 92.0 x3
        **{
            f"small_cnn/kl/e48v4/seed{i}": rec(kd, 0.92, 97_474)
            for i, kd in enumerate((0.935, 0.937, 0.939))
        },
        # tiny_cnn, two seeds so far: 92.6 and 92.8, above its 92.5% target but not final
        "tiny_cnn/kl/e48v4/seed0": rec(0.926, 0.925, 50_000),
        "tiny_cnn/kl/e48v4/seed1": rec(0.928, 0.925, 50_000),
        **{f"small_cnn/dist/e48v4/seed{i}": rec(0.935) for i in range(3)},
    }
    sched = {"epochs": 48, "qat_epochs": 2, "temperature": 2.0, "lam": 0.5, "views": 4}
    res = {"schedule": sched, "chosen": sched, "seeds": 3}
    res["summary"] = study.summarize(runs, "e48v4")
    # the results file, too, gives no verdict on a mean of fewer seeds than the study runs
    met = {r["student"]: r["target_met"] for r in res["summary"]["sizes"]}
    assert met == {"tiny_cnn": None, "small_cnn": True}
    text = readme.kd_study_section(res)
    assert (
        "(the schedule chosen on validation: 48 + 2 QAT epochs, T 2, lambda 0.5, 4 cached" in text
    )
    assert "| small_cnn | 97,474 | 92.00 ± 0.00% | 93.70 ± 0.20% | +1.70 pt | 0.20 pt |" in text
    # tiny_cnn: gain 0.2 against stds 0.14 + 0 (n=2), and its rows say they are partial
    assert "| tiny_cnn | 50,000 | 92.50 ± 0.00% (n=2 of 3, not final) |" in text
    assert "92.70 ± 0.14% (n=2 of 3, not final) | +0.20 pt | 0.14 pt |" in text
    assert "KL 93.70 ± 0.20%, DIST 93.50 ± 0.00% (-0.20 pt)." in text
    # above its target after 2 seeds, but a third could still pull the mean below it
    assert (
        "tiny_cnn 92.5% not decided yet (92.70% so far, 2 of 3 seeds); "
        "small_cnn 93.6% met (93.70%)." in text
    )
    assert "ds_cnn" not in text  # no run yet: no row
    assert "the distilled student on the 4 cached views" in text  # the twin's fresh draws
    res["summary"]["sizes"][0]["gain_pts"] = -0.1  # as summarize would mark a loss
    assert "| -0.10 pt (no gain) |" in readme.kd_study_section(res)
    # one seed: no spread, so no ± and no verdict on the noise
    one = {"tiny_cnn/kl/e48v4/seed0": rec(0.930, 0.921, 49_722)}
    res["summary"] = study.summarize(one, "e48v4")
    assert res["summary"]["sizes"][0]["beats_noise"] is None
    text = readme.kd_study_section(res)
    assert (
        "| 92.10% (n=1 of 3, not final) | 93.00% (n=1 of 3, not final) | +0.90 pt | one seed |"
        in text
    )
    assert "| one seed |" in text and " ± " not in text.split("\n\n")[0]
    md = study.markdown({**res, "runs": one})
    assert "| 92.10% (n=1) | 93.00% (n=1) | +0.90 pt | 0.00 pt (one seed: no spread yet) |" in md
    assert "tiny_cnn: target 92.5% not decided yet (1 of 3 seeds)." in md
    empty = readme.kd_study_section({"schedule": sched, "seeds": 3, "summary": {}})
    assert "make bench's schedule" in empty and "(no student has finished yet)" in empty


def test_the_cost_table_gives_each_guidance_against_cached_logits():
    rows = [
        {"guidance": "cached logits", "epoch_s": 2.0, "ratio": 1.0, "cache_build_s": 1.0},
        {"guidance": "cached, 4 mixed views", "epoch_s": 2.5, "ratio": 1.25, "cache_build_s": 4},
    ]
    for r in rows:
        r["cache_bytes"] = 48_165
    md = study.markdown({"cost": {"samples": 6000, "epochs": 4, "rows": rows}})
    assert "## Cost per epoch (6,000 images, small_cnn, median epoch of 4;" in md
    assert "| cached, 4 mixed views | 2.50 | 1.25x | 4.0 | 48,165 |" in md


def test_a_longer_schedule_must_beat_a_shorter_one_by_more_than_the_margin():
    def row(e, v, val):
        return {"epochs": e, "views": v, "distilled_qat_val": val}

    rows = [row(12, 0, 0.9372), row(48, 0, 0.9408), row(48, 4, 0.9420), row(96, 4, 0.9425)]
    # 96/4 is best, 48/4 0.05 pt and 48/0 0.17 pt below: 48/4 is the cheapest within 0.15
    assert study.choose(rows, 0.15) == {"epochs": 48, "views": 4}
    assert study.choose(rows, 0.2) == {"epochs": 48, "views": 0}
    assert study.choose(rows, 0.0) == {"epochs": 96, "views": 4}
    # a tie in epochs goes to fewer views
    assert study.choose([row(48, 4, 0.94), row(48, 0, 0.94)], 0.0) == {"epochs": 48, "views": 0}


FAKE_WORK = """
import os

def work(a, sched, student, loss, seed, twin):
    if student == "broken":
        raise ValueError("no such student")
    return {"distilled_int8": 0.9, "seconds": 0.0, "jobs": a.jobs, "seed": seed,
            "threads": os.environ["TF_NUM_INTRAOP_THREADS"], "pid": os.getpid()}
"""


def test_runs_side_by_side_are_each_recorded_and_a_failed_one_fails_the_study(
    tmp_path, monkeypatch
):
    (tmp_path / "fake_work.py").write_text(FAKE_WORK)
    monkeypatch.syspath_prepend(str(tmp_path))
    # in_parallel sets these for its workers: restored after the test, for the tests after it
    for var in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.setenv(var, "unset")
    import fake_work

    a = study.parse(["--jobs", "2", "--work", str(tmp_path / "work")])
    sched = {"epochs": 2, "views": 0}
    todo = [(f"s{i}", "tiny_cnn", "kl", i, True) for i in range(3)]
    todo.insert(1, ("bad", "broken", "kl", 9, True))
    got = {}
    with pytest.raises(SystemExit, match="1 run"):
        study.in_parallel(a, sched, todo, got.__setitem__, work=fake_work.work)
    assert sorted(got) == ["s0", "s1", "s2"]  # the failed run did not stop the others
    assert [got[k]["seed"] for k in ("s0", "s1", "s2")] == [0, 1, 2]
    assert {r["threads"] for r in got.values()} == {str(max(1, os.cpu_count() // 2))}
    assert all(r["pid"] != os.getpid() for r in got.values())  # each in a worker process


def test_jobs_must_be_one_or_more(capsys):
    with pytest.raises(SystemExit) as e:
        study.parse(["--jobs", "0"])
    assert e.value.code == 2 and "--jobs: got 0" in capsys.readouterr().err


def test_report_redraws_from_the_results_and_never_starts_them_over(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "RESULTS", tmp_path)
    monkeypatch.setattr(study, "plot", lambda res, path: None)  # no matplotlib needed here
    with pytest.raises(SystemExit, match="--part report needs"):
        study.main(["--part", "report", "--name", "k"])
    assert not list(tmp_path.iterdir())  # nothing written
    full = {
        "settings": {"epochs": 12, "qat_epochs": 2, "lr": 0.002, "batch_size": 128},
        "sweep": {"best": {"temperature": 2.0, "lam": 0.5, "views": 0}},
    }
    (tmp_path / "full.json").write_text(json.dumps(full))
    runs = {"tiny_cnn/kl/e12v0/seed0": rec(0.93, 0.92, 49_722)}
    (tmp_path / "k.json").write_text(json.dumps({"runs": runs}))
    res = study.main(["--part", "report", "--name", "k"])  # without --resume
    assert res["runs"] == runs and res["summary"]["sizes"][0]["student"] == "tiny_cnn"
    assert json.loads((tmp_path / "k.json").read_text())["runs"] == runs


def test_a_student_and_its_twin_are_two_runs_recorded_as_one(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "RESULTS", tmp_path)
    monkeypatch.setattr(study, "plot", lambda res, path: None)
    full = {
        "settings": {"epochs": 12, "qat_epochs": 2, "lr": 0.002, "batch_size": 128},
        "sweep": {"best": {"temperature": 2.0, "lam": 0.5, "views": 0}},
    }
    (tmp_path / "full.json").write_text(json.dumps(full))
    calls = []

    def fake_run(a, sched, student, loss, seed, twin, test=True):
        calls.append((student, loss, seed, twin))
        return {"scratch_int8": 0.92} if twin else {"distilled_int8": 0.93, "params": 7}

    monkeypatch.setattr(study, "run_one", fake_run)
    argv = ["--part", "sizes", "--name", "k", "--students", "tiny_cnn", "--work", str(tmp_path)]
    res = study.main(argv)
    assert calls == [("tiny_cnn", "kl", s, twin) for s in range(3) for twin in (False, True)]
    key = "tiny_cnn/kl/e12v0/seed0"
    assert res["runs"][key] == {"distilled_int8": 0.93, "params": 7, "scratch_int8": 0.92}
    assert res["summary"]["sizes"][0]["gain_pts"] == pytest.approx(1.0)

    # a student recorded without its twin: --resume trains the twin alone, and a record that
    # lacks its twin is in no table until then
    runs = {key: {"distilled_int8": 0.93, "params": 7}}
    (tmp_path / "k.json").write_text(json.dumps({"runs": runs}))
    assert study.summarize(runs, "e12v0")["sizes"] == []
    calls.clear()
    study.main([*argv, "--resume", "--seeds", "1"])
    assert calls == [("tiny_cnn", "kl", 0, True)]

    # past --start-within nothing starts, and nothing recorded is lost
    monkeypatch.setattr(study, "may_start", lambda a: False)
    calls.clear()
    res = study.main([*argv, "--resume", "--students", "ds_cnn"])
    assert calls == [] and key in res["runs"]


def test_pending_gives_only_what_a_record_lacks():
    rows = study.plan(["losses"])
    runs = {
        "small_cnn/kl/e12v4/seed0": rec(0.93, 0.92),  # both done
        "small_cnn/kl/e12v4/seed1": rec(0.93),  # the twin left
        "small_cnn/dist/e12v4/seed0": rec(0.93),  # DIST has no twin
    }
    got = [(k, twin) for k, *_, twin in study.pending(runs, rows, 2, "e12v4")]
    assert got == [
        ("small_cnn/dkd/e12v4/seed0", False),
        ("small_cnn/kl/e12v4/seed1", True),
        ("small_cnn/dist/e12v4/seed1", False),
        ("small_cnn/dkd/e12v4/seed1", False),
    ]


def test_start_within_must_be_positive_minutes(capsys):
    with pytest.raises(SystemExit) as e:
        study.parse(["--start-within", "0"])
    assert e.value.code == 2 and "--start-within: got 0" in capsys.readouterr().err
    assert study.may_start(study.parse(["--start-within", "5"]))
    assert not study.may_start(SimpleNamespace(start_by=0.0))
