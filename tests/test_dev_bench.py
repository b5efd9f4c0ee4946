"""The development benchmark's runner: two seeds at once, a fixed number of steps, one table."""
import json
import os
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_DEV = ["--embed_dim=16", "--num_layers=1", "--num_heads=2", "--num_augmentations=2", "--vote_augmentations=2",
            "--warmup_steps=2"]


def test_two_seeds_run_at_once_for_exactly_the_steps_asked_and_print_each_and_the_mean(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "dev_bench.py"), "--seeds=0,1", "--steps=3", *TINY_DEV,
                             f"--output_dir={tmp_path / 'out'}", f"--checkpoint_dir={tmp_path / 'ck'}"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 seeds, seed 0: 3 steps, seed 1: 3 steps" in result.stdout
    summaries = [json.load(open(tmp_path / "out" / f"seed{seed}" / "eval_predictions.json"))["summary"]
                 for seed in (0, 1)]
    mean = sum(s["tasks_solved"] for s in summaries) / 2
    lines = result.stdout.splitlines()
    assert any(line.split()[:3] == ["model,", "mean", f"{mean:g}"] for line in lines)
    assert any(line.split()[:3] == ["model,", "seed", "1"] and f"answer among candidates "
               f"{summaries[1]['answer_among_candidates']}" in line for line in lines)
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
