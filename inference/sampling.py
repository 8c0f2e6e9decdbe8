"""How the next token is chosen: the sampling knobs (SamplingConfig) and their filters.

generate.py (one sequence, streaming) and batch.py (many at once) both pick every token with
sample_next, so a sequence's tokens do not depend on which of them produced it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .calculator import Calculator


GREEDY_BELOW = 1e-5  # a temperature below this is greedy: dividing logits by it would overflow
# The valid ranges of the sampling knobs (the server answers 400 outside them, eval_model.py refuses them).
TEMPERATURE_RANGE = (0.0, 2.0)
REPETITION_PENALTY_RANGE = (0.1, 10.0)
# 1.1 when sampling: small models fall into loops (the most reported complaint about
# them), while a stronger penalty (CTRL's 1.2) also hits characters such as 的 and ，
# that rightly recur in every Chinese sentence. Greedy decoding gets none, so that
# greedy means argmax and matches transformers, llama.cpp and Ollama token for token.
SAMPLING_REPETITION_PENALTY = 1.1


def default_repetition_penalty(temperature: float) -> float:
    """The penalty when the user names none: 1 (off) for greedy, 1.1 for sampling."""
    return 1.0 if temperature < GREEDY_BELOW else SAMPLING_REPETITION_PENALTY


@dataclass
class SamplingConfig:
    max_new_tokens: int = 256
    temperature: float = 0.8        # 0 means greedy
    top_k: int = 0                  # 0 disables top-k
    top_p: float = 1.0              # 1.0 disables nucleus sampling
    repetition_penalty: float = 1.0  # 1.0 disables it; >1 discourages repeats
    stop_ids: tuple[int, ...] = ()   # generation ends (without yielding it) on any of these
    calculator: Calculator | None = None  # writes the results of the model's equations (calculator.py)


def apply_repetition_penalty(logits: torch.Tensor, seen_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL-style penalty on every token already in the sequence: positive
    logits are divided by it and negative ones multiplied, so a seen token
    always becomes less likely whatever the sign of its logit."""
    if penalty == 1.0 or seen_ids.numel() == 0:
        return logits
    seen = torch.unique(seen_ids)
    picked = logits[seen]
    logits = logits.clone()
    logits[seen] = torch.where(picked > 0, picked / penalty, picked * penalty)
    return logits


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    if k <= 0 or k >= logits.size(-1):
        return logits
    kth_best = torch.topk(logits, k).values[-1]
    return logits.masked_fill(logits < kth_best, float("-inf"))


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probabilities sum to at least p."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    # A token is dropped when the tokens ranked above it already reach p;
    # the best token is therefore always kept.
    mass_before = torch.cumsum(probs, dim=-1) - probs
    drop_sorted = mass_before >= p
    drop_sorted[0] = False  # even when p is so small that it rounds to 0 in fp32
    drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(logits: torch.Tensor, seen_ids: torch.Tensor, cfg: SamplingConfig,
                generator: torch.Generator | None = None) -> int:
    """Pick the next token from one position's logits (vocab,)."""
    logits = apply_repetition_penalty(logits.float(), seen_ids, cfg.repetition_penalty)
    if cfg.temperature < GREEDY_BELOW:
        return int(torch.argmax(logits))
    logits = filter_top_k(logits / cfg.temperature, cfg.top_k)
    logits = filter_top_p(logits, cfg.top_p)
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))
