"""The one training loop, shared by every stage.

A stage hands over a model, its data and (optionally) a loss function; the
engine does the rest: AMP, gradient accumulation, warmup + cosine, clipping,
DDP, validation, logging, atomic checkpoints and exact resume.

Data contract (PretrainDataset and the SFT datasets implement it):
    data.num_batches(batch_size) -> micro-batches per epoch on this rank (equal on all ranks)
    data.batches(batch_size, epoch, start) -> iterator of dicts with "input_ids" and
        "targets" (B, T) and optionally "loss_weight", beginning at micro-batch `start`;
        deterministic for a given (seed, epoch), which is what makes resume exact.
"""
from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from model import IGNORE_INDEX, save_model, token_loss, unwrap
from .checkpoints import RunPaths, load_latest_state, save_state
from .config import TrainConfig, config_dict
from .device import autocast, flops_per_token, make_scaler, peak_flops
from .distributed import DistInfo, all_reduce_sum
from .metrics import MetricsLog, SpikeDetector, start_wandb
from .optim import make_optimizer, set_lr
from .resume import check_resumable, restore_rng, rng_state
from .schedule import lr_at

Batch = dict[str, torch.Tensor]
# loss_fn(logits, batch) -> summed (not averaged) loss over the batch's trained tokens.
LossFn = Callable[[torch.Tensor, Batch], torch.Tensor]


class TrainingError(RuntimeError):
    """A run that cannot go on (NaN loss, out of memory); the message says what to do."""


def default_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    return token_loss(logits, batch["targets"], batch.get("loss_weight"), reduction="sum")


def loss_normaliser(batch: Batch) -> torch.Tensor:
    """What the summed loss is divided by: the number of trained tokens, or
    their total weight when the batch carries per-token weights."""
    valid = (batch["targets"] != IGNORE_INDEX).float()
    weight = batch.get("loss_weight")
    return (valid if weight is None else valid * weight.float()).sum()


