"""Named presets for train_full.py: `python train_full.py --preset=NAME`. A preset overrides CONFIG's
defaults; --key=value arguments override the preset. train_full.py runs without this file."""

PRESETS = {
    # The whole pipeline in seconds on a CPU: few augmentations per task, few votes per test input.
    "quick": {
        "num_augmentations": 8,
        "vote_augmentations": 4,
    },
}
