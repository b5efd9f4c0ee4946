"""Test-time emphasis: the last fraction of the budget trains on the evaluation and test tasks alone."""
import torch

import train_full as tf
from helpers import TINY, make_task, write_kaggle_folder


def hidden_run_folder(folder):
    """Training tasks with answers and test tasks without, as in Kaggle's scoring run."""
    return write_kaggle_folder(folder, {
        "training": {f"train{k}": make_task(seed=k) for k in range(2)},
        "test": {"hidden3": make_task(seed=20, num_train=3), "hidden2": make_task(seed=21, num_train=2)},
    }, solutions=("training",))


def test_the_last_fraction_of_the_budget_trains_on_the_test_tasks_alone(tmp_path, capsys):
    data = hidden_run_folder(str(tmp_path / "data"))
    code = tf.main([*TINY, f"--data_dir={data}", f"--output_dir={tmp_path / 'out'}",
                    f"--checkpoint_dir={tmp_path / 'ck'}", "--focus_fraction=1.0"])
    assert code == 0
    assert "epoch 0: the last 100% of the budget trains on the evaluation and test tasks' demonstrations alone" \
        in capsys.readouterr().out
    checkpoint = torch.load(tmp_path / "ck" / "last.pt", weights_only=True)
    # 5 demonstrations of the test tasks, batches of 8: one step per epoch (the training tasks would add more)
    assert checkpoint["state"]["focus"] and checkpoint["state"]["step"] == checkpoint["state"]["epoch"] == 3


def test_max_steps_ends_a_run_of_fixed_length_and_the_focus_follows_its_steps(tmp_path, capsys):
    data = hidden_run_folder(str(tmp_path / "data"))
    code = tf.main([*TINY, f"--data_dir={data}", f"--output_dir={tmp_path / 'out'}", f"--checkpoint_dir={tmp_path / 'ck'}",
                    "--epochs=100", "--max_steps=12", "--focus_fraction=0.5", "--target_runtime_hours=10.0",
                    "--log_every_n_steps=1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "all 12 steps done" in out
    checkpoint = torch.load(tmp_path / "ck" / "last.pt", weights_only=True)
    assert checkpoint["state"]["step"] == 12 and checkpoint["state"]["focus"]
    # Hours of budget are left: only the steps can have started the focus, at the first epoch from step 6.
    focus_epoch = int(out.split("the last 50% of the budget trains")[0].rsplit("epoch ", 1)[1].split(":")[0])
    assert 1 <= focus_epoch < checkpoint["state"]["epoch"]
