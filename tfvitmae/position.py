"""The fixed 2-D sin-cos position tables of MAE, and their PyTorch-exact
bicubic resize for other input resolutions (`interpolate_pos_encoding`)."""

import math

import numpy as np
from keras import ops


def sincos_position_table(grid_size, dim, cls_token=True):
    """The MAE 2-D sin-cos position table, as float32 NumPy.

    The first `dim / 2` channels encode the column (width) coordinate and the
    last `dim / 2` the row, each as `[sin(pos * omega), cos(pos * omega)]` with
    `omega_i = 1 / 10000 ** (i / (dim / 4))`; computed in float64 like PyTorch.

    Args:
        grid_size: `(rows, cols)` of the patch grid.
        dim: Table width, divisible by 4.
        cls_token: Prepend an all-zero row for the CLS token.

    Returns:
        Array of shape `(rows * cols [+ 1], dim)`, rows in row-major patch order.
    """
    rows, cols = grid_size
    if dim % 4:
        raise ValueError(f"The sin-cos table width must be divisible by 4, received {dim}")
    omega = 1.0 / 10000.0 ** (np.arange(dim // 4, dtype=np.float64) / (dim // 4))
    row, col = np.meshgrid(
        np.arange(rows, dtype=np.float64), np.arange(cols, dtype=np.float64), indexing="ij"
    )

    def encode(pos):
        angles = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    table = np.concatenate([encode(col), encode(row)], axis=1)
    if cls_token:
        table = np.concatenate([np.zeros((1, dim)), table], axis=0)
    return table.astype(np.float32)


def _cubic_weights(t, a=-0.75):
    """PyTorch's cubic-convolution weights for offsets -1, 0, 1, 2."""

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return (far(t + 1), near(t), near(1 - t), far(2 - t))


def bicubic_resize_matrix(in_size, out_size):
    """Matrix `R` of shape `(out_size, in_size)` with `R @ x` equal to PyTorch's
    `F.interpolate(mode="bicubic", align_corners=False)` along one axis.

    `tf.image.resize` uses a different cubic kernel (a = -0.5) and edge handling,
    so parity with PyTorch needs this explicit form (a = -0.75, clamped edges).
    """
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    scale = in_size / out_size
    for out_index in range(out_size):
        source = (out_index + 0.5) * scale - 0.5
        base = math.floor(source)
        for offset, weight in zip((-1, 0, 1, 2), _cubic_weights(source - base)):
            matrix[out_index, min(max(base + offset, 0), in_size - 1)] += weight
    return matrix


def resize_position_table(table, grid_size, new_grid_size):
    """Resize a `(1, 1 + rows * cols, dim)` table to a new patch grid.

    The CLS row is kept; the patch rows are resized as an image with PyTorch's
    bicubic kernel (a constant matrix product, so it also runs under XLA).
    """
    if tuple(grid_size) == tuple(new_grid_size):
        return table
    (rows, cols), (new_rows, new_cols) = grid_size, new_grid_size
    dim = table.shape[-1]
    resize = np.kron(bicubic_resize_matrix(rows, new_rows), bicubic_resize_matrix(cols, new_cols))
    patches = ops.reshape(table[0, 1:], (rows * cols, dim))
    patches = ops.matmul(
        ops.convert_to_tensor(resize.astype(np.float32), dtype=table.dtype), patches
    )
    return ops.concatenate([table[:, :1], patches[None]], axis=1)
