"""benchmarks/hw_student.py: its candidates against hand counts, and a choice that reads only
validation accuracy and the instruction limit."""

import importlib.util
from types import SimpleNamespace

import pytest
from conftest import ROOT

spec = importlib.util.spec_from_file_location("hw_student", ROOT / "benchmarks" / "hw_student.py")
hw = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hw)


def test_a_candidate_is_its_stages_with_the_average_pool_head():
    from kdq_tf.models.students import count_macs

    info = SimpleNamespace(input_shape=(28, 28, 1), num_classes=10)
    m = hw.build(hw.CANDIDATES["deep7"][0], info)
    # 28x28x16 stem, 14x14x32, 7x7x64 three times, then the 1x1 head: k*k*cin*cout per pixel
    macs = 28 * 28 * 9 * 16 + 14 * 14 * 9 * 16 * 32 + 7 * 7 * 9 * (32 * 64 + 2 * 64 * 64) + 640
    assert count_macs(m) == macs
    params = 9 * (16 + 16 * 32 + 32 * 64 + 2 * 64 * 64) + 4 * (16 + 32 + 3 * 64) + 650
    assert m.count_params() == params  # no conv bias (BN follows); 4 BN values per channel
    assert [layer.__class__.__name__ for layer in m.layers][-3:] == [
        "AveragePooling2D",
        "Conv2D",
        "Flatten",
    ]


def test_a_sep_stage_is_a_depthwise_then_a_pointwise_conv():
    from kdq_tf.models.students import count_macs

    info = SimpleNamespace(input_shape=(28, 28, 1), num_classes=10)
    stages = hw.CANDIDATES["sep14"][0]
    assert hw.layer_string(stages) == "16-40s2-dw48-64s2-64"
    m = hw.build(stages, info)
    # the sep stage at 14x14: 3x3 depthwise over 40 channels, then 1x1 from 40 to 48
    sep = 14 * 14 * (9 * 40 + 40 * 48)
    macs = 28 * 28 * 9 * 16 + 14 * 14 * 9 * 16 * 40 + sep + 7 * 7 * 9 * (48 * 64 + 64 * 64) + 640
    assert count_macs(m) == macs
    kinds = [layer.__class__.__name__ for layer in m.layers]
    assert kinds.count("DepthwiseConv2D") == 1 and kinds.count("Conv2D") == 6  # 5 + the head


def test_a_res_stage_is_two_convs_added_to_their_input():
    from kdq_tf.models.students import count_macs

    info = SimpleNamespace(input_shape=(28, 28, 1), num_classes=10)
    stages = hw.CANDIDATES["resC"][0]
    assert hw.layer_string(stages) == "16-40s2-56s2-(56-56)"
    m = hw.build(stages, info)
    # wideC's MACs: the pair is two 3x3 56->56 convs at 7x7; the ADD has no MACs
    macs = 28 * 28 * 9 * 16 + 14 * 14 * 9 * 16 * 40 + 7 * 7 * 9 * (40 * 56 + 2 * 56 * 56) + 560
    assert count_macs(m) == macs
    add = m.get_layer("b4_add")
    assert [t.name.split("/")[0] for t in add.input] == ["b3_relu", "b4_b_bn"]  # the shortcut
    with pytest.raises(ValueError, match="keeps its input's shape"):
        hw.build(((16, 1), (32, 1, "res")), info)


def _run(val, test, instr, exact=True):
    return {
        "val_accuracy": val,
        "test_accuracy": test,
        "image": {"instructions": instr, "exact": exact},
    }


def test_the_choice_reads_validation_and_the_limit_never_test():
    limit = hw.LIMIT * hw.BASELINE_INSTRUCTIONS
    a, b, c, d = list(hw.CANDIDATES)[:4]
    res = {
        "runs": {
            f"{a}/seed0": _run(0.930, 0.80, limit - 1),
            f"{a}/seed1": _run(0.932, 0.80, limit - 1),
            f"{b}/seed0": _run(0.929, 0.99, limit - 1),  # best on test: not what counts
            f"{b}/seed1": _run(0.931, 0.99, limit - 1),
            f"{c}/seed0": _run(0.950, 0.95, limit + 1),  # over the limit
            f"{c}/seed1": _run(0.950, 0.95, limit + 1),
            f"{d}/seed0": _run(0.960, 0.96, limit - 1, exact=False),  # not bit-exact
            f"{d}/seed1": _run(0.960, 0.96, limit - 1),
        }
    }
    assert hw.choose(res, 2, 2, 0.5) == a
    del res["runs"][f"{a}/seed1"]  # a candidate short of its screen seeds is not chosen yet
    assert hw.choose(res, 2, 2, 0.5) == b
    assert hw.choose({"runs": {}}, 2, 3, 0.5) is None


