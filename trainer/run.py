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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from common.cli import shown_path
from common.device import enable_tf32, pick_compile, pick_device, pick_dtype
from common.stages import stage as stage_row
from model import SpongeBob, checkpoint_tokenizer, file_sha256, load_model
from model.lora import adapter_parameters, apply_lora, parse_targets
from tokenizer import SpongeTokenizer, load_tokenizer, tokenizer_for
from .checkpoints import RunPaths, list_states, move_aside, peek_latest_state
from .checks import check_init_file, check_out_dir, check_seq_len, model_config
from .config import ConfigError, TrainConfig, config_dict, parse_config
from .contract import StageLoss, TrainData, hooks_of
from .distributed import DistInfo, barrier, broadcast_ints, init_distributed, local_device, shutdown
from .engine import Trainer, TrainingError
from .memory import available_bytes, estimate_peak_bytes, fit_batch, gb, local_world_size
from .resume import elastic_batch


@dataclass
class StageData:
    train: TrainData         # num_batches / batches (trainer/contract.py)
    val: TrainData | None    # the same, or a Validator
    identity: str            # fingerprint of the data, checked on --resume
    description: str         # one line for the start-up summary


DataBuilder = Callable[[TrainConfig, SpongeTokenizer, DistInfo], StageData]
# Called once the device and the starting model are known, so a loss can bring a model of
# its own (a teacher, DPO's reference) or use the trained one (LoRA's adapters-off reference).
# None from it means the default loss.
LossBuilder = Callable[[TrainConfig, SpongeTokenizer, torch.device, SpongeBob], StageLoss | None]


def cli_config(description: str, stage_defaults: dict[str, Any], demo_defaults: dict[str, Any] | None = None,
               config_cls: type[TrainConfig] = TrainConfig, init_from: str | None = None,
               fp32_cpu_demo: dict[str, Any] | None = None) -> TrainConfig:
    """parse_config over sys.argv; a bad flag or config file is one line and exit 2.
    init_from: the previous stage, whose <out_dir>/<stage>.pth is the default --init."""
    try:
        return parse_config(sys.argv[1:], description, stage_defaults, demo_defaults, config_cls, init_from,
                            fp32_cpu_demo)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def stage_tokenizer(cfg: TrainConfig) -> SpongeTokenizer:
    """--tokenizer_dir, else the tokenizer --init was trained with (a checkpoint records an own
    tokenizer's directory), else the shipped one."""
    if cfg.tokenizer_dir:
        return load_tokenizer(cfg.tokenizer_dir)
    return tokenizer_for(checkpoint_tokenizer(cfg.init)) if cfg.init and Path(cfg.init).is_file() else load_tokenizer()


def build_model(cfg: TrainConfig, tok: SpongeTokenizer) -> SpongeBob:
    """The stage's starting model: --init if given (with LoRA adapters on it under --lora_rank),
    else a fresh --preset with the shape flags over it."""
    if cfg.init:
        check_init_file(cfg.init)
        model, _ = load_model(cfg.init, tokenizer=tok)
        check_seq_len(cfg, model.config, f"--init {cfg.init}")
        if getattr(cfg, "lora_rank", 0):
            torch.manual_seed(cfg.seed)  # the same seed gives the same adapter initialisation
            apply_lora(model, cfg.lora_rank, cfg.lora_alpha or 2.0 * cfg.lora_rank, cfg.lora_dropout,
                       parse_targets(cfg.lora_target))
        return model.train()
    config = model_config(cfg, tok.vocab_size)
    check_seq_len(cfg, config, "the model (--max_position_embeddings)")
    torch.manual_seed(cfg.seed)  # the same seed gives the same initial weights
    return SpongeBob(config)


def fit_memory(cfg: TrainConfig, model: SpongeBob, device: torch.device, dtype: torch.dtype,
               dist: DistInfo) -> None:
    """Lower the micro-batch (raising accumulation: same rows per step, same gradient) when a step's
    estimated peak memory would not fit this machine; one line says what changed and why.
    Rank 0 decides for all and tells the others: ranks that saw different free memory (another
    job on one GPU) must still run the same shapes, and only rank 0 may stop the run for it."""
    if dist.is_main:
        plan = fit_batch(model.config, model.num_parameters(), cfg.batch_size, cfg.accumulation_steps,
                         cfg.max_seq_len, dtype, available_bytes(device, local_world_size()), cfg.footprint())
        decided = [plan.batch_size, plan.accumulation_steps]
    batch, accumulation = broadcast_ints(decided if dist.is_main else [0, 0])
    if not dist.is_main:
        cfg.batch_size, cfg.accumulation_steps = batch, accumulation
        return
    if plan.changed and cfg.footprint().rows_per_item > 1 and getattr(cfg, "num_iterations", 1) > 1:
        raise ValueError(f"memory: --batch_size {cfg.batch_size} does not fit on {device} ({gb(plan.available)} "
                         f"free), and --num_iterations {cfg.num_iterations} needs --accumulation_steps 1: lower "
                         f"--batch_size to {plan.batch_size}")
    if plan.changed:
        print(f"memory: --batch_size {cfg.batch_size} x --max_seq_len {cfg.max_seq_len} would need about "
              f"{gb(estimate_for(cfg, model, dtype))} on {device} where {gb(plan.available)} is free: running "
              f"micro-batches of {plan.batch_size} with --accumulation_steps {plan.accumulation_steps} instead "
              f"(about {gb(plan.estimate)}; the same {cfg.batch_size * cfg.accumulation_steps} rows and the same "
              "gradient per step)")
    cfg.batch_size, cfg.accumulation_steps = plan.batch_size, plan.accumulation_steps


