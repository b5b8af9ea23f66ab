"""The building blocks of ViTMAE, as Keras layers and ops.

Read top to bottom, this is the model below the encoder and decoder stacks
(`vit_mae.py`): the activations, the seeds of the random sub-layers, the
fixed 2-D sin-cos position tables, multi-head attention, the patch
embedding, MAE's random masking (and the one way a seed becomes masking
noise), the MLP, stochastic depth, the pre-norm transformer block, and the
pixel side: `patchify`, the (normalised) pixel targets and the masked-patch
loss.
"""

import math
import warnings
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from ..utils.types import TensorLike

__all__ = [
    "ACTIVATIONS",
    "ATTENTION_IMPLEMENTATIONS",
    "FUSED_ATTENTION_BACKENDS",
    "NORM_PIX_EPS",
    "DropPath",
    "Dropout",
    "PatchEmbedding",
    "QKVProjection",
    "RandomMasking",
    "ViTMAEAttention",
    "ViTMAEBlock",
    "ViTMAEMLP",
    "all_finite",
    "bicubic_resize_matrix",
    "check_attn_implementation",
    "draw_seed",
    "fused_attention_kernel",
    "gather_rows",
    "get_activation",
    "is_eager",
    "masked_mean",
    "masking_noise",
    "patch_targets",
    "patchify",
    "per_patch_error",
    "resize_position_table",
    "set_attn_implementation",
    "sincos_position_table",
    "sub_seed",
    "unpatchify",
]


# ----------------------------------------------------------------------
# Activations (Hugging Face `hidden_act` names) and eager-value checks
# ----------------------------------------------------------------------


def gelu(x: TensorLike) -> TensorLike:
    """The exact erf GELU: Hugging Face's (and PyTorch's) `"gelu"`; Keras'
    `gelu` defaults to the tanh approximation, hence `approximate=False`.

    16-bit inputs on TensorFlow are computed in float32 and cast back, as
    PyTorch's and XLA's kernels do inside: TensorFlow's CPU `Erfc` on
    bfloat16 runs element by element: 123 ms against 16 ms per ViT-B forward
    (the op profile of `benchmarks/breakdown.py --precision bf16`)."""
    dtype = keras.backend.standardize_dtype(x.dtype)
    if dtype in ("bfloat16", "float16") and keras.backend.backend() == "tensorflow":
        return ops.cast(ops.gelu(ops.cast(x, "float32"), approximate=False), dtype)
    return ops.gelu(x, approximate=False)


def gelu_tanh(x: TensorLike) -> TensorLike:
    """The tanh approximation of GELU (`"gelu_new"` and its aliases)."""
    inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * ops.power(x, 3))
    return 0.5 * x * (1.0 + ops.tanh(inner))


def quick_gelu(x: TensorLike) -> TensorLike:
    """`x * sigmoid(1.702 x)`."""
    return x * ops.sigmoid(1.702 * x)


# Hugging Face name -> function (`ViTMAEConfig.ACTIVATION_NAMES` lists the same names).
ACTIVATIONS: dict[str, Callable[[TensorLike], TensorLike]] = {
    "gelu": gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_fast": gelu_tanh,
    "quick_gelu": quick_gelu,
    "relu": ops.relu,
    "silu": ops.silu,
    "swish": ops.silu,
    "tanh": ops.tanh,
    "sigmoid": ops.sigmoid,
}


def get_activation(name: str) -> Callable[[TensorLike], TensorLike]:
    """The function for a Hugging Face `hidden_act` name."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"hidden_act must be one of {sorted(ACTIVATIONS)}, received {name!r}"
        ) from None


def is_eager(x: TensorLike) -> bool:
    """Whether `x` holds values now (not a symbol of a graph being traced):
    the finite-value checks run only then."""
    if isinstance(x, keras.KerasTensor):
        return False
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.executing_eagerly()
    if backend == "jax":
        import jax

        return not isinstance(x, jax.core.Tracer)
    return True


def all_finite(x: TensorLike) -> bool:
    """Whether every value of the eager tensor `x` is finite."""
    return bool(ops.all(ops.isfinite(ops.cast(x, "float32"))))


# ----------------------------------------------------------------------
# Seeds of the random sub-layers
# ----------------------------------------------------------------------


def sub_seed(seed: int | None, name: str) -> int | None:
    """A seed for the sub-layer `name` of a layer seeded with `seed`.

    Distinct names give distinct, repeatable seeds: two dropouts of the same
    shape sharing one seed would draw identical masks at every step.
    `None` (unseeded) stays `None`.
    """
    if seed is None:
        return None
    return zlib.crc32(f"{seed}/{name}".encode()) % (2**31 - 1)


class _DrawnSeed(keras.random.SeedGenerator):
    """A seed already drawn from `generator`, given to `keras.random` in its
    place: `next()` returns that seed and advances nothing, so a call run
    twice (as `keras.remat` recomputes a block in the backward pass) draws the
    same numbers both times."""

    def __init__(self, value: TensorLike, generator: keras.random.SeedGenerator):
        # No state variable of its own; Keras' PyTorch dropout reads `_initial_seed`.
        self.name, self.backend = generator.name, generator.backend
        self._initial_seed = generator._initial_seed
        self.value = value

    def next(self, ordered: bool = True) -> TensorLike:
        return self.value


def draw_seed(layer: "Dropout | DropPath") -> TensorLike | None:
    """Draw now the seed that `layer`'s next training call would draw,
    advancing its generator as that call would; `None` when it draws none
    from it. Giving it back to the call (`seed=`) draws that call's mask."""
    if layer.rate == 0:
        return None
    generator = layer.seed_generator
    if (
        isinstance(layer, keras.layers.Dropout)
        and keras.backend.backend() == "torch"
        and generator._initial_seed is None
    ):
        return None  # Keras' PyTorch dropout, unseeded, draws from torch's RNG instead
    return generator.next()


