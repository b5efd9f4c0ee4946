import numpy as np
import pytest

import train_full as tf
from helpers import certain, small_dataset, write_kaggle_folder

AUGMENTATIONS = [tf.Augmentation(d, (0, *np.roll(np.arange(1, 10), d).tolist())) for d in range(8)]
TEST_INPUT = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
TRUTH = np.array([[7, 0], [0, 7], [3, 3]], np.uint8)
WRONG = np.array([[7, 0], [0, 7], [3, 4]], np.uint8)


def predicted_under(grids, augmentations):
    """What a model that answers `grids[i]` in original terms predicts on the augmented task."""
    return [tf.augment_grid(grid, augmentation) for grid, augmentation in zip(grids, augmentations)]


def test_the_majority_wins_after_each_augmentation_is_undone():
    answers = [TRUTH] * 5 + [WRONG] * 3
    predictions = predicted_under(answers, AUGMENTATIONS)
    assert len({tf.grid_key(p) for p in predictions}) == 8  # as predicted, no two agree
    result = tf.vote(predictions, AUGMENTATIONS, TEST_INPUT)
    assert np.array_equal(result.attempts[0], TRUTH) and np.array_equal(result.attempts[1], WRONG)
    assert result.votes == (5, 3)


def test_a_tie_goes_to_the_more_confident_grid():
    predictions = predicted_under([WRONG, TRUTH, WRONG, TRUTH], AUGMENTATIONS)
    result = tf.vote(predictions, AUGMENTATIONS[:4], TEST_INPUT, confidences=[-2.0, -0.1, -2.0, -0.3])
    assert np.array_equal(result.attempts[0], TRUTH) and result.votes == (2, 2)


def test_a_tie_without_confidences_goes_to_the_grid_seen_first_every_time():
    predictions = predicted_under([WRONG, TRUTH, TRUTH, WRONG], AUGMENTATIONS)
    for _ in range(3):
        assert np.array_equal(tf.vote(predictions, AUGMENTATIONS[:4], TEST_INPUT).attempts[0], WRONG)


def test_more_votes_beat_higher_confidence():
    predictions = predicted_under([WRONG, TRUTH, TRUTH], AUGMENTATIONS)
    result = tf.vote(predictions, AUGMENTATIONS[:3], TEST_INPUT, confidences=[0.0, -5.0, -5.0])
    assert np.array_equal(result.attempts[0], TRUTH)


def test_a_single_distinct_grid_gets_the_test_input_as_second_attempt():
    result = tf.vote(predicted_under([TRUTH] * 4, AUGMENTATIONS), AUGMENTATIONS[:4], TEST_INPUT)
    assert np.array_equal(result.attempts[0], TRUTH)
    assert np.array_equal(result.attempts[1], TEST_INPUT) and result.votes == (4, 0)


def test_when_the_only_prediction_is_the_test_input_the_second_attempt_differs():
    result = tf.vote(predicted_under([TEST_INPUT] * 3, AUGMENTATIONS), AUGMENTATIONS[:3], TEST_INPUT)
    assert np.array_equal(result.attempts[0], TEST_INPUT)
    assert not np.array_equal(result.attempts[1], TEST_INPUT)
    assert np.array_equal(result.attempts[1], np.rot90(TEST_INPUT))


@pytest.mark.parametrize("test_input", [np.zeros((1, 1), np.uint8), np.full((3, 3), 4, np.uint8)])
def test_even_a_fully_symmetric_input_gets_two_distinct_attempts(test_input):
    result = tf.vote([test_input], [tf.IDENTITY], test_input)
    assert not np.array_equal(result.attempts[0], result.attempts[1])


def test_predictions_that_did_not_decode_take_no_part():
    predictions = predicted_under([TRUTH, TRUTH], AUGMENTATIONS)
    result = tf.vote([None, predictions[0], None, predictions[1]],
                     [AUGMENTATIONS[5], AUGMENTATIONS[0], AUGMENTATIONS[6], AUGMENTATIONS[1]], TEST_INPUT)
    assert np.array_equal(result.attempts[0], TRUTH) and result.votes == (2, 0)
    nothing = tf.vote([None, None], AUGMENTATIONS[:2], TEST_INPUT)
    assert np.array_equal(nothing.attempts[0], TEST_INPUT) and nothing.votes == (0, 0)


def scale_up_predictor(canvases, embedding_ids):
    """A model that knows its rule: every cell becomes a 2x2 block. The rule commutes with every
    augmentation, so each augmented prediction maps back to the same grid."""
    outputs = []
    for canvas in canvases:
        grid = tf.decode_grid(canvas)
        outputs.append(tf.encode_grid(np.kron(grid, np.ones((2, 2), np.uint8)), canvas.shape))
    return np.stack(outputs), np.zeros(len(canvases)), certain(outputs)


def test_predicting_a_task_runs_augment_encode_decode_invert_and_vote(tmp_path):
    tasks = tf.load_kaggle_folder(write_kaggle_folder(str(tmp_path), small_dataset()))
    config = {**tf.CONFIG, "num_augmentations": 8, "vote_augmentations": 8}
    training_set = tf.build_training_set(tasks, config)
    votes = tf.predict_tasks(tasks["evaluation"], training_set, scale_up_predictor, config)
    evalb = tasks["evaluation"][1]
    assert len(votes["evalB"]) == 3
    for test_input, task_vote in zip(evalb.test_inputs, votes["evalB"]):
        assert task_vote.attempts[0].shape == (10, 4)  # the output's shape differs from the input's
        assert np.array_equal(task_vote.attempts[0], np.kron(test_input, np.ones((2, 2), np.uint8)))
        assert task_vote.votes[0] == 8


