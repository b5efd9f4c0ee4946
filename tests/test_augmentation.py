import numpy as np
import pytest
from hypothesis import given, strategies as st

import train_full as tf
from test_encoding import grids

colour_maps = st.permutations(range(1, 10)).map(lambda p: (0, *p))


@pytest.mark.parametrize("dihedral", range(8))
@given(grid=grids(), colours=colour_maps)
def test_every_augmentation_is_undone_by_its_inverse(dihedral, grid, colours):
    augmentation = tf.Augmentation(dihedral, colours)
    augmented = tf.augment_grid(grid, augmentation)
    assert augmented.shape in (grid.shape, grid.shape[::-1])
    assert np.array_equal(tf.augment_grid(augmented, tf.invert_augmentation(augmentation)), grid)
    assert tf.invert_augmentation(tf.invert_augmentation(augmentation)) == augmentation


def test_the_eight_dihedral_transforms_are_the_eight_symmetries_of_the_square():
    grid = np.arange(6, dtype=np.uint8).reshape(2, 3)
    images = {tf.grid_key(tf.augment_grid(grid, tf.Augmentation(d, tf.IDENTITY.colours))) for d in range(8)}
    expected = {tf.grid_key(np.ascontiguousarray(np.rot90(g, k))) for g in (grid, grid.T) for k in range(4)}
    assert images == expected and len(images) == 8


@given(grid=grids(), colours=colour_maps)
def test_colour_zero_stays_the_background(grid, colours):
    augmented = tf.augment_grid(grid, tf.Augmentation(0, colours))
    assert np.array_equal(augmented == 0, grid == 0)
    assert np.array_equal(augmented, np.array(colours, np.uint8)[grid])


def test_the_table_holds_distinct_augmentations_with_the_identity_first():
    dihedral, colours = tf.augmentation_table(500, seed=3, task_id="007bbfb7")
    assert dihedral.shape == (500,) and colours.shape == (500, 10)
    assert dihedral[0] == 0 and colours[0].tolist() == list(range(10))
    assert len({(int(d), c.tobytes()) for d, c in zip(dihedral, colours)}) == 500
    assert (colours[:, 0] == 0).all()
    assert (np.sort(colours, axis=1) == np.arange(10)).all()
    assert set(dihedral.tolist()) == set(range(8))


def test_the_table_depends_only_on_count_seed_and_task():
    first = tf.augmentation_table(20, seed=1, task_id="a")
    assert all(np.array_equal(x, y) for x, y in zip(first, tf.augmentation_table(20, seed=1, task_id="a")))
    assert not np.array_equal(first[1], tf.augmentation_table(20, seed=2, task_id="a")[1])
    assert not np.array_equal(first[1], tf.augmentation_table(20, seed=1, task_id="b")[1])
    # A longer table starts with the shorter one, so raising the count keeps the embeddings' meaning.
    longer = tf.augmentation_table(3000, seed=1, task_id="a")
    assert np.array_equal(longer[0][:20], first[0]) and np.array_equal(longer[1][:20], first[1])


def test_an_impossible_count_is_refused():
    with pytest.raises(ValueError, match="num_augmentations"):
        tf.augmentation_table(0, seed=0, task_id="a")
    with pytest.raises(ValueError, match="num_augmentations"):
        tf.augmentation_table(tf.NUM_DISTINCT_AUGMENTATIONS + 1, seed=0, task_id="a")


def test_colours_only_the_demonstration_outputs_have_are_found_from_the_demonstrations_alone():
    grid = np.array([[0, 1], [2, 2]], np.uint8)
    filled = np.array([[4, 1], [4, 9]], np.uint8)
    task = tf.Task("t", "evaluation", [(grid, filled), (grid + 3, grid)], [grid], [np.full((2, 2), 7, np.uint8)])
    assert tf.output_only_colours(task) == {9}  # 4 is in an input (grid + 3); 7 only in a test output; 0 never


def test_fixed_colours_keep_their_place_in_every_view_and_the_rest_are_drawn_as_before():
    dihedral, colours = tf.augmentation_table(300, seed=3, task_id="t", fixed=frozenset({4, 7}))
    assert (colours[:, 4] == 4).all() and (colours[:, 7] == 7).all()
    assert len({(int(d), c.tobytes()) for d, c in zip(dihedral, colours)}) == 300
    assert (np.sort(colours, axis=1) == np.arange(10)).all() and len(set(colours[:, 1].tolist())) == 7
    again = tf.augmentation_table(300, seed=3, task_id="t", fixed=frozenset({7, 4}))
    assert np.array_equal(again[0], dihedral) and np.array_equal(again[1], colours)
    # With nothing fixed, the table is the one every earlier checkpoint's embeddings were trained under.
    plain = tf.augmentation_table(300, seed=3, task_id="t")
    assert not np.array_equal(plain[1], colours) and plain[1][1].tolist() != list(range(10))


def test_a_task_with_too_few_free_colours_repeats_its_distinct_views():
    dihedral, colours = tf.augmentation_table(20, seed=0, task_id="t", fixed=frozenset(range(1, 9)))
    assert (colours == np.arange(10)).all()  # only 9 is free: its one place
    assert len(set(dihedral[:8].tolist())) == 8 and np.array_equal(dihedral[8:16], dihedral[:8])
