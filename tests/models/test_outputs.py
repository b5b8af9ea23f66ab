import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvitmae.models.pretrained import TFViTMAEForPreTrainingOutput, TFViTMAEModelOutput


def test_fields_left_at_none_are_absent():
    out = TFViTMAEModelOutput(last_hidden_state=1, mask=2, ids_restore=3, attentions=(4,))
    assert list(out) == ["last_hidden_state", "mask", "ids_restore", "attentions"]
    assert out.hidden_states is None and "hidden_states" not in out
    assert out.to_tuple() == (1, 2, 3, (4,)) and out[3] == (4,) and out[1:3] == (2, 3)
    assert out["mask"] == 2 and out.mask == 2
    with pytest.raises(KeyError):
        out["hidden_states"]
    with pytest.raises(AttributeError, match="has no attribute 'logits'"):
        _ = out.logits


def test_fields_keep_their_declared_order():
    out = TFViTMAEForPreTrainingOutput(mask=2, loss=0, logits=1)
    assert list(out) == ["loss", "logits", "mask"]
    with pytest.raises(TypeError, match=r"has no fields \['pixels'\]"):
        TFViTMAEForPreTrainingOutput(loss=0, pixels=1)


def test_tree_libraries_traverse_outputs():
    out = TFViTMAEModelOutput(last_hidden_state=np.ones(2), mask=np.zeros(2))
    doubled = keras.tree.map_structure(lambda x: x * 2, out)
    assert type(doubled) is TFViTMAEModelOutput and list(doubled) == ["last_hidden_state", "mask"]
    np.testing.assert_array_equal(doubled.last_hidden_state, [2, 2])
    assert len(keras.tree.flatten(out)) == 2
    nested = tf.nest.map_structure(lambda x: x + 1, out)
    assert type(nested) is TFViTMAEModelOutput
    np.testing.assert_array_equal(nested.mask, [1, 1])
