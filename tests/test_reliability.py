"""Faults a long run must survive: stops, failures, full disks, bad checkpoints, a second run."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import train_full as tf
from helpers import TINY, small_dataset, write_kaggle_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LONG = [a for a in TINY if not a.startswith(("--epochs", "--target_runtime_hours"))] + [
    "--epochs=100000", "--target_runtime_hours=0.1", "--save_every_n_minutes=0.002"]


def folders(tmp_path):
    data = write_kaggle_folder(str(tmp_path / "data"), small_dataset())
    return [f"--data_dir={data}", f"--output_dir={tmp_path / 'out'}", f"--checkpoint_dir={tmp_path / 'ck'}"], data


def wait_for_step(path, step, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and json.loads(path.read_text())["step"] >= step:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach step {step}")


@pytest.mark.parametrize("stop_signal, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_saves_submits_and_says_how_to_resume(tmp_path, stop_signal, code):
    args, data = folders(tmp_path)
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, "train_full.py"), *LONG, *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_step(tmp_path / "ck" / "last.json", 200)
    process.send_signal(stop_signal)
    out, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert "Traceback" not in err
    assert f"stopped by {stop_signal.name}: to continue, run the same command with --resume=True" in out
    stopped_at = json.loads((tmp_path / "ck" / "last.json").read_text())["step"]
    tf.validate_submission(json.load(open(tmp_path / "out" / "submission.json")), tf.load_kaggle_folder(data)["test"])
    assert "submission: 2 tasks" in out
    stopped_epoch = json.loads((tmp_path / "ck" / "last.json").read_text())["epoch"]
    # Bounded by epochs, not time: the budget clock goes on from the stopped run, however long that took.
    resumed = tf.main(LONG[:-3] + [f"--epochs={stopped_epoch + 3}", "--target_runtime_hours=0.1", "--resume=True",
                                   *args], presets={})
    assert resumed == 0
    assert json.loads((tmp_path / "ck" / "last.json").read_text())["step"] > stopped_at


def test_a_broken_device_mid_run_leaves_the_best_evaluations_submission_on_disk(tmp_path, monkeypatch, capsys):
    args, data = folders(tmp_path)
    real_step, real_predictor, calls = tf.train_step, tf.model_predictor, []

    def failing_step(*arguments):  # a device-side assert: from now on nothing runs on the device
        calls.append(1)
        if len(calls) >= 25:
            raise RuntimeError("CUDA error: device-side assert triggered (simulated)")
        return real_step(*arguments)

    def breakable_predictor(*arguments):
        predict = real_predictor(*arguments)
        return lambda *batch: predict(*batch) if len(calls) < 25 else failing_step()
    monkeypatch.setattr(tf, "train_step", failing_step)
    monkeypatch.setattr(tf, "model_predictor", breakable_predictor)
    assert tf.main([*TINY, "--epochs=100", *args], presets={}) == 1
    printed = capsys.readouterr()
    assert "RuntimeError: CUDA error" in printed.err and "Traceback" in printed.err
    assert "error: training failed at step " in printed.out
    assert "holds the answers of the best evaluation" in printed.out
    assert not (tmp_path / "ck" / "run.lock").exists()
    monkeypatch.undo()
    # What is on disk is what the best weights predict, not the fallback answers written at the start.
    config, tasks = tf.parse_config([*TINY, *args]), tf.load_kaggle_folder(data)
    training_set = tf.build_training_set(tasks, config)
    model = tf.ARCTransformer(config, training_set.num_embeddings)
    model.load_state_dict(torch.load(tmp_path / "ck" / "best.pt", weights_only=True)["model"])
    votes = tf.predict_tasks(tasks["test"], training_set, tf.model_predictor(model, torch.device("cpu"), None), config)
    on_disk = json.load(open(tmp_path / "out" / "submission.json"))
    assert on_disk == tf.make_submission(tasks["test"], votes)[0] != tf.make_submission(tasks["test"], {})[0]


def test_a_checkpoint_write_that_fails_keeps_the_previous_one_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    args, _ = folders(tmp_path)
    real_save, saves = torch.save, []

    def disk_fills_up(obj, path, *rest, **options):
        saves.append(path)
        if len(saves) > 2:
            with open(path, "wb") as f:
                f.write(b"half a checkpoi")
            raise OSError(28, "No space left on device")
        return real_save(obj, path, *rest, **options)
    monkeypatch.setattr(tf.torch, "save", disk_fills_up)
    assert tf.main([*TINY, "--epochs=30", "--save_every_n_minutes=0", *args], presets={}) == 0
    assert "No space left on device" in capsys.readouterr().out
    checkpoint = torch.load(tmp_path / "ck" / "last.pt", weights_only=True)  # the last good one, whole
    assert checkpoint["state"]["step"] >= 1
    assert not [name for name in os.listdir(tmp_path / "ck") if ".tmp" in name]


HOLD_LOCK = ("import os, signal, sys, time; sys.path.insert(0, sys.argv[2]); import train_full as tf; "
             "tf.RunLock(sys.argv[1]).__enter__(); print('locked', flush=True); "
             "time.sleep(300) if sys.argv[3] == 'live' else os.kill(os.getpid(), signal.SIGKILL)")


def hold_lock(folder, how):
    """A process that takes the folder's run.lock as a run does, then sleeps ('live') or is killed ('killed')."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder), ROOT, how], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "locked\n"
    if how == "killed":
        holder.wait()
    return holder


