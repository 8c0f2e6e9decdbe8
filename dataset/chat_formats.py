"""The chat data formats users bring, detected and normalised to one shape.

Every format becomes a list of {"role": "system"|"user"|"assistant", "content": str}:

  minimind   {"conversations": [{"role", "content"}, ...]}         (MiniMind / SpongeBob)
  sharegpt   {"conversations": [{"from": "human|gpt|system", "value"}, ...]}
  openai     {"messages": [{"role", "content"}, ...]}
  alpaca     {"instruction", "input"?, "output", "system"?, "history"?: [[q, a], ...]}
  qa         {"question", "answer" or "std_answer", "system"?}       (one exchange; R1 dumps, BELLE eval)
  zhihu      {"INSTRUCTION", "RESPONSE", "SOURCE"?, "METADATA"?}      (one exchange; Zhihu-KOL)

Alpaca semantics (LLaMA-Factory's): `instruction` is what the user says and
`input`, when present, is extra material appended to it after a newline; each
[q, a] pair of `history` is an earlier user/assistant turn; `output` is the reply.

Reasoning: API dumps (OpenAI, DeepSeek) keep an assistant turn's thinking in a
separate `reasoning_content` beside `content`, and OpenAI/LLaMA-Factory content
may be a list of parts, some of type "reasoning". Either becomes a <think> block
before the reply, "<think>\n{reasoning}\n</think>\n{content}", so the thinking
reaches the model as text; dataset/reasoning.py then puts reasoning replies in
their one canonical form.

Checks, each a ChatFormatError with a one-line reason (the caller adds file:line):
unknown roles, a system turn that is not first, an assistant turn before any
user turn, no assistant turn at all, empty content, reasoning_content on a turn
that is not the assistant's, and wrong types.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .math_sets import convert_hint, raw_set
from .readers import DataError, SkipStats, iter_records
from .streaming import ChatFormatError

CHAT_FORMATS: tuple[str, ...] = ("minimind", "sharegpt", "openai", "alpaca", "qa", "zhihu")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system"}


def detect_format(record: Any) -> str | None:
    """The format of one record, or None if it looks like none of them."""
    if not isinstance(record, dict):
        return None
    if "messages" in record:
        return "openai"
    turns = record.get("conversations")
    if isinstance(turns, list) and turns and isinstance(turns[0], dict):
        if "from" in turns[0] or "value" in turns[0]:
            return "sharegpt"
        if "role" in turns[0] or "content" in turns[0]:
            return "minimind"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if "question" in record and ("answer" in record or "std_answer" in record):
        return "qa"
    if "INSTRUCTION" in record and "RESPONSE" in record:
        return "zhihu"
    return None


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ChatFormatError(f"{what} must be a string, got {type(value).__name__}", "wrong type")
    if not value.strip():
        raise ChatFormatError(f"{what} is empty (fix the record, or pass --skip_bad to skip such records)",
                              "empty content")
    return value


def _content(value: Any, what: str) -> str:
    """A turn's text. Content may also be a list of parts, as OpenAI and
    LLaMA-Factory write it: [{"type": "text"|"reasoning", "text"|"value": ...}];
    text parts are joined, and reasoning parts become a <think> block before them."""
    if isinstance(value, list):
        texts, thinking = [], []
        for part in value:
            body = part.get("text", part.get("value")) if isinstance(part, dict) else None
            if not isinstance(body, str):
                raise ChatFormatError(f"{what}: each part must be an object with a text or value string",
                                      "wrong type")
            (thinking if part.get("type") == "reasoning" else texts).append(body)
        value = "".join(texts)
        if thinking and value.strip():
            value = f"<think>\n{''.join(thinking)}\n</think>\n{value}"
    return _text(value, what)


def _with_reasoning(turn: dict, role: str, content: str, i: int) -> str:
    """content with the turn's reasoning_content, if any, as a <think> block before it."""
    reasoning = turn.get("reasoning_content")
    if reasoning is None or (isinstance(reasoning, str) and not reasoning.strip()):
        return content  # dumps write null or "" when the model did not think
    if not isinstance(reasoning, str):
        raise ChatFormatError(f"turn {i + 1} reasoning_content must be a string, got {type(reasoning).__name__}",
                              "wrong type")
    if role != "assistant":
        raise ChatFormatError(f"turn {i + 1}: reasoning_content on a {role} turn; only replies think",
                              "misplaced reasoning")
    return f"<think>\n{reasoning}\n</think>\n{content}"


