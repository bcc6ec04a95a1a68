"""benchmarks/search.py's verdicts, on hand-made records: which zoo students a probe keeps, and
how the found model is judged against the best zoo student that fits."""

import importlib.util

import pytest
from conftest import ROOT

spec = importlib.util.spec_from_file_location("search_bench", ROOT / "benchmarks" / "search.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

KIB = 1024


def image(flash_kib, ram_kib, minstr, exact=True):
    return {
        "flash": flash_kib * KIB,
        "ram": ram_kib * KIB,
        "instructions": int(minstr * 1e6),
        "exact": exact,
        "bit_exact": "10/10" if exact else "3/10",
    }


def test_could_fit_reads_every_kernel_set_and_budget():
    # A: 128 KiB / 40 KiB; B: 192 / 64; C: 256 / 96 / 12 M.
    assert bench.could_fit({"reference": image(120, 30, 50)}) == ["A", "B"]
    assert bench.could_fit({"cmsis-nn": image(200, 90, 11.9)}) == ["C"]
    # 12.2 M is within the probe's 2% slack of C's 12 M; 12.3 M is not.
    assert bench.could_fit({"cmsis-nn": image(200, 90, 12.2)}) == ["C"]
    assert bench.could_fit({"cmsis-nn": image(200, 90, 12.3)}) == []
    # An image that is not bit-exact fits nothing, however small.
    assert bench.could_fit({"cmsis-nn": image(100, 20, 1, exact=False)}) == []
    assert bench.could_fit({"cmsis-nn": image(300, 20, 1), "reference": image(190, 20, 40)}) == [
        "B"
    ]


def run(acc, img, val=0.9):
    return {
        "test_accuracy": acc,
        "val_accuracy": val,
        "images": {"cmsis-nn": img, "reference": img},
    }


def search(*keys_vals):
    """A search record whose finalists are these (candidate key, search val) rows."""
    rows = [{"candidate": k, "val_accuracy": v} for k, v in keys_vals]
    return {"found": {"key": keys_vals[0][0]}, "finalists": rows}


def test_compare_judges_found_against_best_fitting_zoo():
    small = image(100, 30, 10)  # fits A, B and C
    big = image(250, 90, 11)  # fits C only
    res = {
        "search": {"C": search(("f", 0.9)), "A": search(("g", 0.9))},
        "final": {
            **{f"zoo_small/seed{i}": run(a, small) for i, a in enumerate((0.90, 0.91, 0.92))},
            **{f"zoo_big/seed{i}": run(a, big) for i, a in enumerate((0.925, 0.925, 0.925))},
            **{f"found:f/seed{i}": run(a, big) for i, a in enumerate((0.93, 0.931, 0.932))},
            **{f"found:g/seed{i}": run(a, image(60, 20, 5)) for i, a in enumerate((0.91,) * 3)},
        },
    }
    out = bench.compare(res)
    # C: the best zoo student that fits is zoo_big (92.5%, std 0); found gains 0.6 pt against
    # two stds of 0.1 pt: it beats it.
    c = out["C"]
    assert c["best_zoo"] == "zoo_big"
    assert c["verdict"]["gain_pts"] == pytest.approx(0.6)
    assert c["verdict"]["two_stds_pts"] == pytest.approx(0.1)
    assert c["verdict"]["at_least_as_accurate"] and c["verdict"]["beats"]
    # A: only zoo_small fits (91.0 ± 1.0); found g ties it at 91.0 with 60% of its flash.
    a = out["A"]
    assert a["best_zoo"] == "zoo_small"
    assert a["verdict"]["gain_pts"] == pytest.approx(0.0)
    assert not a["verdict"]["beats"]
    assert a["verdict"]["matches_smaller"]
    # B has no found model: rows but no verdict.
    assert out["B"]["verdict"] is None and out["B"]["best_zoo"] == "zoo_small"


def test_a_found_zoo_student_is_compared_as_itself():
    img = image(150, 50, 20)  # fits B only
    key = "plain-w1-b5-k3-s1-3-lut16"  # small_cnn's five blocks, 16 clusters
    assert bench.zoo_name(key) == "small_cnn+lut16"
    assert bench.zoo_name("plain-w1-b5-k3-s1-3-lut8") is None  # not a zoo finalist
    assert bench.zoo_name("plain-w0.7-b5-k3-s1-3-none") == "tiny_cnn"
    res = {
        "search": {"B": search((key, 0.9))},
        "final": {
            **{f"small_cnn+lut16/seed{i}": run(a, img) for i, a in enumerate((0.92, 0.93, 0.94))},
            **{f"tiny_cnn/seed{i}": run(a, img) for i, a in enumerate((0.91, 0.91, 0.91))},
        },
    }
    b = bench.compare(res)["B"]
    assert b["found"] == "small_cnn+lut16" == b["best_zoo"]
    assert b["verdict"]["gain_pts"] == 0 and b["verdict"]["at_least_as_accurate"]
    assert not b["verdict"]["beats"]


def test_a_gain_that_rounds_to_zero_from_below_reads_plus_zero():
    img = image(100, 30, 10)
    res = {
        "search": {"A": search(("g", 0.9))},
        "final": {
            **{f"zoo_small/seed{i}": run(0.91004, img) for i in range(3)},
            **{f"found:g/seed{i}": run(0.91, img) for i in range(3)},
        },
    }
    v = bench.compare(res)["A"]["verdict"]
    # 0.91 - 0.91004 is -0.004 pt: not at least as accurate, but it prints as no change
    assert not v["at_least_as_accurate"]
    assert f"{v['gain_pts']:+.2f}" == "+0.00"


def test_a_lut_model_fits_through_whichever_image_meets_the_budget():
    """A LUT model's fused image is lean in RAM, its DECODE variant in instructions: at C
    (12 M instructions) only the DECODE variant fits, at A (40 KiB RAM) only the fused one; a
    variant counts only when every seed's image of it fits."""
    fused, decode = image(120, 35, 12.5), image(118, 60, 10.5)
    runs = {"cmsis-nn": fused, "cmsis-nn+decode": decode}
    res = {
        "search": {},
        "final": {f"lut/seed{i}": {"test_accuracy": 0.9, "images": runs} for i in range(3)},
    }
    out = bench.compare(res)
    assert out["C"]["rows"][0]["kernels"] == "cmsis-nn+decode"
    assert out["A"]["rows"][0]["kernels"] == "cmsis-nn"
    # seed 2's DECODE image misses C: the model does not fit C at all
    res["final"]["lut/seed2"] = {
        "test_accuracy": 0.9,
        "images": {"cmsis-nn": fused, "cmsis-nn+decode": image(118, 60, 12.4)},
    }
    assert bench.compare(res)["C"]["rows"] == []


def test_later_seeds_go_to_students_near_the_best_on_validation():
    """Screening reads seed 0's validation accuracy (never test) at each budget a student fits;
    small_cnn and fast_cnn always get every seed."""

    def first(val, img):  # test accuracies that would reverse the order: they must not count
        return {"val_accuracy": val, "test_accuracy": 1 - val, "images": {"cmsis-nn": img}}

    a_img, b_img = image(100, 30, 10), image(180, 60, 30)  # fits A/B/C; fits B only
    res = {
        "final": {
            "tiny_cnn/seed0": first(0.905, a_img),  # best at A and C
            "ds_cnn/seed0": first(0.901, a_img),  # 0.4 pt behind: kept
            "resnet8/seed0": first(0.930, b_img),  # best at B
            "mobilenetv2/seed0": first(0.924, b_img),  # 0.6 pt behind at B: screened out
            "small_cnn/seed0": first(0.80, b_img),  # far behind, kept for issue #20
            "found:x/seed0": first(0.99, a_img),  # found models are not zoo students
            "ds_cnn/seed1": first(0.5, a_img),
        }
    }
    assert bench.contenders(res, 0.5) == ["ds_cnn", "resnet8", "small_cnn", "tiny_cnn"]
    assert "mobilenetv2" in bench.contenders(res, 0.7)
    # at A, tiny_cnn is best; with a tiny margin only the best of each budget stays
    assert bench.contenders(res, 0.1) == ["resnet8", "small_cnn", "tiny_cnn"]


def test_a_lut_variant_starts_from_its_dense_siblings_distillation(tmp_path):
    dense, lut = tmp_path / "tiny_cnn" / "seed0", tmp_path / "tiny_cnn+lut16" / "seed0"
    assert not bench.share_distillation(dense, lut)  # nothing distilled yet
    assert not (lut / "run").exists()
    (dense / "run").mkdir(parents=True)
    (dense / "run" / "student.keras").write_bytes(b"weights")
    bench.files.write_json(dense / "run" / "metrics.json", {"teacher": {}, "student": {"a": 1}})
    assert bench.share_distillation(dense, lut)
    assert (lut / "run" / "student.keras").read_bytes() == b"weights"
    assert bench.files.read_json(lut / "run" / "metrics.json") == {"student": {"a": 1}}
    # a variant whose own run has begun is left as it is
    bench.files.write_json(lut / "run" / "metrics.json", {"student": {"a": 2}, "student_qat": {}})
    assert not bench.share_distillation(dense, lut)
    assert bench.files.read_json(lut / "run" / "metrics.json")["student"] == {"a": 2}


def test_search_picks_run_first_then_the_zoo_cheapest_first_lut_after_dense():
    finalists = dict.fromkeys(["big", "big+lut16", "small", "small+lut16", "found:x", "found:y"])
    probe = {
        "big": {"seconds": 500},
        "big+lut16": {"seconds": 20},
        "small": {"seconds": 100},
        "small+lut16": {"seconds": 900},
    }
    # found:x is a search's pick; found:y (no probe, no pick) comes after the zoo
    assert bench.run_order(finalists, probe, picks=["found:x"]) == [
        "found:x",
        "small",
        "small+lut16",
        "big",
        "big+lut16",
        "found:y",
    ]


def test_the_found_model_is_the_searchs_own_pick():
    """The search chose on validation (its rung's, where it ran one); the final phase trains
    that pick and compares it, whatever other finalists or earlier picks scored on test."""
    fits_c = image(200, 60, 10)
    res = {
        "search": {"C": search(("q", 0.91), ("p", 0.92))},
        "final": {
            **{f"found:q/seed{i}": run(0.90, fits_c) for i in range(3)},
            "found:p/seed0": run(0.99, fits_c),  # an earlier search's pick: not compared
            "found:tiny/seed0": run(0.99, fits_c),
        },
    }
    assert bench.found_key(res, "C") == "found:q"
    assert bench.found_key(res, "A") is None  # no search at A
    c = bench.compare(res)["C"]
    assert c["found"] == "found:q"
    assert [r["name"] for r in c["rows"]] == ["found:q"]
    # a pick that is a zoo student trains, and is compared, under the zoo's name
    res["search"]["A"] = search(("plain-w0.7-b5-k3-s1-3-none", 0.9))
    assert bench.found_key(res, "A") == "tiny_cnn"


def test_candidate_keys_parse_back():
    from kdq_tf.search.rung import params_of
    from kdq_tf.search.space import SearchSpace

    space = SearchSpace()
    for key in (
        "hyb-w0.5-b6-k5-s0-2-lut16",
        "sep-w1-b6-k5-s1-3-none",
        "plain-w0.75-b4-k3-s2-3-lut8",
    ):
        assert space.candidate(params_of(bench._candidate_dict(key))).key == key


def test_the_bar_is_the_best_zoo_student_with_every_seed():
    """A student screened out after seed 0 (n=1) does not set the bar with one lucky run."""
    img = image(100, 30, 10)
    res = {
        "search": {},
        "final": {
            **{f"full/seed{i}": run(a, img) for i, a in enumerate((0.90, 0.91, 0.92))},
            "lucky/seed0": run(0.95, img),
        },
    }
    assert bench.compare(res)["A"]["best_zoo"] == "full"
    del res["final"]["full/seed1"], res["final"]["full/seed2"]  # all at one seed: plain max
    assert bench.compare(res)["A"]["best_zoo"] == "lucky"


def test_a_rung_search_reports_its_pick_on_the_final_schedule_and_its_test_score():
    """A --rung search's wall time holds its final rung and export: both reports say so, and
    name the pick's validation accuracy as the final schedule's, with the test score it got."""
    spec = importlib.util.spec_from_file_location("readme", ROOT / "benchmarks" / "readme_table.py")
    readme = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(readme)
    img = image(120, 30, 40)
    row = {"candidate": "plain-w0.7-b5-k3-s1-3-none", "kernels": "reference", **img}
    rung = [{**row, "val_accuracy": 0.93, "search_val_accuracy": 0.91, "fits": True}]
    search = {
        "budget": {"flash": 128 * KIB, "ram": 40 * KIB, "instructions": None},
        "trials": 50,
        "rejected": 5,
        "pruned": 20,
        "measured": 10,
        "fit": 4,
        "wall_time_s": 6300.0,
        "machine": {"cores": 2, "cpu": "Xeon"},  # this search's own machine
        "found": {"key": row["candidate"]},
        "found_val_accuracy": 0.93,
        "found_figures": img,
        "found_kernels": "reference",
        "settings": {"final_epochs": 12, "final_qat_epochs": 2, "schedule": {"temperature": 2.0}},
        "final_rung": rung,
        "chosen_export": {
            "kernels": "reference",
            "test_accuracy_int8": 0.9234,
            "bit_exact": "10/10",
        },
    }
    res = {"machine": {"cores": 2, "cpu": "EPYC"}, "search": {"A": search}}
    md = bench.markdown(res)
    assert (
        "in 105 min on 2 cores of Xeon, its final rung and the chosen model's export included" in md
    )
    assert "val (rung: 12 + 2 epochs, T 2)" in md
    assert "| plain-w0.7-b5-k3-s1-3-none | reference | 91.00% | 93.00% |" in md
    assert "Chosen (the rung's best on validation)" in md
    assert "int8 test accuracy 92.34% (scored once)" in md
    text = readme.search_section(res)
    assert (
        "50 trials, a final rung of 1 and the pick's export in 105 min on 2 cores of Xeon" in text
    )
    del search["machine"]  # a search recorded before each named its machine: the file's
    assert "in 105 min on 2 cores of EPYC" in readme.search_section(res)
    assert "93.00% validation accuracy (int8, final rung: 12 + 2 epochs, T 2)" in text
    assert "test accuracy, scored once: 92.34%" in text
    rung[0]["fits"] = False  # no finalist fits any more: the search's own pick ships
    assert "Chosen (the search's own pick)" in bench.markdown(res)
    assert "(int8, search schedule)" in readme.search_section(res)
    search.update(final_rung=[], found=None, chosen_export=None)  # nothing fit at all
    assert "Nothing fit: no final rung, nothing exported." in bench.markdown(res)
    assert "a final rung" not in readme.search_section(res)
    del search["final_rung"], search["chosen_export"]  # a search whose rung is replayed later
    search["found"] = {"key": row["candidate"]}
    assert "(int8, search schedule)" in readme.search_section(res)


def test_the_readme_says_whether_the_comparison_is_final():
    """The README line names both models with their seeds, and says "not final" until the found
    model and every zoo student that gets all seeds have them."""
    spec = importlib.util.spec_from_file_location("readme", ROOT / "benchmarks" / "readme_table.py")
    readme = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(readme)
    img = image(100, 30, 10)  # fits every budget
    row = {"candidate": "f", "val_accuracy": 0.9, "kernels": "cmsis-nn"}
    r = {
        "budget": {"flash": 128 * KIB, "ram": 40 * KIB},
        **dict(trials=5, wall_time_s=600, rejected=0, pruned=0, measured=5, fit=5),
        "found": {"key": "f"},
        "found_figures": img,
        "found_kernels": "cmsis-nn",
        "found_val_accuracy": 0.9,
        "finalists": [row],
    }
    res = {
        "machine": {"cores": 2, "cpu": "EPYC"},
        "search": {"A": r},
        "screen": {"pts": 0.5, "all_seeds": ["zoo", "close"]},
        "final": {
            **{f"zoo/seed{i}": run(a, img) for i, a in enumerate((0.90, 0.91, 0.92))},
            **{f"found:f/seed{i}": run(a, img) for i, a in enumerate((0.93, 0.93, 0.93))},
            "close/seed0": run(0.905, img),  # a contender whose later seeds have not run
        },
    }
    res["comparison"] = bench.compare(res)
    text = readme.search_section(res)
    assert "the found `f` 93.00 ± 0.00% (n=3) against" in text
    assert "`zoo` 91.00 ± 1.00% (n=3): +2.00 pts (two stds 1.00); not final" in text
    assert "Found vs best zoo (zoo): +2.00 pts (two stds 1.00); not final" in bench.markdown(res)
    res["final"].update({f"close/seed{i}": run(0.905, img) for i in (1, 2)})
    res["comparison"] = bench.compare(res)
    assert "(two stds 1.00)." in readme.search_section(res)
    assert "Found vs best zoo (zoo): +2.00 pts (two stds 1.00)." in bench.markdown(res)
    res["search"]["A"]["found"] = {"key": "plain-w0.7-b5-k3-s1-3-none"}  # tiny_cnn, found
    res["final"].update({f"tiny_cnn/seed{i}": run(0.95, img) for i in range(3)})
    res["comparison"] = bench.compare(res)
    assert "the found `tiny_cnn` 95.00 ± 0.00% (n=3), which is the best zoo student that fits" in (
        readme.search_section(res)
    )