def test_a_second_run_on_the_same_checkpoint_folder_refuses(tmp_path, capsys):
    args, _ = folders(tmp_path)
    holder = hold_lock(tmp_path / "ck", "live")
    try:
        assert tf.main([*TINY, *args], presets={}) == 2
        assert f"process {holder.pid} is using this checkpoint folder" in capsys.readouterr().err
        assert os.listdir(tmp_path / "ck") == ["run.lock"]
    finally:
        holder.kill()
        holder.wait()
    assert tf.main([*TINY, *args], presets={}) == 0  # a dead holder's lock is taken over
    assert not (tmp_path / "ck" / "run.lock").exists()


def test_a_copied_folder_whose_lock_names_a_reused_live_process_id_resumes(tmp_path, capsys):
    # A killed run's folder, copied into a new session (Kaggle's way to resume) where its process id now names a
    # live process that is no run.
    args, _ = folders(tmp_path)
    assert tf.main([*TINY, *args], presets={}) == 0
    killed = hold_lock(tmp_path / "ck", "killed")
    lock = tmp_path / "ck" / "run.lock"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        lock.write_text(lock.read_text().replace(str(killed.pid), str(other.pid)))
        assert str(other.pid) in lock.read_text()
        assert tf.main([*TINY, "--resume=True", "--epochs=5", *args], presets={}) == 0
        assert "resumed from" in capsys.readouterr().out
    finally:
        other.kill()
        other.wait()
    assert not lock.exists()


def test_a_truncated_checkpoint_is_refused_by_name_and_kept(tmp_path, capsys):
    args, _ = folders(tmp_path)
    assert tf.main([*TINY, *args], presets={}) == 0
    last = tmp_path / "ck" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    assert tf.main([*TINY, "--resume=True", *args], presets={}) == 2
    assert f"{last}: cannot be read as a checkpoint" in capsys.readouterr().err
    assert len(last.read_bytes()) == 1000


def test_a_checkpoint_of_other_tasks_is_refused_by_name(tmp_path, capsys):
    args, _ = folders(tmp_path)
    assert tf.main([*TINY, *args], presets={}) == 0
    other = small_dataset()
    other["evaluation"]["evalC"] = other["evaluation"].pop("evalB")
    write_kaggle_folder(str(tmp_path / "other"), other)
    assert tf.main([*TINY, "--resume=True", *args, f"--data_dir={tmp_path / 'other'}"], presets={}) == 2
    assert "last.pt: made for other tasks (5 tasks there, 5 here, 2 ids in only one)" in capsys.readouterr().err


