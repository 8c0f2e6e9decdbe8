"""Tokenize a text corpus once into uint16 token files, with a held-out split.

    python -m dataset.pretokenize --data_path data/pretrain_hq.jsonl

Reading JSON at training time is slow and holds text in RAM (the reference
loaded the whole JSONL: 24 GB for 4.4 GB of data). Instead every document is
tokenized once, here, into the memory-mapped files of dataset/token_files.py.
The output lives in cache_root/<key>/, where the key hashes each input file's
identity, the tokenizer's SHA-256 and the options (cache_key), so a rerun on
unchanged data is instant and any change (a touched file, another tokenizer)
makes a fresh directory.

Each document goes to train or val by a seeded hash of its text (_is_val);
then, if that left val below a floor (a few thousand tokens, a few documents:
token_files.raise_val_floor), documents move to it from the end of train.

Speed. BPE encoding is the slow part. Measured on real Chinese text (2-core
Xeon, bench/bench_data.py): encoding runs at ~1.1 MB/s per core, against
~55-65 MB/s for reading JSONL. So JSON parsing does not dominate and a process
pool over files or byte ranges is not needed: the tokenizer's encode_batch
spreads each ~1M-character batch over every core in Rust threads, without the
GIL. Several batches are in flight on Python threads (_encoded), so the cores
keep encoding while the GIL-bound work (reading, building id lists, numpy)
runs. That work, 0.06-0.08 s per MB here, caps this design at ~13-16 MB/s,
about 12-14 cores' worth of encoding. A spawn process pool measured slower on
2 cores (1.6-2.0 against 2.2-2.4 MB/s) and breaks any calling script that
lacks an `if __name__ == "__main__"` guard, so it is not used. Output is
written in input order, so batching never changes the result.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import shutil
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from tokenizer import SpongeTokenizer, TokenizerError, load_tokenizer

from .readers import DataError, SkipStats, expand_paths
from .text_fields import iter_texts
from .token_files import (FORMAT_VERSION, SPLITS, TOKEN_DTYPE, SplitWriter, TokenFile, TokenizedCorpus,
                          VAL_FLOOR_DOCS, VAL_FLOOR_SHARE, VAL_FLOOR_TOKENS, load_tokenized, move_last_docs, raise_val_floor,
                          split_counts, write_json_atomic)

SPLIT_RULE = 2  # 2: the val floor (token_files.raise_val_floor); part of the cache key
_BATCH_CHARS = 1 << 20  # text per encoding task: large enough that a task's overhead is noise


def source_identity(files: Sequence[Path]) -> list[list]:
    """What stands for the input files in a cache key. Size + mtime stand in for the
    content: hashing gigabytes on every run would cost about as much as reading them."""
    return [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def cache_key(files: Sequence[Path], tokenizer_sha256: str, val_fraction: float, seed: int,
              text_field: str | None) -> str:
    """Hash of everything the output depends on."""
    blob = json.dumps([FORMAT_VERSION, SPLIT_RULE, source_identity(files), tokenizer_sha256, val_fraction, seed,
                       text_field])
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


# ---------------------------------------------------------------- encoding

def _is_val(text: str, seed: int, val_fraction: float) -> bool:
    """A seeded hash of the text decides: the split does not depend on file order or
    batching, and copies of one document land in the same split, so duplicates
    cannot leak from train into val."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=str(seed).encode()).digest()
    return int.from_bytes(digest, "little") < val_fraction * 2.0 ** 64


def encode_texts(texts: list[str], tokenizer: SpongeTokenizer, seed: int, val_fraction: float) -> tuple[np.ndarray, ...]:
    """(tokens with end-of-text after each document, per-document lengths, is_val) of a batch."""
    ids = tokenizer.encode_batch(texts)
    eot = tokenizer.endoftext_id
    lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
    tokens = np.fromiter(itertools.chain.from_iterable(itertools.chain(x, (eot,)) for x in ids),
                         dtype=TOKEN_DTYPE, count=int(lengths.sum()))
    is_val = np.fromiter((_is_val(t, seed, val_fraction) for t in texts), dtype=bool, count=len(texts))
    return tokens, lengths, is_val


