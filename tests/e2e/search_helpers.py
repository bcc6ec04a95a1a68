"""What the search's end-to-end tests share: a two-candidate space on a slice of Fashion-MNIST,
the stored teacher logits, and readers of what a search folder holds."""

import os
from pathlib import Path

import pytest
from conftest import ROOT

LOGITS = ROOT / "benchmarks" / "teachers" / "fashion_mnist_fused" / "logits.npz"
needs_tree = pytest.mark.skipif(
    not os.environ.get("TFLM_DIR"), reason="needs a TFLite-Micro tree in $TFLM_DIR"
)
SPACE = """
[space]
width = [0.5]
blocks = [3]
block = ["plain", "separable"]
kernel = [3]
stride2 = [[1, 2]]
compression = {compression}
kernels = ["cmsis-nn"]
"""


def space(tmp_path, compression='["none"]') -> Path:
    p = tmp_path / "space.toml"
    p.write_text(SPACE.format(compression=compression))
    return p


def args(tmp_path, out, space, *extra):
    return [
        "search",
        "--teacher-logits",
        LOGITS,
        "--space",
        space,
        "--limit",
        "300",
        "--epochs",
        "1",
        "--finalists",  # the final rung has its own test: the others ship the search's pick
        "0",
        "--out",
        out,
        *extra,
    ]


def study(out: Path):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(out / "study.journal")))
    return optuna.load_study(study_name="kdq_tf_search", storage=storage)


def trained_epochs(out: Path) -> dict[str, int]:
    """Distillation epochs each candidate folder ran (its history CSV has one row per epoch)."""
    return {
        p.parents[1].name: len(p.read_text().splitlines()) - 1
        for p in out.glob("trials/*/run/distill_history.csv")
    }
