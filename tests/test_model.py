import numpy as np
import pytest
import torch
import torch.nn.functional as F

import train_full as tf

CONFIG = {**tf.CONFIG, "embed_dim": 32, "num_layers": 2, "num_heads": 4, "canvas_size": 12, "warmup_steps": 10,
          "min_lr_ratio": 0.1}


def model_and_batch(seed=0, config=CONFIG):
    torch.manual_seed(seed)
    model = tf.ARCTransformer(config, num_embeddings=6)
    rng = np.random.default_rng(seed)
    grids = [rng.integers(0, 10, size=shape).astype(np.uint8) for shape in [(3, 5), (7, 2), (4, 4)]]
    return model, grids


def test_the_model_predicts_every_cell_of_the_canvas_over_the_vocabulary():
    model, grids = model_and_batch()
    canvases = torch.from_numpy(tf.encode_grids(grids, (8, 6)).astype(np.int64))
    assert model(canvases, torch.tensor([0, 1, 2])).shape == (3, 8, 6, tf.VOCAB_SIZE)


def test_a_canvas_cut_to_the_batch_predicts_what_the_full_canvas_does():
    model, grids = model_and_batch()
    with torch.no_grad():
        nn_ids = torch.tensor([1, 2, 3])
        model.task_embedding.weight.normal_()  # conditioning in play too
        cut_shape = tf.canvas_shape(grids, 12)
        cut = model(torch.from_numpy(tf.encode_grids(grids, cut_shape).astype(np.int64)), nn_ids)
        full = model(torch.from_numpy(tf.encode_grids(grids, (12, 12)).astype(np.int64)), nn_ids)
    assert torch.allclose(cut, full[:, :cut_shape[0], :cut_shape[1]], atol=1e-5)


def test_a_looped_core_applies_its_blocks_again_with_the_same_weights():
    looped, grids = model_and_batch(config={**CONFIG, "num_layers": 1, "num_loops": 2})
    unrolled, _ = model_and_batch(config={**CONFIG, "num_layers": 2})
    state = looped.state_dict()
    unrolled.load_state_dict({**state, **{k.replace("blocks.0", "blocks.1"): v for k, v in state.items()}})
    canvases = torch.from_numpy(tf.encode_grids(grids, (8, 6)).astype(np.int64))
    with torch.no_grad():
        once = tf.ARCTransformer({**CONFIG, "num_layers": 1}, num_embeddings=6)
        once.load_state_dict(state)
        assert torch.allclose(looped(canvases, torch.tensor([0, 1, 2])), unrolled(canvases, torch.tensor([0, 1, 2])))
        assert not torch.allclose(looped(canvases, torch.tensor([0, 1, 2])), once(canvases, torch.tensor([0, 1, 2])))
    assert sum(p.numel() for p in looped.parameters()) < sum(p.numel() for p in unrolled.parameters())


def test_rotary_positions_make_attention_scores_depend_on_the_offset_between_cells_alone():
    cos, sin = tf.rotary_angles(5, 6, head_dim=16, num_prefix_tokens=2, device=torch.device("cpu"))
    torch.manual_seed(0)
    q, k = torch.randn(2, 16)
    assert cos.shape == sin.shape == (32, 1, 1, 16)  # queries and keys alike (the values are not turned)
    turned = tf.rotate(torch.stack([q, k])[:, None].expand(1, 32, 2, 1, 16), cos, sin)[0, :, :, 0]  # (tokens, q/k, 16)
    scores = turned[:, 0] @ turned[:, 1].T

    def cell(row, column):
        return 2 + row * 6 + column
    assert torch.allclose(scores[cell(0, 1), cell(2, 4)], scores[cell(2, 2), cell(4, 5)], atol=1e-5)  # same offset
    assert not torch.allclose(scores[cell(0, 1), cell(2, 4)], scores[cell(0, 1), cell(4, 2)], atol=1e-3)
    assert torch.allclose(scores[0, 1], q @ k)  # the prefix tokens are not turned
    assert not torch.allclose(scores[cell(1, 0), cell(1, 0)], scores[cell(1, 0), cell(0, 1)], atol=1e-3)


