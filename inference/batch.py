"""Batched generation: many sequences decoded together, one forward pass per step for all of them.

A decode step of a 29M model on one token is tiny; a forward over 8 or 64 rows
costs little more than over 1 (bench/bench_serve.py). So instead of one KV cache
and one forward per sequence, a BatchDecoder keeps a *slot* per sequence in one
cache tensor and advances every active slot in one forward:

    row r feeds its last token at its own position p_r (RoPE angle p_r), writes its
    key/value into slot r at p_r, and attends to keys 0..p_r of its own slot only
    (a (B, 1, 1, keys) mask): rows of any length share the step.

Sequences join and leave between steps (continuous batching, for the server), and a
prompt is prefilled in chunks of at most `prefill_chunk` tokens, one chunk per step,
so a long prompt delays the running sequences by one chunk at a time. Each sequence
keeps its own SamplingConfig, random generator, stop ids and thinking budget, and is
sampled exactly as inference/generate.py samples it, so its tokens do not depend on
what else is in the batch (tests/test_batch_generate.py: each of 8 greedy rows equals
the same prompt generated alone). The GRPO stage's rollouts and serve.py both use it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from model import SpongeBob
from .budget import BudgetState, ThinkBudget
from .calculator import ToolState
from .sampling import SamplingConfig, sample_next


class SlotCache:
    """Keys and values of up to `slots` sequences, each in its own row: (layers, slots, kv_heads, max_len, dim)."""

    def __init__(self, model: SpongeBob, slots: int, max_len: int):
        cfg, w = model.config, model.embed.weight
        shape = (cfg.n_layers, slots, cfg.n_kv_heads, max_len, cfg.head_dim)
        self.keys = torch.zeros(shape, dtype=w.dtype, device=w.device)
        self.values = torch.zeros(shape, dtype=w.dtype, device=w.device)
        self.max_len = max_len


class _View:
    """What the model's attention sees during one forward: where each row's new keys go,
    and every key of its slot up to the longest row (the mask hides the rest)."""

    def __init__(self, cache: SlotCache, rows: torch.Tensor, starts: torch.Tensor, width: int):
        self.cache, self.rows, self.starts, self.width = cache, rows, starts, width
        self.length = 0  # unused: the caller gives positions and a mask

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        T = k.size(2)
        pos = self.starts[:, None] + torch.arange(T, device=k.device)  # (B, T)
        rows = self.rows[:, None].expand_as(pos)
        store = self.cache.keys.dtype  # under autocast k and v come in the compute dtype
        self.cache.keys[layer][rows, :, pos] = k.transpose(1, 2).to(store)
        self.cache.values[layer][rows, :, pos] = v.transpose(1, 2).to(store)
        keys = self.cache.keys[layer, self.rows, :, :self.width]
        values = self.cache.values[layer, self.rows, :, :self.width]
        return keys.to(k.dtype), values.to(v.dtype)

    def advance(self, n: int) -> None:
        pass


@dataclass
class Sequence:
    """One sequence being generated."""
    prompt: list[int]
    sampling: SamplingConfig
    generator: torch.Generator | None = None
    budget: ThinkBudget | None = None
    tokens: list[int] = field(default_factory=list)   # generated so far (forced ones included)
    cached: int = 0                                   # positions written into the slot
    logits: torch.Tensor | None = None                # the next token's logits, once computed
    finish: str | None = None                         # "stop" or "length" once done
    stop_id: int | None = None                        # the stop token sampled when finish is "stop"
    tool_positions: list[int] = field(default_factory=list)    # indices in tokens written by the calculator
    forced_positions: list[int] = field(default_factory=list)  # indices in tokens the budget forced (budget.py)

    def __post_init__(self) -> None:
        self.forcing = BudgetState(self.budget, self.prompt) if self.budget is not None else None
        self.tool = ToolState(self.sampling.calculator) if self.sampling.calculator is not None else None


class BatchDecoder:
    def __init__(self, model: SpongeBob, slots: int, max_len: int | None = None, prefill_chunk: int = 512):
        self.model = model
        self.context = model.config.max_position_embeddings
        self.cache = SlotCache(model, slots, min(max_len or self.context, self.context))
        self.prefill_chunk = prefill_chunk
        self.active: dict[int, Sequence] = {}
        self.free = list(range(slots))[::-1]

    @property
    def full(self) -> bool:
        return not self.free

    def add(self, prompt_ids: list[int], sampling: SamplingConfig, generator: torch.Generator | None = None,
            budget: ThinkBudget | None = None) -> int:
        """Take a free slot for a new sequence (prefilled over the next steps); returns the slot."""
        if not prompt_ids:
            raise ValueError("a sequence needs at least one prompt token")
        if not self.free:
            raise RuntimeError("no free slot: wait for a sequence to finish")
        seq = Sequence(list(prompt_ids), sampling, generator, budget)
        seq.max_new = min(sampling.max_new_tokens, self.cache.max_len - 1)
        seq.prompt = seq.prompt[-(self.cache.max_len - seq.max_new):]  # room for the new tokens, as generate does
        slot = self.free.pop()
        self.active[slot] = seq
        return slot

    def remove(self, slot: int) -> Sequence:
        """Free a slot at once (a finished or cancelled sequence)."""
        seq = self.active.pop(slot)
        self.free.append(slot)
        return seq

    @torch.no_grad()
    def step(self) -> list[tuple[int, int | None]]:
        """Sample every ready sequence, feed the sampled tokens in one forward, then prefill one chunk.
        Returns (slot, token) for each token chosen this step, and (slot, None) for each sequence that
        finished without one (a stop token). Finished sequences stay until remove()."""
        events, feed = [], []
        for slot, seq in self.active.items():
            if seq.finish is None and seq.logits is not None:
                token = self._choose(seq)
                events.append((slot, token))
                if token is not None and seq.finish is None:
                    feed.append(slot)
        if feed:
            self._feed(feed)
        self._prefill_one()
        return events

    def _choose(self, seq: Sequence) -> int | None:
        """The next token of one sequence, as inference/generate.py picks it."""
        logits, seq.logits = seq.logits, None
        token = seq.forcing.forced_next() if seq.forcing is not None else None
        forced = token is not None
        from_tool = token is None and seq.tool is not None and (token := seq.tool.forced_next()) is not None
        if token is None:
            seen = torch.tensor(seq.prompt + seq.tokens, device=logits.device)
            sampled = sample_next(logits, seen, seq.sampling, seq.generator)
            if sampled in seq.sampling.stop_ids:
                seq.finish, seq.stop_id = "stop", sampled
                return None
            token = seq.forcing.accept(sampled) if seq.forcing is not None else sampled
            forced = token != sampled  # an early </think> replaced by the continuation word
        seq.tokens.append(token)
        # Which tokens the model did not choose itself: GRPO trains none of them (grpo.py).
        if forced:
            seq.forced_positions.append(len(seq.tokens) - 1)
        if seq.tool is not None:
            if from_tool:
                seq.tool_positions.append(len(seq.tokens) - 1)
            seq.tool.observe(seq.tokens)
        if len(seq.tokens) >= seq.max_new:  # the prompt was cut so that max_new tokens always fit the slot
            seq.finish = "length"
        return token

    def _feed(self, slots: list[int]) -> None:
        """One forward over the given slots, each feeding its last token at its own position."""
        device = self.cache.keys.device
        seqs = [self.active[s] for s in slots]
        ids = torch.tensor([[seq.tokens[-1]] for seq in seqs], device=device)
        starts = torch.tensor([seq.cached for seq in seqs], device=device)
        width = int(starts.max()) + 1
        mask = (torch.arange(width, device=device)[None, :] <= starts[:, None])[:, None, None, :]
        view = _View(self.cache, torch.tensor(slots, device=device), starts, width)
        logits = self.model(ids, cache=view, position_ids=starts[:, None], attn_mask=mask)[:, -1]
        for seq, row in zip(seqs, logits):
            seq.cached += 1
            seq.logits = row

    @torch.no_grad()
    def prefill_all(self) -> None:
        """Prefill every waiting prompt now (offline batches: nothing to keep responsive). Identical
        prompts (GRPO's group of G samples of one problem) are computed once and their keys copied."""
        done: dict[tuple[int, ...], int] = {}
        for slot, seq in self.active.items():
            key = tuple(seq.prompt)
            if key in done and seq.cached == 0:
                src = done[key]
                n = len(seq.prompt)
                self.cache.keys[:, slot, :, :n] = self.cache.keys[:, src, :, :n]
                self.cache.values[:, slot, :, :n] = self.cache.values[:, src, :, :n]
                seq.cached, seq.logits = n, self.active[src].logits.clone()
                continue
            while seq.cached < len(seq.prompt):
                self._prefill(slot, seq)
            done[key] = slot

    def _prefill_one(self) -> None:
        """Write the next chunk of the prompt with the fewest tokens left (the oldest on a tie).
        Shortest first: a short prompt that arrives while a long one is being prefilled gets its
        first token after one chunk, not after the whole long prompt. The long one still moves
        a chunk each step there is no shorter prompt waiting, and the slots bound how many can."""
        todo = [(s, q) for s, q in self.active.items() if q.cached < len(q.prompt)]
        if todo:  # min() keeps the first of equals: the oldest, as the slots are in arrival order
            self._prefill(*min(todo, key=lambda sq: len(sq[1].prompt) - sq[1].cached))

    def _prefill(self, slot: int, seq: Sequence) -> None:
        """One chunk of one prompt into its slot; after the last chunk, the next token's logits."""
        device = self.cache.keys.device
        start, end = seq.cached, min(len(seq.prompt), seq.cached + self.prefill_chunk)
        ids = torch.tensor([seq.prompt[start:end]], device=device)
        keys = torch.arange(end, device=device)
        mask = (keys[None, :] <= torch.arange(start, end, device=device)[:, None])[None, None]
        view = _View(self.cache, torch.tensor([slot], device=device), torch.tensor([start], device=device), end)
        positions = torch.arange(start, end, device=device)[None]
        out = self.model(ids, cache=view, position_ids=positions, attn_mask=mask, last_only=end == len(seq.prompt))
        seq.cached = end
        if end == len(seq.prompt):
            seq.logits = out[0, -1]


def generate_batch(model: SpongeBob, prompts: list[list[int]], samplings: list[SamplingConfig],
                   generators: list[torch.Generator | None] | None = None,
                   budgets: list[ThinkBudget | None] | None = None, prefill_chunk: int = 512) -> list[list[int]]:
    """Generate a completion for every prompt, all in one batch; returns the new token ids of each."""
    return [seq.tokens for seq in decode_batch(model, prompts, samplings, generators, budgets, prefill_chunk)]


def decode_batch(model: SpongeBob, prompts: list[list[int]], samplings: list[SamplingConfig],
                 generators: list[torch.Generator | None] | None = None,
                 budgets: list[ThinkBudget | None] | None = None, prefill_chunk: int = 512) -> list[Sequence]:
    """generate_batch, returning each finished Sequence (its tokens and why it stopped)."""
    n = len(prompts)
    generators = generators or [None] * n
    budgets = budgets or [None] * n
    longest = max(len(p) + s.max_new_tokens for p, s in zip(prompts, samplings))
    was_training = model.training
    model.eval()
    try:
        decoder = BatchDecoder(model, n, longest, prefill_chunk)
        slots = [decoder.add(p, s, g, b) for p, s, g, b in zip(prompts, samplings, generators, budgets)]
        decoder.prefill_all()
        while any(seq.finish is None for seq in decoder.active.values()):
            decoder.step()
        return [decoder.active[s] for s in slots]
    finally:
        model.train(was_training)
