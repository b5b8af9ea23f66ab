"""The MAE optimizers: AdamW with the paper's settings and weight-decay
exclusions, layer-wise lr decay for fine-tuning, SGD for the linear probe.

Defaults follow the paper and the original code: AdamW with betas (0.9, 0.95),
weight decay 0.05 (none on biases, norms, tokens and position tables),
`lr = base_lr * batch / 256` with `base_lr = 1.5e-4`, linear warmup then a
half-cycle cosine decay per step.

With gradient accumulation (`accum_steps`, MAE's `accum_iter`; Keras'
`gradient_accumulation_steps`) an optimizer update averages the gradients of
`accum_steps` batches: `batch` in the scaling rule is then the effective
batch, `batch_size * accum_steps`, and the schedule counts updates.
"""

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import keras
from keras import ops

from ..utils.types import TensorLike

if TYPE_CHECKING:
    from ..models.classification import TFViTMAEForImageClassification
    from ..models.vit_mae import TFViTMAEPreTrainedModel

__all__ = [
    "FINETUNE_BASE_LR",
    "LayerDecayAdamW",
    "NO_WEIGHT_DECAY",
    "PRETRAIN_BASE_LR",
    "PROBE_BASE_LR",
    "WarmupCosineDecay",
    "check_accum_steps",
    "classifier_optimizer",
    "layer_decay_multipliers",
    "mae_optimizer",
    "scaled_learning_rate",
    "updates_per_epoch",
]

# Variable names (the last path component) that get no weight decay.
NO_WEIGHT_DECAY = (
    "bias",
    "gamma",
    "beta",
    "cls_token",
    "mask_token",
    "position_embeddings",
    "decoder_pos_embed",
)
PRETRAIN_BASE_LR = 1.5e-4
FINETUNE_BASE_LR = 5e-4  # MAE, ViT-B (1e-3 for ViT-L/H)
PROBE_BASE_LR = 0.1


def scaled_learning_rate(base_lr: float, batch_size: int) -> float:
    """The linear scaling rule `base_lr * batch_size / 256`."""
    return base_lr * batch_size / 256


def check_accum_steps(accum_steps: int) -> int:
    """`accum_steps` (the batches whose gradients make one optimizer update),
    checked to be a positive int; 1 is no accumulation."""
    if (
        isinstance(accum_steps, bool)
        or not isinstance(accum_steps, numbers.Integral)
        or accum_steps < 1
    ):
        raise ValueError(
            "accum_steps must be a positive int (the batches whose gradients make one "
            f"optimizer update), received {accum_steps!r}"
        )
    return int(accum_steps)


def updates_per_epoch(steps_per_epoch: int, accum_steps: int) -> int:
    """The optimizer updates in an epoch of `steps_per_epoch` batches, each
    update accumulating `accum_steps` of them.

    Raises:
        ValueError: `accum_steps` does not divide `steps_per_epoch`: every
            epoch must end on an update, so that each epoch's updates are
            whole and a run resumed at an epoch boundary starts on one.
    """
    accum_steps = check_accum_steps(accum_steps)
    if steps_per_epoch % accum_steps:
        fits = max(k for k in range(1, accum_steps) if steps_per_epoch % k == 0)
        raise ValueError(
            f"steps_per_epoch must be a multiple of accum_steps, so that every epoch ends on "
            f"an optimizer update: received steps_per_epoch={steps_per_epoch} and "
            f"accum_steps={accum_steps} (the largest accum_steps below it that divides "
            f"{steps_per_epoch} is {fits})"
        )
    return steps_per_epoch // accum_steps


def _gradient_accumulation_steps(accum_steps: int) -> int | None:
    """Keras' `gradient_accumulation_steps` (`None`, or 2 and more) for `accum_steps`."""
    return accum_steps if accum_steps > 1 else None