def test_micro_batches_give_the_same_update_as_the_whole_batch():
    from test_model import CONFIG, model_and_batch
    weights = []
    for micro_batches in (1, 3):
        model, grids = model_and_batch()
        optimizers = tf.make_optimizers(model, CONFIG)
        canvases = tf.encode_grids(grids, (8, 6)).astype(np.int64)
        loss, _, finite = tf.train_step(model, optimizers, torch.amp.GradScaler("cpu", enabled=False),
                                        (canvases, canvases, np.array([0, 1, 2])), 1.0, torch.device("cpu"), None,
                                        CONFIG, micro_batches)
        weights.append((float(loss), model.head.weight.detach().clone()))
    assert weights[0][0] == pytest.approx(weights[1][0], rel=1e-5)
    assert torch.allclose(weights[0][1], weights[1][1], atol=1e-6)


def test_out_of_memory_splits_batches_into_micro_batches_and_goes_on(tmp_path, monkeypatch, capsys):
    args, _ = folders(tmp_path)
    real_forward = tf.ARCTransformer.forward

    def small_memory(self, canvases, *ids_and_rows):
        if self.training and len(canvases) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(self, canvases, *ids_and_rows)
    monkeypatch.setattr(tf.ARCTransformer, "forward", small_memory)
    assert tf.main([*TINY, "--dtype=float32", "--epochs=5", *args], presets={}) == 0
    printed = capsys.readouterr().out
    assert "out of memory at step 0: each batch now runs as 2 micro-batches" in printed
    assert "runs as 4 micro-batches" in printed
    checkpoint = torch.load(tmp_path / "ck" / "last.pt", weights_only=True)
    assert checkpoint["state"]["micro_batches"] == 4 and checkpoint["state"]["epoch"] == 5


def test_non_finite_steps_are_skipped_and_repeated_ones_roll_back_at_a_lower_rate(tmp_path, monkeypatch, capsys):
    args, _ = folders(tmp_path)
    real_loss, calls = tf.masked_loss_and_accuracy, []

    def sometimes_nan(logits, targets):
        loss, accuracy = real_loss(logits, targets)
        calls.append(1)
        if len(calls) in (12, 40, 41, 42):
            return loss * float("nan"), accuracy
        return loss, accuracy
    monkeypatch.setattr(tf, "masked_loss_and_accuracy", sometimes_nan)
    assert tf.main([*TINY, "--dtype=float32", "--epochs=30", "--save_every_n_minutes=0", "--max_nonfinite_steps=3",
                    *args], presets={}) == 0
    printed = capsys.readouterr().out
    # Read at each log line (every 2 steps here), never at the step itself: that would make a GPU's host wait.
    skipped = [int(n) for n in re.findall(r"loss or gradients not finite in (\d+), their updates skipped", printed)]
    assert sum(skipped) == 4 and len(skipped) >= 2
    assert "3 non-finite steps in a row: rolled back to step" in printed and "scaled by 0.5" in printed
    metrics = [json.loads(line) for line in open(tmp_path / "out" / "metrics.jsonl")]
    assert [m["lr_scale"] for m in metrics if m["kind"] == "rollback"] == [0.5]
    assert all(np.isfinite(m["loss"]) for m in metrics if m["kind"] == "train")  # a skipped step's NaN is not averaged in
    checkpoint = torch.load(tmp_path / "ck" / "last.pt", weights_only=True)
    assert checkpoint["state"]["nonfinite_steps"] == 4 and checkpoint["state"]["lr_scale"] == 0.5
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values())


def test_a_non_finite_task_embedding_row_gradient_skips_the_whole_step():
    from test_model import CONFIG, model_and_batch

    class NanInOneRow(tf.Distributed):  # the rows' gradients are averaged here, and nowhere else
        def average(self, tensor):
            tensor[1, 0] = float("nan")
            return tensor
    model, grids = model_and_batch()
    optimizers = tf.make_optimizers(model, CONFIG)
    canvases = tf.encode_grids(grids, (8, 6)).astype(np.int64)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    loss, _, finite = tf.train_step(model, optimizers, torch.amp.GradScaler("cpu", enabled=False),
                                    (canvases, canvases, np.array([0, 1, 2])), 1.0, torch.device("cpu"), None, CONFIG,
                                    distributed=NanInOneRow())
    assert not bool(finite) and float(loss) == 0.0
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    state = optimizers[2].state[model.task_embedding.weight]
    assert all(torch.equal(state[key], torch.zeros_like(state[key])) for key in ("exp_avg", "exp_avg_sq"))
