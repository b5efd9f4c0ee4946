import os

import pytest

import train_full as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESETS = {"small": {"num_augmentations": 4, "vote_augmentations": 2}}


def test_no_arguments_gives_the_defaults():
    assert tf.parse_config([]) == tf.CONFIG


def test_values_are_parsed_as_literals_of_the_default_type():
    config = tf.parse_config(["--num_augmentations=16", "--data_dir=/kaggle/input/x", "--seed=7"])
    assert config["num_augmentations"] == 16
    assert config["data_dir"] == "/kaggle/input/x"
    assert config["seed"] == 7


def test_an_int_is_accepted_where_a_float_is_expected():
    assert tf.check_setting("rate", 1, {"rate": 0.5}, "test") == 1.0
    assert type(tf.check_setting("rate", 1, {"rate": 0.5}, "test")) is float


def test_booleans_parse_in_python_and_lowercase_spelling():
    assert tf.parse_value("True") is True and tf.parse_value("false") is False


def test_a_wrong_type_is_rejected_with_the_key_and_types():
    with pytest.raises(tf.ConfigError, match="num_augmentations must be int.*'many'"):
        tf.parse_config(["--num_augmentations=many"])
    with pytest.raises(tf.ConfigError, match="seed must be int.*bool"):
        tf.parse_config(["--seed=True"])


def test_an_unknown_key_is_rejected_with_the_nearest_valid_name():
    with pytest.raises(tf.ConfigError, match="unknown setting 'num_augmentation'.*'num_augmentations'"):
        tf.parse_config(["--num_augmentation=3"])


def test_a_preset_applies_before_arguments_whatever_their_order():
    config = tf.parse_config(["--vote_augmentations=3", "--preset=small"], presets=PRESETS)
    assert config["num_augmentations"] == 4
    assert config["vote_augmentations"] == 3


def test_an_unknown_preset_is_rejected_listing_the_known_ones():
    with pytest.raises(tf.ConfigError, match="unknown preset 'tiny'.*small"):
        tf.parse_config(["--preset=tiny"], presets=PRESETS)


def test_a_preset_with_an_unknown_key_is_rejected():
    with pytest.raises(tf.ConfigError, match="preset 'bad': unknown setting"):
        tf.parse_config(["--preset=bad"], presets={"bad": {"epochz": 3}})


def test_jupyter_kernel_arguments_are_ignored():
    assert tf.parse_config(["-f", "/root/.local/share/jupyter/runtime/kernel-1.json"]) == tf.CONFIG


def test_a_bare_argument_is_rejected():
    with pytest.raises(tf.ConfigError, match="expected --key=value"):
        tf.parse_config(["quick"])


def test_settings_that_contradict_each_other_are_rejected():
    with pytest.raises(tf.ConfigError, match="vote_augmentations"):
        tf.parse_config(["--num_augmentations=2", "--vote_augmentations=3"])
    with pytest.raises(tf.ConfigError, match="data_source"):
        tf.parse_config(["--data_source=arc-agi-3"])
    with pytest.raises(tf.ConfigError, match="canvas_size"):
        tf.parse_config(["--canvas_size=0"])


def test_presets_come_from_config_py_and_are_valid(tmp_path):
    presets = tf.load_presets(ROOT)
    assert "quick" in presets
    for name in presets:
        tf.parse_config([f"--preset={name}"], presets=presets)
    assert tf.load_presets(str(tmp_path)) == {}
