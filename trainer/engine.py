"""The one training loop, shared by every stage.

A stage hands over a model, its data and (optionally) a loss function; the
engine does the rest: AMP, gradient accumulation, warmup + cosine, clipping,
DDP, compile, validation, logging, atomic checkpoints and exact resume.

What a stage hands over and the batch keys are written down in trainer/contract.py;
the math of one step is trainer/step.py.

One step talks to the host once per log step, not once per step: the loss, the
token count and the stop flag of all ranks travel in one all-reduce, stay on the
device, and are read (one sync) only when a metrics row is written.
"""
from __future__ import annotations

import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from model import save_adapter, save_model, unwrap
from common.device import make_scaler, matmul_params, peak_flops
from .checkpoints import RunPaths, load_latest_state, save_state
from .config import TrainConfig, config_dict
from .contract import Validator, hooks_of
from .distributed import DistInfo, all_reduce_sum, barrier
from .metrics import MetricsLog, SpikeDetector, start_wandb
from .optim import make_optimizer, set_lr
from .prefetch import Prefetcher
from .resume import check_resumable, restore_rng, rng_state
from .schedule import lr_at
from .step import STATS, Batch, LossFn, Step


class TrainingError(RuntimeError):
    """A run that cannot go on (NaN loss, out of memory); the message says what to do."""


class _Inline:
    """The Prefetcher's interface, building each step's batches only when asked (on-policy data)."""

    def __init__(self, source: Iterator, prepare: Callable):
        self._items = (prepare(item) for item in source)

    def __iter__(self) -> Iterator:
        return self._items

    def close(self) -> None:
        pass

