"""Named presets for train_full.py: `python train_full.py --preset=NAME`. A preset overrides CONFIG's
defaults; --key=value arguments override the preset. train_full.py runs without this file. Each setting says why
in a line; the measurements behind it are in EXPERIMENTS.md, by session."""

PRESETS = {
    # The whole pipeline on a CPU in about three minutes: a small model, an evaluation and a checkpoint a minute.
    "quick": {
        "embed_dim": 64,
        "num_layers": 2,
        "num_heads": 4,
        "batch_size": 16,
        "num_augmentations": 8,
        "vote_augmentations": 4,
        "warmup_steps": 50,
        "target_runtime_hours": 0.05,
        "eval_every_n_epochs": 0,
        "eval_every_n_minutes": 1.0,
        "save_every_n_minutes": 1.0,
        "log_every_n_steps": 20,
        "compile": False,  # compiling costs 5-10 s of the three minutes for ~9% faster steps
        "focus_fraction": 0.3,  # the last minute on the evaluation and test tasks, as the dev preset
    },
    # The development benchmark (python dev_bench.py): two sets of small tasks scored once at the end on their test
    # outputs (no checkpoint is chosen on them), every arm at a fixed number of samples. Today's best recipe.
    "dev": {
        "canvas_size": 11,         # the benchmark's grids are at most 10x10, plus their end markers
        "embed_dim": 128,
        "num_layers": 2,
        "num_loops": 2,            # 2 blocks looped twice beat 2 once and 4 once at four times the samples (session 24)
        "num_heads": 2,
        "batch_size": 16,          # at equal samples more steps than 32, and as good as 8 (sessions 17, 18)
        "num_augmentations": 32,   # more views a task trains on: +9 tasks over 8 at four times the samples (session 25)
        "vote_augmentations": 32,  # every trained view voted: +3 over 8 on the same weights (session 25)
        "learning_rate": 1e-3,
        "warmup_steps": 200,
        "max_steps": 6000,         # 96,000 samples, dev_bench's default (SAMPLES); dev_bench sets the steps itself
        "target_runtime_hours": 2.0,  # only a guard: the steps end the run
        "eval_every_n_epochs": 0,
        "eval_every_n_minutes": 0.0,
        "save_every_n_minutes": 5.0,
        "log_every_n_steps": 200,
        "focus_fraction": 0.3,     # the last 30% on the scored tasks' demonstrations: never lower (the dev benchmark)
        "adapt_steps": 32,         # per-task adaptation: 32 steps beat 8 and 16; 64 add nothing (sessions 13, 31)
        "compile": False,          # on a CPU compiling and recompiling for the end's shapes costs more than it gains
        "checkpoint_dir": "checkpoints/dev",
        "output_dir": "outputs/dev",
    },
    # Kaggle, ARC Prize 2026: 4x L4 for 12 hours (one GPU works too); the arithmetic is in EXPERIMENTS.md (session 29).
    "kaggle": {
        "target_runtime_hours": 11.0,  # the rest of Kaggle's 12 hours for the notebook's start and a margin
        "batch_size": 64,          # 64 pairs a GPU keep an L4 busier than its host (bench.py --l4)
        "num_loops": 2,            # the blocks applied twice: the loop won at four times the dev samples (session 24)
        "focus_fraction": 0.3,     # the last 30% on the evaluation and hidden tasks' demonstrations
        "adapt_steps": 32,         # 32 adaptation steps beat 8 and 16; 64 add nothing (sessions 13, 31)
        "eval_every_n_minutes": 30.0,
        "save_every_n_minutes": 30.0,
    },
}