def test_contenders_within_the_points_get_every_seed_before_the_choice():
    limit = hw.LIMIT * hw.BASELINE_INSTRUCTIONS
    a, b, c = list(hw.CANDIDATES)[:3]
    res = {
        "runs": {
            f"{a}/seed0": _run(0.935, 0.90, limit - 1),  # screen mean 93.50: the best
            f"{a}/seed1": _run(0.935, 0.90, limit - 1),
            f"{b}/seed0": _run(0.932, 0.99, limit - 1),  # 93.10: within 0.5 pt
            f"{b}/seed1": _run(0.930, 0.99, limit - 1),
            f"{c}/seed0": _run(0.929, 0.99, limit - 1),  # 92.95: 0.55 pt below, out
            f"{c}/seed1": _run(0.930, 0.99, limit - 1),
        }
    }
    assert hw.contenders(res, 2, 0.5) == [a, b]
    assert hw.choose(res, 2, 3, 0.5) is None  # the contenders' third seeds are due
    res["runs"][f"{a}/seed2"] = _run(0.920, 0.99, limit - 1)  # 3-seed mean 93.00
    assert hw.choose(res, 2, 3, 0.5) is None  # b's is still due
    res["runs"][f"{b}/seed2"] = _run(0.934, 0.80, limit - 1)  # 3-seed mean 93.20
    assert hw.choose(res, 2, 3, 0.5) == b  # the 3-seed means decide, not the screen's
    assert hw.choose(res, 2, 3, 0.1) == a  # b is no contender within 0.1 pt


def _op(out_shape, macs, instructions):
    return {"output_shapes": [out_shape], "macs": macs, "instructions": instructions}


def _prof(model, ops):
    return {
        "model": model,
        "operators": ops,
        "macs": sum(o["macs"] or 0 for o in ops),
        "operators_instructions": sum(o["instructions"] for o in ops),
    }


def test_the_savings_are_grouped_by_the_resolution_each_operator_writes():
    base = _prof(
        "small_cnn",
        [
            _op([1, 28, 28, 24], 100, 9_000_000),
            _op([1, 14, 14, 48], 200, 4_000_000),
            _op([1, 1, 1, 64], None, 500_000),  # MEAN: the head from here on
            _op([1, 1, 1, 10], 10, 700_000),
            _op([1, 10], None, 20_000),
        ],
    )
    cand = _prof(
        "deep7",
        [
            _op([1, 14, 14, 32], 50, 4_600_000),
            _op([1, 7, 7, 64], 100, 1_800_000),
            _op([1, 1, 1, 64], None, 50_000),
            _op([1, 1, 1, 10], 10, 700_000),
            _op([1, 10], None, 20_000),
        ],
    )
    assert hw.by_resolution(base) == {
        "28x28": {"macs": 100, "instructions": 9_000_000},
        "14x14": {"macs": 200, "instructions": 4_000_000},
        "head": {"macs": 10, "instructions": 1_220_000},
    }
    rows = {
        r.split("|")[1].strip(): r.split("|")[2:-1]
        for r in hw.savings_markdown(base, cand).splitlines()[2:]
    }
    # saved = baseline - candidate per resolution; shares of the 7.05 M saved in all
    assert [c.strip() for c in rows["28x28"]] == ["100", "9.00 M", "0", "0.00 M", "9.00 M", "128%"]
    assert [c.strip() for c in rows["14x14"]][-2:] == ["-0.60 M", "-9%"]
    assert [c.strip() for c in rows["7x7"]][-2:] == ["-1.80 M", "-26%"]
    assert [c.strip() for c in rows["head"]][-2:] == ["0.45 M", "6%"]
    assert [c.strip() for c in rows["all operators"]][-2:] == ["7.05 M", ""]
    assert list(rows) == ["28x28", "14x14", "7x7", "head", "all operators"]  # largest maps first