def test_task_embeddings_start_at_zero_and_then_condition_the_prediction():
    model, grids = model_and_batch()
    canvases = torch.from_numpy(tf.encode_grids([grids[0]] * 2, (4, 6)).astype(np.int64))
    with torch.no_grad():
        same = model(canvases, torch.tensor([0, 5]))
        assert torch.equal(same[0], same[1])
        model.task_embedding.weight[5].normal_()
        different = model(canvases, torch.tensor([0, 5]))
    assert not torch.allclose(different[0], different[1])


def test_each_view_adds_its_own_row_to_its_tasks_shared_row_which_learns_from_every_view():
    model, grids = model_and_batch()  # 32 augmentations a task: rows 0-31 are task 0's, 32-63 task 1's
    model.task_embedding = torch.nn.Embedding(64, model.task_embedding.weight.shape[1])
    model.task_embedding.weight.requires_grad_(False)
    canvases = torch.from_numpy(tf.encode_grids([grids[0]] * 4, (4, 6)).astype(np.int64))
    table = model.task_embedding.weight
    with torch.no_grad():
        table.normal_()
        ids = torch.tensor([0, 5, 37, 32])
        by_table = model(canvases, ids)
        rows = torch.tensor([0, 5, 32, 37])  # the training path: the touched rows, each pair's two positions
        by_rows = model(canvases, torch.tensor([[0, 0], [1, 0], [3, 2], [2, 2]]), table[rows])
        assert torch.allclose(by_table, by_rows, atol=1e-6)
        table[0] = 0.0  # task 0's shared row: view 5 changes with it, task 1's views do not
        after = model(canvases, ids)
    assert not torch.allclose(after[1], by_table[1]) and torch.allclose(after[2:], by_table[2:], atol=1e-6)
    optimizers = tf.make_optimizers(model, CONFIG)
    before = table.clone()
    batch = tf.Batch(canvases[:1].numpy(), canvases[:1].numpy(), np.array([37]))
    tf.train_step(model, optimizers, torch.amp.GradScaler("cpu", enabled=False), batch, 1.0, torch.device("cpu"),
                  None, CONFIG)
    moved = (table != before).any(-1).nonzero().flatten().tolist()
    assert moved == [32, 37]  # a step on view 5 of task 1 trains its row and the task's shared row


def test_pad_targets_carry_no_loss():
    logits = torch.randn(1, 3, 3, tf.VOCAB_SIZE)  # (batch, height, width, vocabulary)
    targets = torch.from_numpy(tf.encode_grid(np.array([[1]], np.uint8), (3, 3)).astype(np.int64))[None]
    loss, accuracy = tf.masked_loss_and_accuracy(logits, targets)
    changed = logits.clone()
    changed[0, 2, 2] += 100.0  # a PAD cell of the target
    assert torch.equal(tf.masked_loss_and_accuracy(changed, targets)[0], loss)
    perfect = torch.nn.functional.one_hot(targets, tf.VOCAB_SIZE).float() * 50
    assert tf.masked_loss_and_accuracy(perfect, targets)[1] == 1.0


