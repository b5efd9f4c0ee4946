"""The kaggle preset's whole 11 hours at Kaggle's scale, walked in seconds: the real training loop, decisions,
evaluations, checkpoints and end on ARC-AGI-2's 1,000 + 120 tasks, with the device's time stubbed at a stated
speed (a step, an adaptation, a prediction, a save) and 1, 2 or 4 processes as rank 0 sees them."""
import json
import re

import numpy as np
import pytest
import torch

import train_full as tf
from helpers import TINY

HOURS = 11.0
# The device's time as the run measures it. A step is priced far above an L4's (~20 ms for 64 pairs a GPU) so
# that the walk takes seconds: the stop, the decay, the focus and the intervals all go by time, so the speed moves
# only how many steps fall between them (and an epochs bound, which the preset has none of: the last test).
STEP_SECONDS = 2.0
ADAPT_SECONDS = 0.6       # 32 adaptation steps of 8 pairs, host-bound at ~18 ms each
PREDICT_SECONDS = 0.004   # a test input under one view
SAVE_SECONDS = 6.0        # last.pt of the kaggle model: 4.7M weights and 20M task-embedding numbers, with their Adam state


class FakeTime:
    """The clock the run reads (tf.time): it moves only when the stubbed device works."""
    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


class AtOnce:
    """EpochBatches' worker, run in the caller's thread: a hand-off to a thread per step would take most of the walk."""
    def __init__(self, **options):
        pass

    def submit(self, build, *arguments):
        future = tf.concurrent.futures.Future()
        future.set_result(build(*arguments))
        return future

    def shutdown(self, **options):
        pass


class RankZero(tf.Distributed):
    """Rank 0 of `world_size` processes, the others' answers taken as its own: every decision is rank 0's."""
    def agree(self, values, device):
        return list(values)

    def all_true(self, flag):
        return flag

    def sum(self, tensor):
        return tensor


def walk(processes, monkeypatch, tmp_path, capsys):
    """Run train() of the kaggle preset (a tiny model: nothing of it computes) for its whole budget; returns what
    it printed, its metrics.jsonl, and the times of the saves and of the first focus batch."""
    clock_time, saves, focus_began, lr_factors = FakeTime(), [], [], []
    monkeypatch.setattr(tf, "time", clock_time)
    monkeypatch.setattr(tf.concurrent.futures, "ThreadPoolExecutor", AtOnce)

    def step(model, optimizers, scaler, batch, lr_factor, *arguments):
        clock_time.now += STEP_SECONDS
        lr_factors.append(lr_factor)
        return torch.tensor(1.0), torch.tensor(0.5), torch.tensor(True)

    def build(self, epoch, index, focus, plan_processes):
        if focus and not focus_began:
            focus_began.append(clock_time.now)
        return None, len(self.of_epoch(epoch, focus, plan_processes)[index][0])

    def adapted_votes(model, tasks, training_set, config, device, amp_dtype, views, deadline, distributed):
        mine = distributed.share(tasks, [tf.task_cost(task, config) for task in tasks])
        clock_time.now += ADAPT_SECONDS * len(mine) + PREDICT_SECONDS * views * tf.num_inputs(mine)
        votes = {task.id: [tf.vote([], [], grid) for grid in task.test_inputs] for task in tasks}
        return tf.Predicted(votes, ADAPT_SECONDS * len(mine), 0, len(mine), tf.num_inputs(mine))

    real_save = tf.save_checkpoint

    def save(*arguments):
        real_save(*arguments)
        saves.append(clock_time.now)
        clock_time.now += SAVE_SECONDS
    monkeypatch.setattr(tf, "train_step", step)
    monkeypatch.setattr(tf.EpochBatches, "build", build)
    monkeypatch.setattr(tf, "adapted_votes", adapted_votes)
    monkeypatch.setattr(tf, "save_checkpoint", save)
    monkeypatch.setattr(tf, "prepare_model", lambda model, *arguments: model)
    monkeypatch.setattr(tf, "seconds_per_prediction", lambda *arguments: PREDICT_SECONDS)
    monkeypatch.setattr(tf, "seconds_per_adaptation", lambda *arguments: ADAPT_SECONDS)
    monkeypatch.setattr(tf, "plot_training_curves", lambda *arguments: True)
    monkeypatch.setattr(tf, "plot_eval_gallery", lambda *arguments: True)
    model_size = [a for a in TINY if a.startswith(("--embed_dim", "--num_layers", "--num_heads"))]
    config = tf.parse_config(["--preset=kaggle", *model_size, "--compile=False", "--device=cpu",
                              f"--output_dir={tmp_path / 'out'}", f"--checkpoint_dir={tmp_path / 'ck'}"],
                             presets=tf.load_presets(tf.os.path.dirname(tf.os.path.abspath(tf.__file__))))
    tasks = tf.load_embedded("arc-agi-2")
    training_set = tf.build_training_set(tasks, config)
    clock = tf.Clock(3600 * config["target_runtime_hours"], clock_time.now)
    assert tf.train(config, tasks, training_set, str(tmp_path / "out"), clock, RankZero(0, processes)) == 0
    metrics = [json.loads(line) for line in open(tmp_path / "out" / "metrics.jsonl")]
    return config, tasks, capsys.readouterr().out, metrics, saves, focus_began[0], lr_factors


