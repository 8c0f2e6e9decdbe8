"""A calculator tool: when the model has written an equation up to its "=", the result is
written for it.

    model writes   先算花了多少金币：3×4=
    tool writes                            12
    model goes on                            。再算还剩多少：...

A tiny model picks the right numbers and operations far more often than it adds them
up right (the demo's distilled model gets about a quarter of its own equations right),
so a calculator removes the bottleneck that reinforcement learning cannot fix quickly.
The call needs no special tokens: the trigger is the "=" token after "<number><op><number>"
(+ - × ÷, also * / x), and the result is fed as ordinary tokens, exactly as the teacher's
traces write it. Only a whole, non-negative result is written (the demo's problems never
need another); anything else is left to the model.

The tool's tokens are not the model's: GRPO masks them out of its loss (tool_positions),
the way nanochat masks its calculator's output. Generation uses the tool when the
SamplingConfig carries a Calculator (generate.py, batch.py): eval_model.py, the stage
report and grpo.py turn it on with --calculator.
"""
from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable

EQUATION = re.compile(r"(\d+)\s*([-+×xX*÷/])\s*(\d+)\s*=$")
LOOKBACK_TOKENS = 12  # "123 × 45 =" is at most a few tokens; a longer look is never needed


def evaluate(a: int, op: str, b: int) -> int | None:
    """a op b when it is a whole number >= 0, else None."""
    if op == "+":
        value = a + b
    elif op == "-":
        value = a - b
    elif op in "×xX*":
        value = a * b
    elif b == 0 or a % b:  # ÷ and /: only exact divisions
        return None
    else:
        value = a // b
    return value if value >= 0 else None


class Calculator:
    """Finds an equation ending at the last token and gives the result's token ids."""

    def __init__(self, encode: Callable[[str], list[int]], decode: Callable[[list[int]], str]):
        self.encode, self.decode = encode, decode
        equals = encode("=")
        if len(equals) != 1:
            raise ValueError("the calculator needs '=' to be one token in this tokenizer")
        self.equals_id = equals[0]

    @classmethod
    def for_tokenizer(cls, tok) -> Calculator:  # a SpongeTokenizer or anything with encode/decode
        return cls(tok.encode, lambda ids: tok.decode(ids, skip_special_tokens=True))

    def result_ids(self, tokens: list[int]) -> list[int]:
        """The tokens of the result when tokens end with an equation's "=", else []."""
        if not tokens or tokens[-1] != self.equals_id:
            return []
        match = EQUATION.search(self.decode(tokens[-LOOKBACK_TOKENS:]))
        if match is None:
            return []
        value = evaluate(int(match.group(1)), match.group(2), int(match.group(3)))
        return [] if value is None else self.encode(str(value))


class ToolState:
    """One generation's use of the calculator. Per step: forced_next() first (a result being
    written); otherwise the model samples; then observe() sees the tokens so far (a result's
    own tokens never end with "=", so they never call the tool again)."""

    def __init__(self, calculator: Calculator):
        self.calculator = calculator
        self.pending: deque[int] = deque()

    def forced_next(self) -> int | None:
        return self.pending.popleft() if self.pending else None

    def observe(self, tokens: list[int]) -> None:
        self.pending.extend(self.calculator.result_ids(tokens))