def test_the_learning_rate_warms_up_then_decays_to_its_floor():
    factors = [tf.learning_rate_factor(step, step / 100, CONFIG) for step in range(101)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert factors[100] == pytest.approx(0.1)
    # Progress is whichever is further along: a run that has used its time ends decayed.
    assert tf.learning_rate_factor(20, 1.0, CONFIG) == pytest.approx(0.1)


def test_a_training_step_lowers_the_loss_on_its_batch():
    model, grids = model_and_batch()
    optimizers = tf.make_optimizers(model, {**CONFIG, "learning_rate": 1e-2})
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    canvases = tf.encode_grids(grids, (8, 6)).astype(np.int64)
    batch = (canvases, canvases, np.array([0, 1, 2]))
    losses = [float(tf.train_step(model, optimizers, scaler, batch, 1.0, torch.device("cpu"), None,
                                  {**CONFIG, "learning_rate": 1e-2})[0]) for _ in range(20)]
    assert losses[-1] < 0.5 * losses[0]
    assert model.task_embedding.weight[:3].abs().sum() > 0 and model.task_embedding.weight[3:].abs().sum() == 0


@pytest.mark.parametrize("capabilities, width, chosen, named", [
    ({"amx_bf16": True, "avx512_bf16": True}, 256, torch.bfloat16, "AMX"),
    ({"amx_bf16": True, "avx512_bf16": True}, 128, None, "AMX"),  # an AMX Xeon's rule, though it has AVX-512 bf16
    ({"amx_bf16": False, "avx512_bf16": True, "cpu_name": "AMD EPYC"}, 128, torch.bfloat16, "AVX-512 bf16"),
    ({"avx512_bf16": True, "cpu_name": "AMD EPYC"}, 64, None, "AVX-512 bf16"),
    ({"amx_bf16": False, "avx512_bf16": True, "cpu_name": "Intel Xeon"}, 256, None, "on AMD"),  # slower there
    ({"neon": True}, 512, None, "no bf16 matrix units")])
def test_on_cpu_bf16_is_chosen_by_the_matrix_units_and_the_width_unless_a_precision_is_configured(
        monkeypatch, capabilities, width, chosen, named):
    monkeypatch.setattr(tf.torch.cpu, "get_capabilities", lambda: capabilities)
    cpu, config = torch.device("cpu"), {**CONFIG, "embed_dim": width}
    assert [tf.choose_precision(config, cpu)[0] for _ in range(3)] == [chosen] * 3  # a rule, not a race
    assert named in tf.choose_precision(config, cpu)[1]
    assert tf.choose_precision({**config, "dtype": "float32"}, cpu)[0] is None
    assert tf.choose_precision({**config, "dtype": "bfloat16"}, cpu)[0] is torch.bfloat16


def test_bf16_autocast_runs_on_cpu():
    model, grids = model_and_batch()
    canvases = torch.from_numpy(tf.encode_grids(grids, (8, 6)).astype(np.int64))
    with tf.autocast(torch.device("cpu"), torch.bfloat16):
        assert model(canvases, torch.tensor([0, 1, 2])).dtype == torch.bfloat16


def test_short_bf16_attention_on_cpu_is_written_out_and_matches_the_fused_kernel(monkeypatch):
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 40, 16) for _ in range(3))
    keep = torch.ones(3, 1, 1, 40, dtype=torch.bool)
    keep[1, ..., 25:] = False  # a padded canvas: its keys must take no weight
    v[1, :, 25:] = 1e4
    reference = [t.clone().requires_grad_() for t in (q, k, v)]
    expected = F.scaled_dot_product_attention(*reference, attn_mask=keep)
    expected.square().sum().backward()

    def fused(*args, **kwargs):
        raise AssertionError("the fused kernel ran")
    monkeypatch.setattr(tf.F, "scaled_dot_product_attention", fused)
    written = [t.to(torch.bfloat16).requires_grad_() for t in (q, k, v)]
    got = tf.attention(*written, keep)
    got.float().square().sum().backward()
    assert torch.allclose(got.float(), expected, atol=0.05, rtol=0.02)
    for ours, theirs in zip(written, reference):
        assert torch.allclose(ours.grad.float(), theirs.grad, atol=0.1, rtol=0.05)
    with pytest.raises(AssertionError, match="fused"):  # predictions (no gradient) keep the fused kernel
        with torch.no_grad():
            tf.attention(*(t.detach() for t in written), keep)


