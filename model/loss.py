"""The network's training loss: next-token cross-entropy over the targets that are trained.

One plain F.cross_entropy over the fp32 logits. A chunked form that never held all the logits
(its gradients written by hand) was measured against it and removed: bench/LOG.md, "The chunked
loss". Per-token weights (distillation's tags) make the loss sum(w * ce) over the trained
targets, divided by sum(w) for reduction="mean", or left as the sum for "sum": the engine
divides by the whole step's count itself (trainer/engine.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # targets with this value get no loss (prompt tokens, padding)


def token_loss(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None,
               reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of logits (..., vocab) against targets (...), IGNORE_INDEX ignored; with weight
    (targets' shape) the weighted sum, over the weights' total for "mean"."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got '{reduction}'")
    flat = logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1)
    trained = (targets.reshape(-1) != IGNORE_INDEX).float()
    if weight is None:
        total, count = F.cross_entropy(*flat, ignore_index=IGNORE_INDEX, reduction="sum"), trained.sum()
    else:
        w = weight.reshape(-1).float() * trained
        total, count = (F.cross_entropy(*flat, ignore_index=IGNORE_INDEX, reduction="none") * w).sum(), w.sum()
    return total if reduction == "sum" else total / count.clamp(min=1e-8)
