"""The search's pure parts against hand counts: budgets, the space, the estimate, the front."""

import pytest

from kdq_tf.errors import ConfigError
from kdq_tf.search import front
from kdq_tf.search.budget import Budget, parse_bytes, parse_count
from kdq_tf.search.space import Candidate, SearchSpace, estimate


def test_sizes_and_counts_parse_with_their_units():
    assert parse_bytes("192KiB") == 192 * 1024
    assert parse_bytes("1.5 MiB") == 1536 * 1024
    assert parse_bytes("128kb") == 128_000
    assert parse_bytes("100B") == 100
    assert parse_count("12M") == 12_000_000
    assert parse_count("500k") == 500_000
    assert parse_count("7") == 7


@pytest.mark.parametrize(
    "text, why",
    [
        ("12XB", "unknown unit"),
        ("0KiB", "greater than zero"),
        ("-5KiB", "greater than zero"),
        ("192", "needs a unit"),
        ("lots", "positive number"),
    ],
)
def test_bad_sizes_say_what_was_received(text, why):
    with pytest.raises(ConfigError, match=why) as e:
        parse_bytes(text, "--flash")
    assert repr(text) in str(e.value)


def test_budget_constraints_are_relative_excess_and_unmeasured_is_violated():
    b = Budget(flash=1000, ram=500)
    assert b.misses({"flash": 1100, "ram": 400}) == {"flash": 100, "ram": -100}
    assert b.constraints({"flash": 1100, "ram": 400}) == [0.1, -0.2]
    assert not b.fits({"flash": 1100, "ram": 400})
    assert b.fits({"flash": 1000, "ram": 500, "instructions": 10**9})  # not limited
    assert b.constraints({"flash": 900}) == [-0.1, 1.0]  # RAM unknown: counted violated
    assert not b.fits({"flash": 900})
    with pytest.raises(ConfigError, match="at least one"):
        Budget()
    with pytest.raises(ConfigError, match="positive"):
        Budget(flash=0)


def test_space_rejects_unknown_empty_and_contradictory():
    with pytest.raises(ConfigError, match="unknown key.*depth"):
        SearchSpace.from_dict({"depth": [3]})
    with pytest.raises(ConfigError, match="width is empty"):
        SearchSpace.from_dict({"width": []})
    with pytest.raises(ConfigError, match="contradictory.*index 4.*blocks can be 4"):
        SearchSpace.from_dict({"blocks": [4, 5], "stride2": [[1, 4]]})
    with pytest.raises(ConfigError, match="contradictory.*stage_widths"):
        SearchSpace.from_dict({"stride2": [[0, 1, 2]], "stage_widths": [8, 16]})
    with pytest.raises(ConfigError, match="compression must be"):
        SearchSpace.from_dict({"compression": ["lut4"]})
    s = SearchSpace.from_dict({"width": [1.0, 1.0, 0.5], "stride2": [[1, 3]]})
    assert s.width == (1.0, 0.5)  # duplicates would weigh a value twice
    assert s.size() == 2 * 3 * 3 * 2 * 1 * 3  # width, blocks, block, kernel, stride2, compression


def test_candidate_from_params_is_small_cnn_at_width_one():
    s = SearchSpace()
    c = s.candidate(
        {
            "width": 1.0,
            "blocks": 5,
            "block": "plain",
            "kernel": 3,
            "stride2": "1-3",
            "compression": "lut16",
        }
    )
    assert c.widths() == [24, 48, 48, 64, 64]  # small_cnn's
    assert c.key == "plain-w1-b5-k3-s1-3-lut16" and c.clusters == 16
    assert Candidate(0.5, 3, "plain", 3, (0,)).widths() == [24, 24, 24]  # 48*0.5, rounded to 8


def _layers(model):
    """(kind, kernel shape, strides) of every conv and dense layer, in order."""
    return [
        (type(layer).__name__, tuple(layer.get_weights()[0].shape), getattr(layer, "strides", None))
        for layer in model.layers
        if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D", "Dense")
    ]


