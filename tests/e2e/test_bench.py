"""The benchmark script with tiny settings, so it cannot rot."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                                 reason="Debian's dataset-fashion-mnist is not installed")]


def test_bench_quick_tiny(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--quick", "--name", "tiny", "--limit", "600",
         "--epochs", "1", "--cost-limit", "300", "--latency-runs", "20", "--verify-samples", "200",
         "--results", str(tmp_path / "results"), "--work", str(tmp_path / "work")],
        capture_output=True, text=True, cwd=ROOT, timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "results" / "tiny.json").read_text())
    s = res["summary"]
    assert [r["model"] for r in s["table"]] == [
        "ResNet50 teacher (float)", "student from scratch (float)", "student distilled (float)",
        "distilled + QAT, int8 .tflite", "scratch + PTQ, int8 .tflite"]
    for r in s["table"]:
        assert 0.0 <= r["accuracy"]["mean"] <= 1.0 and r["params"] > 0
    assert set(res["cost"]["modes"]) == {"online", "cached", "cached-int8", "teacher-int8"}
    assert all(m["ratio_vs_hard"] > 0 for m in res["cost"]["modes"].values())
    assert res["size"]["float32_over_int8"] > 1 and 0 < res["size"]["overhead_share"] < 1
    assert res["latency"]["model"]["runs"] == 20 and res["latency"]["median_ratio"] > 0
    assert res["memory"]["distill_peak_rss_mib"] > 100
    assert [p["fraction"] for p in res["scaling"]["points"]] == [0.25, 0.5, 1.0]
    assert set(s["targets"]) >= {"int8_distilled_beats_scratch", "int8_at_least_92.5", "cached_modes_at_most_1.3x"}
    md = (tmp_path / "results" / "tiny.md").read_text()
    assert "| ResNet50 teacher (float) |" in md and "## Targets" in md
