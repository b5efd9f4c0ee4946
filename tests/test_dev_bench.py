"""The development benchmark's runner: two seeds at once, a fixed number of steps, one table."""
import json
import os
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_DEV = ["--embed_dim=16", "--num_layers=1", "--num_heads=2", "--num_augmentations=2", "--vote_augmentations=2",
            "--warmup_steps=2", "--adapt_steps=2"]


def test_two_seeds_run_at_once_for_exactly_the_steps_asked_and_print_each_and_the_mean(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "dev_bench.py"), "--seeds=0,1", "--steps=3", *TINY_DEV,
                             f"--output_dir={tmp_path / 'out'}", f"--checkpoint_dir={tmp_path / 'ck'}"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "model, seed 0: 48 samples (3 steps)" in result.stdout and "model, seed 1: 48 samples (3 steps)" in result.stdout
    import dev_bench
    reports = [json.load(open(tmp_path / "out" / f"seed{seed}" / "eval_predictions.json")) for seed in (0, 1)]
    assert len(reports[0]["tasks"]) == 178 + 47
    tables = result.stdout.split("\npass@2 on ")[1:]
    assert [table.split(":")[0] for table in tables] == list(dev_bench.SET_NAMES)
    for table, tasks in zip(tables, dev_bench.task_sets().values()):
        summaries = [dev_bench.set_summary(report, tasks) for report in reports]
        mean = sum(s["tasks_solved"] for s in summaries) / 2
        lines = table.splitlines()
        assert f"{len(tasks)} tasks, {summaries[0]['num_outputs']} test outputs" in lines[0]
        assert any(line.split()[:3] == ["model,", "mean", f"{mean:g}"] for line in lines)
        assert any(line.split()[:3] == ["model,", "seed", "1"] and f"answer among candidates "
                   f"{summaries[1]['answer_among_candidates']}" in line for line in lines)
        assert any(line.split()[:1] == ["identity"] for line in lines)
    assert result.stdout.strip().splitlines()[-1].startswith("sets: ARC-AGI-1 small (178) ")
    # Each seed is its own run: its own log, checkpoint and settings.
    for seed in (0, 1):
        assert "all 3 steps done" in open(tmp_path / "out" / f"seed{seed}" / "dev_bench.log").read()
        checkpoint = torch.load(tmp_path / "ck" / f"seed{seed}" / "last.pt", weights_only=True)
        assert checkpoint["config"]["seed"] == seed and checkpoint["state"]["step"] == 3


def test_extra_data_never_brings_in_a_benchmark_task_by_its_id_or_an_input(tmp_path):
    import dev_bench
    import train_full as tf
    from helpers import write_json
    config = tf.parse_config(["--preset=dev"], presets=tf.load_presets(ROOT))
    for hidden in (False, True):
        tasks = dev_bench.benchmark_tasks(hidden)
        benchmark = dev_bench.benchmark_tasks()["evaluation"]
        folder = tmp_path / f"extra{hidden}"
        write_json(str(folder / f"{benchmark[0].id}.json"), [{"input": [[1]], "output": [[2]]}])  # RE-ARC's, say
        answer = {"input": benchmark[5].test_inputs[0].tolist(), "output": benchmark[5].test_outputs[0].tolist()}
        write_json(str(folder / "copy.json"), [{"input": [[3]], "output": [[4]]}, answer])
        write_json(str(folder / "fine.json"), [{"input": [[5]], "output": [[6]]}])
        tasks["extra"] = tf.load_extra_data(str(folder))
        training_set = tf.build_training_set(tasks, config)
        assert training_set.dropped == {"extra tasks dropped (the id or an input of an evaluation or test task)": 2}
        assert len(training_set.inputs) - training_set.extra_start == 1 and training_set.task_ids[-1] == "fine"


def test_a_comparison_trains_a_fixed_number_of_samples_unless_told_otherwise():
    import dev_bench
    import train_full as tf
    dev = tf.parse_config(["--preset=dev"], presets=tf.load_presets(ROOT))
    assert dev_bench.fixed_steps(dev, None, None, None) * dev["batch_size"] == dev_bench.SAMPLES
    assert dev_bench.fixed_steps({**dev, "batch_size": 32}, None, None, None) == dev_bench.SAMPLES // 32
    assert dev_bench.fixed_steps(dev, None, "480", None) == 30 and dev_bench.fixed_steps(dev, "7", "480", None) == 7


def test_the_second_set_is_of_another_origin_small_and_apart_from_the_first():
    import dev_bench
    import train_full as tf
    first, second = dev_bench.task_sets().values()
    assert (len(first), len(second)) == (178, 47)
    arc1 = tf.load_embedded("arc-agi-1")
    assert not {t.id for t in second} & {t.id for split in arc1.values() for t in split}
    assert all(dev_bench.small(t) and t.test_outputs for t in first + second)
    inputs = lambda tasks: {tf.grid_key(g) for t in tasks for g in t.test_inputs}
    assert not inputs(first) & inputs(second)


def test_l4_minutes_give_a_looped_arm_fewer_steps_and_a_wider_one_as_many():
    """On an L4 the dev model's step is bound by the host's operations (bench.py's projection): a second pass through
    the blocks issues more of them, a wider model the same."""
    import dev_bench
    import train_full as tf
    steps = {name: dev_bench.fixed_steps(tf.parse_config(["--preset=dev", "--num_augmentations=2", "--vote_augmentations=2",
                                                          *flags], presets=tf.load_presets(ROOT)), None, None, "1")
             for name, flags in (("loop", []), ("once", ["--num_loops=1"]), ("wide", ["--embed_dim=256"]))}
    assert steps["once"] > 1.2 * steps["loop"] and steps["wide"] == steps["loop"]
