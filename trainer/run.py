"""train_stage: a stage script's whole main, in the same order for every stage.

A stage script (pretrain.py, sft.py, ...) hands over its defaults and three things (trainer/stage.py):
how to build its data, its loop (trainer/loop.py's fit, or its own: grpo.py) and optionally its loss.
This module does the rest: the flags, device and DDP, the checks that fail fast with one line, the
model (from a preset or --init), the memory plan, the engine, the loop, and a clean exit with one line
for every user error.
"""
from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from common.cli import shown_path
from common.device import enable_tf32, pick_compile, pick_device, pick_dtype
from common.stages import stage as stage_row
from model import ModelConfig, SpongeBob, checkpoint_tokenizer, get_preset, load_model
from tokenizer import SpongeTokenizer, load_tokenizer, tokenizer_for
from . import ops
from .checkpoints import RunPaths, list_states
from .config import ConfigError, TrainConfig, config_dict, parse_config
from .distributed import DistInfo, barrier, init_distributed, local_device, shutdown
from .engine import Engine, TrainingError
from .stage import StageData, StageLoss


DataBuilder = Callable[[TrainConfig, SpongeTokenizer, DistInfo], StageData]
# Called once the device and the starting model are known, so a loss can bring a model of its own
# (a teacher, DPO's reference) or use the trained one (LoRA's adapters-off reference); None: the loop's own.
LossBuilder = Callable[[TrainConfig, SpongeTokenizer, torch.device, SpongeBob], StageLoss | None]
Loop = Callable[[Engine, StageData, StageLoss | None], None]  # trainer/loop.py's fit, or the stage's own


def train_stage(name: str, description: str, reference: dict[str, Any], demo: dict[str, Any],
                build_data: DataBuilder, loop: Loop, build_loss: LossBuilder | None = None,
                config_cls: type[TrainConfig] = TrainConfig, fp32_cpu_demo: dict[str, Any] | None = None) -> None:
    """A stage script's whole main: its flags over its REFERENCE and DEMO defaults (and, on a CPU that
    trains in fp32, its FP32_CPU_DEMO), starting from the previous stage's weights that the table of
    stages names (common/stages.py). A bad flag is one line and exit 2."""
    try:
        cfg = parse_config(sys.argv[1:], description, reference, demo, config_cls, stage_row(name).previous,
                           fp32_cpu_demo)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    run_stage(cfg, name, build_data, loop, build_loss)