def test_fp16_with_a_gradient_scaler_updates_the_sparse_task_embeddings():
    model, grids = model_and_batch()
    optimizers = tf.make_optimizers(model, CONFIG)
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    canvases = tf.encode_grids(grids, (8, 6)).astype(np.int64)
    loss, _, finite = tf.train_step(model, optimizers, scaler, (canvases, canvases, np.array([0, 1, 2])), 1.0,
                                    torch.device("cpu"), torch.float16, CONFIG)
    assert finite and torch.isfinite(loss) and scaler.get_scale() > 0
    assert model.task_embedding.weight[:3].abs().sum() > 0


def test_progress_is_a_bar_where_a_person_watches_and_plain_lines_elsewhere(capsys):
    clock = tf.Clock(100.0, start=0.0)
    plain = tf.Progress(clock, interactive=False)
    plain.update(clock, {"step": 7, "loss": 0.5})
    assert capsys.readouterr().out.startswith("step 7 | loss 0.5 | ")
    bar = tf.Progress(tf.Clock(100.0, start=__import__("time").perf_counter()), interactive=True)
    bar.update(clock, {"step": 8})
    bar.close()
    captured = capsys.readouterr()
    assert "step=8" in captured.err and captured.out == ""


@pytest.mark.parametrize("config", [CONFIG, {**CONFIG, "num_loops": 2}])
def test_compiled_blocks_train_and_predict_like_eager_ones(config):
    losses = []
    for compiled in (False, True):
        model, grids = model_and_batch(config=config)
        if compiled:
            tf.compile_model(model)
        optimizers = tf.make_optimizers(model, CONFIG)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        run = []
        for shape in [(8, 6), (5, 8), (8, 8)]:  # a new canvas size each step, as bucketed batches have
            fitting = [g for g in grids if g.shape[0] < shape[0] and g.shape[1] < shape[1]]
            canvases = tf.encode_grids(fitting, shape).astype(np.int64)
            batch = (canvases, canvases, np.arange(len(fitting)))
            run.append(float(tf.train_step(model, optimizers, scaler, batch, 1.0, torch.device("cpu"), None,
                                           CONFIG)[0]))
        tokens, *_ = tf.model_predictor(model, torch.device("cpu"), None)(
            tf.encode_grids(grids, (12, 12)), np.arange(3))
        losses.append((run, tokens))
    assert np.allclose(losses[0][0], losses[1][0], rtol=1e-4)
    assert np.array_equal(losses[0][1], losses[1][1])


def test_muon_holds_the_blocks_matrices_and_every_parameter_has_one_optimizer():
    model, _ = model_and_batch()
    muon, adamw, sparse = tf.make_optimizers(model, CONFIG)
    owners = {}
    for optimizer in (muon, adamw, sparse):
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                owners.setdefault(id(parameter), []).append(type(optimizer).__name__)
    names = {name: owners[id(p)] for name, p in model.named_parameters()}
    assert all(len(holders) == 1 for holders in names.values())
    assert names["blocks.0.attention.qkv.weight"] == names["blocks.1.mlp.down.weight"] == ["Muon"]
    assert names["head.weight"] == names["token_embedding.weight"] == names["blocks.0.mlp_norm.weight"] == ["AdamW"]
    assert names["task_embedding.weight"] == ["RowAdam"]
    # The schedule scales each group's own peak rate.
    canvases = tf.encode_grids(model_and_batch()[1], (8, 6)).astype(np.int64)
    tf.train_step(model, (muon, adamw, sparse), torch.amp.GradScaler("cpu", enabled=False),
                  (canvases, canvases, np.array([0, 1, 2])), 0.5, torch.device("cpu"), None, CONFIG)
    assert muon.param_groups[0]["lr"] == adamw.param_groups[1]["lr"] == 0.5 * CONFIG["learning_rate"]
    assert sparse.param_groups[0]["lr"] == 0.5 * CONFIG["task_embedding_lr"]
