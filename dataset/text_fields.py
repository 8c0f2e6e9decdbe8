"""Which part of a record is trainable text.

Users bring data in whatever shape their source project used, so instead of
asking them to convert it we recognise the common layouts. extract_text()
returns the text of one record, or None if it has none. A string counts only
if it is non-empty after strip(); a list of strings counts as its items joined
with '\\n'. Parts of a record are joined with '\\n' too. Strings are returned
as they are (not stripped): whitespace can matter, e.g. indented code.

With --text_field NAME, that field (a string or a list of strings) is the text
and nothing else is tried. Otherwise the first rule that yields text wins:

  1. plain text: `text`, `content`, `completion`, `context`
     (pretraining dumps, WanJuan, wiki-cn, SQuAD/CMRC paragraphs)
  2. chat: `conversations` or `messages`, a list of turns. A turn's text is
     its `content` (MiniMind/OpenAI) or `value` (sharegpt); content may be a
     list of parts [{"type": ..., "text"|"value": ...}]. An OpenAI-style
     `reasoning_content` is kept in front of the content. Roles are dropped.
  3. alpaca: `system`, `history` [[q, a], ...], `instruction`, `input`,
     `output`, in conversation order (needs instruction or output)
  4. poems: `paragraphs` (list of strings, chinese-poetry), with `title`,
     `rhythmic` or `chapter` in front when present
  5. encyclopedia: `title`, `summary` and `sections` [{"title", "content"}]
  6. field pairs: `question`+`answer`; `INSTRUCTION`+`RESPONSE` (Zhihu);
     `title`?+`desc`?+`answer` (baike_qa); `input`+`target` (Firefly);
     `review` (review CSVs). Fields marked ? are optional.

A plain string record (a .txt document, or a JSON string item) is its own
text. Nested containers such as SQuAD's {"data": [{"paragraphs": [...]}]}
are not handled here but by nested_texts(), which looks inside a record that
has no text of its own. iter_texts() reads files of records into texts by these rules.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Sequence

from .readers import SkipStats, expand_paths, iter_records
from .streaming import bad_record

# Shown in the "no usable text field" error so users see what we looked for.
LOOKED_FOR = ("text, content, completion, context, conversations, messages, instruction/output, "
              "paragraphs, summary/sections, question/answer, INSTRUCTION/RESPONSE, "
              "title/desc/answer, input/target, review")

_PLAIN_FIELDS = ("text", "content", "completion", "context")
# Rule 6: each group's fields are joined in order; a trailing ? marks an optional field.
_FIELD_GROUPS = ("question answer", "INSTRUCTION RESPONSE", "title? desc? answer", "input target", "review")
# Keys whose list-of-dict values nested_texts() descends into (SQuAD, GAOKAO-Bench).
_CONTAINER_KEYS = ("data", "paragraphs", "example")


def _as_text(value: object) -> str | None:
    """A usable string: a str, or a list of str joined by newlines, that is not blank."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        value = "\n".join(value)
    if isinstance(value, str) and value.strip():
        return value
    return None


def _join(*parts: str | None) -> str | None:
    """Join the usable parts with newlines; None when there are none."""
    return "\n".join(p for p in parts if p) or None


def _plain(record: dict) -> str | None:
    for name in _PLAIN_FIELDS:
        text = _as_text(record.get(name))
        if text:
            return text
    return None


def _turn_text(turn: object) -> str | None:
    if isinstance(turn, str):
        return _as_text(turn)
    if not isinstance(turn, dict):
        return None
    content = turn.get("content", turn.get("value"))
    if isinstance(content, list):  # a list of typed parts, or of plain strings
        parts = [p.get("text", p.get("value")) if isinstance(p, dict) else p for p in content]
    else:
        parts = [content]
    return _join(_as_text(turn.get("reasoning_content")), *(_as_text(p) for p in parts))


def _chat(record: dict) -> str | None:
    for name in ("conversations", "messages"):
        turns = record.get(name)
        if isinstance(turns, list):
            text = _join(*(_turn_text(t) for t in turns))
            if text:
                return text
    return None


