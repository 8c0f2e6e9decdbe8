"""Reward functions for GRPO: a completion and its problem in, a number out.

Each reward sees the completion as generated (decoded with the four reasoning tags
visible, without <|im_end|>) and the Problem (dataset/problems.py: prompt and gold).
They are combined by --reward_weights, e.g. "accuracy:1,format:0.2", and each is
logged on its own as rewards/<name>.

Adding one: write `def my_reward(completion: str, problem: Problem) -> float`, put
it in REWARDS under a name, and give that name a weight in --reward_weights.
"""
from __future__ import annotations

import operator
import re
from typing import Callable

from dataset.problems import Problem
from common.reasoning import answer_span, answers_match, is_compliant

RewardFn = Callable[[str, Problem], float]


def accuracy_reward(completion: str, problem: Problem) -> float:
    """1 when the answer matches the gold by the project's one matcher (common/reasoning.py)."""
    return 1.0 if answers_match(answer_span(completion), problem.gold) else 0.0


def format_reward(completion: str, problem: Problem) -> float:
    """1 when the completion is exactly <think>...</think><answer>...</answer>, each tag once, in order."""
    return 1.0 if is_compliant(completion) else 0.0


# "12+9=21", "3 × 4 = 12", "20-7=13", "18÷3=6": integers only, so the check is exact.
EQUATION = re.compile(r"(?<![\d.])(\d+)\s*([+\-−×*÷/])\s*(\d+)\s*=\s*(\d+)(?![\d.])")
_APPLY = {"+": operator.add, "-": operator.sub, "−": operator.sub, "×": operator.mul, "*": operator.mul}


def _is_right(a: int, op: str, b: int, c: int) -> bool:
    if op in "÷/":  # a ÷ b = c exactly, in integers: no float, and nothing divides by zero
        return b != 0 and a == b * c
    return _APPLY[op](a, b) == c


def arithmetic_reward(completion: str, problem: Problem) -> float:
    """The share of the completion's written calculations ("a+b=c") that are right; 0 when it writes none.

    A process reward that is still verifiable: it checks each step's arithmetic, not
    whether the step was the right one to take. A tiny model's wrong answers are mostly
    wrong sums, and this scores each sum, where accuracy only scores the last one."""
    found = EQUATION.findall(completion)
    if not found:
        return 0.0
    right = sum(_is_right(int(a), op, int(b), int(c)) for a, op, b, c in found)
    return right / len(found)


REWARDS: dict[str, RewardFn] = {"accuracy": accuracy_reward, "format": format_reward,
                                "arithmetic": arithmetic_reward}


def parse_reward_weights(text: str) -> dict[str, float]:
    """'accuracy:1,format:0.2' -> {"accuracy": 1.0, "format": 0.2}; one line naming the rewards on error."""
    weights = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition(":")
        try:
            if not sep or name.strip() not in REWARDS:
                raise ValueError
            weights[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--reward_weights {text}: write name:weight pairs separated by commas, "
                             f"with names from {', '.join(REWARDS)} (e.g. accuracy:1,format:0.2)") from None
    if not weights or not any(weights.values()):
        raise ValueError(f"--reward_weights {text}: give at least one reward a non-zero weight "
                         f"({', '.join(REWARDS)})")
    return weights
