"""What GRPO's metrics rows and validations measure (grpo.py): the rollouts' diagnostics, and the
held-out accuracy that picks the best weights.

RolloutStats, per metrics row (averaged over the rollouts since the last one, all ranks):
  reward, reward_std, rewards/<name>   what the reward is made of
  correct                              the share of right answers, apart from any partial reward
  mixed_groups                         groups whose correctness differs (0 < right < G): where the signal is
  all_wrong_groups, all_wrong_advantage_share
                                       groups with no right answer, and how much of the update comes from
                                       them (from partial rewards alone)
  zero_signal_groups, trained_groups   groups with equal rewards; groups kept by --dynamic_sampling
  completion_length, truncated, tool_use   how long, how often cut at the limit, how often the calculator wrote
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from common.device import autocast
from common.reasoning import answer_span, answers_match, is_compliant
from dataset.problems import Problem
from inference.batch import decode_batch
from inference.calculator import Calculator
from inference.sampling import SamplingConfig
from model import SpongeBob
from tokenizer import SpongeTokenizer

Reduce = Callable[[torch.Tensor], torch.Tensor]  # sums over all ranks (identity on one process)


class RolloutStats:
    """The rollouts' diagnostics, averaged over the rollouts since the last metrics row, all ranks:
    what the reward is made of, and where the signal comes from."""

    def __init__(self, group: int):
        self.group, self._sums = group, {}

    def add(self, scores: dict[str, torch.Tensor], rewards: torch.Tensor, seqs: list, right: torch.Tensor,
            advantages: torch.Tensor, keep: torch.Tensor) -> None:
        G, mass, all_wrong = self.group, advantages.abs().sum(dim=1), right == 0  # mass: how much a group pushes
        values = {"reward": float(rewards.mean()), "reward_std": float(rewards.std(dim=1).mean()),
                  "correct": float(right.sum()) / (len(right) * G),  # the share of right answers, kept apart
                  "completion_length": sum(len(s.tokens) for s in seqs) / len(seqs),
                  "truncated": sum(s.finish == "length" for s in seqs) / len(seqs),
                  "tool_use": sum(bool(s.tool_positions) for s in seqs) / len(seqs),  # the calculator wrote
                  "zero_signal_groups": float((rewards.std(dim=1) == 0).float().mean()),
                  "mixed_groups": float(((right > 0) & (right < G)).float().mean()),  # where correctness differs
                  "all_wrong_groups": float(all_wrong.float().mean()),
                  # the share of the advantages that comes from groups with no right answer: partial rewards only
                  "all_wrong_advantage_share": float(mass[all_wrong].sum() / mass.sum().clamp(min=1e-12)),
                  "trained_groups": float(keep.float().mean()),
                  **{f"rewards/{name}": float(v.mean()) for name, v in scores.items()}, "batches": 1.0}
        for k, v in values.items():
            self._sums[k] = self._sums.get(k, 0.0) + v

    def read(self, reduce: Reduce, device: torch.device) -> dict[str, float]:
        if not self._sums:
            return {}
        names = sorted(self._sums)
        totals = reduce(torch.tensor([self._sums[k] for k in names], device=device)).tolist()
        self._sums = {}
        batches = totals[names.index("batches")]
        return {k: v / batches for k, v in zip(names, totals) if k != "batches"}


class ProblemEval:
    """Held-out accuracy: greedy completions of held-out problems (all in one batch), scored by the
    rewards' matcher; under DDP each rank answers its share and the counts are summed."""

    def __init__(self, problems: list[Problem], tok: SpongeTokenizer, max_new_tokens: int, rank: int = 0,
                 world_size: int = 1, calculator: Calculator | None = None):
        self.problems, self.tok, self.max_new, self.calculator = problems, tok, max_new_tokens, calculator
        self.mine = problems[rank::world_size]
        self.prompts = [tok.apply_chat_template(p.prompt, add_generation_prompt=True, tokenize=True) for p in self.mine]

    @torch.no_grad()
    def evaluate(self, model: SpongeBob, device: torch.device, dtype: torch.dtype, reduce: Reduce) -> dict[str, float]:
        if not self.problems:
            return {}
        greedy = SamplingConfig(max_new_tokens=self.max_new, temperature=0,
                                stop_ids=(self.tok.im_end_id, self.tok.endoftext_id), calculator=self.calculator)
        texts = []
        if self.prompts:
            with autocast(device, dtype):
                seqs = decode_batch(model, self.prompts, [greedy] * len(self.prompts))
            texts = [self.tok.decode(s.tokens, skip_special_tokens=True) for s in seqs]
        correct = sum(answers_match(answer_span(t), p.gold) for t, p in zip(texts, self.mine))
        counts = reduce(torch.tensor([correct, sum(map(is_compliant, texts)), len(texts)], dtype=torch.float,
                                             device=device))
        right, compliant, n = counts.tolist()
        return {"val_accuracy": right / n, "val_compliance": compliant / n}
