"""One request's text, built token by token: UTF-8-safe pieces, stop strings, thinking apart.

The tokens themselves come from the engine's batched decoder (inference/batch.py),
which samples each request's slot with the request's own settings and random
generator. A TextStream turns them into what the client reads; nothing in it is
shared between requests.
"""
from __future__ import annotations

from dataclasses import dataclass

from inference.budget import ThinkBudget
from inference.sampling import SamplingConfig
from inference.streaming import StreamDecoder
from inference.think_split import ANSWER, ThinkSplitter
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


class TextStream:
    """One request's text as its tokens arrive from the batched decoder: UTF-8-safe pieces,
    stop strings honoured, thinking split from the answer. Everything here belongs to this
    request alone; the engine hands it the tokens that the decoder chose for its slot."""

    def __init__(self, tok: SpongeTokenizer, request: GenerationRequest):
        self.request, self.completion_tokens = request, 0
        # Special tokens (<|im_start|> from an untrained model, say) are never shown;
        # the four reasoning tags are not special and stay for the splitter.
        self._decoder = StreamDecoder(tok, skip_special_tokens=True)
        self._stops = StopMatcher(request.stop)
        self._splitter = ThinkSplitter() if request.split_reasoning else None

    def push(self, token_id: int) -> tuple[list[Piece], Finished | None]:
        """One generated token: the text it completes, and Finished when a stop string ends the request."""
        self.completion_tokens += 1
        text, hit = self._stops.feed(self._decoder.push(token_id))
        if hit:
            return self._pieces(text, True), self._finished("stop")
        return self._pieces(text, False), None

    def end(self, reason: str) -> tuple[list[Piece], Finished]:
        """The decoder finished the request ("stop": a stop token, "length": max_tokens): flush what is held."""
        text, hit = self._stops.feed(self._decoder.flush())
        text += "" if hit else self._stops.flush()
        return self._pieces(text, True), self._finished("stop" if hit else reason)

    def _finished(self, reason: str) -> Finished:
        return Finished(reason, len(self.request.prompt_ids), self.completion_tokens)

    def _pieces(self, text: str, last: bool) -> list[Piece]:
        if self._splitter is None:
            return [Piece(ANSWER, text)] if text else []
        parts = self._splitter.feed(text) + (self._splitter.flush() if last else [])
        return [Piece(kind, chunk) for kind, chunk in parts]
