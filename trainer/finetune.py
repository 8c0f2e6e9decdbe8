"""The options every stage after pretraining shares: the chat format of its data, and LoRA.

GRPO reads problems in those formats and may train adapters, so it takes these and not the SFT
rows' layout (packing, truncation: trainer/chat_data.py's ChatConfig, for sft, sft_long,
distill and dpo).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dataset.chat_formats import CHAT_FORMATS
from model import SpongeBob, file_sha256
from model.lora import adapter_parameters, apply_lora, parse_targets
from .config import TrainConfig, at_least, one_of, option, parses, within


@dataclass
class FinetuneConfig(TrainConfig):
    data_format: str = option("", "chat data format: minimind, sharegpt, openai, alpaca or qa; empty = detect it",
                              check=one_of(*CHAT_FORMATS, empty=True))
    # LoRA, with LLaMA-Factory's names (model/lora.py)
    lora_rank: int = option(0, "LoRA rank: train low-rank adapters on frozen weights; 0 = full fine-tuning",
                            check=at_least(0))
    lora_alpha: float = option(0.0, "LoRA scale numerator (updates are scaled alpha / rank); 0 = 2 x --lora_rank",
                               check=at_least(0))
    lora_dropout: float = option(0.0, "dropout on the adapters' input", check=within(0, 1))
    lora_target: str = option("all", "layers that get adapters: a comma list of q_proj,k_proj,v_proj,o_proj,"
                                     "gate_proj,up_proj,down_proj, or all",
                              check=parses(parse_targets, "lora_target"))

    def alpha(self) -> float:
        return self.lora_alpha or 2.0 * self.lora_rank

    def adapt(self, model: SpongeBob) -> None:
        """Under --lora_rank: freeze the loaded weights and put adapters on the --lora_target layers."""
        if self.lora_rank:
            torch.manual_seed(self.seed)  # the same seed gives the same adapter initialisation
            apply_lora(model, self.lora_rank, self.alpha(), self.lora_dropout, parse_targets(self.lora_target))

    def adapter_base(self, model: SpongeBob) -> dict | None:
        """A LoRA run saves only its adapters, with the identity of the checkpoint under them."""
        if not adapter_parameters(model):
            return None
        return {"path": self.init, "sha256": file_sha256(self.init), "rank": self.lora_rank, "alpha": self.alpha(),
                "targets": list(parse_targets(self.lora_target))}

    def describe_adapters(self, model: SpongeBob) -> str:
        if not self.lora_rank:
            return ""
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return (f"; LoRA rank {self.lora_rank} on {self.lora_target}: {trainable:,} trainable "
                f"({trainable / model.num_parameters():.2%})")
