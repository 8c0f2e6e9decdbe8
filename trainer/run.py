"""run_stage: everything a stage script does not need to say.

A stage script (pretrain.py, sft.py, ...) parses its config with its own
defaults and hands over two things: how to build its data, and optionally its
loss. This module does the rest in the same order for every stage: device and
DDP setup, checks that fail fast with one line, the model (from a preset or
--init), the engine, and a clean exit.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model import CheckpointError, SpongeBob, get_preset, load_model
from tokenizer import SpongeTokenizer, load_tokenizer
from .checkpoints import RunPaths
from .config import ConfigError, TrainConfig, config_dict, parse_config
from .device import pick_device, pick_dtype
from .distributed import DistInfo, barrier, init_distributed, local_device, shutdown
from .engine import LossFn, Trainer, TrainingError, default_loss


@dataclass
class StageData:
    train: Any               # implements num_batches / batches (see engine.py)
    val: Any | None
    identity: str            # fingerprint of the data, checked on --resume
    description: str         # one line for the start-up summary


DataBuilder = Callable[[TrainConfig, SpongeTokenizer, DistInfo], StageData]
# Called once the device is known, so a loss can bring a model of its own (a teacher).
# None from it means the default loss.
LossBuilder = Callable[[TrainConfig, SpongeTokenizer, torch.device], LossFn | None]


def cli_config(description: str, stage_defaults: dict[str, Any], demo_defaults: dict[str, Any] | None = None,
               config_cls: type[TrainConfig] = TrainConfig) -> TrainConfig:
    """parse_config over sys.argv; a bad config file is one line and exit 2."""
    try:
        return parse_config(sys.argv[1:], description, stage_defaults, demo_defaults, config_cls)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def check_out_dir(out_dir: str) -> None:
    """Fail before training, not at the first save an hour later."""
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir):
            pass
    except OSError as e:
        raise ValueError(f"--out_dir {out_dir}: not writable ({e.strerror or e})") from None


def build_model(cfg: TrainConfig, tok: SpongeTokenizer) -> SpongeBob:
    """The stage's starting model: --init if given, else a fresh --preset."""
    if cfg.init:
        if not Path(cfg.init).is_file():
            raise CheckpointError(f"{cfg.init}: checkpoint not found (run the previous stage first, or pass --init)")
        model, _ = load_model(cfg.init, tokenizer=tok)
        return model.train()
    config = get_preset(cfg.preset)
    if config.vocab_size != tok.vocab_size:
        raise ValueError(f"preset {cfg.preset} has vocab_size {config.vocab_size} but the tokenizer has "
                         f"{tok.vocab_size} tokens")
    torch.manual_seed(cfg.seed)  # the same seed gives the same initial weights
    return SpongeBob(config)


def describe(cfg: TrainConfig, stage: str, model: SpongeBob, data: StageData, trainer: Trainer,
             device: torch.device, dtype: torch.dtype, dist: DistInfo) -> str:
    c = model.config
    start = f"from {cfg.init}" if cfg.init else f"preset {cfg.preset}, from scratch"
    rows = cfg.batch_size * cfg.accumulation_steps * dist.world_size
    return "\n".join([
        f"[{stage}] model: {model.num_parameters():,} params ({start}; dim {c.dim}, {c.n_layers} layers)",
        f"[{stage}] data: {data.description}",
        f"[{stage}] device {device}, dtype {str(dtype).replace('torch.', '')}, {dist.world_size} process(es)"
        f"{', compiled' if cfg.compile else ''}",
        f"[{stage}] batch {cfg.batch_size} x accumulation {cfg.accumulation_steps} x {dist.world_size} = "
        f"{rows} rows of {cfg.max_seq_len} tokens per step; {trainer.total_steps} steps "
        f"({trainer.steps_per_epoch} per epoch, epochs {cfg.epochs}"
        f"{f', capped by --max_steps {cfg.max_steps}' if cfg.max_steps else ''}); "
        f"lr {cfg.learning_rate:g} -> {cfg.min_lr:g}, warmup {cfg.warmup_steps}",
    ])


def _train(cfg: TrainConfig, stage: str, build_data: DataBuilder, build_loss: LossBuilder | None) -> None:
    device = pick_device(cfg.device)
    dist = init_distributed(device)
    device = local_device(device, dist)
    dtype = pick_dtype(cfg.dtype, device)
    tok = load_tokenizer()
    if dist.is_main:
        check_out_dir(cfg.out_dir)
        data = build_data(cfg, tok, dist)   # rank 0 prepares (pretokenizes) first ...
    barrier()
    if not dist.is_main:
        data = build_data(cfg, tok, dist)   # ... the others then find it cached
    model = build_model(cfg, tok)
    loss_fn = (build_loss(cfg, tok, device) if build_loss else None) or default_loss
    trainer = Trainer(cfg, model, data.train, data.val, tok.identity(), stage, device, dtype, dist,
                      data_identity=data.identity, loss_fn=loss_fn)
    if dist.is_main:
        print(describe(cfg, stage, model, data, trainer, device, dtype, dist))
        paths = RunPaths(Path(cfg.out_dir), stage)
        paths.run_dir.mkdir(parents=True, exist_ok=True)
        effective = {"stage": stage, "config": config_dict(cfg), "model": model.config.to_dict(),
                     "device": str(device), "dtype": str(dtype), "world_size": dist.world_size,
                     "data": data.description, "data_identity": data.identity}
        paths.config.write_text(json.dumps(effective, indent=2, ensure_ascii=False) + "\n")
    trainer.fit()


def run_stage(cfg: TrainConfig, stage: str, build_data: DataBuilder, build_loss: LossBuilder | None = None) -> None:
    """Train one stage, turning user errors into one line and a non-zero exit.
    build_loss(cfg, tok, device) gives the stage's loss; the default is the
    cross-entropy on the trained tokens (weighted when batches carry loss_weight).
    Set SPONGEBOB_DEBUG=1 to get the full traceback instead."""
    debug = bool(os.environ.get("SPONGEBOB_DEBUG"))
    try:
        _train(cfg, stage, build_data, build_loss)
    except KeyboardInterrupt as e:
        print(f"\n{e}" if str(e) else "\ninterrupted", file=sys.stderr)
        sys.exit(130)
    except (TrainingError, ValueError, OSError) as e:  # ConfigError, DataError, CheckpointError, ...
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1 if isinstance(e, TrainingError) else 2)
    finally:
        shutdown()