def run_stage(cfg: TrainConfig, stage: str, build_data: DataBuilder, loop: Loop,
              build_loss: LossBuilder | None = None) -> None:
    """Train one stage, turning user errors into one line and a non-zero exit
    (SPONGEBOB_DEBUG=1 gives the full traceback instead)."""
    try:
        _train(cfg, stage, build_data, build_loss, loop)
    except KeyboardInterrupt as e:
        print(f"\n{e}" if str(e) else "\ninterrupted", file=sys.stderr)
        sys.exit(130)
    except torch.OutOfMemoryError:
        print(f"error: out of memory at --batch_size {cfg.batch_size} x --max_seq_len {cfg.max_seq_len}: lower "
              "--batch_size (raise --accumulation_steps to keep the same effective batch) or --max_seq_len",
              file=sys.stderr)
        sys.exit(1)
    except (TrainingError, ValueError, OSError) as e:  # ConfigError, DataError, CheckpointError, ...
        if os.environ.get("SPONGEBOB_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1 if isinstance(e, TrainingError) else 2)
    finally:
        shutdown()


def _train(cfg: TrainConfig, stage: str, build_data: DataBuilder, build_loss: LossBuilder | None,
           loop: Loop) -> None:
    # Everything that needs no data first: a typo must not cost the minutes of tokenizing.
    cfg.check()
    device = pick_device(cfg.device)
    dist = init_distributed(device)
    device = local_device(device, dist)
    dtype = pick_dtype(cfg.dtype, device)
    cfg.compile = pick_compile(cfg.compile, device)
    enable_tf32(device)
    # The tokenizer: --tokenizer_dir, else the one --init was trained with (a checkpoint records an own
    # tokenizer's directory), else the shipped one.
    tok = (load_tokenizer(cfg.tokenizer_dir) if cfg.tokenizer_dir else
           tokenizer_for(checkpoint_tokenizer(cfg.init)) if cfg.init and Path(cfg.init).is_file() else load_tokenizer())
    paths = RunPaths(Path(cfg.out_dir), stage)
    check_out_dir(cfg.out_dir)
    if cfg.resume and not list_states(paths):
        raise ValueError(f"--resume: no saved training state in {shown_path(paths.state_dir)}; "
                         "run once without --resume first")
    if not cfg.resume:
        ops.fresh_start(paths, cfg.overwrite, dist)
    model = build_model(cfg, tok)
    if cfg.resume:
        ops.resume_elsewhere(cfg, paths, dist)
    ops.fit_memory(cfg, model, device, dtype, dist)
    loss_fn = build_loss(cfg, tok, device, model) if build_loss else None
    if dist.is_main:
        data = build_data(cfg, tok, dist)   # rank 0 prepares (pretokenizes) first ...
    barrier(long=True)                      # (which may take longer than NCCL's timeout)
    if not dist.is_main:
        data = build_data(cfg, tok, dist)   # ... the others then find it cached
    steps = data.steps_per_epoch(cfg.batch_size, cfg.accumulation_steps, cfg.max_seq_len)
    engine = Engine(cfg, model, stage, device, dtype, dist, steps, tok.record(),
                    data.identity, cfg.adapter_base(model))
    if dist.is_main:
        print(describe(cfg, stage, model, data, engine, dist))
        paths.run_dir.mkdir(parents=True, exist_ok=True)
        effective = {"stage": stage, "config": config_dict(cfg), "model": model.config.to_dict(),
                     "device": str(device), "dtype": str(dtype), "world_size": dist.world_size,
                     "data": data.description, "data_identity": data.identity}
        paths.config.write_text(json.dumps(effective, indent=2, ensure_ascii=False) + "\n")
    loop(engine, data, loss_fn)


def build_model(cfg: TrainConfig, tok: SpongeTokenizer) -> SpongeBob:
    """The stage's starting model: --init if given (with the stage's change to it: LoRA adapters under
    --lora_rank, trainer/finetune.py), else a fresh --preset with the shape flags over it."""
    if cfg.init:
        check_init_file(cfg.init)
        model, _ = load_model(cfg.init, tokenizer=tok)
        check_seq_len(cfg, model.config, f"--init {cfg.init}")
        cfg.adapt(model)
        return model.train()
    config = model_config(cfg, tok.vocab_size)
    check_seq_len(cfg, config, "the model (--max_position_embeddings)")
    torch.manual_seed(cfg.seed)  # the same seed gives the same initial weights
    return SpongeBob(config)


def describe(cfg: TrainConfig, stage: str, model: SpongeBob, data: StageData, engine: Engine, dist: DistInfo) -> str:
    c, planned = model.config, cfg.epochs * engine.steps_per_epoch
    start = f"from {cfg.init}" if cfg.init else f"preset {cfg.preset}, from scratch"
    length = (f"capped by --max_steps {cfg.max_steps}; {cfg.epochs} epoch(s) would be {planned}"
              if cfg.max_steps and cfg.max_steps < planned else f"--epochs {cfg.epochs} x {engine.steps_per_epoch} per epoch")
    return "\n".join([
        f"[{stage}] model: {model.num_parameters():,} params ({start}; dim {c.dim}, {c.n_layers} layers, "
        f"{c.n_heads}/{c.n_kv_heads} heads, SwiGLU {c.hidden_dim}){cfg.describe_adapters(model)}",
        f"[{stage}] data: {data.description}",
        f"[{stage}] device {engine.device}, dtype {str(engine.dtype).replace('torch.', '')}, {dist.world_size} "
        f"process(es){', compiled' if cfg.compile else ''}",
        f"[{stage}] batch {cfg.batch_size} x accumulation {cfg.accumulation_steps} x {dist.world_size} = "
        f"{cfg.batch_size * cfg.accumulation_steps * dist.world_size} rows of {cfg.max_seq_len} tokens per step; "
        f"{engine.total_steps} steps ({length}); {cfg.optimizer}, {cfg.lr_schedule} lr {cfg.learning_rate:g} -> "
        f"{cfg.min_lr:g}, warmup {cfg.warmup_steps}",
    ] + ([f"warning: --warmup_steps {cfg.warmup_steps} is not below the {engine.total_steps} steps planned, so the "
          f"lr never reaches --learning_rate {cfg.learning_rate:g}; lower --warmup_steps"]  # probably not what was meant
         if cfg.warmup_steps >= engine.total_steps else []))


# ------------------------------------------------------------------ checks that need no data
# A typo in a flag must cost a second, not the minutes of tokenizing that come before the first
# step: each check raises with one line naming the flag or file and what to do. The flags' own
# ranges and choices are declared with the flags (option(check=...)); here are the checks that
# need the file system or the model's shape.
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
