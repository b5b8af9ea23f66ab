"""The building blocks of ViTMAE as Keras layers: patch embedding, random
masking, the MLP, stochastic depth and the pre-norm transformer block.

Attention is in `attention.py`, the fixed position tables in `position.py`;
the encoder and decoder stacks built from these are in `stacks.py`.
"""

import warnings

import keras
import tensorflow as tf
from keras import ops

from .activations import get_activation
from .attention import ViTMAEAttention, check_attn_implementation
from .seeds import sub_seed


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

    def __init__(self, hidden_size, patch_size, num_channels, **kwargs):
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

    def build(self, input_shape=None):
        self.projection.build((None, None, None, self.num_channels))

    def call(self, images):
        patches = self.projection(images)
        batch = ops.shape(patches)[0]
        rows, cols = patches.shape[1], patches.shape[2]
        return ops.reshape(patches, (batch, rows * cols, self.hidden_size))

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_size=self.hidden_size, patch_size=self.patch_size, num_channels=self.num_channels
        )
        return config


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

    def __init__(self, mask_ratio=0.75, seed=None, **kwargs):
        # No autocast: the noise decides the mask, and rounding it to 16 bits
        # under mixed precision would create ties that reorder patches.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if not 0 <= mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in [0, 1), received {mask_ratio}")
        self.mask_ratio = mask_ratio
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="seed_generator")

    def build(self, input_shape=None):
        pass

    def call(self, sequence, noise=None, mask_ratio=None):
        batch, length = ops.shape(sequence)[0], sequence.shape[1]
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        len_keep = int(length * (1 - ratio))
        if len_keep < 1:  # (the config refuses such a ratio at its own image size)
            warnings.warn(
                f"mask_ratio {ratio} keeps no patch of {length}: the encoder sees only the CLS "
                f"token (at most {1 - 1 / length:.4g} keeps one)"
            )
        if noise is not None and tf.executing_eagerly():
            if not bool(tf.reduce_all(tf.math.is_finite(tf.cast(noise, "float32")))):
                raise ValueError("noise must be finite: it holds NaN or infinite values")
        if noise is None:
            if len_keep == length:
                order = ops.broadcast_to(ops.arange(length, dtype="int32")[None], (batch, length))
                return sequence, ops.zeros((batch, length), "float32"), order
            noise = keras.random.uniform((batch, length), seed=self.seed_generator)
        ids_shuffle = ops.cast(ops.argsort(noise, axis=1), "int32")
        ids_restore = ops.cast(ops.argsort(ids_shuffle, axis=1), "int32")
        kept = tf.gather(sequence, ids_shuffle[:, :len_keep], batch_dims=1)
        # A patch is removed when its rank in the shuffle is past len_keep.
        mask = ops.cast(ids_restore >= len_keep, "float32")
        return kept, mask, ids_restore

    def get_config(self):
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
    """

    def __init__(
        self,
        hidden_size,
        intermediate_size,
        hidden_act="gelu",
        dropout=0.0,
        initializer_range=0.02,
        seed=None,
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
        self.dropout = keras.layers.Dropout(
            dropout, seed=sub_seed(seed, "dropout"), dtype=self.dtype_policy
        )

    def build(self, input_shape=None):
        self.intermediate.build((None, None, self.hidden_size))
        self.output_dense.build((None, None, self.intermediate_size))

    def call(self, hidden_states, training=False):
        hidden_states = self.activation(self.intermediate(hidden_states))
        return self.dropout(self.output_dense(hidden_states), training=training)

    def get_config(self):
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

    Args:
        rate: Probability of dropping the branch for a sample, in `[0, 1)`.
        seed: Seed of the layer's `keras.random.SeedGenerator`.
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= rate < 1:
            raise ValueError(f"drop path rate must be in [0, 1), received {rate}")
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="seed_generator")

    def call(self, branch, training=False):
        if not training or self.rate == 0:
            return branch
        keep = 1.0 - self.rate
        shape = (ops.shape(branch)[0],) + (1,) * (len(branch.shape) - 1)
        mask = ops.floor(
            keep + keras.random.uniform(shape, seed=self.seed_generator, dtype=branch.dtype)
        )
        return branch * mask / keep

    def get_config(self):
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

    Returns:
        `(hidden_states, attention_probabilities or None)`.
    """

    def __init__(
        self,
        hidden_size,
        num_heads,
        intermediate_size,
        hidden_act="gelu",
        qkv_bias=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        layer_norm_eps=1e-12,
        initializer_range=0.02,
        attn_implementation="sdpa",
        drop_path=0.0,
        seed=None,
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

    @property
    def attn_implementation(self):
        return self.attention.attn_implementation

    @attn_implementation.setter
    def attn_implementation(self, value):
        self.attention.attn_implementation = check_attn_implementation(value)

    def build(self, input_shape=None):
        shape = (None, None, self.hidden_size)
        for layer in (self.layernorm_before, self.attention, self.layernorm_after, self.mlp):
            layer.build(shape)

    def call(self, hidden_states, head_mask=None, output_attentions=False, training=False):
        attended, probs = self.attention(
            self.layernorm_before(hidden_states),
            head_mask=head_mask,
            output_attentions=output_attentions,
            training=training,
        )
        hidden_states = hidden_states + self.drop_path(attended, training=training)
        mlp_out = self.mlp(self.layernorm_after(hidden_states), training=training)
        hidden_states = hidden_states + self.drop_path(mlp_out, training=training)
        return hidden_states, probs

    def get_config(self):
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
            attn_implementation=self.attn_implementation,
            drop_path=self.drop_path_rate,
            seed=self.seed,
        )
        return config
