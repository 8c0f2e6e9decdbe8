"""Token-by-token generation: sampling filters and a streaming `generate`.

`generate` yields each new token id as soon as it is chosen, so callers can
print while the model is still thinking. With the KV cache (the default) each
step feeds one token; without it every step re-reads the whole sequence, which
is slower but is the reference that the cache must match.

With a ThinkBudget (inference/budget.py) some tokens are forced instead of sampled,
to cap or stretch a reasoning model's thinking; they are fed and yielded like
sampled ones, through the cache as well.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from .budget import BudgetState, ThinkBudget
from .calculator import Calculator, ToolState
from model import SpongeBob


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


@torch.no_grad()
def generate(model: SpongeBob, prompt_ids: Iterable[int], cfg: SamplingConfig | None = None,
             use_cache: bool = True, generator: torch.Generator | None = None,
             budget: ThinkBudget | None = None) -> Iterator[int]:
    """Yield up to cfg.max_new_tokens new token ids after prompt_ids.

    Stops early on any sampled id in cfg.stop_ids (which is not yielded) or when
    the model's context is full. A prompt longer than the context keeps its last
    tokens, leaving room for the new ones. budget: budget forcing of the thinking
    span (see inference/budget.py); its forced tokens count toward max_new_tokens.
    """
    cfg = cfg or SamplingConfig()
    device = model.embed.weight.device
    context = model.config.max_position_embeddings
    ids = list(prompt_ids)
    if not ids:
        raise ValueError("generate needs at least one prompt token")
    # Whether thinking is open is read from the whole prompt, before it is cut to the context.
    forcing = BudgetState(budget, ids) if budget is not None else None
    tool = ToolState(cfg.calculator) if cfg.calculator is not None else None
    written: list[int] = []  # the new tokens, for the calculator to read
    max_new = min(cfg.max_new_tokens, context - 1)
    ids = ids[-(context - max_new):]
    seq = torch.tensor(ids, dtype=torch.long, device=device)
    stop = set(cfg.stop_ids)

    was_training = model.training
    model.eval()
    try:
        cache = model.new_cache(1, len(ids) + max_new) if use_cache else None
        step_input = seq
        for _ in range(max_new):
            # A forced token still needs this forward pass: it feeds the previous token.
            logits = model(step_input[None], cache=cache).logits[0, -1]
            next_id = forcing.forced_next() if forcing is not None else None
            if next_id is None and tool is not None:
                next_id = tool.forced_next()
            if next_id is None:
                next_id = sample_next(logits, seq, cfg, generator)
                if next_id in stop:
                    return
                if forcing is not None:
                    next_id = forcing.accept(next_id)
            if tool is not None:
                written.append(next_id)
                tool.observe(written)
            yield next_id
            next_tensor = torch.tensor([next_id], dtype=torch.long, device=device)
            seq = torch.cat([seq, next_tensor])
            # With a cache only the new token is fed; without one, everything again.
            step_input = next_tensor if use_cache else seq
    finally:
        model.train(was_training)
