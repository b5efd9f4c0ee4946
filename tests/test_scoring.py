import numpy as np
import pytest

import train_full as tf

A = [[1, 2], [3, 4]]
B = [[1, 2], [3, 5]]
C = [[0, 0, 0]]


def test_a_test_output_is_solved_when_either_attempt_matches_exactly():
    assert tf.score_test_output((A, B), A)["solved"]
    assert tf.score_test_output((B, A), A)["solved"]
    assert not tf.score_test_output((B, C), A)["solved"]


def test_shape_and_pixel_accuracy_count_only_attempts_of_the_right_shape():
    result = tf.score_test_output((C, B), A)
    assert result == {"solved": False, "shape_ok": True, "pixel_accuracy": 0.75}
    assert tf.score_test_output((C, C), A) == {"solved": False, "shape_ok": False, "pixel_accuracy": None}


def test_a_transposed_answer_is_not_solved():
    assert not tf.score_test_output((np.array(A).T, C), A)["solved"]


def test_task_score_averages_over_tasks_and_output_score_over_outputs():
    solutions = {"three": [A, B, C], "one": [A], "missing": [C, C]}
    attempts = {"three": [(B, A), (A, B), (A, B)],   # 2 of 3 solved, the first by attempt_2
                "one": [(A, C)]}                     # 1 of 1
    per_task, summary = tf.score_predictions(attempts, solutions)
    assert [r["solved"] for r in per_task["three"]] == [True, True, False]
    assert summary["task_score"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert summary["output_score"] == pytest.approx(3 / 6)
    assert summary["tasks_solved"] == 1
    assert summary["shape_accuracy"] == pytest.approx(3 / 6)  # no C-shaped attempt; "missing" has none
    assert summary["pixel_accuracy"] == pytest.approx(1.0)    # every right-shaped best attempt is exact
    assert (summary["num_tasks"], summary["num_outputs"]) == (3, 6)


def test_pixel_accuracy_is_the_mean_of_the_best_right_shaped_attempt():
    _, summary = tf.score_predictions({"t": [(B, C), (C, C)]}, {"t": [A, A]})
    assert summary["pixel_accuracy"] == pytest.approx(0.75)
    assert summary["shape_accuracy"] == pytest.approx(0.5)
    assert summary["task_score"] == 0.0


def test_no_tasks_scores_zero():
    assert tf.score_predictions({}, {})[1]["task_score"] == 0.0