def _seed_source(layer, seed):
    """What `layer` hands `keras.random`: the drawn `seed`, else its generator."""
    return layer.seed_generator if seed is None else _DrawnSeed(seed, layer.seed_generator)


@keras.saving.register_keras_serializable(package="tfvitmae")
class Dropout(keras.layers.Dropout):
    """`keras.layers.Dropout` whose call can also take a seed drawn beforehand
    (`seed`, from `draw_seed(layer)`) to draw its mask from."""

    def call(
        self, inputs: TensorLike, training: bool = False, seed: TensorLike | None = None
    ) -> TensorLike:
        if seed is None or not training or self.rate == 0:
            return super().call(inputs, training=training)
        return keras.random.dropout(
            inputs, self.rate, noise_shape=self.noise_shape, seed=_seed_source(self, seed)
        )


# ----------------------------------------------------------------------
# The fixed 2-D sin-cos position tables
# ----------------------------------------------------------------------


def sincos_position_table(
    grid_size: tuple[int, int], dim: int, cls_token: bool = True
) -> np.ndarray:
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


def bicubic_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
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


def resize_position_table(
    table: TensorLike, grid_size: Sequence[int], new_grid_size: Sequence[int]
) -> TensorLike:
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


# ----------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------

ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")


def check_attn_implementation(value: str) -> str:
    """Return `value` if it is a known attention path, else raise `ValueError`."""
    if value not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(
            f"attn_implementation must be one of {ATTENTION_IMPLEMENTATIONS}, received {value!r}"
        )
    return value


# Where `keras.ops.dot_product_attention` runs a fused kernel that beat the
# explicit matmuls in `benchmarks/attention.py` (results and the machines
# they came from: `benchmarks/results/attention_*`): a backend, or
# "jax:<platform>". TensorFlow has no fused kernel (its op is an einsum chain).
FUSED_ATTENTION_BACKENDS = ("torch", "jax:gpu")


