"""Warm start (init_from): a checkpoint trained on some tasks, then new tasks added, adapted to and predicted."""
import json

import pytest
import torch

import train_full as tf
from helpers import TINY, make_task, small_dataset, write_kaggle_folder, write_json


def pretrain(tmp_path):
    data = write_kaggle_folder(str(tmp_path / "pre"), small_dataset())
    assert tf.main([*TINY, f"--data_dir={data}", f"--output_dir={tmp_path / 'pre_out'}",
                    f"--checkpoint_dir={tmp_path / 'pre_ck'}"]) == 0
    return tmp_path / "pre_ck" / "last.pt"


def with_new_tasks(tmp_path):
    """The pretraining data plus two new test tasks without answers, as in Kaggle's scoring run."""
    splits = {**small_dataset(), "test": {"new1": make_task(seed=30), "new2": make_task(seed=31)}}
    return write_kaggle_folder(str(tmp_path / "scoring"), splits)


def test_a_warm_start_keeps_known_task_embeddings_and_starts_new_ones_at_zero(tmp_path):
    path = pretrain(tmp_path)
    config = tf.parse_config(TINY)
    pretrained = tf.load_checkpoint(str(path), config)
    tasks = tf.load_kaggle_folder(with_new_tasks(tmp_path))
    training_set = tf.build_training_set(tasks, config)
    assert training_set.task_ids[-2:] == ["new1", "new2"]
    model = tf.ARCTransformer(config, training_set.num_embeddings)
    assert tf.warm_start(model, pretrained, training_set.task_ids, config) == 5
    n = config["num_augmentations"]
    table = model.task_embedding.weight.detach()
    for index, task_id in enumerate(training_set.task_ids):
        rows = table[index * n:(index + 1) * n]
        if task_id.startswith("new"):
            assert torch.count_nonzero(rows) == 0
        else:
            old = pretrained["task_ids"].index(task_id)
            assert torch.equal(rows, pretrained["model"]["task_embedding.weight"][old * n:(old + 1) * n])
            assert torch.count_nonzero(rows) > 0
    for name, weights in model.state_dict().items():
        if name != "task_embedding.weight":
            assert torch.equal(weights, pretrained["model"][name]), name
    # Another seed draws other augmentations for every task: the transformer is kept, no embedding is.
    other = tf.ARCTransformer({**config, "seed": 1}, training_set.num_embeddings)
    assert tf.warm_start(other, pretrained, training_set.task_ids, {**config, "seed": 1}) == 0
    assert torch.count_nonzero(other.task_embedding.weight) == 0


def test_a_warm_started_run_adapts_to_new_tasks_and_predicts_them(tmp_path, capsys):
    path = pretrain(tmp_path)
    data = with_new_tasks(tmp_path)
    out = tmp_path / "out"
    assert tf.main([*TINY, f"--data_dir={data}", f"--output_dir={out}", f"--checkpoint_dir={tmp_path / 'ck'}",
                    f"--init_from={path}"]) == 0
    assert f"warm start from {path}: its weights, and the embeddings of 5 of this run's 7 tasks" \
        in capsys.readouterr().out
    submission = json.load(open(out / "submission.json"))
    assert sorted(submission) == ["new1", "new2"]
    tf.validate_submission(submission, tf.load_kaggle_folder(data)["test"])
    assert json.load(open(tmp_path / "ck" / "last.json"))["step"] > 0


@pytest.mark.parametrize("problem, message", [
    ("size", "made with embed_dim=16 but this run has embed_dim=32"),
    ("foreign", "not a checkpoint of train_full.py"),
])
def test_a_warm_start_from_a_checkpoint_that_does_not_fit_names_it_and_writes_nothing(tmp_path, capsys, problem,
                                                                                          message):
    path = pretrain(tmp_path)
    if problem == "foreign":
        path = tmp_path / "foreign.pt"
        torch.save({"weights": torch.zeros(3)}, path)
    out = tmp_path / "out"
    extra = ["--embed_dim=32"] if problem == "size" else []
    code = tf.main([*TINY, *extra, f"--data_dir={with_new_tasks(tmp_path)}", f"--output_dir={out}",
                    f"--checkpoint_dir={tmp_path / 'ck'}", f"--init_from={path}"])
    assert code == 2
    printed = capsys.readouterr()
    assert f"{path}: {message}" in printed.out + printed.err
    assert not out.exists()


def test_a_checkpoint_from_before_the_looped_core_loads_as_one_pass_and_refuses_two(tmp_path):
    config = {**tf.CONFIG, "embed_dim": 16, "num_layers": 1, "num_heads": 2}
    model = tf.ARCTransformer(config, num_embeddings=2)
    older = {key: value for key, value in config.items() if key not in tf.NEWER_MODEL_KEYS}
    torch.save({"model": model.state_dict(), "config": older, "task_ids": ["a"]}, tmp_path / "old.pt")
    assert tf.load_checkpoint(tmp_path / "old.pt", config, ["a"])["config"] == older
    with pytest.raises(tf.CheckpointError, match="made with num_loops=1 but this run has num_loops=2"):
        tf.load_checkpoint(tmp_path / "old.pt", {**config, "num_loops": 2})
