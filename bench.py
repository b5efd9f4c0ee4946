"""Speed benchmark: the seed's training step, a fixed-canvas batched step, and train_full.py's step, on
the same machine, model width and depth, in one run; and a self-check of the machine for a real run.

    python bench.py [--repeats=3] [--batches=8] [--preset=kaggle] [--dtype=auto] [--embed_dim=256 ...]
    python bench.py --check [--key=value ...]     # can this machine run the kaggle preset? one table
    python bench.py --steps [--key=value ...]     # what one training step asks of the host: operations, syncs, ms
    python bench.py --l4 [--preset=NAME ...]      # a step, an adaptation step, a prediction batch projected on an L4
    python bench.py --l4 --measure                # and the same three timed on this machine's device

Prints, for each step: samples/s, useful cells/s (cells of real grids, not padding), achieved GFLOP/s on
useful work and that as a fraction of the matrix-multiply peak measured here for the same dtype; then the
ratios. Also times the evaluation of the 120 ARC-AGI-2 evaluation tasks at the quick preset's settings and
prints peak memory. Steps 2 and 3 run the same --batches batches of real pairs (spread over the sizes of
an epoch); every figure is the median of --repeats timed repetitions after a warm-up.
"""
import collections
import math
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import torch.utils._python_dispatch
from torch.nn.attention import SDPBackend, sdpa_kernel

import train_full as tf

PRESETS = tf.load_presets(os.path.dirname(os.path.abspath(__file__)))


# -----------------------------------------------------------------------------
# The reference: the seed's step as its description gives it (../shared/seed/train_full_fix.md): one
# sample per step, every grid padded to 30x30 with colour 0, a transformer over the 900 cells predicting
# the output in the input's shape, a loss on every cell, padding included.

class SeedModel(nn.Module):
    def __init__(self, embed_dim, num_layers, num_heads):
        super().__init__()
        self.embed = nn.Embedding(10, embed_dim)
        self.position = nn.Parameter(torch.randn(900, embed_dim) * 0.02)
        layer = nn.TransformerEncoderLayer(embed_dim, num_heads, 4 * embed_dim, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.head = nn.Linear(embed_dim, 10)

    def forward(self, grid):
        return self.head(self.encoder(self.embed(grid.view(1, 900)) + self.position)).view(1, 30, 30, 10)


def seed_sample(pair):
    """A pair as the seed fed it: both grids pasted on a 30x30 canvas of zeros."""
    canvases = []
    for grid in pair:
        canvas = np.zeros((30, 30), dtype=np.int64)
        canvas[:grid.shape[0], :grid.shape[1]] = grid
        canvases.append(torch.from_numpy(canvas))
    return canvases


# -----------------------------------------------------------------------------
# Work and timing

def useful_cells(grid_in, grid_out):
    """Cells that hold a real input or output colour; both grids sit at the top-left corner."""
    overlap = min(grid_in.shape[0], grid_out.shape[0]) * min(grid_in.shape[1], grid_out.shape[1])
    return grid_in.size + grid_out.size - overlap


def training_flops(num_parameters, tokens, num_layers, embed_dim):
    """Forward + backward FLOPs of one sequence of `tokens`: 6 per parameter per token for the matrices,
    and 12 * L^2 * d per layer for attention scores and mixing."""
    return 6 * num_parameters * tokens + 12 * num_layers * embed_dim * tokens ** 2


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype, device=torch.device("cpu"), repeats=5):
    """GFLOP/s of a large square matrix multiply in `dtype` on the device."""
    size = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    a @ b
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * size ** 3 / statistics.median(times) / 1e9


def training_parts(config, training_set, device, amp_dtype):
    """(model, optimizers, gradient scaler) as a run of one process builds them, the model compiled where
    the config says, its weights drawn from seed 0."""
    torch.manual_seed(0)
    model = tf.ARCTransformer(config, training_set.num_embeddings).to(device)
    if config["compile"]:
        tf.compile_model(model)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return model, tf.make_optimizers(model, config, amp_dtype=amp_dtype), scaler


def median_seconds(run, repeats):
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(name, seconds, samples, cells, flops, peak):
    gflops = flops / seconds / 1e9
    print(f"{name:<34} {samples / seconds:10.1f} samples/s {cells / seconds:12.0f} useful cells/s "
          f"{gflops:8.1f} useful GFLOP/s  {gflops / peak:6.1%} of peak")
    return samples / seconds


