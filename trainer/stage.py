"""What a stage script hands the engine: its data (StageData) and its loss (StageLoss).

    build_data(cfg, tok, dist) -> StageData(train, val, identity, description)
    build_loss(cfg, tok, device, model) -> StageLoss, or None for the loop's own cross-entropy
    loop(engine, data, loss_fn)           trainer/loop.py's fit, or the stage's own (grpo.py)
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

Batch = dict[str, torch.Tensor]
Reduce = Callable[[torch.Tensor], torch.Tensor]  # sums a tensor over all ranks (identity on one process)


@dataclass
class StageData:
    train: Any               # what the loop reads: TrainData (trainer/loop.py), or GRPO's problems
    val: Any                 # the same for validation, or GRPO's held-out problems; None for none
    identity: str            # fingerprint of the data, checked on --resume
    description: str         # one line for the start-up summary

    def steps_per_epoch(self, batch_size: int, accumulation_steps: int, max_seq_len: int) -> int:
        per_epoch = self.train.num_batches(batch_size)
        if per_epoch == 0:
            raise ValueError(f"the training data has less than one row of --max_seq_len {max_seq_len} "
                             "tokens; add data or lower --max_seq_len")
        return math.ceil(per_epoch / accumulation_steps)


class StageLoss:
    """A stage's loss on the model's logits: the SUM over what it trains (tokens, or pairs with
    loss_count), never the mean; the engine divides by the whole step's count, across micro-batches
    and ranks, so accumulation gives exactly the big batch's gradient."""
    progress: tuple[tuple[str, str], ...] = ()  # (metric, short name) pairs the progress bar shows

    def __call__(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def read_metrics(self, reduce: Reduce) -> dict[str, float]:
        """The stage's own statistics since the last call, summed over ranks by reduce (DPO's rewards)."""
        return {}
