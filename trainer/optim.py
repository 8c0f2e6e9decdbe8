"""The optimizer and its learning-rate schedule.

AdamW with the usual split: weight decay on matrices and embeddings, none on norm gains
(decaying a gain towards 0 only fights the normalisation). The schedule: linear warmup to
the peak, then cosine decay to min_lr. Unlike the reference scripts, the warmup is applied
and the peak is exactly --learning_rate (theirs started the cosine at 1.1 x lr and ignored warmup).
"""
from __future__ import annotations

import math

import torch

from .config import TrainConfig


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]  # a tied head appears once
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel does the whole update in one pass (one launch on a GPU), on CUDA, CPU and
    # MPS alike, and it can skip a non-finite step on the device (the engine hands it found_inf).
    try:
        return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), fused=True)
    except (RuntimeError, TypeError):  # a device or torch version without the fused kernel
        return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


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