def fused_attention_kernel() -> bool:
    """Whether `"sdpa"` attention uses the fused kernel on this backend."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        backend = f"jax:{jax.default_backend()}"
    return backend in FUSED_ATTENTION_BACKENDS


@keras.saving.register_keras_serializable(package="tfvitmae")
class QKVProjection(keras.layers.Layer):
    """The fused query/key/value projection, split into heads.

    Its kernel is the matrix `(hidden_size, 3 * hidden_size)`, columns
    `[q | k | v]` with the heads in order in each: what a Dense layer holds, and
    what files, state dicts and exports hold.

    Built under `keras.distribution.ModelParallel`, it holds the same values as
    `(hidden_size, 3, num_heads, head_dim)`, so that the layout map
    (`get_layout_map`) can shard the heads axis and give each device whole
    heads' query, key and value columns. A sharding cuts an axis into
    contiguous blocks: cut along the matrix's columns, one of two devices would
    hold the queries and half the keys, and every block would move activations
    between devices to regroup them by head. Elsewhere the kernel stays the
    matrix, so what reads `qkv.kernel` keeps its layout. `save_own_variables`
    writes the matrix from either shape; `load_own_variables` reads it into
    either.

    Args:
        hidden_size: Input width, and the width of each of q, k and v.
        num_heads: Attention heads; must divide `hidden_size`.
        use_bias: Whether the projection has a bias, `(3 * hidden_size,)`.
        kernel_initializer: Initializer of the matrix (called with its 2-D
            shape in either layout, so both draw the same values).

    Call arguments:
        hidden_states: `(batch, seq, hidden_size)`.

    Returns:
        `(batch, seq, 3, num_heads, head_dim)`: queries, keys and values.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        use_bias: bool = True,
        kernel_initializer: keras.initializers.Initializer | str = "glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hidden_size % num_heads:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by num_heads, received {num_heads}"
            )
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.matrix_shape = (hidden_size, 3 * hidden_size)

    def build(self, input_shape: tuple | None = None) -> None:
        # Decided here, where the variable is made: its layout is decided then too.
        by_heads = isinstance(keras.distribution.distribution(), keras.distribution.ModelParallel)
        shape = (self.hidden_size, 3, self.num_heads, self.head_dim) if by_heads else None
        self.kernel = self.add_weight(
            name="kernel",
            shape=shape or self.matrix_shape,
            initializer=self._initialize_kernel,
        )
        self.bias = (
            self.add_weight(name="bias", shape=(3 * self.hidden_size,), initializer="zeros")
            if self.use_bias
            else None
        )

    def _initialize_kernel(self, shape, dtype=None):
        return ops.reshape(self.kernel_initializer(self.matrix_shape, dtype=dtype), shape)

    @property
    def by_heads(self) -> bool:
        """Whether the kernel is held as `(hidden_size, 3, num_heads, head_dim)`."""
        return len(self.kernel.shape) == 4

    def call(self, hidden_states: TensorLike) -> TensorLike:
        split = (3, self.num_heads, self.head_dim)
        if self.by_heads:  # one contraction, no reshape of the sharded kernel
            qkv = ops.tensordot(hidden_states, self.kernel, axes=1)
            return qkv if self.bias is None else qkv + ops.reshape(self.bias, split)
        qkv = ops.matmul(hidden_states, self.kernel)  # as a Dense layer computes it
        qkv = qkv if self.bias is None else qkv + self.bias
        batch, length = ops.shape(hidden_states)[0], ops.shape(hidden_states)[1]
        return ops.reshape(qkv, (batch, length) + split)

    def save_own_variables(self, store: Any) -> None:
        """Write the kernel as the matrix, whatever shape it is held in."""
        store["0"] = (
            np.reshape(ops.convert_to_numpy(self.kernel), self.matrix_shape)
            if self.by_heads
            else self.kernel
        )
        if self.bias is not None:
            store["1"] = self.bias

    def load_own_variables(self, store: Any) -> None:
        """Read the matrix `save_own_variables` wrote into the kernel's shape."""
        expected = 2 if self.use_bias else 1
        if len(store.keys()) != expected:
            raise ValueError(
                f"Layer {self.path!r} expects {expected} variables (the kernel"
                f"{' and the bias' if self.use_bias else ''}), but the file holds "
                f"{len(store.keys())}"
            )
        kernel = np.asarray(store["0"])
        if kernel.shape != self.matrix_shape:
            raise ValueError(
                f"Layer {self.path!r}: the file's kernel has shape {kernel.shape}, expected "
                f"the matrix {self.matrix_shape}"
            )
        self.kernel.assign(np.reshape(kernel, self.kernel.shape))
        if self.bias is not None:
            self.bias.assign(store["1"])

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            hidden_size=self.hidden_size,
            num_heads=self.num_heads,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="tfvitmae")
