"""The training engine: the parts every stage's loop calls, in the order it calls them.

    engine = Engine(cfg, model, ...)        # optimizer, precision, DDP, compile; --resume restores all
    engine.start(validate)                  # progress bar, Ctrl-C
    while engine.step < engine.total_steps:
        engine.set_lr()                     # warmup, then cosine or WSD (trainer/optim.py)
        for each micro-batch of the step:
            batch = engine.to_device(batch)
            with engine.micro_batch(last):  # autocast; under DDP the gradient all-reduce waits for the last
                loss = loss_fn(engine.forward(batch), batch)   # summed over the batch's trained targets
            engine.backward(loss, batch)
        engine.update()                     # one all-reduce, exact normalisation, clip, a guarded step
        engine.after_step(metrics)          # log, validate, save, milestones, a requested stop
    engine.finish()                         # the bar, the log and Ctrl-C closed

trainer/loop.py is that loop for every stage but GRPO, which writes its own around its rollouts
(grpo.py). The ops around the loop (memory fit, elastic resume, Ctrl-C, spikes, milestones) are
trainer/ops.py's; the best checkpoint that GRPO's validation picks is trainer/best.py's. A step never
waits for the device: its loss, token count and stop flag stay there, summed, and are read back once
per log step, when a metrics row is written (with Muon, one host check per step decides whether
the update is skipped).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from common.device import autocast, make_scaler, matmul_params, peak_flops, step_flops
from model import IGNORE_INDEX, save_adapter, save_model, unwrap
from model.masks import document_mask
from . import ops
from .checkpoints import RunPaths, latest_state, save_state
from .config import TrainConfig, config_dict
from .distributed import DistInfo, all_reduce_sum, barrier
from .metrics import MetricsLog, start_wandb
from .optim import decay_start, lr_at, make_optimizers, set_lr
from .resume import check_resumable, restore_rng, rng_state
from .stage import Batch, Reduce

STATS = ("loss_sum", "count", "tokens", "stop", "nonfinite", "grad_norm", "empty")  # one device vector a step
MODEL_INPUTS = ("position_ids", "attn_mask")  # what the model reads besides input_ids


class TrainingError(RuntimeError):
    """A run that cannot go on (NaN loss, out of memory); the message says what to do."""


def loss_normaliser(batch: Batch) -> torch.Tensor:
    """What a batch's summed loss counts: its trained targets, their total weight when it carries
    per-token weights, or its own loss_count when the loss is summed over other units (DPO: pairs)."""
    if "loss_count" in batch:
        return batch["loss_count"].float()
    trained = (batch["targets"] != IGNORE_INDEX).float()
    weight = batch.get("loss_weight")
    return (trained if weight is None else trained * weight.float()).sum()


def batch_tokens(batch: Batch) -> tuple[int, int]:
    """(non-padding positions, attended (query, key) pairs) of a batch, from its CPU-side shape or
    seq_lens, for honest throughput and MFU."""
    lens = batch.get("seq_lens")
    if lens is None:
        rows, width = batch["input_ids"].shape
        return rows * width, rows * width * (width + 1) // 2
    lens = lens.long()
    return int(lens.sum()), int((lens * (lens + 1) // 2).sum())


class Engine:
    """One run's model, optimizer and position, and the primitives of its loop (see the module)."""

    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, stage: str, device: torch.device,
                 dtype: torch.dtype, dist: DistInfo, steps_per_epoch: int, tokenizer_identity: dict,
                 data_identity: str = "", adapter_base: dict | None = None):
        self.cfg, self.stage, self.device, self.dtype, self.dist = cfg, stage, device, dtype, dist
        self.tokenizer_identity, self.data_identity = tokenizer_identity, data_identity
        self.adapter_base = adapter_base  # a LoRA run: its checkpoints hold only the adapters
        self.paths = RunPaths(Path(cfg.out_dir), stage)
        self.model = model.to(device)
        self.optimizers = make_optimizers(self.model, cfg, dtype)  # [AdamW], or [Muon, AdamW]
        self.scaler = make_scaler(device, dtype)
        self.steps_per_epoch = steps_per_epoch
        planned = cfg.epochs * steps_per_epoch
        self.total_steps = min(planned, cfg.max_steps) if cfg.max_steps > 0 else planned
        self.step, self.tokens_seen, self.skipped_nonfinite = 0, 0, 0
        self.last_saved: str | None = None
        self.extra_state: dict = {}   # a stage's own part of the resumable state (GRPO's rollout)
        self.restored: dict = {}      # that part, as a --resume found it
        if cfg.resume:
            self._resume()
        # DDP first, then compile, so that dynamo splits the graph at DDP's buckets and the all-reduce
        # overlaps the backward. The RoPE tables are the only buffers and never change: nothing to broadcast.
        wrapped = (DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None,
                                           broadcast_buffers=False) if dist.enabled else self.model)
        self.train_model = torch.compile(wrapped) if cfg.compile else wrapped
        c = self.model.config
        self.matmul_n = matmul_params(sum(p.numel() for p in self.model.parameters()), c.vocab_size, c.dim,
                                      c.tie_embeddings)
        self.peak_flops, _ = peak_flops(device)
        # Every micro-batch's summed loss is divided by this constant before backward, so gradients have
        # a mean-like size (fp16 loss scaling needs that) without waiting for the step's token count.
        self.loss_divisor = float(cfg.batch_size * cfg.accumulation_steps * cfg.max_seq_len)
        self.fused = all(o.defaults.get("fused") for o in self.optimizers)  # skips on the device, no host sync
        self._local = torch.zeros(len(STATS), device=device)    # this step's, until update()
        self._pending = torch.zeros(len(STATS), device=device)  # summed since the last metrics row
        self._pending_flops, self._pending_steps, self._timer = 0.0, 0, time.perf_counter()
        wandb_run = (start_wandb(cfg.wandb_project, cfg.wandb_mode, self.paths.run_dir, stage, config_dict(cfg))
                     if cfg.use_wandb and dist.is_main else None)
        self.log = MetricsLog(self.paths.metrics, dist.is_main, resume_step=self.step if cfg.resume else None,
                              wandb_run=wandb_run)
        self.milestones = {max(1, round(e * steps_per_epoch)): e for e in cfg.save_at_epochs}
        self.interrupts, self.spikes = ops.Interrupts(dist), ops.SpikeDetector()
        self.validate: Callable[[], dict] | None = None
        self.progress: tuple[tuple[str, str], ...] = ()
        self.bar: tqdm | None = None
        self._planned = False  # the plan's time is said once, after the first steps

    # ------------------------------------------------------------------ the loop's primitives
    def start(self, validate: Callable[[], dict] | None = None, progress: tuple[tuple[str, str], ...] = ()) -> None:
        """Before the first step: the progress bar and Ctrl-C. validate() gives the validation's figures
        at --eval_interval and at the end; progress names the (metric, short name) pairs the bar shows."""
        self.validate, self.progress = validate, progress
        self.model.train()
        self.bar = tqdm(total=self.total_steps, initial=self.step, unit="step", dynamic_ncols=True,
                        disable=not self.dist.is_main, desc=self.stage)
        if self.cfg.compile:
            self.bar.set_postfix_str("compiling the model (the first steps are slow)")
        self.interrupts.install(self)
        self._timer = time.perf_counter()

    def set_lr(self) -> float:
        cfg = self.cfg
        self.lr = lr_at(self.step, self.total_steps, cfg.learning_rate, cfg.min_lr, cfg.warmup_steps, cfg.lr_schedule,
                        cfg.decay_fraction)
        set_lr(self.optimizers, self.lr)
        return self.lr

    def to_device(self, batch: Batch) -> Batch:
        """A CPU batch on the device (seq_lens stays behind: it is only counted); packed rows get their
        block-diagonal attention mask, built here, outside any compiled region (model/masks.py)."""
        moved = {k: (v if k == "seq_lens" else v.to(self.device, non_blocking=True)) for k, v in batch.items()}
        if "doc_ids" in moved:
            moved["attn_mask"] = document_mask(moved.pop("doc_ids"))
        return moved

    @contextmanager
    def micro_batch(self, last: bool) -> Iterator[None]:
        """Autocast for one micro-batch's forward; under DDP, no gradient all-reduce before the last."""
        sync = nullcontext() if last or not self.dist.enabled else self.train_model.no_sync()
        with sync, autocast(self.device, self.dtype):
            yield

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.train_model(batch["input_ids"], **{k: batch[k] for k in MODEL_INPUTS if k in batch})

    def backward(self, loss: torch.Tensor, batch: Batch) -> None:
        """Backward of one micro-batch's summed loss, and its counts for the step's normalisation."""
        self.scaler.scale(loss / self.loss_divisor).backward()
        tokens, pairs = batch_tokens(batch)
        c = self.model.config
        self._pending_flops += step_flops(self.matmul_n, c.n_layers, c.dim, tokens, pairs)
        self._local[0] += loss.detach().float()
        self._local[1] += loss_normaliser(batch)
        self._local[2] += tokens

    def update(self) -> torch.Tensor:
        """The optimizer step, with exact normalisation: the summed loss's gradient is divided by the
        trained-token count of the WHOLE step (all micro-batches, all ranks), so N micro-batches of b
        rows give exactly the gradient of one batch of N*b rows, whatever their masks leave. A step
        whose loss or gradient is not finite, or that trained nothing (GRPO's --dynamic_sampling
        dropped every group), changes nothing: no update, no momentum, no weight decay. Returns the
        step's statistics (STATS) on the device: nothing is read back here."""
        local, self._local = self._local, torch.zeros(len(STATS), device=self.device)
        local[3] = float(self.interrupts.requested)  # a Ctrl-C on this rank, told to every rank below
        stats = all_reduce_sum(local)  # the one collective of the step: loss, count, tokens, stop flag
        empty = stats[1] == 0
        for optimizer in self.optimizers:
            self.scaler.unscale_(optimizer)
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        # DDP averaged the gradients over ranks: undo the constant divisor, divide by the true count.
        torch._foreach_mul_(grads, self.loss_divisor * self.dist.world_size / stats[1].clamp(min=1.0))
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip, foreach=True)
        nonfinite = ~torch.isfinite(stats[0])
        if not self.scaler.is_enabled():  # fp16's scaler skips overflowing steps itself
            nonfinite = nonfinite | ~torch.isfinite(grad_norm)
        self._guarded_step(nonfinite | empty)
        self.scaler.update()
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        stats[4], stats[5], stats[6] = nonfinite.float(), grad_norm.float(), empty.float()
        self._pending += stats
        self._pending_steps += 1
        self.step += 1
        return stats

    def _guarded_step(self, skip: torch.Tensor) -> None:
        """The fused AdamW takes the verdict as a device tensor and skips on the device (no sync); Muon,
        and any other optimizer, needs the host to decide (fp16's GradScaler also skips an overflow itself)."""
        if self.fused and not self.scaler.is_enabled():
            for optimizer in self.optimizers:
                optimizer.found_inf = skip.float()
                optimizer.step()
                del optimizer.found_inf
        elif not bool(skip):
            for optimizer in self.optimizers:
                if self.scaler.is_enabled():
                    self.scaler.step(optimizer)
                else:
                    optimizer.step()

    def after_step(self, metrics: Callable[[Reduce], dict] | None = None) -> None:
        """At log steps only (the one host sync): the metrics row (with the stage's metrics(reduce)),
        the non-finite check, validation, checkpoints, milestones, and a requested stop."""
        step, cfg = self.step, self.cfg
        self.bar.update()
        final = step == self.total_steps
        evaluating = final or bool(cfg.eval_interval and step % cfg.eval_interval == 0)
        saving = final or step % cfg.save_interval == 0
        stop_now = self.interrupts.requested and not self.dist.enabled  # under DDP: at the next row, all ranks
        decaying = cfg.lr_schedule == "wsd" and step == decay_start(self.total_steps, cfg.warmup_steps,
                                                                    cfg.decay_fraction)
        if not (final or evaluating or saving or stop_now or decaying or step in self.milestones or step == 1
                or step % cfg.log_interval == 0):
            return
        row = self._row(metrics)
        stop = stop_now or row.pop("stop")
        validation = self.validate() if evaluating and self.validate is not None else {}
        row.update(validation)
        if validation and self.dist.is_main:
            tqdm.write(f"step {step}: " + ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in validation.items()))
        shown = {"loss": f"{row['loss']:.3f}", "lr": f"{row['lr']:.2e}", "tok/s": f"{row['tokens_per_s']:,.0f}"}
        shown |= ({"mfu": f"{100 * row['mfu']:.1f}%"} if "mfu" in row else {})
        self.bar.set_postfix(shown | {short: f"{row[key]:.3f}" for key, short in self.progress if key in row}, refresh=False)
        self.log.write(row)
        if saving or stop:
            self.save(validation.get("val_loss"))
        if decaying:  # a wsd run's state where its decay begins: a longer run goes on from it (ops.wsd_extension)
            self.save(validation.get("val_loss"), kind="stable_step")
        ops.save_milestone(self, validation.get("val_loss"))
        if stop:
            raise KeyboardInterrupt(f"interrupted: saved {self.last_saved}; continue with the same command plus "
                                    "--resume" if self.dist.is_main else "")
        self._timer = time.perf_counter()  # validating and saving are not training: not in the throughput

    def finish(self) -> None:
        """After the loop, or when it raised: close the bar and the log, give Ctrl-C back."""
        if self.bar is not None:
            self.bar.close()
        self.interrupts.uninstall()
        self.log.close()
        if self.step == self.total_steps and self.dist.is_main:
            print(f"done: {self.step} steps, {self.tokens_seen:,} tokens; weights in {self.paths.weights}")

    # ------------------------------------------------------------------ the metrics row
    def _row(self, metrics: Callable[[Reduce], dict] | None) -> dict:
        """The statistics summed since the last row, read back in one sync, as a metrics row."""
        values = dict(zip(STATS, self._pending.tolist()))
        self._pending.zero_()
        seconds, steps, flops = time.perf_counter() - self._timer, self._pending_steps, self._pending_flops
        self._pending_steps, self._pending_flops = 0, 0.0
        if not self._planned and self.device.type == "cpu" and self.dist.is_main:  # the first row on a CPU
            tqdm.write(ops.plan_time(self.total_steps, self.step, seconds / steps, self.device, self.cfg))
        self._planned = True
        self.tokens_seen += int(values["tokens"])
        loss = values["loss_sum"] / max(values["count"], 1.0)  # token-weighted mean over the interval
        if values["nonfinite"]:  # steps whose loss or gradient was NaN/inf: skipped on the device
            self.skipped_nonfinite += int(values["nonfinite"])
            what = f"loss is {loss}" if not math.isfinite(loss) else f"gradient norm is {values['grad_norm'] / steps}"
            if not self.cfg.skip_nonfinite:  # stop, naming the step; the weights are still the last finite ones
                raise TrainingError(f"{what} at step {self.step} (lr {self.lr:.3g}); last good checkpoint: "
                                    f"{self.last_saved or 'none saved yet'}. Lower --learning_rate, use "
                                    "--dtype bfloat16/float32, or pass --skip_nonfinite to skip such steps")
            tqdm.write(f"step {self.step}: {what}, {int(values['nonfinite'])} update(s) skipped "
                       f"({self.skipped_nonfinite} so far)")
        row = {"step": self.step, "epoch": self.step / self.steps_per_epoch, "loss": loss, "lr": self.lr,
               "tokens": self.tokens_seen, "tokens_per_s": values["tokens"] / max(seconds, 1e-9),
               "grad_norm": values["grad_norm"] / steps, "stop": values["stop"] > 0}
        if self.peak_flops:
            row["mfu"] = flops / max(seconds, 1e-9) / self.peak_flops  # this rank's FLOPs on its own device
        if values["empty"]:  # steps that trained no token, so changed nothing
            row["empty_steps"] = int(values["empty"])
        if metrics is not None:  # a stage's own: DPO's rewards, GRPO's rollouts
            row.update(metrics(all_reduce_sum))
        if math.isfinite(loss) and self.spikes.update(loss):
            row["spike"] = True
            if self.dist.is_main:
                tqdm.write(f"step {self.step}: loss spike {loss:.3f} (recent average {self.spikes.average:.3f})")
        return row

    # ------------------------------------------------------------------ saving and resuming
    def save(self, val_loss: float | None = None, kind: str = "step") -> None:
        """Weights for eval and the next stage, then the resumable state, written by rank 0 (never
        non-finite weights); every rank waits until they are on disk, so none goes on, or exits, before."""
        if self.dist.is_main:
            bad = [name for name, p in self.model.named_parameters() if not torch.isfinite(p).all()]
            if bad:
                raise TrainingError(f"refusing to save non-finite weights ({bad[0]} and {len(bad) - 1} more) at "
                                    f"step {self.step}; last good checkpoint: {self.last_saved or 'none saved yet'}")
            self.save_weights(self.paths.weights, val_loss)
            self.last_saved = str(save_state(self.paths, self.step, self._state(), self.cfg.keep_last, kind))
        barrier(long=True)
        if not self.dist.is_main:  # every rank can name the state (rank 0's path: the out_dir is shared)
            self.last_saved = str(self.paths.state(self.step, kind))

    def save_weights(self, path: Path, val_loss: float | None) -> None:
        meta = {"stage": self.stage, "step": self.step, "epoch": round(self.step / self.steps_per_epoch, 4),
                "tokens_seen": self.tokens_seen, "val_loss": val_loss, "max_seq_len": self.cfg.max_seq_len}
        if self.adapter_base is None:
            save_model(path, self.model, self.tokenizer_identity, meta)
            return
        base = {k: self.adapter_base[k] for k in ("path", "sha256")}
        lora = {k: self.adapter_base[k] for k in ("rank", "alpha", "targets")}
        save_adapter(path, self.model, self.tokenizer_identity, base, lora, meta)

    def _state(self) -> dict:
        return {"model": unwrap(self.model).state_dict(), "optimizers": [o.state_dict() for o in self.optimizers],
                "scaler": self.scaler.state_dict(), "rng": rng_state(), "tokens_seen": self.tokens_seen,
                "skipped_nonfinite": self.skipped_nonfinite, "config": config_dict(self.cfg),
                "world_size": self.dist.world_size, "data_identity": self.data_identity, "extra": self.extra_state,
                "total_steps": self.total_steps}

    def _resume(self) -> None:
        state = ops.wsd_extension(self.paths, self.cfg, self.total_steps) or latest_state(self.paths)
        if state is None:
            raise ValueError(f"--resume: no saved training state in {self.paths.state_dir}; "
                             "run once without --resume first")
        check_resumable(state, self.cfg, self.dist.world_size, self.data_identity)
        self.model.load_state_dict(state["model"])
        for optimizer, saved in zip(self.optimizers, state["optimizers"]):
            optimizer.load_state_dict(saved)
        self.scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"])
        self.step, self.tokens_seen = state["step"], state["tokens_seen"]
        self.skipped_nonfinite = state["skipped_nonfinite"]
        self.last_saved, self.restored = state["path"], state.get("extra", {})
        if self.dist.is_main:
            print(f"resuming from {state['path']} at step {self.step}/{self.total_steps}")

