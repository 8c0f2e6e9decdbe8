"""The on-disk token format shared by pretraining (and, later, SFT).

A tokenized corpus is a directory with, for each split (train, val):

  <split>.tokens.bin   uint16, all documents back to back, each followed by
                       the end-of-text id (a vocabulary of 6400 fits in 16 bits,
                       half the disk and page cache of int32)
  <split>.docs.npy     int64 offset of each document's first token
  <split>.mask.bin     optional uint8 per token (1 = train on it): the loss
                       mask of SFT data; pretraining writes none
  meta.json            sources, tokenizer, counts, skipped records. Written
                       last, so a directory without it is incomplete.

Tokens are memory-mapped, so opening a 10 GB corpus costs no RAM and many
processes (DDP ranks) share one copy in the page cache.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .readers import DataError

FORMAT_VERSION = 1
TOKEN_DTYPE = np.uint16
SPLITS = ("train", "val")
_ITEM = np.dtype(TOKEN_DTYPE).itemsize


def tokens_path(dir: Path, split: str) -> Path:
    return Path(dir) / f"{split}.tokens.bin"


def docs_path(dir: Path, split: str) -> Path:
    return Path(dir) / f"{split}.docs.npy"


def mask_path(dir: Path, split: str) -> Path:
    """Optional per-token uint8 loss mask beside the tokens (written by SFT, never by pretraining)."""
    return Path(dir) / f"{split}.mask.bin"


@dataclass
class TokenFile:
    """One split: every document's tokens, each followed by the end-of-text id."""
    tokens: np.ndarray              # uint16 (np.memmap on disk)
    doc_starts: np.ndarray          # int64 offset of each document's first token
    loss_mask: np.ndarray | None = None  # uint8 per token, only for SFT data
    endoftext_id: int = 0

    @property
    def n_tokens(self) -> int:
        return int(len(self.tokens))

    @property
    def n_docs(self) -> int:
        return int(len(self.doc_starts))


@dataclass
class TokenizedCorpus:
    dir: Path
    train: TokenFile
    val: TokenFile
    meta: dict


# ---------------------------------------------------------------- reading

def _memmap(path: Path, dtype, n: int, dir: Path) -> np.ndarray:
    if not path.is_file() or path.stat().st_size != n * np.dtype(dtype).itemsize:
        raise DataError(f"{path}: missing or not {n} tokens long; delete {dir} to rebuild it")
    # np.memmap refuses a zero-length file, and an empty split is legal (a one-document corpus).
    return np.memmap(path, dtype=dtype, mode="r") if n else np.zeros(0, dtype)


def _load_split(dir: Path, split: str, counts: dict, endoftext_id: int) -> TokenFile:
    n_tokens = counts["n_tokens"]
    tokens = _memmap(tokens_path(dir, split), TOKEN_DTYPE, n_tokens, dir)
    try:
        doc_starts = np.load(docs_path(dir, split))
    except (OSError, ValueError) as e:
        raise DataError(f"{docs_path(dir, split)}: unreadable ({e}); delete {dir} to rebuild it") from None
    if len(doc_starts) != counts["n_docs"]:
        raise DataError(f"{docs_path(dir, split)}: {len(doc_starts)} documents, meta.json says {counts['n_docs']}")
    mask = _memmap(mask_path(dir, split), np.uint8, n_tokens, dir) if mask_path(dir, split).exists() else None
    return TokenFile(tokens, doc_starts.astype(np.int64, copy=False), mask, endoftext_id)


def load_tokenized(dir: Path | str) -> TokenizedCorpus:
    """Open a tokenized directory (memory-mapped). Raises DataError if it is incomplete."""
    dir = Path(dir)
    try:
        meta = json.loads((dir / "meta.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{dir}: not a complete tokenized corpus (no meta.json)") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{dir / 'meta.json'}: unreadable ({e})") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise DataError(f"{dir}: token format version {version}, this code reads {FORMAT_VERSION}; "
                        f"delete it to rebuild")
    try:
        train, val = (_load_split(dir, s, meta["splits"][s], meta["endoftext_id"]) for s in SPLITS)
    except (KeyError, TypeError) as e:
        raise DataError(f"{dir / 'meta.json'}: incomplete (no {e})") from None
    return TokenizedCorpus(dir, train, val, meta)


