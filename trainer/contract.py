"""The contract between the engine and a stage: what a stage hands over, and the batch keys.

A stage script gives run_stage() two builders (trainer/run.py):

    build_data(cfg, tok, dist) -> StageData(train, val, identity, description)
    build_loss(cfg, tok, device, model) -> StageLoss | None     (None: the model's own cross-entropy)

`train` and `val` are TrainData: anything with

    num_batches(batch_size) -> int
        micro-batches per epoch on this rank (equal on all ranks: DDP hangs on an extra step)
    batches(batch_size, epoch, start=0) -> Iterator[Batch]
        the epoch's micro-batches from number `start` on; the same (seed, epoch) gives the
        same batches, which is what makes --resume exact

A stage whose data or loss needs more from the engine subclasses Hooks and overrides
what it needs; the engine calls the hooks of every part that is a Hooks, and nothing
else is probed. `val` may instead be a Validator, which measures itself (GRPO's
held-out accuracy) in place of the validation loss.

A Batch is a dict of CPU tensors. The keys the engine knows (BATCH_KEYS below):
everything else rides along untouched to the stage's loss, which is how a stage
passes its own per-token data (GRPO's advantages) without the engine knowing it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

import torch

Batch = dict[str, torch.Tensor]
Reduce = Callable[[torch.Tensor], torch.Tensor]  # sums a tensor over all ranks (identity on one process)

BATCH_KEYS = {
    "input_ids": "(B, T) token ids the model reads; required",
    "targets": "(B, T) the next token at each position, -100 where nothing is trained; required",
    "loss_weight": "(B, T) float weight of each target (distillation's tags); the loss is normalised by "
                   "the total weight instead of the count",
    "position_ids": "(B, T) RoPE positions, restarting at each packed conversation",
    "doc_ids": "(B, T) which packed conversation each position belongs to; the engine turns it into "
               "the block-diagonal attention mask on the device (model/masks.py)",
    "seq_lens": "(n,) CPU only: the length of every sequence that attends as one, for honest token and "
                "FLOP counts; never moved to the device",
    "loss_count": "() what the summed loss is divided by when it is summed over other units than "
                  "tokens (DPO: pairs)",
}
# Stage-specific keys that ride along to the stage's loss: DPO's "seq_index" (which
# sequence each position belongs to), GRPO's "advantages" and "old_logps".


@runtime_checkable
class TrainData(Protocol):
    def num_batches(self, batch_size: int) -> int: ...

    def batches(self, batch_size: int, epoch: int, start: int = 0) -> Iterator[Batch]: ...


class Hooks:
    """What a stage's data or loss may ask of the engine. Every hook has a do-nothing default."""

    # True: batches must come from the weights of the step that trains on them (GRPO's
    # rollouts), so the engine builds each step's batches only when it needs them.
    on_policy: bool = False
    # (metric, short name) pairs of read_metrics() that the progress bar shows.
    progress: tuple[tuple[str, str], ...] = ()

    def bind(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        """Called once, before training, with the model being trained (GRPO samples from it)."""

    def read_metrics(self, reduce: Reduce) -> dict[str, float]:
        """The stage's own statistics since the last call, for the metrics row (DPO's rewards)."""
        return {}


class Validator(Hooks):
    """Validation data that measures the model itself instead of the validation loss.

    best_key names a figure of evaluate() where higher is better: the engine then keeps the
    weights of the best validation in <out_dir>/<stage>/best.pth, and with keep_best they
    become <out_dir>/<stage>.pth at the end (model selection on the validation split)."""
    best_key: str | None = None
    keep_best: bool = False

    def num_batches(self, batch_size: int) -> int:
        return 1  # something to measure: the engine skips validation when this is 0

    def evaluate(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> dict[str, float]:
        raise NotImplementedError


class StageLoss(Hooks):
    """A stage's loss on the model's logits: the SUM over what it trains (tokens, or pairs with
    loss_count), never the mean; the engine divides by the whole step's count, across
    micro-batches and ranks, so accumulation gives exactly the big batch's gradient."""

    def __call__(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        raise NotImplementedError


def hooks_of(*parts: object) -> list[Hooks]:
    """The parts (data, validation, loss) that take hooks."""
    return [p for p in parts if isinstance(p, Hooks)]
