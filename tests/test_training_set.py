import dataclasses
import os

import numpy as np
import pytest

import train_full as tf
from helpers import make_task, small_dataset, write_json, write_kaggle_folder

NOWHERE = "/nonexistent-folder"
CONFIG = {**tf.CONFIG, "num_augmentations": 6, "vote_augmentations": 2}
# A grid of a shape no other test grid has, with a pattern of its own.
MARKER = ((np.arange(23 * 17).reshape(23, 17) * 7) % 10).tolist()
MARKER_SHAPES = {(23, 17), (17, 23)}


def every_training_grid(training_set):
    """The base pairs and every augmented example the model can be shown."""
    yield from training_set.inputs
    yield from training_set.outputs
    for i in range(len(training_set)):
        grid_in, grid_out, _ = training_set.example(i)
        yield grid_in
        yield grid_out


def holds_marker(training_set):
    return any(grid.shape in MARKER_SHAPES for grid in every_training_grid(training_set))


def planted_kaggle_folder(folder, plant_in):
    data = small_dataset()
    data["test"] = {"hidden1": make_task(seed=30, num_test=2)}
    for split, task_id, index in plant_in:
        data[split][task_id]["test"][index]["output"] = MARKER
    return write_kaggle_folder(folder, data, solutions=tf.SPLITS)


def test_the_leak_detector_finds_a_marker_planted_in_training(tmp_path):
    folder = planted_kaggle_folder(str(tmp_path), [("training", "train1", 0)])
    tasks = tf.load_kaggle_folder(folder)
    assert holds_marker(tf.build_training_set(tasks, CONFIG))


def test_evaluation_and_test_outputs_never_reach_the_training_set(tmp_path):
    folder = planted_kaggle_folder(str(tmp_path), [("evaluation", "evalB", 2), ("test", "hidden1", 1)])
    tasks = tf.load_kaggle_folder(folder)
    assert tasks["evaluation"][1].test_outputs[2].shape == (23, 17)  # the answers were loaded...
    assert tasks["test"][0].test_outputs[1].shape == (23, 17)
    assert not holds_marker(tf.build_training_set(tasks, CONFIG))   # ...and never trained on


def test_repository_evaluation_outputs_never_reach_the_training_set(tmp_path):
    evaluation = make_task(seed=40)
    evaluation["test"][0]["output"] = MARKER
    write_json(str(tmp_path / "evaluation" / "e1.json"), evaluation)
    write_json(str(tmp_path / "training" / "t1.json"), make_task(seed=41))
    tasks = tf.load_repository_folder(str(tmp_path))
    assert not holds_marker(tf.build_training_set(tasks, CONFIG))


def test_training_tasks_give_every_pair_and_held_out_tasks_only_demonstrations(tmp_path):
    data = small_dataset()
    data["test"] = {"hidden1": make_task(seed=30, num_train=4)}
    tasks = tf.load_kaggle_folder(write_kaggle_folder(str(tmp_path), data))
    training_set = tf.build_training_set(tasks, CONFIG)
    assert training_set.task_ids == ["train0", "train1", "train2", "evalA", "evalB", "hidden1"]
    assert training_set.task_splits == ["training"] * 3 + ["evaluation"] * 2 + ["test"]
    pairs_per_task = np.bincount(training_set.pair_task).tolist()
    assert pairs_per_task == [3, 3, 3, 2, 2, 4]  # training: 2 demonstrations + 1 test pair
    assert len(training_set) == 17 * 6 and training_set.num_embeddings == 6 * 6


def test_the_placeholder_test_split_adds_no_duplicate_pairs(tmp_path):
    tasks = tf.load_kaggle_folder(write_kaggle_folder(str(tmp_path), small_dataset()))
    assert [t.id for t in tasks["test"]] == ["evalA", "evalB"]
    training_set = tf.build_training_set(tasks, CONFIG)
    assert training_set.task_ids == ["train0", "train1", "train2", "evalA", "evalB"]
    assert len(training_set.inputs) == 9 + 4


