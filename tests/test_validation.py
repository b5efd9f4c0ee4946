"""Every kind of bad input stops loading with an ARCDataError naming the file, the task, the pair and
the problem."""
import os

import pytest

import train_full as tf
from helpers import make_task, small_dataset, write_json, write_kaggle_folder

BAD_GRIDS = {
    "boolean cell": ([[1, True]], "row 0 column 1 is bool True, not an int 0..9"),
    "float cell": ([[1, 2.0]], "row 0 column 1 is float 2.0"),
    "string cell": ([["3", 1]], "row 0 column 0 is str '3'"),
    "None cell": ([[1], [None]], "row 1 column 0 is NoneType None"),
    "colour 10": ([[0, 10]], "row 0 column 1 is int 10"),
    "negative colour": ([[-1]], "row 0 column 0 is int -1"),
    "ragged rows": ([[1, 2], [3]], "row 1 has 1 cells but row 0 has 2 (ragged grid)"),
    "empty row": ([[1], []], "row 1 must be a non-empty list"),
    "empty grid": ([], "a grid must be a non-empty list of rows"),
    "None grid": (None, "a grid must be a non-empty list of rows, got NoneType"),
    "row not a list": ([1, 2], "row 0 must be a non-empty list of ints, got int 1"),
    "31 rows": ([[0]] * 31, "31 rows, more than 30"),
    "31 columns": ([[0] * 31], "31 columns, more than 30"),
}


@pytest.mark.parametrize("grid, problem", BAD_GRIDS.values(), ids=BAD_GRIDS.keys())
@pytest.mark.parametrize("place, where", [
    (lambda task, g: task["train"][1].__setitem__("input", g), "train pair 1 input"),
    (lambda task, g: task["train"][0].__setitem__("output", g), "train pair 0 output"),
    (lambda task, g: task["test"][0].__setitem__("input", g), "test pair 0 input"),
])
def test_a_bad_grid_is_named_by_file_task_pair_and_problem(tmp_path, grid, problem, place, where):
    data = small_dataset()
    place(data["evaluation"]["evalB"], grid)
    write_kaggle_folder(str(tmp_path), data)
    with pytest.raises(tf.ARCDataError) as error:
        tf.load_kaggle_folder(str(tmp_path))
    path = os.path.join(str(tmp_path), "arc-agi_evaluation_challenges.json")
    assert str(error.value).startswith(f"{path}: task evalB: {where}: {problem}")


def test_the_largest_valid_grid_is_accepted():
    assert tf.validate_grid([[9] * 30] * 30, "here").shape == (30, 30)


BAD_TASKS = {
    "not an object": ([], "a task must be an object with 'train' and 'test'"),
    "no train": ({"test": [{"input": [[0]]}]}, "'train' must be a non-empty list of pairs, got NoneType"),
    "empty train": ({"train": [], "test": [{"input": [[0]]}]}, "'train' must be a non-empty list"),
    "no test": ({"train": [{"input": [[0]], "output": [[0]]}]}, "'test' must be a non-empty list"),
    "pair without output": ({"train": [{"input": [[0]]}], "test": [{"input": [[0]]}]},
                            "train pair 0 has no 'output'"),
    "pair not an object": ({"train": [[[0]]], "test": [{"input": [[0]]}]},
                           "train pair 0 must be an object with 'input' and 'output'"),
    "test without input": ({"train": [{"input": [[0]], "output": [[0]]}], "test": [{"output": [[0]]}]},
                           "test pair 0 has no 'input'"),
    "some test outputs": ({"train": [{"input": [[0]], "output": [[0]]}],
                           "test": [{"input": [[0]], "output": [[1]]}, {"input": [[0]]}]},
                          "1 of 2 test pairs have an output"),
}


@pytest.mark.parametrize("task, problem", BAD_TASKS.values(), ids=BAD_TASKS.keys())
def test_a_bad_task_file_is_named_by_file_task_and_problem(tmp_path, task, problem):
    path = str(tmp_path / "training" / "abc123.json")
    write_json(path, task)
    with pytest.raises(tf.ARCDataError, match="^" + f"{path}: task abc123: {problem}".replace("(", r"\(")):
        tf.load_repository_folder(str(tmp_path))


def solutions_path(folder):
    return os.path.join(folder, "arc-agi_evaluation_solutions.json")


@pytest.mark.parametrize("change, problem", [
    (lambda s: s["evalB"].pop(), "task evalB: expected 3 solution grids, one per test input, got 2"),
    (lambda s: s.__setitem__("evalA", [[[1]], [[2]]]), "task evalA: expected 1 solution grids"),
    (lambda s: s.pop("evalA"), "task evalA: no solution entry"),
    (lambda s: s.__setitem__("stray", [[[0]]]), "task stray: has a solution but is not in the challenges file"),
    (lambda s: s["evalB"].__setitem__(1, [[1, 2], [3]]), "task evalB: solution 1: row 1 has 1 cells"),
])
def test_a_bad_solutions_file_is_named_by_file_task_and_problem(tmp_path, change, problem):
    write_kaggle_folder(str(tmp_path), small_dataset())
    solutions = tf.read_json(solutions_path(str(tmp_path)))
    change(solutions)
    write_json(solutions_path(str(tmp_path)), solutions)
    with pytest.raises(tf.ARCDataError) as error:
        tf.load_kaggle_folder(str(tmp_path))
    assert str(error.value).startswith(f"{solutions_path(str(tmp_path))}: {problem}")


def test_malformed_json_names_the_file_and_line(tmp_path):
    path = tmp_path / "arc-agi_training_challenges.json"
    path.write_text('{"a": {"train": [],\n  "test": [}\n}')
    with pytest.raises(tf.ARCDataError, match=f"^{path}: line 2 column 12: invalid JSON"):
        tf.load_kaggle_folder(str(tmp_path))


def test_a_file_that_is_not_text_names_the_file(tmp_path):
    path = tmp_path / "training" / "abc.json"
    path.parent.mkdir()
    path.write_bytes(b'{"train": "\xff\xfe"}')
    with pytest.raises(tf.ARCDataError, match=f"^{path}: not UTF-8 text"):
        tf.load_repository_folder(str(tmp_path))


def test_a_challenges_file_that_is_not_an_object_of_tasks_is_named(tmp_path):
    write_json(str(tmp_path / "arc-agi_test_challenges.json"), [make_task()])
    with pytest.raises(tf.ARCDataError, match="arc-agi_test_challenges.json: expected an object of task id"):
        tf.load_kaggle_folder(str(tmp_path))