@keras.saving.register_keras_serializable(package="tfvitmae")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak_lr`, then half-cycle cosine to `min_lr`,
    counted in optimizer updates.

    Args:
        peak_lr: Learning rate at the end of the warmup.
        warmup_steps: Updates of linear warmup.
        total_steps: Updates in all; the rate reaches `min_lr` here.
        min_lr: Final learning rate.
        accum_steps: The optimizer's `gradient_accumulation_steps` (1: none).
            Keras calls a schedule with its count of batches, of which
            `step // accum_steps` updates are done: update `k` gets the rate
            of step `k`, as without accumulation.
    """

    def __init__(
        self,
        peak_lr: float,
        warmup_steps: int,
        total_steps: int,
        min_lr: float = 0.0,
        accum_steps: int = 1,
    ):
        if total_steps < 1 or warmup_steps < 0 or warmup_steps > total_steps:
            raise ValueError(
                f"Need 0 <= warmup_steps <= total_steps and total_steps >= 1, "
                f"received warmup_steps={warmup_steps}, total_steps={total_steps}"
            )
        self.peak_lr = float(peak_lr)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_lr = float(min_lr)
        self.accum_steps = check_accum_steps(accum_steps)

    def __call__(self, step: TensorLike) -> TensorLike:
        if self.accum_steps > 1:
            step = ops.floor_divide(step, self.accum_steps)
        step = ops.cast(step, "float32")
        warmup = self.peak_lr * step / max(self.warmup_steps, 1)
        progress = (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1)
        progress = ops.clip(progress, 0.0, 1.0)
        cosine = self.min_lr + (self.peak_lr - self.min_lr) * 0.5 * (
            1.0 + ops.cos(math.pi * progress)
        )
        return ops.where(step < self.warmup_steps, warmup, cosine)

    def get_config(self) -> dict:
        return dict(
            peak_lr=self.peak_lr,
            warmup_steps=self.warmup_steps,
            total_steps=self.total_steps,
            min_lr=self.min_lr,
            accum_steps=self.accum_steps,
        )


@keras.saving.register_keras_serializable(package="tfvitmae")
class LayerDecayAdamW(keras.optimizers.Adam):
    """AdamW with a learning-rate multiplier per variable (layer-wise lr decay).

    As MAE's `lr_scale`, the multiplier scales the whole step of a variable:
    the Adam update and the decoupled weight decay alike
    (`w -= lr * scale * (adam_update + weight_decay * w)`). Keras' own weight
    decay would use the unscaled rate, so the decay is applied here instead.

    Args:
        lr_multipliers: `{variable path: multiplier}`; variables not listed use 1.
        weight_decay: Decoupled weight decay.
        no_weight_decay: Variable names (the last path component, such as
            `"bias"`) that get no weight decay.
        **kwargs: `keras.optimizers.Adam` arguments.
    """

    def __init__(
        self,
        lr_multipliers: Mapping[str, float] | None = None,
        weight_decay: float | None = 0.004,
        no_weight_decay: Iterable[str] = (),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.lr_multipliers = dict(lr_multipliers or {})
        self.decoupled_weight_decay = float(weight_decay or 0.0)
        self.no_weight_decay = tuple(no_weight_decay)

    def update_step(
        self, gradient: TensorLike, variable: TensorLike, learning_rate: TensorLike
    ) -> None:
        # The TF backend passes the raw tf.Variable, named "<path>:0".
        path = getattr(variable, "path", None) or variable.name.split(":")[0]
        learning_rate = ops.cast(learning_rate, variable.dtype) * self.lr_multipliers.get(path, 1.0)
        if self.decoupled_weight_decay and path.rsplit("/", 1)[-1] not in self.no_weight_decay:
            decay = ops.cast(self.decoupled_weight_decay, variable.dtype)
            self.assign_sub(variable, variable * decay * learning_rate)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            lr_multipliers=self.lr_multipliers,
            weight_decay=self.decoupled_weight_decay,
            no_weight_decay=list(self.no_weight_decay),
        )
        return config


def layer_decay_multipliers(
    model: "TFViTMAEPreTrainedModel", layer_decay: float
) -> dict[str, float]:
    """MAE/BEiT layer-wise decay: block `i` of `L` gets `decay ** (L - i)`, the
    embeddings `decay ** (L + 1)`, and everything after the blocks 1."""
    blocks = model.vit.blocks
    depth = len(blocks)
    multipliers: dict[str, float] = {}
    for variable in model.vit.embeddings.weights:
        multipliers[variable.path] = layer_decay ** (depth + 1)
    for i, block in enumerate(blocks):
        for variable in block.weights:
            multipliers[variable.path] = layer_decay ** (depth - i)
    return multipliers


def mae_optimizer(
    batch_size: int,
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: float = 40,
    base_lr: float = PRETRAIN_BASE_LR,
    weight_decay: float = 0.05,
    beta_1: float = 0.9,
    beta_2: float = 0.95,
    min_lr: float = 0.0,
    model: "TFViTMAEPreTrainedModel | None" = None,
    layer_decay: float | None = None,
    accum_steps: int = 1,
) -> keras.optimizers.Optimizer:
    """AdamW with the MAE schedule and weight-decay exclusions.

    Args:
        batch_size: The global batch size of one step.
        steps_per_epoch, epochs: The length of training, in batches per epoch.
        warmup_epochs: Linear warmup length, capped at `epochs`.
        base_lr: Learning rate per 256 images.
        weight_decay, beta_1, beta_2, min_lr: AdamW and schedule settings.
        model, layer_decay: With both, a `LayerDecayAdamW` with layer-wise decay
            (of the step and the weight decay, as MAE).
        accum_steps: Batches whose mean gradient makes one update (Keras'
            `gradient_accumulation_steps`); it must divide `steps_per_epoch`.
            The learning rate scales with the effective batch,
            `batch_size * accum_steps`, and the schedule counts updates.

    Returns:
        A Keras optimizer. Its `learning_rate` schedule is driven by the
        optimizer's step count (saved with its state), so training resumed
        from a backup continues at the same point of the schedule.
    """
    updates = updates_per_epoch(steps_per_epoch, accum_steps)
    total = max(1, int(updates * epochs))
    warmup = min(int(updates * warmup_epochs), total)
    peak = scaled_learning_rate(base_lr, batch_size * accum_steps)
    schedule = WarmupCosineDecay(peak, warmup, total, min_lr=min_lr, accum_steps=accum_steps)
    kwargs: dict[str, Any] = dict(
        learning_rate=schedule,
        weight_decay=weight_decay,
        beta_1=beta_1,
        beta_2=beta_2,
        gradient_accumulation_steps=_gradient_accumulation_steps(accum_steps),
    )
    if layer_decay is None:
        optimizer = keras.optimizers.AdamW(**kwargs)
        optimizer.exclude_from_weight_decay(var_names=list(NO_WEIGHT_DECAY))
        return optimizer
    if model is None:
        raise ValueError("layer_decay needs the model, to know its blocks")
    return LayerDecayAdamW(
        lr_multipliers=layer_decay_multipliers(model, layer_decay),
        no_weight_decay=NO_WEIGHT_DECAY,
        **kwargs,
    )


def classifier_optimizer(
    model: "TFViTMAEForImageClassification",
    batch_size: int,
    steps_per_epoch: int,
    epochs: int,
    base_lr: float | None = None,
    warmup_epochs: float | None = None,
    weight_decay: float | None = None,
    layer_decay: float | None = 0.65,
    accum_steps: int = 1,
) -> keras.optimizers.Optimizer:
    """The MAE downstream optimizers.

    Linear probe (`model.linear_probe`): SGD with momentum 0.9, no weight
    decay, `base_lr` 0.1 per 256 images, warmup 10 epochs, cosine. (MAE uses
    LARS, which Keras does not ship; SGD with momentum is the usual stand-in.)
    Fine-tuning: AdamW (betas 0.9/0.999, weight decay 0.05), `base_lr` 5e-4
    per 256 images, warmup 5 epochs, cosine, layer-wise lr decay 0.65.
    `accum_steps` accumulates gradients as in `mae_optimizer`, for both.
    """
    if model.linear_probe:
        updates = updates_per_epoch(steps_per_epoch, accum_steps)
        total = max(1, int(updates * epochs))
        warmup = min(int(updates * (10 if warmup_epochs is None else warmup_epochs)), total)
        lr = scaled_learning_rate(
            PROBE_BASE_LR if base_lr is None else base_lr, batch_size * accum_steps
        )
        return keras.optimizers.SGD(
            WarmupCosineDecay(lr, warmup, total, accum_steps=accum_steps),
            momentum=0.9,
            gradient_accumulation_steps=_gradient_accumulation_steps(accum_steps),
        )
    return mae_optimizer(
        batch_size,
        steps_per_epoch,
        epochs,
        warmup_epochs=5 if warmup_epochs is None else warmup_epochs,
        base_lr=FINETUNE_BASE_LR if base_lr is None else base_lr,
        weight_decay=0.05 if weight_decay is None else weight_decay,
        beta_2=0.999,
        model=model,
        layer_decay=layer_decay,
        accum_steps=accum_steps,
    )
