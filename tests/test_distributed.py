"""Several processes with torchrun and DistributedDataParallel, on CPU with the gloo backend: the run
completes, rank 0 alone writes, the result matches a single process, and checkpoints resume on another
number of processes."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import train_full as tf
from helpers import TINY, make_task, small_dataset, write_kaggle_folder

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


@pytest.mark.parametrize("loops", [1, 2])  # a looped core uses each weight twice a step: DDP reduces it once
def test_two_processes_at_a_batch_of_b_train_as_one_at_2b_and_write_their_outputs_once(tmp_path, loops):
    # batch_size is each process's: two processes of 3 pairs take the same steps as one of 6, at the same rates.
    single, single_out, single_ck = launch(tmp_path, "single", 1, f"--num_loops={loops}")
    double, double_out, double_ck = launch(tmp_path, "double", 2, "--batch_size=3", f"--num_loops={loops}")
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


@pytest.mark.parametrize("before, after", [(1, 2), (2, 1), (1, 3)])
def test_a_checkpoint_late_in_its_epoch_resumes_on_another_number_of_processes(tmp_path, before, after):
    # An epoch has fewer, larger batches on more processes: the checkpoint's place is past the new plan's end.
    config = tf.parse_config([*SETTINGS, "--batch_size=2"])
    data = write_kaggle_folder(str(tmp_path / "data"), small_dataset())
    plans = {n: len(tf.epoch_batches(tf.build_training_set(tf.load_kaggle_folder(data), config), config, 0,
                                     processes=n)) for n in (before, after)}
    steps = plans[before] - 1
    assert steps >= plans[after] or before > after
    launch(tmp_path, "run", before, "--batch_size=2", f"--max_steps={steps}")
    _, out, ck = tmp_path, tmp_path / "run_out", tmp_path / "run_ck"
    state = torch.load(ck / "last.pt", weights_only=True)["state"]
    assert (state["step"], state["epoch"], state["batch"]) == (steps, 0, steps)
    result, out, ck = launch(tmp_path, "run", after, "--batch_size=2", f"--max_steps={steps + 6}", "--resume=True")
    assert f"resumed from {ck / 'last.pt'}: step {steps}, epoch 0" in result.stdout, result.stdout
    state = torch.load(ck / "last.pt", weights_only=True)["state"]
    assert state["step"] == steps + 6 and state["epoch"] >= 1 and state["plan_processes"] == after
    tf.validate_submission(json.load(open(out / "submission.json")), tf.load_kaggle_folder(data)["test"])


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


def test_two_processes_share_the_evaluation_and_test_prediction_and_write_what_one_process_writes(tmp_path):
    # The same weights (one run's last.pt, its best evaluation forgotten so that the final one writes its files)
    # evaluated and submitted by one process and by two, each adapting and predicting its share of the tasks.
    dataset = {**small_dataset(), "test": {f"hidden{k}": make_task(seed=30 + k, num_test=1 + k % 2) for k in range(3)}}
    data = write_kaggle_folder(str(tmp_path / "data"), dataset)
    settings = [*SETTINGS, f"--data_dir={data}", "--adapt_steps=2", "--eval_every_n_epochs=0"]

    def run(processes, name, *extra):
        command = [sys.executable, SCRIPT] if processes == 1 else \
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", SCRIPT]
        result = subprocess.run([*command, *settings, f"--output_dir={tmp_path / name}",
                                 f"--checkpoint_dir={tmp_path / (name + '_ck')}", *extra],
                                capture_output=True, text=True, cwd=tmp_path, timeout=300,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result
    run(1, "trained", "--max_steps=6")
    checkpoint = torch.load(tmp_path / "trained_ck" / "last.pt", weights_only=True)
    checkpoint["state"]["best_score"] = None
    for name in ("one", "two"):
        (tmp_path / f"{name}_ck").mkdir()
        torch.save(checkpoint, tmp_path / f"{name}_ck" / "last.pt")
    one = run(1, "one", "--max_steps=6", "--resume=True")
    two = run(2, "two", "--max_steps=6", "--resume=True")
    assert "final eval at step 6" in one.stdout and "final eval at step 6" in two.stdout
    for name in ("eval_predictions.json", "submission.json"):
        assert json.load(open(tmp_path / "one" / name)) == json.load(open(tmp_path / "two" / name)), name
    tf.validate_submission(json.load(open(tmp_path / "two" / "submission.json")), tf.load_kaggle_folder(data)["test"])
    assert "submission: 3 tasks, 4 test inputs" in two.stdout


def test_sigterm_to_torchrun_leaves_a_loadable_checkpoint_and_a_valid_submission_inside_its_grace(tmp_path):
    # torchrun's agent passes SIGTERM on to its workers and kills them 30 s later (TORCH_ELASTIC_SHUTDOWN_TIMEOUT).
    data = write_kaggle_folder(str(tmp_path / "data"), small_dataset())
    ck = tmp_path / "ck"
    agent = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                              SCRIPT, *SETTINGS, "--epochs=0", "--target_runtime_hours=0.2", "--eval_every_n_epochs=0",
                              "--save_every_n_minutes=0.002", "--log_every_n_steps=50", f"--data_dir={data}",
                              f"--output_dir={tmp_path / 'out'}", f"--checkpoint_dir={ck}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and not ((ck / "last.json").exists() and json.loads((ck / "last.json").read_text())["step"] >= 40):
        time.sleep(0.1)
    agent.send_signal(signal.SIGTERM)
    signalled = time.time()
    out, err = agent.communicate(timeout=90)
    assert time.time() - signalled < 30, err[-3000:]
    assert "stopped by SIGTERM: to continue, run the same command with --resume=True" in out, out[-3000:] + err[-3000:]
    assert "SIGKILL" not in err
    state = torch.load(ck / "last.pt", weights_only=True)["state"]
    assert state["step"] >= 40 and json.loads((ck / "last.json").read_text())["step"] == state["step"]
    tf.validate_submission(json.load(open(tmp_path / "out" / "submission.json")),
                           tf.load_kaggle_folder(data)["test"])
