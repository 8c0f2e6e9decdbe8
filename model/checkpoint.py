"""Model checkpoints: self-describing, atomically written, safely loaded.

A model checkpoint is a plain dict of tensors and primitives:
    {"format", "config": ModelConfig.to_dict(), "tokenizer": tokenizer identity,
     "model": state_dict, "meta": {...}}
so loading needs no flags, and `torch.load(weights_only=True)` can read it
without unpickling arbitrary objects. Resumable training state (optimizer,
RNG, data position) is kept apart by the trainer; these files are what eval,
export and the next stage load.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol

import torch
import torch.nn as nn

from .config import ModelConfig
from .model import SpongeBob

CHECKPOINT_FORMAT = "spongebob-model-v1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with a one-line reason."""


class TokenizerLike(Protocol):
    vocab_size: int

    def identity(self) -> dict: ...


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DDP (.module) and torch.compile (._orig_mod) wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def atomic_torch_save(obj: object, path: str | Path) -> None:
    """torch.save to a temp file in the same directory, fsync, then rename.

    A rename within one filesystem is atomic, so a crash or kill mid-save
    leaves either the old file or the new one, never a truncated mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(path: str | Path, model: nn.Module, tokenizer_identity: dict, meta: dict | None = None) -> None:
    """Write a self-describing model checkpoint atomically."""
    model = unwrap(model)
    atomic_torch_save({
        "format": CHECKPOINT_FORMAT,
        "config": model.config.to_dict(),
        "tokenizer": tokenizer_identity,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta or {},
    }, path)


def read_checkpoint(path: str | Path) -> dict:
    """Load and validate a checkpoint dict without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, not a torch file, or a pickle with foreign objects
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a loadable checkpoint ({reason[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a SpongeBob model checkpoint (expected format '{CHECKPOINT_FORMAT}')")
    return ckpt


def check_tokenizer(config: ModelConfig, ckpt_identity: dict, tokenizer: TokenizerLike, where: str) -> None:
    """Refuse a tokenizer whose vocabulary cannot be the one the model was trained with."""
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(f"{where}: model vocab_size is {config.vocab_size} but the tokenizer has "
                              f"{tokenizer.vocab_size} tokens; use the tokenizer the model was trained with")
    want, have = ckpt_identity.get("sha256"), tokenizer.identity().get("sha256")
    if want and have and want != have:
        raise CheckpointError(f"{where}: trained with tokenizer {want[:12]} but the loaded tokenizer is "
                              f"{have[:12]} (same size {tokenizer.vocab_size}, different tokens)")


# The config fields that decide tensor shapes: what a reader needs to see which one is off.
SHAPE_FIELDS = ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim")


def first_shape_mismatch(model: nn.Module, weights: dict) -> str | None:
    """One line naming the first checkpoint tensor that cannot go into `model`, or None.

    Checked before load_state_dict because its error lists every mismatch over many
    lines, too long for a one-line message and unreadable when cut short.
    """
    expected = model.state_dict()
    bad = [name for name, value in weights.items() if name in expected
           and (not isinstance(value, torch.Tensor) or value.shape != expected[name].shape)]
    if not bad:
        return None
    name, value = bad[0], weights[bad[0]]
    if not isinstance(value, torch.Tensor):
        return f"{name} in the checkpoint is not a tensor (found {type(value).__name__})"
    config = " ".join(f"{f}={getattr(model.config, f)}" for f in SHAPE_FIELDS)
    more = f"; {len(bad) - 1} more tensor(s) differ too" if len(bad) > 1 else ""
    return (f"tensor {name} has shape {tuple(value.shape)} in the checkpoint but {tuple(expected[name].shape)} "
            f"in the model (its config: {config}){more}")


def load_model(path: str | Path, tokenizer: TokenizerLike | None = None,
               device: str | torch.device = "cpu") -> tuple[SpongeBob, dict]:
    """Rebuild the model from a checkpoint alone. Returns (model in eval mode, checkpoint meta)."""
    ckpt = read_checkpoint(path)
    try:
        config = ModelConfig.from_dict(ckpt["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad model config ({e})") from None
    if tokenizer is not None:
        check_tokenizer(config, ckpt.get("tokenizer", {}), tokenizer, str(path))
    model = SpongeBob(config)
    mismatch = first_shape_mismatch(model, ckpt["model"])
    if mismatch:
        raise CheckpointError(f"{path}: {mismatch}")
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match its config "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.to(device).eval(), ckpt.get("meta", {})
