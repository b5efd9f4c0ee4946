import json
import os

import numpy as np
import pytest

import train_full as tf
from helpers import make_task, small_dataset, write_json, write_kaggle_folder

NOWHERE = "/nonexistent-folder"


def config(**overrides):
    return {**tf.CONFIG, **overrides}


def ids(tasks):
    return [task.id for task in tasks]


def test_a_kaggle_folder_loads_every_split_with_ids_and_answers(tmp_path):
    data = small_dataset()
    data["test"] = {"hidden1": make_task(seed=20, num_test=2)}
    write_kaggle_folder(str(tmp_path), data)
    tasks = tf.load_kaggle_folder(str(tmp_path))
    assert ids(tasks["training"]) == ["train0", "train1", "train2"]
    assert ids(tasks["evaluation"]) == ["evalA", "evalB"]
    assert ids(tasks["test"]) == ["hidden1"]
    assert all(task.split == split for split in tf.SPLITS for task in tasks[split])
    evaluation_b = tasks["evaluation"][1]
    assert len(evaluation_b.test_inputs) == 3
    assert evaluation_b.test_outputs[2].tolist() == data["evaluation"]["evalB"]["test"][2]["output"]
    assert evaluation_b.train[0][0].dtype == np.uint8
    assert tasks["test"][0].test_outputs is None  # no test solutions file


def test_a_missing_solutions_file_leaves_that_split_without_answers(tmp_path):
    write_kaggle_folder(str(tmp_path), small_dataset(), solutions=("training",))
    tasks = tf.load_kaggle_folder(str(tmp_path))
    assert all(task.test_outputs is not None for task in tasks["training"])
    assert all(task.test_outputs is None for task in tasks["evaluation"])


def test_without_a_test_file_the_evaluation_challenges_stand_in_without_answers(tmp_path):
    write_kaggle_folder(str(tmp_path), small_dataset())
    tasks = tf.load_kaggle_folder(str(tmp_path))
    assert ids(tasks["test"]) == ids(tasks["evaluation"])
    assert all(task.split == "test" and task.test_outputs is None for task in tasks["test"])
    assert all(task.test_outputs is not None for task in tasks["evaluation"])


@pytest.mark.parametrize("under", ["", "data"])
def test_a_repository_folder_loads_one_task_per_file(tmp_path, under):
    for split, tasks in small_dataset().items():
        for task_id, task in tasks.items():
            write_json(str(tmp_path / under / split / f"{task_id}.json"), task)
    tasks = tf.load_repository_folder(str(tmp_path))
    assert ids(tasks["training"]) == ["train0", "train1", "train2"]
    assert all(task.test_outputs is not None for task in tasks["training"] + tasks["evaluation"])
    assert ids(tasks["test"]) == ["evalA", "evalB"]
    assert all(task.test_outputs is None for task in tasks["test"])


def test_the_kaggle_input_search_prefers_the_newest_competition(tmp_path):
    write_kaggle_folder(str(tmp_path / "arc-prize-2024"), small_dataset())
    write_kaggle_folder(str(tmp_path / "competitions" / "arc-prize-2026-arc-agi-2"), small_dataset())
    assert tf.find_kaggle_input(str(tmp_path)) == str(tmp_path / "competitions" / "arc-prize-2026-arc-agi-2")


def test_the_newest_competition_wins_even_with_its_files_a_level_deeper(tmp_path):
    write_kaggle_folder(str(tmp_path / "arc-prize-2024"), small_dataset())  # sorts first in a plain walk
    deeper = tmp_path / "competitions" / "arc-prize-2026-arc-agi-2" / "data"
    write_kaggle_folder(str(deeper), small_dataset())
    assert tf.find_kaggle_input(str(tmp_path)) == str(deeper)


