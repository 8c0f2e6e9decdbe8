"""AdamW with the usual split: weight decay on matrices and embeddings, none
on norm gains (decaying a gain towards 0 only fights the normalisation)."""
from __future__ import annotations

import torch

from .config import TrainConfig


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
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
