"""Model checkpoints: self-describing, atomically written, safely loaded.

A model checkpoint is a plain dict of tensors and primitives:
    {"format", "config": ModelConfig.to_dict(), "tokenizer": tokenizer identity,
     "model": state_dict, "meta": {...}}
so loading needs no flags, and `torch.load(weights_only=True)` can read it
without unpickling arbitrary objects. Resumable training state (optimizer,
RNG, data position) is kept apart by the trainer; these files are what eval,
export and the next stage load.

An adapter checkpoint (a LoRA run, model/lora.py) holds only the adapters, with
the identity of the base it was trained on:
    {"format": ADAPTER_FORMAT, "config", "tokenizer", "lora": {rank, alpha, targets},
     "base": {"path", "sha256"}, "adapters": {name: tensor}, "meta"}
load_model() finds the base (the recorded path, or a file of that name next to
the adapter), checks the SHA-256 of its file, and returns the merged model, so
every reader of checkpoints (eval, serve, export, the next stage) takes either.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Protocol

import torch
import torch.nn as nn

from .config import ModelConfig
from .lora import adapter_state, apply_lora, merge_lora
from .model import SpongeBob

CHECKPOINT_FORMAT = "spongebob-model-v1"
ADAPTER_FORMAT = "spongebob-adapter-v1"


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
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, (OSError, RuntimeError)) and disk_is_full(e, path.parent):
            # torch's writer says "unexpected pos 704 vs 598" when the disk fills up: say what happened.
            raise OSError(errno.ENOSPC, f"cannot write {path}: no space left on its disk "
                                        f"({shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free); free some "
                                        "space or choose another --out_dir. Nothing was half-written: the files "
                                        "saved before are intact") from None
        raise


def disk_is_full(error: BaseException, folder: Path) -> bool:
    """Whether a failed write failed for want of space (ENOSPC, or a nearly full disk)."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    try:
        return shutil.disk_usage(folder).free < 64 * 2**20
    except OSError:
        return False


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


def checkpoint_tokenizer(path: str | Path) -> dict:
    """The identity of the tokenizer a checkpoint (or a LoRA adapter's) was trained with, read
    without loading the weights into memory (mmap); {} when the file cannot say."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # the full load that follows reports what is wrong with the file
        return {}
    return ckpt.get("tokenizer", {}) if isinstance(ckpt, dict) else {}


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
    if not isinstance(ckpt, dict) or ckpt.get("format") not in (CHECKPOINT_FORMAT, ADAPTER_FORMAT):
        raise CheckpointError(f"{path}: not a SpongeBob model checkpoint (expected format '{CHECKPOINT_FORMAT}')")
    for key in ("config", "adapters" if ckpt["format"] == ADAPTER_FORMAT else "model"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: incomplete checkpoint (no '{key}'); it was not written by SpongeBob")
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


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_adapter(path: str | Path, model: nn.Module, tokenizer_identity: dict, base: dict, lora: dict,
                 meta: dict | None = None) -> None:
    """Write only the adapters of a LoRA model, with the identity of its base ({"path", "sha256"})."""
    model = unwrap(model)
    atomic_torch_save({"format": ADAPTER_FORMAT, "config": model.config.to_dict(), "tokenizer": tokenizer_identity,
                       "lora": lora, "base": base, "adapters": adapter_state(model), "meta": meta or {}}, path)


def find_base(path: Path, base: dict) -> Path:
    """The adapter's base checkpoint: its recorded path, else a file of that name beside the adapter;
    the file's SHA-256 must be the recorded one."""
    recorded = Path(base["path"])
    for candidate in (recorded, path.parent / recorded.name):
        if candidate.is_file():
            have = file_sha256(candidate)
            if have != base["sha256"]:
                raise CheckpointError(f"{path}: adapter trained on base {base['sha256'][:12]}, but {candidate} is "
                                      f"{have[:12]}; use the checkpoint it was trained on")
            return candidate
    raise CheckpointError(f"{path}: its base checkpoint {recorded} (sha256 {base['sha256'][:12]}) is missing; "
                          f"put it back at that path or next to the adapter")


def _load_adapter(path: Path, ckpt: dict, tokenizer: TokenizerLike | None,
                  device: str | torch.device) -> tuple[SpongeBob, dict]:
    """The base with the adapter applied and merged into its weights."""
    model, _ = load_model(find_base(path, ckpt["base"]), tokenizer)
    lora = ckpt["lora"]
    apply_lora(model, lora["rank"], lora["alpha"], 0.0, tuple(lora["targets"]))
    missing, unexpected = model.load_state_dict(ckpt["adapters"], strict=False)
    expected = set(adapter_state(model))
    if unexpected or expected - set(ckpt["adapters"]):
        raise CheckpointError(f"{path}: adapters do not match their config (unexpected {unexpected[:3]})")
    return merge_lora(model).to(device).eval(), {**ckpt.get("meta", {}), "adapter": {**lora, "base": ckpt["base"]}}


def load_model(path: str | Path, tokenizer: TokenizerLike | None = None,
               device: str | torch.device = "cpu") -> tuple[SpongeBob, dict]:
    """Rebuild the model from a checkpoint alone (an adapter: its base, merged with it).
    Returns (model in eval mode, checkpoint meta)."""
    ckpt = read_checkpoint(path)
    if ckpt["format"] == ADAPTER_FORMAT:
        return _load_adapter(Path(path), ckpt, tokenizer, device)
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