class ViTMAEAttention(keras.layers.Layer):
    """Multi-head self-attention with one fused query/key/value projection.

    Two paths give the same numbers (within float rounding):
    - the kernel, `keras.ops.dot_product_attention`: no probabilities, so it
      runs only for `attn_implementation="sdpa"` on the backends in
      `FUSED_ATTENTION_BACKENDS`, without `output_attentions`, `head_mask`
      or attention dropout in training;
    - the explicit matmuls (`_matmul_attention`), which compute the
      probabilities: every other call, and every call with `"eager"`.

    Args:
        hidden_size: Model width.
        num_heads: Attention heads; must divide `hidden_size`.
        qkv_bias: Whether the query/key/value projection has a bias.
        attention_dropout: Dropout rate on the attention probabilities.
        output_dropout: Dropout rate after the output projection.
        initializer_range: Stddev of the truncated-normal kernel init.
        attn_implementation: `"sdpa"` (default) or `"eager"`; switch later with
            `set_attn_implementation`.
        seed: Seed for the dropout layers.

    Call arguments:
        hidden_states: `(batch, seq, hidden_size)`.
        head_mask: Optional `(num_heads,)` multiplier of the probabilities.
        output_attentions: Whether to return the probabilities.
        training: Enables dropout.
        seeds: Optional `(probabilities' seed, output's seed)` drawn beforehand
            (`draw_seed`) for the two dropouts; each `None` draws afresh.

    Returns:
        `(output, probabilities)`: `(batch, seq, hidden_size)` and, when
        requested, `(batch, num_heads, seq, seq)`, else `None`.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        qkv_bias: bool = True,
        attention_dropout: float = 0.0,
        output_dropout: float = 0.0,
        initializer_range: float = 0.02,
        attn_implementation: str = "sdpa",
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hidden_size % num_heads:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by num_heads, received {num_heads}"
            )
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.qkv_bias = qkv_bias
        self.attention_dropout = attention_dropout
        self.output_dropout = output_dropout
        self.initializer_range = initializer_range
        self.attn_implementation = check_attn_implementation(attn_implementation)
        self.seed = seed
        init = keras.initializers.TruncatedNormal(stddev=initializer_range)
        self.qkv = QKVProjection(
            hidden_size,
            num_heads,
            use_bias=qkv_bias,
            kernel_initializer=init,
            name="qkv",
            dtype=self.dtype_policy,
        )
        self.output_dense = keras.layers.Dense(
            hidden_size, kernel_initializer=init, name="output", dtype=self.dtype_policy
        )
        self.probs_dropout = Dropout(
            attention_dropout, seed=sub_seed(seed, "probs_dropout"), dtype=self.dtype_policy
        )
        self.dropout = Dropout(
            output_dropout, seed=sub_seed(seed, "dropout"), dtype=self.dtype_policy
        )

    def build(self, input_shape: tuple | None = None) -> None:
        self.qkv.build((None, None, self.hidden_size))
        self.output_dense.build((None, None, self.hidden_size))

    def call(
        self,
        hidden_states: TensorLike,
        head_mask: TensorLike | None = None,
        output_attentions: bool = False,
        training: bool = False,
        seeds: tuple[TensorLike | None, TensorLike | None] | None = None,
    ) -> tuple[TensorLike, TensorLike | None]:
        probs_seed, output_seed = seeds or (None, None)
        batch, length = ops.shape(hidden_states)[0], ops.shape(hidden_states)[1]
        qkv = self.qkv(hidden_states)  # (batch, seq, 3, heads, head_dim)
        if self._kernel_applies(head_mask, output_attentions, training):
            query, key, value = ops.unstack(qkv, 3, axis=2)
            context, probs = ops.dot_product_attention(query, key, value), None
        else:
            context, probs = self._matmul_attention(qkv, head_mask, training, probs_seed)
        context = ops.reshape(context, (batch, length, self.hidden_size))
        output = self.dropout(self.output_dense(context), training=training, seed=output_seed)
        return output, (probs if output_attentions else None)

    def _kernel_applies(self, head_mask, output_attentions, training) -> bool:
        """Whether the fused kernel computes this call: it returns no
        probabilities, so it cannot mask heads or drop them out."""
        return (
            self.attn_implementation == "sdpa"
            and fused_attention_kernel()
            and head_mask is None
            and not output_attentions
            and not (training and self.attention_dropout > 0)
        )

    def _matmul_attention(self, qkv, head_mask, training, seed=None):
        """Softmax attention with explicit probabilities, as batched matmuls in
        the `(batch, heads, seq, head_dim)` layout: one transpose splits q, k
        and v, and matmul -> softmax -> matmul is the pattern oneDNN runs best
        on CPU and XLA's fused-attention rewrite matches on GPU."""
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))  # (3, batch, heads, seq, head_dim)
        # Unstacked, not indexed: the gradient is then one stack, where three
        # slices' gradients each write a zero-filled (3, ...) tensor and add
        # them (6.5% of a ViT-B step's op time without XLA).
        query, key, value = ops.unstack(qkv, 3, axis=0)
        query = query * ops.cast(self.head_dim**-0.5, query.dtype)
        logits = ops.matmul(query, ops.transpose(key, (0, 1, 3, 2)))
        # Softmax in float32 under mixed precision, then dropout and head mask.
        probs = ops.cast(ops.softmax(ops.cast(logits, "float32"), axis=-1), query.dtype)
        probs = self.probs_dropout(probs, training=training, seed=seed)
        if head_mask is not None:
            probs = probs * ops.cast(ops.reshape(head_mask, (1, -1, 1, 1)), probs.dtype)
        context = ops.matmul(probs, value)  # (batch, heads, seq, head_dim)
        return ops.transpose(context, (0, 2, 1, 3)), probs

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            hidden_size=self.hidden_size,
            num_heads=self.num_heads,
            qkv_bias=self.qkv_bias,
            attention_dropout=self.attention_dropout,
            output_dropout=self.output_dropout,
            initializer_range=self.initializer_range,
            attn_implementation=self.attn_implementation,
            seed=self.seed,
        )
        return config


def set_attn_implementation(layer: keras.layers.Layer, value: str) -> None:
    """Switch every `ViTMAEAttention` in `layer` (a model, a stack, a block or
    one attention layer) to `value`, `"sdpa"` or `"eager"`. Weights are
    shared by both paths, so switching is free."""
    check_attn_implementation(value)
    for sublayer in layer._flatten_layers(include_self=True):
        if isinstance(sublayer, ViTMAEAttention):
            sublayer.attn_implementation = value


