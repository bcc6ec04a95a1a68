"""benchmarks/hw_student.py: its candidates against hand counts, and a choice that reads only
validation accuracy and the instruction limit."""

import importlib.util
from types import SimpleNamespace

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


def _run(val, test, instr, exact=True):
    return {
        "val_accuracy": val,
        "test_accuracy": test,
        "image": {"instructions": instr, "exact": exact},
    }


def test_the_choice_reads_validation_and_the_limit_never_test():
    limit = hw.LIMIT * hw.BASELINE_INSTRUCTIONS
    a, b, c, d = list(hw.CANDIDATES)
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
    assert hw.choose(res, 2) == a
    del res["runs"][f"{a}/seed1"]  # a candidate short of its screen seeds is not chosen yet
    assert hw.choose(res, 2) == b
    assert hw.choose({"runs": {}}, 2) is None
