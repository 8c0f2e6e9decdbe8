"""What keeps a run safe around the loop, each called at one named point; none of it is the math.

    before the engine   fit_memory        lower the micro-batch when a step would not fit (same gradient)
                        resume_elsewhere  --resume on another number of processes: the same rows per step
                        wsd_extension     --resume --max_steps larger of a wsd run: on from its stable phase
                        fresh_start       a new run in a used folder: refused, or the old run moved aside
    in start/finish     Interrupts        Ctrl-C saves at the end of the step; a second one stops at once
    in after_step       SpikeDetector     a loss far above its recent average is flagged
                        save_milestone    weights at --save_at_epochs
    (grpo.py's loop: the best validation's weights, trainer/best.py)
                        plan_time         on a CPU, how long the plan will take, from the first steps
"""
from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from common.cli import shown_path
from .checkpoints import RunPaths, latest_state, list_states, move_aside
from .config import TrainConfig
from .distributed import DistInfo, barrier, broadcast_ints
from .memory import available_bytes, estimate_peak_bytes, fit_batch, gb, local_world_size
from .optim import decay_start
from .resume import elastic_batch

if TYPE_CHECKING:
    from .engine import Engine


# ------------------------------------------------------------------ before the engine
def fit_memory(cfg: TrainConfig, model: torch.nn.Module, device: torch.device, dtype: torch.dtype,
               dist: DistInfo) -> None:
    """Lower the micro-batch (raising accumulation: same rows per step, same gradient) when a step's
    estimated peak memory would not fit this machine; one line says what changed and why.
    Rank 0 decides for all and tells the others: ranks that saw different free memory (another
    job on one GPU) must still run the same shapes, and only rank 0 may stop the run for it."""
    footprint = cfg.footprint()
    if dist.is_main:
        plan = fit_batch(model.config, model.num_parameters(), cfg.batch_size, cfg.accumulation_steps,
                         cfg.max_seq_len, dtype, available_bytes(device, local_world_size()), footprint)
    batch, accumulation = broadcast_ints([plan.batch_size, plan.accumulation_steps] if dist.is_main else [0, 0])
    if not dist.is_main:
        cfg.batch_size, cfg.accumulation_steps = batch, accumulation
        return
    if plan.changed and footprint.rows_per_item > 1 and getattr(cfg, "num_iterations", 1) > 1:
        raise ValueError(f"memory: --batch_size {cfg.batch_size} does not fit on {device} ({gb(plan.available)} "
                         f"free), and --num_iterations {cfg.num_iterations} needs --accumulation_steps 1: lower "
                         f"--batch_size to {plan.batch_size}")
    if plan.changed:
        need = estimate_peak_bytes(model.config, model.num_parameters(), cfg.batch_size, cfg.max_seq_len, dtype,
                                   footprint)
        print(f"memory: --batch_size {cfg.batch_size} x --max_seq_len {cfg.max_seq_len} would need about "
              f"{gb(need)} on {device} where {gb(plan.available)} is free: running micro-batches of "
              f"{plan.batch_size} with --accumulation_steps {plan.accumulation_steps} instead (about "
              f"{gb(plan.estimate)}; the same {cfg.batch_size * cfg.accumulation_steps} rows and the same "
              "gradient per step)")
    cfg.batch_size, cfg.accumulation_steps = plan.batch_size, plan.accumulation_steps


def resume_elsewhere(cfg: TrainConfig, paths: RunPaths, dist: DistInfo) -> None:
    """A resume on another number of processes (a preempted job back on fewer GPUs): keep the rows
    of a step, so the data order goes on exactly (trainer/resume.py, check_rows)."""
    saved = latest_state(paths, peek=True)
    if saved is None or saved["world_size"] == dist.world_size:
        return
    plan = elastic_batch(saved["config"], saved["world_size"], dist.world_size)
    if plan is None:
        return  # check_rows refuses it with the numbers
    cfg.batch_size, cfg.accumulation_steps = plan
    if dist.is_main:
        print(f"--resume on {dist.world_size} process(es) (the run was saved on {saved['world_size']}): "
              f"--batch_size {plan[0]} x --accumulation_steps {plan[1]}, the same rows per step")


