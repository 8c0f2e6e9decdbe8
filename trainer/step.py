"""One optimizer step of the engine: micro-batches in, one guarded update out, no host sync.

Split from engine.py so that each file reads top to bottom: here is the math of a
step (the loss of a micro-batch, exact normalisation over the whole step, the one
all-reduce, clipping and the non-finite guard); engine.py is the loop around it.
Everything a step uses is handed to Step when it is made: reading one step means
reading this file.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch

from common.device import autocast, step_flops
from model import IGNORE_INDEX, token_loss
from model.masks import document_mask
from .config import TrainConfig
from .contract import Batch, Validator
from .distributed import DistInfo, all_reduce_sum

# loss_fn(logits, batch) -> summed (not averaged) loss over the batch's trained tokens: a
# StageLoss (trainer/contract.py). Without one, the model computes its own cross-entropy
# chunk by chunk (model/loss.py), never holding the full logits.
LossFn = Callable[[torch.Tensor, Batch], torch.Tensor]
MODEL_INPUTS = ("input_ids", "targets", "loss_weight", "position_ids", "attn_mask")
STATS = ("loss_sum", "count", "tokens", "stop", "nonfinite", "grad_norm", "empty")  # one device vector per step


def default_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """The summed cross-entropy from logits (the engine's own default skips the logits)."""
    return token_loss(logits, batch["targets"], batch.get("loss_weight"), reduction="sum")


def loss_normaliser(batch: Batch) -> torch.Tensor:
    """What the summed loss is divided by: the number of trained tokens, or
    their total weight when the batch carries per-token weights, or the batch's
    own loss_count when its loss is summed over other units (DPO: pairs)."""
    if "loss_count" in batch:
        return batch["loss_count"].float()
    valid = (batch["targets"] != IGNORE_INDEX).float()
    weight = batch.get("loss_weight")
    return (valid if weight is None else valid * weight.float()).sum()


def batch_tokens(batch: Batch) -> tuple[int, int]:
    """(non-padding positions, attended (query, key) pairs) of a CPU batch, for throughput and MFU."""
    lens = batch.get("seq_lens")
    if lens is None:
        rows, width = batch["input_ids"].shape
        return rows * width, rows * width * (width + 1) // 2
    lens = lens.long()
    return int(lens.sum()), int((lens * (lens + 1) // 2).sum())


class Step:
    """One optimizer step and one validation pass, over the model and optimizer it is given."""

    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, train_model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss_fn: LossFn | None,
                 dist: DistInfo, device: torch.device, dtype: torch.dtype, matmul_n: int):
        self.cfg, self.model, self.train_model, self.optimizer = cfg, model, train_model, optimizer
        self.scaler, self.loss_fn, self.dist, self.device, self.dtype = scaler, loss_fn, dist, device, dtype
        self.matmul_n = matmul_n
        self.fused = bool(optimizer.defaults.get("fused"))
        # Every micro-batch's summed loss is divided by this same constant before backward, so
        # gradients have a mean-like size (fp16 loss scaling needs that) without waiting for the
        # step's token count; the exact normalisation is applied to the gradients afterwards.
        self.loss_divisor = float(cfg.batch_size * cfg.accumulation_steps * cfg.max_seq_len)

    def prepare(self, micro_batches: list[Batch]) -> tuple[list[Batch], int, float]:
        """On the prefetch thread: count tokens and FLOPs on the CPU, pin for an async copy."""
        tokens = pairs = 0
        for batch in micro_batches:
            t, p = batch_tokens(batch)
            tokens, pairs = tokens + t, pairs + p
        c = self.model.config
        flops = step_flops(self.matmul_n, c.n_layers, c.dim, tokens, pairs)
        pin = self.device.type == "cuda"
        moved = [{k: (v.pin_memory() if pin else v) for k, v in b.items() if k != "seq_lens"} for b in micro_batches]
        return moved, tokens, flops

    def _to_device(self, batch: Batch) -> Batch:
        moved = {k: v.to(self.device, non_blocking=True) for k, v in batch.items() if k != "seq_lens"}
        if "doc_ids" in moved:  # packed rows: built here, outside any compiled region (model/masks.py)
            moved["attn_mask"] = document_mask(moved.pop("doc_ids"))
        return moved

    def _loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """The summed loss of one micro-batch: the model's own chunked cross-entropy, or loss_fn on logits."""
        inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
        ids = inputs.pop("input_ids")
        if self.loss_fn is None:
            return model(ids, **inputs, reduction="sum", return_logits=False).loss
        inputs.pop("targets"), inputs.pop("loss_weight", None)
        return self.loss_fn(model(ids, **inputs).logits, batch)

    def train_step(self, micro_batches: list[Batch], tokens: int = 0, stop: bool = False) -> torch.Tensor:
        """Forward/backward over all micro-batches, then one guarded optimizer update.
        Returns the step's statistics (STATS) as one tensor on the device; nothing is read back.

        Exact normalisation: the loss is summed over trained tokens, and the gradient is
        divided by the trained-token count of the WHOLE step (all micro-batches, all
        ranks), so N micro-batches of b rows give exactly the gradient of one batch of
        N*b rows, even when masks leave different numbers of trained tokens in each.
        """
        batches = [self._to_device(b) for b in micro_batches]
        local = torch.zeros(len(STATS), device=self.device)
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            sync = nullcontext() if (last or not self.dist.enabled) else self.train_model.no_sync()
            with sync, autocast(self.device, self.dtype):
                loss = self._loss(self.train_model, batch)
            self.scaler.scale(loss / self.loss_divisor).backward()
            local[0] += loss.detach().float()
            local[1] += loss_normaliser(batch)
        local[2] = tokens or sum(b["input_ids"].numel() for b in batches)
        local[3] = float(stop)  # a Ctrl-C on this rank, told to every rank by the all-reduce
        stats = all_reduce_sum(local)  # the one collective of the step: loss, count, tokens, stop flag
        # A step with no trained target anywhere (GRPO's --dynamic_sampling dropped every group) must
        # change nothing: no update, no momentum, no weight decay. It is skipped like a non-finite one.
        empty = stats[1] == 0
        # DDP averaged the gradients over ranks; undo the constant divisor, divide by the true count.
        factor = self.loss_divisor * self.dist.world_size / stats[1].clamp(min=1.0)
        self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        torch._foreach_mul_(grads, factor)
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip, foreach=True)
        nonfinite = ~torch.isfinite(stats[0])
        if not self.scaler.is_enabled():  # fp16's scaler skips overflowing steps itself
            nonfinite = nonfinite | ~torch.isfinite(grad_norm)
        self._update(nonfinite | empty)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        stats[4] = nonfinite.float()
        stats[5] = grad_norm.float()
        stats[6] = empty.float()
        return stats

    def _update(self, skip: torch.Tensor) -> None:
        """The optimizer step, skipped when the step was not finite or trained nothing. The fused AdamW
        takes the verdict as a device tensor and skips on the device (no sync); the others need the
        host to decide (fp16's GradScaler also skips an overflowing step on its own)."""
        if self.fused and not self.scaler.is_enabled():
            self.optimizer.found_inf = skip.float()
            self.optimizer.step()
            del self.optimizer.found_inf
        elif not bool(skip):
            if self.scaler.is_enabled():
                self.scaler.step(self.optimizer)
            else:
                self.optimizer.step()

    @torch.no_grad()
    def evaluate(self, val_data: object) -> dict[str, float]:
        """Validation metrics: the mean loss over up to --eval_batches micro-batches (all ranks),
        or whatever a Validator measures itself (GRPO: held-out accuracy)."""
        if val_data is None or val_data.num_batches(self.cfg.batch_size) == 0:
            return {}
        if isinstance(val_data, Validator):
            return val_data.evaluate(self.model, self.device, self.dtype)
        self.train_model.eval()
        total = torch.zeros(2, device=self.device)
        stream = val_data.batches(self.cfg.batch_size, epoch=0)
        for _, batch in zip(range(self.cfg.eval_batches), stream):
            batch = self._to_device(batch)
            with autocast(self.device, self.dtype):
                # Logits and a plain cross-entropy: the training loss's chunked form computes its
                # gradients in the forward pass, work a validation would throw away (2.3x, measured).
                inputs = {k: batch[k] for k in ("position_ids", "attn_mask") if k in batch}
                logits = self.model(batch["input_ids"], **inputs).logits
                loss = (self.loss_fn or default_loss)(logits, batch)
                total += torch.stack([loss.float(), loss_normaliser(batch)])
        self.train_model.train()
        loss_sum, count = all_reduce_sum(total).tolist()
        return {"val_loss": loss_sum / max(count, 1.0)}
