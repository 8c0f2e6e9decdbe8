"""Split generated text into its thinking and its answer, as the text streams in.

A reasoning model writes

    <think>\\n...thinking...\\n</think>\\n<answer>\\n...answer...\\n</answer>

and a reader wants the two parts apart, without the tags or the newlines that
frame them. The text arrives in chunks whose borders fall anywhere, even inside
a tag, so the splitter holds back just the tail that could still become a tag
(or the newline before a closing tag) and releases everything else at once:

    splitter = ThinkSplitter()
    for chunk in chunks:
        for kind, text in splitter.feed(chunk):   # kind is "think" or "answer"
            ...
    for kind, text in splitter.flush():
        ...

Text outside any tag is answer, so a model that writes no tags (an SFT model)
gives all answer. DeepSeek-style output, `<think>...</think>answer` with no
answer tags, splits the same way. `split_reasoning(text)` does a whole string.
"""
from __future__ import annotations

from common import reasoning as tags

THINK, ANSWER = "think", "answer"
# What each tag switches to. </answer> keeps "answer": anything a model writes
# after it is shown rather than silently dropped.
TAG_KINDS = {tags.THINK: THINK, tags.THINK_END: ANSWER, tags.ANSWER: ANSWER, tags.ANSWER_END: ANSWER}
CLOSING_TAGS = (tags.THINK_END, tags.ANSWER_END)
# Longest tails that must wait for more text: a tag, or a newline then a closing tag.
HELD_PATTERNS = tuple(TAG_KINDS) + tuple("\n" + tag for tag in CLOSING_TAGS)


class ThinkSplitter:
    """Feed text chunks, get (kind, text) pieces with the tags and their framing newlines removed."""

    def __init__(self) -> None:
        self.kind = ANSWER           # what untagged text is
        self._pending = ""           # text not yet released: it may still turn into a tag
        self._drop_newline = False   # a tag was just passed: one newline after it is framing

    def feed(self, chunk: str) -> list[tuple[str, str]]:
        """Add text; return the pieces now certain, consecutive pieces of one kind merged."""
        self._pending += chunk
        out: list[tuple[str, str]] = []
        while self._pending:
            if self._drop_newline:
                self._drop_newline = False
                if self._pending.startswith("\n"):
                    self._pending = self._pending[1:]
                    continue
            at, tag = self._first_tag()
            if tag is None:
                keep = self._held_tail_length()
                self._emit(out, self._pending[:len(self._pending) - keep])
                self._pending = self._pending[len(self._pending) - keep:]
                break
            before = self._pending[:at]
            if tag in CLOSING_TAGS and before.endswith("\n"):
                before = before[:-1]
            self._emit(out, before)
            self.kind = TAG_KINDS[tag]
            self._pending = self._pending[at + len(tag):]
            self._drop_newline = True
        return out

    def flush(self) -> list[tuple[str, str]]:
        """The end of the text: release what was held back (it never became a tag)."""
        out: list[tuple[str, str]] = []
        self._emit(out, self._pending)
        self._pending, self._drop_newline = "", False
        return out

    def _first_tag(self) -> tuple[int, str | None]:
        found = [(self._pending.find(tag), tag) for tag in TAG_KINDS]
        found = [(at, tag) for at, tag in found if at >= 0]
        return min(found) if found else (-1, None)

    def _held_tail_length(self) -> int:
        """Length of the longest tail of the pending text that starts a held pattern."""
        text = self._pending
        for size in range(min(len(text), max(map(len, HELD_PATTERNS))), 0, -1):
            tail = text[-size:]
            if any(pattern.startswith(tail) for pattern in HELD_PATTERNS):
                return size
        return 0

    def _emit(self, out: list[tuple[str, str]], text: str) -> None:
        if not text:
            return
        if out and out[-1][0] == self.kind:
            out[-1] = (self.kind, out[-1][1] + text)
        else:
            out.append((self.kind, text))


def split_reasoning(text: str) -> tuple[str, str]:
    """(thinking, answer) of a whole generated text."""
    parts = {THINK: "", ANSWER: ""}
    splitter = ThinkSplitter()
    for kind, piece in splitter.feed(text) + splitter.flush():
        parts[kind] += piece
    return parts[THINK], parts[ANSWER]
