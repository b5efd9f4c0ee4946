"""The self-check a user runs before a long run (python bench.py --check): one table, exit 0, or 1 naming
what failed. On a CPU it checks what a CPU can (gloo instead of NCCL; no GPU memory)."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--embed_dim=32", "--num_layers=1", "--num_heads=2", "--batch_size=8", "--num_augmentations=2",
         "--vote_augmentations=2"]


def test_the_self_check_tries_each_part_and_prints_one_table():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "bench.py"), "--check", *SMALL],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines[:-2]] == ["device", "precision", "compile", "attention",
                                                        "DistributedDataParallel", "memory", "speed"]
    assert all(line.split()[1] == "ok" for line in lines[:-2])
    # The graphs compiled over training's, adaptation's and prediction's shapes are those the design needs (on a GPU
    # two; on a CPU one more for each of its forms the shapes cross): a recompile for a shape, a batch size or a
    # side would make more.
    compiled, needed = re.search(r"(\d+) graph\(s\) for the model .* the (\d+) the design needs", lines[2]).groups()
    assert compiled == needed
    assert lines[-2] == "self-check: everything a run needs works here"
    assert lines[-1].startswith("projection: 11 h on 1 process at the speed measured here")
    assert "steps" in lines[-1] and "epochs of" in lines[-1] and "min at 240" in lines[-1]


def test_the_self_check_names_what_failed_and_exits_non_zero(monkeypatch, capsys):
    sys.path.insert(0, ROOT)
    import bench

    def no_backend(*arguments):
        raise RuntimeError("NCCL error: unhandled system error (simulated)")
    monkeypatch.setattr(bench, "ddp_step", no_backend)
    assert bench.self_check([*SMALL, "--compile=False"]) == 1
    printed = capsys.readouterr().out
    assert "DistributedDataParallel  FAILED  RuntimeError: NCCL error" in printed
    assert printed.strip().splitlines()[-2] == "self-check: FAILED: DistributedDataParallel"
