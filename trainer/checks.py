"""Checks that need no data, run before any corpus is generated or tokenized.

A typo in a flag must cost a second, not the minutes of tokenizing that come
before the first training step. Each check raises with one line naming the flag
or file and what to do.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from dataset.chat_formats import CHAT_FORMATS
from dataset.packing import PACKING_MODES
from dataset.sft_tokenize import TRUNCATION_POLICIES as TRUNCATION
from model import ModelConfig, get_preset
from model.lora import parse_targets
from .cli import shown_path
from .config import ConfigError, TrainConfig
from .device import DTYPES


def check_config(cfg: TrainConfig) -> None:
    """Ranges and choices of the flags, in the order --help lists them."""
    at_least = {"max_seq_len": 1, "epochs": 1, "batch_size": 1, "accumulation_steps": 1, "save_interval": 1,
                "keep_last": 1, "log_interval": 1, "eval_batches": 1, "max_steps": 0, "warmup_steps": 0,
                "eval_interval": 0, "hidden_size": 0, "num_hidden_layers": 0, "num_attention_heads": 0,
                "num_key_value_heads": 0, "intermediate_size": 0, "max_position_embeddings": 0}
    for name, low in at_least.items():
        value = getattr(cfg, name)
        if value < low:
            raise ConfigError(f"--{name} {value}: must be at least {low}")
    for name in ("learning_rate", "min_lr", "weight_decay", "grad_clip"):
        value = getattr(cfg, name)
        if not math.isfinite(value) or value < 0 or (name == "learning_rate" and value == 0):
            raise ConfigError(f"--{name} {value}: must be a finite number "
                              f"{'above 0' if name == 'learning_rate' else '0 or above'}")
    if cfg.min_lr > cfg.learning_rate:
        raise ConfigError(f"--min_lr {cfg.min_lr:g} is above --learning_rate {cfg.learning_rate:g}")
    for name in ("beta1", "beta2"):
        if not 0 <= getattr(cfg, name) < 1:
            raise ConfigError(f"--{name} {getattr(cfg, name)}: must be in [0, 1)")
    if not 0 <= cfg.val_fraction < 1:
        raise ConfigError(f"--val_fraction {cfg.val_fraction}: must be in [0, 1)")
    if cfg.truncation not in TRUNCATION:
        raise ConfigError(f"--truncation {cfg.truncation}: choose {' or '.join(TRUNCATION)}")
    if cfg.data_format and cfg.data_format not in CHAT_FORMATS:
        raise ConfigError(f"--data_format {cfg.data_format}: choose one of {', '.join(CHAT_FORMATS)} "
                          "(or leave it out to detect the format)")
    if getattr(cfg, "lora_rank", 0):  # the fine-tuning stages' options (trainer/chat_data.py)
        check_lora(cfg)
    packing = getattr(cfg, "packing", None)
    if packing is not None and packing not in PACKING_MODES:
        raise ConfigError(f"--packing {packing}: choose {', '.join(PACKING_MODES)}")
    if cfg.dtype != "auto" and cfg.dtype not in DTYPES:
        raise ConfigError(f"--dtype {cfg.dtype}: choose float32, bfloat16, float16 or auto")
    if cfg.wandb_mode not in ("offline", "online", "disabled"):
        raise ConfigError(f"--wandb_mode {cfg.wandb_mode}: choose offline, online or disabled")
    bad_epochs = [e for e in cfg.save_at_epochs if not 0 < e <= cfg.epochs]
    if bad_epochs:
        raise ConfigError(f"--save_at_epochs {bad_epochs[0]:g}: must be within the run's (0, {cfg.epochs}] epochs")


def check_lora(cfg: TrainConfig) -> None:
    if cfg.lora_rank < 0 or cfg.lora_alpha < 0 or not 0 <= cfg.lora_dropout < 1:
        raise ConfigError(f"--lora_rank {cfg.lora_rank}, --lora_alpha {cfg.lora_alpha:g}, --lora_dropout "
                          f"{cfg.lora_dropout:g}: rank and alpha 0 or more, dropout in [0, 1)")
    try:
        parse_targets(cfg.lora_target)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def check_out_dir(out_dir: str) -> None:
    """Fail before training, not at the first save an hour later, and without creating anything:
    the nearest folder that exists must be a writable folder."""
    probe = Path(out_dir).absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"--out_dir {out_dir}: not writable ({probe} is a file, not a folder)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"--out_dir {out_dir}: not writable (no write permission on {probe})")


def swiglu_width(hidden_size: int) -> int:
    """MiniMind's / LLaMA's SwiGLU width for a residual width: 8/3 of it, rounded up to a multiple of 64."""
    return 64 * math.ceil(8 * hidden_size / 3 / 64)


def model_config(cfg: TrainConfig, vocab_size: int) -> ModelConfig:
    """The shape of a model trained from scratch: --preset, then the shape flags over it."""
    try:
        base = get_preset(cfg.preset)
    except ValueError as e:
        raise ConfigError(f"--preset: {e}") from None
    if base.vocab_size != vocab_size:
        raise ConfigError(f"--preset {cfg.preset} has vocab_size {base.vocab_size} but the tokenizer has "
                          f"{vocab_size} tokens")
    changes = {"dim": cfg.hidden_size, "n_layers": cfg.num_hidden_layers, "n_heads": cfg.num_attention_heads,
               "n_kv_heads": cfg.num_key_value_heads, "max_position_embeddings": cfg.max_position_embeddings}
    changes = {k: v for k, v in changes.items() if v}
    if cfg.intermediate_size:
        changes["hidden_dim"] = cfg.intermediate_size
    elif cfg.hidden_size:
        changes["hidden_dim"] = swiglu_width(cfg.hidden_size)
    if cfg.tie_word_embeddings is not None:
        changes["tie_embeddings"] = cfg.tie_word_embeddings
    dim, heads = changes.get("dim", base.dim), changes.get("n_heads", base.n_heads)
    kv_heads = changes.get("n_kv_heads", base.n_kv_heads)
    if dim % heads:
        raise ConfigError(f"--hidden_size {dim} is not a multiple of --num_attention_heads {heads}")
    if heads % kv_heads:
        raise ConfigError(f"--num_attention_heads {heads} is not a multiple of --num_key_value_heads {kv_heads}")
    if (dim // heads) % 2:
        raise ConfigError(f"head size --hidden_size / --num_attention_heads = {dim // heads} must be even for RoPE")
    return base.with_changes(**changes)


def check_seq_len(cfg: TrainConfig, config: ModelConfig, source: str) -> None:
    if cfg.max_seq_len > config.max_position_embeddings:
        raise ConfigError(f"--max_seq_len {cfg.max_seq_len} exceeds the {config.max_position_embeddings} positions "
                          f"of {source}; lower --max_seq_len")


def check_init_file(path: str) -> None:
    if not Path(path).is_file():
        raise ConfigError(f"--init {shown_path(path)}: checkpoint not found; run the previous stage with the same "
                          "--out_dir first, or pass --init")
