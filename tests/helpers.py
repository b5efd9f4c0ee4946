"""Small hand-made ARC data for the tests: tasks as JSON objects and folders in the Kaggle and
repository layouts."""
import json
import os

import numpy as np


def random_grid(rows, cols, seed):
    return np.random.default_rng(seed).integers(0, 10, size=(rows, cols)).tolist()


def make_task(seed=0, num_train=2, num_test=1, shape=(3, 4)):
    """A task as JSON: output = input with colours shifted by one, test outputs inside."""
    def pair(k):
        grid = random_grid(*shape, seed=seed * 100 + k)
        return {"input": grid, "output": [[(v + 1) % 10 for v in row] for row in grid]}
    return {"train": [pair(k) for k in range(num_train)],
            "test": [pair(50 + k) for k in range(num_test)]}


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)


def write_kaggle_folder(folder, splits, solutions=("training", "evaluation")):
    """splits: {split: {task_id: task with test outputs}}. Challenges lose their test outputs; the splits
    named in `solutions` get a solutions file with them."""
    for split, tasks in splits.items():
        challenges = {task_id: {"train": task["train"], "test": [{"input": p["input"]} for p in task["test"]]}
                      for task_id, task in tasks.items()}
        write_json(os.path.join(folder, f"arc-agi_{split}_challenges.json"), challenges)
        if split in solutions:
            answers = {task_id: [p["output"] for p in task["test"]] for task_id, task in tasks.items()}
            write_json(os.path.join(folder, f"arc-agi_{split}_solutions.json"), answers)
    return folder


def small_dataset():
    """Three training tasks, two evaluation tasks (one with three test inputs), ids distinct."""
    return {
        "training": {f"train{k}": make_task(seed=k) for k in range(3)},
        "evaluation": {"evalA": make_task(seed=10), "evalB": make_task(seed=11, num_test=3, shape=(5, 2))},
    }


# Settings for a model small enough that a whole run takes a second or two on a CPU.
TINY = ["--embed_dim=16", "--num_layers=1", "--num_heads=2", "--batch_size=8", "--num_augmentations=2",
        "--vote_augmentations=2", "--warmup_steps=5", "--epochs=3", "--target_runtime_hours=0.05",
        "--eval_every_n_epochs=1", "--eval_every_n_minutes=0", "--log_every_n_steps=2", "--compile=False"]


def synthetic_family(num_train=200, num_test=2, seed=0):
    """Four tasks on random 3x3 grids, two recolourings and two flips, as {split: [Task]}: every task is
    an evaluation task whose demonstrations are the training pairs and whose test pairs are held out."""
    import train_full as tf
    rng = np.random.default_rng(seed)
    shift, reverse = np.array([0, 2, 3, 4, 5, 6, 7, 8, 9, 1]), np.array([0, 9, 8, 7, 6, 5, 4, 3, 2, 1])
    rules = {"recolour_shift": lambda g: shift[g], "recolour_reverse": lambda g: reverse[g],
             "flip_left_right": lambda g: g[:, ::-1], "flip_up_down": lambda g: g[::-1, :]}
    tasks = []
    for name, rule in rules.items():
        grids = [rng.integers(0, 10, size=(3, 3)).astype(np.uint8) for _ in range(num_train + num_test)]
        pairs = [(g, np.ascontiguousarray(rule(g)).astype(np.uint8)) for g in grids]
        tasks.append(tf.Task(name, "evaluation", pairs[:num_train], [i for i, _ in pairs[num_train:]],
                             [o for _, o in pairs[num_train:]]))
    return {"training": [], "evaluation": tasks, "test": tf.as_test_split(tasks)}


def certain(canvases):
    """The colour log-probabilities of a predictor sure of every cell of `canvases` (a predictor's third output)."""
    canvases = np.asarray(canvases)
    colours = canvases.astype(np.int64)[..., None] - 2 == np.arange(10)
    return np.where(colours, 0.0, -30.0).astype(np.float16)