# ----------------------------------------------------------------------
# Embedding, masking, MLP, stochastic depth, the block
# ----------------------------------------------------------------------


def _dense_init(initializer_range):
    return keras.initializers.TruncatedNormal(stddev=initializer_range)


@keras.saving.register_keras_serializable(package="tfvitmae")
class PatchEmbedding(keras.layers.Layer):
    """Split images into patches and project each to `hidden_size`.

    A Conv2D with kernel = stride = patch size, initialised like a Dense layer
    on the flattened patch (Xavier-uniform), as in MAE.

    Args:
        hidden_size: Output width.
        patch_size: `(height, width)` of a patch.
        num_channels: Input channels.

    Call arguments:
        images: Channels-last images `(batch, height, width, num_channels)`.

    Returns:
        `(batch, num_patches, hidden_size)`, patches in row-major order.
    """

    def __init__(self, hidden_size: int, patch_size: Sequence[int], num_channels: int, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size = hidden_size
        self.patch_size = tuple(patch_size)
        self.num_channels = num_channels
        fan_in = self.patch_size[0] * self.patch_size[1] * num_channels
        fan_out_conv = self.patch_size[0] * self.patch_size[1] * hidden_size
        # Keras' Glorot counts the receptive field in fan_out too; MAE's Xavier on
        # the flattened (out, in*p*p) view does not, hence the rescaling.
        scale = (fan_in + fan_out_conv) / (fan_in + hidden_size)
        self.projection = keras.layers.Conv2D(
            hidden_size,
            kernel_size=self.patch_size,
            strides=self.patch_size,
            padding="valid",
            data_format="channels_last",
            kernel_initializer=keras.initializers.VarianceScaling(scale, "fan_avg", "uniform"),
            name="projection",
            dtype=self.dtype_policy,
        )

    def build(self, input_shape: tuple | None = None) -> None:
        self.projection.build((None, None, None, self.num_channels))

    def call(self, images: TensorLike) -> TensorLike:
        patches = self.projection(images)
        batch = ops.shape(patches)[0]
        # The grid from the images: TensorFlow's eager convolution of an empty
        # batch returns the input's shape, not the strided one.
        rows, cols = images.shape[1] // self.patch_size[0], images.shape[2] // self.patch_size[1]
        return ops.reshape(patches, (batch, rows * cols, self.hidden_size))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            hidden_size=self.hidden_size, patch_size=self.patch_size, num_channels=self.num_channels
        )
        return config


