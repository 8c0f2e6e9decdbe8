"""Checks that need no data, run before any corpus is generated or tokenized.

A typo in a flag must cost a second, not the minutes of tokenizing that come
before the first training step. Each check raises with one line naming the flag
or file and what to do. The flags' own ranges and choices are declared with the
flags (option(check=...) in config.py and the stage configs); here are the checks
that need the file system or the model's shape.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from common.cli import shown_path
from model import ModelConfig, get_preset
from .config import ConfigError, TrainConfig


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
    # The embedding and the head have one row per token of the tokenizer in use (an own
    # tokenizer from train_tokenizer.py may have another size than the preset's 6400).
    changes = {"vocab_size": vocab_size,"dim": cfg.hidden_size, "n_layers": cfg.num_hidden_layers, "n_heads": cfg.num_attention_heads,
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