def wsd_extension(paths: RunPaths, cfg: TrainConfig, total_steps: int) -> dict | None:
    """Extending a wsd run (--resume with a larger --max_steps) whose newest state is already in its
    decay: the state saved where that decay began, so the run goes on from its stable phase and
    decays at the new end. Otherwise None (--resume reads the newest state)."""
    saved = latest_state(paths, peek=True)
    if cfg.lr_schedule != "wsd" or not saved or not saved["total_steps"] or saved["total_steps"] >= total_steps:
        return None
    began = decay_start(saved["total_steps"], cfg.warmup_steps, cfg.decay_fraction)
    stable = latest_state(paths, kind="stable_step") if saved["step"] > began else None
    if saved["step"] > began and (stable is None or stable["step"] != began):
        raise ValueError(f"--resume --max_steps {cfg.max_steps}: the run was already decaying and its state from "
                         f"where the decay began (step {began}) is missing; resume with its --max_steps")
    if stable is not None:
        print(f"extending a wsd run: going on from step {began}, where its decay began (the decay now starts at "
              f"step {decay_start(total_steps, cfg.warmup_steps, cfg.decay_fraction)})")
    return stable


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


# ------------------------------------------------------------------ during the run
class Interrupts:
    """First Ctrl-C: finish the current step, save, exit. Second: stop at once (a step on a slow CPU
    can take minutes), keeping the last saved state; saves are atomic, so nothing is half-written.
    Under DDP every rank learns of any rank's Ctrl-C from the step's reduced flag (engine.update)."""

    def __init__(self, dist: DistInfo):
        self.dist, self.requested, self._previous = dist, False, None

    def install(self, engine: Engine) -> None:
        def request_stop(signum: int, frame: Any) -> None:
            if self.requested:
                kept = engine.last_saved or "none saved yet"
                print(f"\nsecond Ctrl-C: stopped at once; last saved state: {kept}"
                      f"{'; continue with the same command plus --resume' if engine.last_saved else ''}",
                      file=sys.stderr, flush=True)
                os._exit(130)  # not KeyboardInterrupt: that waits for the running step to return to Python
            self.requested = True
            when = "at the next log step, with every rank" if self.dist.enabled else "after this step"
            tqdm.write(f"Ctrl-C: saving {when} (press again to quit at once, keeping the last saved state)")
        try:
            self._previous = signal.signal(signal.SIGINT, request_stop)
        except ValueError:  # not the main thread (e.g. inside a test runner thread)
            self._previous = None

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class SpikeDetector:
    """Flags a loss well above its recent average (after a settling period): spikes tend to precede
    divergence, and the seed run saw them at epoch ends."""

    def __init__(self, factor: float = 1.5, beta: float = 0.95, settle_steps: int = 50):
        self.factor, self.beta, self.settle_steps = factor, beta, settle_steps
        self.average: float | None = None
        self.seen = 0

    def update(self, loss: float) -> bool:
        self.seen += 1
        spike = self.average is not None and self.seen > self.settle_steps and loss > self.factor * self.average
        if not spike:  # a spike would drag the average up and hide the next one
            self.average = loss if self.average is None else self.beta * self.average + (1 - self.beta) * loss
        return spike


def save_milestone(engine: Engine, val_loss: float | None) -> None:
    """--save_at_epochs: the weights at those epochs, besides the stage's own."""
    if engine.step in engine.milestones and engine.dist.is_main:
        engine.save_weights(engine.paths.milestone(engine.milestones[engine.step]), val_loss)


# What makes a CPU run minutes instead of hours: a smaller model (only when training one from
# scratch: with --init the shape is the checkpoint's), short rows and small batches.
CPU_SIZED = "--max_seq_len 256 --batch_size 16 --accumulation_steps 1"
CPU_SIZED_FROM_SCRATCH = "--preset spongebob-demo " + CPU_SIZED + " --learning_rate 4e-3"


def plan_time(total_steps: int, step: int, step_seconds: float, device: torch.device, cfg: TrainConfig) -> str:
    """The measured time of the plan, and when it is hours on a CPU, the flags that make it minutes."""
    left = total_steps - step
    hours, rest = divmod(int(step_seconds * left), 3600)
    line = (f"measured: {step_seconds:.1f} s per step, so the remaining {left:,} steps take about "
            f"{hours} h {rest // 60} min on this {device.type}")
    if device.type == "cpu" and step_seconds * left >= 3600:
        line += f"; for a CPU-sized run of minutes: {CPU_SIZED if cfg.init else CPU_SIZED_FROM_SCRATCH} --max_steps 300"
    return line

