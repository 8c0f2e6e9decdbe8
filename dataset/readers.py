"""Streaming readers for the text files users train on.

Users bring multi-GB corpora, so no reader here holds a whole file in memory:

  .jsonl    one JSON value per line; blank lines are ignored.
  .json     a top-level array is streamed item by item from 1 MiB chunks.
            JSON Lines saved under a .json name (common for BELLE and baike
            dumps) is read as .jsonl. Anything else is read as a stream of
            top-level values, usually a single object; that one object is the
            only thing parsed whole, because it is one record.
  .txt      documents are runs of non-blank lines; a blank line ends one.
            A document is also cut at a line end once it passes
            MAX_DOC_CHARS characters (inside a line if one line alone is that
            long), so a book with no blank lines does not become one string.
  .csv      one record (a dict keyed by the header row) per row.
  .parquet  one record (a dict) per row, read in batches. Needs pyarrow, which
            is optional: without it, reading a .parquet file is a DataError.

Every record is numbered by the line it starts on (rows, for parquet), so
'path:line' in a message can be opened in an editor. Text must be UTF-8 (a
leading BOM is dropped). Which part of a record is text, and iter_texts: dataset/text_fields.py.

Errors. Every user-facing problem is a DataError whose message is one line,
'path:line: what is wrong'. Problems with a single record (a line that is not
JSON or not UTF-8, a bad CSV row, a record with no text) raise at once, or,
when a SkipStats is passed (--skip_bad), are counted there and skipped.
Problems with a whole file (missing, unreadable, empty, broken parquet, a
syntax error in a .json array or object, where there is no safe place to
resume) always raise.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator, Sequence

from .streaming import BOM, DataError, JsonStream, bad_record, error_at, iter_json_array, iter_pieces

TEXT_SUFFIXES: tuple[str, ...] = (".jsonl", ".json", ".txt", ".parquet", ".csv")
MAX_DOC_CHARS = 1_000_000   # a .txt document is cut after about this many characters
_CHUNK_BYTES = 1 << 20      # how much of a .json file is read at a time
_TXT_PIECE_BYTES = 1 << 20  # longest piece of a .txt line held at once


class SkipStats:
    """Counts records skipped under --skip_bad, by reason, with the first few places."""

    MAX_EXAMPLES = 3

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < self.MAX_EXAMPLES:
            examples.append(where)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line, e.g. 'skipped 3 bad records: 2 not valid JSON (first at a.jsonl:4, a.jsonl:7); ...'."""
        if not self.counts:
            return "skipped 0 bad records"
        parts = [f"{n} {reason} (first at {', '.join(self.examples[reason])})"
                 for reason, n in self.counts.items()]
        plural = "s" if self.total != 1 else ""
        return f"skipped {self.total} bad record{plural}: " + "; ".join(parts)


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files given directly, plus files with a known suffix found recursively (sorted)
    in directories. Hidden files and folders are left out (.git, .ipynb_checkpoints
    copies); a file given twice is read once."""
    files: list[Path] = []
    seen: set[Path] = set()
    for given in paths:
        p = Path(given)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in TEXT_SUFFIXES and f.is_file()
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                raise error_at(p, None, f"directory has no {', '.join(TEXT_SUFFIXES)} files")
        elif p.exists():
            if p.suffix.lower() not in TEXT_SUFFIXES:
                raise error_at(p, None, f'unknown file type "{p.suffix}" (expected one of {", ".join(TEXT_SUFFIXES)})')
            found = [p]
        else:
            raise error_at(p, None, "no such file or directory")
        for f in found:
            if f.resolve() not in seen:
                seen.add(f.resolve())
                files.append(f)
    return files


# ---------------------------------------------------------------- one reader per format

def _iter_jsonl(path: Path, skip: SkipStats | None) -> Iterator[tuple[int, object]]:
    for line, _, text, _ in iter_pieces(path, skip):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except (ValueError, RecursionError) as e:
            where = f" at column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
            bad_record(skip, path, line, "not valid JSON", f"{getattr(e, 'msg', e)}{where}")
            continue
        yield line, record


def _iter_txt(path: Path, skip: SkipStats | None) -> Iterator[tuple[int, str]]:
    """Documents: runs of non-blank lines, cut at MAX_DOC_CHARS (see module docstring)."""
    parts: list[str] = []
    size = start = 0
    blank: str | None = ""  # the current line so far, while it is only whitespace

    def document() -> str:
        return "".join(parts).removesuffix("\n")

    for line, col, text, done in iter_pieces(path, skip, _TXT_PIECE_BYTES):
        if col == 0:
            blank = ""
        if blank is not None and not text.strip():
            if done:  # a blank line ends the document
                if parts:
                    yield start, document()
                parts, size = [], 0
            elif len(blank) < MAX_DOC_CHARS:  # (a longer run of spaces is not kept)
                blank += text
            continue
        if blank is not None:
            text, blank = blank + text, None
        if not parts:
            if col and not text.strip():  # only the end of a line cut just before
                continue
            start = line
        if done:
            text = text.rstrip("\r\n") + "\n"  # CRLF -> LF; the last line may lack one
        parts.append(text)
        size += len(text)
        if size >= MAX_DOC_CHARS and (done or col + len(text) >= MAX_DOC_CHARS):
            yield start, document()
            parts, size = [], 0
    if parts:
        yield start, document()


def _iter_csv(path: Path, skip: SkipStats | None) -> Iterator[tuple[int, dict]]:
    at = [0]  # number of the last line the csv module has taken: the end of its row

    def lines() -> Iterator[str]:
        for line, _, text, _ in iter_pieces(path, skip):
            at[0] = line
            yield text

    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # long documents in one cell
    reader = csv.reader(lines())
    header: list[str] | None = None
    while True:
        start = at[0] + 1
        try:
            row = next(reader, None)
        except csv.Error as e:
            bad_record(skip, path, at[0], "not valid CSV", str(e))
            continue
        if row is None:
            return
        if not row:  # blank line
            continue
        if header is None:
            header = row
            continue
        yield start, dict(zip(header, row))


def _iter_parquet(path: Path, skip: SkipStats | None) -> Iterator[tuple[int, dict]]:
    # pyarrow is optional (a heavy install), so it is imported only when needed.
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise error_at(path, None, "reading .parquet needs pyarrow, which is not installed: "
                                   "pip install pyarrow") from None
    row = 0
    try:
        for batch in pyarrow.parquet.ParquetFile(path).iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                row += 1
                yield row, record
    except pyarrow.ArrowException as e:
        raise error_at(path, None, f"not a readable parquet file ({e})") from None


def _first_line_is_json(path: Path) -> bool:
    """Is this .json file really JSON Lines? True if its first non-blank line
    (up to 1 MiB) is a whole JSON value on its own, and not an array."""
    with open(path, "rb") as f:
        head = f.readline(_CHUNK_BYTES).removeprefix(BOM)
        while head and not head.strip():
            head = f.readline(_CHUNK_BYTES)
    if head.lstrip().startswith(b"["):
        return False
    try:
        json.loads(head)
    except (ValueError, RecursionError):
        return False
    return True


def _iter_json(path: Path, skip: SkipStats | None) -> Iterator[tuple[int, object]]:
    if _first_line_is_json(path):
        yield from _iter_jsonl(path, skip)
        return
    with open(path, "rb") as f:
        s = JsonStream(f, path, _CHUNK_BYTES)
        if s.peek() == "[":
            yield from iter_json_array(s)
            return
        while s.peek():  # one top-level value, or several in a row
            line = s.line
            yield line, s.value()


_READERS = {".jsonl": _iter_jsonl, ".json": _iter_json, ".txt": _iter_txt,
            ".csv": _iter_csv, ".parquet": _iter_parquet}


def iter_records(path: Path | str, skip: SkipStats | None = None) -> Iterator[tuple[int, object]]:
    """(line number, record) for one file; see the module docstring for each format.
    A .txt file's records are its documents (strings)."""
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise error_at(path, None, f'unknown file type "{path.suffix}" (expected one of {", ".join(TEXT_SUFFIXES)})')
    try:
        with open(path, "rb") as f:  # 'empty' = nothing but whitespace (and a BOM)
            chunk = f.read(_CHUNK_BYTES).removeprefix(BOM)
            while chunk and not chunk.strip():
                chunk = f.read(_CHUNK_BYTES)
        if not chunk:
            raise error_at(path, None, "file is empty")
        yield from reader(path, skip)
    except FileNotFoundError:
        raise error_at(path, None, "no such file") from None
    except IsADirectoryError:
        raise error_at(path, None, "is a directory, not a file") from None
    except OSError as e:
        raise error_at(path, None, f"cannot read: {e.strerror or e}") from None
