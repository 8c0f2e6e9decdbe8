"""Problems with gold answers, for reinforcement learning from a checkable reward (grpo.py).

A problem is a conversation that ends with the user's question, plus the gold
answer its reply must reach. Any chat format works (dataset/chat_formats.py), so
R1 data from `python -m dataset.convert` and the demo's r1 files are read as they
are: the record's "answer" field is the gold, or else the <answer> of its last
assistant turn; the turns before that assistant turn are the prompt. A problem with
no gold is a file:line error, or counted and skipped under --skip_bad.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from common.reasoning import answer_span
from tokenizer.specials import ANSWER
from .chat_formats import ChatFormatError, detect_format, to_messages
from .readers import DataError, SkipStats, iter_records


@dataclass(frozen=True)
class Problem:
    where: str           # file:line
    prompt: list[dict]   # messages, ending with the user's turn
    gold: str


def _gold(record: dict, messages: list[dict]) -> str:
    gold = record.get("answer") if isinstance(record, dict) else None
    if isinstance(gold, str) and gold.strip() and messages[-1]["role"] == "assistant":
        return gold.strip()
    if messages[-1]["role"] == "assistant" and ANSWER in messages[-1]["content"]:
        return answer_span(messages[-1]["content"]).strip()
    raise ChatFormatError('no gold answer: give an "answer" field, or a reply with <answer>...</answer>',
                          "no gold answer")


def iter_problems(path: str | Path, data_format: str | None = None,
                  skip: SkipStats | None = None) -> Iterator[Problem]:
    fmt = data_format
    for line, record in iter_records(Path(path), skip):
        where = f"{path}:{line}"
        try:
            fmt = fmt or detect_format(record)
            if fmt is None:
                raise ChatFormatError("no known chat format fits this record", "unknown format")
            messages = to_messages(record, fmt)
            gold = _gold(record, messages)
            last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
            yield Problem(where, messages[:last_user + 1], gold)
        except ChatFormatError as e:
            if skip is None:
                raise DataError(f"{where}: {e}") from None
            skip.add(e.reason, where)