def estimate_for(cfg: TrainConfig, model: SpongeBob, dtype: torch.dtype) -> float:
    return estimate_peak_bytes(model.config, model.num_parameters(), cfg.batch_size, cfg.max_seq_len, dtype,
                               cfg.footprint())


def adapter_base(cfg: TrainConfig, model: SpongeBob) -> dict | None:
    """A LoRA run saves only its adapters, with the identity of the checkpoint under them."""
    if not adapter_parameters(model):
        return None
    return {"path": cfg.init, "sha256": file_sha256(cfg.init),
            "rank": cfg.lora_rank, "alpha": cfg.lora_alpha or 2.0 * cfg.lora_rank,
            "targets": list(parse_targets(cfg.lora_target))}


def describe(cfg: TrainConfig, stage: str, model: SpongeBob, data: StageData, trainer: Trainer,
             device: torch.device, dtype: torch.dtype, dist: DistInfo) -> str:
    c = model.config
    start = f"from {cfg.init}" if cfg.init else f"preset {cfg.preset}, from scratch"
    rows = cfg.batch_size * cfg.accumulation_steps * dist.world_size
    planned = cfg.epochs * trainer.steps_per_epoch
    if cfg.max_steps and cfg.max_steps < planned:
        length = f"capped by --max_steps {cfg.max_steps}; {cfg.epochs} epoch(s) would be {planned}"
    else:
        length = f"--epochs {cfg.epochs} x {trainer.steps_per_epoch} per epoch"
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lora = (f"; LoRA rank {cfg.lora_rank} on {cfg.lora_target}: {trainable:,} trainable "
            f"({trainable / model.num_parameters():.2%})" if getattr(cfg, "lora_rank", 0) else "")
    return "\n".join([
        f"[{stage}] model: {model.num_parameters():,} params ({start}; dim {c.dim}, {c.n_layers} layers, "
        f"{c.n_heads}/{c.n_kv_heads} heads, SwiGLU {c.hidden_dim}){lora}",
        f"[{stage}] data: {data.description}",
        f"[{stage}] device {device}, dtype {str(dtype).replace('torch.', '')}, {dist.world_size} process(es)"
        f"{', compiled' if cfg.compile else ''}",
        f"[{stage}] batch {cfg.batch_size} x accumulation {cfg.accumulation_steps} x {dist.world_size} = "
        f"{rows} rows of {cfg.max_seq_len} tokens per step; {trainer.total_steps} steps ({length}); "
        f"lr {cfg.learning_rate:g} -> {cfg.min_lr:g}, warmup {cfg.warmup_steps}",
    ])


def warnings_for(cfg: TrainConfig, trainer: Trainer, device: torch.device) -> list[str]:
    """Plans that run but are probably not what the user meant."""
    notes = []
    if cfg.warmup_steps >= trainer.total_steps:
        notes.append(f"warning: --warmup_steps {cfg.warmup_steps} is not below the {trainer.total_steps} steps "
                     f"planned, so the lr never reaches --learning_rate {cfg.learning_rate:g}; lower --warmup_steps")
    return notes


# What makes a CPU run minutes instead of hours: a smaller model (only when training one from
# scratch: with --init the shape is the checkpoint's), short rows and small batches.
CPU_SIZED = "--max_seq_len 256 --batch_size 16 --accumulation_steps 1"
CPU_SIZED_FROM_SCRATCH = "--preset spongebob-demo " + CPU_SIZED + " --learning_rate 2e-3"


def plan_time(trainer: Trainer, step_seconds: float) -> str:
    """The measured time of the plan, and when it is hours on a CPU, the flags that make it minutes."""
    left = trainer.total_steps - trainer.step
    total = step_seconds * left
    hours, rest = divmod(int(total), 3600)
    line = (f"measured: {step_seconds:.1f} s per step, so the remaining {left:,} steps take about "
            f"{hours} h {rest // 60} min on this {trainer.device.type}")
    cfg = trainer.cfg
    if trainer.device.type == "cpu" and total >= 3600:
        sized = CPU_SIZED if cfg.init else CPU_SIZED_FROM_SCRATCH
        line += f"; for a CPU-sized run of minutes: {sized} --max_steps 300"
    return line