def test_a_training_copy_of_a_held_out_task_gives_only_its_demonstrations(tmp_path):
    data = small_dataset()
    data["training"]["copy"] = data["evaluation"]["evalA"]      # same content, another id
    data["training"]["evalB"] = make_task(seed=99)              # same id, other content
    tasks = tf.load_kaggle_folder(write_kaggle_folder(str(tmp_path), data))
    training_set = tf.build_training_set(tasks, CONFIG)
    assert training_set.dropped == {"training pairs dropped (their input is a held-out test input)": 1}  # the copy's test pair
    answers = {tf.grid_key(g) for t in tasks["evaluation"] for g in t.test_outputs}
    assert not answers & {tf.grid_key(g) for g in training_set.outputs}
    evalb = training_set.task_ids.index("evalB")
    assert np.bincount(training_set.pair_task)[evalb] == 2 + 2  # demonstrations of both, no test pair


def test_each_example_is_an_augmented_pair_with_its_task_and_augmentation_id(tmp_path):
    tasks = tf.load_kaggle_folder(write_kaggle_folder(str(tmp_path), small_dataset()))
    training_set = tf.build_training_set(tasks, CONFIG)
    seen_ids = set()
    for index in range(len(training_set)):
        grid_in, grid_out, embedding_id = training_set.example(index)
        pair, augmentation_index = divmod(index, 6)
        task_index = training_set.pair_task[pair]
        assert embedding_id == task_index * 6 + augmentation_index
        augmentation = training_set.augmentation(task_index, augmentation_index)
        assert np.array_equal(grid_in, tf.augment_grid(training_set.inputs[pair], augmentation))
        assert np.array_equal(grid_out, tf.augment_grid(training_set.outputs[pair], augmentation))
        seen_ids.add(embedding_id)
    assert seen_ids == set(range(training_set.num_embeddings))
    grid_in, _, _ = training_set.example(0)
    assert np.array_equal(grid_in, training_set.inputs[0])  # augmentation 0 is the identity


@pytest.mark.parametrize("source", ["arc-agi-2", "arc-agi-1"])
def test_no_embedded_evaluation_answer_is_a_training_example(source):
    config = {**CONFIG, "data_source": source}
    tasks, _ = tf.load_tasks(config, local_folder=NOWHERE, kaggle_root=NOWHERE)
    training_set = tf.build_training_set(tasks, config)
    answers = {(tf.grid_key(i), tf.grid_key(o)) for t in tasks["evaluation"]
               for i, o in zip(t.test_inputs, t.test_outputs)}
    pairs = {(tf.grid_key(i), tf.grid_key(o)) for i, o in zip(training_set.inputs, training_set.outputs)}
    assert len(answers) > 100 and not answers & pairs


def test_an_epoch_draws_every_pair_once_in_batches_of_similar_size(tmp_path):
    tasks, _ = tf.load_tasks({**CONFIG, "num_augmentations": 8}, local_folder=NOWHERE, kaggle_root=NOWHERE)
    config = {**CONFIG, "num_augmentations": 8, "batch_size": 32}
    training_set = tf.build_training_set(tasks, config)
    batches = tf.epoch_batches(training_set, config, epoch=3)
    pairs = np.concatenate([b[0] for b in batches])
    assert sorted(pairs.tolist()) == list(range(len(training_set.inputs)))
    again = tf.epoch_batches(training_set, config, epoch=3)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(batches, again))
    assert not np.array_equal(tf.epoch_batches(training_set, config, epoch=4)[0][0], batches[0][0])
    useful = padded = 0
    for chosen, augmentation_indices in batches:
        inputs, targets = tf.make_batch(training_set, chosen, augmentation_indices, 30)[:2]
        padded += inputs.size
        useful += sum(max(training_set.inputs[p].size, training_set.outputs[p].size) for p in chosen)
    assert useful / padded > 0.6  # a random batch cut to its largest grid keeps about 0.25
    assert abs(len(pairs) / len(batches) - 32) < 12


@pytest.mark.parametrize("canvas_size", [30, 5])  # 5: grids as tall as the canvas, no end row
def test_each_process_builds_only_its_slice_of_a_batch_and_knows_the_whole_batchs_loss_cells(tmp_path, canvas_size):
    tasks = tf.load_kaggle_folder(write_kaggle_folder(str(tmp_path), small_dataset()))
    config = {**CONFIG, "num_augmentations": 8, "batch_size": 13, "canvas_size": canvas_size}
    training_set = tf.build_training_set(tasks, config)
    for chosen, augmentation_indices in tf.epoch_batches(training_set, config, epoch=0):
        whole = tf.make_batch(training_set, chosen, augmentation_indices, canvas_size)
        assert whole.cells == (whole.targets != tf.PAD).sum() and len(whole.inputs) == len(chosen)
        slices = [tf.make_batch(training_set, chosen, augmentation_indices, canvas_size, rank, 3) for rank in range(3)]
        assert [len(s.inputs) for s in slices if s.weight] == [len(part) for part in np.array_split(chosen, 3) if len(part)]
        assert all(s.cells == whole.cells for s in slices)
        built = [tf.decode_grid(t) for s in slices if s.weight for t in s.targets]
        assert all(np.array_equal(a, b) for a, b in zip(built, map(tf.decode_grid, whole.targets)))


