"""Multi-head self-attention with one fused query/key/value projection."""

import keras
from keras import ops

from .seeds import sub_seed

ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")


def check_attn_implementation(value):
    """Return `value` if it is a known attention path, else raise `ValueError`."""
    if value not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(
            f"attn_implementation must be one of {ATTENTION_IMPLEMENTATIONS}, received {value!r}"
        )
    return value


@keras.saving.register_keras_serializable(package="tfvitmae")
class ViTMAEAttention(keras.layers.Layer):
    """Multi-head self-attention with one fused query/key/value projection.

    Two paths give the same numbers: `"sdpa"` calls
    `keras.ops.dot_product_attention`; `"eager"` materialises the attention
    probabilities, and is used whenever they are needed (`output_attentions`,
    a `head_mask`, or attention dropout while training).

    Args:
        hidden_size: Model width.
        num_heads: Attention heads; must divide `hidden_size`.
        qkv_bias: Whether the query/key/value projection has a bias.
        attention_dropout: Dropout rate on the attention probabilities.
        output_dropout: Dropout rate after the output projection.
        initializer_range: Stddev of the truncated-normal kernel init.
        attn_implementation: `"sdpa"` (default) or `"eager"`.
        seed: Seed for the dropout layers.

    Call arguments:
        hidden_states: `(batch, seq, hidden_size)`.
        head_mask: Optional `(num_heads,)` multiplier of the probabilities.
        output_attentions: Whether to return the probabilities.
        training: Enables dropout.

    Returns:
        `(output, probabilities)`: `(batch, seq, hidden_size)` and, when
        requested, `(batch, num_heads, seq, seq)`, else `None`.
    """

    def __init__(
        self,
        hidden_size,
        num_heads,
        qkv_bias=True,
        attention_dropout=0.0,
        output_dropout=0.0,
        initializer_range=0.02,
        attn_implementation="sdpa",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hidden_size % num_heads:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by num_heads, received {num_heads}"
            )
        check_attn_implementation(attn_implementation)
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.qkv_bias = qkv_bias
        self.attention_dropout = attention_dropout
        self.output_dropout = output_dropout
        self.initializer_range = initializer_range
        self.attn_implementation = attn_implementation
        self.seed = seed
        self.qkv = keras.layers.Dense(
            3 * hidden_size,
            use_bias=qkv_bias,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=initializer_range),
            name="qkv",
            dtype=self.dtype_policy,
        )
        self.output_dense = keras.layers.Dense(
            hidden_size,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=initializer_range),
            name="output",
            dtype=self.dtype_policy,
        )
        self.probs_dropout = keras.layers.Dropout(
            attention_dropout, seed=sub_seed(seed, "probs_dropout"), dtype=self.dtype_policy
        )
        self.dropout = keras.layers.Dropout(
            output_dropout, seed=sub_seed(seed, "dropout"), dtype=self.dtype_policy
        )

    def build(self, input_shape=None):
        self.qkv.build((None, None, self.hidden_size))
        self.output_dense.build((None, None, self.hidden_size))

    def call(self, hidden_states, head_mask=None, output_attentions=False, training=False):
        batch, length = ops.shape(hidden_states)[0], ops.shape(hidden_states)[1]
        qkv = ops.reshape(
            self.qkv(hidden_states), (batch, length, 3, self.num_heads, self.head_dim)
        )
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        scale = self.head_dim**-0.5
        needs_probs = (
            output_attentions
            or head_mask is not None
            or self.attn_implementation == "eager"
            or (training and self.attention_dropout > 0)
        )
        probs = None
        if needs_probs:
            # Same op order as keras.ops.dot_product_attention: scale the logits,
            # softmax in float32.
            logits = ops.cast(ops.einsum("bthd,bshd->bhts", query, key), "float32") * scale
            probs = ops.cast(ops.softmax(logits, axis=-1), query.dtype)
            probs = self.probs_dropout(probs, training=training)
            if head_mask is not None:
                probs = probs * ops.cast(ops.reshape(head_mask, (1, -1, 1, 1)), probs.dtype)
            context = ops.einsum("bhts,bshd->bthd", probs, value)
        else:
            context = ops.dot_product_attention(query, key, value, scale=scale)
        context = ops.reshape(context, (batch, length, self.hidden_size))
        output = self.dropout(self.output_dense(context), training=training)
        return output, (probs if output_attentions else None)

    def get_config(self):
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
