"""The run as a user scripts it: the CLI contract, checkpoints, a kill and resume, and the time budget."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import train_full as tf
from helpers import TINY, small_dataset, synthetic_family, write_kaggle_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "train_full.py")


def read_metrics(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_the_quick_preset_on_a_small_folder_writes_every_output(tmp_path):
    data = write_kaggle_folder(str(tmp_path / "data"), small_dataset())
    out, ck = tmp_path / "out", tmp_path / "ck"
    result = subprocess.run([sys.executable, SCRIPT, "--preset=quick", f"--data_dir={data}", f"--output_dir={out}",
                             f"--checkpoint_dir={ck}", "--target_runtime_hours=0.05", "--seed=0", "--epochs=20",
                             "-f", "/root/.local/share/jupyter/runtime/kernel-1.json"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    tasks = tf.load_kaggle_folder(data)
    tf.validate_submission(json.load(open(out / "submission.json")), tasks["test"])
    report = json.load(open(out / "eval_predictions.json"))
    assert [task["task_id"] for task in report["tasks"]] == ["evalA", "evalB"]
    assert len(report["tasks"][1]["test"]) == 3
    assert set(report["tasks"][1]["test"][0]) >= {"attempt_1", "attempt_2", "solved", "pixel_accuracy"}
    assert set(report["summary"]) >= {"task_score", "output_score", "shape_accuracy", "pixel_accuracy"}
    assert sorted(os.listdir(ck)) == ["best.pt", "last.json", "last.pt"]
    metrics = read_metrics(out / "metrics.jsonl")
    train_lines = [m for m in metrics if m["kind"] == "train"]
    assert train_lines and set(train_lines[0]) >= {"step", "epoch", "elapsed", "loss", "accuracy",
                                                   "learning_rate", "samples_per_s"}
    assert any(m["kind"] == "final eval" for m in metrics)
    checkpoint = torch.load(ck / "last.pt", weights_only=True)
    assert set(checkpoint) >= {"model", "optimizers", "scaler", "state", "rng", "config",
                               "task_ids"}
    assert checkpoint["state"]["epoch"] == 20 and checkpoint["state"]["step"] == metrics[-1]["step"] > 0
    assert checkpoint["task_ids"][-2:] == ["evalA", "evalB"]


RESUME_SETTINGS = ["--embed_dim=32", "--num_layers=1", "--num_heads=2", "--canvas_size=8", "--batch_size=32",
                   "--num_augmentations=2", "--vote_augmentations=2", "--warmup_steps=50", "--epochs=40",
                   "--target_runtime_hours=1.0", "--eval_every_n_epochs=10", "--eval_every_n_minutes=0",
                   "--save_every_n_minutes=0.003", "--log_every_n_steps=25", "--compile=False"]


def launch(data, out, ck, *extra):
    return subprocess.Popen([sys.executable, SCRIPT, *RESUME_SETTINGS, f"--data_dir={data}", f"--output_dir={out}",
                             f"--checkpoint_dir={ck}", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def write_synthetic_folder(folder):
    tasks = synthetic_family(num_train=40)["evaluation"]
    as_json = {t.id: {"train": [{"input": i.tolist(), "output": o.tolist()} for i, o in t.train],
                      "test": [{"input": i.tolist(), "output": o.tolist()} for i, o in zip(t.test_inputs, t.test_outputs)]}
               for t in tasks}
    return write_kaggle_folder(folder, {"training": as_json, "evaluation": small_dataset()["evaluation"]})


def test_a_killed_run_resumes_to_the_same_result_as_an_uninterrupted_one(tmp_path):
    data = write_synthetic_folder(str(tmp_path / "data"))
    whole = launch(data, tmp_path / "whole", tmp_path / "whole_ck")
    assert whole.wait(timeout=300) == 0, whole.stderr.read()

    killed = launch(data, tmp_path / "out", tmp_path / "ck")
    last_json = tmp_path / "ck" / "last.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (last_json.exists() and json.loads(last_json.read_text())["step"] >= 150):
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    steps_at_kill = json.loads(last_json.read_text())["step"]
    resumed = launch(data, tmp_path / "out", tmp_path / "ck", "--resume=True")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()

    expected, got = read_metrics(tmp_path / "whole" / "metrics.jsonl"), read_metrics(tmp_path / "out" / "metrics.jsonl")
    total_steps = expected[-1]["step"]
    print(f"killed at step {steps_at_kill} of {total_steps}, resumed to step {got[-1]['step']}")
    assert 150 <= steps_at_kill < total_steps
    assert any(m["kind"] == "start" and m["resumed"] for m in got)
    assert got[-1]["step"] == total_steps
    last_train = [{k: m[k] for k in ("step", "loss", "accuracy", "learning_rate")}
                  for m in expected if m["kind"] == "train"][-1]
    assert [{k: m[k] for k in last_train} for m in got if m["kind"] == "train"][-1] == last_train
    scores = ("step", "task_score", "output_score", "shape_accuracy", "pixel_accuracy")
    final = [{k: m[k] for k in scores} for m in expected if m["kind"] == "final eval"]
    assert [{k: m[k] for k in scores} for m in got if m["kind"] == "final eval"][-1:] == final
    assert json.load(open(tmp_path / "out" / "submission.json")) == json.load(open(tmp_path / "whole" / "submission.json"))


def test_a_run_ends_inside_its_time_budget_using_nearly_all_of_it(tmp_path):
    data = write_kaggle_folder(str(tmp_path / "data"), small_dataset())
    budget = 30.0
    start = time.perf_counter()
    code = tf.main([*TINY, f"--data_dir={data}", f"--output_dir={tmp_path / 'out'}",
                    f"--checkpoint_dir={tmp_path / 'ck'}", f"--target_runtime_hours={budget / 3600}",
                    "--epochs=100000", "--eval_every_n_epochs=0", "--eval_every_n_minutes=0.1",
                    "--log_every_n_steps=500"], presets={}, started=start)
    wall = time.perf_counter() - start
    print(f"budget {budget:.0f}s, wall {wall:.1f}s")
    assert code == 0
    assert budget - 20 <= wall <= budget
    assert read_metrics(tmp_path / "out" / "metrics.jsonl")[-1]["kind"] == "end"


def test_resuming_with_another_model_size_names_the_file_and_mismatch(tmp_path, capsys):
    data = write_kaggle_folder(str(tmp_path / "data"), small_dataset())
    args = [*TINY, f"--data_dir={data}", f"--output_dir={tmp_path / 'out'}", f"--checkpoint_dir={tmp_path / 'ck'}"]
    assert tf.main(args, presets={}) == 0
    before = (tmp_path / "ck" / "last.pt").read_bytes()
    assert tf.main(args + ["--embed_dim=32", "--resume=True"], presets={}) == 2
    error = capsys.readouterr().err
    assert f"{tmp_path / 'ck' / 'last.pt'}: made with embed_dim=16 but this run has embed_dim=32" in error
    assert (tmp_path / "ck" / "last.pt").read_bytes() == before


def test_resuming_from_an_unreadable_checkpoint_names_the_file(tmp_path, capsys):
    data = write_kaggle_folder(str(tmp_path / "data"), small_dataset())
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "last.pt").write_bytes(b"not a checkpoint")
    assert tf.main([*TINY, f"--data_dir={data}", f"--output_dir={tmp_path / 'out'}",
                    f"--checkpoint_dir={tmp_path / 'ck'}", "--resume=True"], presets={}) == 2
    assert "last.pt: cannot be read as a checkpoint" in capsys.readouterr().err
    assert (tmp_path / "ck" / "last.pt").read_bytes() == b"not a checkpoint"


def test_a_resumed_run_keeps_the_precision_it_began_with(tmp_path, capsys):
    data = write_kaggle_folder(str(tmp_path / "data"), small_dataset())
    args = [*TINY, f"--data_dir={data}", f"--output_dir={tmp_path / 'out'}", f"--checkpoint_dir={tmp_path / 'ck'}"]
    assert tf.main(args + ["--dtype=bfloat16"], presets={}) == 0
    assert tf.main(args + ["--resume=True", "--epochs=4"], presets={}) == 0
    assert "bfloat16, as the run began" in capsys.readouterr().out


@pytest.mark.parametrize("seconds, views", [(1.0, 1), (10.0, 0)])
def test_final_predictions_too_slow_for_the_budget_are_cut_to_fit_and_said_so(tmp_path, monkeypatch, capsys, seconds,
                                                                                 views):
    # A model far too slow for its machine: 8 test inputs (4 evaluation, 4 test) under 2 views would need
    # 1.25 x 16 x `seconds` of a 20 s budget. What the run measures is faked; the rest is real.
    monkeypatch.setattr(tf, "seconds_per_prediction", lambda *arguments: seconds)
    data = write_kaggle_folder(str(tmp_path / "data"), small_dataset())
    budget, start = 20.0, time.perf_counter()
    code = tf.main([*TINY, f"--data_dir={data}", f"--output_dir={tmp_path / 'out'}", f"--checkpoint_dir={tmp_path / 'ck'}",
                    f"--target_runtime_hours={budget / 3600}", "--epochs=100000", "--log_every_n_steps=500"],
                   presets={}, started=start)
    assert code == 0 and time.perf_counter() - start <= budget
    printed = capsys.readouterr().out
    assert "budget: predicting 8 test inputs under 2 views would take about" in printed
    test_tasks = tf.load_kaggle_folder(data)["test"]
    submission = json.load(open(tmp_path / "out" / "submission.json"))
    tf.validate_submission(submission, test_tasks)
    if views:
        assert "every prediction of this run uses 1 view instead" in printed
        report = json.load(open(tmp_path / "out" / "eval_predictions.json"))
        assert max(entry["votes"][0] for task in report["tasks"] for entry in task["test"]) == 1
    else:
        assert "no view fits, so the submission keeps the fallback answers" in printed
        assert submission == tf.make_submission(test_tasks, {})[0]