def test_the_dev_benchmark_trains_on_no_benchmark_answer():
    import dev_bench
    tasks = dev_bench.benchmark_tasks()
    assert len(tasks["evaluation"]) == 178 + 47 and all(dev_bench.small(t) for t in tasks["evaluation"])
    benchmark_ids = {t.id for t in tasks["evaluation"]}
    assert not benchmark_ids & {t.id for t in tasks["training"]}
    for planted in (5, -1):  # a task of each scored set: the detector's marker as its answer
        tasks["evaluation"][planted].test_outputs[0] = np.array(MARKER, dtype=np.uint8)
    config = tf.parse_config(["--preset=dev", "--num_augmentations=2", "--vote_augmentations=2"],
                             presets=tf.load_presets(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    training_set = tf.build_training_set(tasks, config)
    assert not holds_marker(training_set)
    answers = {(tf.grid_key(i), tf.grid_key(o)) for t in tasks["evaluation"]
               for i, o in zip(t.test_inputs, t.test_outputs)}
    assert not answers & {(tf.grid_key(i), tf.grid_key(o)) for i, o in zip(training_set.inputs, training_set.outputs)}


def test_the_dev_benchmark_floors_solve_what_they_should():
    import dev_bench
    flip = tf.validate_task({"train": [{"input": [[1, 2], [3, 4]], "output": [[7, 1], [4, 3]]},
                                       {"input": [[2, 2], [1, 3]], "output": [[7, 7], [3, 1]]}],
                             "test": [{"input": [[3, 1], [1, 2]], "output": [[1, 3], [7, 1]]}]}, "f", "evaluation", "here")
    attempts = dev_bench.dihedral_colour_floor(flip)[0]  # a left-right flip with 2 -> 7
    assert any(np.array_equal(attempt, flip.test_outputs[0]) for attempt in attempts)
    scores = dev_bench.floor_scores(dev_bench.task_sets()[dev_bench.SET_NAMES[0]])
    assert scores["identity"]["tasks_solved"] == 0
    assert scores["rotation/reflection + colour map"]["tasks_solved"] == 11


def test_a_focused_epoch_draws_the_evaluation_and_test_demonstrations_alone():
    tasks, _ = tf.load_tasks({**CONFIG, "data_source": "arc-agi-1"}, local_folder=NOWHERE, kaggle_root=NOWHERE)
    training_set = tf.build_training_set(tasks, CONFIG)
    pairs = np.concatenate([b[0] for b in tf.epoch_batches(training_set, CONFIG, epoch=0, focus=True)])
    held_out = [p for p in range(len(training_set.inputs))
                if training_set.task_splits[training_set.pair_task[p]] != "training"]
    assert sorted(pairs.tolist()) == held_out
    assert sum(len(t.train) for t in tasks["evaluation"]) == len(held_out)


def test_the_dev_benchmark_as_a_hidden_run_holds_no_answer_at_all():
    import dev_bench
    hidden = dev_bench.benchmark_tasks(hidden=True)
    assert hidden["evaluation"] == [] and len(hidden["test"]) == 178 + 47
    assert all(t.test_outputs is None for t in hidden["test"])
    answers = {(tf.grid_key(i), tf.grid_key(o)) for t in dev_bench.benchmark_tasks()["evaluation"]
               for i, o in zip(t.test_inputs, t.test_outputs)}
    training_set = tf.build_training_set(hidden, CONFIG)
    pairs = {(tf.grid_key(i), tf.grid_key(o)) for i, o in zip(training_set.inputs, training_set.outputs)}
    assert not answers & pairs


def test_batches_built_ahead_on_a_thread_are_the_ones_of_their_place(tmp_path):
    """The reader builds the next place's batch while a step runs; whatever the loop does next (the next
    batch, an epoch's end, a focus switch, a rollback to an earlier place), it gets that place's batch."""
    tasks = tf.load_kaggle_folder(write_kaggle_folder(str(tmp_path), small_dataset()))
    config = {**CONFIG, "num_augmentations": 8, "batch_size": 5}
    training_set = tf.build_training_set(tasks, config)
    batches = tf.EpochBatches(training_set, config, tf.SINGLE_PROCESS)
    state, last = tf.TrainState(), len(tf.epoch_batches(training_set, config, 0)) - 1

    def expected(epoch, index, focus):
        pairs, augmentations = tf.epoch_batches(training_set, config, epoch, focus)[index]
        return tf.make_batch(training_set, pairs, augmentations, 30)

    for rollback in (False, True):
        for asked_focus in [False] * (last + 1 - state.batch) + [True] * 2:  # epoch 0, then a focused epoch 1
            place = (state.epoch, state.batch, asked_focus if state.batch == 0 else state.focus)
            batch, pairs = batches.next(state, asked_focus)
            want = expected(*place)
            assert pairs == len(want.inputs) and state.focus == place[2]
            assert all(np.array_equal(a, b) for a, b in zip(batch[:4], want[:4]))
            assert all(np.array_equal(t.numpy(), w) for t, w in zip(batch.tensors, (want.inputs, want.targets)))
            batches.advance(state)
        assert state.epoch >= 1 and state.focus and batches.ahead is not None
        state.epoch, state.batch, state.focus = 0, 1, False  # a rollback: last.pt's place
    batches.close()


@pytest.mark.parametrize("before, after", [(1, 2), (2, 1), (1, 3)])
def test_an_epoch_resumed_late_on_another_number_of_processes_trains_each_of_its_pairs_once(tmp_path, before, after):
    """A run stopped two batches before its epoch's end goes on with another number of processes: the epoch ends
    in the batches it was planned in (each split the new way), the next is planned for the new number."""
    tasks = tf.load_kaggle_folder(write_kaggle_folder(str(tmp_path), small_dataset()))
    config = {**CONFIG, "num_augmentations": 4, "batch_size": 2}
    training_set = tf.build_training_set(tasks, config)
    plan = tf.epoch_batches(training_set, config, 0, processes=before)
    later = tf.epoch_batches(training_set, config, 0, processes=after)
    assert len(plan) - 2 >= len(later) if after > before else len(plan) < len(later)  # past the other plan's end

    def train(processes, state, steps):
        batches, trained = tf.EpochBatches(training_set, config, tf.Distributed(0, processes)), []
        for _ in range(steps):
            batches.next(state, False)
            pairs, augmentations = batches.current(state)[state.batch]
            trained += list(zip(pairs.tolist(), augmentations.tolist()))
            batches.advance(state)
        batches.close()
        return trained

    state = tf.TrainState()
    trained = train(before, state, len(plan) - 2)
    resumed = tf.TrainState(**dataclasses.asdict(state))  # as last.pt keeps it
    trained += train(after, resumed, 2)
    assert resumed.epoch == 1 and resumed.batch == 0
    assert sorted(trained) == sorted(zip(np.concatenate([p for p, _ in plan]).tolist(),
                                         np.concatenate([a for _, a in plan]).tolist()))
    assert len(trained) == len(training_set.inputs)
    train(after, resumed, 1)
    assert resumed.plan_processes == after


def test_an_evaluation_or_test_output_never_steers_the_augmentation_tables(tmp_path):
    # A colour planted in held-out test outputs alone would be "only in outputs" if they were read.
    plain = tf.build_training_set(tf.load_kaggle_folder(planted_kaggle_folder(str(tmp_path / "a"), [])), CONFIG)
    tasks = tf.load_kaggle_folder(planted_kaggle_folder(str(tmp_path / "b"), [("evaluation", "evalB", 2),
                                                                                ("test", "hidden1", 1)]))
    planted = tf.build_training_set(tasks, CONFIG)
    assert np.array_equal(plain.colours, planted.colours) and np.array_equal(plain.dihedral, planted.dihedral)
    fixed = [tf.output_only_colours(task) for split in tf.SPLITS for task in tasks[split]]
    assert any(fixed)  # the data has some: the tables are made with them
