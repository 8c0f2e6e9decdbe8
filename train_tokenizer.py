"""Train a byte-level BPE tokenizer for SpongeBob on your own text.

    python train_tokenizer.py --data_path data/pretrain.jsonl data/more/ --out_dir out/tokenizer

It reads any mix of .jsonl / .json / .txt / .parquet / .csv files (folders are
searched), streams them once to pick a bounded random sample (so memory does
not grow with the corpus, see tokenizer/sample.py), trains a BPE whose ids 0-6
are the special tokens, writes a Hugging Face tokenizer directory, and reports
compression on held-out text that the trainer never saw.

The tokenizer shipped in tokenizer/ was made from the repo root, next to the
shared data, with (same command and data -> byte-identical tokenizer.json):

    python train_tokenizer.py --data_path ../shared/data/steel-llm-samples/*.json* \
        ../shared/data/luxun ../shared/data/classic-novels ../shared/data/cmrc2018 \
        ../shared/data/chinese-poetry ../shared/data/llamafactory/alpaca_zh_demo.json \
        ../shared/data/medicalgpt/sharegpt_zh_1K_format.jsonl ../shared/data/alpaca-chinese-mt \
        --skip_bad --out_dir out/tokenizer && cp out/tokenizer/tokenizer.json tokenizer/

It never writes into the shipped tokenizer/ (every run without --tokenizer_dir was trained
with it), and it refuses an --out_dir that already holds a tokenizer: checkpoints trained with
that one would no longer load. --overwrite moves the old one aside instead of deleting it.
"""

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer
from tqdm import tqdm

from dataset.readers import DataError, SkipStats
from dataset.text_fields import iter_texts
from tokenizer import DEFAULT_TOKENIZER_DIR, load_tokenizer
from tokenizer.hf_format import write_hf_dir
from tokenizer.sample import Sample, sample_texts
from tokenizer.train import compression, peak_rss_mb, train_bpe
from common.cli import OneLineParser

