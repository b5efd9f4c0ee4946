"""extra_data: more training tasks from attached datasets, in the formats users have, never holding a
held-out task, drawn at a share of each epoch."""
import os

import numpy as np

import train_full as tf
from helpers import TINY, make_task, random_grid, small_dataset, write_json, write_kaggle_folder

CONFIG = {**tf.CONFIG, "num_augmentations": 4, "vote_augmentations": 2, "canvas_size": 30}


def examples(count, seed, shape=(3, 3)):
    """RE-ARC's layout: [{"input", "output"}, ...] for one task."""
    return [{"input": random_grid(*shape, seed=seed + k), "output": random_grid(*shape, seed=seed + 500 + k)}
            for k in range(count)]


def every_format(folder):
    """One folder of each format users attach, nested as the datasets ship."""
    write_json(os.path.join(folder, "concepts", "AboveBelow", "AboveBelow1.json"), make_task(seed=60, num_test=2))
    write_kaggle_folder(os.path.join(folder, "kaggle", "deep", "down"),
                        {"training": {"k1": make_task(seed=61), "k2": make_task(seed=62)}}, solutions=("training",))
    write_json(os.path.join(folder, "re_arc", "tasks", "train1.json"), examples(5, seed=63))
    return folder


def test_each_format_is_read_at_any_depth_with_every_pair_that_has_an_output(tmp_path):
    tasks = tf.load_extra_data(every_format(str(tmp_path)))
    assert [(t.id, len(t.train), t.split) for t in tasks] == [
        ("AboveBelow1", 2 + 2, "extra"), ("k1", 2 + 1, "extra"), ("k2", 2 + 1, "extra"), ("train1", 5, "extra")]
    assert all(t.test_inputs == [] and t.test_outputs is None for t in tasks)
    answer = make_task(seed=61)["test"][0]["output"]  # the solutions file's grid, read with its challenges
    assert np.array_equal(tasks[1].train[2][1], answer)


def test_several_folders_are_read_and_a_challenges_file_without_solutions_gives_its_demonstrations(tmp_path):
    write_kaggle_folder(str(tmp_path / "a"), {"training": {"k1": make_task(seed=61)}}, solutions=())
    write_json(str(tmp_path / "b" / "x.json"), examples(2, seed=1))
    tasks = tf.load_extra_data(f"{tmp_path / 'a'},{tmp_path / 'b'}")
    assert [(t.id, len(t.train)) for t in tasks] == [("k1", 2), ("x", 2)]


def test_extra_examples_of_a_training_task_join_it_and_others_are_tasks_of_their_own(tmp_path):
    tasks = tf.load_kaggle_folder(write_kaggle_folder(str(tmp_path / "data"), small_dataset()))
    tasks["extra"] = tf.load_extra_data(every_format(str(tmp_path / "extra")))
    training_set = tf.build_training_set(tasks, CONFIG)
    assert training_set.task_ids == ["train0", "train1", "train2", "evalA", "evalB", "AboveBelow1", "k1", "k2"]
    assert training_set.task_splits[-3:] == ["extra"] * 3
    extra = training_set.pair_task[training_set.extra_start:]
    assert training_set.extra_start == 9 + 4 and len(extra) == 4 + 3 + 3 + 5
    assert np.bincount(extra).tolist()[1] == 5  # RE-ARC's examples of train1 train its embedding rows
    assert training_set.dropped == {}


def test_an_extra_task_with_a_held_out_id_or_input_is_never_trained_on(tmp_path):
    data = small_dataset()
    data["test"] = {"hidden1": make_task(seed=30)}
    tasks = tf.load_kaggle_folder(write_kaggle_folder(str(tmp_path / "data"), data, solutions=tf.SPLITS))
    evaluation_pair = make_task(seed=11, num_test=3, shape=(5, 2))["test"][2]  # evalB's test input and its answer
    test_pair = make_task(seed=30)["test"][0]                                    # hidden1's
    demonstration_input = data["evaluation"]["evalA"]["train"][1]["input"]
    write_json(str(tmp_path / "extra" / "copy_of_eval.json"), examples(3, seed=5) + [evaluation_pair])
    write_json(str(tmp_path / "extra" / "copy_of_test.json"), [test_pair] + examples(3, seed=6))
    write_json(str(tmp_path / "extra" / "demo.json"), [{"input": demonstration_input, "output": [[1]]}])
    write_json(str(tmp_path / "extra" / "evalA.json"), examples(3, seed=7))          # a held-out task's id
    write_json(str(tmp_path / "extra" / "fine.json"), examples(3, seed=8))
    tasks["extra"] = tf.load_extra_data(str(tmp_path / "extra"))
    training_set = tf.build_training_set(tasks, CONFIG)
    assert training_set.dropped == {"extra tasks dropped (the id or an input of an evaluation or test task)": 4}
    assert training_set.task_ids[-1] == "fine" and len(training_set.inputs) - training_set.extra_start == 3
    answers = {tf.grid_key(np.array(p["output"], dtype=np.uint8)) for p in (evaluation_pair, test_pair)}
    trained = {tf.grid_key(training_set.example(i)[1]) for i in range(len(training_set))}
    assert not answers & trained and not answers & {tf.grid_key(g) for g in training_set.outputs}
    assert np.bincount(training_set.pair_task)[training_set.task_ids.index("evalA")] == 2  # its demonstrations