@pytest.mark.parametrize("processes", [1, 2, 4])
def test_the_kaggle_preset_trains_to_its_budget_and_keeps_its_intervals_on_any_number_of_gpus(
        processes, monkeypatch, tmp_path, capsys):
    config, tasks, printed, metrics, saves, focus_began, lr_factors = walk(processes, monkeypatch, tmp_path, capsys)
    budget = 3600 * HOURS
    stopped, reserve = (float(x) for x in re.search(r"time budget\), (\d+)s used, about (\d+)s kept", printed).groups())
    # An evaluation of the 120 tasks (each adapted, 167 test inputs under 8 views) shared by the processes.
    evaluation = -(-120 // processes) * ADAPT_SECONDS + PREDICT_SECONDS * 8 * 167 / processes
    end = metrics[-1]
    assert end["kind"] == "end" and end["elapsed"] <= budget
    # Training ends by the budget, not by an epochs bound, with the end's reserve (last.pt, a final evaluation,
    # the pictures) left, and not much more: within a few decisions' steps.
    assert stopped + reserve <= budget and stopped + reserve >= budget - 20 * STEP_SECONDS - 2
    assert 1.15 * evaluation < reserve < 1.15 * evaluation + SAVE_SECONDS + 10  # 15% more once an evaluation timed it
    assert any(m["kind"] == "final eval" for m in metrics)
    # The learning rate ends at its floor, min_lr_ratio of its peak, having been at the peak after the warm-up.
    assert lr_factors[-1] == pytest.approx(config["min_lr_ratio"], rel=0.01)
    assert max(lr_factors) == 1.0 and np.all(np.diff(lr_factors[200:]) <= 0)
    # The focus phase begins at its share of the training budget, at the next epoch's start (epochs differ in
    # length with their augmentations; an evaluation or a save may fall between).
    training_set = tf.build_training_set(tasks, config)
    epoch_seconds = STEP_SECONDS * max(len(tf.epoch_batches(training_set, config, epoch, processes=processes))
                                       for epoch in range(5))
    share = (1 - config["focus_fraction"]) * (budget - reserve)
    assert share <= focus_began <= share + 1.2 * epoch_seconds + evaluation + SAVE_SECONDS + 10 * STEP_SECONDS
    # Evaluations and saves every 30 minutes of the budget, each counted from the end of the last.
    evaluations = [m["elapsed"] for m in metrics if m["kind"] == "eval"]
    assert len(evaluations) >= int(stopped // (1800 + evaluation + SAVE_SECONDS)) - 1
    gaps = np.diff(evaluations)
    assert (gaps >= 1800).all() and (gaps <= 1800 + evaluation + SAVE_SECONDS + 10 * STEP_SECONDS).all()
    save_gaps = np.diff(saves[:-1])  # the last is the end's
    assert len(saves) >= int(stopped // (1800 + evaluation + SAVE_SECONDS))
    assert (save_gaps >= 1800).all() and (save_gaps <= 1800 + evaluation + SAVE_SECONDS + 10 * STEP_SECONDS).all()
    # The log's speed is the training's own: evaluations, saves and the process's first step are left out of it.
    train = [m for m in metrics if m["kind"] == "train"]
    assert {m["step_ms"] for m in train} == {1000 * STEP_SECONDS}
    tf.validate_submission(json.load(open(tmp_path / "out" / "submission.json")), tasks["test"])


def test_the_kaggle_preset_has_no_epochs_bound_that_eleven_hours_at_two_milliseconds_a_step_could_reach():
    config = tf.parse_config(["--preset=kaggle"], presets=tf.load_presets(tf.os.path.dirname(tf.os.path.abspath(
        tf.__file__))))
    steps = 3600 * config["target_runtime_hours"] / 0.002
    assert config["epochs"] == 0 or config["epochs"] > steps  # a focus epoch can be a single step
    assert config["eval_every_n_epochs"] == 0 or config["eval_every_n_epochs"] * 1 * 0.002 >= 60 * config[
        "eval_every_n_minutes"]
