import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays

import train_full as tf


@st.composite
def grids(draw, max_side=30):
    rows = draw(st.integers(1, max_side))
    cols = draw(st.integers(1, max_side))
    return draw(arrays(np.uint8, (rows, cols), elements=st.integers(0, 9)))


@given(grids())
def test_a_grid_survives_the_full_canvas(grid):
    assert np.array_equal(tf.decode_grid(tf.encode_grid(grid, (30, 30))), grid)


@given(st.lists(grids(), min_size=1, max_size=4))
def test_a_batch_cut_to_its_largest_grid_decodes_every_grid_and_matches_the_full_canvas(batch):
    shape = tf.canvas_shape(batch, 30)
    assert shape == (min(30, max(g.shape[0] for g in batch) + 1), min(30, max(g.shape[1] for g in batch) + 1))
    canvases = tf.encode_grids(batch, shape)
    assert canvases.shape == (len(batch), *shape)
    for grid, canvas in zip(batch, canvases):
        assert np.array_equal(tf.decode_grid(canvas), grid)
        # Cutting loses only PAD cells: the cut canvas is the full canvas's top-left corner.
        full = tf.encode_grid(grid, (30, 30))
        assert np.array_equal(canvas, full[:shape[0], :shape[1]])
        assert (full[shape[0]:, :] == tf.PAD).all() and (full[:, shape[1]:] == tf.PAD).all()


def test_the_end_markers_close_the_grid_on_its_right_and_bottom():
    canvas = tf.encode_grid(np.array([[0, 5], [7, 9]], np.uint8), (4, 4))
    P, E = tf.PAD, tf.EOS
    assert canvas.tolist() == [[2, 7, E, P],
                               [9, 11, E, P],
                               [E, E, E, P],
                               [P, P, P, P]]


def test_a_grid_that_fills_the_canvas_has_no_markers_and_still_decodes():
    grid = np.full((30, 30), 4, np.uint8)
    assert (tf.encode_grid(grid, (30, 30)) != tf.EOS).all()
    assert np.array_equal(tf.decode_grid(tf.encode_grid(grid, (30, 30))), grid)


def test_a_grid_larger_than_the_canvas_is_refused():
    with pytest.raises(ValueError, match="a 5x3 grid does not fit a 4x4 canvas"):
        tf.encode_grid(np.zeros((5, 3), np.uint8), (4, 4))


@pytest.mark.parametrize("canvas", [
    np.zeros((5, 5), np.int64),                                    # all PAD
    np.array([[tf.EOS, 3], [3, 3]]),                               # marker at the corner
    np.array([[3, 3, tf.EOS], [3, tf.PAD, tf.EOS], [tf.EOS] * 3]),  # a hole inside the rectangle
    np.array([[3, 3], [3, 15]]),                                   # a token outside the vocabulary
])
def test_a_canvas_without_a_valid_rectangle_decodes_to_none(canvas):
    assert tf.decode_grid(canvas) is None


@given(arrays(np.int64, st.tuples(st.integers(1, 30), st.integers(1, 30)), elements=st.integers(0, 15)))
def test_decoding_any_token_canvas_never_crashes_and_returns_colours_only(canvas):
    grid = tf.decode_grid(canvas)
    assert grid is None or (grid.dtype == np.uint8 and grid.max() <= 9 and grid.size >= 1)
