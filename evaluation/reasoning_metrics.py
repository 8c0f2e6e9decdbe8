"""Scoring reasoning replies: format compliance, answer accuracy, think length.

A reply is read by the format and matcher of common/reasoning.py (its docstring
says exactly what compliant and correct mean).

Think length. The think span is the text after the first <think>, up to the
next </think> (or, when unclosed, up to the next <answer>, else the end). Its
length is count_tokens of that text, taken raw (the newlines after <think> and
before </think> count, as they do in generate's thinking budget). Replies with
no <think> have no think length and are left out of the mean.

"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from common.reasoning import answer_span, answers_match, is_compliant, think_span


@dataclass(frozen=True)
class ReplyScore:
    compliant: bool
    correct: bool
    answer: str  # the span the matcher read
    think_tokens: int | None  # None: no <think> in the reply


def score_reply(reply: str, gold: str, count_tokens: Callable[[str], int]) -> ReplyScore:
    """Compliance, correctness and think length of one reply."""
    span = answer_span(reply)
    think = think_span(reply)
    return ReplyScore(compliant=is_compliant(reply), correct=answers_match(span, gold), answer=span,
                      think_tokens=None if think is None else count_tokens(think))


def score_replies(replies: list[str], golds: list[str], count_tokens: Callable[[str], int]) -> dict:
    """Scores of many replies against their gold answers.

    Returns n; compliance, accuracy and strict_accuracy in percent of n (0.0 when
    n is 0); mean_think_tokens over the replies that have a <think> (0.0 when none
    has) and with_think, how many those are.
    """
    if len(replies) != len(golds):
        raise ValueError(f"{len(replies)} replies but {len(golds)} gold answers")
    scores = [score_reply(reply, gold, count_tokens) for reply, gold in zip(replies, golds)]
    n = len(scores)
    lengths = [s.think_tokens for s in scores if s.think_tokens is not None]

    def percent(count: int) -> float:
        return 100.0 * count / n if n else 0.0

    return {
        "n": n,
        "compliance": percent(sum(s.compliant for s in scores)),
        "accuracy": percent(sum(s.correct for s in scores)),
        "strict_accuracy": percent(sum(s.compliant and s.correct for s in scores)),
        "mean_think_tokens": sum(lengths) / len(lengths) if lengths else 0.0,
        "with_think": len(lengths),
    }


def budget_label(max_think_tokens: int | None = None, min_think_tokens: int = 0,
                 continue_word: str | None = None) -> str:
    """A short name for a budget-forcing setting, for the first column of the table."""
    parts = []
    if max_think_tokens is not None:
        parts.append(f"max {max_think_tokens}")
    if min_think_tokens:
        parts.append(f"min {min_think_tokens}" + (f" ({continue_word})" if continue_word else ""))
    return ", ".join(parts) or "no forcing"


def format_table(rows: Sequence[tuple[str, dict]], label: str = "setting") -> str:
    """A markdown table of several score_replies results, one (name, scores) per row."""
    lines = [f"| {label} | n | compliance % | accuracy % | strict accuracy % | mean think tokens |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, s in rows:
        lines.append(f"| {name} | {s['n']} | {s['compliance']:.1f} | {s['accuracy']:.1f} | "
                     f"{s['strict_accuracy']:.1f} | {s['mean_think_tokens']:.1f} |")
    return "\n".join(lines)
