"""Low-level streaming for dataset/readers.py: bytes in, positioned text out.

Everything here reads a file a bounded piece at a time and knows where it is
(line, and column in characters), so an error can name the exact spot:

  iter_pieces()  the lines of a UTF-8 file, a huge line split into pieces
  JsonStream     a cursor over a JSON file read in chunks, parsing one value
                 at a time and keeping only the unparsed rest in memory
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Iterator

if TYPE_CHECKING:
    from .readers import SkipStats

BOM = b"\xef\xbb\xbf"
_JSON_NON_WS = re.compile(r"[^ \t\r\n]")  # JSON's whitespace is exactly these four
_NUMBER_CHARS = re.compile(r"[0-9eE+.-]*")
_DECODER = json.JSONDecoder()


class ChatFormatError(ValueError):
    """A record that is not a usable conversation. The message is one line;
    `reason` is its category, which --skip_bad counts. (Here, below the readers, so that every
    module of dataset/ can raise it without importing dataset/chat_formats.py.)"""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class DataError(ValueError):
    """A user-facing data problem. str(e) is ONE line: '<path>:<line>: <what is wrong>'
    (the line is left out where it does not apply, e.g. a missing file)."""


def error_at(path: Path | str, line: int | None, what: str) -> DataError:
    where = f"{path}:{line}" if line else str(path)
    return DataError(f"{where}: {' '.join(str(what).split())}")  # squeeze to one line


def bad_record(skip: SkipStats | None, path: Path, line: int, reason: str, detail: str = "") -> None:
    """A problem with one record: raise it, or under --skip_bad count it and go on."""
    if skip is None:
        raise error_at(path, line, f"{reason} ({detail})" if detail else reason)
    skip.add(reason, f"{path}:{line}")


def split_utf8_tail(raw: bytes) -> tuple[bytes, bytes]:
    """Split off an incomplete UTF-8 character at the end of raw: a fixed-size
    read can stop in the middle of one, and that is not an error."""
    for i in range(1, min(4, len(raw)) + 1):
        byte = raw[-i]
        if byte < 0x80:  # ASCII: nothing is cut
            break
        if byte >= 0xC0:  # the lead byte; how long should its sequence be?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return (raw[:-i], raw[-i:]) if need > i else (raw, b"")
    return raw, b""


def gbk_hint(raw: bytes, path: Path) -> str:
    """'; it reads as GBK: iconv ...' when bytes that are not UTF-8 read as Chinese in GBK (GB18030),
    the encoding Chinese Windows tools save in; else ''. Two Chinese characters at least, so a
    UTF-8 character cut short (whose bytes may pair up as one GBK character) is not taken for GBK."""
    try:
        text = raw.decode("gb18030")
    except UnicodeDecodeError:
        return ""
    if sum("\u4e00" <= ch <= "\u9fff" for ch in text) < 2:
        return ""
    out = Path(path).with_name(f"{Path(path).stem}.utf8{Path(path).suffix}")
    return f"; it reads as GBK, so re-encode the file: iconv -f GBK -t UTF-8 {path} > {out}"


def decode_utf8(raw: bytes, path: Path, line: int, col: int, skip: SkipStats | None) -> str | None:
    """Strict UTF-8 decode of bytes that start at `line`, after `col` characters of it.
    A bad byte is reported with its line and (character) column; None if skipped."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        before = raw[:e.start]  # all valid: decoding stopped at the first bad byte
        nl = before.rfind(b"\n")
        line += before.count(b"\n")
        col = (0 if nl >= 0 else col) + len(before[nl + 1:].decode("utf-8")) + 1
        bad_record(skip, path, line, "not valid UTF-8",
                   f"byte 0x{raw[e.start]:02x} at column {col}{gbk_hint(raw[nl + 1:], path)}")
        return None


