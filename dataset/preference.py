"""Preference pairs (DPO data) in the shapes users bring, normalised to one: a prompt and two replies.

  minimind    {"chosen": [messages], "rejected": [messages]}: the same conversation twice,
              differing only in the last (assistant) turn
  prompt      {"prompt", "chosen", "rejected"}: each a string (the user's turn, the replies)
              or a list of messages ({"role", "content"})
  sharegpt    LLaMA-Factory's ranking set: {"conversations": [{"from", "value"}, ...],
              "chosen": {"from": "gpt", "value"}, "rejected": {...}, "system"?}
  alpaca      LLaMA-Factory's: {"instruction", "input"?, "chosen", "rejected", "system"?, "history"?}
  medicalgpt  MedicalGPT's: {"conversations": [{"from", "value"}, ...], "chosen": str, "rejected": str}

Each becomes (prompt messages ending with a user turn, chosen reply, rejected reply).
Bad pairs are ChatFormatErrors with a one-line reason, as in chat_formats.py: the
caller adds file:line, or counts and skips them under --skip_bad. Besides the
chat checks: a chosen reply identical to the rejected one (there is nothing to
prefer), an empty or missing reply, and, for the two-conversation shape,
conversations that differ before their last turn (a different prompt).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .chat_formats import SHAREGPT_ROLES, ChatFormatError, _alpaca, _content, _text, _turns, check_order
from .readers import DataError, SkipStats, iter_records

PREF_FORMATS: tuple[str, ...] = ("minimind", "prompt", "sharegpt", "alpaca", "medicalgpt")
Pair = tuple[list[dict], str, str]  # (prompt messages, chosen reply, rejected reply)


def detect_pref_format(record: Any) -> str | None:
    if not isinstance(record, dict) or "chosen" not in record or "rejected" not in record:
        return None
    chosen = record["chosen"]
    if "prompt" in record:
        return "prompt"
    if "instruction" in record:
        return "alpaca"
    if "conversations" in record:
        return "sharegpt" if isinstance(chosen, dict) else "medicalgpt"
    if isinstance(chosen, list):
        return "minimind"
    return None


def _messages(value: Any, what: str) -> list[dict]:
    """A list of {"role", "content"} messages, or a plain string taken as one user turn."""
    if isinstance(value, str):
        return [{"role": "user", "content": _text(value, what)}]
    return _turns({what: value}, what, "role", "content", {"system": "system", "user": "user",
                                                          "assistant": "assistant"})


def _reply(value: Any, what: str) -> str:
    """A reply: a string, a {"from"/"role", "value"/"content"} turn, or a one-message list."""
    if value is None:
        raise ChatFormatError(f'no "{what}" reply', "missing reply")
    if isinstance(value, dict):
        value = value.get("value", value.get("content"))
    elif isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0].get("content", value[0].get("value"))
    return _content(value, what)


def _two_conversations(record: dict) -> Pair:
    chosen, rejected = _messages(record["chosen"], "chosen"), _messages(record["rejected"], "rejected")
    for name, conv in (("chosen", chosen), ("rejected", rejected)):
        if conv[-1]["role"] != "assistant":
            raise ChatFormatError(f"{name} must end with an assistant turn", "no reply")
    if chosen[:-1] != rejected[:-1]:
        raise ChatFormatError("chosen and rejected have different prompts (every turn but the last must match)",
                              "different prompts")
    return chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]


def to_pair(record: Any, fmt: str) -> Pair:
    """Normalise one record of format fmt; raises ChatFormatError."""
    if not isinstance(record, dict):
        raise ChatFormatError(f"expected a JSON object, got {type(record).__name__}", "wrong type")
    if fmt == "minimind":
        prompt, chosen, rejected = _two_conversations(record)
    elif fmt == "prompt":
        prompt = _messages(record.get("prompt"), "prompt")
        chosen, rejected = _reply(record.get("chosen"), "chosen"), _reply(record.get("rejected"), "rejected")
    elif fmt in ("sharegpt", "medicalgpt"):
        prompt = _turns(record, "conversations", "from", "value", SHAREGPT_ROLES)
        if record.get("system"):
            prompt.insert(0, {"role": "system", "content": _text(record["system"], "system")})
        chosen, rejected = _reply(record.get("chosen"), "chosen"), _reply(record.get("rejected"), "rejected")
    elif fmt == "alpaca":
        prompt = _alpaca({**record, "output": "x"})[:-1]  # everything but the reply, as SFT's alpaca reads it
        chosen, rejected = _reply(record.get("chosen"), "chosen"), _reply(record.get("rejected"), "rejected")
    else:
        raise ChatFormatError(f"unknown preference format {fmt!r}; choose from {', '.join(PREF_FORMATS)}",
                              "unknown format")
    if not prompt or prompt[-1]["role"] != "user":
        raise ChatFormatError("the prompt must end with a user turn", "bad turn order")
    check_order(prompt + [{"role": "assistant", "content": chosen}])
    if chosen == rejected:
        raise ChatFormatError("chosen and rejected are the same reply: nothing to prefer", "identical replies")
    return prompt, chosen, rejected


def iter_pairs(path: str | Path, data_format: str | None = None,
               skip: SkipStats | None = None) -> Iterator[tuple[str, Pair]]:
    """(where, (prompt, chosen, rejected)) for every record of one file; the first record decides
    the format unless data_format is given. Bad records raise DataError('path:line: ...') or are
    counted in skip."""
    if data_format is not None and data_format not in PREF_FORMATS:
        raise DataError(f"--data_format {data_format}: preference data is one of {', '.join(PREF_FORMATS)}")
    fmt = data_format
    for line, record in iter_records(Path(path), skip):
        where = f"{path}:{line}"
        try:
            if fmt is None:
                fmt = detect_pref_format(record)
                if fmt is None:
                    keys = ", ".join(sorted(record)) if isinstance(record, dict) else type(record).__name__
                    raise DataError(f"{where}: not preference data (keys: {keys}); dpo.py needs chosen and "
                                    f"rejected replies in one of: {', '.join(PREF_FORMATS)}")
            yield where, to_pair(record, fmt)
        except ChatFormatError as e:
            if skip is None:
                raise DataError(f"{where}: {e}") from None
            skip.add(e.reason, where)