@pytest.mark.parametrize(
    "name, space",
    [
        ("small_cnn", SearchSpace(width=(0.75, 1.0))),
        ("tiny_cnn", SearchSpace(width=(0.7,))),
        ("tiny_cnn", SearchSpace(width=(2 / 3, 1.0), stage_widths=(24, 48, 72))),
    ],
)
def test_zoo_seeds_build_the_zoo_students(name, space):
    from kdq_tf.models.students import STUDENTS
    from kdq_tf.search.space import build_model

    seeds = dict(space.zoo_seeds())
    assert list(seeds) == [name, f"{name}+lut16", f"{name}+lut8"]
    assert [p["compression"] for p in seeds.values()] == ["none", "lut16", "lut8"]
    got = build_model(space.candidate(seeds[name]), (28, 28, 1), 10)
    want = STUDENTS[name]((28, 28, 1), 10)
    assert _layers(got) == _layers(want) and got.count_params() == want.count_params()


def test_a_space_without_the_zoo_shape_has_no_seeds():
    assert SearchSpace(stride2=((0, 2),)).zoo_seeds() == []
    assert SearchSpace(block=("separable",)).zoo_seeds() == []
    assert SearchSpace(width=(0.5, 0.75)).zoo_seeds() == []
    assert [n for n, _ in SearchSpace(compression=("lut16",)).zoo_seeds()] == [
        "tiny_cnn+lut16",
        "small_cnn+lut16",
    ]  # the default widths hold both


def _tiny(block="plain", compression="none"):
    return Candidate(1.0, 2, block, 3, (1,), compression, stage_widths=(8, 16))


def test_estimate_matches_hand_counts():
    # 8x8x1 input, 3 classes. Block 0: 3x3x1x8 conv + BN(8); block 1: stride 2, 3x3x8x16 + BN(16);
    # head: 1x1 16->3 conv with bias.
    e = estimate(_tiny(), (8, 8, 1), 3)
    assert e["params"] == (72 + 4 * 8) + (1152 + 4 * 16) + (48 + 3)
    assert e["macs"] == 8 * 8 * 8 * 9 + 4 * 4 * 16 * 72 + 48
    assert e["int8_weight_bytes"] == (72 + 1152 + 48) + 4 * (8 + 16 + 3)
    assert e["arena_floor"] == max(64 + 64 * 8, 64 * 8 + 16 * 16, 16 * 16 + 16)
    # Separable block 1: 3x3 depthwise on 8 channels (stride 2) + BN(8), then 1x1 8->16 + BN(16).
    s = estimate(_tiny("separable"), (8, 8, 1), 3)
    assert s["params"] == (72 + 32) + (72 + 32 + 128 + 64) + 51
    assert s["macs"] == 4608 + 4 * 4 * 72 + 4 * 4 * 128 + 48
    # LUT with 16 clusters: 4-bit indices for the kernels, the int32 biases unchanged.
    lut = estimate(_tiny(compression="lut16"), (8, 8, 1), 3)
    assert lut["weight_bytes"] == (72 + 1152 + 48) // 2 + 4 * 27


@pytest.mark.parametrize(
    "cand",
    [
        Candidate(1.0, 5, "plain", 3, (1, 3)),
        Candidate(0.75, 6, "separable", 5, (0, 2)),
        Candidate(1.25, 4, "separable", 3, (1, 2), "lut8"),
        Candidate(0.5, 3, "plain", 5, ()),
        Candidate(1.0, 6, "hybrid", 3, (1, 3), "lut16"),
        Candidate(0.75, 4, "hybrid", 5, ()),
    ],
    ids=lambda c: c.key,
)
def test_built_model_has_the_estimated_params_and_macs(cand):
    from kdq_tf.models.students import count_macs
    from kdq_tf.search.space import build_model

    m = build_model(cand, (28, 28, 1), 10)
    e = estimate(cand, (28, 28, 1), 10)
    assert m.count_params() == e["params"]
    assert count_macs(m) == e["macs"]