class Trainer:
    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, train_data: Any, val_data: Any,
                 tokenizer_identity: dict, stage: str, device: torch.device, dtype: torch.dtype,
                 dist: DistInfo, data_identity: str = "", loss_fn: LossFn = default_loss):
        self.cfg, self.stage, self.device, self.dtype, self.dist = cfg, stage, device, dtype, dist
        self.train_data, self.val_data, self.loss_fn = train_data, val_data, loss_fn
        self.tokenizer_identity, self.data_identity = tokenizer_identity, data_identity
        self.paths = RunPaths(Path(cfg.out_dir), stage)
        self.model = model.to(device)
        self.optimizer = make_optimizer(self.model, cfg, device)
        self.scaler = make_scaler(device, dtype)

        if cfg.max_seq_len > model.config.max_position_embeddings:
            raise ValueError(f"--max_seq_len {cfg.max_seq_len} exceeds the model's "
                             f"{model.config.max_position_embeddings} positions")
        per_epoch = train_data.num_batches(cfg.batch_size)
        if per_epoch == 0:
            raise ValueError(f"the training data has less than one row of --max_seq_len {cfg.max_seq_len} "
                             "tokens; add data or lower --max_seq_len")
        self.batches_per_epoch = per_epoch
        self.steps_per_epoch = math.ceil(per_epoch / cfg.accumulation_steps)
        total = cfg.epochs * self.steps_per_epoch
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps > 0 else total
        self.milestones = {max(1, round(e * self.steps_per_epoch)): e for e in cfg.save_at_epochs}

        self.step, self.tokens_seen, self.skipped_nonfinite = 0, 0, 0
        self.last_saved: str | None = None
        self.spikes = SpikeDetector()
        self._stop_requested = False
        # Called once with the first step's seconds (run.py prints how long the plan will take).
        self.after_first_step: Callable[[float], None] | None = None
        resume_state = self._resume() if cfg.resume else None

        # Compile and wrap only after any resumed weights are in place.
        self.fast_model = torch.compile(self.model) if cfg.compile else self.model
        self.train_model = (DistributedDataParallel(self.fast_model, device_ids=[device.index] if
                                                    device.type == "cuda" else None)
                            if dist.enabled else self.fast_model)
        self.flops_per_token = flops_per_token(sum(p.numel() for p in self.model.parameters()),
                                               self.model.config.n_layers, self.model.config.dim, cfg.max_seq_len)
        self.peak_flops = peak_flops(device)
        wandb_run = None
        if cfg.use_wandb and dist.is_main:
            wandb_run = start_wandb(cfg.wandb_project, cfg.wandb_mode, self.paths.run_dir, stage, config_dict(cfg))
        self.log = MetricsLog(self.paths.metrics, dist.is_main,
                              resume_step=self.step if resume_state else None, wandb_run=wandb_run)

    # ------------------------------------------------------------------ resume
    def _resume(self) -> dict:
        state = load_latest_state(self.paths)
        if state is None:
            raise ValueError(f"--resume: no saved training state in {self.paths.state_dir}; "
                             "run once without --resume first")
        check_resumable(state, self.cfg, self.dist.world_size, self.data_identity)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"])
        self.step, self.tokens_seen = state["step"], state["tokens_seen"]
        self.skipped_nonfinite = state["skipped_nonfinite"]
        self.last_saved = state["path"]
        if self.dist.is_main:
            print(f"resuming from {state['path']} at step {self.step}/{self.total_steps}")
        return state

    def _state(self) -> dict:
        return {"model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": rng_state(), "tokens_seen": self.tokens_seen,
                "skipped_nonfinite": self.skipped_nonfinite, "config": config_dict(self.cfg),
                "world_size": self.dist.world_size, "data_identity": self.data_identity}

    # ------------------------------------------------------------------ saving
    def _meta(self, val_loss: float | None) -> dict:
        return {"stage": self.stage, "step": self.step, "epoch": round(self.step / self.steps_per_epoch, 4),
                "tokens_seen": self.tokens_seen, "val_loss": val_loss, "max_seq_len": self.cfg.max_seq_len}

    def save(self, val_loss: float | None = None) -> None:
        """Weights for eval/next stage, then the resumable state. Rank 0 only."""
        if self.dist.is_main:
            save_model(self.paths.weights, self.model, self.tokenizer_identity, self._meta(val_loss))
            self.last_saved = str(save_state(self.paths, self.step, self._state(), self.cfg.keep_last))

    # ------------------------------------------------------------------ one step
    def _micro_batches(self) -> Iterator[list[Batch]]:
        """The micro-batches of each optimizer step from self.step on, epoch by epoch."""
        step = self.step
        while step < self.total_steps:
            epoch, group = divmod(step, self.steps_per_epoch)
            stream = self.train_data.batches(self.cfg.batch_size, epoch, start=group * self.cfg.accumulation_steps)
            for _ in range(group, self.steps_per_epoch):
                if step >= self.total_steps:
                    return
                chunk = [b for _, b in zip(range(self.cfg.accumulation_steps), stream)]
                yield chunk
                step += 1

    def _to_device(self, batch: Batch) -> Batch:
        if self.device.type != "cuda":
            return {k: v.to(self.device) for k, v in batch.items()}
        # From pinned host memory the copy runs asynchronously, overlapping the GPU's work.
        return {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in batch.items()}

    def train_step(self, micro_batches: list[Batch]) -> tuple[float, float, int]:
        """Forward/backward over all micro-batches, then one optimizer update.

        Each micro-batch's summed loss is divided by the trained-token count of
        the WHOLE step (all micro-batches, all ranks), so N micro-batches of b
        rows give exactly the gradient of one batch of N*b rows, even when
        masks leave different numbers of trained tokens in each. DDP averages
        gradients over ranks, hence the extra factor world_size.
        """
        batches = [self._to_device(b) for b in micro_batches]
        count = all_reduce_sum(torch.stack([loss_normaliser(b) for b in batches]).sum())
        scale = self.dist.world_size / count.clamp(min=1.0)
        loss_sum = torch.zeros((), device=self.device)
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            sync = nullcontext() if (last or not self.dist.enabled) else self.train_model.no_sync()
            with sync, autocast(self.device, self.dtype):
                logits = self.train_model(batch["input_ids"]).logits
                loss = self.loss_fn(logits, batch) * scale
            self.scaler.scale(loss).backward()
            loss_sum += loss.detach()
        mean_loss = (all_reduce_sum(loss_sum) / self.dist.world_size).item()
        tokens = int(all_reduce_sum(torch.tensor(sum(b["input_ids"].numel() for b in batches))).item())
        if not math.isfinite(mean_loss):
            self.optimizer.zero_grad(set_to_none=True)
            return mean_loss, float("nan"), tokens
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                   self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf"))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return mean_loss, float(grad_norm), tokens

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean validation loss over up to --eval_batches micro-batches (all ranks)."""
        if self.val_data is None or self.val_data.num_batches(self.cfg.batch_size) == 0:
            return None
        self.fast_model.eval()
        total = torch.zeros(2, device=self.device)
        stream = self.val_data.batches(self.cfg.batch_size, epoch=0)
        for _, batch in zip(range(self.cfg.eval_batches), stream):
            batch = self._to_device(batch)
            with autocast(self.device, self.dtype):
                logits = self.fast_model(batch["input_ids"]).logits
                total += torch.stack([self.loss_fn(logits, batch).float(), loss_normaliser(batch)])
        self.fast_model.train()
        loss_sum, count = all_reduce_sum(total).tolist()
        return loss_sum / max(count, 1.0)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> float | None:
        """Train to total_steps; returns the final validation loss."""
        self.model.train()
        bar = tqdm(total=self.total_steps, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not self.dist.is_main, desc=self.stage)
        previous_handler = self._install_sigint()
        val_loss, timer = None, time.perf_counter()
        try:
            # Fetching the micro-batches is part of a step's time: the timer
            # spans data + forward/backward/update, not logging or saving.
            for micro_batches in self._micro_batches():
                lr = lr_at(self.step, self.total_steps, self.cfg.learning_rate, self.cfg.min_lr,
                           self.cfg.warmup_steps)
                set_lr(self.optimizer, lr)
                loss, grad_norm, tokens = self._guarded_step(micro_batches, lr)
                self.step += 1
                self.tokens_seen += tokens
                seconds = time.perf_counter() - timer
                tok_per_s = tokens / max(seconds, 1e-9)
                if self.after_first_step is not None:
                    self.after_first_step(seconds)
                    self.after_first_step = None
                val_loss = self._after_step(bar, loss, lr, grad_norm, tok_per_s)
                if self._stop_requested:
                    self.save(val_loss)
                    raise KeyboardInterrupt(f"interrupted: saved {self.last_saved}; "
                                            "continue with the same command plus --resume")
                timer = time.perf_counter()
        finally:
            bar.close()
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
            self.log.close()
        if self.dist.is_main:
            print(f"done: {self.step} steps, {self.tokens_seen:,} tokens; weights in {self.paths.weights}")
        return val_loss

    def _guarded_step(self, micro_batches: list[Batch], lr: float) -> tuple[float, float, int]:
        try:
            loss, grad_norm, tokens = self.train_step(micro_batches)
        except torch.OutOfMemoryError:
            raise TrainingError(f"out of memory at --batch_size {self.cfg.batch_size} x --max_seq_len "
                                f"{self.cfg.max_seq_len} on {self.device}: lower --batch_size (raise "
                                "--accumulation_steps to keep the same effective batch) or --max_seq_len") from None
        if not math.isfinite(loss):
            if not self.cfg.skip_nonfinite:
                raise TrainingError(f"loss is {loss} at step {self.step + 1} (lr {lr:.3g}); last good checkpoint: "
                                    f"{self.last_saved or 'none saved yet'}. Lower --learning_rate, use "
                                    "--dtype bfloat16/float32, or pass --skip_nonfinite to skip such steps")
            self.skipped_nonfinite += 1
            tqdm.write(f"step {self.step + 1}: loss {loss}, update skipped ({self.skipped_nonfinite} so far)")
        return loss, grad_norm, tokens

    def _after_step(self, bar: tqdm, loss: float, lr: float, grad_norm: float, tok_per_s: float) -> float | None:
        """Progress bar, metrics row, validation, checkpoints and milestones for the step just taken."""
        step, cfg = self.step, self.cfg
        spike = math.isfinite(loss) and self.spikes.update(loss)
        if spike and self.dist.is_main:
            tqdm.write(f"step {step}: loss spike {loss:.3f} (recent average {self.spikes.average:.3f})")
        mfu = self.flops_per_token * tok_per_s / (self.peak_flops * self.dist.world_size) if self.peak_flops else None
        postfix = {"loss": f"{loss:.3f}", "lr": f"{lr:.2e}", "tok/s": f"{tok_per_s:,.0f}"}
        if mfu is not None:
            postfix["mfu"] = f"{100 * mfu:.1f}%"
        bar.set_postfix(postfix, refresh=False)
        bar.update()

        final = step == self.total_steps
        val_loss = self.evaluate() if final or (cfg.eval_interval and step % cfg.eval_interval == 0) else None
        if final or spike or val_loss is not None or step == 1 or step % cfg.log_interval == 0:
            row = {"step": step, "epoch": step / self.steps_per_epoch, "loss": loss, "lr": lr,
                   "tokens": self.tokens_seen, "tokens_per_s": tok_per_s, "grad_norm": grad_norm}
            if val_loss is not None:
                row["val_loss"] = val_loss
                if self.dist.is_main:
                    tqdm.write(f"step {step}: val loss {val_loss:.4f}")
            if mfu is not None:
                row["mfu"] = mfu
            if spike:
                row["spike"] = True
            self.log.write(row)
        if final or step % cfg.save_interval == 0:
            self.save(val_loss)
        if step in self.milestones and self.dist.is_main:
            save_model(self.paths.milestone(self.milestones[step]), self.model, self.tokenizer_identity,
                       self._meta(val_loss))
        return val_loss

    def _install_sigint(self) -> Any:
        """First Ctrl-C: finish the current step, save, exit. Second: stop at once."""
        def request_stop(signum: int, frame: Any) -> None:
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            tqdm.write("Ctrl-C: saving after this step (press again to quit without saving)")
        try:
            return signal.signal(signal.SIGINT, request_stop)
        except ValueError:  # not the main thread (e.g. inside a test runner thread)
            return None
