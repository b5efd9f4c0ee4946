"""What a training step asks of the host: few operations, none that makes a GPU's host wait, and
optimizers that update as the library ones they replace do."""
import os
import sys

import numpy as np
import pytest
import torch

import train_full as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bench  # noqa: E402


def shaped_parameters(seed):
    """Matrices of the shapes a block has (qkv, proj, gate_up, down), two of each, as two equal copies."""
    torch.manual_seed(seed)
    shapes = [(96, 32), (32, 32), (176, 32), (32, 88)] * 2
    first = [torch.nn.Parameter(torch.randn(*shape) * 0.1) for shape in shapes]
    return first, [torch.nn.Parameter(p.detach().clone()) for p in first]


def test_batched_muon_updates_as_torch_muon_does():
    reference, batched = shaped_parameters(0)
    library = torch.optim.Muon(reference, lr=1e-2, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    ours = tf.Muon(batched, lr=1e-2, weight_decay=0.1)
    for step in range(4):
        for p, q in zip(reference, batched):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        library.step()
        ours.step(torch.tensor(1.0))
    for p, q in zip(reference, batched):
        assert torch.allclose(p, q, atol=1e-6)
        assert torch.allclose(library.state[p]["momentum_buffer"], ours.state[q]["momentum_buffer"], atol=1e-6)
    ours.load_state_dict(library.state_dict())  # the same state: checkpoints of either load into the other


def test_muon_orthogonalises_in_bf16_only_where_the_run_computes_in_bf16():
    # A CPU without bf16 units emulates bf16 products: Newton-Schulz in bf16 made a dev step 10 times slower there.
    config = tf.parse_config(["--embed_dim=32", "--num_heads=2", "--num_layers=1"])
    exact = None
    for amp_dtype in (torch.float64, None, torch.bfloat16):
        torch.manual_seed(3)
        model = tf.ARCTransformer(config, 4).to(torch.float64 if amp_dtype == torch.float64 else torch.float32)
        matrices = [p for p in model.blocks.parameters() if p.dim() == 2]
        muon = (tf.Muon(matrices, lr=config["learning_rate"], weight_decay=0.1, ns_dtype=torch.float64)
                if amp_dtype == torch.float64 else tf.make_optimizers(model, config, amp_dtype=amp_dtype)[0])
        for step in range(3):
            for k, p in enumerate(matrices):
                p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(10 * step + k)).to(p.dtype)
            muon.step(torch.tensor(1.0))
        weights = torch.cat([p.detach().double().flatten() for p in matrices])
        exact = weights if exact is None else exact
        error = (weights - exact).abs().max().item()
        if amp_dtype is None:
            assert error < 1e-7  # fp32 Newton-Schulz: 1e-8 from fp64's
        elif amp_dtype == torch.bfloat16:
            assert error > 1e-6  # bf16's, as torch.optim.Muon: 8e-6 (so the test tells them apart)


def test_a_skipped_step_changes_nothing_even_with_nan_gradients():
    _, parameters = shaped_parameters(1)
    muon = tf.Muon(parameters, lr=1e-2, weight_decay=0.1)
    for p in parameters:
        p.grad = torch.randn_like(p)
    muon.step(torch.tensor(1.0))
    before = [(p.detach().clone(), muon.state[p]["momentum_buffer"].clone()) for p in parameters]
    for p in parameters:
        p.grad = torch.full_like(p, float("nan"))
    muon.step(torch.tensor(0.0))
    for p, (weights, momentum) in zip(parameters, before):
        assert torch.equal(p, weights) and torch.equal(muon.state[p]["momentum_buffer"], momentum)

    table = torch.nn.Parameter(torch.randn(20, 8), requires_grad=False)
    rows = tf.RowAdam([{"params": [table]}], lr=1e-2)
    rows.step(torch.tensor([1, 5]), torch.randn(2, 8), torch.tensor(1.0))
    kept = table.detach().clone(), rows.state[table]["exp_avg"].clone()
    rows.step(torch.tensor([1, 5]), torch.full((2, 8), float("nan")), torch.tensor(0.0))
    assert torch.equal(table, kept[0]) and torch.equal(rows.state[table]["exp_avg"], kept[1])


def test_row_adam_updates_the_touched_rows_as_sparse_adam_does():
    torch.manual_seed(2)
    sparse_table = torch.nn.Parameter(torch.zeros(50, 16))
    table = torch.nn.Parameter(torch.zeros(50, 16), requires_grad=False)
    library = torch.optim.SparseAdam([sparse_table], lr=1e-2, betas=(0.9, 0.95))
    ours = tf.RowAdam([{"params": [table]}], lr=1e-2)
    for _ in range(5):
        rows = torch.unique(torch.randint(0, 50, (10,)))
        grad = torch.randn(len(rows), 16)
        sparse_table.grad = torch.sparse_coo_tensor(rows[None], grad, sparse_table.shape, check_invariants=True)
        library.step()
        ours.step(rows, grad, torch.tensor(1.0))
    assert torch.allclose(sparse_table, table, atol=1e-6)
    ours.load_state_dict(library.state_dict())


