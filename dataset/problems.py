"""Problems with gold answers, for reinforcement learning from a checkable reward (grpo.py).

A problem is a conversation that ends with the user's question, plus the gold
answer its reply must reach. Any chat format works (dataset/chat_formats.py), so
R1 data from `python -m dataset.convert` and the demo's r1 files are read as they
are: the record's "answer" field is the gold, or else the <answer> of its last
assistant turn; the turns before that assistant turn are the prompt. A problem with
no gold is a file:line error, or counted and skipped under --skip_bad.

Raw GSM8K ({"question", "answer" ending "#### 72"}), Ape210K ({"original_text",
"ans", ...}) and CMATH ({"input", "golden", ...}) are read as they are
(dataset/math_sets.py): the question is the prompt and the gold is the number after
####, ans or golden, as one number. Read as a chat instead, their
gold would be GSM8K's whole worked solution, a reward no reply can earn.

A reward can only be earned when the gold is a short final answer, so a gold that is not
one is a file:line error too (or skipped under --skip_bad), never trained on:
  - a gold longer than MAX_GOLD_CHARS characters (a solution, not an answer);
  - in a file whose golds are mostly single numbers, a gold holding several: the matcher
    then compares it as whole text, which a reply that ends in the number never matches.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from common.reasoning import answer_span, numbers_in
from tokenizer.specials import ANSWER
from .chat_formats import ChatFormatError, detect_format, to_messages
from .math_sets import convert_hint, raw_problem, raw_set
from .readers import DataError, SkipStats, iter_records

MAX_GOLD_CHARS = 40  # Ape210K's and GSM8K's longest golds are under 20


@dataclass(frozen=True)
class Problem:
    where: str           # file:line
    prompt: list[dict]   # messages, ending with the user's turn
    gold: str
    read_as: str = ""    # "gsm8k", "ape210k", or the chat format the record was read in


# How each form's gold was found, for the data line a stage prints (describe_problems).
GOLD_OF = {"gsm8k": "GSM8K, gold: the number after ####", "ape210k": "Ape210K, gold: ans",
           "cmath": "CMATH, gold: golden"}


def describe_problems(problems: list[Problem]) -> str:
    """How the problems were read, e.g. "7,473 read as GSM8K, gold: the number after ####"."""
    counts: dict[str, int] = {}
    for p in problems:
        counts[p.read_as] = counts.get(p.read_as, 0) + 1
    chat = "{}, gold: the answer field or <answer>"
    return "; ".join(f"{n:,} read as {GOLD_OF.get(form) or chat.format(form or 'chat')}" for form, n in counts.items())


def _gold(record: dict, messages: list[dict]) -> str:
    gold = record.get("answer") if isinstance(record, dict) else None
    if isinstance(gold, str) and gold.strip() and messages[-1]["role"] == "assistant":
        return gold.strip()
    if messages[-1]["role"] == "assistant" and ANSWER in messages[-1]["content"]:
        return answer_span(messages[-1]["content"]).strip()
    raise ChatFormatError('no gold answer: give an "answer" field, or a reply with <answer>...</answer>',
                          "no gold answer")


def _problem(record: object, fmt: str, where: str, path: Path) -> Problem:
    """One problem from a chat record of format fmt; raises ChatFormatError."""
    messages = to_messages(record, fmt)
    gold = _gold(record, messages)
    if len(gold) > MAX_GOLD_CHARS:
        hint = "give the final answer alone"
        if isinstance(record, dict) and "question" in record:  # GSM8K-like, under another final marker
            hint += f" (GSM8K's final answer follows ####: {convert_hint('gsm8k', path)})"
        raise ChatFormatError(f"the gold answer is {len(gold)} characters ({gold[:30]!r}...), not a short final "
                              f"answer: no reply could earn its reward; {hint}", "gold not a short answer")
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    return Problem(where, messages[:last_user + 1], gold, fmt)


def _several_numbers(problems: list[Problem]) -> Iterator[tuple[Problem, ChatFormatError]]:
    """The problems whose gold holds several numbers, in a file whose golds are mostly one number."""
    counts = [len(numbers_in(p.gold)) for p in problems]
    if 2 * counts.count(1) <= len(problems):
        return
    for problem, n in zip(problems, counts):
        if n > 1:
            yield problem, ChatFormatError(
                f"the gold answer {problem.gold!r} holds {n} numbers where this file's golds are single numbers: "
                "it would be compared as whole text, a reward no numeric reply earns; give the one final number",
                "gold not a short answer")


def iter_problems(path: str | Path, data_format: str | None = None,
                  skip: SkipStats | None = None) -> Iterator[Problem]:
    """The problems of one file (read whole: the golds are checked against each other)."""
    fmt, problems = data_format, []
    for line, record in iter_records(Path(path), skip):
        where = f"{path}:{line}"
        try:
            name = raw_set(record) if data_format is None else None
            if name is not None:
                question, gold = raw_problem(record, name)
                problems.append(Problem(where, [{"role": "user", "content": question}], gold, name))
                continue
            fmt = fmt or detect_format(record)
            if fmt is None:
                raise ChatFormatError("no known chat format fits this record", "unknown format")
            problems.append(_problem(record, fmt, where, Path(path)))
        except ChatFormatError as e:
            if skip is None:
                raise DataError(f"{where}: {e}") from None
            skip.add(e.reason, where)
    refused = set()
    for problem, e in _several_numbers(problems):
        if skip is None:
            raise DataError(f"{problem.where}: {e}")
        skip.add(e.reason, problem.where)
        refused.add(problem.where)
    yield from (p for p in problems if p.where not in refused)
