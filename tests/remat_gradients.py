"""Recomputed blocks (`remat=True`) against kept ones, with dropout and
stochastic depth on, on whichever Keras backend this process runs.

In each cell (a model, the random sub-layers on, a dtype policy) one model
takes one training step's loss and gradients twice from the same state,
remat off and on: the recomputation must draw the forward pass's masks, so
the two agree. `tests/models/test_remat.py` runs `TENSORFLOW_CELLS` in its
process, `tests/other_backend.py` runs `OTHER_BACKEND_CELLS` in its PyTorch
process and the seeded ones in its JAX process (there the gradients are taken
op by op, not jitted: a cell's compiles took longer than the whole matrix here).
"""

import keras
import numpy as np

from tfvitmae import TFViTMAEForImageClassification, TFViTMAEForPreTraining

from .helpers import noise_for, pixels, tiny_config

# The random sub-layers each cell turns on: config fields, and the model's drop path.
DROPOUTS = {
    "hidden": dict(hidden_dropout_prob=0.3),
    "attention": dict(attention_probs_dropout_prob=0.3),
    "drop_path": dict(drop_path_rate=0.5),
    "all": dict(hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3, drop_path_rate=0.5),
    # Unseeded: Keras' PyTorch dropout then draws from torch's own RNG.
    "all_unseeded": dict(
        hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3, drop_path_rate=0.5
    ),
}
MODELS = ("pretraining", "classifier")
DTYPES = ("float32", "mixed_bfloat16")
# Each sub-layer alone and all together in float32, all together in bfloat16.
TENSORFLOW_CELLS = [
    (kind, cell, "float32")
    for kind in MODELS
    for cell in ("hidden", "attention", "drop_path", "all")
] + [(kind, "all", "mixed_bfloat16") for kind in MODELS]
# All together (a sub-layer that draws afresh shows there), in both dtypes,
# and unseeded (then Keras' PyTorch dropout draws from torch's own RNG; on
# JAX an unseeded layer draws from Keras' global generator).
OTHER_BACKEND_CELLS = [(kind, "all", dtype) for kind in MODELS for dtype in DTYPES] + [
    (kind, "all_unseeded", "float32") for kind in MODELS
]
BATCH = 4  # drop path's whole-sample masks: enough samples that fresh ones differ
# Remat off against on: the loss (relative) and every gradient (relative to
# the largest) may differ by float32 1e-6, mixed_bfloat16 1e-3 (a quarter of
# bfloat16's epsilon). Measured on TensorFlow and PyTorch: 0; fresh masks
# are off by order 1.
TOLERANCE = {"float32": 1e-6, "mixed_bfloat16": 1e-3}


def _seed_states(model):
    return [v for v in model.variables if "seed_generator_state" in v.path]


def _build(kind, cell, dtype):
    options = dict(DROPOUTS[cell])
    drop_path_rate = options.pop("drop_path_rate", 0.0)
    config = tiny_config(**options)
    seed = None if cell.endswith("unseeded") else 7
    keras.utils.set_random_seed(0)  # the same weights in every cell
    if kind == "pretraining":
        model = TFViTMAEForPreTraining(
            config, seed=seed, drop_path_rate=drop_path_rate, dtype=dtype
        )
    else:
        model = TFViTMAEForImageClassification(
            config, num_labels=3, seed=seed, drop_path_rate=drop_path_rate, dtype=dtype
        )
    noise = dict(noise=noise_for(config, batch=BATCH)) if kind == "pretraining" else {}
    return model, (pixels(config, batch=BATCH), noise)


def _loss(kind, output, labels):
    if kind == "pretraining":
        return output.loss
    return keras.ops.mean(
        keras.losses.sparse_categorical_crossentropy(labels, output, from_logits=True)
    )


def loss_and_gradients(kind, model, inputs):
    """One training call's loss, the gradients of every trainable variable,
    and the random generators' states after it, as NumPy."""
    images, noise = inputs
    labels = np.arange(BATCH) % 3
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = _loss(kind, model(images, **noise, training=True), labels)
        grads = tape.gradient(loss, model.trainable_variables)
        states = [v.value for v in _seed_states(model)]
    elif backend == "torch":
        for v in model.trainable_variables:
            v.value.grad = None
        loss = _loss(kind, model(images, **noise, training=True), labels)
        loss.backward()
        grads = [v.value.grad for v in model.trainable_variables]
        states = [v.value for v in _seed_states(model)]
    elif backend == "jax":  # not jitted: op by op, no compile of the whole step
        import jax

        variables = model.non_trainable_variables

        def loss_of(trainable):
            output, after = model.stateless_call(
                trainable, [v.value for v in variables], images, **noise, training=True
            )
            return _loss(kind, output, labels), after

        values = [v.value for v in model.trainable_variables]
        (loss, after), grads = jax.value_and_grad(loss_of, has_aux=True)(values)
        states = [value for v, value in zip(variables, after) if "seed_generator_state" in v.path]
    else:
        raise ValueError(f"No gradient step for the {backend!r} backend")
    numpy = keras.ops.convert_to_numpy
    return (
        float(numpy(loss)),
        [numpy(g).astype("float64") for g in grads],
        [numpy(s).tolist() for s in states],
    )


def compare(kind, cell, dtype):
    """Remat off and on, from the same state: how far apart the losses
    (`"loss"`, relative) and the gradients (`"gradient"`, relative to the
    largest, `"largest_gradient"`) are, whether both left the random
    generators in the same state (`"same_states"`), and whether all of it
    is within `TOLERANCE` (`"agree"`)."""
    model, inputs = _build(kind, cell, dtype)
    start = [keras.ops.convert_to_numpy(v.value) for v in _seed_states(model)]
    runs = []
    for remat in (False, True):
        for variable, value in zip(_seed_states(model), start):
            variable.assign(value)
        keras.utils.set_random_seed(1)  # torch's own RNG, for unseeded dropout there
        model.remat = remat
        runs.append(loss_and_gradients(kind, model, inputs))
    (loss_off, grads_off, states_off), (loss_on, grads_on, states_on) = runs
    largest = max(float(np.abs(g).max()) for g in grads_off)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(grads_off, grads_on))
    result = dict(
        loss=abs(loss_off - loss_on) / abs(loss_off),
        gradient=diff / largest,
        largest_gradient=largest,
        same_states=states_off == states_on,
    )
    within = max(result["loss"], result["gradient"]) <= TOLERANCE[dtype]
    return dict(result, agree=within and result["same_states"])
