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

    Two paths give the same numbers (within float rounding): `"sdpa"`, the
    default and the fast one, runs batched matmuls in the `(batch, heads, seq,
    head_dim)` layout; `"eager"` is the explicit einsum reference. Both
    support `output_attentions`, a `head_mask` and attention dropout.

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
        if self.attn_implementation == "eager":
            context, probs = self._eager(qkv, head_mask, training)
        else:
            context, probs = self._fused(qkv, head_mask, training)
        context = ops.reshape(context, (batch, length, self.hidden_size))
        output = self.dropout(self.output_dense(context), training=training)
        return output, (probs if output_attentions else None)

    def _probabilities(self, logits, dtype, head_mask, training):
        # Softmax in float32 (logits arrive already scaled), then dropout and head mask.
        probs = ops.cast(ops.softmax(ops.cast(logits, "float32"), axis=-1), dtype)
        probs = self.probs_dropout(probs, training=training)
        if head_mask is not None:
            probs = probs * ops.cast(ops.reshape(head_mask, (1, -1, 1, 1)), probs.dtype)
        return probs

    def _fused(self, qkv, head_mask, training):
        """Batched matmuls in the `(batch, heads, seq, head_dim)` layout: one
        transpose splits q, k and v, and the matmul -> softmax -> matmul chain is
        the pattern oneDNN runs fastest on CPU (in bfloat16 too, where einsum is
        several times slower) and XLA's fused-attention rewrite matches on GPU."""
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))  # (3, batch, heads, seq, head_dim)
        query, key, value = qkv[0], qkv[1], qkv[2]
        query = query * ops.cast(self.head_dim**-0.5, query.dtype)
        logits = ops.matmul(query, ops.transpose(key, (0, 1, 3, 2)))
        probs = self._probabilities(logits, query.dtype, head_mask, training)
        context = ops.matmul(probs, value)  # (batch, heads, seq, head_dim)
        return ops.transpose(context, (0, 2, 1, 3)), probs

    def _eager(self, qkv, head_mask, training):
        """The reference: einsums over the `(batch, seq, heads, head_dim)` layout."""
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        logits = ops.einsum("bthd,bshd->bhts", query, key)
        logits = ops.cast(logits, "float32") * self.head_dim**-0.5
        probs = self._probabilities(logits, query.dtype, head_mask, training)
        return ops.einsum("bhts,bshd->bthd", probs, value), probs

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