def test_the_rates_and_the_warm_up_follow_the_global_batch():
    config = tf.parse_config(["--learning_rate=1e-3", "--warmup_steps=200"])
    model = tf.ARCTransformer({**config, "embed_dim": 16, "num_heads": 2, "num_layers": 1}, 4)
    muon, adamw, rows = tf.make_optimizers(model, config, batch_pairs=128)
    assert muon.param_groups[0]["peak_lr"] == adamw.param_groups[0]["peak_lr"] == pytest.approx(2e-3)
    assert rows.param_groups[0]["peak_lr"] == config["task_embedding_lr"]  # each row is as often updated
    # 200 steps of 32 pairs warm up over the samples of 50 steps of 128.
    assert tf.learning_rate_factor(0, 0.0, config, 128) == pytest.approx(1 / 50)
    assert tf.learning_rate_factor(48, 0.0, config, 128) < 1.0 == tf.learning_rate_factor(49, 0.0, config, 128)
    assert tf.learning_rate_factor(49, 0.0, config) == pytest.approx(50 / 200)


def test_the_operation_counter_sees_what_would_make_a_gpu_host_wait():
    counter = bench.OperationCounter()
    x = torch.tensor([0.0, 1.0, 2.0])
    with counter:
        y = x * 2 + 1
        float(y.sum())
        x.nonzero()
        x[x > 0]
        torch.sparse_coo_tensor(torch.tensor([[1, 1]]), torch.ones(2), (3,), check_invariants=False).coalesce()
    assert counter.syncs == ["_local_scalar_dense", "nonzero", "index", "_coalesce"]
    assert counter.operations >= 6


def test_a_training_step_launches_few_operations_and_never_makes_the_host_wait(monkeypatch):
    # The default model's depth at batch 32, eager, under bf16 autocast and with the fused attention kernel as on a GPU
    # (both pinned, so that the count is the same on every CPU): what a GPU would be asked to launch each step. The
    # width does not change the count; at the default's, a CPU that emulates bf16 took 7 minutes over it.
    # 919: 903 before the values were left out of the rotary turn (a split, a select and their backward: views that
    # the compiled trunk gets for free), 838 before 2-D rotary positions, which add 8 a layer and ~20 for a canvas
    # shape whose angles are not made yet; before the batched Muon, the fused AdamW and RowAdam: 1,275 operations and 20 syncs in fp32 (bench.py --steps).
    monkeypatch.setattr(tf, "CPU_SHORT_ATTENTION", 0)
    config = tf.parse_config(["--compile=False", "--dtype=bfloat16", "--embed_dim=64"])
    operations, syncs, _ = bench.step_profile(config, steps=2, warmup=2)
    assert syncs == []
    assert operations <= 930


def test_a_batch_names_the_task_embedding_rows_of_every_process_slice():
    demonstrations = [[(np.full((2, 2), j, np.uint8), k * np.eye(2, dtype=np.uint8)) for j in range(3)]
                      for k in range(4)]
    tasks = {"training": [tf.Task(f"t{k}", "training", demonstrations[k], [np.zeros((2, 2), np.uint8)], None)
                          for k in range(4)],
             "evaluation": [], "test": []}
    config = tf.parse_config(["--num_augmentations=2", "--vote_augmentations=2"])
    training_set = tf.build_training_set(tasks, config)
    pairs, augmentations = np.arange(12), np.arange(12) % 2
    views = set(training_set.pair_task[pairs] * 2 + augmentations)
    whole = views | set(training_set.pair_task[pairs] * 2)  # and each task's shared row, its identity view's
    for rank in (0, 1):
        batch = tf.make_batch(training_set, pairs, augmentations, 30, rank, world_size=2)
        assert set(batch.rows) == whole and list(batch.rows) == sorted(batch.rows)  # the same on both
        assert set(batch.embedding_ids) <= views


def test_the_previous_versions_optimizer_state_resumes_and_adamw_stays_fused():
    # Before: torch.optim.Muon, an unfused AdamW (its steps read the device) and SparseAdam, same groups.
    config = tf.parse_config(["--embed_dim=16", "--num_heads=2", "--num_layers=1", "--compile=False"])
    model = tf.ARCTransformer(config, 4)
    muon, adamw, rows = tf.make_optimizers(model, config)
    table = torch.nn.Parameter(model.task_embedding.weight.detach().clone())
    previous = (torch.optim.Muon(muon.param_groups[0]["params"], lr=1e-3, adjust_lr_fn="match_rms_adamw"),
                torch.optim.AdamW([{"params": g["params"]} for g in adamw.param_groups], lr=1e-3, fused=False),
                torch.optim.SparseAdam([table], lr=1e-2))
    for p in muon.param_groups[0]["params"] + [p for g in adamw.param_groups for p in g["params"]]:
        p.grad = torch.randn_like(p)
    table.grad = torch.sparse_coo_tensor(torch.tensor([[1]]), torch.ones(1, table.shape[1]), table.shape,
                                         check_invariants=False)
    for optimizer in previous:
        optimizer.step()
    checkpoint = {"model": model.state_dict(), "optimizers": [o.state_dict() for o in previous], "scaler": {},
                  "rng": {"torch": torch.get_rng_state()}, "state": {"step": 1}}
    tf.restore_checkpoint("last.pt", checkpoint, model, (muon, adamw, rows), torch.amp.GradScaler("cpu", enabled=False))
    assert all(group["fused"] for group in adamw.param_groups)
    assert torch.equal(rows.state[model.task_embedding.weight]["exp_avg"], previous[2].state[table]["exp_avg"])
    keep = torch.tensor(1.0)
    muon.step(keep)
    adamw.step()
    rows.step(torch.tensor([1]), torch.ones(1, table.shape[1]), keep)
