import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvitmae import TFViTMAEForPreTraining
from tfvitmae.models.classification import TFViTMAEForImageClassification
from tfvitmae.training.optimizers import (
    FINETUNE_BASE_LR,
    NO_WEIGHT_DECAY,
    PROBE_BASE_LR,
    LayerDecayAdamW,
    WarmupCosineDecay,
    classifier_optimizer,
    layer_decay_multipliers,
    mae_optimizer,
    scaled_learning_rate,
    updates_per_epoch,
)

from ..helpers import tiny_config


def schedule_of(optimizer):
    """The learning-rate schedule, read through the public config."""
    schedule = keras.optimizers.schedules.deserialize(optimizer.get_config()["learning_rate"])
    assert type(schedule) is WarmupCosineDecay
    return schedule


def zero_gradient_step(optimizer, variables):
    """One step with zero gradients: Adam(W)'s own update is then 0 (its first
    moment is 0), so only the decoupled weight decay changes a variable."""
    optimizer.build(variables)
    before = [v.numpy().copy() for v in variables]
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in variables])
    return before


def test_mae_recipe_defaults():
    optimizer = mae_optimizer(batch_size=512, steps_per_epoch=100, epochs=800)
    schedule = schedule_of(optimizer)
    assert schedule.peak_lr == pytest.approx(1.5e-4 * 2) and schedule.warmup_steps == 4000
    assert schedule.total_steps == 80000 and schedule.min_lr == 0.0
    assert optimizer.beta_1 == 0.9 and optimizer.beta_2 == 0.95 and optimizer.weight_decay == 0.05
    short = mae_optimizer(batch_size=256, steps_per_epoch=10, epochs=5)  # warmup capped at the run
    assert (schedule_of(short).warmup_steps, schedule_of(short).total_steps) == (50, 50)


def test_weight_decay_skips_biases_norms_tokens_and_tables():
    model = TFViTMAEForPreTraining(tiny_config())
    optimizer = mae_optimizer(batch_size=256, steps_per_epoch=1, epochs=1, warmup_epochs=0)
    variables = model.trainable_variables
    before = zero_gradient_step(optimizer, variables)
    changed = {
        v.path.split("/")[-1] for v, b in zip(variables, before) if not np.array_equal(v.numpy(), b)
    }
    unchanged = {
        v.path.split("/")[-1] for v, b in zip(variables, before) if np.array_equal(v.numpy(), b)
    }
    assert changed == {"kernel"}
    assert {"bias", "gamma", "beta", "cls_token", "mask_token"} <= unchanged


def test_layer_decay_scales_each_blocks_learning_rate():
    model = TFViTMAEForPreTraining(tiny_config(num_hidden_layers=3))
    multipliers = layer_decay_multipliers(model, 0.5)
    kernel = lambda i: model.vit.blocks[i].attention.qkv.kernel.path  # noqa: E731
    assert [multipliers[kernel(i)] for i in range(3)] == [0.125, 0.25, 0.5]
    assert multipliers[model.vit.embeddings.cls_token.path] == 0.0625
    assert model.decoder.decoder_pred.kernel.path not in multipliers  # heads get the full rate
    # One step (Adam's first step moves each weight by ~lr): ratios follow the multipliers.
    optimizer = LayerDecayAdamW(lr_multipliers=multipliers, learning_rate=1e-2, weight_decay=0.0)
    variables = [model.vit.blocks[i].attention.qkv.kernel for i in range(3)]
    before = [v.numpy().copy() for v in variables]
    optimizer.apply_gradients([(tf.ones_like(v), v) for v in variables])
    steps = [float(np.abs(v.numpy() - b).mean()) for v, b in zip(variables, before)]
    np.testing.assert_allclose(steps, [1e-2 * 0.125, 1e-2 * 0.25, 1e-2 * 0.5], rtol=1e-3)


