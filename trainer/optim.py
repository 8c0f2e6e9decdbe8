"""The optimizers and the learning-rate schedule.

--optimizer muon (pretraining's default): Muon for the 2-D matrices inside the blocks, AdamW for the
embedding, the head and the norm gains. Muon is SGD with Nesterov momentum whose update is
orthogonalised (five Newton-Schulz steps take it close to U V^T of its SVD), so every direction of a
matrix moves by the same amount. Its update is scaled to the RMS an AdamW step would have
(0.2 sqrt(max(rows, cols)), Moonshot's rule), so one --learning_rate and one --weight_decay mean the
same for both. Written here rather than torch.optim.Muon, which orthogonalises in bf16 always: on a
CPU without native bf16 that is emulated and several times slower; here it runs in the step's dtype.
Measured: the same held-out loss in fewer tokens than AdamW (bench/bench_optim.py).
--optimizer adamw: AdamW everywhere, as MiniMind trains (for comparison and reproduction).

AdamW's groups: the embedding and the head each with their own lr (a multiple of --learning_rate:
the embedding's rows are updated only where their token occurs, so they can take larger steps),
weight decay on matrices and embeddings, none on norm gains (decaying a gain towards 0 only
fights the normalisation). The fused kernel does the whole update in one pass and
can skip a non-finite step on the device (the engine hands it found_inf).

The schedule: linear warmup to the peak, then --lr_schedule cosine (to --min_lr at the last step)
or wsd (warmup-stable-decay: the peak until the last --decay_fraction of the steps, then a linear
decay to --min_lr). The peak is exactly --learning_rate (the reference scripts started the cosine at
1.1 x lr and ignored warmup).
"""
from __future__ import annotations

import math

import torch

from .config import TrainConfig


class Muon(torch.optim.Optimizer):
    def __init__(self, params: list[torch.Tensor], lr: float, weight_decay: float, momentum: float = 0.95,
                 dtype: torch.dtype = torch.bfloat16):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum))
        self.dtype = dtype  # of the orthogonalisation: bf16 where matmuls are fast in it, else fp32

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad for p in params]
            momenta = [self.state[p].setdefault("momentum", torch.zeros_like(p)) for p in params]
            torch._foreach_lerp_(momenta, grads, 1 - group["momentum"])
            updates = torch._foreach_lerp(grads, momenta, group["momentum"])  # Nesterov
            torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
            for shape in {p.shape for p in params}:  # the matrices of one shape orthogonalise as one batch
                index = [i for i, p in enumerate(params) if p.shape == shape]
                update = orthogonalise(torch.stack([updates[i] for i in index]), self.dtype)
                torch._foreach_add_([params[i] for i in index], list(update.to(params[index[0]].dtype).unbind()),
                                    alpha=-group["lr"] * 0.2 * math.sqrt(max(shape)))


def orthogonalise(g: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Newton-Schulz on each matrix of g (..., rows, cols): X <- a X + (b A + c A^2) X with A = X X^T,
    from X = G / |G|, five times. The coefficients (Keller Jordan's) push every singular value towards
    1 as fast as they can."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.to(dtype)
    wide = x.size(-2) <= x.size(-1)
    x = x if wide else x.mT  # the smaller Gram matrix
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(5):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x if wide else x.mT


def make_optimizers(model: torch.nn.Module, cfg: TrainConfig, dtype: torch.dtype = torch.float32,
                    ) -> list[torch.optim.Optimizer]:
    """[AdamW] or [Muon, AdamW] over the trainable parameters (a tied head appears once, as the
    embedding); dtype: the step's compute dtype (Muon orthogonalises in bf16 under bf16, else fp32).
    Each group's lr is --learning_rate times its lr_scale (set_lr): under muon the embedding's and
    the head's have their own (--embedding_lr_scale, --head_lr_scale)."""
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    muon = cfg.optimizer == "muon"  # AdamW everywhere (--optimizer adamw) is MiniMind's recipe: one lr for all
    # LoRA's factors stay with AdamW: a rank-r factor has only r directions, orthogonalising it would
    # give each the same step whatever the gradient says.
    hidden = [p for name, p in params if muon and name.startswith("layers.") and p.dim() == 2
              and "lora_" not in name]
    rest = [(name, p) for name, p in params if all(p is not h for h in hidden)]
    scale = {"embed.": cfg.embedding_lr_scale if muon else 1.0, "lm_head.": cfg.head_lr_scale if muon else 1.0}
    groups = [{"params": [p for name, p in rest if p.dim() >= 2 and name.startswith(prefix)], "lr_scale": s,
               "weight_decay": cfg.weight_decay} for prefix, s in scale.items()]
    groups += [{"params": [p for name, p in rest if p.dim() >= 2 and not name.startswith(tuple(scale))],
                "lr_scale": 1.0, "weight_decay": cfg.weight_decay},
               {"params": [p for _, p in rest if p.dim() < 2], "lr_scale": 1.0, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    try:
        adamw = torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), fused=True)
    except (RuntimeError, TypeError):  # a device or torch version without the fused kernel
        adamw = torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2))
    if not hidden:
        return [adamw]
    return [Muon(hidden, cfg.learning_rate, cfg.weight_decay, dtype=torch.bfloat16 if dtype == torch.bfloat16
                 else torch.float32), adamw]


def set_lr(optimizers: list[torch.optim.Optimizer], lr: float) -> None:
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)


def lr_at(step: int, total_steps: int, peak_lr: float, min_lr: float, warmup_steps: int,
          schedule: str = "cosine", decay_fraction: float = 0.2) -> float:
    """Learning rate for optimizer step `step` (0-based) of `total_steps`.

    Warmup: step 0 gets peak/warmup, step warmup-1 gets the full peak.
    cosine: from the peak at step `warmup` down to min_lr at the last step.
    wsd:    the peak until decay_start(), then linearly down to min_lr at the last step.
    """
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    if schedule == "wsd":
        start = decay_start(total_steps, warmup_steps, decay_fraction)
        if step < start:
            return peak_lr
        return peak_lr + (min_lr - peak_lr) * (step - start + 1) / (total_steps - start)
    decay_steps = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak_lr - min_lr)


def decay_start(total_steps: int, warmup_steps: int, decay_fraction: float) -> int:
    """The first step of a WSD run's decay: the last decay_fraction of the steps decay (at least one)."""
    return max(warmup_steps, total_steps - max(1, round(decay_fraction * total_steps)))
