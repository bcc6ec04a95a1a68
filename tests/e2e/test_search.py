"""`kdq_tf search` end to end on a slice of Fashion-MNIST, from the stored teacher logits, with
every candidate measured on the emulated Cortex-M4 (needs a TFLM tree: $TFLM_DIR)."""

import json
from pathlib import Path

import search_helpers as H
from conftest import run_cli

pytestmark = H.needs_tree


def test_tiny_search_measures_every_candidate_and_exports_the_chosen(tmp_path):
    out = tmp_path / "s"
    space = H.space(tmp_path, '["none", "lut16"]')
    r = run_cli(
        *H.args(
            tmp_path,
            out,
            space,
            "--flash",
            "192KiB",
            "--ram",
            "64KiB",
            "--trials",
            "3",
            "--pruner",
            "none",
            "--finalists",
            "1",
            "--final-epochs",
            "2",
            "--final-qat-epochs",
            "1",
        )
    )
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "pareto.json").read_text())
    assert summary["trained"] == 3 and summary["measured"] == 3
    recs = json.loads((out / "trials.json").read_text())
    # the final rung: the best fitting candidate of the search, trained again for 2 epochs. On a
    # validation split this small accuracies tie often, and a tie goes to the smaller flash.
    best = min(
        (r for r in recs if r["fits"]), key=lambda r: (-r["val_accuracy"], r["figures"]["flash"])
    )
    (rung,) = summary["final_rung"]
    assert rung["candidate"] == best["candidate"]["key"]
    assert rung["search_val_accuracy"] == best["val_accuracy"]
    key = best["candidate"]["key"]
    final = json.loads((out / "final" / key / "record.json").read_text())
    assert final["rung"] == "final" and final["schedule"]["epochs"] == 2
    history = (out / "final" / key / "run" / "distill_history.csv").read_text().splitlines()
    assert len(history) == 1 + 2  # header and two epochs, from scratch
    assert all(i["bit_exact"] == "10/10" for i in final["images"].values())
    for rec in recs:  # every candidate: measured on its Cortex-M4 images, bit-exact
        assert all(i["bit_exact"] == "10/10" for i in rec["images"].values())
        img = rec["images"][rec["kernels"]]  # the one that ships
        assert rec["fits"] == (img["flash"] <= 192 * 1024 and img["ram"] <= 64 * 1024)
        assert rec["figures"]["flash"] > rec["device_model_bytes"]  # the image holds the model
        # the estimate is a lower bound of what was measured
        assert rec["estimated"]["flash"] <= img["flash"] and rec["estimated"]["ram"] <= img["ram"]
    lut = [r for r in recs if r["candidate"]["compression"] == "lut16"]
    assert lut and lut[0]["compressed"]["bytes"] == lut[0]["device_model_bytes"]
    # a LUT-compressed model: the fused firmware and the DECODE one, each measured (a model LUT
    # does not shrink ships without DECODE: one image)
    if lut[0]["compressed"]["tensors_compressed"]:
        assert set(lut[0]["images"]) == {"cmsis-nn", "cmsis-nn+decode"}
        assert lut[0]["images"]["cmsis-nn+decode"]["firmware"] == "firmware-cmsis-nn+decode"
    else:
        assert set(lut[0]["images"]) == {"cmsis-nn"}
    chosen = summary["chosen"]  # the finalist, which fits, exported from its own run
    assert chosen["rung"] == "final" and chosen["run_dir"] == f"final/{key}/run"
    assert chosen["val_accuracy"] == final["val_accuracy"]
    assert "chosen after 2 epochs (final rung)" in r.stdout
    ex = summary["chosen_export"]
    assert ex["bit_exact"] == "10/10" and (out / ex["firmware"] / "Makefile").is_file()
    prof = json.loads((out / ex["firmware"] / "profile.json").read_text())  # where time goes
    assert prof["bit_exact"] == prof["samples"] and abs(prof["operators_share"] - 1) <= 0.02
    assert not Path(chosen["run_dir"]).is_absolute()
    assert "Pareto front" in (out / "pareto.md").read_text()
    assert (out / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # One progress line per trial, with its figures.
    assert sum("val int8" in ln and "flash" in ln for ln in r.stderr.splitlines()) == 3
    study = H.study(out)
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 3


def test_a_budget_nothing_meets_exits_1_with_the_closest(tmp_path):
    out = tmp_path / "s"
    r = run_cli(*H.args(tmp_path, out, H.space(tmp_path), "--flash", "8KiB", "--trials", "2"))
    assert r.returncode == 1, r.stderr[-3000:]
    assert "no candidate fits flash <= 8.0 KiB" in r.stdout
    lines = [ln for ln in r.stdout.splitlines() if "flash over by" in ln]
    assert len(lines) == 2
    # The first candidate's weights fit, so it trains and its image is measured; that image
    # tells what the firmware adds, and the second candidate is then rejected on its estimate
    # without training.
    assert sum("(measured)" in ln for ln in lines) == 1
    assert sum("(estimated)" in ln for ln in lines) == 1
    assert len(H.trained_epochs(out)) == 1
    assert not (out / "chosen").exists()


def test_a_teacher_model_gives_its_logits_once_into_the_search_folder(tmp_path):
    from kdq_tf.models.students import tiny_cnn
    from kdq_tf.teacher import logits_file as LF

    teacher = tmp_path / "teacher.keras"
    tiny_cnn((28, 28, 1), 10).save(teacher)  # untrained: the mechanics, not the accuracy
    out = tmp_path / "s"
    args = [
        "search",
        "--teacher",
        teacher,
        "--space",
        H.space(tmp_path),
        "--limit",
        "300",
        "--flash",
        "1KiB",
        "--trials",
        "1",
        "--out",
        out,
    ]
    r = run_cli(*args)
    assert r.returncode == 1, r.stderr[-3000:]  # no candidate's weights fit in 1 KiB
    logits = LF.from_bytes((out / "teacher_logits.npz").read_bytes(), "teacher_logits.npz")
    assert logits.train.shape[1] == 10 and logits.test is not None
    assert json.loads((out / "search.json").read_text())["settings"]["teacher"] == str(teacher)
    assert not H.trained_epochs(out)  # every candidate was rejected on its estimate
