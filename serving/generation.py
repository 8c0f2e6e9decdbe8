"""One request's generation, advanced a token at a time: text pieces out, stop strings honoured.

A Generation owns everything that belongs to one request: its own token
iterator (and so its own KV cache and its own random generator), its streaming
decoder, stop-string matcher and thinking splitter. Nothing is shared between
two Generations except the read-only model, which is why the engine can
interleave their steps without one request ever seeing another's state.
"""
from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
import torch

from inference.budget import ThinkBudget
from inference.generate import SamplingConfig, generate
from inference.streaming import StreamDecoder
from inference.think_split import ANSWER, ThinkSplitter
from model import SpongeBob
from tokenizer import SpongeTokenizer


@dataclass
class GenerationRequest:
    """What the HTTP layer asks for, already checked."""
    prompt_ids: list[int]
    sampling: SamplingConfig
    seed: int | None = None
    stop: tuple[str, ...] = ()
    split_reasoning: bool = True
    budget: ThinkBudget | None = None   # budget forcing of the thinking span (inference/budget.py)


@dataclass
class Piece:
    """A run of generated text: kind "think" goes to reasoning_content, "answer" to content."""
    kind: str
    text: str


@dataclass
class Finished:
    finish_reason: str          # "stop" (a stop token or string) or "length" (max_tokens)
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Failed:
    message: str


class StopMatcher:
    """Cut text at the first stop string, holding back any tail that may still start one."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = tuple(s for s in stops if s)
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """(text that is safe to show, whether a stop string was found)."""
        self._pending += text
        hits = [at for at in (self._pending.find(s) for s in self.stops) if at >= 0]
        if hits:
            ready, self._pending = self._pending[:min(hits)], ""
            return ready, True
        keep = self._possible_start_length()
        ready = self._pending[:len(self._pending) - keep]
        self._pending = self._pending[len(self._pending) - keep:]
        return ready, False

    def flush(self) -> str:
        ready, self._pending = self._pending, ""
        return ready

    def _possible_start_length(self) -> int:
        for size in range(min(len(self._pending), max((len(s) for s in self.stops), default=0)), 0, -1):
            tail = self._pending[-size:]
            if any(s.startswith(tail) for s in self.stops):
                return size
        return 0


@dataclass(eq=False)  # two Generations are never the same one, whatever their fields
class Generation:
    model: SpongeBob
    tok: SpongeTokenizer
    request: GenerationRequest
    completion_tokens: int = 0
    _tokens: Iterator[int] = field(init=False)

    def __post_init__(self) -> None:
        seed = self.request.seed if self.request.seed is not None else secrets.randbits(63)
        # A generator per request: a seeded request's output cannot depend on
        # which other requests were sampled in between.
        rng = torch.Generator(device=self.model.embed.weight.device).manual_seed(seed)
        self._tokens = generate(self.model, self.request.prompt_ids, self.request.sampling, generator=rng,
                                budget=self.request.budget)
        # Special tokens (<|im_start|> from an untrained model, say) are never shown;
        # the four reasoning tags are not special and stay for the splitter.
        self._decoder = StreamDecoder(self.tok, skip_special_tokens=True)
        self._stops = StopMatcher(self.request.stop)
        self._splitter = ThinkSplitter() if self.request.split_reasoning else None

    def step(self) -> tuple[list[Piece], Finished | None]:
        """Generate one token: the text it completes, and Finished when the request is done."""
        try:
            token_id = next(self._tokens)
        except StopIteration:  # a stop token, or max_tokens reached
            text, hit = self._stops.feed(self._decoder.flush())
            text += "" if hit else self._stops.flush()
            full = self.completion_tokens >= self.request.sampling.max_new_tokens
            return self._pieces(text, True), self._finished("length" if full and not hit else "stop")
        self.completion_tokens += 1
        text, hit = self._stops.feed(self._decoder.push(token_id))
        if hit:
            self.close()
            return self._pieces(text, True), self._finished("stop")
        return self._pieces(text, False), None

    def close(self) -> None:
        """Stop generating (frees the KV cache at once rather than at garbage collection)."""
        close = getattr(self._tokens, "close", None)
        if close is not None:
            close()

    def _finished(self, reason: str) -> Finished:
        return Finished(reason, len(self.request.prompt_ids), self.completion_tokens)

    def _pieces(self, text: str, last: bool) -> list[Piece]:
        if self._splitter is None:
            return [Piece(ANSWER, text)] if text else []
        parts = self._splitter.feed(text) + (self._splitter.flush() if last else [])
        return [Piece(kind, chunk) for kind, chunk in parts]
