"""Budget forcing (s1-style test-time scaling): cap or stretch a reasoning model's thinking.

A reasoning reply is `<think>…</think><answer>…</answer>`. Two knobs act on the
thinking span while it is generated, without retraining:

- max_think_tokens N: once N thinking tokens have been generated and thinking is
  still open, the next tokens are not sampled but forced: `</think>\\n<answer>\\n`.
  The cap is hard: a continuation word that is being forced when it is reached
  is cut off, so a think span never holds more than N tokens.
- min_think_tokens M: if the model samples `</think>` after fewer than M thinking
  tokens, that token is replaced by a continuation word ("等等" by default, as
  s1 appends "Wait") and thinking goes on. The model may try again later; each
  early try is replaced the same way.

What counts: thinking is open after a `<think>` token, whether the prompt ends
inside an open think span or the model generates the tag, and closes at
`</think>`. Thinking tokens are the tokens generated (sampled or forced) while it
is open, the `</think>` excepted, counted from 0 at each opening; prompt tokens
are never counted. Forced tokens are fed through the model (and its KV cache)
like sampled ones, count toward max_new_tokens, and are never taken for stop ids.

    budget = think_budget(tok, max_think_tokens=256, min_think_tokens=32)
    for token_id in generate(model, prompt_ids, cfg, budget=budget): ...
"""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

DEFAULT_CONTINUE_WORD = "等等"
FORCED_CLOSE_TEXT = "</think>\n<answer>\n"


@dataclass(frozen=True)
class ThinkBudget:
    """The token ids and limits of budget forcing; think_budget() builds one from a tokenizer."""
    think_open_id: int
    think_close_id: int
    forced_close_ids: tuple[int, ...]  # fed when the cap is reached; starts with think_close_id
    continue_ids: tuple[int, ...]  # fed instead of an early think_close_id
    max_think_tokens: int | None = None  # None: no cap
    min_think_tokens: int = 0  # 0: the model may close whenever it likes

    def __post_init__(self) -> None:
        if self.max_think_tokens is not None and self.max_think_tokens < 0:
            raise ValueError(f"max_think_tokens must be 0 or more, got {self.max_think_tokens}")
        if self.min_think_tokens < 0:
            raise ValueError(f"min_think_tokens must be 0 or more, got {self.min_think_tokens}")
        if self.max_think_tokens is not None and self.min_think_tokens > self.max_think_tokens:
            raise ValueError(f"min_think_tokens {self.min_think_tokens} is above "
                             f"max_think_tokens {self.max_think_tokens}")
        # The forced close must end thinking at once, or the cap would fire again on every step.
        if not self.forced_close_ids or self.forced_close_ids[0] != self.think_close_id:
            raise ValueError("forced_close_ids must start with think_close_id")
        if not self.continue_ids:
            raise ValueError("the continuation word is empty: it must encode to at least one token")
        if {self.think_open_id, self.think_close_id} & set(self.continue_ids):
            raise ValueError("the continuation word must not contain <think> or </think>")


class BudgetTokenizer(Protocol):
    think_id: int
    think_end_id: int

    def encode(self, text: str) -> list[int]: ...


def think_budget(tok: BudgetTokenizer, max_think_tokens: int | None = None, min_think_tokens: int = 0,
                 continue_word: str = DEFAULT_CONTINUE_WORD) -> ThinkBudget | None:
    """The ThinkBudget for tok's reasoning tags, or None when neither limit is set."""
    if max_think_tokens is None and min_think_tokens == 0:
        return None
    return ThinkBudget(
        think_open_id=tok.think_id, think_close_id=tok.think_end_id,
        forced_close_ids=tuple(tok.encode(FORCED_CLOSE_TEXT)), continue_ids=tuple(tok.encode(continue_word)),
        max_think_tokens=max_think_tokens, min_think_tokens=min_think_tokens,
    )


def thinking_at_end(ids: Sequence[int], open_id: int, close_id: int) -> bool:
    """True when ids end inside a think span: a <think> after the last </think>."""
    for token_id in reversed(ids):
        if token_id == close_id:
            return False
        if token_id == open_id:
            return True
    return False


class BudgetState:
    """Where one generation stands against its ThinkBudget. Per step, generate asks
    forced_next() first; only when it says None does it sample, and then passes the
    sampled id through accept(). Both record the token they return."""

    def __init__(self, budget: ThinkBudget, prompt_ids: Sequence[int]):
        self.budget = budget
        self.thinking = thinking_at_end(prompt_ids, budget.think_open_id, budget.think_close_id)
        self.think_tokens = 0
        self.pending: deque[int] = deque()  # forced tokens still to feed

    def forced_next(self) -> int | None:
        """The token to feed instead of sampling, or None to let the model choose."""
        cap = self.budget.max_think_tokens
        if self.thinking and cap is not None and self.think_tokens >= cap:
            # Replaces a half-fed continuation word too: the cap wins over the minimum.
            self.pending = deque(self.budget.forced_close_ids)
        if not self.pending:
            return None
        return self._record(self.pending.popleft())

    def accept(self, sampled_id: int) -> int:
        """The sampled token, or the continuation word's first token when it closes thinking too early."""
        budget = self.budget
        if sampled_id == budget.think_close_id and self.thinking and self.think_tokens < budget.min_think_tokens:
            self.pending.extend(budget.continue_ids)
            return self._record(self.pending.popleft())
        return self._record(sampled_id)

    def _record(self, token_id: int) -> int:
        if self.thinking:
            if token_id == self.budget.think_close_id:
                self.thinking = False
            else:
                self.think_tokens += 1
        elif token_id == self.budget.think_open_id:
            self.thinking, self.think_tokens = True, 0
        return token_id
