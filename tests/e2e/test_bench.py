"""The benchmark script with tiny settings, so it cannot rot."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.path.isdir("/usr/share/datasets/fashion-mnist"),
        reason="Debian's dataset-fashion-mnist is not installed",
    ),
]


def test_bench_quick_tiny(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench.py"),
            "--quick",
            "--name",
            "tiny",
            "--limit",
            "600",
            "--epochs",
            "1",
            "--cost-limit",
            "300",
            "--latency-runs",
            "20",
            "--sweep-t",
            "2,4",
            "--sweep-lam",
            "0.5,1",
            "--mode-limit",
            "400",
            "--tflm",
            "",
            "--results",
            str(tmp_path / "results"),
            "--work",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "results" / "tiny.json").read_text())
    s = res["summary"]
    assert [r["model"] for r in s["table"]] == [
        "ResNet50 teacher (float)",
        "student from scratch (float)",
        "student distilled (float)",
        "scratch + QAT, int8 .tflite",
        "distilled + QAT, int8 .tflite",
    ]
    for r in s["table"]:
        assert 0.0 <= r["accuracy"]["mean"] <= 1.0 and r["params"] > 0
    # The sweep ran on validation: every T at the first lambda, then the other lambda at the best T,
    # then no views at the best pair.
    sweep = res["sweep"]
    assert [(r["temperature"], r["lam"], r["views"]) for r in sweep["rows"]][:2] == [
        (2.0, 0.5, 2),
        (4.0, 0.5, 2),
    ]
    assert len(sweep["rows"]) == 4 and sweep["rows"][3]["views"] == 0 and sweep["split"] == "val"
    best = max(sweep["rows"], key=lambda r: r["val_accuracy"])
    assert res["chosen"] == {
        "temperature": best["temperature"],
        "lam": best["lam"],
        "views": best["views"],
    }
    modes = [r["mode"] for r in res["guidance"]["rows"]]
    assert (
        modes[0].startswith("cached, no aug")
        and "2 views" in modes[1]
        and modes[2].startswith("online")
    )
    assert all(r["epoch_s"] > 0 for r in res["guidance"]["rows"])
    assert [r["teacher"] for r in res["kd_gain"]["rows"]] == ["final"]
    g = res["kd_gain"]["rows"][0]
    assert g["gain_pts"] == pytest.approx(
        100 * (g["student_accuracy"] - res["kd_gain"]["scratch_accuracy"])
    )
    assert res["size"]["float32_over_int8"] > 1 and 0 < res["size"]["overhead_share"] < 1
    assert res["latency"]["model"]["runs"] == 20 and res["latency"]["median_ratio"] > 0
    assert res["memory"]["distill_peak_rss_mib"] > 100
    assert (
        "--tflm" in res["device"]["skipped"]
    )  # the device rows have tests of their own (test_firmware)
    assert [p["fraction"] for p in res["scaling"]["points"]] == [0.25, 0.5, 1.0]
    assert set(s["targets"]) >= {
        "int8_distilled_beats_int8_scratch_by_0.5pt",
        "teacher_at_least_93.5",
    }
    md = (tmp_path / "results" / "tiny.md").read_text()
    assert "| ResNet50 teacher (float) |" in md and "## Sweep on the validation split" in md
    assert "tiny_kd_gain.png" in res["plots"]