def gather_rows(sequence: TensorLike, indices: TensorLike) -> TensorLike:
    """`sequence[b, indices[b]]` for each row `b`: `(batch, n, dim)` by
    `(batch, k)` -> `(batch, k, dim)`."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # one gather, without take_along_axis's broadcast index

        return tf.gather(sequence, indices, batch_dims=1)
    return ops.take_along_axis(sequence, ops.expand_dims(indices, -1), axis=1)


def masking_noise(
    seed: int | TensorLike,
    batch_size: int | TensorLike,
    num_patches: int,
    start: int | TensorLike = 0,
) -> TensorLike:
    """The masking noise a `seed` stands for: the one way a seed becomes a mask.

    Image `start + i` of a batch gets uniform noise drawn from `(seed, start +
    i)` alone, so its mask does not depend on how the images are batched. On
    TensorFlow that is `tf.random.stateless_uniform((num_patches,), seed=(seed,
    start + i))`, eagerly and in graphs (`seed`, `batch_size` and `start` may
    be tensors), so `predict_images`, the SavedModel's `*_with_seed`
    signatures and the reconstruction grids agree. Other backends draw
    `keras.random.uniform` from a seed mixed of the two (Python integers);
    their masks differ from TensorFlow's, while explicit `noise` gives the
    same outputs on every backend.

    Returns:
        float32 `(batch_size, num_patches)`.
    """
    if keras.backend.backend() != "tensorflow":
        first = int(start)
        rows = [
            keras.random.uniform((num_patches,), seed=sub_seed(int(seed), str(first + i)))
            for i in range(int(batch_size))
        ]
        return ops.stack(rows) if rows else ops.zeros((0, num_patches), "float32")
    import tensorflow as tf

    seed = tf.cast(seed, tf.int64)
    first = tf.cast(start, tf.int64)
    places = tf.range(first, first + tf.cast(batch_size, tf.int64))
    return tf.map_fn(
        lambda place: tf.random.stateless_uniform((num_patches,), seed=tf.stack([seed, place])),
        places,
        fn_output_signature=tf.TensorSpec((num_patches,), tf.float32),
    )


@keras.saving.register_keras_serializable(package="tfvitmae")
class RandomMasking(keras.layers.Layer):
    """MAE per-sample random masking by argsort of uniform noise.

    The `int(N * (1 - mask_ratio))` patches with the smallest noise are kept, in
    ascending-noise order. With `mask_ratio=0` and no `noise`, nothing is
    shuffled: the patches come back in their original order.

    Args:
        mask_ratio: Fraction of patches removed, in `[0, 1)`.
        seed: Seed of the layer's `keras.random.SeedGenerator`.

    Call arguments:
        sequence: `(batch, num_patches, dim)`.
        noise: Optional float `(batch, num_patches)`; makes masking deterministic.
        mask_ratio: Optional override of the layer's ratio for this call
            (`0.0` without `noise`: the unmasked sequence, in order).

    Returns:
        `(kept, mask, ids_restore)`: kept tokens `(batch, len_keep, dim)`, the
        float32 mask `(batch, num_patches)` with 1 for removed patches, and the
        int32 permutation `(batch, num_patches)` that restores the original order.
    """

    def __init__(self, mask_ratio: float = 0.75, seed: int | None = None, **kwargs):
        # No autocast: the noise decides the mask, and rounding it to 16 bits
        # under mixed precision would create ties that reorder patches.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if not 0 <= mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in [0, 1), received {mask_ratio}")
        self.mask_ratio = mask_ratio
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="seed_generator")

    def build(self, input_shape: tuple | None = None) -> None:
        pass

    def call(
        self, sequence: TensorLike, noise: TensorLike | None = None, mask_ratio: float | None = None
    ) -> tuple[TensorLike, TensorLike, TensorLike]:
        batch, length = ops.shape(sequence)[0], sequence.shape[1]
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        if not 0 <= ratio < 1:
            raise ValueError(f"mask_ratio must be in [0, 1), received {ratio}")
        len_keep = int(length * (1 - ratio))
        if len_keep < 1:  # (the config refuses such a ratio at its own image size)
            warnings.warn(
                f"mask_ratio {ratio} keeps no patch of {length}: the encoder sees only the CLS "
                f"token (at most {1 - 1 / length:.4g} keeps one)"
            )
        if noise is not None and is_eager(noise) and not all_finite(noise):
            raise ValueError("noise must be finite: it holds NaN or infinite values")
        if noise is None:
            if len_keep == length:
                order = ops.broadcast_to(ops.arange(length, dtype="int32")[None], (batch, length))
                return sequence, ops.zeros((batch, length), "float32"), order
            noise = keras.random.uniform((batch, length), seed=self.seed_generator)
        ids_shuffle = ops.cast(ops.argsort(noise, axis=1), "int32")
        ids_restore = ops.cast(ops.argsort(ids_shuffle, axis=1), "int32")
        kept = gather_rows(sequence, ids_shuffle[:, :len_keep])
        # A patch is removed when its rank in the shuffle is past len_keep.
        mask = ops.cast(ids_restore >= len_keep, "float32")
        return kept, mask, ids_restore

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(mask_ratio=self.mask_ratio, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="tfvitmae")
class ViTMAEMLP(keras.layers.Layer):
    """`Dense(intermediate) -> activation -> Dense(hidden) -> Dropout`.

    Args:
        hidden_size: Input and output width.
        intermediate_size: Hidden width.
        hidden_act: Hugging Face activation name (`"gelu"` is exact erf GELU).
        dropout: Dropout rate after the output projection.
        initializer_range: Stddev of the truncated-normal kernel init.
        seed: Seed for the dropout layer.

    Call arguments:
        hidden_states: `(batch, seq, hidden_size)`.
        training: Enables dropout.
        seed: Optional seed drawn beforehand (`draw_seed`) for the dropout.
    """

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        hidden_act: str = "gelu",
        dropout: float = 0.0,
        initializer_range: float = 0.02,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.dropout_rate = dropout
        self.initializer_range = initializer_range
        self.seed = seed
        self.activation = get_activation(hidden_act)
        init = _dense_init(initializer_range)
        self.intermediate = keras.layers.Dense(
            intermediate_size, kernel_initializer=init, name="intermediate", dtype=self.dtype_policy
        )
        self.output_dense = keras.layers.Dense(
            hidden_size, kernel_initializer=init, name="output", dtype=self.dtype_policy
        )
        self.dropout = Dropout(dropout, seed=sub_seed(seed, "dropout"), dtype=self.dtype_policy)

    def build(self, input_shape: tuple | None = None) -> None:
        self.intermediate.build((None, None, self.hidden_size))
        self.output_dense.build((None, None, self.intermediate_size))

    def call(
        self, hidden_states: TensorLike, training: bool = False, seed: TensorLike | None = None
    ) -> TensorLike:
        hidden_states = self.activation(self.intermediate(hidden_states))
        return self.dropout(self.output_dense(hidden_states), training=training, seed=seed)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            hidden_act=self.hidden_act,
            dropout=self.dropout_rate,
            initializer_range=self.initializer_range,
            seed=self.seed,
        )
        return config


@keras.saving.register_keras_serializable(package="tfvitmae")
class DropPath(keras.layers.Layer):
    """Stochastic depth: zero a residual branch for whole samples, scaling the
    kept ones by `1 / (1 - rate)`, in training only.

    The keep mask and the scaling are computed in float32 under any dtype
    policy: in bfloat16, `floor(keep + uniform)` rounds sums near 1 up (too
    many samples kept) and `keep` itself rounds (a biased scale).

    Args:
        rate: Probability of dropping the branch for a sample, in `[0, 1)`.
        seed: Seed of the layer's `keras.random.SeedGenerator`.

    Call arguments:
        branch: The residual branch, `(batch, ...)`.
        training: Enables the drop.
        seed: Optional seed drawn beforehand (`draw_seed`) for the mask.
    """

    def __init__(self, rate: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= rate < 1:
            raise ValueError(f"drop path rate must be in [0, 1), received {rate}")
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="seed_generator")

    def call(
        self, branch: TensorLike, training: bool = False, seed: TensorLike | None = None
    ) -> TensorLike:
        if not training or self.rate == 0:
            return branch
        keep = 1.0 - self.rate
        shape = (ops.shape(branch)[0],) + (1,) * (len(branch.shape) - 1)
        uniform = keras.random.uniform(shape, seed=_seed_source(self, seed), dtype="float32")
        scaled = ops.cast(branch, "float32") * ops.floor(keep + uniform) / keep
        return ops.cast(scaled, branch.dtype)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="tfvitmae")
class ViTMAEBlock(keras.layers.Layer):
    """Pre-norm transformer block: `x + Attn(LN(x))`, then `x + MLP(LN(x))`.

    Args:
        hidden_size, num_heads, intermediate_size, hidden_act, qkv_bias: Shape
            of the block (see `ViTMAEConfig`).
        hidden_dropout: Dropout after the attention and MLP output projections.
        attention_dropout: Dropout on the attention probabilities.
        layer_norm_eps: LayerNorm epsilon (always explicit; Keras' default
            of 1e-3 differs from every checkpoint).
        initializer_range: Stddev of the truncated-normal kernel init.
        attn_implementation: `"sdpa"` or `"eager"`.
        drop_path: Stochastic-depth rate of both residual branches (training only).
        seed: Seed for the dropout layers.

    Call arguments:
        hidden_states: `(batch, seq, hidden_size)`.
        head_mask: Optional `(num_heads,)` multiplier of the attention.
        output_attentions: Whether to return the attention probabilities.
        training: Enables dropout.
        seeds: Optional seeds of every random draw of the call, drawn
            beforehand by `draw_seeds()`: then the call is a function of its
            inputs (what `keras.remat` needs to recompute it).

    Returns:
        `(hidden_states, attention_probabilities or None)`.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        hidden_act: str = "gelu",
        qkv_bias: bool = True,
        hidden_dropout: float = 0.0,
        attention_dropout: float = 0.0,
        layer_norm_eps: float = 1e-12,
        initializer_range: float = 0.02,
        attn_implementation: str = "sdpa",
        drop_path: float = 0.0,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.drop_path_rate = drop_path
        self.hidden_act = hidden_act
        self.qkv_bias = qkv_bias
        self.hidden_dropout = hidden_dropout
        self.attention_dropout = attention_dropout
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.seed = seed
        self.layernorm_before = keras.layers.LayerNormalization(
            epsilon=layer_norm_eps, name="layernorm_before", dtype=self.dtype_policy
        )
        self.attention = ViTMAEAttention(
            hidden_size,
            num_heads,
            qkv_bias=qkv_bias,
            attention_dropout=attention_dropout,
            output_dropout=hidden_dropout,
            initializer_range=initializer_range,
            attn_implementation=attn_implementation,
            seed=sub_seed(seed, "attention"),
            name="attention",
            dtype=self.dtype_policy,
        )
        self.layernorm_after = keras.layers.LayerNormalization(
            epsilon=layer_norm_eps, name="layernorm_after", dtype=self.dtype_policy
        )
        self.mlp = ViTMAEMLP(
            hidden_size,
            intermediate_size,
            hidden_act=hidden_act,
            dropout=hidden_dropout,
            initializer_range=initializer_range,
            seed=sub_seed(seed, "mlp"),
            name="mlp",
            dtype=self.dtype_policy,
        )
        self.drop_path = DropPath(
            drop_path, seed=sub_seed(seed, "drop_path"), name="drop_path", dtype=self.dtype_policy
        )

    def draw_seeds(self) -> dict[str, TensorLike | None]:
        """Draw now the seeds that the next training call would draw, as it
        would (the same values, the generators advanced alike), by the
        sub-layer that uses each; `None` where a rate is 0."""
        return dict(
            attention_probs=draw_seed(self.attention.probs_dropout),
            attention_output=draw_seed(self.attention.dropout),
            attention_path=draw_seed(self.drop_path),  # drop path runs twice: in this order
            mlp_output=draw_seed(self.mlp.dropout),
            mlp_path=draw_seed(self.drop_path),
        )

    def build(self, input_shape: tuple | None = None) -> None:
        shape = (None, None, self.hidden_size)
        for layer in (self.layernorm_before, self.attention, self.layernorm_after, self.mlp):
            layer.build(shape)

    def call(
        self,
        hidden_states: TensorLike,
        head_mask: TensorLike | None = None,
        output_attentions: bool = False,
        training: bool = False,
        seeds: dict[str, TensorLike | None] | None = None,
    ) -> tuple[TensorLike, TensorLike | None]:
        seeds = seeds or {}
        attended, probs = self.attention(
            self.layernorm_before(hidden_states),
            head_mask=head_mask,
            output_attentions=output_attentions,
            training=training,
            seeds=(seeds.get("attention_probs"), seeds.get("attention_output")),
        )
        attended = self.drop_path(attended, training=training, seed=seeds.get("attention_path"))
        hidden_states = hidden_states + attended
        mlp_out = self.mlp(
            self.layernorm_after(hidden_states), training=training, seed=seeds.get("mlp_output")
        )
        mlp_out = self.drop_path(mlp_out, training=training, seed=seeds.get("mlp_path"))
        hidden_states = hidden_states + mlp_out
        return hidden_states, probs

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            hidden_size=self.hidden_size,
            num_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            hidden_act=self.hidden_act,
            qkv_bias=self.qkv_bias,
            hidden_dropout=self.hidden_dropout,
            attention_dropout=self.attention_dropout,
            layer_norm_eps=self.layer_norm_eps,
            initializer_range=self.initializer_range,
            attn_implementation=self.attention.attn_implementation,
            drop_path=self.drop_path_rate,
            seed=self.seed,
        )
        return config