def test_hybrid_at_width_one_is_fast_cnn_up_to_its_head():
    """The hybrid block is fast_cnn's rule: separable before the last stage, plain in it."""
    from kdq_tf.models.students import STUDENTS
    from kdq_tf.search.space import build_model

    c = Candidate(1.0, 5, "hybrid", 3, (1, 3))
    assert c.key == "hyb-w1-b5-k3-s1-3-none"
    assert [c.plain_at(i) for i in range(5)] == [True, False, False, True, True]
    got = build_model(c, (28, 28, 1), 10)
    want = STUDENTS["fast_cnn"]((28, 28, 1), 10)
    assert _layers(got) == _layers(want) and got.count_params() == want.count_params()


def _rec(n, acc, flash, instr, fits=True, ram=1000):
    return {
        "trial": n,
        "outcome": "measured",
        "candidate": {"key": f"c{n}"},
        "kernels": "cmsis-nn",
        "val_accuracy": acc,
        "figures": {"flash": flash, "ram": ram, "instructions": instr},
        "fits": fits,
        "device_model_bytes": flash // 2,
        "bit_exact": "10/10",
        "images": {"cmsis-nn": {"exact": True}},
    }


def test_choice_and_front_use_only_what_fits():
    recs = [
        _rec(0, 0.90, 100, 5),
        _rec(1, 0.92, 150, 6),
        _rec(2, 0.95, 300, 9, fits=False),
        _rec(3, 0.89, 120, 7),
        _rec(4, 0.92, 140, 6),
    ]
    assert front.choose(recs)["trial"] == 4  # 0.92 at less flash than trial 1
    assert [r["trial"] for r in front.pareto(recs)] == [4, 0]  # 1 and 3 are dominated
    assert front.choose([recs[2]]) is None


def test_closest_misses_rank_by_relative_excess():
    b = Budget(flash=100, ram=1000)
    recs = [
        _rec(0, 0.9, 150, 5, fits=False),
        _rec(1, 0.9, 110, 5, fits=False),
        {
            "trial": 2,
            "outcome": "rejected",
            "candidate": {"key": "c2"},
            "estimated": {"flash": 105, "ram": 900, "instructions": None},
        },
    ]
    rows = front.closest(recs, b)
    assert [r["trial"] for r in rows] == [2, 1, 0]
    assert rows[0]["over_by"] == {"flash": 5} and not rows[0]["measured"]
    assert "flash over by 10 B" in front.miss_line(rows[1])


def test_floors_bound_only_candidates_whose_ops_include_the_measured_ones():
    from kdq_tf.search.trial import estimated_figures, floors

    def measured(block, decode, flash_other, ram_other):
        return {
            "candidate": {"block": block},
            "compressed": {"tensors_compressed": 2} if decode else None,
            "images": {"cmsis-nn": {"flash_other": flash_other, "ram_other": ram_other}},
        }

    f = floors(
        [
            measured("separable", False, 90_000, 3000),
            measured("plain", True, 110_000, 5000),
            measured("plain", False, 80_000, 2500),
        ]
    )
    est = {"weight_bytes": 1000, "arena_floor": 500}
    plain = Candidate(1.0, 3, "plain", 3, (1,))
    # a plain int8 candidate: only the plain int8 image's code bounds it
    assert estimated_figures(plain, est, ["cmsis-nn"], f) == {
        "flash": 81_000,
        "ram": 3000,
        "instructions": None,
    }
    # a separable LUT candidate: every image measured so far runs a subset of its ops
    sep_lut = Candidate(1.0, 3, "separable", 3, (1,), "lut16")
    assert estimated_figures(sep_lut, est, ["cmsis-nn"], f)["flash"] == 81_000
    # a kernel set never measured: no floor yet, the weights alone
    assert estimated_figures(plain, est, ["reference"], f)["flash"] == 1000


