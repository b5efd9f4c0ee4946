"""Speed benchmark: the seed's training step, a fixed-canvas batched step, and train_full.py's step, on
the same machine, model width and depth, in one run.

    python bench.py [--repeats=3] [--batches=8] [--dtype=auto] [--embed_dim=256 --num_layers=6 ...]

Prints, for each step: samples/s, useful cells/s (cells of real grids, not padding), achieved GFLOP/s on
useful work and that as a fraction of the matrix-multiply peak measured here for the same dtype; then the
ratios. Also times the evaluation of the 120 ARC-AGI-2 evaluation tasks at the quick preset's settings and
prints peak memory. Steps 2 and 3 run the same --batches batches of real pairs (spread over the sizes of
an epoch); every figure is the median of --repeats timed repetitions after a warm-up.
"""
import math
import resource
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import train_full as tf


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


def matmul_peak(dtype, size=2048, repeats=5):
    """GFLOP/s of a large square matrix multiply in `dtype` on this machine."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size ** 3 / statistics.median(times) / 1e9


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
    config = tf.parse_config([a for a in argv if not a.startswith(own)])
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
    peak32 = matmul_peak(torch.float32)
    peak = peak32 if amp_dtype is None else matmul_peak(amp_dtype)
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
    model = tf.ARCTransformer(config, training_set.num_embeddings).to(device)
    if config["compile"]:
        for block in model.blocks:
            block.compile(dynamic=True)
    optimizers = tf.make_optimizers(model, config)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
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
    quick = tf.parse_config(["--preset=quick"], presets=tf.load_presets("."))
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


if __name__ == "__main__":
    main(sys.argv[1:])
