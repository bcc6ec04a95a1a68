"""The run summary table, against values written by hand."""

from kdq_tf.report import classification_metrics, results_table


def test_results_table_prints_seconds_as_seconds_and_accuracies_as_percentages():
    metrics = {
        "teacher": {"val_accuracy": 0.9262, "accuracy": 0.9265, "train_time_s": 0.0},
        "student": {
            "val_accuracy": 0.9233,
            "accuracy": 0.9193,
            "f1": 0.919,
            "params": 97474,
            "train_time_s": 707.74,
        },
    }
    rows = results_table(metrics).splitlines()[2:]
    assert rows[0] == "| teacher | 92.62% | 92.65% |  |  | 0.0 |"  # not "0.00%": 0 s is not a ratio
    assert rows[1] == "| student | 92.33% | 91.93% | 91.90% | 97,474 | 707.7 |"


def test_macro_metrics_by_hand():
    # true 0 0 1 1, predicted 0 1 1 1: class 0 P=1 R=.5, class 1 P=2/3 R=1.
    m = classification_metrics([0, 0, 1, 1], [0, 1, 1, 1], 2)
    assert m.accuracy == 0.75 and m.n == 4
    assert abs(m.precision - (1 + 2 / 3) / 2) < 1e-12 and abs(m.recall - 0.75) < 1e-12
    f1_0, f1_1 = 2 * 0.5 / 1.5, 2 * (2 / 3) / (5 / 3)
    assert abs(m.f1 - (f1_0 + f1_1) / 2) < 1e-12


def test_results_table_ends_with_the_kd_gain_of_each_stage_that_has_a_twin():
    metrics = {
        "student": {"accuracy": 0.9300},
        "baseline": {"accuracy": 0.9225},
        "student_qat": {"accuracy": 0.9312},
        "baseline_qat": {"accuracy": 0.9314},
    }
    lines = results_table(metrics).splitlines()
    assert (
        lines[-2]
        == "- KD gain (float): +0.75 pts test accuracy, distilled 93.00% against the scratch "
        "twin's 92.25%"
    )
    assert (
        lines[-1]
        == "- KD gain (QAT): -0.02 pts test accuracy, distilled 93.12% against the scratch "
        "twin's 93.14%"
    )
    assert "KD gain" not in results_table({"student": {"accuracy": 0.9}})
