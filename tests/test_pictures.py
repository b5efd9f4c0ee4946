"""Pictures: training_curves.png and eval_gallery.png with matplotlib, and a run that works without it."""
import json
import sys

import pytest

import train_full as tf
from helpers import TINY, small_dataset, write_kaggle_folder

PNG = b"\x89PNG\r\n\x1a\n"


def run(tmp_path):
    data = write_kaggle_folder(str(tmp_path / "data"), small_dataset())
    out = tmp_path / "out"
    assert tf.main([*TINY, f"--data_dir={data}", f"--output_dir={out}", f"--checkpoint_dir={tmp_path / 'ck'}"]) == 0
    return data, out


def test_a_run_draws_its_curves_and_a_gallery_of_evaluation_predictions(tmp_path):
    pytest.importorskip("matplotlib")
    data, out = run(tmp_path)
    for name in ("training_curves.png", "eval_gallery.png"):
        assert (out / name).read_bytes()[:8] == PNG, name
    assert not [p for p in out.iterdir() if ".tmp" in p.name]
    # The gallery shows solved tasks first, and draws from the report and the tasks alone.
    report = json.load(open(out / "eval_predictions.json"))
    evaluation = tf.load_kaggle_folder(data)["evaluation"]
    assert tf.plot_eval_gallery(report, evaluation, str(tmp_path / "again.png"), max_tasks=1)
    assert (tmp_path / "again.png").read_bytes()[:8] == PNG


def test_without_matplotlib_the_run_writes_everything_but_the_pictures(tmp_path, monkeypatch):
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.colors"):
        monkeypatch.setitem(sys.modules, module, None)  # import now raises ImportError
    _, out = run(tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["eval_predictions.json", "metrics.jsonl", "submission.json"]
    assert not tf.plot_training_curves(str(out / "metrics.jsonl"), str(tmp_path / "curves.png"))