class Trainer:
    """Setup, resume, checkpoints, the loop and its logging; the step's math is Step's (step.py)."""

    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, train_data: Any, val_data: Any,
                 tokenizer_identity: dict, stage: str, device: torch.device, dtype: torch.dtype,
                 dist: DistInfo, data_identity: str = "", loss_fn: LossFn | None = None,
                 adapter_base: dict | None = None):
        self.cfg, self.stage, self.device, self.dtype, self.dist = cfg, stage, device, dtype, dist
        # A LoRA run: {"path", "sha256", "rank", "alpha", "targets"}; its checkpoints hold only adapters.
        self.adapter_base = adapter_base
        self.train_data, self.val_data = train_data, val_data
        self.tokenizer_identity, self.data_identity = tokenizer_identity, data_identity
        self.paths = RunPaths(Path(cfg.out_dir), stage)
        self.model = model.to(device)
        self.optimizer = make_optimizer(self.model, cfg, device)
        self.scaler = make_scaler(device, dtype)
        self.hooks = hooks_of(loss_fn, train_data, val_data)

        per_epoch = train_data.num_batches(cfg.batch_size)
        if per_epoch == 0:
            raise ValueError(f"the training data has less than one row of --max_seq_len {cfg.max_seq_len} "
                             "tokens; add data or lower --max_seq_len")
        self.steps_per_epoch = math.ceil(per_epoch / cfg.accumulation_steps)
        total = cfg.epochs * self.steps_per_epoch
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps > 0 else total
        self.milestones = {max(1, round(e * self.steps_per_epoch)): e for e in cfg.save_at_epochs}

        self.step, self.tokens_seen, self.skipped_nonfinite = 0, 0, 0
        self.best: dict | None = None  # the best validation so far, when the validation names a best_key
        self.last_saved: str | None = None
        self.spikes = SpikeDetector()
        self._stop_requested = False
        # Called once with the first step's seconds (run.py prints how long the plan will take).
        self.after_first_step: Callable[[float], None] | None = None
        resume_state = self._resume() if cfg.resume else None

        # Wrap only after any resumed weights are in place: DDP first, then compile, so that
        # dynamo splits the graph at DDP's buckets and the all-reduce overlaps the backward.
        # The RoPE tables are the only buffers and never change: nothing to broadcast.
        wrapped = (DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None,
                                           broadcast_buffers=False) if dist.enabled else self.model)
        self.compiled = bool(cfg.compile)
        self.train_model = torch.compile(wrapped) if self.compiled else wrapped
        c = self.model.config
        self.matmul_n = matmul_params(sum(p.numel() for p in self.model.parameters()), c.vocab_size, c.dim,
                                      c.tie_embeddings)
        self.peak_flops, self.device_name = peak_flops(device)
        self.stepper = Step(cfg, self.model, self.train_model, self.optimizer, self.scaler, loss_fn, dist,
                            device, dtype, self.matmul_n)
        self._pending = torch.zeros(len(STATS), device=device)  # summed since the last metrics row
        self._pending_flops, self._pending_steps = 0.0, 0
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
        self.best = state.get("best")
        self.last_saved = state["path"]
        if self.dist.is_main:
            print(f"resuming from {state['path']} at step {self.step}/{self.total_steps}")
        return state

    def _state(self) -> dict:
        return {"model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": rng_state(), "tokens_seen": self.tokens_seen,
                "skipped_nonfinite": self.skipped_nonfinite, "best": self.best, "config": config_dict(self.cfg),
                "world_size": self.dist.world_size, "data_identity": self.data_identity}

    # ------------------------------------------------------------------ saving
    def _meta(self, val_loss: float | None) -> dict:
        return {"stage": self.stage, "step": self.step, "epoch": round(self.step / self.steps_per_epoch, 4),
                "tokens_seen": self.tokens_seen, "val_loss": val_loss, "max_seq_len": self.cfg.max_seq_len}

    def save(self, val_loss: float | None = None) -> None:
        """Weights for eval/next stage, then the resumable state, written by rank 0 (never non-finite
        weights); every rank waits until they are on disk, so none goes on, or exits, before."""
        if self.dist.is_main:
            bad = [name for name, p in self.model.named_parameters() if not torch.isfinite(p).all()]
            if bad:
                raise TrainingError(f"refusing to save non-finite weights ({bad[0]} and {len(bad) - 1} more) at "
                                    f"step {self.step}; last good checkpoint: {self.last_saved or 'none saved yet'}")
            self._save_weights(self.paths.weights, val_loss)
            self.last_saved = str(save_state(self.paths, self.step, self._state(), self.cfg.keep_last))
        barrier(long=True)
        if not self.dist.is_main:  # every rank can name the state (rank 0's path: the out_dir is shared)
            self.last_saved = str(self.paths.state(self.step))

    def _save_weights(self, path: Path, val_loss: float | None) -> None:
        if self.adapter_base is None:
            save_model(path, self.model, self.tokenizer_identity, self._meta(val_loss))
            return
        base = {k: self.adapter_base[k] for k in ("path", "sha256")}
        lora = {k: self.adapter_base[k] for k in ("rank", "alpha", "targets")}
        save_adapter(path, self.model, self.tokenizer_identity, base, lora, self._meta(val_loss))

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

    # ------------------------------------------------------------------ the loop
    def fit(self) -> float | None:
        """Train to total_steps; returns the final validation loss."""
        self.model.train()
        bar = tqdm(total=self.total_steps, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not self.dist.is_main, desc=self.stage)
        if self.compiled:
            bar.set_postfix_str("compiling the model (the first steps are slow)")
        previous_handler = self._install_sigint()
        self._validate_the_start()
        # On-policy data (GRPO's rollouts) must be made by the weights of the step that uses it: no prefetch.
        on_policy = any(h.on_policy for h in self.hooks)
        steps = (_Inline if on_policy else Prefetcher)(self._micro_batches(), self.stepper.prepare)
        val_loss, self._timer = None, time.perf_counter()
        try:
            for micro_batches, tokens, flops in steps:
                lr = lr_at(self.step, self.total_steps, self.cfg.learning_rate, self.cfg.min_lr,
                           self.cfg.warmup_steps)
                set_lr(self.optimizer, lr)
                self._pending += self._guarded_step(micro_batches, tokens)
                self._pending_flops, self._pending_steps = self._pending_flops + flops, self._pending_steps + 1
                self.step += 1
                val_loss = self._after_step(bar, lr)
        finally:
            steps.close()
            bar.close()
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
            self.log.close()
        if self.dist.is_main:
            print(f"done: {self.step} steps, {self.tokens_seen:,} tokens; weights in {self.paths.weights}")
        if self.step == self.total_steps:
            self._keep_best()
        return val_loss

    # The step itself (step.py); kept here by name for the benchmarks and tests that drive it.
    @property
    def loss_fn(self) -> LossFn | None:
        return self.stepper.loss_fn

    @loss_fn.setter
    def loss_fn(self, loss_fn: LossFn | None) -> None:
        self.stepper.loss_fn = loss_fn

    def train_step(self, micro_batches: list[Batch], tokens: int = 0) -> torch.Tensor:
        return self.stepper.train_step(micro_batches, tokens, stop=self._stop_requested)

    def _prepare(self, micro_batches: list[Batch]) -> tuple[list[Batch], int, float]:
        return self.stepper.prepare(micro_batches)

    def evaluate(self) -> dict[str, float]:
        return self.stepper.evaluate(self.val_data)

    def _guarded_step(self, micro_batches: list[Batch], tokens: int) -> torch.Tensor:
        try:
            return self.train_step(micro_batches, tokens)
        except torch.OutOfMemoryError:
            raise TrainingError(f"out of memory at --batch_size {self.cfg.batch_size} x --max_seq_len "
                                f"{self.cfg.max_seq_len} on {self.device}: lower --batch_size (raise "
                                "--accumulation_steps to keep the same effective batch) or --max_seq_len") from None

    def _after_step(self, bar: tqdm, lr: float) -> float | None:
        """Progress bar, and at log steps (the only host syncs): the metrics row, the
        non-finite check, validation, checkpoints, milestones and a requested stop."""
        step, cfg = self.step, self.cfg
        bar.update()
        final = step == self.total_steps
        evaluating = final or bool(cfg.eval_interval and step % cfg.eval_interval == 0)
        saving = final or step % cfg.save_interval == 0 or step in self.milestones
        # Ctrl-C in a single process is seen at once; under DDP every rank learns of any
        # rank's Ctrl-C from the reduced flag at the next row, so all stop at the same step.
        stop_now = self._stop_requested and not self.dist.enabled
        if not (final or evaluating or saving or stop_now or step == 1 or step % cfg.log_interval == 0):
            return None
        row = self._read_pending(lr)
        stop = stop_now or row.pop("stop")
        validation = self.evaluate() if evaluating else {}
        self._track_best(validation)
        row.update(validation)
        val_loss = validation.get("val_loss")
        if validation and self.dist.is_main:
            tqdm.write(f"step {step}: " + ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in validation.items()))
        self._show(bar, row)
        self.log.write(row)
        if final or step % cfg.save_interval == 0:
            self.save(val_loss)
        if step in self.milestones and self.dist.is_main:
            self._save_weights(self.paths.milestone(self.milestones[step]), val_loss)
        if stop:
            self.save(val_loss)
            raise KeyboardInterrupt(f"interrupted: saved {self.last_saved}; continue with the same command plus --resume"
                                    if self.dist.is_main else "")
        # Validation and saving are not training: the next row's throughput starts after them.
        self._timer = time.perf_counter()
        return val_loss

    def _validate_the_start(self) -> None:
        """A validation that picks the best weights measures the start too (step 0), so a run that
        only makes the model worse keeps the weights it started from."""
        if self.step or not (isinstance(self.val_data, Validator) and self.val_data.best_key):
            return
        validation = self.evaluate()
        if validation and self.dist.is_main:
            tqdm.write("step 0: " + ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in validation.items()))
        self._track_best(validation)
        self.log.write({"step": 0, **validation})

    def _track_best(self, validation: dict) -> None:
        """A Validator with a best_key: keep the weights of its best validation so far (run_dir/best.pth)."""
        key = self.val_data.best_key if isinstance(self.val_data, Validator) else None
        if key is None or key not in validation:
            return
        if self.best is None or validation[key] > self.best["value"]:
            self.best = {"key": key, "value": validation[key], "step": self.step}
            if self.dist.is_main:
                self._save_weights(self.paths.run_dir / "best.pth", None)

    def _keep_best(self) -> None:
        """With keep_best, the stage's weights become those of the best validation (selection on the
        validation split, never on a test set); the last weights stay in the resumable state."""
        if not (isinstance(self.val_data, Validator) and self.val_data.keep_best and self.best):
            return
        best, key = self.paths.run_dir / "best.pth", self.best["key"]
        if self.best["step"] != self.step and best.is_file() and self.dist.is_main:
            tmp = self.paths.weights.with_name(f".{self.paths.weights.name}.best.tmp")
            shutil.copyfile(best, tmp)
            os.replace(tmp, self.paths.weights)
            print(f"keeping the best validation: step {self.best['step']} ({key} {self.best['value']:.4f}) "
                  f"in {self.paths.weights}; the last step's weights are in {self.last_saved}")

    def _read_pending(self, lr: float) -> dict:
        """The statistics summed since the last row, read back in one sync, as a metrics row."""
        values = dict(zip(STATS, self._pending.tolist()))
        self._pending.zero_()
        seconds = time.perf_counter() - self._timer
        steps, flops = self._pending_steps, self._pending_flops
        self._timer, self._pending_steps, self._pending_flops = time.perf_counter(), 0, 0.0
        if self.after_first_step is not None:
            self.after_first_step(seconds)
            self.after_first_step = None
        self.tokens_seen += int(values["tokens"])
        loss = values["loss_sum"] / max(values["count"], 1.0)  # token-weighted mean over the interval
        if values["nonfinite"]:
            self._nonfinite(int(values["nonfinite"]), loss, values["grad_norm"] / steps, lr)
        row = {"step": self.step, "epoch": self.step / self.steps_per_epoch, "loss": loss, "lr": lr,
               "tokens": self.tokens_seen, "tokens_per_s": values["tokens"] / max(seconds, 1e-9),
               "grad_norm": values["grad_norm"] / steps, "stop": values["stop"] > 0}
        if self.peak_flops:
            row["mfu"] = flops / max(seconds, 1e-9) / self.peak_flops
        if values["empty"]:  # steps that trained no token, so changed nothing (step.py)
            row["empty_steps"] = int(values["empty"])
        for hooks in self.hooks:  # a stage's own: DPO's rewards, GRPO's rollouts
            row.update(hooks.read_metrics(all_reduce_sum))
        if math.isfinite(loss) and self.spikes.update(loss):
            row["spike"] = True
            if self.dist.is_main:
                tqdm.write(f"step {self.step}: loss spike {loss:.3f} (recent average {self.spikes.average:.3f})")
        return row

    def _nonfinite(self, count: int, loss: float, grad_norm: float, lr: float) -> None:
        """Steps whose loss or gradient norm was NaN/inf: their update was skipped on the device.
        Count them (--skip_nonfinite) or stop; the weights are still the last finite ones."""
        self.skipped_nonfinite += count
        what = f"loss is {loss}" if not math.isfinite(loss) else f"gradient norm is {grad_norm}"
        if not self.cfg.skip_nonfinite:
            raise TrainingError(f"{what} at step {self.step} (lr {lr:.3g}); last good checkpoint: "
                                f"{self.last_saved or 'none saved yet'}. Lower --learning_rate, use "
                                "--dtype bfloat16/float32, or pass --skip_nonfinite to skip such steps")
        tqdm.write(f"step {self.step}: {what}, {count} update(s) skipped ({self.skipped_nonfinite} so far)")

    def _show(self, bar: tqdm, row: dict) -> None:
        postfix = {"loss": f"{row['loss']:.3f}", "lr": f"{row['lr']:.2e}", "tok/s": f"{row['tokens_per_s']:,.0f}"}
        if "mfu" in row:
            postfix["mfu"] = f"{100 * row['mfu']:.1f}%"
        for key, short in (pair for hooks in self.hooks for pair in hooks.progress):  # a stage's own figures
            if key in row:
                postfix[short] = f"{row[key]:.3f}"
        bar.set_postfix(postfix, refresh=False)

    def _install_sigint(self) -> Any:
        """First Ctrl-C: finish the current step, save, exit. Second: stop at once (a step on a slow
        CPU can take minutes), keeping the last saved state; saves are atomic, so nothing is half-written."""
        def request_stop(signum: int, frame: Any) -> None:
            if self._stop_requested:
                kept = self.last_saved or "none saved yet"
                print(f"\nsecond Ctrl-C: stopped at once; last saved state: {kept}"
                      f"{'; continue with the same command plus --resume' if self.last_saved else ''}",
                      file=sys.stderr, flush=True)
                os._exit(130)  # not KeyboardInterrupt: that waits for the running step to return to Python
            self._stop_requested = True
            when = "at the next log step, with every rank" if self.dist.enabled else "after this step"
            tqdm.write(f"Ctrl-C: saving {when} (press again to quit at once, keeping the last saved state)")
        try:
            return signal.signal(signal.SIGINT, request_stop)
        except ValueError:  # not the main thread (e.g. inside a test runner thread)
            return None
