"""bench.py's projected L4: the arithmetic of a step's FLOPs against torch's own count, and the milliseconds of a
known case."""
import os
import sys

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import train_full as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bench  # noqa: E402

SMALL = tf.parse_config(["--embed_dim=32", "--num_layers=2", "--num_heads=2", "--num_loops=2", "--num_augmentations=2",
                         "--vote_augmentations=2", "--canvas_size=12", "--dtype=float32"])


def counted_flops(run):
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):  # attention as matrix products, which the counter sees
        run()
    return counter.get_total_flops()


@pytest.mark.parametrize("training", [True, False])
def test_a_steps_flops_are_what_torch_counts_for_the_model_and_muon(training):
    model = tf.ARCTransformer(SMALL, 4)
    canvases, ids = torch.full((3, 5, 7), 3), torch.zeros(3, dtype=torch.long)
    if training:
        model_flops = counted_flops(lambda: model(canvases, ids).sum().backward())
        matrices = [p for n, p in model.named_parameters() if n.startswith("blocks.") and p.dim() == 2]
        # torch.optim.Muon's form of Newton-Schulz (a GPU's bf16), one matrix at a time
        muon_flops = sum(counted_flops(lambda: tf.Muon.orthogonalise(p.detach()[None], 5, 1e-7, torch.bfloat16))
                         for p in matrices)
    else:
        with torch.no_grad():
            model_flops, muon_flops = counted_flops(lambda: model(canvases, ids)), 0
    flops, traffic = bench.step_work(SMALL, [5 * 7] * 3, training)
    assert flops == model_flops + muon_flops and traffic > 0
    assert (muon_flops > 0) == training


def test_the_projected_milliseconds_of_a_known_step():
    one = {**bench.ASSUMED, "host_us": 15.0, "flop_share": 0.5, "bandwidth_share": 0.5, "allreduce_gbs": 10.0}
    card = {"tflops": 100.0, "gbs": 200.0}
    # 1,000 operations at 15 us: 15 ms of host; 5e11 FLOPs at 50 TFLOP/s: 10 ms; 4e8 bytes at 100 GB/s: 4 ms
    alone = bench.projected_ms(1000, 5e11, 4e8, card=card, assumed=one)
    assert alone == pytest.approx({"host": 15.0, "compute": 10.0, "memory": 4.0, "allreduce": 0.0, "device": 14.0,
                                   "ms": 15.0})
    # and a ring all-reduce of 40 MB over 4 GPUs moves 2 x 3/4 of it at 10 GB/s: 6 ms more, the device now the longer
    four = bench.projected_ms(1000, 5e11, 4e8, allreduce_bytes=4e7, processes=4, card=card, assumed=one)
    assert four["allreduce"] == pytest.approx(6.0) and four["ms"] == pytest.approx(20.0)


def test_the_projection_of_a_preset_counts_its_operations_and_prices_every_part():
    config = tf.parse_config(["--preset=quick", "--num_augmentations=2", "--vote_augmentations=2"],
                             presets=bench.PRESETS)
    tasks, _ = tf.load_tasks(config, local_folder="/nonexistent", kaggle_root="/nonexistent")
    tasks = {split: found[:6] for split, found in tasks.items()}
    parts = bench.projected_l4(config, tf.build_training_set(tasks, config), tasks["evaluation"])
    assert parts["operations"] > 100
    for name in ("training", "training_4", "adaptation", "prediction"):
        assert parts[name]["ms"] == max(parts[name]["host"], parts[name]["device"]) > 0
    assert parts["training_4"]["allreduce"] > 0 == parts["training"]["allreduce"]
    assert parts["training"]["host"] == pytest.approx(parts["operations"] * bench.ASSUMED["host_us"] / 1e3)


def test_the_measured_milliseconds_time_what_the_projection_prices_on_this_device():
    config = tf.parse_config(["--preset=quick", "--num_augmentations=2", "--vote_augmentations=2", "--adapt_steps=2"],
                             presets=bench.PRESETS)
    tasks, _ = tf.load_tasks(config, local_folder="/nonexistent", kaggle_root="/nonexistent")
    tasks = {split: found[:6] for split, found in tasks.items()}
    training_set = tf.build_training_set(tasks, config)
    batches, adaptations, side = bench.projection_inputs(config, training_set, tasks["evaluation"])
    assert batches and adaptations and max(len(b.inputs) for b in adaptations) == config["adapt_batch_size"]
    measured = bench.measured_ms(config, training_set, tasks["evaluation"], repeats=1)
    assert set(measured) == {"training", "adaptation", "prediction"}
    assert all(0 < ms < float("inf") for ms in measured.values())
