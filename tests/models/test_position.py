import numpy as np
import pytest
import tensorflow as tf

from tfvitmae.models.layers import (
    bicubic_resize_matrix,
    resize_position_table,
    sincos_position_table,
)

from ..helpers import max_diff


def test_sincos_table_layout():
    rows, cols, dim = 3, 5, 16
    table = sincos_position_table((rows, cols), dim)
    assert table.shape == (1 + rows * cols, dim) and table.dtype == np.float32
    assert not table[0].any()  # CLS row
    omega = 1.0 / 10000 ** (np.arange(4) / 4)
    for r in range(rows):
        for c in range(cols):
            row = table[1 + r * cols + c]
            # first half: column coordinate; second half: row coordinate
            np.testing.assert_allclose(row[:4], np.sin(c * omega), atol=1e-7)
            np.testing.assert_allclose(row[4:8], np.cos(c * omega), atol=1e-7)
            np.testing.assert_allclose(row[8:12], np.sin(r * omega), atol=1e-7)
            np.testing.assert_allclose(row[12:], np.cos(r * omega), atol=1e-7)
    assert sincos_position_table((rows, cols), dim, cls_token=False).shape == (rows * cols, dim)
    with pytest.raises(ValueError, match="divisible by 4, received 18"):
        sincos_position_table((2, 2), 18)


def test_sincos_table_matches_transformers():
    from transformers.models.vit_mae import modeling_vit_mae as hf

    pos = hf.build_2d_sinusoidal_position_embedding(4, 4, embed_dim=32, cls_token=True).numpy()
    half = pos.shape[-1] // 2  # transformers rotates the halves to the MAE checkpoint layout
    pos = np.concatenate([pos[:, half:], pos[:, :half]], axis=1)
    assert max_diff(sincos_position_table((4, 4), 32), pos) < 1e-7


@pytest.mark.parametrize("in_size, out_size", [(4, 4), (4, 7), (6, 3), (14, 16), (1, 5), (5, 1)])
def test_bicubic_matrix_matches_torch(in_size, out_size):
    import torch

    x = np.random.default_rng(0).normal(size=(in_size, 3))
    expected = (
        torch.nn.functional.interpolate(
            torch.from_numpy(x.T[None, :, None, :]),
            size=(1, out_size),
            mode="bicubic",
            align_corners=False,
        )[0, :, 0]
        .numpy()
        .T
    )
    assert max_diff(bicubic_resize_matrix(in_size, out_size) @ x, expected) < 1e-12


def test_resize_position_table_2d_matches_torch():
    import torch

    table = np.random.default_rng(0).normal(size=(1, 1 + 3 * 3, 8)).astype("float32")
    out = resize_position_table(tf.constant(table), (3, 3), (4, 6)).numpy()
    grid = torch.from_numpy(table[0, 1:].reshape(3, 3, 8)).permute(2, 0, 1)[None]
    ref = torch.nn.functional.interpolate(grid, size=(4, 6), mode="bicubic", align_corners=False)
    ref = ref[0].permute(1, 2, 0).reshape(-1, 8).numpy()
    assert out.shape == (1, 25, 8)
    assert max_diff(out[0, 0], table[0, 0]) == 0
    assert max_diff(out[0, 1:], ref) < 1e-5
    assert resize_position_table(table, (3, 3), (3, 3)) is table
