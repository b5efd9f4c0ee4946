"""Notebook use: the file's source pasted into a cell (no __file__, Jupyter's own -f argument), and
IPython's %run, both on the quick preset."""
import json
import os
import shutil
import subprocess
import sys

import pytest

import train_full as tf
from helpers import small_dataset, write_kaggle_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "train_full.py")


def quick_arguments(tmp_path):
    data = write_kaggle_folder(str(tmp_path / "data"), small_dataset())
    return ["--preset=quick", f"--data_dir={data}", f"--output_dir={tmp_path / 'out'}",
            f"--checkpoint_dir={tmp_path / 'ck'}", "--epochs=5"], data


def check_outputs(tmp_path, data):
    submission = json.load(open(tmp_path / "out" / "submission.json"))
    tf.validate_submission(submission, tf.load_kaggle_folder(data)["test"])
    assert (tmp_path / "ck" / "last.pt").exists()


def test_the_source_pasted_into_a_cell_runs_with_jupyter_arguments(tmp_path, monkeypatch, capsys):
    arguments, data = quick_arguments(tmp_path)
    # A notebook's working folder holds the pasted cell's presets only if config.py was copied there.
    shutil.copy(os.path.join(ROOT, "config.py"), tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher.py", "-f", "/root/.local/share/jupyter/runtime/kernel-1.json",
                                      *arguments])
    namespace = {"__name__": "__main__"}  # a cell: no __file__
    exec(compile(open(SOURCE).read(), "<cell>", "exec"), namespace)
    assert "training stopped at step" in capsys.readouterr().out
    check_outputs(tmp_path, data)
    assert namespace["exit_code"] == 0


def test_ipython_percent_run_runs_the_file(tmp_path):
    pytest.importorskip("IPython")
    arguments, data = quick_arguments(tmp_path)
    result = subprocess.run([sys.executable, "-m", "IPython", "--quick", "--no-banner", "-c",
                             f"%run {SOURCE} {' '.join(arguments)}"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "training stopped at step" in result.stdout
    check_outputs(tmp_path, data)
