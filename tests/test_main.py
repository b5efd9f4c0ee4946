"""The whole job as a user runs it: settings, data, training set, predictions and the two output files."""
import json
import os
import subprocess
import sys

import pytest

import train_full as tf
from helpers import small_dataset, write_kaggle_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args):
    return tf.main(list(args), presets={})


def test_a_kaggle_folder_run_writes_a_valid_submission_and_scored_eval_predictions(tmp_path, capsys):
    data = write_kaggle_folder(str(tmp_path / "data"), small_dataset())
    out = tmp_path / "out"
    assert run_main(f"--data_dir={data}", f"--output_dir={out}", "--num_augmentations=4",
                    "--vote_augmentations=4") == 0
    submission = json.load(open(out / "submission.json"))
    tf.validate_submission(submission, tf.load_kaggle_folder(data)["test"])
    report = json.load(open(out / "eval_predictions.json"))
    assert [t["task_id"] for t in report["tasks"]] == ["evalA", "evalB"]
    assert len(report["tasks"][1]["test"]) == 3
    entry = report["tasks"][1]["test"][0]
    assert set(entry) >= {"attempt_1", "attempt_2", "solved", "pixel_accuracy"}
    assert report["summary"]["num_outputs"] == 4
    printed = capsys.readouterr().out
    assert "loaded and validated in" in printed and "evaluation: pass@2" in printed


def test_without_evaluation_answers_the_run_says_so_once_and_still_submits(tmp_path, capsys):
    data = write_kaggle_folder(str(tmp_path / "data"), small_dataset(), solutions=("training",))
    assert run_main(f"--data_dir={data}", f"--output_dir={tmp_path / 'out'}") == 0
    assert capsys.readouterr().out.count("no evaluation answers") == 1
    assert os.listdir(tmp_path / "out") == ["submission.json"]


def test_bad_data_exits_non_zero_naming_the_problem_and_overwrites_nothing(tmp_path, capsys):
    data = small_dataset()
    data["evaluation"]["evalA"]["train"][0]["output"][1][1] = 11
    folder = write_kaggle_folder(str(tmp_path / "data"), data)
    out = tmp_path / "out"
    out.mkdir()
    (out / "submission.json").write_text("earlier run")
    assert run_main(f"--data_dir={folder}", f"--output_dir={out}") == 2
    error = capsys.readouterr().err
    assert "arc-agi_evaluation_challenges.json: task evalA: train pair 0 output: row 1 column 1 is int 11" in error
    assert os.listdir(out) == ["submission.json"] and (out / "submission.json").read_text() == "earlier run"


def test_a_misspelt_setting_exits_non_zero_before_loading(capsys):
    assert run_main("--data_dri=x") == 2
    assert "did you mean 'data_dir'" in capsys.readouterr().err


def test_the_script_runs_as_a_program_on_the_embedded_data_with_jupyter_arguments(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "train_full.py"), "--preset=quick",
                             f"--output_dir={tmp_path}", "-f", "/tmp/kernel-1.json"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "1000 training, 120 evaluation, 120 test tasks" in result.stdout
    submission = json.load(open(tmp_path / "submission.json"))
    assert len(submission) == 120 and sum(map(len, submission.values())) == 172


def test_the_script_exits_non_zero_as_a_program_on_bad_settings(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "train_full.py"), "--seed=x"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "seed must be int" in result.stderr
    assert os.listdir(tmp_path) == []
