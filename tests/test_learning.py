"""Proof that training, task conditioning, decoding and voting work together: a tiny model learns a
family of four tasks (two recolourings, two flips) to exact answers on inputs it never trained on."""
import json
import time

import numpy as np

import train_full as tf
from helpers import synthetic_family

SETTINGS = ["--embed_dim=64", "--num_layers=2", "--num_heads=4", "--canvas_size=8", "--batch_size=32",
            "--num_augmentations=2", "--vote_augmentations=2", "--learning_rate=3e-3", "--task_embedding_lr=3e-2",
            "--weight_decay=0.0", "--warmup_steps=20", "--epochs=30", "--target_runtime_hours=0.1",
            "--eval_every_n_epochs=0", "--eval_every_n_minutes=0", "--log_every_n_steps=100", "--compile=False"]


def test_a_tiny_model_solves_held_out_inputs_of_a_synthetic_task_family(tmp_path):
    config = tf.parse_config(SETTINGS + [f"--output_dir={tmp_path}", f"--checkpoint_dir={tmp_path / 'ck'}"])
    tasks = synthetic_family()
    training_set = tf.build_training_set(tasks, config)
    assert len(training_set.inputs) == 4 * 200  # demonstrations only: the test pairs are held out
    start = time.perf_counter()
    tf.train(config, tasks, training_set, str(tmp_path), tf.Clock(360, start))
    report = json.load(open(tmp_path / "eval_predictions.json"))
    print(f"synthetic family: pass@2 {report['summary']['task_score']:.3f} in {time.perf_counter() - start:.1f}s")
    assert report["summary"]["task_score"] == 1.0
    assert all(entry["attempt_1"] != entry["attempt_2"] for task in report["tasks"] for entry in task["test"])
    submission = json.load(open(tmp_path / "submission.json"))
    for task in tasks["evaluation"]:  # the test split repeats these tasks without their answers
        for entry, truth in zip(submission[task.id], task.test_outputs):
            assert np.array_equal(entry["attempt_1"], truth)