def test_the_example_space_is_the_built_in_default():
    # docs/search.md says so; the example is what users copy and narrow.
    from conftest import ROOT

    assert SearchSpace.from_toml(ROOT / "examples" / "search_space.toml") == SearchSpace()


def test_zoo_seeds_are_queued_once_and_not_when_tried():
    import optuna

    from kdq_tf.search.engine import seed_with_zoo

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    space = SearchSpace()
    zoo = [f"{n}{c}" for n in ("tiny_cnn", "small_cnn") for c in ("", "+lut16", "+lut8")]
    assert seed_with_zoo(study, space) == zoo
    waiting = [t for t in study.trials if t.state == optuna.trial.TrialState.WAITING]
    assert [t.user_attrs["zoo"] for t in waiting] == zoo
    seed_with_zoo(study, space)  # a second worker, or a resume: nothing queued twice
    assert len(study.trials) == 6
    # The queue runs first: the first trials asked for, sampled as the objective samples, are
    # tiny_cnn (width 0.7) and then its LUT variants.
    keys = []
    for _ in range(2):
        t = study.ask()
        params = {k: t.suggest_categorical(k, v) for k, v in space.choices().items()}
        keys.append(space.candidate(params).key)
    assert keys == ["plain-w0.7-b5-k3-s1-3-none", "plain-w0.7-b5-k3-s1-3-lut16"]


def test_pruning_spares_a_trial_ahead_of_the_best_that_fits():
    """ASHA alone would stop both trials below (four others scored 0.95 at epoch 1). The best
    model that fits (0.90 in the end, the 0.95 ones are over budget) scored 0.85 at epoch 1: a
    trial at 0.86 then is ahead of it and goes on; one at 0.80 is stopped."""
    import optuna

    from kdq_tf.search.study import PruneOnEpoch, best_fitting, pruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=pruner("asha"))
    for at_1, final, fits in [(0.95, 0.96, False)] * 4 + [(0.85, 0.90, True), (0.88, 0.89, True)]:
        t = study.ask()
        t.report(at_1, 1)
        t.should_prune()  # the pruner files the trial's score at the rung
        rec = {"outcome": "measured", "val_accuracy": final, "fits": fits}
        t.set_user_attr("record", rec)
        study.tell(t, final)
    assert best_fitting(study, 1) == 0.85  # the fitting trial with the best final accuracy
    assert best_fitting(study, 2) is None
    PruneOnEpoch(study.ask()).on_epoch_end(0, {"val_accuracy": 0.86})  # goes on
    with pytest.raises(optuna.TrialPruned, match="behind the best that fits"):
        PruneOnEpoch(study.ask()).on_epoch_end(0, {"val_accuracy": 0.80})
    control = study.ask()  # the pruner alone stops a trial at 0.86
    control.report(0.86, 1)
    assert control.should_prune()


def test_pick_image_takes_the_fewest_instructions_that_fit_and_names_its_kernel_set():
    from kdq_tf.search.budget import Budget
    from kdq_tf.search.trial import kernel_set, pick_image

    img = lambda flash, ram, instr: {  # noqa: E731
        "flash": flash, "ram": ram, "instructions": instr, "exact": True,
    }  # fmt: skip
    images = {
        "cmsis-nn": img(100, 30, 9_000_000),  # fused LUT: lean RAM
        "cmsis-nn+decode": img(99, 50, 7_000_000),  # DECODE: lean instructions
        "reference": img(80, 30, 30_000_000),
    }
    assert pick_image(images, Budget(flash=1000, ram=64)) == "cmsis-nn+decode"
    assert pick_image(images, Budget(flash=1000, ram=40)) == "cmsis-nn"
    assert pick_image(images, Budget(flash=90, ram=40)) == "reference"
    assert kernel_set("cmsis-nn+decode") == "cmsis-nn" and kernel_set("reference") == "reference"
