"""Tokenizer training cost on a >= 200 MB corpus, and compression against peer tokenizers.

    python -m bench.bench_tokenizer [--corpus_mb 200] [--compare_sentencepiece]

1. Builds a JSONL corpus of at least --corpus_mb under out/bench/ from the
   real Chinese text the shipped tokenizer was trained on (../shared/data),
   shuffled and repeated. Nothing of it is committed.
2. Runs train_tokenizer.py on it with its default --max_chars in a child
   process, and reports the child's wall time and peak RSS (os.wait4).
3. Reports compression (chars/token, bytes/token; higher = shorter
   sequences) of our tokenizers and the peers on two real-text sets that our
   tokenizers never trained on: the held-out sample of the shipped sources,
   and sources used by no tokenizer here (reviews, exam and math questions).
4. With --compare_sentencepiece, also trains a sentencepiece BPE (byte
   fallback) on the very same sample and reports it alongside.

Skips, with a message, when ../shared/data is absent.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Tokenizer

from bench.device_info import cpu_name
from dataset.readers import DataError, SkipStats
from dataset.text_fields import iter_texts
from tokenizer import DEFAULT_TOKENIZER_DIR, SPECIAL_TOKENS
from tokenizer.sample import sample_texts
from tokenizer.train import compression
import train_tokenizer

if TYPE_CHECKING:  # imported lazily below: only --compare_sentencepiece needs it
    import sentencepiece

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT.parent / "shared" / "data"
PEERS_DIR = REPO_ROOT.parent / "shared" / "peers"
PEERS = ("spongebob_tokenizer", "minimind3_tokenizer")

# The shipped tokenizer's sources (the command in train_tokenizer.py's docstring), relative to DATA_DIR.
SHIPPED_SOURCES = (
    "steel-llm-samples/*.json*", "luxun", "classic-novels", "cmrc2018", "chinese-poetry",
    "llamafactory/alpaca_zh_demo.json", "medicalgpt/sharegpt_zh_1K_format.jsonl", "alpaca-chinese-mt",
)
# Real Chinese text that none of our tokenizers saw: (path, text field or None for auto).
UNSEEN_SOURCES = (
    ("sophonplus-reviews", None), ("belle-eval/eval_set.json", "question"), ("ape210k/test.ape.json", "original_text"),
    ("gaokao-bench/Subjective_Questions", None), ("cmmlu/test", "Question"),
)
UNSEEN_CHARS_PER_SOURCE = 400_000


def source_paths(patterns: list[str]) -> list[Path]:
    return [p for pattern in patterns for p in sorted(DATA_DIR.glob(pattern))]


def read_texts(paths: list[Path], text_field: str | None = None, max_chars: int | None = None) -> list[str]:
    """Every text of paths (bad records skipped), up to max_chars in file order."""
    texts, total = [], 0
    for _where, text in iter_texts(paths, text_field=text_field, skip=SkipStats()):
        texts.append(text)
        total += len(text)
        if max_chars is not None and total >= max_chars:
            break
    return texts


def build_corpus(texts: list[str], path: Path, min_mb: int, seed: int) -> None:
    """Write texts as {"text"} JSONL, reshuffled on every pass, until the file holds min_mb MB."""
    if path.exists() and path.stat().st_size >= min_mb * 1e6:
        print(f"reusing {path} ({path.stat().st_size / 1e6:.0f} MB)")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    rng, size, passes = random.Random(seed), 0, 0
    with open(path, "wb") as f:
        while size < min_mb * 1e6:
            rng.shuffle(texts)
            for text in texts:
                size += f.write((json.dumps({"text": text}, ensure_ascii=False) + "\n").encode("utf-8"))
            passes += 1
    print(f"wrote {path}: {passes} shuffled passes over {len(texts):,} documents, {path.stat().st_size / 1e6:.0f} MB")


def run_measured(cmd: list[str], label: str) -> tuple[float, float, str]:
    """Run cmd; return its wall seconds, its own peak RSS in MB, and its stdout."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)  # rusage of this child alone, not of all children
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"{label} failed with exit code {proc.returncode}:\n{out}")
    return wall, usage.ru_maxrss / 1024, out  # ru_maxrss is in KB on Linux


# Trains sentencepiece in a fresh interpreter, so its peak RSS is its own.
SPM_CHILD = "import json, sys, sentencepiece as spm; spm.SentencePieceTrainer.train(**json.loads(sys.argv[1]))"


def train_sentencepiece(train_texts: list[str], work: Path, vocab_size: int) -> tuple[float, float, object]:
    import sentencepiece as spm
    input_path = work / "spm_input.txt"
    # sentencepiece trains on lines; our chunks keep their line breaks, so write them as lines.
    input_path.write_text("".join(t if t.endswith("\n") else t + "\n" for t in train_texts), encoding="utf-8")
    options = dict(
        input=str(input_path), model_prefix=str(work / "spm"), model_type="bpe", vocab_size=vocab_size,
        # 0.9995 would need ~6,900 single-character pieces for Chinese: more than the whole vocab.
        byte_fallback=True, character_coverage=0.995, user_defined_symbols=list(SPECIAL_TOKENS),
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
        input_sentence_size=2_000_000, shuffle_input_sentence=True, max_sentence_length=1 << 16,
        num_threads=os.cpu_count(), minloglevel=2,
    )
    wall, rss, _ = run_measured([sys.executable, "-c", SPM_CHILD, json.dumps(options)], "sentencepiece training")
    return wall, rss, spm.SentencePieceProcessor(model_file=str(work / "spm.model"))


