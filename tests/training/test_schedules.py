import math

import keras
import pytest

from tfvitmae.training.optimizers import WarmupCosineDecay, scaled_learning_rate


def test_schedule_values_at_known_steps():
    schedule = WarmupCosineDecay(peak_lr=1e-3, warmup_steps=10, total_steps=110, min_lr=1e-5)
    lr = lambda step: float(schedule(step))  # noqa: E731
    assert lr(0) == 0.0
    assert lr(5) == pytest.approx(5e-4)
    assert lr(10) == pytest.approx(1e-3)
    assert lr(60) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)  # half way through the cosine
    quarter = 1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 0.25))
    assert lr(35) == pytest.approx(quarter)
    assert lr(110) == pytest.approx(1e-5)
    assert lr(500) == pytest.approx(1e-5)


def test_no_warmup_starts_at_the_peak():
    schedule = WarmupCosineDecay(peak_lr=0.1, warmup_steps=0, total_steps=10)
    assert float(schedule(0)) == pytest.approx(0.1)
    assert float(schedule(10)) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("accum_steps", [1, 3])
def test_serialization(accum_steps):
    schedule = WarmupCosineDecay(
        peak_lr=1e-3, warmup_steps=10, total_steps=110, min_lr=1e-5, accum_steps=accum_steps
    )
    config = schedule.get_config()
    assert config == dict(
        peak_lr=1e-3, warmup_steps=10, total_steps=110, min_lr=1e-5, accum_steps=accum_steps
    )
    assert WarmupCosineDecay.from_config(config).get_config() == config
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule)
    )
    assert type(restored) is WarmupCosineDecay and restored.get_config() == config


def test_with_accumulation_the_schedule_counts_updates():
    """Keras calls a schedule with its count of batches; with `accum_steps`
    batches per update, update `k` (made at batch `k * accum_steps + accum_steps - 1`,
    before the count moves on) gets the rate of step `k` without accumulation."""
    plain = WarmupCosineDecay(peak_lr=1e-3, warmup_steps=4, total_steps=20, min_lr=1e-5)
    accumulated = WarmupCosineDecay(
        peak_lr=1e-3, warmup_steps=4, total_steps=20, min_lr=1e-5, accum_steps=3
    )
    for update in range(25):
        for batch in range(3 * update, 3 * update + 3):
            assert float(accumulated(batch)) == float(plain(update)), (update, batch)


@pytest.mark.parametrize("warmup, total", [(20, 10), (-1, 10), (0, 0)])
def test_bad_lengths(warmup, total):
    with pytest.raises(ValueError, match=f"warmup_steps={warmup}, total_steps={total}"):
        WarmupCosineDecay(1e-3, warmup, total)


@pytest.mark.parametrize("accum_steps", [0, -2, 1.5, True, "2", None])
def test_bad_accum_steps(accum_steps):
    with pytest.raises(ValueError, match=rf"accum_steps must be a positive int.*{accum_steps!r}"):
        WarmupCosineDecay(1e-3, 1, 10, accum_steps=accum_steps)


def test_linear_scaling_rule():
    assert scaled_learning_rate(1.5e-4, 4096) == pytest.approx(2.4e-3)
    assert scaled_learning_rate(0.1, 256) == pytest.approx(0.1)
