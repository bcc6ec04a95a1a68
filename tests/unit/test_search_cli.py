"""`kdq_tf search` refuses bad input with exit 2, one line, and nothing written."""

import pytest
from conftest import ROOT, run_cli

LOGITS = ROOT / "benchmarks" / "teachers" / "fashion_mnist_fused" / "logits.npz"


@pytest.mark.parametrize(
    "flags, space, says",
    [
        (["--flash", "192QB"], None, "unknown unit 'QB'"),
        (["--flash", "0KiB"], None, "greater than zero"),
        (["--ram=-64KiB"], None, "greater than zero"),
        (["--instructions", "0"], None, "greater than zero"),
        (["--flash", "192"], None, "needs a unit"),
        ([], None, "give a budget"),
        (["--flash", "192KiB"], "[space]\nwidth = []\n", "width is empty"),
        (["--flash", "192KiB"], "[space]\nblocks = [3]\nstride2 = [[1, 3]]\n", "contradictory"),
        (["--flash", "192KiB"], "[space]\nwidht = [1.0]\n", "unknown key(s) widht"),
        (["--flash", "192KiB"], "[serch]\nwidth = [1.0]\n", "unknown table(s) serch"),
        (["--flash", "192KiB", "--kernels", "fast"], None, "--kernels must be"),
        (["--flash", "192KiB", "--time-limit", "soon"], None, "--time-limit"),
        (["--flash", "192KiB", "--target", "host"], None, "--target must be one of cortex-m4"),
    ],
)
def test_bad_search_input_is_one_line_exit_2_nothing_written(tmp_path, flags, space, says):
    args = ["search", "--teacher-logits", LOGITS, "--out", tmp_path / "out", *flags]
    if space is not None:
        (tmp_path / "space.toml").write_text(space)
        args += ["--space", tmp_path / "space.toml"]
    r = run_cli(*args, env={"TFLM_DIR": str(tmp_path)})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdq_tf: error:"), r.stderr
    assert says in lines[0]
    assert not (tmp_path / "out").exists()


def test_missing_logits_and_tree_are_named(tmp_path):
    r = run_cli(
        "search",
        "--teacher-logits",
        tmp_path / "none.npz",
        "--flash",
        "1MiB",
        "--out",
        tmp_path / "out",
    )
    assert r.returncode == 2 and "none.npz is not a file" in r.stderr
    r = run_cli(
        "search",
        "--teacher-logits",
        LOGITS,
        "--flash",
        "1MiB",
        "--out",
        tmp_path / "out",
        "--tflm",
        tmp_path / "no_tree",
    )
    assert r.returncode == 2 and "no_tree" in r.stderr and "does not exist" in r.stderr
    assert not (tmp_path / "out").exists()