def test_extra_pairs_larger_than_the_canvas_are_dropped_and_counted(tmp_path):
    tasks = {"training": [], "evaluation": [], "test": []}
    write_json(str(tmp_path / "x.json"), examples(3, seed=1) + examples(2, seed=9, shape=(12, 4)))
    tasks["extra"] = tf.load_extra_data(str(tmp_path))
    training_set = tf.build_training_set(tasks, {**CONFIG, "canvas_size": 11})
    assert len(training_set.inputs) == 3
    assert training_set.dropped == {"extra pairs dropped (larger than the 11-cell canvas)": 2}


def test_an_epoch_holds_every_arc_pair_once_and_extra_examples_at_their_share(tmp_path):
    tasks = tf.load_kaggle_folder(write_kaggle_folder(str(tmp_path / "data"), small_dataset()))
    write_json(str(tmp_path / "extra" / "many.json"), examples(400, seed=0))
    tasks["extra"] = tf.load_extra_data(str(tmp_path / "extra"))
    training_set = tf.build_training_set(tasks, {**CONFIG, "batch_size": 4})
    arc = training_set.extra_start

    def epoch(number, share=0.25, focus=False):
        config = {**CONFIG, "batch_size": 4, "extra_share": share}
        return np.concatenate([pairs for pairs, _ in tf.epoch_batches(training_set, config, number, focus)])

    first, second = epoch(0), epoch(1)
    assert sorted(first[first < arc].tolist()) == list(range(arc))  # every ARC pair once
    drawn = first[first >= arc]
    assert len(drawn) == round(arc * 0.25 / 0.75) and len(set(drawn.tolist())) == len(drawn)
    assert set(drawn.tolist()) != set(second[second >= arc].tolist())  # a fresh draw each epoch
    assert np.array_equal(first, epoch(0))                              # from (seed, epoch) alone
    assert len(epoch(0, share=0.5)) == 2 * arc and (epoch(0, share=0.0) < arc).all()
    focused = epoch(0, focus=True)
    assert (focused < arc).all() and set(training_set.pair_task[focused]) == {3, 4}  # the evaluation tasks alone


def test_a_bad_extra_file_exits_2_naming_file_and_example_and_writes_nothing(tmp_path, capsys):
    data = write_kaggle_folder(str(tmp_path / "data"), small_dataset())
    bad = examples(3, seed=1)
    bad[2]["output"][1] = [1, 2]
    write_json(str(tmp_path / "extra" / "sub" / "ragged.json"), bad)
    code = tf.main([*TINY, f"--data_dir={data}", f"--extra_data={tmp_path / 'extra'}",
                    f"--output_dir={tmp_path / 'out'}", f"--checkpoint_dir={tmp_path / 'ck'}"], presets={})
    assert code == 2
    assert (f"{tmp_path / 'extra' / 'sub' / 'ragged.json'}: example 2 output: row 1 has 2 cells but row 0 has 3"
            in capsys.readouterr().err)
    assert not (tmp_path / "out").exists() and not (tmp_path / "ck").exists()
    assert tf.main([*TINY, f"--data_dir={data}", f"--extra_data={tmp_path / 'missing'}"], presets={}) == 2
    assert "missing: not a folder (extra_data)" in capsys.readouterr().err


def test_a_run_trains_on_extra_data_and_says_what_it_read(tmp_path, capsys):
    data = write_kaggle_folder(str(tmp_path / "data"), small_dataset())
    write_json(str(tmp_path / "extra" / "more.json"), examples(30, seed=3))
    code = tf.main([*TINY, f"--data_dir={data}", f"--extra_data={tmp_path / 'extra'}", "--extra_share=0.5",
                    f"--output_dir={tmp_path / 'out'}", f"--checkpoint_dir={tmp_path / 'ck'}"], presets={})
    out = capsys.readouterr().out
    assert code == 0 and "and 1 extra tasks from" in out
    assert "pairs (13 of the ARC files, the rest drawn from 30 extra)" in out