def _encoded(batches: Iterator[tuple[list[str], int]], tokenizer, seed: int,
             val_fraction: float) -> Iterator[tuple[int, tuple[np.ndarray, ...]]]:
    """(progress, encode_texts(batch)) over (batch, progress) pairs, in input order,
    several batches at once: the Rust threads
    encode some batches while others turn into arrays and this thread reads on.
    encode_batch spreads work over documents, not within one, so a batch of a few
    huge documents (books cut at 1M characters) needs other batches beside it to
    fill the cores: hence up to one batch per core in flight."""
    threads = max(2, min(32, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: deque = deque()
        for texts, progress in batches:
            pending.append((progress, pool.submit(encode_texts, texts, tokenizer, seed, val_fraction)))
            if len(pending) > threads:  # bounded: at most threads + 1 batches of text in memory
                progress, done = pending.popleft()
                yield progress, done.result()
        while pending:
            progress, done = pending.popleft()
            yield progress, done.result()


# ---------------------------------------------------------------- one pass over the corpus

def _text_batches(texts: Iterator[tuple[str, str]], sizes: dict[str, int]) -> Iterator[tuple[list[str], int]]:
    """Documents in batches of about _BATCH_CHARS characters, each with how far into
    the input (bytes of all files) it ends. The readers do not report byte offsets, so
    within a file that counts the UTF-8 bytes of text read (close for raw UTF-8 JSONL,
    low for \\u-escaped JSON), and it jumps to the file's end when the next file starts."""
    batch, chars = [], 0
    done, current, in_file = 0, "", 0  # bytes of finished files; the file being read; its text bytes
    for where, text in texts:
        path = where.rsplit(":", 1)[0]
        if path != current:
            done, current, in_file = done + sizes.get(current, 0), path, 0
        in_file += len(text.encode("utf-8"))
        batch.append(text)
        chars += len(text)
        if chars >= _BATCH_CHARS:
            yield batch, done + min(in_file, sizes[path])
            batch, chars = [], 0
    if batch:
        yield batch, sum(sizes.values())


def _balance_splits(dir: Path, val_fraction: float) -> tuple[dict, int]:
    """Never an empty train split, and a val split of at least the floor (token_files.raise_val_floor):
    a small val_fraction of a small corpus would hold out nothing, or one short document."""
    counts = split_counts(dir)
    if counts["train"]["n_docs"] == 0 and counts["val"]["n_docs"] > 0:
        move_last_docs(dir, "val", "train", 1)
    moved = raise_val_floor(dir, val_fraction)
    return split_counts(dir), moved


def _build(files: list[Path], tokenizer, out: Path, val_fraction: float, text_field: str | None,
           skip: SkipStats | None, seed: int, show_progress: bool) -> tuple[dict, int]:
    """Tokenize files into out/; returns the counts per split and the documents moved to val by its floor."""
    sizes = {str(f): f.stat().st_size for f in files}
    writers = {s: SplitWriter(out, s) for s in SPLITS}
    try:
        # disable=None: no bar when stderr is not a terminal (logs, tests).
        with tqdm(total=sum(sizes.values()), unit="B", unit_scale=True, desc="pretokenizing",
                  disable=None if show_progress else True) as bar:
            batches = _text_batches(iter_texts(files, text_field, skip), sizes)
            for progress, (tokens, lengths, is_val) in _encoded(batches, tokenizer, seed, val_fraction):
                token_is_val = np.repeat(is_val, lengths)
                writers["train"].add(tokens[~token_is_val], lengths[~is_val])
                writers["val"].add(tokens[token_is_val], lengths[is_val])
                bar.update(max(progress - bar.n, 0))  # moved as batches are written, not read
            bar.update(bar.total - bar.n)
    finally:
        for w in writers.values():
            w.close()
    counts = split_counts(out)
    if counts["train"]["n_docs"] + counts["val"]["n_docs"] == 0:
        skipped = f" ({skip.summary()})" if skip is not None and skip.total else ""
        raise DataError(f"{files[0]}: no text to train on in {len(files)} file(s){skipped}")
    return _balance_splits(out, val_fraction)


def _make_meta(files: list[Path], tokenizer, out: Path, val_fraction: float, text_field: str | None,
               skip_bad: bool, seed: int, show_progress: bool) -> dict:
    """Build the split files in out/ and return what meta.json records about them."""
    skip = SkipStats() if skip_bad else None
    input_bytes = sum(f.stat().st_size for f in files)
    start = time.perf_counter()
    splits, floor_moved = _build(files, tokenizer, out, val_fraction, text_field, skip, seed, show_progress)
    skip = skip or SkipStats()
    identity = tokenizer.identity()
    return {
        "format_version": FORMAT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "sources": [{"path": str(f.resolve()), "size": f.stat().st_size, "mtime_ns": f.stat().st_mtime_ns}
                    for f in files],
        "tokenizer": {"path": str(getattr(tokenizer, "path", "")), "sha256": identity["sha256"],
                      "vocab_size": identity["vocab_size"]},
        "endoftext_id": tokenizer.endoftext_id, "token_dtype": np.dtype(TOKEN_DTYPE).name,
        "val_fraction": val_fraction, "seed": seed, "text_field": text_field, "splits": splits,
        "val_floor_moved": floor_moved,
        "skipped": {"total": skip.total, "counts": skip.counts, "examples": skip.examples,
                    "summary": skip.summary()},
        "input_bytes": input_bytes, "seconds": round(time.perf_counter() - start, 3),
    }


# ---------------------------------------------------------------- the cache

def _build_dir(root: Path, key: str, pid: int) -> Path:
    host = os.uname().nodename if hasattr(os, "uname") else "host"
    return root / f"{key}.building-{host}-{pid}"


def _remove_dead_builds(root: Path, key: str) -> None:
    """Delete the directories of builds on this machine whose process was killed."""
    if os.name != "posix":  # os.kill(pid, 0) is a harmless probe only on POSIX
        return
    prefix = _build_dir(root, key, 0).name[:-1]
    for d in root.glob(prefix + "*"):
        pid = d.name[len(prefix):]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)  # signal 0 only asks whether the process exists
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            pass  # it exists, under another user


def _cached(final: Path, skip_bad: bool) -> TokenizedCorpus | None:
    """The complete corpus in final/, or None (missing, partial or damaged: rebuild it)."""
    if not (final / "meta.json").is_file():
        return None
    try:
        corpus = load_tokenized(final)
    except DataError:
        return None
    skipped = corpus.meta["skipped"]
    if skipped["total"] and not skip_bad:  # a strict run must not silently reuse a lenient one
        reason, places = next(iter(skipped["examples"].items()))
        raise DataError(f"{places[0]}: {reason} (an earlier --skip_bad run {skipped['summary']}); "
                        f"pass --skip_bad to use its result, or fix the data")
    return corpus


def pretokenize(paths: Sequence[str | Path], tokenizer: SpongeTokenizer, cache_root: Path = Path("out/cache"),
                val_fraction: float = 0.01, text_field: str | None = None, skip_bad: bool = False,
                seed: int = 0, show_progress: bool = True) -> TokenizedCorpus:
    """Tokenize paths once, cached under cache_root/<key>/ (see cache_key). A complete
    cache is reused at once; a partial one is rebuilt. Raises DataError for bad input;
    with skip_bad, bad records are skipped and counted in meta["skipped"]."""
    if not paths:
        raise DataError("no data path given: pass files or folders of .jsonl/.json/.txt/.csv/.parquet text")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if tokenizer.vocab_size > np.iinfo(TOKEN_DTYPE).max + 1:
        raise ValueError(f"tokenizer vocab_size {tokenizer.vocab_size} does not fit the uint16 token "
                         f"files (at most {np.iinfo(TOKEN_DTYPE).max + 1} ids)")
    files = expand_paths(paths)
    root = Path(cache_root)
    key = cache_key(files, tokenizer.identity()["sha256"], val_fraction, seed, text_field)
    final = root / key
    corpus = _cached(final, skip_bad)
    if corpus is not None:
        return corpus
    root.mkdir(parents=True, exist_ok=True)
    _remove_dead_builds(root, key)
    # Build in a private directory, then rename it into place: a killed run leaves no
    # half-written <key>/, and two processes building at once cannot mix their files.
    tmp = _build_dir(root, key, os.getpid())
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        meta = _make_meta(files, tokenizer, tmp, val_fraction, text_field, skip_bad, seed, show_progress)
        write_json_atomic(tmp / "meta.json", meta)  # last: its presence marks the files complete
        if final.exists() and _cached(final, skip_bad=True) is None:
            shutil.rmtree(final, ignore_errors=True)  # a partial or damaged earlier build
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "meta.json").is_file():
                raise  # not merely another process publishing the same key first
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename
    return load_tokenized(final)


