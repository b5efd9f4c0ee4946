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
