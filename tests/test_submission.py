import json
import os

import numpy as np
import pytest

import train_full as tf

TASKS = [tf.Task("a", "test", [], [np.array([[1, 2]], np.uint8)], None),
         tf.Task("b", "test", [], [np.array([[3]], np.uint8), np.array([[0, 0], [5, 0]], np.uint8)], None)]
TRUTH = np.array([[9, 9]], np.uint8)


def full_submission():
    votes = {"a": [tf.Vote((TRUTH, TASKS[0].test_inputs[0]), (3, 0), (TRUTH,))],
             "b": [tf.vote([], [], grid) for grid in TASKS[1].test_inputs]}
    return tf.make_submission(TASKS, votes)


def test_every_test_task_and_input_gets_two_attempts_in_order():
    submission, num_fallback = full_submission()
    assert list(submission) == ["a", "b"]
    assert submission["a"] == [{"attempt_1": [[9, 9]], "attempt_2": [[1, 2]]}]
    assert len(submission["b"]) == 2 and submission["b"][1]["attempt_1"] == [[0, 0], [5, 0]]
    assert num_fallback == 2
    tf.validate_submission(submission, TASKS)
    assert all(type(v) is int for entry in submission["b"] for g in entry.values() for row in g for v in row)


def test_a_task_without_predictions_gets_a_counted_fallback_with_distinct_attempts():
    submission, num_fallback = tf.make_submission(TASKS, {"a": []})
    assert num_fallback == 3
    tf.validate_submission(submission, TASKS)
    assert all(entry["attempt_1"] != entry["attempt_2"] for entries in submission.values() for entry in entries)


def broken(change):
    submission = json.loads(json.dumps(full_submission()[0]))
    change(submission)
    return submission


@pytest.mark.parametrize("submission, problem", [
    ([{"task_id": "a", "attempt_1": [[1]], "attempt_2": [[1]]}], "must be an object of task id"),
    (broken(lambda s: s.pop("b")), "task b: missing"),
    (broken(lambda s: s["b"].pop()), "task b: 1 entries for 2 test inputs"),
    (broken(lambda s: s["a"][0].pop("attempt_2")), "task a: test input 0: missing attempt_2"),
    (broken(lambda s: s["b"][1].__setitem__("attempt_1", [[0, 0.0], [5, 0]])), "task b: test input 1: attempt_1"),
    (broken(lambda s: s["a"][0].__setitem__("attempt_1", [[True, 1]])), "task a: test input 0: attempt_1"),
    (broken(lambda s: s["a"][0].__setitem__("attempt_1", [[1, 2], [3]])), "task a: test input 0: attempt_1"),
    (broken(lambda s: s["a"][0].__setitem__("attempt_2", [[12]])), "task a: test input 0: attempt_2"),
    (broken(lambda s: s.__setitem__("zzz", [])), "task zzz: not in the test file"),
])
def test_the_validator_rejects_what_kaggle_would(submission, problem):
    with pytest.raises(tf.SubmissionError, match=problem):
        tf.validate_submission(submission, TASKS)


def test_numpy_integers_are_not_plain_ints():
    submission = broken(lambda s: None)
    submission["a"][0]["attempt_1"] = [[np.int64(1), 2]]
    with pytest.raises(tf.SubmissionError):
        tf.validate_submission(submission, TASKS)


def test_an_atomic_write_replaces_the_file_whole_and_leaves_nothing_behind(tmp_path):
    path = str(tmp_path / "out" / "submission.json")
    tf.write_json_atomic(path, {"first": 1})
    tf.write_json_atomic(path, {"second": 2})
    assert json.load(open(path)) == {"second": 2}
    assert os.listdir(tmp_path / "out") == ["submission.json"]


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = str(tmp_path / "submission.json")
    tf.write_json_atomic(path, {"good": 1})
    with pytest.raises(TypeError):
        tf.write_json_atomic(path, {"bad": object()})
    assert json.load(open(path)) == {"good": 1}
    assert os.listdir(tmp_path) == ["submission.json"]
