"""Incremental detokenization: token ids in, printable text chunks out.

A byte-level BPE token is a run of bytes, not of characters, so one Chinese
character (3 bytes in UTF-8) or one emoji (4 bytes) is often split over two or
three tokens. Decoding each token on its own would print U+FFFD ("�") for
each half. StreamDecoder holds back the unfinished character until the token
that completes it arrives, and prints everything before it at once.

    decoder = StreamDecoder(tok)
    for token_id in generate(...):
        print(decoder.push(token_id), end="", flush=True)
    print(decoder.flush())

It relies on two properties of the tokenizer's decode, both true for
byte-level BPE (its bytes go through a lossy UTF-8 decode):
  * the text of a sequence starts with the text of any prefix of it that
    ends on a character boundary, and
  * an unfinished character at the very end decodes to one trailing U+FFFD.
Bytes that can never form a character (a stray continuation byte, say) stay
U+FFFD: they are printed as soon as the next token shows they are not the
start of a character, or by flush() at the end, never dropped.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, Sequence

REPLACEMENT_CHAR = "\ufffd"
# An unfinished UTF-8 character has at most 3 bytes, so at most 3 tokens.
MAX_UNFINISHED_TOKENS = 3


class Decoder(Protocol):
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str: ...


class StreamDecoder:
    """Turn a stream of token ids into text chunks that never split a character."""

    def __init__(self, tokenizer: Decoder, skip_special_tokens: bool = False):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        # Ids since the last point where the text ended on a whole character,
        # and how many characters of their text were already returned.
        self._window: list[int] = []
        self._sent = 0

    def push(self, token_id: int) -> str:
        """Add one token; return the new text that is final (possibly "")."""
        self._window.append(token_id)
        text = self._decode()
        if text.endswith(REPLACEMENT_CHAR):
            # The last bytes may be the first half of a character: keep them
            # (and their ids) until the next token decides. What comes before
            # them can no longer change, so it goes out now.
            ready = text[self._sent:-1]
            self._sent += len(ready)
            if len(self._window) > MAX_UNFINISHED_TOKENS:
                self._drop_settled_ids(text)
            return ready
        ready = text[self._sent:]
        # A clean end: later tokens cannot change this text, so forget its ids
        # and keep each decode short.
        self._window, self._sent = [], 0
        return ready

    def flush(self) -> str:
        """The text still held back (bytes that never became a character) and reset."""
        ready = self._decode()[self._sent:] if self._window else ""
        self._window, self._sent = [], 0
        return ready

    def _drop_settled_ids(self, text: str) -> None:
        """Forget the ids before the held-back tail, so that a long run of bad
        bytes (a degenerate model repeating one) cannot make each step decode
        an ever longer window."""
        for k in range(1, MAX_UNFINISHED_TOKENS + 1):
            head, tail = self._window[:-k], self._window[-k:]
            # A split is safe when the tail alone is the held-back U+FFFD and
            # the head alone is everything already sent.
            if self._decode(tail) == REPLACEMENT_CHAR and self._decode(head) == text[:-1]:
                self._window, self._sent = tail, 0
                return

    def _decode(self, ids: Sequence[int] | None = None) -> str:
        ids = self._window if ids is None else ids
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)


def stream_text(tokenizer: Decoder, token_ids: Iterable[int],
                skip_special_tokens: bool = False) -> Iterator[str]:
    """Yield the text chunks of an iterable of token ids, flushing at the end."""
    decoder = StreamDecoder(tokenizer, skip_special_tokens=skip_special_tokens)
    for token_id in token_ids:
        chunk = decoder.push(token_id)
        if chunk:
            yield chunk
    tail = decoder.flush()
    if tail:
        yield tail
