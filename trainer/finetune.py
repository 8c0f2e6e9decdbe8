"""The options every stage after pretraining shares: the chat format of its data, and LoRA.

GRPO reads problems in those formats and may train adapters, so it takes these and not the SFT
rows' layout (packing, truncation: trainer/chat_data.py's ChatConfig, for sft, sft_long,
distill and dpo).
"""
from __future__ import annotations

from dataclasses import dataclass

from dataset.chat_formats import CHAT_FORMATS
from model.lora import parse_targets
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