def test_the_kaggle_input_search_finds_a_folder_under_another_name(tmp_path):
    write_kaggle_folder(str(tmp_path / "someone" / "arc-copy"), small_dataset())
    assert tf.find_kaggle_input(str(tmp_path)) == str(tmp_path / "someone" / "arc-copy")
    assert tf.find_kaggle_input(NOWHERE) is None


def test_the_kaggle_input_search_stays_near_the_top(tmp_path):
    write_kaggle_folder(str(tmp_path / "a" / "b" / "c" / "d"), small_dataset())
    assert tf.find_kaggle_input(str(tmp_path)) is None
    write_kaggle_folder(str(tmp_path / "a" / "b" / "c"), small_dataset())
    assert tf.find_kaggle_input(str(tmp_path)) == str(tmp_path / "a" / "b" / "c")


def test_a_named_data_dir_is_used(tmp_path):
    write_kaggle_folder(str(tmp_path), small_dataset())
    tasks, origin = tf.load_tasks(config(data_dir=str(tmp_path)), local_folder=NOWHERE, kaggle_root=NOWHERE)
    assert ids(tasks["evaluation"]) == ["evalA", "evalB"] and str(tmp_path) in origin


def test_a_named_data_dir_without_arc_files_is_an_error(tmp_path):
    with pytest.raises(tf.ARCDataError, match=f"{tmp_path}: no arc-agi_"):
        tf.load_tasks(config(data_dir=str(tmp_path)))


def test_the_local_data_folder_is_searched_before_kaggle_input(tmp_path):
    local, kaggle = tmp_path / "data", tmp_path / "input"
    write_kaggle_folder(str(local), {"training": {"local": make_task()}})
    write_kaggle_folder(str(kaggle / "arc-prize-2025"), small_dataset())
    tasks, _ = tf.load_tasks(config(), local_folder=str(local), kaggle_root=str(kaggle))
    assert ids(tasks["training"]) == ["local"]
    tasks, origin = tf.load_tasks(config(), local_folder=NOWHERE, kaggle_root=str(kaggle))
    assert ids(tasks["training"]) == ["train0", "train1", "train2"] and "arc-prize-2025" in origin


def test_the_embedded_default_is_arc_agi_2_with_a_stand_in_test_split():
    tasks, origin = tf.load_tasks(config(), local_folder=NOWHERE, kaggle_root=NOWHERE)
    assert [len(tasks[split]) for split in tf.SPLITS] == [1000, 120, 120]
    assert "arc-agi-2" in origin
    assert ids(tasks["test"]) == ids(tasks["evaluation"])
    assert all(task.test_outputs is None for task in tasks["test"])
    assert all(task.test_outputs is not None for task in tasks["training"] + tasks["evaluation"])
    assert sum(len(task.test_inputs) for task in tasks["evaluation"]) == 172  # 49 tasks have several


def test_arc_agi_1_is_embedded_on_request():
    tasks, _ = tf.load_tasks(config(data_source="arc-agi-1"), local_folder=NOWHERE, kaggle_root=NOWHERE)
    assert [len(tasks[split]) for split in tf.SPLITS] == [400, 400, 400]


def test_the_run_says_whether_the_test_tasks_are_hidden_a_placeholder_or_given(tmp_path):
    placeholder = tf.load_kaggle_folder(write_kaggle_folder(str(tmp_path / "a"), {
        **small_dataset(), "test": {k: v for k, v in small_dataset()["evaluation"].items()}}))
    assert "copies of evaluation tasks (Kaggle's public placeholder" in tf.describe_test_split(placeholder, {})
    assert tf.describe_test_split(placeholder, {"KAGGLE_IS_COMPETITION_RERUN": "1"}).startswith(
        "Kaggle scoring rerun (KAGGLE_IS_COMPETITION_RERUN is set): 2 hidden test tasks")
    hidden = tf.load_kaggle_folder(write_kaggle_folder(str(tmp_path / "b"), {
        **small_dataset(), "test": {"new": make_task(seed=40)}}))
    assert tf.describe_test_split(hidden, {}) == "1 test tasks"
