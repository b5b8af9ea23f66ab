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
