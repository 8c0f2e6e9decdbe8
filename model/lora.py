"""LoRA: train a low-rank update next to frozen weights (Hu et al. 2021), written out in full.

For a linear layer y = W x, LoRA learns y = W x + (alpha / r) * B A x, with A (r x in)
and B (out x r), r much smaller than in and out. B starts at zero, so a fresh adapter
changes nothing; A starts like a normal layer (Kaiming-uniform, as the paper's code
and PEFT do), so the first update already moves B in a useful direction. Only A and
B train: the optimizer holds 2 x r x (in + out) numbers per layer instead of in x out,
and the adapter file is that small too.

Our layer names are the Llama names LLaMA-Factory's --lora_target uses:
q_proj, k_proj, v_proj, o_proj (attention) and gate_proj, up_proj, down_proj (MLP).
A LoRALinear is an nn.Linear, so the base weight keeps its name ("layers.0.attn.q_proj.weight")
and every name map, checkpoint and export keeps working; the adapter adds
"...q_proj.lora_A" and "...q_proj.lora_B".
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Linear):
    """nn.Linear plus a trainable low-rank update; `enabled = False` gives the base layer alone."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__(base.in_features, base.out_features, bias=False, device=base.weight.device)
        self.weight = base.weight  # the same frozen tensor, under the same name
        self.weight.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout)
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight)
        if not self.enabled:
            return y
        return y + F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B) * self.scale

    def delta(self) -> torch.Tensor:
        """The update the adapter adds to the weight: (alpha / r) * B A, in fp32."""
        return (self.lora_B.float() @ self.lora_A.float()) * self.scale


def parse_targets(text: str) -> tuple[str, ...]:
    """'q_proj,v_proj' or 'all' -> module names; an unknown name is one line listing the valid ones."""
    names = LORA_TARGETS if text.strip() == "all" else tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [n for n in names if n not in LORA_TARGETS]
    if unknown or not names:
        raise ValueError(f"--lora_target {text}: {'no such module ' + repr(unknown[0]) if unknown else 'empty'}; "
                         f"choose from {', '.join(LORA_TARGETS)} (comma-separated) or all")
    return names


def apply_lora(model: nn.Module, rank: int, alpha: float, dropout: float, targets: tuple[str, ...]) -> int:
    """Freeze every weight, then put an adapter on each targeted layer. Returns the adapters' size."""
    model.requires_grad_(False)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if name in targets and isinstance(child, nn.Linear) and not isinstance(child, LoRALinear):
                setattr(parent, name, LoRALinear(child, rank, alpha, dropout))
    return sum(p.numel() for p in adapter_parameters(model))


def lora_layers(model: nn.Module) -> Iterator[tuple[str, LoRALinear]]:
    return ((name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear))


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for _, m in lora_layers(model) for p in (m.lora_A, m.lora_B)]


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapters, by our names ("layers.0.attn.q_proj.lora_A")."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if k.endswith((".lora_A", ".lora_B"))}


def set_adapters(model: nn.Module, enabled: bool) -> None:
    """Switch every adapter on or off (DPO's reference is the base: the adapters off)."""
    for _, layer in lora_layers(model):
        layer.enabled = enabled


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its weight and put plain nn.Linear layers back: W <- W + (alpha / r) B A."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                plain = nn.Linear(child.in_features, child.out_features, bias=False, device=child.weight.device)
                plain.weight = nn.Parameter((child.weight.float() + child.delta()).to(child.weight.dtype))
                setattr(parent, name, plain)
    return model
