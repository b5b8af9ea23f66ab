"""Recomputed blocks (`remat=True`) draw the forward pass's dropout and
drop-path masks: the same loss and gradients as without remat, from the same
random state (`tests/remat_gradients.py`; JAX and PyTorch in
`tests/models/test_backends.py`)."""

import keras
import numpy as np
import pytest

from tfvitmae.models.layers import ViTMAEBlock

from ..remat_gradients import TENSORFLOW_CELLS, compare


@pytest.mark.parametrize("kind, cell, dtype", TENSORFLOW_CELLS)
def test_remat_gives_the_same_loss_and_gradients_with_dropout(kind, cell, dtype):
    result = compare(kind, cell, dtype)
    assert result["agree"], result


def test_drawn_seeds_give_the_masks_the_generators_would():
    """`draw_seeds()` draws what a training call would, and advances the
    generators alike: a call given them repeats the call that draws its own."""
    block = ViTMAEBlock(
        hidden_size=8,
        num_heads=2,
        intermediate_size=12,
        hidden_dropout=0.3,
        attention_dropout=0.3,
        drop_path=0.5,
        seed=3,
    )
    x = np.random.default_rng(0).normal(size=(16, 5, 8)).astype("float32")
    block(x)
    states = [v for v in block.variables if "seed_generator_state" in v.path]

    def read():
        return np.array([keras.ops.convert_to_numpy(v) for v in states])

    start = read()
    own = keras.ops.convert_to_numpy(block(x, training=True)[0])
    after = read()
    assert len(states) == 4 and not np.array_equal(after, start)
    for variable, value in zip(states, start):
        variable.assign(value)
    seeds = block.draw_seeds()
    np.testing.assert_array_equal(read(), after)
    drawn = keras.ops.convert_to_numpy(block(x, training=True, seeds=seeds)[0])
    np.testing.assert_array_equal(read(), after)  # nothing drawn twice
    np.testing.assert_array_equal(drawn, own)
    again = keras.ops.convert_to_numpy(block(x, training=True, seeds=seeds)[0])
    np.testing.assert_array_equal(again, own)
