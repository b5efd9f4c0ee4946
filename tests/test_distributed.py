"""Several processes with torchrun and DistributedDataParallel, on CPU with the gloo backend: the run
completes, rank 0 alone writes, the result matches a single process, and checkpoints resume on another
number of processes."""
import json
import os
import subprocess
import sys

import torch

import train_full as tf
from helpers import TINY, small_dataset, write_kaggle_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "train_full.py")
SETTINGS = [*TINY, "--epochs=4", "--batch_size=6", "--num_augmentations=4", "--log_every_n_steps=1", "--dtype=float32"]


def launch(tmp_path, name, processes, *extra):
    data = write_kaggle_folder(str(tmp_path / "data"), small_dataset())
    command = [sys.executable, SCRIPT] if processes == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", SCRIPT]
    out, ck = tmp_path / f"{name}_out", tmp_path / f"{name}_ck"
    result = subprocess.run([*command, *SETTINGS, f"--data_dir={data}", f"--output_dir={out}",
                             f"--checkpoint_dir={ck}", *extra],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result, out, ck


def test_two_processes_at_a_batch_of_b_train_as_one_at_2b_and_write_their_outputs_once(tmp_path):
    # batch_size is each process's: two processes of 3 pairs take the same steps as one of 6, at the same rates.
    single, single_out, single_ck = launch(tmp_path, "single", 1)
    double, double_out, double_ck = launch(tmp_path, "double", 2, "--batch_size=3")
    assert "2 processes" in double.stdout
    assert double.stdout.count("training stopped at step") == 1  # rank 0 alone prints
    metrics = [json.loads(line) for line in open(double_out / "metrics.jsonl")]
    assert [m["kind"] for m in metrics].count("start") == 1 and metrics[-1]["kind"] == "end"
    tf.validate_submission(json.load(open(double_out / "submission.json")),
                           tf.load_kaggle_folder(str(tmp_path / "data"))["test"])
    one = torch.load(single_ck / "last.pt", weights_only=True)
    two = torch.load(double_ck / "last.pt", weights_only=True)
    assert one["state"]["step"] == two["state"]["step"] > 0
    for name, weights in one["model"].items():
        assert torch.allclose(weights, two["model"][name], atol=1e-4), name  # summed in another order only
    single_losses = [json.loads(line)["loss"] for line in open(single_out / "metrics.jsonl") if '"train"' in line]
    double_losses = [json.loads(line)["loss"] for line in open(double_out / "metrics.jsonl") if '"train"' in line]
    assert len(single_losses) == len(double_losses) and all(abs(a - b) < 1e-3 for a, b in zip(single_losses, double_losses))


def test_a_checkpoint_from_two_processes_resumes_in_one(tmp_path):
    _, _, ck = launch(tmp_path, "double", 2)
    steps = json.load(open(ck / "last.json"))["step"]
    data = str(tmp_path / "data")
    result = subprocess.run([sys.executable, SCRIPT, *SETTINGS, "--epochs=6", "--resume=True", f"--data_dir={data}",
                             f"--output_dir={tmp_path / 'double_out'}", f"--checkpoint_dir={ck}"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed from {ck / 'last.pt'}: step {steps}, epoch 4" in result.stdout, result.stdout
    assert json.load(open(ck / "last.json"))["step"] > steps


def test_a_busy_checkpoint_folder_stops_every_process_at_once(tmp_path):
    data = write_kaggle_folder(str(tmp_path / "data"), small_dataset())
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        (tmp_path / "ck").mkdir()
        (tmp_path / "ck" / "run.lock").write_text(str(holder.pid))
        result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                 SCRIPT, *SETTINGS, f"--data_dir={data}", f"--output_dir={tmp_path / 'out'}",
                                 f"--checkpoint_dir={tmp_path / 'ck'}"],
                                capture_output=True, text=True, cwd=tmp_path, timeout=180,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode != 0
    assert f"process {holder.pid} is using this checkpoint folder" in result.stderr
    assert "exitcode  : 2" in result.stderr and "exitcode  : 1" not in result.stderr  # both ranks, the same way
    assert os.listdir(tmp_path / "ck") == ["run.lock"] and not (tmp_path / "out").exists()


def test_per_task_adaptation_under_two_processes_leaves_training_as_one_process_does(tmp_path):
    # Evaluations (each adapting every task, then putting the weights back) happen every epoch, between steps.
    single, _, single_ck = launch(tmp_path, "single", 1, "--adapt_steps=2")
    double, double_out, double_ck = launch(tmp_path, "double", 2, "--adapt_steps=2", "--batch_size=3")
    assert double.stdout.count("eval at step") >= 2 and "final eval" in double.stdout
    one = torch.load(single_ck / "last.pt", weights_only=True)
    two = torch.load(double_ck / "last.pt", weights_only=True)
    assert one["state"]["step"] == two["state"]["step"] > 0
    for name, weights in one["model"].items():
        assert torch.allclose(weights, two["model"][name], atol=1e-4), name
    tf.validate_submission(json.load(open(double_out / "submission.json")),
                           tf.load_kaggle_folder(str(tmp_path / "data"))["test"])
