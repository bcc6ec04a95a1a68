"""The benchmark's fused-teacher choice, on logits made by hand."""

import sys

import numpy as np
import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import teacher_artifact as TA  # noqa: E402 - a benchmark script, importable once its folder is on the path


def test_choose_fusion_picks_on_validation_and_only_scores_test():
    y = np.array([0, 1, 2, 0])
    # Member a is right on samples 0-2, member b on 1-3; on sample 0 a is confident, on 3 b is.
    a = np.array([[5.0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0]])
    b = np.array([[0, 1, 0], [0, 1, 0], [0, 0, 1], [9.0, 0, 0]])
    # On test, member a alone would be best: the choice must not look there.
    ta, tb = np.eye(3)[[0, 1, 2, 0]], np.eye(3)[[1, 1, 1, 1]]
    f = TA.choose_fusion([a, b], [ta, tb], y, y)
    assert [m["val_accuracy"] for m in f["members"]] == [0.75, 0.75]
    assert f["val_accuracy"] == 1.0 and f["chosen_on"] == "val"
    assert f["tried"] == 2 * (1 + 9)  # two modes x (accuracy weights + 9 grid splits)
    # The first candidate, weights from equal val accuracy, already fuses both right: 0.5*5 >
    # 0.5*1 on sample 0 and 0.5*9 > 0.5*1 on sample 3 (mean of logits, tried first).
    assert f["mode"] == "logits" and f["weights"] == [0.5, 0.5]
    z = 0.5 * ta + 0.5 * tb
    assert f["accuracy"] == pytest.approx(float((z.argmax(-1) == y).mean()))


def test_choose_fusion_flip_views_split_each_member_weight():
    y = np.array([0, 1])
    a = np.array([[1.0, 0], [1.0, 0]])  # wrong on sample 1 alone
    a_flipped = np.array([[1.0, 0], [0, 3.0]])  # its mirrored view gets sample 1 right, confidently
    f = TA.choose_fusion([a], [a], y, y, [a_flipped], [a_flipped])
    assert f["flip"] is True and f["val_accuracy"] == 1.0
    assert (
        f["tried"] == 2 * 2
    )  # (no flip, flip) x (logits, probs), one member: accuracy weights only
    # Without flip views (data trained without flips) the choice never mirrors.
    assert TA.choose_fusion([a], [a], y, y)["flip"] is False