def spm_compression(sp: sentencepiece.SentencePieceProcessor, texts: list[str]) -> dict:
    encoded = sp.encode(texts)
    tokens = sum(map(len, encoded))
    chars, nbytes = sum(map(len, texts)), sum(len(t.encode("utf-8")) for t in texts)
    exact = sum(sp.decode(ids) == t for ids, t in zip(encoded, texts))
    return {"chars_per_token": chars / tokens, "bytes_per_token": nbytes / tokens, "exact": exact / len(texts)}


def fmt(c: dict) -> str:
    return f"{c['chars_per_token']:6.3f} {c['bytes_per_token']:6.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus_mb", type=int, default=200, help="size of the generated training corpus in MB")
    parser.add_argument("--work_dir", default="out/bench/tokenizer", help="where the corpus and trained tokenizers go")
    parser.add_argument("--compare_sentencepiece", action="store_true",
                        help="also train sentencepiece on the same sample")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corpus shuffle")
    args = parser.parse_args()
    if not DATA_DIR.is_dir():
        print(f"skipped: no real data at {DATA_DIR} (this benchmark needs ../shared/data next to the repo)")
        return
    defaults = train_tokenizer.parse_args(["--data_path", "x"])
    work = REPO_ROOT / args.work_dir
    print(f"device: {cpu_name()}, {os.cpu_count()} cores; python {sys.version.split()[0]}")

    shipped_texts = read_texts(source_paths(SHIPPED_SOURCES))
    # What a default run holds out of the shipped sources. The shipped tokenizer was trained
    # with --max_chars >= the default, so this is part of what it held out too.
    heldout = sample_texts(shipped_texts, defaults.max_chars, defaults.heldout_chars, defaults.seed).heldout
    unseen = [t for path, field in UNSEEN_SOURCES
              for t in read_texts([DATA_DIR / path], field, UNSEEN_CHARS_PER_SOURCE)]
    print(f"eval text: held-out sample {sum(map(len, heldout)):,} chars; "
          f"unseen sources {sum(map(len, unseen)):,} chars")

    corpus = work / f"corpus_{args.corpus_mb}mb.jsonl"
    build_corpus(shipped_texts, corpus, args.corpus_mb, args.seed)
    del shipped_texts
    out_dir = work / "trained"
    cmd = [sys.executable, "train_tokenizer.py", "--data_path", str(corpus), "--out_dir", str(out_dir)]
    wall, rss, log = run_measured(cmd, "train_tokenizer.py")
    print(f"\n$ {' '.join(cmd[1:])}\n{log.rstrip()}")
    print(f"train_tokenizer.py on {corpus.stat().st_size / 1e6:.0f} MB, default --max_chars {defaults.max_chars:,}: "
          f"wall {wall:.1f} s, peak RSS {rss:,.0f} MB (limit 3,072 MB)")

    same = (out_dir / "tokenizer.json").read_bytes() == (DEFAULT_TOKENIZER_DIR / "tokenizer.json").read_bytes()
    # Expected when the shipped tokenizer used the defaults: the sample ignores order and duplicates.
    print(f"tokenizer.json identical to the shipped one: {'yes' if same else 'no'}")

    rows = [("ours, shipped (tokenizer/)", DEFAULT_TOKENIZER_DIR)]
    if not same:
        rows.append(("ours, trained by this bench", out_dir))
    rows += [(f"peer: {name}", PEERS_DIR / name) for name in PEERS if (PEERS_DIR / name).is_dir()]
    print(f"\n{'compression: chars/tok bytes/tok':44s} {'held-out sample':>14s}   {'unseen sources':>14s}")
    for label, path in rows:
        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        print(f"{label:44s} {fmt(compression(tok, heldout))}   {fmt(compression(tok, unseen))}")

    if args.compare_sentencepiece:
        bpe_train_s = float(re.search(r"train time ([\d.]+) s", log).group(1))  # BPE training alone, no reading
        compare_sentencepiece(corpus, defaults, work, heldout, unseen, bpe_train_s, rss)


def compare_sentencepiece(corpus: Path, defaults: argparse.Namespace, work: Path, heldout: list[str],
                          unseen: list[str], bpe_train_s: float, bpe_rss: float) -> None:
    # The same sample train_tokenizer.py drew (the sampling is deterministic), so both learn from identical text.
    texts = (t for _, t in iter_texts([corpus]))
    sample = sample_texts(texts, defaults.max_chars, defaults.heldout_chars, defaults.seed)
    wall, rss, sp = train_sentencepiece(sample.train, work, defaults.vocab_size)
    print(f"\nsame {sample.train_chars:,}-char sample, vocab {defaults.vocab_size}:")
    print(f"  tokenizers byte-level BPE: train {bpe_train_s:.1f} s, "
          f"peak RSS {bpe_rss:,.0f} MB (whole train_tokenizer.py run)")
    print(f"  sentencepiece BPE + byte_fallback: train {wall:.1f} s, peak RSS {rss:,.0f} MB (child process)")
    on_heldout, on_unseen = spm_compression(sp, heldout), spm_compression(sp, unseen)
    print(f"{'sentencepiece BPE, same sample':44s} {fmt(on_heldout)}   {fmt(on_unseen)}")
    print(f"sentencepiece exact round-trips: {on_heldout['exact']:.1%} of held-out texts, "
          f"{on_unseen['exact']:.1%} of unseen")


if __name__ == "__main__":
    try:
        main()
    except DataError as e:
        sys.exit(f"error: {e}")