def resume_elsewhere(cfg: TrainConfig, paths: RunPaths, dist: DistInfo) -> None:
    """A resume on another number of processes (a preempted job back on fewer GPUs): keep the rows
    of a step, so the data order goes on exactly (trainer/resume.py, check_rows)."""
    saved = peek_latest_state(paths)
    if saved is None or saved["world_size"] == dist.world_size:
        return
    plan = elastic_batch(saved["config"], saved["world_size"], dist.world_size)
    if plan is None:
        return  # check_rows refuses it with the numbers
    cfg.batch_size, cfg.accumulation_steps = plan
    if dist.is_main:
        print(f"--resume on {dist.world_size} process(es) (the run was saved on {saved['world_size']}): "
              f"--batch_size {plan[0]} x --accumulation_steps {plan[1]}, the same rows per step")


def fresh_start(paths: RunPaths, overwrite: bool, dist: DistInfo) -> None:
    """A new run in a folder that holds another run's states: refuse, or with --overwrite move the
    old run aside. Two runs' states never mix, and pruning never deletes the other run's."""
    states = list_states(paths)
    if states and not overwrite:
        raise ValueError(f"{shown_path(paths.state_dir)} holds an earlier {paths.stage} run (saved up to step "
                         f"{states[-1][0]}): continue it with --resume, or start afresh with --overwrite (the "
                         "earlier run is moved aside, not deleted), or use another --out_dir")
    if states and dist.is_main:
        print(f"--overwrite: the earlier {paths.stage} run is now in {move_aside(paths)}")
    barrier(long=True)


def _train(cfg: TrainConfig, stage: str, build_data: DataBuilder, build_loss: LossBuilder | None) -> None:
    # Everything that needs no data first: a typo must not cost the minutes of tokenizing.
    cfg.check()
    device = pick_device(cfg.device)
    dist = init_distributed(device)
    device = local_device(device, dist)
    dtype = pick_dtype(cfg.dtype, device)
    cfg.compile = pick_compile(cfg.compile, device)
    enable_tf32(device)
    tok = stage_tokenizer(cfg)
    paths = RunPaths(Path(cfg.out_dir), stage)
    check_out_dir(cfg.out_dir)
    if cfg.resume and not list_states(paths):
        raise ValueError(f"--resume: no saved training state in {shown_path(paths.state_dir)}; "
                         "run once without --resume first")
    if not cfg.resume:
        fresh_start(paths, cfg.overwrite, dist)
    model = build_model(cfg, tok)
    if cfg.resume:
        resume_elsewhere(cfg, paths, dist)
    fit_memory(cfg, model, device, dtype, dist)
    loss_fn = build_loss(cfg, tok, device, model) if build_loss else None  # None: the model's own CE
    if dist.is_main:
        data = build_data(cfg, tok, dist)   # rank 0 prepares (pretokenizes) first ...
    barrier(long=True)                      # (which may take longer than NCCL's timeout)
    if not dist.is_main:
        data = build_data(cfg, tok, dist)   # ... the others then find it cached
    for hooks in hooks_of(data.train, data.val):  # data that needs the model itself (GRPO's rollouts)
        hooks.bind(model.to(device), device, dtype)
    trainer = Trainer(cfg, model, data.train, data.val, tok.record(), stage, device, dtype, dist,
                      data_identity=data.identity, loss_fn=loss_fn, adapter_base=adapter_base(cfg, model))
    if dist.is_main:
        print(describe(cfg, stage, model, data, trainer, device, dtype, dist))
        for line in warnings_for(cfg, trainer, device):
            print(line)
        if device.type == "cpu":
            trainer.after_first_step = lambda seconds: tqdm.write(plan_time(trainer, seconds))
        paths.run_dir.mkdir(parents=True, exist_ok=True)
        effective = {"stage": stage, "config": config_dict(cfg), "model": model.config.to_dict(),
                     "device": str(device), "dtype": str(dtype), "world_size": dist.world_size,
                     "data": data.description, "data_identity": data.identity}
        paths.config.write_text(json.dumps(effective, indent=2, ensure_ascii=False) + "\n")
    trainer.fit()


def train_stage(name: str, description: str, reference: dict[str, Any], demo: dict[str, Any],
                build_data: DataBuilder, build_loss: LossBuilder | None = None,
                config_cls: type[TrainConfig] = TrainConfig, fp32_cpu_demo: dict[str, Any] | None = None) -> None:
    """A stage script's whole main: its flags over its REFERENCE and DEMO defaults (and, on a CPU
    that trains in fp32, its FP32_CPU_DEMO), starting from the previous stage's weights that the
    table of stages names (common/stages.py)."""
    cfg = cli_config(description, reference, demo, config_cls, init_from=stage_row(name).previous,
                     fp32_cpu_demo=fp32_cpu_demo)
    run_stage(cfg, name, build_data, build_loss)


def run_stage(cfg: TrainConfig, stage: str, build_data: DataBuilder, build_loss: LossBuilder | None = None) -> None:
    """Train one stage, turning user errors into one line and a non-zero exit.
    build_loss(cfg, tok, device, model) gives the stage's loss; the default is the
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
