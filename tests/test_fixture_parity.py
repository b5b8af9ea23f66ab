"""Parity with transformers' PyTorch ViTMAE from committed reference outputs.

The checkpoint and outputs in tests/fixtures/tiny_vit_mae were written by
tests/fixtures/make_reference.py with transformers; this test needs no torch.
"""

import pathlib

import numpy as np
import pytest

from tfvitmae import TFViTMAEForPreTraining, TFViTMAEModel

from .helpers import max_diff

FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "tiny_vit_mae"


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(FIXTURE / "reference.npz"))


def entries(reference, key):
    return [reference[f"{key}_{i}"] for i in range(len([k for k in reference if k.startswith(key + "_")]))]


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_pretraining_outputs_match_the_committed_reference(reference, attn_implementation):
    model = TFViTMAEForPreTraining.from_pretrained(FIXTURE, attn_implementation=attn_implementation)
    assert model.config.norm_pix_loss
    out = model(reference["pixel_values"], noise=reference["noise"], output_hidden_states=True)
    assert abs(float(out.loss) - float(reference["loss"])) < 1e-5
    assert max_diff(out.logits, reference["logits"]) < 1e-5
    np.testing.assert_array_equal(out.mask, reference["mask"])
    np.testing.assert_array_equal(out.ids_restore, reference["ids_restore"])
    hidden = entries(reference, "hidden_states")
    assert len(hidden) == 3 and len(out.hidden_states) == 3
    for ours, theirs in zip(out.hidden_states, hidden):
        assert max_diff(ours, theirs) < 1e-5
    attentions = model(reference["pixel_values"], noise=reference["noise"], output_attentions=True).attentions
    for ours, theirs in zip(attentions, entries(reference, "attentions")):
        assert max_diff(ours, theirs) < 1e-5


def test_interpolated_non_square_outputs_match(reference):
    model = TFViTMAEForPreTraining.from_pretrained(FIXTURE)
    out = model(reference["pixel_values_wide"], noise=reference["noise_wide"], interpolate_pos_encoding=True)
    assert out.logits.shape == reference["wide_logits"].shape == (1, 15, 192)
    assert abs(float(out.loss) - float(reference["wide_loss"])) < 1e-5
    assert max_diff(out.logits, reference["wide_logits"]) < 1e-5


def test_encoder_from_pretraining_checkpoint(reference):
    with pytest.warns(UserWarning, match="Ignored .* parts this model does not have"):
        encoder = TFViTMAEModel.from_pretrained(FIXTURE)
    out = encoder(reference["pixel_values"], noise=reference["noise"], output_hidden_states=True)
    # The reference's last hidden state before the final LayerNorm is hidden_states[-1].
    assert max_diff(out.hidden_states[-1], reference["hidden_states_2"]) < 1e-5
