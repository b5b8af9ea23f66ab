import numpy as np

from tfvitmae.models import layers as patches

from ..helpers import max_diff, numpy_patchify


def images(batch=2, height=16, width=24, channels=3, seed=0):
    """Channels-last float32 images."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, height, width, channels)).astype("float32")


def test_patchify_matches_loops_and_unpatchify_inverts():
    for channels in (1, 3, 4):
        x = images(channels=channels)
        out = patches.patchify(x, (8, 8))
        assert out.shape == (2, 6, 8 * 8 * channels)
        assert max_diff(out, numpy_patchify(np.transpose(x, (0, 3, 1, 2)), 8)) == 0
        assert (
            max_diff(patches.unpatchify(out, (8, 8), image_size=(16, 24), channels=channels), x)
            == 0
        )


def test_non_square_patches():
    x = images(height=8, width=12, channels=2)
    out = np.asarray(patches.patchify(x, (4, 6)))
    assert out.shape == (2, 4, 4 * 6 * 2)
    np.testing.assert_array_equal(out[:, 3], x[:, 4:8, 6:12].reshape(2, -1))  # (row, col, channel)
    assert max_diff(patches.unpatchify(out, (4, 6), image_size=(8, 12), channels=2), x) == 0


def test_patch_targets_normalise_with_unbiased_variance():
    x = images()
    plain, stats = patches.patch_targets(x, (8, 8), norm_pix_loss=False)
    assert stats is None and max_diff(plain, patches.patchify(x, (8, 8))) == 0
    target, (mean, std) = patches.patch_targets(x, (8, 8), norm_pix_loss=True)
    reference = numpy_patchify(np.transpose(x, (0, 3, 1, 2)).astype(np.float64), 8)
    expected_std = np.sqrt(reference.var(-1, ddof=1, keepdims=True) + patches.NORM_PIX_EPS)
    assert max_diff(mean, reference.mean(-1, keepdims=True)) < 1e-5
    assert max_diff(std, expected_std) < 1e-5
    assert max_diff(target, (reference - reference.mean(-1, keepdims=True)) / expected_std) < 1e-4


def test_per_patch_error_and_masked_mean():
    x = images()
    target = np.asarray(patches.patchify(x, (8, 8)))
    logits = target + np.arange(6, dtype="float32")[None, :, None]  # error k**2 on patch k
    error = np.asarray(patches.per_patch_error(x, logits, (8, 8), norm_pix_loss=False))
    np.testing.assert_allclose(error, np.tile(np.arange(6.0) ** 2, (2, 1)), rtol=1e-5)
    mask = np.array([[1, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 1]], "float32")
    assert abs(float(patches.masked_mean(error, mask)) - (0 + 4 + 25) / 3) < 1e-4
    np.testing.assert_allclose(patches.masked_mean(error, mask, axis=1), [2.0, 25.0], rtol=1e-5)
    # nothing removed: 0, not NaN
    assert float(patches.masked_mean(error, np.zeros_like(mask))) == 0.0