def _turns(record: dict, key: str, role_key: str, text_key: str, roles: dict[str, str]) -> list[dict]:
    turns = record.get(key)
    if not isinstance(turns, list) or not turns:
        raise ChatFormatError(f'"{key}" must be a non-empty list of turns', "wrong type")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise ChatFormatError(f"turn {i + 1} must be an object, got {type(turn).__name__}", "wrong type")
        role = turn.get(role_key)
        if role not in roles:
            raise ChatFormatError(f"turn {i + 1}: unknown role {role!r} (expected {', '.join(sorted(roles))})",
                                  "unknown role")
        content = _content(turn.get(text_key), f"turn {i + 1} {text_key}")
        messages.append({"role": roles[role], "content": _with_reasoning(turn, roles[role], content, i)})
    return messages


def _alpaca(record: dict) -> list[dict]:
    messages = []
    if record.get("system"):
        messages.append({"role": "system", "content": _text(record["system"], "system")})
    history = record.get("history") or []
    if not isinstance(history, list):
        raise ChatFormatError(f'"history" must be a list of [question, answer] pairs, got {type(history).__name__}',
                              "wrong type")
    for i, pair in enumerate(history):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ChatFormatError(f"history item {i + 1} must be a [question, answer] pair", "wrong type")
        messages.append({"role": "user", "content": _text(pair[0], f"history item {i + 1} question")})
        messages.append({"role": "assistant", "content": _text(pair[1], f"history item {i + 1} answer")})
    user = _text(record.get("instruction"), "instruction")
    extra = record.get("input") or ""
    if not isinstance(extra, str):
        raise ChatFormatError(f"input must be a string, got {type(extra).__name__}", "wrong type")
    messages.append({"role": "user", "content": f"{user}\n{extra}" if extra.strip() else user})
    messages.append({"role": "assistant", "content": _text(record.get("output"), "output")})
    return messages


def _qa(record: dict, question: str = "question", answer: str = "answer") -> list[dict]:
    """One exchange: record[question] asked, record[answer] replied (Zhihu-KOL: INSTRUCTION, RESPONSE)."""
    messages = []
    if record.get("system"):
        messages.append({"role": "system", "content": _text(record["system"], "system")})
    messages.append({"role": "user", "content": _text(record.get(question), question)})
    if answer == "answer" and answer not in record:
        answer = "std_answer"  # BELLE's eval set's name (left empty for open-ended questions)
    messages.append({"role": "assistant", "content": _text(record.get(answer), answer)})
    return messages


def check_order(messages: list[dict]) -> None:
    """System only first; a user turn before any assistant turn; at least one assistant turn."""
    for i, m in enumerate(messages):
        if m["role"] == "system" and i > 0:
            raise ChatFormatError(f"turn {i + 1}: a system turn may only come first", "bad turn order")
    spoken = [m["role"] for m in messages if m["role"] != "system"]
    if spoken and spoken[0] == "assistant":
        raise ChatFormatError("the first turn after any system prompt is the assistant's; it must be the user's",
                              "assistant turn first")
    if "assistant" not in spoken:
        raise ChatFormatError("no assistant turn: nothing to train on", "no assistant turn")