# ---------------------------------------------------------------- command line

def describe(corpus: TokenizedCorpus) -> str:
    """A few lines: where the corpus is, its splits, and what was skipped."""
    m = corpus.meta
    lines = [f"tokenized corpus: {corpus.dir}"]
    for split in SPLITS:
        c = m["splits"][split]
        lines.append(f"  {split:>5}: {c['n_docs']:,} documents, {c['n_tokens']:,} tokens")
    lines[-1] += held_out_note(m)
    speed = m["input_bytes"] / 1e6 / max(m["seconds"], 1e-9)
    lines.append(f"  built {m['created']} from {m['input_bytes'] / 1e6:.1f} MB in {m['seconds']:.1f} s "
                 f"({speed:.1f} MB/s); {m['skipped']['summary']}")
    return "\n".join(lines)


def held_out_note(meta: dict) -> str:
    """What the validation split is: the hashed --val_fraction, and what the floor added."""
    note = f" held out for validation ({100 * meta['val_fraction']:g}% of the documents"
    moved = meta.get("val_floor_moved", 0)
    if moved:
        note += (f", plus {moved} moved from the end of train: the floor is {VAL_FLOOR_TOKENS:,} tokens and "
                 f"{VAL_FLOOR_DOCS} documents, within {VAL_FLOOR_SHARE:.0%} of the corpus")
    return note + ")"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Tokenize text once into uint16 token files (cached).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_path", nargs="+", required=True, help="files or folders of text to tokenize")
    p.add_argument("--tokenizer_dir", default=None, help="tokenizer directory (default: the shipped one)")
    p.add_argument("--cache_dir", default="out/cache", help="where tokenized corpora are kept")
    p.add_argument("--val_fraction", type=float, default=0.01, help="share of documents held out for validation")
    p.add_argument("--text_field", default=None, help="read the text from this JSON/CSV field instead of guessing")
    p.add_argument("--skip_bad", action="store_true", help="skip bad records (and count them) instead of stopping")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val split")
    args = p.parse_args(argv)
    try:
        tok = load_tokenizer(args.tokenizer_dir)
        corpus = pretokenize(args.data_path, tok, Path(args.cache_dir), args.val_fraction, args.text_field,
                             args.skip_bad, args.seed)
    except (DataError, TokenizerError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(describe(corpus))


if __name__ == "__main__":
    main()
