"""Preference losses: DPO, IPO and SimPO, with TRL's metrics.

A reply's log-probability under a model is the sum, over its trained tokens (SFT's
mask: the reply and its <|im_end|>), of log p(token | everything before). For a
pair, with pi the policy and ref the frozen reference, and beta = --pref_beta:

  sigmoid (DPO, Rafailov et al. 2023)
      z = (log pi(c) - log ref(c)) - (log pi(r) - log ref(r))
      loss = -log sigmoid(beta * z)
  ipo (Azar et al. 2023), on per-token averages a = log p / length, as TRL does
      z = (a_pi(c) - a_ref(c)) - (a_pi(r) - a_ref(r))
      loss = (z - 1 / (2 beta))^2
  simpo (Meng et al. 2024): no reference model, per-token averages, a margin gamma
      loss = -log sigmoid(beta * (a_pi(c) - a_pi(r)) - gamma)

--pref_ftx adds an SFT term on the chosen reply: ftx * (its mean negative log-prob per
token), LLaMA-Factory's pref_ftx. Rewards (TRL's names): rewards/chosen =
beta * (log pi(c) - log ref(c)) (SimPO: beta * a_pi(c)), rewards/margins their
difference, rewards/accuracies the share of pairs whose chosen reward is higher.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from model import IGNORE_INDEX

PREF_LOSSES = ("sigmoid", "ipo", "simpo")
METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
           "logps/rejected")
Batch = dict[str, torch.Tensor]


def sequence_logps(logits: torch.Tensor, batch: Batch, n_sequences: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-prob of each sequence's trained targets, their count), by the batch's seq_index."""
    targets = batch["targets"].reshape(-1)
    logp = -F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets, ignore_index=IGNORE_INDEX,
                            reduction="none")
    trained = (targets != IGNORE_INDEX).float()
    index = batch["seq_index"].reshape(-1).clamp(min=0)  # padding has no trained target: its index is moot
    sums = torch.zeros(n_sequences, device=logits.device).index_add(0, index, logp * trained)
    counts = torch.zeros(n_sequences, device=logits.device).index_add(0, index, trained)
    return sums, counts


def pair_losses(policy: tuple[torch.Tensor, torch.Tensor], reference: tuple[torch.Tensor, torch.Tensor] | None,
                kind: str, beta: float, gamma: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, chosen reward, rejected reward) per pair, from (sums, counts) of the 2B sequences
    (chosen at even, rejected at odd indices) under the policy and the reference."""
    (sums, counts) = policy
    c, r = sums[0::2], sums[1::2]
    if kind == "simpo":
        ac, ar = c / counts[0::2].clamp(min=1), r / counts[1::2].clamp(min=1)
        return -F.logsigmoid(beta * (ac - ar) - gamma), beta * ac, beta * ar
    ref_sums, _ = reference
    rc, rr = ref_sums[0::2], ref_sums[1::2]
    if kind == "ipo":
        nc, nr = counts[0::2].clamp(min=1), counts[1::2].clamp(min=1)
        z = (c - rc) / nc - (r - rr) / nr
        return (z - 1 / (2 * beta)) ** 2, beta * (c - rc) / nc, beta * (r - rr) / nr
    if kind != "sigmoid":
        raise ValueError(f"--pref_loss {kind}: choose {', '.join(PREF_LOSSES)}")
    chosen, rejected = beta * (c - rc), beta * (r - rr)
    return -F.logsigmoid(chosen - rejected), chosen, rejected


class PreferenceLoss:
    """The engine's loss_fn for preference pairs: summed pair losses, and TRL's metrics.

    reference(batch) -> logits, run without gradients: a frozen copy of the starting
    model, or (LoRA) the policy itself with its adapters switched off; None for SimPO.
    """

    def __init__(self, reference: Callable[[Batch], torch.Tensor] | None, kind: str, beta: float,
                 gamma: float, ftx: float, max_pairs: int):
        self.reference, self.kind, self.beta, self.gamma, self.ftx = reference, kind, beta, gamma, ftx
        self.max_pairs = max_pairs
        self._sums: torch.Tensor | None = None  # METRICS summed over pairs, then the pair count

    def __call__(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        n = 2 * self.max_pairs  # a fixed size keeps shapes static; unused slots are masked below
        policy = sequence_logps(logits, batch, n)
        reference = None
        if self.reference is not None:
            with torch.no_grad():
                reference = sequence_logps(self.reference(batch), batch, n)
        losses, chosen, rejected = pair_losses(policy, reference, self.kind, self.beta, self.gamma)
        if self.ftx:
            losses = losses + self.ftx * (-policy[0][0::2] / policy[1][0::2].clamp(min=1))
        real = (torch.arange(self.max_pairs, device=logits.device) < batch["loss_count"]).float()
        if torch.is_grad_enabled():  # training steps only: validation must not mix into the logged rewards
            self._record(real, chosen, rejected, policy[0])
        return (losses * real).sum()

    def _record(self, real: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor, sums: torch.Tensor) -> None:
        values = torch.stack([chosen, rejected, (chosen > rejected).float(), chosen - rejected, sums[0::2],
                              sums[1::2]]).detach()
        step = torch.cat([(values * real).sum(dim=1), real.sum()[None]])
        self._sums = step if self._sums is None else self._sums + step

    def read_metrics(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        """The metrics averaged over the pairs since the last read (all ranks: reduce sums them)."""
        if self._sums is None:
            return {}
        *totals, pairs = reduce(self._sums).tolist()
        self._sums = None
        return {name: total / max(pairs, 1.0) for name, total in zip(METRICS, totals)}
