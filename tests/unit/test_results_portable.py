"""Committed results name files relative to the repo (or by name), never by absolute path."""

import re
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from bench import portable  # noqa: E402 - the benchmarks' own helper, tested here

# A "/" that starts a path: not inside a word, a URL ("://") or a relative path ("a/b", "~/").
ABSOLUTE = re.compile(r"(?<![\w.~:/\-])/(?=[A-Za-z_])[\w.+-]+(?:/[\w.+-]+)*")
COMMITTED = sorted(
    p
    for d in ("benchmarks/results", "benchmarks/teachers")
    for p in (ROOT / d).rglob("*")
    if p.suffix in (".json", ".md", ".log")
)


def test_the_pattern_finds_absolute_paths_and_nothing_else():
    found = ABSOLUTE.findall('"model": "/root/runs/a.tflite", --tflm=/opt/tflm, (/tmp/x)')
    assert found == ["/root/runs/a.tflite", "/opt/tflm", "/tmp/x"]
    assert not ABSOLUTE.findall(
        "see https://example.org/a/b, ../shared/tflm, ~/runs/x, 12/34, KB/s"
    )


ELSEWHERE = f"/not-{ROOT.parent.name or 'root'}-elsewhere"


def test_portable_rewrites_every_absolute_path():
    assert portable(
        {
            # a folder outside the checkout's parent (a clone may itself live under /tmp)
            "a": [
                f"--model {ROOT}/runs/x.tflite --work {ELSEWHERE}/w",
                f"{ROOT.parent}/shared/tflm",
            ],
            "b": "/home/ann/kdq_runs/t/teacher.keras",
            "n": 3,
        }
    ) == {
        "a": ["--model runs/x.tflite --work w", "../shared/tflm"],
        "b": "~/kdq_runs/t/teacher.keras",
        "n": 3,
    }


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_results_hold_no_absolute_path(path):
    hits = ABSOLUTE.findall(path.read_text(errors="replace"))
    assert not hits, f"{path.relative_to(ROOT)} names {hits[0]}; rewrite it with bench.portable"
