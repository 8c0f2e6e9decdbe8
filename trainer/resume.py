"""What a resumed run must share with the saved one, and the RNG state.

Exact resume means the same data order and the same schedule, so every
option that shapes either must match; the others (logging, saving, device,
compile) may change between runs.
"""
from __future__ import annotations

import torch

from .config import TrainConfig, config_dict

MUST_MATCH = ("data_path", "val_fraction", "max_seq_len", "batch_size", "accumulation_steps", "epochs",
              "max_steps", "learning_rate", "min_lr", "warmup_steps", "weight_decay", "beta1", "beta2",
              "grad_clip", "seed", "preset", "init", "text_field", "data_format", "truncation", "hidden_size",
              "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
              "max_position_embeddings", "tie_word_embeddings", "packing", "lora_rank", "lora_alpha",
              "lora_dropout", "lora_target")


def check_resumable(state: dict, cfg: TrainConfig, world_size: int, data_identity: str) -> None:
    saved, now = state["config"], config_dict(cfg)
    for key in MUST_MATCH:
        if saved.get(key) != now.get(key):  # a stage's own options (packing) exist only in its config
            raise ValueError(f"--resume: {key} was {saved.get(key)!r} in the saved run ({state['path']}) but is "
                             f"{now.get(key)!r} now; resume with the same settings or use a new --out_dir")
    if state["world_size"] != world_size:
        raise ValueError(f"--resume: the saved run used {state['world_size']} processes, this one {world_size}; "
                         "the data shards would differ")
    if state["data_identity"] != data_identity:
        raise ValueError("--resume: the training data changed since the state was saved "
                         f"({state['data_identity']} -> {data_identity})")


def rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
