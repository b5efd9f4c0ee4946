"""Choices the run makes for Kaggle's GPUs, tested on a CPU by faking what the GPU reports: precision by
compute capability (a T4 is 7.5: no bf16 units), and checkpoints that resume on another number of GPUs."""
import numpy as np
import pytest
import torch

import train_full as tf
from test_model import CONFIG, model_and_batch

CUDA = torch.device("cuda")


@pytest.mark.parametrize("capability, chosen", [((7, 5), torch.float16), ((8, 9), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_on_a_gpu_bf16_needs_compute_capability_8(monkeypatch, capability, chosen):
    monkeypatch.setattr(tf.torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(tf.torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)  # emulation counts on a T4
    amp_dtype, reason = tf.choose_precision(CONFIG, CUDA)
    assert amp_dtype is chosen and f"{capability[0]}.{capability[1]}" in reason


def test_a_bf16_run_resumed_on_a_t4_switches_to_fp16_and_says_so(monkeypatch):
    monkeypatch.setattr(tf.torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    amp_dtype, reason = tf.resumed_precision("bfloat16", CONFIG, CUDA)
    assert amp_dtype is torch.float16 and "began in bfloat16" in reason
    assert tf.resumed_precision("float32", CONFIG, CUDA) == (None, "float32, as the run began")
    monkeypatch.setattr(tf.torch.cuda, "get_device_capability", lambda device=None: (8, 9))
    assert tf.resumed_precision("bfloat16", CONFIG, CUDA)[0] is torch.bfloat16


def checkpoint_of_a_bf16_run(tmp_path):
    model, _ = model_and_batch()
    optimizers = tf.make_optimizers(model, CONFIG)
    scaler = torch.amp.GradScaler("cpu", enabled=False)  # bf16 runs have no scaler
    path = str(tmp_path / "last.pt")
    tf.save_checkpoint(path, model, optimizers, scaler, tf.TrainState(step=7, dtype="bfloat16"), CONFIG, ["a", "b"])
    return path


def test_a_checkpoint_holds_no_gpu_random_state_and_resumes_with_a_gradient_scaler(tmp_path, monkeypatch):
    monkeypatch.setattr(tf.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(tf.torch.cuda, "get_rng_state_all", lambda: [torch.zeros(16, dtype=torch.uint8)] * 4)
    checkpoint = torch.load(checkpoint_of_a_bf16_run(tmp_path), weights_only=True)
    assert set(checkpoint["rng"]) == {"torch"}  # nothing on the device draws random numbers
    model, _ = model_and_batch(seed=1)
    scaler = torch.amp.GradScaler("cpu", enabled=True)  # the same run, now in fp16 on a T4
    state = tf.restore_checkpoint("last.pt", checkpoint, model, tf.make_optimizers(model, CONFIG), scaler)
    assert state.step == 7 and scaler.is_enabled()


def test_a_checkpoint_saved_with_four_gpus_resumes_on_one(tmp_path, monkeypatch):
    checkpoint = torch.load(checkpoint_of_a_bf16_run(tmp_path), weights_only=True)
    checkpoint["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8)] * 4  # as earlier versions saved it

    def one_gpu(states):
        if len(states) > 1:
            raise RuntimeError("CUDA error: invalid device ordinal")
    monkeypatch.setattr(tf.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(tf.torch.cuda, "set_rng_state_all", one_gpu)
    model, _ = model_and_batch(seed=1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    assert tf.restore_checkpoint("last.pt", checkpoint, model, tf.make_optimizers(model, CONFIG), scaler).step == 7
    assert all(np.allclose(a, b) for a, b in zip(model.state_dict().values(), model_and_batch()[0].state_dict().values()))


def test_a_checkpoint_from_before_muon_is_refused_for_resuming_with_a_way_on(tmp_path):
    checkpoint = torch.load(checkpoint_of_a_bf16_run(tmp_path), weights_only=True)
    optimizers = checkpoint.pop("optimizers")
    checkpoint["dense_optimizer"], checkpoint["sparse_optimizer"] = optimizers[1], optimizers[2]  # as saved before
    model, _ = model_and_batch(seed=1)
    with pytest.raises(tf.CheckpointError, match="last.pt: written by an older train_full.py .* --init_from"):
        tf.restore_checkpoint("ck/last.pt", checkpoint, model, tf.make_optimizers(model, CONFIG),
                              torch.amp.GradScaler("cpu", enabled=False))
