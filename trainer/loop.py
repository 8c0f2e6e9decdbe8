"""The training loop of every stage but GRPO (which samples its own data: grpo.py), and its validation.

The data a loop reads (StageData.train, .val) is anything with

    num_batches(batch_size) -> int
        micro-batches per epoch on this rank (equal on all ranks: DDP hangs on an extra step)
    batches(batch_size, epoch, start=0) -> Iterator[Batch]
        the epoch's micro-batches from number `start` on; the same (seed, epoch) gives the
        same batches, which is what makes --resume exact

A Batch is a dict of CPU tensors. The keys the engine knows:

    input_ids     (B, T) token ids the model reads; required
    targets       (B, T) the next token at each position, -100 where nothing is trained; required
    loss_weight   (B, T) float weight of each target (distillation's tags); the loss is normalised
                  by the total weight instead of the count
    position_ids  (B, T) RoPE positions, restarting at each packed conversation
    doc_ids       (B, T) which packed conversation each position belongs to; the engine turns it
                  into the block-diagonal attention mask on the device (model/masks.py)
    seq_lens      (n,) CPU only: the length of every sequence that attends as one, for honest
                  token and FLOP counts; never moved to the device
    loss_count    () what the summed loss is divided by when it is summed over other units than
                  tokens (DPO: pairs)

Anything else rides along untouched to the stage's loss, which is how a stage passes its own
per-token data (DPO's seq_index, GRPO's advantages and old_logps).
"""
from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import Protocol

import torch

from common.device import autocast
from model import token_loss
from .distributed import all_reduce_sum
from .engine import MODEL_INPUTS, Engine, loss_normaliser
from .prefetch import Prefetcher
from .stage import Batch, StageData, StageLoss

class TrainData(Protocol):
    def num_batches(self, batch_size: int) -> int: ...

    def batches(self, batch_size: int, epoch: int, start: int = 0) -> Iterator[Batch]: ...


class CrossEntropy(StageLoss):
    """Next-token cross-entropy on the fp32 logits, summed over the trained targets (weighted where
    the batch carries loss_weight): pretraining, SFT and distillation without a teacher."""

    def __call__(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return token_loss(logits, batch["targets"], batch.get("loss_weight"), reduction="sum")


def fit(engine: Engine, data: StageData, loss_fn: StageLoss | None = None) -> None:
    """Train on data.train from engine.step to engine.total_steps, validating on data.val at --eval_interval;
    the loss is the stage's, or the cross-entropy on the trained targets."""
    train, val, loss_fn = data.train, data.val, loss_fn or CrossEntropy()
    steps = Prefetcher(step_batches(engine, train), pin if engine.device.type == "cuda" else None)
    engine.start(validate=lambda: validation_loss(engine, val, loss_fn), progress=loss_fn.progress)
    try:
        for micro_batches in steps:  # the micro-batches of one optimizer step, built ahead on a thread
            engine.set_lr()
            for i, batch in enumerate(micro_batches):
                batch = engine.to_device(batch)
                with engine.micro_batch(last=i == len(micro_batches) - 1):
                    loss = loss_fn(engine.forward(batch), batch)  # summed over the batch's trained targets
                engine.backward(loss, batch)
            engine.update()  # the step: exact normalisation, clipping, a guarded optimizer update
            engine.after_step(loss_fn.read_metrics)  # log, validate, save at their intervals; Ctrl-C
    finally:
        steps.close()
        engine.finish()


def step_batches(engine: Engine, data: TrainData) -> Iterator[list[Batch]]:
    """The micro-batches of each optimizer step from engine.step on, epoch by epoch; an epoch's last
    step takes what is left of it."""
    cfg, step = engine.cfg, engine.step
    while step < engine.total_steps:
        epoch, first = divmod(step, engine.steps_per_epoch)
        stream = data.batches(cfg.batch_size, epoch, start=first * cfg.accumulation_steps)
        for _ in range(first, engine.steps_per_epoch):
            if step >= engine.total_steps:
                return
            yield list(islice(stream, cfg.accumulation_steps))
            step += 1


def pin(micro_batches: list[Batch]) -> list[Batch]:
    """Page-locked CPU memory, so the copy to the GPU runs while the GPU computes."""
    return [{k: (v if k == "seq_lens" else v.pin_memory()) for k, v in b.items()} for b in micro_batches]


@torch.no_grad()
def validation_loss(engine: Engine, val: TrainData | None, loss_fn: StageLoss) -> dict[str, float]:
    """The mean loss over up to --eval_batches validation micro-batches, all ranks: one forward each."""
    cfg = engine.cfg
    if val is None or val.num_batches(cfg.batch_size) == 0:
        return {}
    engine.train_model.eval()
    total = torch.zeros(2, device=engine.device)
    for batch in islice(val.batches(cfg.batch_size, epoch=0), cfg.eval_batches):
        batch = engine.to_device(batch)
        with autocast(engine.device, engine.dtype):
            logits = engine.model(batch["input_ids"], **{k: batch[k] for k in MODEL_INPUTS if k in batch})
            total += torch.stack([loss_fn(logits, batch).float(), loss_normaliser(batch)])
    engine.train_model.train()
    loss_sum, count = all_reduce_sum(total).tolist()
    return {"val_loss": loss_sum / max(count, 1.0)}
