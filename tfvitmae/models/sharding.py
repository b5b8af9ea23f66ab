"""How the ViTMAE models split over devices with `keras.distribution`:
the layout map of `TFViTMAEPreTrainedModel.get_layout_map`.

Every transformer block, in the encoder and the decoder, is split over the
model axis of the device mesh as Megatron-LM splits one (tensor parallelism):
the first matmul of each branch by its output columns, the second by its
input rows. A device then holds whole attention heads (their query, key and
value columns, and the rows of the output projection that read them) and a
slice of the MLP's hidden units; it computes its heads and hidden units
alone, and each branch ends in one sum over the model axis.

| kernel | shape | sharded |
|---|---|---|
| `attention/qkv/kernel` | `(hidden, 3, heads, head_dim)` | heads |
| `attention/output/kernel` | `(hidden, hidden)` | rows (heads x head_dim) |
| `mlp/intermediate/kernel` | `(hidden, intermediate)` | columns |
| `mlp/output/kernel` | `(intermediate, hidden)` | rows |

Everything else (biases, norms, embeddings, the decoder's projections, a
classifier's head) is small and replicated. The batch is split over the data
axis by `keras.distribution.ModelParallel(batch_dim_name=...)`. The query,
key and value kernel has the 4-D shape only when built under `ModelParallel`
(`layers.QKVProjection` says why); files hold the same matrix either way.
"""

from collections.abc import Iterable
from typing import Any

import keras

__all__ = ["get_layout_map"]

# Where a block's kernels are in a model's variable paths (the encoder's
# `vit/layer_{i}/`, the decoder's `decoder/layer_{i}/`, below any prefix).
_BLOCK = r"(.*/)?(vit|decoder)/layer_\d+/"


def _block_layouts(model: str) -> dict[str, tuple[str | None, ...]]:
    """Each block kernel's layout, `model` naming the axis it is split over."""
    return {
        "attention/qkv/kernel": (None, None, model, None),  # heads
        "attention/output/kernel": (model, None),  # rows: the heads' outputs
        "mlp/intermediate/kernel": (None, model),  # columns: hidden units
        "mlp/output/kernel": (model, None),  # rows: hidden units
    }


def get_layout_map(
    device_mesh: keras.distribution.DeviceMesh,
    model_parallel_dim_name: str = "model",
    data_parallel_dim_name: str = "batch",
    *,
    config: Any = None,
    stacks: Iterable[str] = ("vit", "decoder"),
) -> keras.distribution.LayoutMap:
    """A `keras.distribution.LayoutMap` that shards every block's attention
    (by heads) and MLP over the model axis of `device_mesh` (see the module's
    table), for `keras.distribution.ModelParallel`.

    Args:
        device_mesh: A `keras.distribution.DeviceMesh`.
        model_parallel_dim_name: The mesh axis the kernels are split over.
        data_parallel_dim_name: The mesh axis the batch is split over (pass
            the same name as `ModelParallel`'s `batch_dim_name`); the kernels
            are replicated along it. Checked to be an axis of the mesh.
        config: A `ViTMAEConfig`, to check before any variable is made that
            the model axis divides the heads and hidden units of each block of
            `stacks`. Without it, a model whose sizes do not divide fails when
            it is built, with JAX's message.
        stacks: The block stacks `config` describes: `"vit"` (the encoder)
            and `"decoder"`.

    Raises:
        ValueError: `device_mesh` is not a `DeviceMesh`, an axis name is not
            one of its axes, or the model axis does not divide a block's
            heads or hidden units (naming the block, the size and the mesh).
    """
    if not isinstance(device_mesh, keras.distribution.DeviceMesh):
        raise ValueError(
            "device_mesh must be a keras.distribution.DeviceMesh, received "
            f"{type(device_mesh).__name__}"
        )
    axes = tuple(device_mesh.axis_names)
    for argument, name in (
        ("model_parallel_dim_name", model_parallel_dim_name),
        ("data_parallel_dim_name", data_parallel_dim_name),
    ):
        if name not in axes:
            raise ValueError(
                f"{argument} must be an axis of the device mesh, one of {axes}, received {name!r}"
            )
    if config is not None:
        _check_divisible(config, device_mesh, model_parallel_dim_name, stacks)
    layout_map = keras.distribution.LayoutMap(device_mesh)
    for kernel, layout in _block_layouts(model_parallel_dim_name).items():
        layout_map[_BLOCK + kernel] = layout
    return layout_map


def _check_divisible(
    config: Any, mesh: keras.distribution.DeviceMesh, axis: str, stacks: Iterable[str]
) -> None:
    """Raise `ValueError` unless the model axis divides each block's heads and
    MLP hidden units: the axes `_block_layouts` shards."""
    size = mesh.shape[list(mesh.axis_names).index(axis)]
    sizes = {
        "vit": (config.num_attention_heads, config.intermediate_size),
        "decoder": (config.decoder_num_attention_heads, config.decoder_intermediate_size),
    }
    for stack in stacks:
        heads, hidden_units = sizes[stack]
        for layer, what, count in (
            ("attention", "heads", heads),
            ("mlp", "MLP hidden units", hidden_units),
        ):
            if count % size:
                raise ValueError(
                    f"{stack}/layer_*/{layer}: its {count} {what} cannot be split evenly over "
                    f"the {axis!r} axis of size {size} of the device mesh of shape "
                    f"{tuple(mesh.shape)} and axes {tuple(mesh.axis_names)}; use a model axis "
                    f"that divides {count}"
                )