def to_messages(record: Any, fmt: str) -> list[dict]:
    """Normalise one record of format fmt; raises ChatFormatError."""
    if not isinstance(record, dict):
        raise ChatFormatError(f"expected a JSON object, got {type(record).__name__}", "wrong type")
    identity = {"system": "system", "user": "user", "assistant": "assistant"}
    if fmt in ("minimind", "openai"):
        messages = _turns(record, "conversations" if fmt == "minimind" else "messages", "role", "content", identity)
    elif fmt == "sharegpt":
        messages = _turns(record, "conversations", "from", "value", SHAREGPT_ROLES)
    elif fmt == "alpaca":
        messages = _alpaca(record)
    elif fmt == "qa":
        messages = _qa(record)
    elif fmt == "zhihu":
        messages = _qa(record, "INSTRUCTION", "RESPONSE")
    else:
        raise ChatFormatError(f"unknown format {fmt!r}; choose from {', '.join(CHAT_FORMATS)}", "unknown format")
    check_order(messages)
    return messages


def _is_plain_text(record: Any) -> bool:
    """A pretraining record: a .txt document, or one text field and nothing that could be a
    turn (MiniMind's {"text": ...})."""
    if isinstance(record, str):
        return True
    return isinstance(record, dict) and isinstance(record.get("text"), str) and \
        not {"conversations", "messages", "instruction", "question"} & set(record)


def _not_chat_data(record: Any, found: str | None, where: str, path: str | Path, reasoning: bool) -> str | None:
    """Why a file whose first record is this is not chat data of the kind wanted, naming what to
    run instead; None when it is. These are whole-file mistakes: --skip_bad does not skip them."""
    if found is None and _is_plain_text(record):
        shape = "plain text" if isinstance(record, str) else '{"text": ...} records'
        return f"{where}: this is pretraining text ({shape}, no turns); train on it with pretrain.py --data_path {path}"
    name = raw_set(record)
    if name == "cmath":
        return (f"{where}: this is CMATH (math problems with a gold answer, no reply), not chat data: train on it "
                f"with grpo.py --data_path {path}, or score stages on it: python -m evaluation.report --math_file {path}")
    if name == "ape210k" or (name == "gsm8k" and reasoning):
        what = "Ape210K math problems (an equation, no reply)" if name == "ape210k" else \
            "GSM8K (solutions with no <think>)"
        return f"{where}: this is raw {what}, not reasoning data: convert it first: {convert_hint(name, path)}"
    return None


def iter_conversations(path: str | Path, data_format: str | None = None,
                       skip: SkipStats | None = None, reasoning: bool = False) -> Iterator[tuple[str, list[dict]]]:
    """(where, messages) for every record of one file.

    Without data_format, the first record decides the file's format and every
    later record must match it: a file that mixes formats is almost always a
    concatenation mistake. With data_format, records are read as that format.
    Bad records raise DataError('path:line: ...') unless skip counts them. A file of
    another kind (pretraining text; raw GSM8K when reasoning data is wanted; raw Ape210K)
    is refused at its first record, in one line naming the command for it.
    """
    if data_format is not None and data_format not in CHAT_FORMATS:
        raise DataError(f"--data_format {data_format}: choose from {', '.join(CHAT_FORMATS)}")
    fmt = data_format
    for line, record in iter_records(Path(path), skip):
        where = f"{path}:{line}"
        try:
            found = detect_format(record)
            if fmt is None:
                if (why := _not_chat_data(record, found, where, path, reasoning)) is not None:
                    raise DataError(why)
                if found is None:
                    keys = ", ".join(sorted(record)) if isinstance(record, dict) else type(record).__name__
                    raise ChatFormatError(f"no known chat format ({', '.join(CHAT_FORMATS)}) fits this "
                                          f"record (keys: {keys}); pass --data_format", "unknown format")
                fmt = found
            elif data_format is None and found != fmt:
                raise ChatFormatError(f"this record is {found or 'no known format'} but the file began as "
                                      f"{fmt}: mixed formats in one file", "mixed formats")
            messages = to_messages(record, fmt)
        except ChatFormatError as e:
            if skip is None:
                raise DataError(f"{where}: {e}") from None
            skip.add(e.reason, where)
            continue
        yield where, messages