def test_the_readme_sentence_reads_the_final_and_the_fresh_seeds():
    spec = importlib.util.spec_from_file_location("readme", ROOT / "benchmarks" / "readme_table.py")
    readme = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(readme)
    acc = {"deep7": (0.93, 0.932, 0.934, 0.92, 0.94), "small_cnn": (0.93, 0.93, 0.93, 0.94, 0.94)}
    runs = {
        f"{name}/seed{i}": _run(0.9, a, 11_000_000 if name == "deep7" else 20_000_000)
        for name, values in acc.items()
        for i, a in enumerate(values)
    }

    def test(seeds):  # what hw_student.py stores with its final and its confirmation
        return {n: hw._stats(hw._runs_of({"runs": runs}, n, seeds), "test_accuracy") for n in acc}

    res = {
        "chosen": "deep7",
        "runs": runs,
        "final": {"student": "deep7", "seeds": 3, "test": test(range(3)), "gap_pts": 0.2},
    }
    text = readme.hw_sentence(res)
    # seeds 0-2: deep7 93.20 ± 0.20 (stdev of 93.0, 93.2, 93.4), small_cnn 93.00 ± 0.00
    assert "takes 11.00 M instructions on the M4 with CMSIS-NN (0.55x small_cnn's)" in text
    assert (
        "at 93.20 ± 0.20% (n=3) int8 test accuracy against small_cnn's 93.00 ± 0.00% (n=3)" in text
    )
    assert "fresh" not in text
    res["confirm"] = {"student": "deep7", "seeds": [3, 4], "test": test([3, 4]), "gap_pts": -1.0}
    # seeds 3-4: deep7 93.00 ± 1.41 (stdev of 92, 94), small_cnn 94.00 ± 0.00
    assert (
        "on fresh seeds 3-4, which no choice read: 93.00 ± 1.41% (n=2) against "
        "94.00 ± 0.00% (n=2) (-1.00 pt)" in readme.hw_sentence(res)
    )
    res["final"]["student"] = "searchC"  # a final of another choice: no sentence
    assert readme.hw_sentence(res) is None


def test_confirm_runs_fresh_seeds_in_pairs_and_gaps_only_over_them(monkeypatch):
    limit = hw.LIMIT * hw.BASELINE_INSTRUCTIONS
    base = hw.BASELINE
    test = {("deep7", 2): 0.93, (base, 2): 0.92, ("deep7", 3): 0.95, (base, 3): 0.93}
    ran = []

    def fake_run(a, res, sched, name, seed):
        ran.append((name, seed))
        res["runs"][f"{name}/seed{seed}"] = _run(0.9, test[name, seed], limit - 1)

    monkeypatch.setattr(hw, "run_one", fake_run)
    monkeypatch.setattr(hw, "_save", lambda res: None)
    res = {
        "chosen": "deep7",
        "runs": {  # seeds 0-1, the final's: deep7 at 90%, small_cnn at 94%
            **{f"deep7/seed{i}": _run(0.9, 0.90, limit - 1) for i in range(2)},
            **{f"{base}/seed{i}": _run(0.9, 0.94, limit - 1) for i in range(2)},
        },
    }
    hw.confirm(SimpleNamespace(seeds=2), res, None)
    # with --seeds 2 the fresh seeds are 2 and 3, each run by both before the next
    assert ran == [("deep7", 2), (base, 2), ("deep7", 3), (base, 3)]
    c = res["confirm"]
    assert c["student"] == "deep7" and c["seeds"] == [2, 3]
    # fresh: deep7 (93 + 95) / 2 = 94.0 against (92 + 93) / 2 = 92.5
    assert c["gap_pts"] == pytest.approx(1.5)
    # every seed: deep7 (90 + 90 + 93 + 95) / 4 = 92.0 against (94 + 94 + 92 + 93) / 4 = 93.25
    assert c["gap_all_pts"] == pytest.approx(-1.25)
