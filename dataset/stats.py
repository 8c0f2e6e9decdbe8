"""What is in a data file, before you train on it.

    python -m dataset.stats data/sft.jsonl data/pretrain.jsonl

For each file: how many records, which chat format was detected, characters,
tokens with our tokenizer, a histogram of token lengths, the share of records
over 512 and 1024 tokens (what SFT at 512 and long SFT at 1024 would cut),
the share that contains <think>, and the empty or broken records by reason.

A chat file (minimind, sharegpt, openai, alpaca) is measured as the model will
see it: each conversation rendered in ChatML, role headers and <|im_end|>
included. Any other file is measured as pretraining text, one record per text.
Files are streamed and tokenized in batches, so multi-GB corpora are fine, and
a bad record is counted, never fatal: the point is to see all of them at once.
"""
from __future__ import annotations

import argparse
import sys
from array import array
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tokenizer import SpongeTokenizer, TokenizerError, load_tokenizer
from tokenizer.specials import THINK

from .chat_formats import CHAT_FORMATS, detect_format, iter_conversations
from .preference import detect_pref_format, iter_pairs
from .chat_mask import render_with_spans
from .readers import DataError, SkipStats, iter_records
from .text_fields import iter_texts

BATCH = 512  # records tokenized per encode_batch call
# A record of n tokens falls in the first bucket whose upper bound is >= n, so
# "over 512" is exactly the last three buckets.
BUCKET_BOUNDS: tuple[int, ...] = (128, 256, 512, 1024, 2048)
BUCKET_LABELS: tuple[str, ...] = ("0-128", "129-256", "257-512", "513-1024", "1025-2048", ">2048")
BAR_WIDTH = 40


def detect_kind(path: Path, data_format: str | None, text_field: str | None) -> str | None:
    """The chat format of a file, or None to read it as pretraining text.

    The first record that parses decides (broken lines before it are skipped
    here and counted later); --data_format and --text_field decide outright."""
    if data_format is not None:
        return data_format
    if text_field is not None:
        return None
    records = iter_records(path, SkipStats())
    try:
        for _, record in records:
            pref = detect_pref_format(record)
            return f"{pref} preference pairs" if pref else detect_format(record)
    finally:
        records.close()
    return None


def _chat_items(path: Path, data_format: str | None, skip: SkipStats) -> Iterator[list[str]]:
    # Each conversation as its pieces: role, content, role, content, ...
    for _, messages in iter_conversations(path, data_format, skip):
        yield [part for m in messages for part in (m["role"], m["content"])]


def _pref_items(path: Path, skip: SkipStats) -> Iterator[list[str]]:
    # Each pair as its two conversations, prompt + chosen and prompt + rejected: what dpo.py trains on.
    for _, (prompt, chosen, rejected) in iter_pairs(path, None, skip):
        for reply in (chosen, rejected):
            yield [part for m in prompt for part in (m["role"], m["content"])] + ["assistant", reply]


def _text_items(path: Path, text_field: str | None, skip: SkipStats) -> Iterator[list[str]]:
    for _, text in iter_texts([path], text_field, skip):
        yield [text]


class _Counter:
    """Token lengths, characters and <think> hits, fed one batch at a time."""

    def __init__(self, tok: SpongeTokenizer, chat: bool):
        self.tok, self.chat = tok, chat
        self.lengths = array("I")  # 4 bytes a record: fine for tens of millions of records
        self.chars = self.think = 0

    def add(self, batch: list[list[str]]) -> None:
        # A conversation is counted as training sees it: its whole ChatML text encoded at
        # once (chat_mask.tokenize_chat), not piece by piece, which can differ by a token.
        if self.chat:
            texts = [render_with_spans([{"role": r, "content": c} for r, c in zip(item[0::2], item[1::2])])[0]
                     for item in batch]
        else:
            texts = [t for item in batch for t in item]
        counts = iter([len(ids) for ids in self.tok.encode_batch(texts)])
        for item in batch:
            contents = item[1::2] if self.chat else item
            self.lengths.append(next(counts) if self.chat else sum(next(counts) for _ in contents))
            self.chars += sum(len(c) for c in contents)
            self.think += any(THINK in c for c in contents)


def _summary(counter: _Counter) -> dict:
    """Totals, percentiles and the histogram from the collected lengths."""
    lengths = np.frombuffer(counter.lengths, dtype=np.uint32).astype(np.int64)
    n = len(lengths)
    if n == 0:
        return {"records": 0, "chars_total": 0, "tokens_total": 0, "histogram": [],
                "pct_over_512": 0.0, "pct_over_1024": 0.0, "pct_think": 0.0}
    buckets = np.bincount(np.searchsorted(BUCKET_BOUNDS, lengths, side="left"), minlength=len(BUCKET_LABELS))
    histogram = [(label, int(count)) for label, count in zip(BUCKET_LABELS, buckets)]
    return {
        "records": n,
        "chars_total": counter.chars, "chars_mean": counter.chars / n,
        "tokens_total": int(lengths.sum()), "tokens_mean": float(lengths.mean()),
        "tokens_median": float(np.median(lengths)),
        "tokens_p90": float(np.percentile(lengths, 90)), "tokens_p99": float(np.percentile(lengths, 99)),
        "tokens_max": int(lengths.max()),
        "histogram": histogram,
        "pct_over_512": 100 * float((lengths > 512).mean()),
        "pct_over_1024": 100 * float((lengths > 1024).mean()),
        "pct_think": 100 * counter.think / n,
    }