def main(argv):
    own = ("--repeats=", "--batches=")
    config = tf.parse_config([a for a in argv if not a.startswith(own)], presets=PRESETS)
    repeats = next((int(a.split("=")[1]) for a in argv if a.startswith("--repeats=")), 3)
    num_batches = next((int(a.split("=")[1]) for a in argv if a.startswith("--batches=")), 8)
    torch.manual_seed(0)
    device = tf.choose_device(config)
    tasks, _ = tf.load_tasks(config)
    training_set = tf.build_training_set(tasks, config)
    amp_dtype, precision = tf.choose_precision(config, device)
    dim, layers = config["embed_dim"], config["num_layers"]
    pairs = list(zip(training_set.inputs, training_set.outputs))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, {precision}; "
          f"embed_dim {dim}, num_layers {layers}, num_heads {config['num_heads']}, batch_size {config['batch_size']}, "
          f"compile {config['compile']}, median of {repeats}")
    peak32 = matmul_peak(torch.float32, device)
    peak = peak32 if amp_dtype is None else matmul_peak(amp_dtype, device)
    print(f"matrix-multiply peak: {peak32:.0f} GFLOP/s fp32" + ("" if amp_dtype is None else
                                                               f", {peak:.0f} GFLOP/s {amp_dtype}"))

    # 1. The seed's step: one sample, 30x30, fp32.
    seed_model = SeedModel(dim, layers, config["num_heads"]).to(device)
    seed_optimizer = torch.optim.Adam(seed_model.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    seed_pairs = [pairs[i] for i in rng.choice(len(pairs), size=repeats + 1, replace=False)]
    seed_iter = iter(seed_pairs * 2)

    def seed_step():
        grid_in, grid_out = (t.to(device) for t in seed_sample(next(seed_iter)))
        loss = F.cross_entropy(seed_model(grid_in).view(-1, 10), grid_out.view(-1))
        loss.backward()
        seed_optimizer.step()
        seed_optimizer.zero_grad(set_to_none=True)
        loss.item()
    seed_seconds = median_seconds(seed_step, repeats)
    seed_parameters = sum(p.numel() for p in seed_model.parameters()) - seed_model.position.numel()
    mean_useful = np.mean([useful_cells(*p) for p in seed_pairs])
    seed_rate = report("1. seed step (1 x 30x30, fp32)", seed_seconds, 1, mean_useful,
                       training_flops(seed_parameters, mean_useful, layers, dim), peak32)
    del seed_model, seed_optimizer

    # 2 and 3 share the model, optimizers and real batches of this project.
    model, optimizers, scaler = training_parts(config, training_set, device, amp_dtype)
    parameters = sum(p.numel() for n, p in model.named_parameters() if n != "task_embedding.weight")
    prefix = config["num_prefix_tokens"]
    # A fixed set of batches spread evenly over the epoch's range of sizes, so the mix of small and large
    # grids (and so the pairs per batch) is the epoch's. A repetition is one pass over the set.
    epoch = sorted(tf.epoch_batches(training_set, config, epoch=0), key=lambda b: len(b[0]))
    batches = epoch[len(epoch) // (2 * num_batches)::len(epoch) // num_batches][:num_batches]

    def useful_work(batch_pairs):
        cells = [useful_cells(training_set.inputs[p], training_set.outputs[p]) for p in batch_pairs]
        return sum(cells), sum(training_flops(parameters, c + prefix, layers, dim) for c in cells)

    def pass_runner(make):
        made = [make(b) for b in batches]

        def one_pass():
            for batch in made:
                loss = tf.train_step(model, optimizers, scaler, batch, 1.0, device, amp_dtype, config)[0]
            loss.item()
        return one_pass

    # 2. Fixed canvas: the same pairs, every one on the full 30x30 canvas.
    def full_canvas(batch):
        chosen, augmentations = batch
        made = tf.make_batch(training_set, chosen, augmentations, config["canvas_size"])
        side = config["canvas_size"]
        padded = [np.zeros((len(chosen), side, side), dtype=np.int64) for _ in range(2)]
        for array, source in zip(padded, made[:2]):
            array[:, :source.shape[1], :source.shape[2]] = source
        return padded[0], padded[1], made[2]
    fixed_seconds = median_seconds(pass_runner(full_canvas), repeats)
    samples = sum(len(b[0]) for b in batches)
    cells, flops = map(sum, zip(*[useful_work(b[0]) for b in batches]))
    fixed_rate = report("2. fixed 30x30 canvas, batched", fixed_seconds, samples, cells, flops, peak)

    # 3. This project's step: batches grouped by size and cut to their largest grid.
    def project_batch(batch):
        return tf.make_batch(training_set, batch[0], batch[1], config["canvas_size"])
    project_seconds = median_seconds(pass_runner(project_batch), repeats)
    project_rate = report("3. train_full.py step", project_seconds, samples, cells, flops, peak)
    print(f"ratios: 3/1 = {project_rate / seed_rate:.1f}x, 3/2 = {project_rate / fixed_rate:.1f}x (samples/s; "
          f"{len(batches)} batches of {samples / len(batches):.1f} pairs on average, the epoch's average is "
          f"{len(training_set.inputs) / len(epoch):.1f})")

    # Evaluation at the quick preset's settings: 120 ARC-AGI-2 evaluation tasks.
    quick = tf.parse_config(["--preset=quick"], presets=PRESETS)
    quick_set = tf.build_training_set(tasks, quick)
    quick_model = tf.ARCTransformer(quick, quick_set.num_embeddings).to(device)
    quick_amp, _ = tf.choose_precision(quick, device)
    predictor = tf.model_predictor(quick_model, device, quick_amp)
    evaluation = tasks["evaluation"]
    start = time.perf_counter()
    tf.eval_report(evaluation, tf.predict_tasks(evaluation, quick_set, predictor, quick))
    predictions = quick["vote_augmentations"] * sum(len(t.test_inputs) for t in evaluation)
    print(f"evaluation, quick preset: {len(evaluation)} tasks, {predictions} predictions in "
          f"{time.perf_counter() - start:.1f}s")
    if device.type == "cuda":
        print(f"peak memory: {torch.cuda.max_memory_allocated() / 2 ** 30:.2f} GiB on the GPU")
    else:
        print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GiB resident")


# -----------------------------------------------------------------------------
# What a training step asks of the host. On a GPU each ATen operation is a kernel launch the host must
# issue, and an operation that reads a value back (or whose output size depends on values) makes the host
# wait for the device: both are counted here, on any device, by watching the dispatcher.

# Operations that read a tensor's value into Python or size their output by its values: on a GPU each
# waits for every kernel queued before it.
SYNCING = {"_local_scalar_dense", "item", "is_nonzero", "equal", "nonzero", "nonzero_static", "masked_select",
           "_unique", "_unique2", "unique_dim", "unique_consecutive", "_coalesce", "coalesce", "repeat_interleave",
           "allclose"}


class OperationCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the ATen operations run under it that launch a kernel (all but views, which only make new
    metadata), and those that would make a CUDA host wait (SYNCING, or indexing with a boolean mask,
    which finds its true cells first)."""
    def __init__(self):
        super().__init__()
        self.operations, self.syncs = 0, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.operations += not func.is_view
        bool_index = name in ("index", "index_put", "index_put_") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else ()) or ())
        if name in SYNCING or bool_index:
            self.syncs.append(name)
        return func(*args, **(kwargs or {}))


def step_profile(config, steps=4, warmup=3, largest_canvas=None):
    """(ATen operations that launch a kernel per step, the syncing operations of one step by name, median ms
    per step) of train_step on real batches of the embedded data, after `warmup` steps (compiling, optimizer
    state); with `largest_canvas`, batches of one pair on at most that many cells alone."""
    device = tf.choose_device(config)
    amp_dtype, _ = tf.choose_precision(config, device)
    tasks, _ = tf.load_tasks(config)
    training_set = tf.build_training_set(tasks, config)
    model, optimizers, scaler = training_parts(config, training_set, device, amp_dtype)
    if largest_canvas is None:
        batches = [batch for _, batch in spread_batches(training_set, config, warmup + steps)]
    else:
        batches = [batch for _, batch in spread_batches(training_set, config, len(training_set.inputs))
                   if len(batch.inputs) == 1 and batch.inputs[0].size <= largest_canvas][:warmup + steps]
    step = lambda batch: tf.train_step(model, optimizers, scaler, batch, 1.0, device, amp_dtype, config)
    for batch in batches[:warmup]:
        step(batch)
    counter = OperationCounter()
    with counter:
        for batch in batches[warmup:]:
            step(batch)
    times = []
    for batch in batches[warmup:]:
        synchronize(device)
        start = time.perf_counter()
        step(batch)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return counter.operations / steps, sorted(counter.syncs)[::steps], 1000 * statistics.median(times)


def print_step_profile(argv):
    """bench.py --steps: operations and syncs per step of the default model at batch 32 (eager), and host
    ms per step: a width-32 model on batches of one small pair (at most 10x10 cells), whose compute is
    negligible, at the default settings (compile on), so what is timed is what the host does to issue a step."""
    config = tf.parse_config(argv, presets=PRESETS)
    operations, syncs, _ = step_profile({**config, "compile": False})
    print(f"per training step, embed_dim {config['embed_dim']}, {config['num_layers']} layers, batch "
          f"{config['batch_size']}, eager: {operations:.0f} ATen operations that launch a kernel, {len(syncs)} that sync a GPU"
          + (f" ({', '.join(f'{name} x{n}' for name, n in collections.Counter(syncs).items())})" if syncs else ""))
    narrow = {**config, "embed_dim": 32, "batch_size": 1}
    _, _, eager_ms = step_profile({**narrow, "compile": False}, steps=30, warmup=10, largest_canvas=100)
    _, _, compiled_ms = step_profile(narrow, steps=30, warmup=10, largest_canvas=100)
    print(f"host time per step (embed_dim 32, batches of one pair of at most 10x10: negligible compute): {compiled_ms:.1f} ms "
          f"compiled, {eager_ms:.1f} ms eager")
    inline_ms, ahead_ms = batch_wait(config)
    print(f"host time to have the next batch of {config['batch_size']} pairs: {inline_ms:.2f} ms built when asked, "
          f"{ahead_ms:.2f} ms built ahead on the loop's thread while a step runs")


def batch_wait(config, steps=60, step_seconds=0.02):
    """(median ms to build a batch of the run's epoch on the spot, median ms the loop waits for the one its
    reader built ahead while a step of `step_seconds` ran): what the host spends on input each step."""
    tasks, _ = tf.load_tasks(config)
    training_set = tf.build_training_set(tasks, config)
    batches, state = tf.EpochBatches(training_set, config, tf.SINGLE_PROCESS), tf.TrainState()
    inline, ahead = [], []
    for _ in range(steps):
        place = (state.epoch, state.batch, state.focus, state.plan_processes)
        start = time.perf_counter()
        batches.build(*place)
        inline.append(time.perf_counter() - start)
        start = time.perf_counter()
        batches.next(state, False)
        ahead.append(time.perf_counter() - start)
        batches.advance(state)
        time.sleep(step_seconds)  # the device's share of a step, during which the reader builds the next batch
    batches.close()
    return 1000 * statistics.median(inline), 1000 * statistics.median(ahead)


# -----------------------------------------------------------------------------
# The projected L4. No L4 is here, so a step's cost on one is projected from what this machine can count: the host's
# operations, each costing the host a fixed time to issue, against the device's FLOPs and memory traffic at a
# fraction of the card's peak; the step takes the longer of the two. Every assumption is named with its source,
# and a lent GPU's measured milliseconds are what correct them (EXPERIMENTS.md).

L4 = {"tflops": 121.0, "gbs": 300.0}  # NVIDIA's L4 data sheet: dense bf16 tensor TFLOP/s, memory bandwidth GB/s
ASSUMED = {
    "host_us": 15.0,         # host time to issue one eager ATen operation with its CUDA launch (~10-20 us in PyTorch)
    "flop_share": 1 / 3,     # of the peak that matrix products 128-256 wide reach (small tiles, bf16)
    "bandwidth_share": 0.7,  # of the memory bandwidth that elementwise kernels reach, streaming
    "activation_reads": 90,  # a token's width of numbers each block pass reads or writes, ~30 forward, ~60 backward
    "parameter_bytes": 40,   # moved per weight a training step: fp32 weight read twice, bf16 copy, fp32 gradient,
                             # optimizer state read and written, update
    "allreduce_gbs": 10.0,   # NCCL's bus bandwidth between L4s over PCIe, no NVLink (a conservative guess)
}


def projected_ms(operations, flops, traffic, allreduce_bytes=0.0, processes=1, card=L4, assumed=ASSUMED):
    """{host, compute, memory, allreduce, device, ms} in milliseconds of one step that issues `operations`, does
    `flops` and moves `traffic` bytes, with a ring all-reduce of `allreduce_bytes` over `processes` GPUs: the device
    runs compute, memory traffic and the all-reduce one after another (no overlap: an upper bound), while the host
    issues the operations; the step lasts the longer."""
    parts = {"host": operations * assumed["host_us"] / 1e3,
             "compute": flops / (card["tflops"] * 1e12 * assumed["flop_share"]) * 1e3,
             "memory": traffic / (card["gbs"] * 1e9 * assumed["bandwidth_share"]) * 1e3,
             "allreduce": 2 * (processes - 1) / processes * allreduce_bytes / (assumed["allreduce_gbs"] * 1e9) * 1e3}
    parts["device"] = parts["compute"] + parts["memory"] + parts["allreduce"]
    return {**parts, "ms": max(parts["host"], parts["device"])}


def model_shapes(config):
    """(the blocks' matrix shapes, the weights a token passes through: the blocks' matrices times the loops and the
    head, the dense weights DDP all-reduces: all but the task embeddings) of the config's model."""
    model = tf.ARCTransformer(config, 1)
    matrices = [tuple(p.shape) for n, p in model.named_parameters() if n.startswith("blocks.") and p.dim() == 2]
    dense = sum(p.numel() for n, p in model.named_parameters() if n != "task_embedding.weight")
    return matrices, sum(math.prod(m) for m in matrices) * config["num_loops"] + model.head.weight.numel(), dense


def step_work(config, cells, training=True, assumed=ASSUMED):
    """(FLOPs, bytes moved) of a step on canvases of `cells` cells each (a list, one a canvas), the prefix tokens
    added: 6 FLOPs a weight a token training (2 forward only; the head on the cells alone) and 12 (4) x depth x
    width x tokens^2 for attention; training adds Muon's five Newton-Schulz steps on each block matrix (4 m^2 n + 2 m^3
    each, m <= n); bf16 activations as ASSUMED, and a training step's weights at parameter_bytes each (forward
    only, each read as fp32 and written and read as its bf16 copy: 8 bytes)."""
    matrices, weights, _ = model_shapes(config)
    head = config["embed_dim"] * tf.VOCAB_SIZE
    depth, width, prefix = config["num_layers"] * config["num_loops"], config["embed_dim"], config["num_prefix_tokens"]
    tokens, squares = sum(cells) + prefix * len(cells), sum((c + prefix) ** 2 for c in cells)
    flops = ((6 if training else 2) * (weights * tokens - head * prefix * len(cells))
             + (12 if training else 4) * depth * width * squares)
    traffic = (1 if training else 1 / 3) * assumed["activation_reads"] * 2 * width * tokens * depth
    if training:
        flops += sum(5 * (4 * min(m) ** 2 * max(m) + 2 * min(m) ** 3) for m in matrices)
        traffic += assumed["parameter_bytes"] * sum(math.prod(m) for m in matrices)
    else:
        traffic += 8 * weights
    return flops, traffic


def counted_operations(config, training_set, batch, predicting=False):
    """Kernel-launching ATen operations of one eager training step on `batch` in bf16 autocast, as an L4 runs it
    (after two steps to set up the optimizers' state), or of one prediction of its canvases, counted on this CPU at
    width 64 on two of its pairs: the count follows the model's depth, loops and code, not its width or batch (917 at
    width 64 and 128, EXPERIMENTS.md session 27; 1,386 at 2 and 16 pairs, session 29)."""
    narrow = {**config, "embed_dim": 64, "num_heads": min(config["num_heads"], 4), "compile": False}
    cpu, bf16 = torch.device("cpu"), torch.bfloat16
    batch = batch._replace(inputs=batch.inputs[:2], targets=batch.targets[:2], embedding_ids=batch.embedding_ids[:2],
                           cells=0, rows=None)
    model, optimizers, scaler = training_parts(narrow, training_set, cpu, bf16)
    counter = OperationCounter()
    if predicting:
        predictor = tf.model_predictor(model, cpu, bf16)
        with counter:
            predictor(batch.inputs, batch.embedding_ids)
        return counter.operations
    for _ in range(2):
        tf.train_step(model, optimizers, scaler, batch, 1.0, cpu, bf16, narrow)
    with counter:
        tf.train_step(model, optimizers, scaler, batch, 1.0, cpu, bf16, narrow)
    return counter.operations


def projection_inputs(config, training_set, evaluation_tasks=()):
    """(training batches of its epoch spread over the sizes, adaptation batches of adapt_batch_size pairs of one task
    spread over the tasks' sizes, the evaluation tasks' mean prediction side): what is projected, and measured."""
    batches = [batch for _, batch in spread_batches(training_set, config, 8)]
    sides = [tf.prediction_side(t, x, config["canvas_size"]) for t in evaluation_tasks for x in t.test_inputs] or [
        int(np.sqrt(np.mean([math.prod(b.inputs.shape[1:]) for b in batches])))]
    return batches, adaptation_batches_spread(training_set, config, 8), round(float(np.mean(sides)))


def blank_canvases(count, side):
    blank = np.full((count, side, side), tf.COLOUR_OFFSET, dtype=np.int64)
    return tf.Batch(blank, blank, np.zeros(count, dtype=np.int64))


def projected_l4(config, training_set, evaluation_tasks=(), processes=4):
    """{training, training_4, adaptation, prediction: projected_ms(...) plus "pairs"} for the config on this training
    set: its epoch's batches spread over the sizes (the mean), an adaptation step of adapt_batch_size pairs of its
    tasks (the mean), and a prediction batch of batch_size canvases at the evaluation tasks' mean side."""
    batches, adaptations, side = projection_inputs(config, training_set, evaluation_tasks)
    cells = lambda batch: [math.prod(batch.inputs.shape[1:])] * len(batch.inputs)
    mean_work = lambda group, training: np.mean([step_work(config, cells(b), training) for b in group], axis=0)
    allreduce = 4 * model_shapes(config)[2]  # fp32 gradients of the dense weights
    operations = counted_operations(config, training_set, batches[0])
    prediction_operations = counted_operations(config, training_set, blank_canvases(2, side), predicting=True)
    prediction_flops, prediction_traffic = step_work(config, [side * side] * config["batch_size"], False)
    return {"training": {**projected_ms(operations, *mean_work(batches, True)), "pairs": config["batch_size"]},
            f"training_{processes}": {**projected_ms(operations, *mean_work(batches, True), allreduce_bytes=allreduce,
                                                     processes=processes), "pairs": config["batch_size"]},
            "adaptation": {**projected_ms(operations, *mean_work(adaptations, True)), "pairs": config["adapt_batch_size"]},
            "prediction": {**projected_ms(prediction_operations, prediction_flops, prediction_traffic),
                           "pairs": config["batch_size"], "side": side},
            "operations": operations}


def measured_ms(config, training_set, evaluation_tasks=(), repeats=3):
    """{training, adaptation, prediction: median ms} of what projected_l4 projects, run on this machine's device in
    the run's precision: a training step on each spread batch, an adaptation step (a training step at the peak rate)
    on each adaptation batch, and a prediction of batch_size blank canvases; after a warm-up of each."""
    device = tf.choose_device(config)
    amp_dtype, _ = tf.choose_precision(config, device)
    model, optimizers, scaler = training_parts(config, training_set, device, amp_dtype)
    batches, adaptations, side = projection_inputs(config, training_set, evaluation_tasks)
    canvases = blank_canvases(config["batch_size"], side)
    predictor = tf.model_predictor(model, device, amp_dtype)
    step = lambda batch: tf.train_step(model, optimizers, scaler, batch, 1.0, device, amp_dtype, config)
    runs = {"training": [lambda b=b: step(b) for b in batches], "adaptation": [lambda b=b: step(b) for b in adaptations],
            "prediction": [lambda: predictor(canvases.inputs, canvases.embedding_ids)]}
    timed = {}
    for name, calls in runs.items():
        for call in calls:
            call()
        times = []
        for _ in range(repeats):
            for call in calls:
                synchronize(device)
                start = time.perf_counter()
                call()
                synchronize(device)
                times.append(time.perf_counter() - start)
        timed[name] = 1000 * statistics.median(times)
    return timed


def print_projection(argv):
    """bench.py --l4: the projected L4 line of the named preset, or of the kaggle and dev presets."""
    import dev_bench  # the dev preset's data: the benchmark's small tasks on its 11-cell canvas
    named = [a.partition("=")[2] for a in argv if a.startswith("--preset=")]
    rest = [a for a in argv if not a.startswith("--preset=") and a != "--measure"]
    for preset in named or ["kaggle", "dev"]:
        config = tf.parse_config([f"--preset={preset}", *rest], presets=PRESETS)
        tasks = dev_bench.benchmark_tasks() if preset == "dev" else tf.load_tasks(config)[0]
        training_set = tf.build_training_set(tasks, config)
        parts = projected_l4(config, training_set, tasks["evaluation"])
        show = lambda p: (f"{p['ms']:.1f} ms (host {p['host']:.1f}, device {p['device']:.1f}: compute "
                          f"{p['compute']:.1f}, memory {p['memory']:.1f}" + (f", all-reduce {p['allreduce']:.1f}"
                                                                             if p["allreduce"] else "") + ")")
        print(f"projected L4, {preset} preset ({config['embed_dim']} wide, {config['num_layers']} blocks x "
              f"{config['num_loops']}): a training step of {parts['training']['pairs']} pairs {show(parts['training'])}; "
              f"on 4x L4 {show(parts['training_4'])}; an adaptation step of {parts['adaptation']['pairs']} pairs "
              f"{show(parts['adaptation'])}; a prediction batch of {parts['prediction']['pairs']} canvases "
              f"{parts['prediction']['side']}x{parts['prediction']['side']} {show(parts['prediction'])}; "
              f"{parts['operations']:,} operations a step")
        if "--measure" in argv:  # the same three run here: on an L4 (or another GPU) what corrects ASSUMED
            measured = measured_ms(config, training_set, tasks["evaluation"])
            print(f"measured on {tf.choose_device(config)} ({tf.choose_precision(config, tf.choose_device(config))[1]}"
                  f", compile {config['compile']}): " + ", ".join(f"{name} {ms:.1f} ms ({ms / parts[name]['ms']:.2f}x "
                                                                 f"projected)" for name, ms in measured.items()))
    print("assumptions (bench.py's ASSUMED): " + ", ".join(f"{k} {v:.3g}" for k, v in ASSUMED.items())
          + f"; the L4's {L4['tflops']:g} TFLOP/s of dense bf16 and {L4['gbs']:g} GB/s (its data sheet); operations counted"
          " eager under bf16 autocast on this CPU (a compiled trunk issues fewer), FLOPs and bytes computed for bf16")


# -----------------------------------------------------------------------------
# The self-check: what a real run needs of the machine, each part tried and reported in one table.

def spread_batches(training_set, config, count):
    """`count` batches of epoch 0 spread over its canvas sizes, as (pair indices, make_batch arrays)."""
    epoch = sorted(tf.epoch_batches(training_set, config, epoch=0), key=lambda b: len(b[0]))
    chosen = epoch[len(epoch) // (2 * count)::max(1, len(epoch) // count)][:count]
    return [(pairs, tf.make_batch(training_set, pairs, augmentations, config["canvas_size"]))
            for pairs, augmentations in chosen]


def adaptation_batches_spread(training_set, config, count):
    """Adaptation batches (adapt_batch_size pairs of one task) of `count` tasks spread over the canvas sizes."""
    tasks = sorted(range(len(training_set.task_ids)), key=lambda t: max(
        (training_set.inputs[p].size for p in np.flatnonzero(training_set.pair_task == t)), default=0))
    chosen = tasks[len(tasks) // (2 * count)::max(1, len(tasks) // count)][:count]
    return [tf.adaptation_batches(training_set, t, {**config, "adapt_steps": 1})[0] for t in chosen]


def designed_graphs(shapes, prefix, device, amp_dtype):
    """(graphs, why) that a compiled trunk needs for training batches of these (batch, height, width) and for
    prediction, which takes no gradient: one each on a GPU. On a CPU, training takes one a form: in bf16 attention is
    written out under CPU_SHORT_ATTENTION tokens, and inductor's C++ code sums a gradient over more than 4,096 rows
    (pairs x cells, pairs x tokens) in chunks (codegen/cpp.py, need_use_acc_helper), each a guard on the shape."""
    if device.type != "cpu":
        return 2, "training, prediction"
    forms = {(amp_dtype is not None and prefix + h * w < tf.CPU_SHORT_ATTENTION, b * h * w > 4096, b * (prefix + h * w) > 4096)
             for b, h, w in shapes}
    return len(forms) + 1, f"{len(forms)} training form(s) on a CPU, prediction"


def compile_counting(model, graphs):
    """Compile the model as a run does, with inductor, appending to `graphs` for every graph compiled."""
    from torch._inductor.compile_fx import compile_fx

    def backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return compile_fx(graph_module, example_inputs)
    tf.compile_model(model, backend=backend)


def attention_backends(config, device, amp_dtype):
    """The fused attention kernels that run the model's attention with its padding mask, in its precision."""
    heads, width = config["num_heads"], config["embed_dim"] // config["num_heads"]
    q = torch.randn(2, heads, 50, width, device=device)
    keep = torch.ones(2, 1, 1, 50, dtype=torch.bool, device=device)
    keep[1, ..., 30:] = False  # a padded canvas
    running = []
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION):
        try:  # a kernel that cannot run warns why before it raises: the table says it, the warnings would not help
            with sdpa_kernel([backend]), tf.autocast(device, amp_dtype), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                F.scaled_dot_product_attention(q, q, q, attn_mask=keep)
            running.append(backend.name.lower())
        except RuntimeError:
            continue
    return running


def ddp_step(model, optimizers, scaler, batch, device, amp_dtype, config):
    """One training step through DistributedDataParallel in a process group of one (NCCL on a GPU)."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ["task_embedding.weight"])
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=[device.index or 0] if device.type == "cuda" else None)
        loss = tf.train_step(wrapped, optimizers, scaler, batch, 1.0, device, amp_dtype, config)[0]
        return backend, float(loss)
    finally:
        dist.destroy_process_group()


def self_check(argv):
    """Try each thing a real run needs on this machine, at the kaggle preset (or the settings given), and
    print one table. Returns 0, or 1 naming what failed."""
    config = tf.parse_config(["--preset=kaggle", *argv], presets=PRESETS)
    rows = []  # (what, result, passed)
    device = tf.choose_device(config)
    name = (f"{torch.cuda.get_device_name(device)}, compute capability {'.'.join(map(str, torch.cuda.get_device_capability(device)))}"
            if device.type == "cuda" else f"{torch.get_num_threads()} threads")
    rows.append(("device", f"{device}: {name}; torch {torch.__version__}", True))
    amp_dtype, reason = tf.choose_precision(config, device)
    rows.append(("precision", reason, True))
    tasks, _ = tf.load_tasks(config)
    training_set = tf.build_training_set(tasks, config)
    spread = spread_batches(training_set, config, 6)
    batches = [batch for _, batch in spread]
    torch.manual_seed(0)
    model = tf.ARCTransformer(config, training_set.num_embeddings).to(device)
    optimizers = tf.make_optimizers(model, config, amp_dtype=amp_dtype)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    graphs = []
    adaptation = adaptation_batches_spread(training_set, config, 2)
    jobs = tf.prediction_jobs(tasks["evaluation"], training_set, config, config["vote_augmentations"])
    predictor = tf.model_predictor(model, device, amp_dtype)
    try:
        if config["compile"]:
            compile_counting(model, graphs)
        start = time.perf_counter()
        for batch in batches + adaptation:
            tf.train_step(model, optimizers, scaler, batch, 1.0, device, amp_dtype, config)
        prediction = tf.seconds_per_prediction(predictor, jobs, config["batch_size"])  # two batches of spread sides
        shapes = {batch[0].shape for batch in batches + adaptation}
        needed, why = designed_graphs(shapes, config["num_prefix_tokens"], device, amp_dtype)
        rows.append(("compile", f"{len(graphs)} graph(s) for the model over {len(shapes)} batch shapes of training and "
                     f"adaptation and the sides of prediction, the {needed} the design needs ({why}), "
                     f"{time.perf_counter() - start:.0f}s" if config["compile"] else "off (compile=False)",
                     not config["compile"] or len(graphs) == needed))
    except Exception as error:
        rows.append(("compile", f"{type(error).__name__}: {str(error)[:200]}", False))
        prediction = tf.seconds_per_prediction(predictor, jobs, config["batch_size"])
    fused = attention_backends(config, device, amp_dtype)
    rows.append(("attention", f"fused kernels with the padding mask: {', '.join(fused) or 'none (the slow math kernel)'}",
                 bool(fused) or device.type != "cuda"))
    try:
        backend, loss = ddp_step(model, optimizers, scaler, batches[0], device, amp_dtype, config)
        rows.append(("DistributedDataParallel", f"{backend}, 1 process: a step ran, loss {loss:.3f}", math.isfinite(loss)))
    except Exception as error:
        rows.append(("DistributedDataParallel", f"{type(error).__name__}: {str(error)[:200]}", False))
    largest = max(batches, key=lambda batch: batch[0].size)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    tf.train_step(model, optimizers, scaler, largest, 1.0, device, amp_dtype, config)
    if device.type == "cuda":
        used, total = torch.cuda.max_memory_allocated(device), torch.cuda.get_device_properties(device).total_memory
        rows.append(("memory", f"{used / 2 ** 30:.2f} GiB of {total / 2 ** 30:.0f} GiB at batch {config['batch_size']}, "
                     f"canvas {largest[0].shape[1]}x{largest[0].shape[2]}", used < 0.9 * total))
    else:
        rows.append(("memory", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GiB resident", True))
    pairs, batch = spread[len(spread) // 2]  # a batch of the epoch's middle size
    parameters = sum(p.numel() for n, p in model.named_parameters() if n != "task_embedding.weight")
    flops = sum(training_flops(parameters, useful_cells(training_set.inputs[p], training_set.outputs[p])
                               + config["num_prefix_tokens"], config["num_layers"], config["embed_dim"]) for p in pairs)
    seconds = median_seconds(lambda: float(tf.train_step(model, optimizers, scaler, batch, 1.0, device, amp_dtype,
                                                         config)[0]), 3)
    peak = matmul_peak(torch.float32 if amp_dtype is None else amp_dtype, device)
    rows.append(("speed", f"{len(pairs) / seconds:.0f} samples/s on a batch of {len(pairs)}: {flops / seconds / 1e9:.0f} "
                 f"useful GFLOP/s, {flops / seconds / 1e9 / peak:.1%} of the {peak / 1e3:.1f} TFLOP/s matrix-multiply "
                 "peak measured here", True))
    width = max(len(what) for what, _, _ in rows)
    for what, result, passed in rows:
        print(f"{what:<{width}}  {'ok    ' if passed else 'FAILED'}  {result}")
    failed = [what for what, _, passed in rows if not passed]
    print("self-check: " + ("everything a run needs works here" if not failed else "FAILED: " + ", ".join(failed)))
    adapt_step = median_seconds(lambda: float(tf.train_step(model, optimizers, scaler, adaptation[-1], 1.0, device,
                                                            amp_dtype, config)[0]), 3)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        tf.save_checkpoint(os.path.join(folder, "last.pt"), model, optimizers, scaler, tf.TrainState(), config,
                           training_set.task_ids)
    processes = max(1, torch.cuda.device_count()) if device.type == "cuda" else 1
    print(projection(config, tasks, len(training_set.inputs), seconds, len(pairs), adapt_step, prediction,
                     time.perf_counter() - start, processes))
    return 1 if failed else 0


def projection(config, tasks, num_pairs, step, step_pairs, adapt_step, prediction, save, processes):
    """The line that says what the configured run will do at the speeds just measured: its steps, epochs and
    pairs in the budget, an evaluation's minutes and the end's reserve (at 120 and 240 hidden test tasks), and a
    warning for what will not fit. Evaluations every eval_every_n_minutes are priced as if each wrote a new
    best (an evaluation, the test tasks' prediction and a save of best.pt): rather fewer steps than more."""
    budget, interval = 3600 * config["target_runtime_hours"], 60 * config["eval_every_n_minutes"]
    views, evaluation_tasks = config["vote_augmentations"], tasks["evaluation"]
    inputs_per_task = tf.num_inputs(evaluation_tasks) / max(len(evaluation_tasks), 1)
    adapt_task = config["adapt_steps"] * adapt_step

    def costs(num_tasks):
        return tf.Costs(prediction, round(num_tasks * inputs_per_task), views, num_tasks, adapt_task, save, 2.0,
                        processes=processes)
    evaluation = costs(len(evaluation_tasks)).prediction_seconds(safety=1.0)
    reserves = {hidden: costs(len(evaluation_tasks) + hidden).final_seconds() for hidden in (120, 240)}
    between = interval + evaluation + costs(120).prediction_seconds(safety=1.0) + save if interval else 0
    training = (budget - reserves[120]) * (interval / between if interval else 1.0)
    steps = max(training, 0) / step
    pairs = steps * step_pairs * processes
    warnings = [f"the end at {hidden} test tasks needs {reserve / budget:.0%} of the budget: the run will vote on "
                "fewer views" for hidden, reserve in reserves.items() if reserve > budget / 2][:1]
    if interval and evaluation > interval / 3:
        warnings.append(f"an evaluation takes {evaluation / interval:.0%} of eval_every_n_minutes: raise it")
    return (f"projection: {config['target_runtime_hours']:g} h on {processes} process{'es' * (processes > 1)} at the speed "
            f"measured here ({step:.3g} s a step of {step_pairs} pairs): {steps:,.0f} steps, {pairs / num_pairs:,.0f} "
            f"epochs of {num_pairs:,} pairs ({pairs:,.0f} pairs) in {training / 3600:.1f} h of training; an evaluation "
            f"of {len(evaluation_tasks)} tasks {evaluation / 60:.1f} min; the end's reserve {reserves[120] / 60:.0f} min "
            f"at 120 test tasks, {reserves[240] / 60:.0f} min at 240; "
            + ("; ".join(f"warning: {w}" for w in warnings) if warnings else "it fits"))


if __name__ == "__main__":
    try:
        if "--check" in sys.argv[1:]:
            sys.exit(self_check([a for a in sys.argv[1:] if a != "--check"]))
        if "--l4" in sys.argv[1:]:
            sys.exit(print_projection([a for a in sys.argv[1:] if a != "--l4"]))
        if "--steps" in sys.argv[1:]:
            sys.exit(print_step_profile([a for a in sys.argv[1:] if a != "--steps"]))
        main(sys.argv[1:])
    except (tf.ConfigError, tf.ARCDataError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
