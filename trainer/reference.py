"""The reference model of DPO and GRPO, written once: the starting model, frozen.

Full fine-tuning holds a second copy of the starting checkpoint (--init), frozen.
A LoRA run needs no copy: the base under the adapters IS the starting model, so the
reference is the same model with its adapters switched off for one forward.
Either way the reference sees the batch exactly as the policy does, packed positions
and attention mask included.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from model import SpongeBob, load_model
from model.lora import adapter_parameters, set_adapters
from tokenizer import SpongeTokenizer
from .stage import Batch

Reference = Callable[[Batch], torch.Tensor]  # batch -> logits, computed without gradients
PACKED_INPUTS = ("position_ids", "attn_mask")


def packed_inputs(batch: Batch) -> dict[str, torch.Tensor]:
    """The inputs besides input_ids that make a packed row read as separate conversations."""
    return {k: batch[k] for k in PACKED_INPUTS if k in batch}


def reference_model(init: str, model: SpongeBob, tok: SpongeTokenizer, device: torch.device) -> Reference:
    """The reference for the policy `model` that started from the checkpoint `init`."""
    return AdaptersOff(model) if adapter_parameters(model) else FrozenCopy(init, tok, device)


class FrozenCopy:
    """The starting model, loaded once more and frozen: the reference of full fine-tuning."""

    def __init__(self, path: str, tok: SpongeTokenizer, device: torch.device):
        self.model, _ = load_model(path, tokenizer=tok, device=device)
        self.model.requires_grad_(False)

    @torch.no_grad()
    def __call__(self, batch: Batch) -> torch.Tensor:
        return self.model(batch["input_ids"], **packed_inputs(batch))


class AdaptersOff:
    """With LoRA the reference is the base itself: the same model with its adapters off, no second copy."""

    def __init__(self, model: SpongeBob):
        self.model = model

    @torch.no_grad()
    def __call__(self, batch: Batch) -> torch.Tensor:
        set_adapters(self.model, False)
        try:
            return self.model(batch["input_ids"], **packed_inputs(batch))
        finally:
            set_adapters(self.model, True)
