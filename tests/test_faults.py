"""Fault tests that print figures: a run killed again and again, and fuzzed bad input."""
import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import train_full as tf
from helpers import TINY, small_dataset, write_json, write_kaggle_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def intact(folder, out, test_tasks):
    """Corrupt files among the run's checkpoints and JSON outputs (0 when every one loads whole)."""
    corrupt = 0
    for name in ("last.pt", "best.pt"):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            try:
                torch.load(path, weights_only=True)
            except Exception:
                corrupt += 1
    for name in ("submission.json", "eval_predictions.json", "last.json"):
        path = os.path.join(out if name != "last.json" else folder, name)
        if os.path.exists(path):
            try:
                content = json.load(open(path))
                if name == "submission.json":
                    tf.validate_submission(content, test_tasks)
            except (ValueError, tf.SubmissionError):
                corrupt += 1
    return corrupt


def read_records(metrics_path):
    records = []
    if os.path.exists(metrics_path):
        for line in open(metrics_path):
            with contextlib.suppress(ValueError):  # a line the kill cut short
                records.append(json.loads(line))
    return records


def wait_for_training(metrics_path, starts_before, timeout=300):
    """Wait until the process that writes the next start record has logged a training line. How long its
    start-up takes depends on the machine and its load, and a kill before any training loses nothing."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        kinds = [r["kind"] for r in read_records(metrics_path)]
        if kinds.count("start") > starts_before and kinds[-1] != "start":
            return
        time.sleep(0.05)
    raise AssertionError(f"{metrics_path}: no training line from the new process in {timeout}s")


def training_lost(metrics_path, last_json):
    """(seconds the killed process trained past its last checkpoint, its longest logging interval), on the
    budget clock. The first is measured from the later of the checkpoint and this process's first logged
    step (what came before it was start-up, not training) to its last logged step. A log line comes every
    2 steps, so the second is how finely the first can be measured on this machine under its load."""
    records = read_records(metrics_path)
    since_start = records[max(i for i, r in enumerate(records) if r["kind"] == "start"):]
    logged = [r["elapsed"] for r in since_start if r["kind"] == "train"]
    if not logged:
        return 0.0, 0.0
    longest_interval = max((b - a for a, b in zip(logged, logged[1:])), default=0.0)
    return max(0.0, logged[-1] - max(logged[0], json.load(open(last_json))["elapsed"])), longest_interval


def test_a_run_killed_at_random_moments_resumes_every_time_and_loses_nothing(tmp_path):
    data = write_kaggle_folder(str(tmp_path / "data"), small_dataset())
    test_tasks = tf.load_kaggle_folder(data)["test"]
    ck, out = str(tmp_path / "ck"), str(tmp_path / "out")
    command = [sys.executable, os.path.join(ROOT, "train_full.py"), *TINY, "--epochs=2500",
               "--eval_every_n_epochs=200", "--target_runtime_hours=1.0",
               "--dtype=float32", "--resume=True", f"--data_dir={data}", f"--output_dir={out}", f"--checkpoint_dir={ck}"]
    rng = random.Random(0)
    kills, corrupt, largest_loss, steps = 0, 0, 0.0, []
    # Every other restart saves after every step, so that most of its kills land in the middle of a
    # checkpoint write; the others save every 0.6 s, the interval that bounds the work a kill loses.
    for interval in [0.0, 0.01] * 4:
        metrics = os.path.join(out, "metrics.jsonl")
        starts_before = [r["kind"] for r in read_records(metrics)].count("start")
        process = subprocess.Popen(command + [f"--save_every_n_minutes={interval}"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        wait_for_training(metrics, starts_before)
        time.sleep(rng.uniform(0.0, 2.5))
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        corrupt += intact(ck, out, test_tasks)
        lost, logging_interval = training_lost(metrics, os.path.join(ck, "last.json"))
        assert lost <= 60 * interval + logging_interval, (interval, lost, logging_interval)
        largest_loss = max(largest_loss, lost)
        steps.append(json.load(open(os.path.join(ck, "last.json")))["step"])
    # The last restart runs to an end a few epochs on, however far the killed ones got on this machine.
    end = json.load(open(os.path.join(ck, "last.json")))["epoch"] + 20
    finished = subprocess.run([a for a in command if not a.startswith("--epochs=")] + [f"--epochs={end}"],
                              capture_output=True, text=True, timeout=600)
    print(f"kills survived: {kills}, corrupt files found: {corrupt}, largest work lost: {largest_loss:.2f}s "
          f"(save interval 0.6s), steps at the kills: {steps}")
    assert finished.returncode == 0, finished.stderr
    assert corrupt == 0 and intact(ck, out, test_tasks) == 0
    assert steps == sorted(steps) and steps[-1] > steps[0]  # each restart went on from the last
    assert json.load(open(os.path.join(ck, "last.json")))["epoch"] == end
    assert not [name for name in os.listdir(ck) + os.listdir(out) if ".tmp" in name]


CELL_VALUES = [True, False, 1.0, 2.5, "3", None, 10, -1, [1], {"a": 1}]


def mutate(challenges, draw):
    """One defect, of a kind ARC data can have, in task evalB of an evaluation challenges object."""
    task = challenges["evalB"]
    kind = draw(st.sampled_from(["cell", "ragged", "empty_row", "empty_grid", "tall", "wide", "no_key",
                                 "no_test", "grid_type"]))
    pair = draw(st.sampled_from(task["train"] + task["test"]))
    key = "input" if pair in task["test"] else draw(st.sampled_from(["input", "output"]))
    grid = pair[key]
    if kind == "cell":
        grid[draw(st.integers(0, len(grid) - 1))][0] = draw(st.sampled_from(CELL_VALUES))
    elif kind == "ragged":
        grid[-1] = grid[-1] + [0]
    elif kind == "empty_row":
        grid[0] = []
    elif kind == "empty_grid":
        pair[key] = []
    elif kind == "tall":
        pair[key] = [[1]] * draw(st.integers(31, 40))
    elif kind == "wide":
        pair[key] = [[1] * draw(st.integers(31, 40))]
    elif kind == "no_key":
        del pair[key]
    elif kind == "no_test":
        task["test"] = draw(st.sampled_from([[], None, [{}], [{"output": [[1]]}], "test"]))
    elif kind == "grid_type":
        pair[key] = draw(st.sampled_from(["[[1]]", 7, None, {"rows": 1}, [[[1]]]]))
    return kind


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzzed_bad_input_always_ends_in_a_named_error_and_changes_nothing(draw_data):
    where = draw_data.draw(st.sampled_from(["challenges", "solutions", "truncated"]))
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_kaggle_folder(os.path.join(tmp, "data"), small_dataset())
        path = os.path.join(folder, f"arc-agi_evaluation_{'solutions' if where == 'solutions' else 'challenges'}.json")
        content = json.load(open(path))
        if where == "challenges":
            kind = mutate(content, draw_data.draw)
            write_json(path, content)
        elif where == "solutions":
            kind = "solution count"
            content["evalB"] = content["evalB"][:draw_data.draw(st.integers(0, 2))]
            write_json(path, content)
        else:
            kind = "truncated JSON"
            text = json.dumps(content)
            open(path, "w").write(text[:draw_data.draw(st.integers(0, len(text) - 1))])
        out, ck = os.path.join(tmp, "out"), os.path.join(tmp, "ck")
        os.makedirs(out)
        with open(os.path.join(out, "submission.json"), "w") as f:
            f.write("an earlier run's file")
        errors = io.StringIO()
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            code = tf.main([f"--data_dir={folder}", f"--output_dir={out}", f"--checkpoint_dir={ck}"], presets={})
        message = errors.getvalue()
        assert code == 2, (kind, message)
        assert message.startswith(f"error: {folder}/arc-agi_") and "Traceback" not in message, (kind, message)
        if where != "truncated":
            assert ": task evalB: " in message, (kind, message)
        assert os.listdir(out) == ["submission.json"] and open(os.path.join(out, "submission.json")).read() == \
            "an earlier run's file"
        assert not os.path.exists(ck)