# ----------------------------------------------------------------------
# MAE's pixel side: patches, targets, the loss
# ----------------------------------------------------------------------

# norm_pix_loss: per-patch (t - mean) / sqrt(var + eps), var unbiased as in PyTorch.
NORM_PIX_EPS = 1e-6


def patchify(images: TensorLike, patch_size: tuple[int, int]) -> TensorLike:
    """Channels-last images -> `(batch, num_patches, patch_h * patch_w * channels)`."""
    patch_h, patch_w = patch_size
    _, height, width, channels = images.shape
    rows, cols = height // patch_h, width // patch_w
    x = ops.reshape(images, (-1, rows, patch_h, cols, patch_w, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, rows * cols, patch_h * patch_w * channels))


def unpatchify(
    patches: TensorLike,
    patch_size: tuple[int, int],
    *,
    image_size: tuple[int, int],
    channels: int,
) -> TensorLike:
    """Inverse of `patchify`: channels-last images of `image_size = (height, width)`."""
    patch_h, patch_w = patch_size
    height, width = image_size
    rows, cols = height // patch_h, width // patch_w
    x = ops.reshape(patches, (-1, rows, cols, patch_h, patch_w, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, rows * patch_h, cols * patch_w, channels))


def patch_targets(
    images: TensorLike, patch_size: tuple[int, int], norm_pix_loss: bool
) -> tuple[TensorLike, tuple[TensorLike, TensorLike] | None]:
    """float32 target patches, and the per-patch `(mean, std)` that
    `norm_pix_loss` normalises them with (`None` without it)."""
    target = patchify(ops.cast(images, "float32"), patch_size)
    if not norm_pix_loss:
        return target, None
    mean = ops.mean(target, axis=-1, keepdims=True)
    # Unbiased variance (divide by n - 1), as torch.var in the reference.
    var = ops.sum(ops.square(target - mean), axis=-1, keepdims=True) / (target.shape[-1] - 1)
    std = ops.sqrt(var + NORM_PIX_EPS)
    return (target - mean) / std, (mean, std)


def per_patch_error(
    images: TensorLike, logits: TensorLike, patch_size: tuple[int, int], *, norm_pix_loss: bool
) -> TensorLike:
    """Mean squared error of each patch's prediction, `(batch, num_patches)`."""
    target, _ = patch_targets(images, patch_size, norm_pix_loss)
    return ops.mean(ops.square(ops.cast(logits, "float32") - target), axis=-1)


def masked_mean(per_patch: TensorLike, mask: TensorLike, axis: int | None = None) -> TensorLike:
    """Mean of `per_patch` over the removed patches (`mask == 1`); 0 when none is."""
    mask = ops.cast(mask, "float32")
    return ops.divide_no_nan(ops.sum(per_patch * mask, axis=axis), ops.sum(mask, axis=axis))
