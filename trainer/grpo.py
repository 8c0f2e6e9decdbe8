"""GRPO: reinforcement learning from checkable rewards, with group-relative advantages.

Each step: for every problem, sample G completions from the current policy
(--num_generations, in one batch with the KV cache: inference/batch.py), reward each
(trainer/rewards.py), and compare it with its group:

    A_i = r_i - mean(r_group)            (/ std(r_group) with --scale_rewards)

Every completion token t of completion i then gets the clipped surrogate of PPO plus,
with --beta, a k3 estimate of the KL divergence to the frozen starting model:

    ratio_t = pi(t) / pi_old(t)      (pi_old: the policy that sampled; ratio 1 with --num_iterations 1)
    loss_t  = -min(ratio_t * A_i, clip(ratio_t, 1 - eps, 1 + eps) * A_i)
              + beta * (exp(ref_t - logp_t) - (ref_t - logp_t) - 1)

summed over all completion tokens and divided by their number across the whole step
(the engine's normalisation): token-level, as DAPO and Dr GRPO do, so a long
completion does not weigh less per token than a short one. A group whose rewards are
all equal has zero advantage: it gives no signal, and its share is logged.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from dataset.pretrain_dataset import epoch_order
from dataset.problems import Problem
from evaluation.reasoning_metrics import answer_span, answers_match, is_compliant
from inference.batch import decode_batch
from inference.budget import think_budget
from inference.generate import SamplingConfig
from model import IGNORE_INDEX, SpongeBob
from tokenizer import SpongeTokenizer
from .device import autocast
from .rewards import REWARDS

Batch = dict[str, torch.Tensor]


def group_advantages(rewards: torch.Tensor, scale: bool) -> torch.Tensor:
    """(prompts, G) rewards -> advantages: minus the group mean, divided by the group std if scale."""
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if not scale:
        return centred
    return centred / (rewards.std(dim=1, keepdim=True) + 1e-4)


def token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) at every position, 0 where the target is ignored."""
    logp = -F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                            ignore_index=IGNORE_INDEX, reduction="none")
    return logp.view_as(targets)


