"""Token-by-token generation: a streaming `generate` (the sampling itself: sampling.py).

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

import torch

from .budget import BudgetState, ThinkBudget
from .calculator import ToolState
from .kv_cache import KVCache
from .sampling import SamplingConfig, sample_next
from model import SpongeBob


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
        cache = KVCache.for_model(model, 1, len(ids) + max_new) if use_cache else None
        step_input = seq
        for _ in range(max_new):
            # A forced token still needs this forward pass: it feeds the previous token.
            logits = model(step_input[None], cache=cache)[0, -1]
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
