"""The levers a run can pull beyond the plain loop: demonstrations held out as validation when the test
tasks have no answers, test-time emphasis, and stopping when evaluation no longer improves."""
import json
import os

import numpy as np
import torch

import train_full as tf
from helpers import TINY, make_task, write_kaggle_folder


def hidden_run_folder(folder):
    """Training tasks with answers and test tasks without, as in Kaggle's scoring run: one test task has
    three demonstrations, one only two."""
    return write_kaggle_folder(folder, {
        "training": {f"train{k}": make_task(seed=k) for k in range(2)},
        "test": {"hidden3": make_task(seed=20, num_train=3), "hidden2": make_task(seed=21, num_train=2)},
    }, solutions=("training",))


def test_held_out_demonstrations_are_scored_and_never_trained_on(tmp_path):
    tasks = tf.load_kaggle_folder(hidden_run_folder(str(tmp_path / "data")))
    config = {**tf.CONFIG, "hold_out_demos": True, "num_augmentations": 2}
    validation = tf.validation_tasks(tasks, config)
    hidden = next(t for t in tasks["test"] if t.id == "hidden3")
    assert [t.id for t in validation] == ["hidden3"]  # two demonstrations are too few to spare one
    assert len(validation[0].train) == 2
    assert np.array_equal(validation[0].test_inputs[0], hidden.train[2][0])
    assert np.array_equal(validation[0].test_outputs[0], hidden.train[2][1])
    trained = {tf.grid_key(g) for g in tf.build_training_set(tasks, config).outputs}
    assert tf.grid_key(hidden.train[2][1]) not in trained
    assert tf.grid_key(hidden.train[1][1]) in trained
    assert tf.grid_key(hidden.train[2][1]) in {tf.grid_key(g) for g in
                                               tf.build_training_set(tasks, {**config, "hold_out_demos": False}).outputs}
    # Test tasks whose answers the evaluation split has are scored there: nothing is held out of them.
    answered = {**tasks, "evaluation": [tf.Task(t.id, "evaluation", t.train, t.test_inputs, t.test_inputs)
                                        for t in tasks["test"]]}
    assert tf.validation_tasks(answered, config) == []


def test_a_hidden_run_chooses_its_best_checkpoint_on_held_out_demonstrations(tmp_path):
    data = hidden_run_folder(str(tmp_path / "data"))
    out, ck = tmp_path / "out", tmp_path / "ck"
    code = tf.main([*TINY, f"--data_dir={data}", f"--output_dir={out}", f"--checkpoint_dir={ck}",
                    "--hold_out_demos=True"])
    assert code == 0
    report = json.load(open(out / "eval_predictions.json"))
    assert [t["task_id"] for t in report["tasks"]] == ["hidden3"] and report["summary"]["num_outputs"] == 1
    assert torch.load(ck / "best.pt", weights_only=True)["report"] == report
    assert sorted(json.load(open(out / "submission.json"))) == ["hidden2", "hidden3"]


def test_training_ends_after_the_set_number_of_evaluations_without_a_new_best(tmp_path):
    data = hidden_run_folder(str(tmp_path / "data"))
    out = tmp_path / "out"
    code = tf.main([*TINY, f"--data_dir={data}", f"--output_dir={out}", f"--checkpoint_dir={tmp_path / 'ck'}",
                    "--hold_out_demos=True", "--epochs=200", "--early_stop_evaluations=2"])
    assert code == 0
    metrics = [json.loads(line) for line in open(out / "metrics.jsonl")]
    evaluations = [m for m in metrics if m["kind"] == "eval"]
    assert evaluations[-1]["epoch"] < 200  # stopped early: one run in the hundreds of evaluations
    assert [m["best"] for m in evaluations[-2:]] == [False, False]
    assert all(a["best"] or b["best"] for a, b in zip(evaluations[:-2], evaluations[1:-1]))  # no earlier streak


def test_the_last_fraction_of_the_budget_trains_on_the_test_tasks_alone(tmp_path, capsys):
    data = hidden_run_folder(str(tmp_path / "data"))
    code = tf.main([*TINY, f"--data_dir={data}", f"--output_dir={tmp_path / 'out'}",
                    f"--checkpoint_dir={tmp_path / 'ck'}", "--focus_fraction=1.0"])
    assert code == 0
    assert "epoch 0: the last 100% of the budget trains on the evaluation and test tasks' demonstrations alone" \
        in capsys.readouterr().out
    checkpoint = torch.load(tmp_path / "ck" / "last.pt", weights_only=True)
    # 5 demonstrations of the test tasks, batches of 8: one step per epoch (the training tasks would add more)
    assert checkpoint["state"]["focus"] and checkpoint["state"]["step"] == checkpoint["state"]["epoch"] == 3