def clipped_objective(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                      epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token -min(r A, clip(r) A) and whether the clipped branch was taken."""
    ratio = torch.exp(logp - old_logp)
    unclipped, clipped = ratio * advantages, ratio.clamp(1 - epsilon, 1 + epsilon) * advantages
    return -torch.minimum(unclipped, clipped), clipped < unclipped


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(pi || ref) per token: exp(d) - d - 1 with d = ref - logp, always >= 0."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


class GRPOLoss:
    """The engine's loss_fn: the summed per-token GRPO loss of a batch of completions."""

    def __init__(self, reference: Callable[[Batch], torch.Tensor] | None, beta: float, epsilon: float):
        self.reference, self.beta, self.epsilon = reference, beta, epsilon
        self._sums: torch.Tensor | None = None  # summed kl, clipped tokens, tokens

    def __call__(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        targets = batch["targets"]
        trained = (targets != IGNORE_INDEX).float()
        logp = token_logps(logits, targets)
        old = batch["old_logps"] if "old_logps" in batch else logp.detach()
        loss, clipped = clipped_objective(logp, old, batch["advantages"], self.epsilon)
        kl = torch.zeros_like(logp)
        if self.beta and self.reference is not None:
            with torch.no_grad():
                ref = token_logps(self.reference(batch), targets)
            kl = k3_kl(logp, ref)
            loss = loss + self.beta * kl
        if torch.is_grad_enabled():
            step = torch.stack([(kl.detach() * trained).sum(), (clipped.float() * trained).sum(), trained.sum()])
            self._sums = step if self._sums is None else self._sums + step
        return (loss * trained).sum()

    def read_metrics(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        if self._sums is None:
            return {}
        kl, clipped, tokens = reduce(self._sums).tolist()
        self._sums = None
        return {"kl": kl / max(tokens, 1.0), "clip_fraction": clipped / max(tokens, 1.0)}


class RolloutData:
    """The engine's data for GRPO: each micro-batch is made by sampling from the current policy.

    batch_size counts problems; each gives num_generations completions (rows). The order of
    problems is a seeded permutation per epoch, sharded over ranks like every dataset here, and
    the sampling generator of each micro-batch is seeded by (seed, epoch, batch, rank): a resumed
    run samples exactly what the uninterrupted one would have. on_policy tells the engine not to
    build batches ahead: a rollout must come from the weights of the step that trains on it.
    """
    on_policy = True

    def __init__(self, problems: list[Problem], tok: SpongeTokenizer, cfg, rank: int = 0, world_size: int = 1):
        self.problems, self.tok, self.cfg = problems, tok, cfg
        self.rank, self.world_size = rank, world_size
        self.weights = cfg.reward_weight_map
        self.prompts = [tok.apply_chat_template(p.prompt, add_generation_prompt=True, tokenize=True) for p in problems]
        self.model: SpongeBob | None = None
        self._sums: dict[str, float] = {}

    def bind(self, model: SpongeBob, device: torch.device, dtype: torch.dtype) -> None:
        self.model, self.device, self.dtype = model, device, dtype

    def num_batches(self, batch_size: int) -> int:
        return -(-(len(self.problems) // self.world_size) // batch_size) * self.cfg.num_iterations

    def batches(self, batch_size: int, epoch: int, start: int = 0) -> Iterator[Batch]:
        order = epoch_order(len(self.problems), self.cfg.seed, epoch, self.rank, self.world_size, True).tolist()
        n = self.num_batches(batch_size) // self.cfg.num_iterations
        for b in range(start // self.cfg.num_iterations, n):
            batch = self.rollout(order[b * batch_size:(b + 1) * batch_size], epoch, b)
            done = start % self.cfg.num_iterations if b == start // self.cfg.num_iterations else 0  # resumed midway
            for _ in range(self.cfg.num_iterations - done):  # --num_iterations updates on each rollout
                yield batch

    def rollout(self, indices: list[int], epoch: int, b: int) -> Batch:
        cfg, G = self.cfg, self.cfg.num_generations
        seed = int.from_bytes(hashlib.sha256(f"{cfg.seed}:{epoch}:{b}:{self.rank}".encode()).digest()[:8], "little") >> 1
        sampling = SamplingConfig(max_new_tokens=cfg.max_completion_length, temperature=cfg.temperature,
                                  top_p=cfg.top_p, stop_ids=(self.tok.im_end_id, self.tok.endoftext_id))
        prompts = [self.prompts[i] for i in indices for _ in range(G)]
        generators = [torch.Generator(device=self.device).manual_seed(seed + j) for j in range(len(prompts))]
        budget = think_budget(self.tok, cfg.max_think_tokens) if cfg.max_think_tokens else None
        with autocast(self.device, self.dtype):
            seqs = decode_batch(self.model, prompts, [sampling] * len(prompts), generators,
                                [budget] * len(prompts))
        texts = [self.tok.decode(s.tokens, skip_special_tokens=True) for s in seqs]
        scores = {name: torch.tensor([REWARDS[name](t, self.problems[indices[k // G]]) for k, t in enumerate(texts)])
                  for name in self.weights}
        rewards = sum(w * scores[name] for name, w in self.weights.items()).view(-1, G)
        advantages = group_advantages(rewards, cfg.scale_rewards).view(-1)
        self._record(scores, rewards, seqs)
        return self._rows(prompts, seqs, advantages)

    def _rows(self, prompts: list[list[int]], seqs: list, advantages: torch.Tensor) -> Batch:
        """Prompt + completion per row; only the completion (and the <|im_end|> it stopped at) is trained."""
        im_end = self.tok.im_end_id
        rows = [(p, s.tokens + ([im_end] if s.finish == "stop" else [])) for p, s in zip(prompts, seqs)]
        width = max(len(p) + len(c) for p, c in rows) - 1
        batch = {"input_ids": torch.full((len(rows), width), self.tok.endoftext_id, dtype=torch.long),
                 "targets": torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long),
                 "advantages": torch.zeros(len(rows), width)}
        for i, (p, c) in enumerate(rows):
            ids = torch.tensor(p + c)
            batch["input_ids"][i, :len(ids) - 1] = ids[:-1]
            batch["targets"][i, len(p) - 1:len(ids) - 1] = ids[len(p):]
            batch["advantages"][i, len(p) - 1:len(ids) - 1] = advantages[i]
        batch["seq_lens"] = torch.tensor([len(p) + len(c) - 1 for p, c in rows])
        if self.cfg.num_iterations > 1:  # pi_old: the sampling policy's log-probs, for the ratio
            with torch.no_grad(), autocast(self.device, self.dtype):
                logits = self.model(batch["input_ids"].to(self.device)).logits
            batch["old_logps"] = token_logps(logits, batch["targets"].to(self.device)).float().cpu()
        return batch

    def _record(self, scores: dict[str, torch.Tensor], rewards: torch.Tensor, seqs: list) -> None:
        values = {"reward": float(rewards.mean()), "reward_std": float(rewards.std(dim=1).mean()),
                  "completion_length": sum(len(s.tokens) for s in seqs) / len(seqs),
                  "zero_signal_groups": float((rewards.std(dim=1) == 0).float().mean()),
                  **{f"rewards/{name}": float(v.mean()) for name, v in scores.items()}, "batches": 1.0}
        for k, v in values.items():
            self._sums[k] = self._sums.get(k, 0.0) + v

    def read_metrics(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        """Rollout statistics averaged over the micro-batches since the last read, over all ranks."""
        if not self._sums:
            return {}
        names = sorted(self._sums)
        totals = reduce(torch.tensor([self._sums[k] for k in names], device=self.device)).tolist()
        self._sums = {}
        batches = totals[names.index("batches")]
        return {k: v / batches for k, v in zip(names, totals) if k != "batches"}


class ProblemEval:
    """Held-out accuracy: greedy completions of held-out problems, scored by the same matcher."""

    def __init__(self, problems: list[Problem], tok: SpongeTokenizer, max_new_tokens: int):
        self.problems, self.tok, self.max_new = problems, tok, max_new_tokens
        self.prompts = [tok.apply_chat_template(p.prompt, add_generation_prompt=True, tokenize=True) for p in problems]

    def num_batches(self, batch_size: int) -> int:
        return 1 if self.problems else 0

    @torch.no_grad()
    def evaluate(self, model: SpongeBob, device: torch.device, dtype: torch.dtype) -> dict[str, float]:
        greedy = SamplingConfig(max_new_tokens=self.max_new, temperature=0,
                                stop_ids=(self.tok.im_end_id, self.tok.endoftext_id))
        with autocast(device, dtype):
            seqs = decode_batch(model, self.prompts, [greedy] * len(self.prompts))
        texts = [self.tok.decode(s.tokens, skip_special_tokens=True) for s in seqs]
        correct = [answers_match(answer_span(t), p.gold) for t, p in zip(texts, self.problems)]
        return {"val_accuracy": sum(correct) / len(texts), "val_compliance": sum(map(is_compliant, texts)) / len(texts)}