def _alpaca(record: dict) -> str | None:
    instruction, output = _as_text(record.get("instruction")), _as_text(record.get("output"))
    if not (instruction or output):
        return None
    history = record.get("history")
    past = [_as_text(pair) for pair in history] if isinstance(history, list) else []
    return _join(_as_text(record.get("system")), *past, instruction, _as_text(record.get("input")), output)


def _poem(record: dict) -> str | None:
    body = _as_text(record.get("paragraphs"))
    if not body:
        return None
    heads = (_as_text(record.get(k)) for k in ("title", "rhythmic", "chapter"))
    return _join(*heads, body)


def _encyclopedia(record: dict) -> str | None:
    sections = record.get("sections")
    sections = sections if isinstance(sections, list) else []
    parts = [_join(_as_text(s.get("title")), _as_text(s.get("content")))
             for s in sections if isinstance(s, dict)]
    summary = _as_text(record.get("summary"))
    if not summary and not any(parts):
        return None
    return _join(_as_text(record.get("title")), summary, *parts)


def _field_group(record: dict) -> str | None:
    for group in _FIELD_GROUPS:
        names = group.split()
        texts = [_as_text(record.get(n.rstrip("?"))) for n in names]
        if all(t or n.endswith("?") for n, t in zip(names, texts)):
            return _join(*texts)
    return None


_RULES = (_plain, _chat, _alpaca, _poem, _encyclopedia, _field_group)


def extract_text(record: object, text_field: str | None = None) -> str | None:
    """The trainable text of one record, or None if it has none (rules: module docstring)."""
    if isinstance(record, str):
        return _as_text(record)
    if not isinstance(record, dict):
        return None
    if text_field is not None:
        return _as_text(record.get(text_field))
    for rule in _RULES:
        text = rule(record)
        if text:
            return text
    return None


def nested_texts(record: object, text_field: str | None = None, depth: int = 0) -> Iterator[str]:
    """The record's text; failing that, the texts of the dicts listed under its
    `data`, `paragraphs` or `example` keys, recursively (a few levels at most).

    This is what makes a SQuAD-style file ({"data": [{"paragraphs": [{"context":
    ...}]}]}, e.g. CMRC 2018) or a GAOKAO-Bench file ({"example": [...]}) yield one
    text per inner item instead of failing as one record with no text field.
    """
    text = extract_text(record, text_field)
    if text is not None:
        yield text
    elif isinstance(record, dict) and depth < 4:
        for key in _CONTAINER_KEYS:
            items = record.get(key)
            if isinstance(items, list):
                for item in items:
                    if isinstance(item, dict):
                        yield from nested_texts(item, text_field, depth + 1)


def _no_text_reason(record: object, text_field: str | None) -> tuple[str, str]:
    """(reason, detail) for a record that gave no text, with what it does contain."""
    if isinstance(record, dict):
        keys = list(record)
        shown = ", ".join(map(str, keys[:8])) + (", ..." if len(keys) > 8 else "")
        found = f"record keys: {shown or 'none'}"
    else:
        found = f"record is {json.dumps(record, ensure_ascii=False, default=str)[:40]}"
    if text_field is not None:
        return f'field "{text_field}" missing or empty', f"{found}; or pass --skip_bad to skip such records"
    return "no usable text field", (f"{found}; looked for {LOOKED_FOR}; use --text_field NAME, "
                                    "or pass --skip_bad to skip such records")


def iter_texts(paths: Sequence[str | Path], text_field: str | None = None,
               skip: SkipStats | None = None) -> Iterator[tuple[str, str]]:
    """(where, text) over all files, where = 'path:line'. A record with no text of
    its own yields the texts nested in it (SQuAD-style files; see text_fields).
    Raises DataError on the first bad record, unless skip is given: then bad
    records are counted in skip and left out."""
    for path in expand_paths(paths):
        for line, record in iter_records(path, skip):
            found = False
            for text in nested_texts(record, text_field):
                found = True
                yield f"{path}:{line}", text
            if not found:
                bad_record(skip, path, line, *_no_text_reason(record, text_field))
