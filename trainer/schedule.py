"""Learning-rate schedule: linear warmup to the peak, then cosine decay to min_lr.

Unlike the reference scripts, the warmup is applied and the peak is exactly
--learning_rate (theirs started the cosine at 1.1 x lr and ignored warmup).
"""
from __future__ import annotations

import math


def lr_at(step: int, total_steps: int, peak_lr: float, min_lr: float, warmup_steps: int) -> float:
    """Learning rate for optimizer step `step` (0-based) of `total_steps`.

    Warmup: step 0 gets peak/warmup, step warmup-1 gets the full peak.
    Decay:  from peak at step `warmup` down to min_lr at the last step.
    """
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak_lr - min_lr)