def file_stats(path: str | Path, tok: SpongeTokenizer, data_format: str | None = None,
               text_field: str | None = None, max_records: int | None = None) -> dict:
    """Statistics of one file as a dict (see _summary for the keys, plus path,
    format, bad_total, bad_counts, bad_examples). Raises DataError for a
    problem with the whole file (missing, empty, unknown --data_format)."""
    path = Path(path)
    if data_format is not None and data_format not in CHAT_FORMATS:
        raise DataError(f"--data_format {data_format}: choose from {', '.join(CHAT_FORMATS)}")
    fmt = detect_kind(path, data_format, text_field)
    skip = SkipStats()
    # Pass the user's --data_format, not the detected one: without it, records
    # in a different format than the first are counted as 'mixed formats'.
    if fmt and fmt.endswith("preference pairs"):
        items = _pref_items(path, skip)
    else:
        items = _chat_items(path, data_format, skip) if fmt else _text_items(path, text_field, skip)
    counter = _Counter(tok, chat=fmt is not None)
    # disable=None: no bar when stderr is not a terminal (logs, tests).
    with tqdm(desc=f"reading {path.name}", unit=" rec", disable=None, leave=False) as bar:
        items = islice(items, max_records)
        while batch := list(islice(items, BATCH)):
            counter.add(batch)
            bar.update(len(batch))
    stats = _summary(counter)
    stats.update(path=str(path), format=fmt or "pretraining text", bad_total=skip.total,
                 bad_counts=dict(skip.counts), bad_examples=dict(skip.examples),
                 stopped_early=max_records is not None and stats["records"] >= max_records)
    return stats


def format_report(s: dict) -> str:
    """The compact, human-readable report of one file_stats() dict."""
    early = " (--max_records reached)" if s["stopped_early"] else ""
    pairs = s["format"].endswith("preference pairs")
    what = f"{s['records'] // 2:,} pairs = {s['records']:,} conversations" if pairs else f"{s['records']:,} records"
    lines = [f"{s['path']}: {what}{early}, format {s['format']}"]
    if s["records"]:
        lines += [
            f"  characters  total {s['chars_total']:,}  mean {s['chars_mean']:.1f}",
            f"  tokens      total {s['tokens_total']:,}  mean {s['tokens_mean']:.1f}  median {s['tokens_median']:.0f}"
            f"  p90 {s['tokens_p90']:.0f}  p99 {s['tokens_p99']:.0f}  max {s['tokens_max']:,}",
            "  tokens per record:",
        ]
        top = max(count for _, count in s["histogram"]) or 1
        for label, count in s["histogram"]:
            bar = "#" * max(round(BAR_WIDTH * count / top), 1 if count else 0)  # a few records still show
            lines.append(f"    {label:>9}  {count:>9,}  {100 * count / s['records']:5.1f}%  {bar}".rstrip())
        lines += [f"  over 512 tokens: {s['pct_over_512']:.1f}%   over 1024 tokens: {s['pct_over_1024']:.1f}%",
                  f"  contains {THINK}: {s['pct_think']:.1f}%"]
    if s["bad_total"]:
        lines.append(f"  broken or empty: {s['bad_total']:,}")
        for reason, count in s["bad_counts"].items():
            lines.append(f"    {count:>9,}  {reason} (first at {', '.join(s['bad_examples'][reason])})")
    else:
        lines.append("  broken or empty: 0")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dataset.stats",
                                description="Count records, characters and tokens of data files before training.")
    p.add_argument("files", nargs="+", metavar="FILE", help="data files (.jsonl, .json, .txt, .csv, .parquet)")
    p.add_argument("--data_format", default=None, choices=CHAT_FORMATS,
                   help="read every file as this chat format instead of detecting it")
    p.add_argument("--text_field", default=None,
                   help="read files as pretraining text from this JSON/CSV field instead of guessing")
    p.add_argument("--max_records", type=int, default=None,
                   help="stop after this many good records per file, for a quick look")
    args = p.parse_args(argv)
    if args.max_records is not None and args.max_records < 1:
        p.error("--max_records must be at least 1")
    try:
        tok = load_tokenizer()
    except TokenizerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    status = 0
    for i, path in enumerate(args.files):
        try:
            stats = file_stats(path, tok, args.data_format, args.text_field, args.max_records)
        except DataError as e:  # one bad file should not hide the report of the others
            print(f"error: {e}", file=sys.stderr)
            status = 2
            continue
        print(("\n" if i else "") + format_report(stats), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