# ---------------------------------------------------------------- writing

class SplitWriter:
    """Appends documents to <split>.tokens.bin, never holding more than one batch."""

    def __init__(self, dir: Path, split: str):
        self.dir, self.split = Path(dir), split
        self.file = open(tokens_path(dir, split), "wb")
        self.n_tokens = 0
        self.starts: list[np.ndarray] = []

    def add(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Append documents: tokens is their concatenation, lengths their sizes (each with its end-of-text)."""
        if not len(lengths):
            return
        self.starts.append(self.n_tokens + np.cumsum(lengths) - lengths)
        tokens.astype(TOKEN_DTYPE, copy=False).tofile(self.file)
        self.n_tokens += len(tokens)

    def close(self) -> None:
        if self.file.closed:
            return
        self.file.close()
        starts = np.concatenate(self.starts) if self.starts else np.zeros(0, np.int64)
        np.save(docs_path(self.dir, self.split), starts.astype(np.int64))


def split_counts(dir: Path) -> dict:
    """{split: {"n_docs", "n_tokens"}} of the files in dir, as meta.json records them."""
    return {s: {"n_docs": len(np.load(docs_path(dir, s))),
                "n_tokens": tokens_path(dir, s).stat().st_size // _ITEM} for s in SPLITS}


def move_last_docs(dir: Path, src: str, dst: str, count: int = 1) -> None:
    """Move the last `count` documents of split src, in order, to the end of split dst
    (both files closed), their loss mask too when the splits have one."""
    if count < 1:
        return
    src_starts, dst_starts = np.load(docs_path(dir, src)), np.load(docs_path(dir, dst))
    first = int(src_starts[-count])
    dst_len = tokens_path(dir, dst).stat().st_size // _ITEM
    for path, item in ((tokens_path, _ITEM), (mask_path, 1)):
        if not path(dir, src).exists():
            continue
        with open(path(dir, src), "rb") as f:
            f.seek(first * item)
            tail = f.read()  # only the moved documents: a few thousand tokens
        os.truncate(path(dir, src), first * item)
        with open(path(dir, dst), "ab") as f:
            f.write(tail)
    np.save(docs_path(dir, src), src_starts[:-count])
    moved = (src_starts[-count:] - first + dst_len).astype(np.int64)
    np.save(docs_path(dir, dst), np.concatenate([dst_starts.astype(np.int64), moved]))


# The validation split's floor. A 1% hold-out of a small corpus can be one short
# document, whose loss says nothing; so val is topped up from the end of train to
# at least this much, but never past VAL_FLOOR_SHARE of all tokens.
VAL_FLOOR_TOKENS = 8192
VAL_FLOOR_DOCS = 8
VAL_FLOOR_SHARE = 0.1


def raise_val_floor(dir: Path, val_fraction: float, unit: int = 1) -> int:
    """Move documents from the end of train to val until val reaches the floor (or the
    share cap); returns how many moved. val_fraction 0 means no validation: nothing moves.
    unit: documents that belong together (2: a preference pair) move together."""
    counts = split_counts(dir)
    train, val = counts["train"], counts["val"]
    if val_fraction <= 0 or train["n_docs"] < 2 * unit:
        return 0
    starts = np.load(docs_path(dir, "train"))
    lengths = np.diff(np.append(starts, train["n_tokens"]))[::-1]  # last document first
    units = lengths[:len(lengths) - len(lengths) % unit].reshape(-1, unit).sum(axis=1)
    cap = VAL_FLOOR_SHARE * (train["n_tokens"] + val["n_tokens"])
    moved, tokens, docs = 0, val["n_tokens"], val["n_docs"]
    while moved < len(units) - 1 and (tokens < VAL_FLOOR_TOKENS or docs < VAL_FLOOR_DOCS):
        if docs and tokens + units[moved] > cap:
            break  # the cap binds once val has a document: one unit is always held out
        tokens, docs, moved = tokens + int(units[moved]), docs + unit, moved + 1
    move_last_docs(dir, "train", "val", moved * unit)
    return moved * unit


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write, flush to disk, then rename: a reader sees the old file or the whole new one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