MIN_VOCAB = 256 + 7 + 1  # the byte alphabet, the special tokens, and at least one merge
EXAMPLE = "python train_tokenizer.py --data_path data/pretrain.jsonl --out_dir out/tokenizer"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineParser(description="Train SpongeBob's byte-level BPE tokenizer.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_path", nargs="+",
                   help="files or folders of .jsonl/.json/.txt/.parquet/.csv text to train on")
    p.add_argument("--vocab_size", type=int, default=6400, help="vocabulary size, special tokens included")
    p.add_argument("--out_dir", default="out/tokenizer", help="where to write the tokenizer directory")
    # The trainer's memory grows with the distinct text it sees. Measured on Chinese (2 cores): 5M chars
    # peak at 1.2 GB RSS in ~40 s; 10M at 2.2 GB; 15M at 3.0 GB, for only +0.2% chars/token over 5M.
    p.add_argument("--max_chars", type=int, default=5_000_000,
                   help="character budget of the random training sample (bounds memory whatever the corpus size)")
    p.add_argument("--heldout_chars", type=int, default=1_000_000,
                   help="characters held out (never trained on) to measure compression; at most 10%% of the sample")
    p.add_argument("--text_field", default=None, help="read the text from this JSON/CSV field instead of guessing")
    p.add_argument("--skip_bad", action="store_true",
                   help="skip bad records (and say how many) instead of stopping at the first")
    p.add_argument("--seed", type=int, default=42,
                   help="seed of the sample; the same seed and data give the same tokenizer")
    p.add_argument("--min_frequency", type=int, default=2, help="a pair must occur this often to be merged")
    p.add_argument("--overwrite", action="store_true",
                   help="--out_dir already holds a tokenizer: move it aside to <out_dir>.previous-<time> (never "
                        "deleted) and write the new one there")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Raise ValueError with a one-line message for flags that make no sense."""
    if not args.data_path:
        raise ValueError(f"no training text: pass files or folders with --data_path, e.g. {EXAMPLE}")
    if args.vocab_size < MIN_VOCAB:
        raise ValueError(f"--vocab_size must be at least {MIN_VOCAB} (256 byte symbols + 7 special tokens + 1)")
    if args.max_chars <= 0 or args.heldout_chars < 0:
        raise ValueError("--max_chars must be positive and --heldout_chars not negative")
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out_dir {args.out_dir} exists and is not a directory")
    if out.resolve() == DEFAULT_TOKENIZER_DIR:
        raise ValueError(f"--out_dir {args.out_dir} is the shipped tokenizer, which every run without "
                         "--tokenizer_dir trains and loads with: write to another folder (e.g. out/tokenizer)")
    if (out / "tokenizer.json").exists() and not args.overwrite:
        raise ValueError(f"--out_dir {args.out_dir} already holds a tokenizer; checkpoints trained with it would "
                         "no longer load: choose another --out_dir, or pass --overwrite to move it aside")


def move_aside(out: Path) -> Path:
    """Rename an existing tokenizer directory to <out>.previous-<time>, so nothing is ever deleted."""
    aside = out.with_name(f"{out.name}.previous-{time.strftime('%Y%m%d-%H%M%S')}")
    while aside.exists():
        aside = aside.with_name(aside.name + "x")
    out.rename(aside)
    return aside


def read_sample(args: argparse.Namespace, skip: SkipStats | None) -> Sample:
    """Stream every document once, keeping a bounded random sample. Raises DataError."""
    # iter_texts expands folders and checks every path before reading any.
    texts = iter_texts(args.data_path, text_field=args.text_field, skip=skip)
    # disable=None: no bar when stderr is not a terminal (logs, tests).
    with tqdm(desc="reading", unit=" docs", disable=None) as bar:
        def counted() -> Iterator[str]:
            for _where, text in texts:
                bar.update()
                yield text
        return sample_texts(counted(), args.max_chars, args.heldout_chars, seed=args.seed)


def report(args: argparse.Namespace, sample: Sample, trained: Tokenizer, train_s: float, out_dir: Path) -> None:
    loaded = load_tokenizer(out_dir)  # reload: proves the directory works
    if loaded.vocab_size < args.vocab_size:
        print(f"warning: only {loaded.vocab_size} tokens learned (asked for {args.vocab_size}): too little text")
    print(f"wrote {out_dir}/ (vocab {loaded.vocab_size}, tokenizer.json sha256 {loaded.identity()['sha256'][:16]})")
    if sample.heldout:
        c = compression(trained, sample.heldout)
        print(f"held-out compression: {c['chars_per_token']:.3f} chars/token, {c['bytes_per_token']:.3f} bytes/token "
              f"({c['chars']:,} chars -> {c['tokens']:,} tokens)")
    else:
        print("held-out compression: n/a (no held-out text; pass --heldout_chars > 0 and more data)")
    print(f"train time {train_s:.1f} s, peak RSS {peak_rss_mb():,.0f} MB (whole run)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    skip = SkipStats() if args.skip_bad else None
    try:
        check_args(args)
        sample = read_sample(args, skip)
    except (DataError, ValueError, OSError) as e:  # user errors: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    if skip is not None and skip.total:
        print(skip.summary())
    if not sample.train:
        print("error: no usable text found in --data_path", file=sys.stderr)
        return 2
    print(f"sampled {sample.train_chars:,} chars to train on and {sample.heldout_chars:,} held out, "
          f"from {sample.docs:,} documents ({sample.chars:,} chars read, "
          f"{sample.duplicates:,} duplicate chunks dropped)")

    t0 = time.perf_counter()
    tokenizer_json = train_bpe(sample.train, args.vocab_size, args.min_frequency, show_progress=sys.stderr.isatty())
    train_s = time.perf_counter() - t0
    if (Path(args.out_dir) / "tokenizer.json").exists():  # --overwrite, checked above
        print(f"--overwrite: the tokenizer that was in {args.out_dir} is now in {move_aside(Path(args.out_dir))}")
    out_dir = write_hf_dir(tokenizer_json, args.out_dir)
    report(args, sample, Tokenizer.from_str(tokenizer_json), train_s, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