def predict_with_copies(tmp_path, batch_size):
    """Votes over 4 test inputs x 3 views from a predictor that copies its input, and the batch sizes it saw."""
    tasks = tf.load_kaggle_folder(write_kaggle_folder(str(tmp_path), small_dataset()))
    config = {**tf.CONFIG, "num_augmentations": 4, "vote_augmentations": 3, "batch_size": batch_size}
    calls = []

    def copy_predictor(canvases, embedding_ids):
        calls.append(len(canvases))
        return canvases.copy(), np.zeros(len(canvases)), certain(canvases)
    return tasks, tf.predict_tasks(tasks["evaluation"], tf.build_training_set(tasks, config), copy_predictor, config), calls


def test_predictions_are_batched_and_grouped_back_per_test_input(tmp_path):
    tasks, votes, calls = predict_with_copies(tmp_path, batch_size=5)
    assert calls == [5, 5, 2]  # 4 test inputs x 3 augmentations
    for task in tasks["evaluation"]:
        for test_input, task_vote in zip(task.test_inputs, votes[task.id]):
            assert np.array_equal(task_vote.attempts[0], test_input) and task_vote.votes[0] == 3


@pytest.mark.parametrize("source", ["arc-agi-1", "arc-agi-2"])
def test_no_arc_test_output_is_larger_than_the_canvas_it_is_predicted_on(source):
    tasks, _ = tf.load_tasks({**tf.CONFIG, "data_source": source}, local_folder="/nonexistent", kaggle_root="/nonexistent")
    too_large, sides = [], []
    for task in tasks["training"] + tasks["evaluation"]:
        for test_input, output in zip(task.test_inputs, task.test_outputs):
            side = tf.prediction_side(task, test_input, 30)
            sides.append(side)
            if max(output.shape) > (30 if side == 30 else side - 1):  # room for the end marker, unless at the edge
                too_large.append(task.id)
    assert too_large == []
    assert np.mean(np.square(sides)) < 0.95 * 900  # and the bound saves work


def test_no_prediction_batch_holds_a_single_canvas(tmp_path):
    # A compiled model recompiles for a batch of one (its size is specialised), so the last batch is padded.
    _, votes, calls = predict_with_copies(tmp_path, batch_size=11)
    assert sum(calls) >= 12 and 1 not in calls  # 4 test inputs x 3 views: 11 and then 1
    assert all(v.votes[0] == 3 for task_votes in votes.values() for v in task_votes)


def test_the_report_says_where_the_answer_stands_among_the_candidates_even_when_the_vote_missed_it():
    other = np.array([[1, 1], [1, 1], [1, 1]], np.uint8)
    answers = [WRONG] * 4 + [other] * 3 + [TRUTH]  # the answer was predicted once: third of three candidates
    missed = tf.vote(predicted_under(answers, AUGMENTATIONS), AUGMENTATIONS, TEST_INPUT)
    won = tf.vote(predicted_under([TRUTH] * 8, AUGMENTATIONS), AUGMENTATIONS, TEST_INPUT)
    never = tf.vote(predicted_under([WRONG] * 8, AUGMENTATIONS), AUGMENTATIONS, TEST_INPUT)
    tasks = [tf.Task(name, "evaluation", [(TEST_INPUT, TRUTH)], [TEST_INPUT], [TRUTH]) for name in "abc"]
    report = tf.eval_report(tasks, {"a": [missed], "b": [won], "c": [never]})
    assert [t["test"][0]["answer_rank"] for t in report["tasks"]] == [3, 1, None]
    assert [t["test"][0]["solved"] for t in report["tasks"]] == [False, True, False]
    assert report["summary"]["answer_among_candidates"] == 2


def in_view(original, augmentation, side):
    """(side, side, 10) colour log-probabilities in a view's frame, from (height, width, 10) ones in the
    original frame: the forward augmentation, written out here independently of the code's inverse."""
    spatial = original.transpose(1, 0, 2) if augmentation.dihedral >= 4 else original
    spatial = np.rot90(spatial, augmentation.dihedral % 4)
    view = np.empty_like(spatial)
    view[..., list(augmentation.colours)] = spatial
    canvas = np.full((side, side, 10), -30.0)
    canvas[:view.shape[0], :view.shape[1]] = view
    return canvas


def test_views_that_each_miss_one_cell_give_the_right_grid_cell_by_cell():
    # Every view is sure of every cell but one, where it slightly prefers a wrong colour: no two views agree
    # on a whole grid, so the vote finds no majority, but each cell is right in seven views of eight.
    wrongs, log_probs = [], []
    for v, augmentation in enumerate(AUGMENTATIONS):
        cell, colour = divmod(v % 6, 2), (TRUTH[divmod(v % 6, 2)] + 1 + v // 6) % 10
        wrong = TRUTH.copy()
        wrong[cell] = colour
        original = np.where(TRUTH[..., None] == np.arange(10), 0.0, -30.0)
        original[cell] = -30.0
        original[cell][colour], original[cell][TRUTH[cell]] = np.log(0.5), np.log(0.45)
        wrongs.append(wrong)
        log_probs.append(in_view(original, augmentation, 5))
    predictions = predicted_under(wrongs, AUGMENTATIONS)
    assert len({tf.grid_key(w) for w in wrongs}) == 8
    plain = tf.vote(predictions, AUGMENTATIONS, TEST_INPUT)
    assert not any(np.array_equal(attempt, TRUTH) for attempt in plain.attempts)
    product = tf.vote(predictions, AUGMENTATIONS, TEST_INPUT, colour_log_probs=log_probs)
    assert np.array_equal(product.attempts[0], TRUTH) and product.votes[0] == 0
    assert np.array_equal(product.attempts[1], plain.attempts[0]) and product.votes[1] == 1
    assert np.array_equal(product.candidates[0], TRUTH) and len(product.candidates) == 9