def iter_pieces(path: Path, skip: SkipStats | None, size: int = -1) -> Iterator[tuple[int, int, str, bool]]:
    """(line number, column, text, line_done) for the lines of a UTF-8 file, line
    endings kept. With size > 0 a line longer than `size` bytes comes in several
    pieces (column = characters of the line before the piece), so one huge line
    never sits in memory whole. A line with bad UTF-8 is reported, or skipped."""
    with open(path, "rb") as f:
        line, col, carry, bad = 1, 0, b"", False
        while True:
            raw = f.readline(size)
            if not raw and not carry:
                return
            done = size < 0 or not raw or raw.endswith(b"\n") or len(raw) < size
            raw, carry = (carry + raw, b"") if done else split_utf8_tail(carry + raw)
            if line == 1 and col == 0:
                raw = raw.removeprefix(BOM)
            text = None if bad else decode_utf8(raw, path, line, col, skip)
            if text is None:
                bad = True  # skip the rest of this line too
            else:
                yield line, col, text, done
                col += len(text)
            if done:
                line, col, bad = line + 1, 0, False


class JsonStream:
    """A cursor over a JSON file that reads it in chunks and keeps only the
    unparsed part in memory: about one chunk plus the value being parsed."""

    def __init__(self, f: BinaryIO, path: Path, chunk_bytes: int) -> None:
        self.f, self.path, self.chunk_bytes = f, path, chunk_bytes
        self.buf, self.pos, self.line = "", 0, 1  # self.line: the line number at buf[pos]
        self.carry = b""  # an incomplete UTF-8 character left over from the last read
        self.read_line, self.read_col = 1, 0  # where the next byte read will sit

    def _fill(self, size: int | None = None) -> bool:
        """Append the next piece of the file to the buffer; False at end of file."""
        data = self.f.read(size or self.chunk_bytes)
        if not data and not self.carry:
            return False
        raw, self.carry = split_utf8_tail(self.carry + data) if data else (self.carry, b"")
        if self.read_line == 1 and self.read_col == 0:
            raw = raw.removeprefix(BOM)
        text = decode_utf8(raw, self.path, self.read_line, self.read_col, None)
        nl = text.rfind("\n")
        self.read_col = len(text) - nl - 1 if nl >= 0 else self.read_col + len(text)
        self.read_line += text.count("\n")
        self.buf, self.pos = self.buf[self.pos:] + text, 0  # drop what is parsed
        return True

    def error(self, pos: int, what: str) -> DataError:
        return error_at(self.path, self.line + self.buf.count("\n", self.pos, pos), f"not valid JSON ({what})")

    def peek(self) -> str:
        """Skip whitespace and return the next character ('' at end of file)."""
        while True:
            m = _JSON_NON_WS.search(self.buf, self.pos)
            end = m.start() if m else len(self.buf)
            self.line += self.buf.count("\n", self.pos, end)
            self.pos = end
            if m:
                return self.buf[end]
            if not self._fill():
                return ""

    def value(self) -> object:
        """Parse the value at the cursor, reading on while the buffer cuts it off."""
        while True:
            more = max(self.chunk_bytes, len(self.buf) - self.pos)  # doubling keeps a long value linear
            try:
                obj, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                # A value cut off by the buffer's end fails near that end, or as a
                # string running to it; a real error elsewhere is reported at once.
                cut = e.pos >= len(self.buf) - 64 or e.msg.startswith("Unterminated string")
                if cut and self._fill(more):
                    continue
                raise self.error(e.pos, e.msg) from None
            except (ValueError, RecursionError) as e:  # e.g. an integer with 5000 digits
                raise self.error(self.pos, str(e)) from None
            # A number cut by the buffer's end parses, as the wrong number ("-1." -> -1).
            if _NUMBER_CHARS.match(self.buf, end).end() == len(self.buf) and self._fill(more):
                continue
            self.line += self.buf.count("\n", self.pos, end)
            self.pos = end
            return obj


def iter_json_array(s: JsonStream) -> Iterator[tuple[int, object]]:
    """(line, item) for each item of the top-level array whose '[' is at the cursor."""
    s.pos += 1  # past '['
    c = s.peek()
    while c != "]":  # a trailing comma before ']' is let through
        if not c:
            raise s.error(s.pos, "the file ends inside the top-level array")
        line = s.line
        yield line, s.value()
        c = s.peek()
        if c == ",":
            s.pos += 1
            c = s.peek()
        elif c not in ("]", ""):
            raise s.error(s.pos, f"expected ',' or ']' after an array item, found {c!r}")
    s.pos += 1
    if s.peek():
        raise s.error(s.pos, "extra data after the top-level array")

