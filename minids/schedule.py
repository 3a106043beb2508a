"""Learning-rate schedules: linear warm-up, then DeepSeek LLM's multi-step decay (or cosine, for comparison).

The paper (arXiv 2401.02954, section 2.3) trains with 2000 warm-up steps, then

    peak lr                  until 80% of the training tokens,
    31.6% of peak (~ 1/sqrt(10))  from 80% to 90%,
    10% of peak              for the last 10%.

Its reason: the final loss matches a cosine schedule, but the first 80% of a run can be reused when training
is continued to a larger budget (only the two short decay phases are redone).

Steps are counted from 0 to total_steps - 1. Warm-up rises linearly from peak/warmup_steps at step 0 to
peak at step warmup_steps - 1, so no step ever trains with lr 0.
"""

from __future__ import annotations

import math

MULTISTEP_FRACTIONS = (0.8, 0.9)  # where the two drops happen, as fractions of total_steps
MULTISTEP_FACTORS = (1.0, 0.316, 0.1)  # lr / peak before, between and after the drops


def _check(step: int, total_steps: int, peak_lr: float, warmup_steps: int) -> None:
    for name, value in (("step", step), ("total_steps", total_steps), ("warmup_steps", warmup_steps)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if not 0 <= step < total_steps:
        raise ValueError(f"step must lie in [0, total_steps) = [0, {total_steps}), got {step}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must lie in [0, total_steps] = [0, {total_steps}], got {warmup_steps}")
    if not peak_lr > 0:
        raise ValueError(f"peak_lr must be positive, got {peak_lr}")


def _warmup(step: int, peak_lr: float, warmup_steps: int) -> float | None:
    """The warm-up lr at `step`, or None once warm-up is over."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    return None


def multistep_lr(step: int, total_steps: int, peak_lr: float, warmup_steps: int) -> float:
    """DeepSeek LLM's schedule: warm-up, peak until 80% of steps, 31.6% of peak until 90%, then 10%.

    >>> [multistep_lr(s, 10, 1.0, 2) for s in range(10)]
    [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.316, 0.1]
    """
    _check(step, total_steps, peak_lr, warmup_steps)
    warm = _warmup(step, peak_lr, warmup_steps)
    if warm is not None:
        return warm
    # Integer comparisons (10 * step >= 8 * total_steps), so that no float rounding moves a boundary.
    first, second = (round(10 * f) for f in MULTISTEP_FRACTIONS)
    if 10 * step < first * total_steps:
        return peak_lr * MULTISTEP_FACTORS[0]
    if 10 * step < second * total_steps:
        return peak_lr * MULTISTEP_FACTORS[1]
    return peak_lr * MULTISTEP_FACTORS[2]


def cosine_lr(step: int, total_steps: int, peak_lr: float, warmup_steps: int, min_ratio: float = 0.1) -> float:
    """Warm-up, then half a cosine from peak_lr down to min_ratio * peak_lr at the last step."""
    _check(step, total_steps, peak_lr, warmup_steps)
    if not 0 <= min_ratio <= 1:
        raise ValueError(f"min_ratio must lie in [0, 1], got {min_ratio}")
    warm = _warmup(step, peak_lr, warmup_steps)
    if warm is not None:
        return warm
    decay_steps = total_steps - warmup_steps
    progress = (step - warmup_steps) / max(decay_steps - 1, 1)  # 0 after warm-up, 1 at the last step
    floor = min_ratio * peak_lr
    return floor + (peak_lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


SCHEDULES = {"multistep": multistep_lr, "cosine": cosine_lr}


def lr_at(schedule: str, step: int, total_steps: int, peak_lr: float, warmup_steps: int) -> float:
    """The lr of the named schedule ("multistep" or "cosine") at `step`."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    return SCHEDULES[schedule](step, total_steps, peak_lr, warmup_steps)