def test_layer_decay_scales_the_weight_decay_too():
    """As MAE's lr_scale: the multiplier scales the decoupled weight decay as
    well as the Adam step (`w -= lr * scale * weight_decay * w` on a zero gradient)."""
    rng = np.random.default_rng(0)
    kernel = keras.Variable(rng.normal(size=(3, 4)).astype("float32"), name="kernel")
    other = keras.Variable(rng.normal(size=(4,)).astype("float32"), name="weight")
    bias = keras.Variable(rng.normal(size=(4,)).astype("float32"), name="bias")
    optimizer = LayerDecayAdamW(
        lr_multipliers={kernel.path: 0.25, bias.path: 0.25},
        learning_rate=0.1,
        weight_decay=0.5,
        no_weight_decay=("bias",),
    )
    before = zero_gradient_step(optimizer, [kernel, other, bias])
    np.testing.assert_allclose(kernel.numpy(), before[0] - before[0] * 0.5 * 0.1 * 0.25, rtol=1e-6)
    np.testing.assert_allclose(other.numpy(), before[1] - before[1] * 0.5 * 0.1, rtol=1e-6)
    np.testing.assert_array_equal(bias.numpy(), before[2])  # no weight decay on "bias"

    config = optimizer.get_config()
    restored = LayerDecayAdamW.from_config(config)
    assert restored.get_config() == config
    assert config["weight_decay"] == 0.5 and config["lr_multipliers"] == optimizer.lr_multipliers
    assert list(config["no_weight_decay"]) == ["bias"]


def test_mae_optimizer_with_layer_decay_scales_the_weight_decay():
    model = TFViTMAEForImageClassification(tiny_config(), num_labels=2, pooling="mean")
    optimizer = mae_optimizer(
        batch_size=256,
        steps_per_epoch=1,
        epochs=1,
        warmup_epochs=0,
        base_lr=0.1,
        weight_decay=0.5,
        model=model,
        layer_decay=0.5,
    )
    assert type(optimizer) is LayerDecayAdamW
    assert set(optimizer.get_config()["no_weight_decay"]) == set(NO_WEIGHT_DECAY)
    variables = model.trainable_variables
    before = dict(zip([v.path for v in variables], zero_gradient_step(optimizer, variables)))
    multipliers = layer_decay_multipliers(model, 0.5)
    for v in variables:
        name = v.path.split("/")[-1]
        if name in NO_WEIGHT_DECAY:  # biases, norms, tokens: no decay
            np.testing.assert_array_equal(v.numpy(), before[v.path], err_msg=v.path)
        else:  # lr 0.1 at step 0 (no warmup), times the layer's multiplier
            scale = 0.5 * 0.1 * multipliers.get(v.path, 1.0)
            expected = before[v.path] * (1 - scale)
            np.testing.assert_allclose(v.numpy(), expected, rtol=1e-5, err_msg=v.path)
    block_kernel = model.vit.blocks[0].mlp.intermediate.kernel.path
    assert multipliers[block_kernel] == 0.25  # 2 blocks: block 0 gets 0.5 ** 2


def test_mae_optimizer_layer_decay_needs_the_model():
    with pytest.raises(ValueError, match="layer_decay needs the model"):
        mae_optimizer(256, 1, 1, layer_decay=0.5)


def test_classifier_optimizers_follow_mae():
    probe = TFViTMAEForImageClassification(tiny_config(), num_labels=2, linear_probe=True)
    optimizer = classifier_optimizer(probe, batch_size=512, steps_per_epoch=10, epochs=90)
    assert type(optimizer) is keras.optimizers.SGD and optimizer.momentum == 0.9
    schedule = schedule_of(optimizer)
    assert schedule.peak_lr == pytest.approx(PROBE_BASE_LR * 2)
    assert (schedule.warmup_steps, schedule.total_steps) == (100, 900)
    tuned = TFViTMAEForImageClassification(tiny_config(), num_labels=2)
    optimizer = classifier_optimizer(tuned, batch_size=1024, steps_per_epoch=10, epochs=100)
    assert type(optimizer) is LayerDecayAdamW and optimizer.beta_2 == 0.999
    assert optimizer.get_config()["weight_decay"] == 0.05
    schedule = schedule_of(optimizer)
    assert schedule.peak_lr == pytest.approx(FINETUNE_BASE_LR * 4) and schedule.warmup_steps == 50
    kernel = tuned.vit.blocks[1].attention.qkv.kernel.path
    assert optimizer.lr_multipliers[kernel] == pytest.approx(0.65)


