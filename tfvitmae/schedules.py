"""Learning-rate schedules of the MAE recipe."""

import math

import keras
from keras import ops


def scaled_learning_rate(base_lr, batch_size):
    """The linear scaling rule `base_lr * batch_size / 256`."""
    return base_lr * batch_size / 256


@keras.saving.register_keras_serializable(package="tfvitmae")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak_lr`, then half-cycle cosine to `min_lr`.

    Args:
        peak_lr: Learning rate at the end of the warmup.
        warmup_steps: Steps of linear warmup.
        total_steps: Steps in all; the rate reaches `min_lr` here.
        min_lr: Final learning rate.
    """

    def __init__(self, peak_lr, warmup_steps, total_steps, min_lr=0.0):
        if total_steps < 1 or warmup_steps < 0 or warmup_steps > total_steps:
            raise ValueError(
                f"Need 0 <= warmup_steps <= total_steps and total_steps >= 1, "
                f"received warmup_steps={warmup_steps}, total_steps={total_steps}"
            )
        self.peak_lr = float(peak_lr)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_lr = float(min_lr)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = self.peak_lr * step / max(self.warmup_steps, 1)
        progress = (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1)
        progress = ops.clip(progress, 0.0, 1.0)
        cosine = self.min_lr + (self.peak_lr - self.min_lr) * 0.5 * (
            1.0 + ops.cos(math.pi * progress)
        )
        return ops.where(step < self.warmup_steps, warmup, cosine)

    def get_config(self):
        return dict(
            peak_lr=self.peak_lr,
            warmup_steps=self.warmup_steps,
            total_steps=self.total_steps,
            min_lr=self.min_lr,
        )