# ------------------------------------------------------ gradient accumulation
@pytest.mark.parametrize("kind", ["mae", "finetune", "probe"])
def test_accumulated_batches_make_the_update_of_their_full_batch(kind):
    """The recipes' three optimizers (AdamW, `LayerDecayAdamW`, the probe's
    SGD) with `accum_steps=3` on batches of 2 give, update after update
    (warmup and cosine included), the weights that one batch of 6 gives: the
    learning rate follows the effective batch, the schedule counts updates,
    and the update uses the mean gradient. Between updates nothing moves.

    Tolerance: here both sides sum the same float32 gradients in the same
    order and agree to the bit; `rtol=1e-5, atol=1e-7` leaves room for a
    sum in another order (a few float32 ulps, ~1e-7 relative, in the mean
    gradient, which Adam's normalised step and SGD's step keep relative),
    far below what a rate or schedule off by one update, or SGD on a summed
    gradient, moves a weight."""
    accum, micro, updates_per_epoch, epochs = 3, 2, 2, 2
    rng = np.random.default_rng(0)
    models = [
        TFViTMAEForImageClassification(
            tiny_config(num_hidden_layers=2), num_labels=2, linear_probe=kind == "probe", seed=0
        )
        for _ in range(2)
    ]
    models[1].set_weights(models[0].get_weights())

    def optimizer(model, batch_size, accum_steps):
        steps = updates_per_epoch * accum_steps
        options = dict(batch_size=batch_size, steps_per_epoch=steps, epochs=epochs)
        options.update(warmup_epochs=1, base_lr=2.0, accum_steps=accum_steps)
        if kind == "mae":
            return mae_optimizer(**options)
        return classifier_optimizer(model, **options, weight_decay=0.3, layer_decay=0.5)

    accumulated = optimizer(models[0], micro, accum)
    full = optimizer(models[1], micro * accum, 1)
    variables = [m.trainable_variables for m in models]
    assert len(variables[0]) == len(variables[1])
    for update in range(updates_per_epoch * epochs):
        grads = [[rng.normal(size=v.shape).astype("float32") for v in variables[0]]]
        grads += [[g + rng.normal(size=g.shape).astype("float32") for g in grads[0]]]
        grads += [[rng.normal(size=g.shape).astype("float32") for g in grads[0]]]
        before = [v.numpy().copy() for v in variables[0]]
        for i, batch in enumerate(grads):
            if i:  # only the last batch of an update changes a weight
                for v, b in zip(variables[0], before):
                    np.testing.assert_array_equal(v.numpy(), b, err_msg=v.path)
            accumulated.apply_gradients(zip(batch, variables[0]))
        mean = [np.mean(gs, axis=0) for gs in zip(*grads)]
        full.apply_gradients(zip(mean, variables[1]))
        assert int(accumulated.iterations) == int(full.iterations) == update + 1
        assert float(accumulated.learning_rate) == pytest.approx(float(full.learning_rate))
        for a, b in zip(*variables):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7, err_msg=a.path)
    peak = scaled_learning_rate(2.0, micro * accum)  # the effective batch's
    assert schedule_of(accumulated).peak_lr == schedule_of(full).peak_lr == pytest.approx(peak)


@pytest.mark.parametrize("steps_per_epoch, accum_steps, fits", [(10, 4, 2), (9, 2, 1), (12, 5, 4)])
def test_accumulation_must_end_every_epoch_on_an_update(steps_per_epoch, accum_steps, fits):
    with pytest.raises(
        ValueError,
        match=rf"steps_per_epoch must be a multiple of accum_steps.*received "
        rf"steps_per_epoch={steps_per_epoch} and accum_steps={accum_steps} .* is {fits}\)",
    ):
        mae_optimizer(256, steps_per_epoch, 1, accum_steps=accum_steps)
    assert updates_per_epoch(steps_per_epoch * accum_steps, accum_steps) == steps_per_epoch


@pytest.mark.parametrize("accum_steps", [0, -1, 2.0, True, "3"])
def test_accum_steps_must_be_a_positive_int(accum_steps):
    probe = TFViTMAEForImageClassification(tiny_config(), num_labels=2, linear_probe=True)
    for make in (
        lambda: mae_optimizer(256, 6, 1, accum_steps=accum_steps),
        lambda: classifier_optimizer(probe, 256, 6, 1, accum_steps=accum_steps),
    ):
        message = rf"accum_steps must be a positive int.*{accum_steps!r}"
        with pytest.raises(ValueError, match=message):
            make()
