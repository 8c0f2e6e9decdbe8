"""The built-in demo corpus: a small, seeded, made-up Chinese world for every training stage.

With no data flag, the stage scripts train on this, so a fresh clone runs end to
end with nothing downloaded. The text is generated here from templates about
海绵宝宝 and his friends (dataset/demo/world.py holds the facts), never taken
from anywhere, and it is regular enough that a tiny model visibly learns it.

    out/demo/{kind}.jsonl   record                                        default size
    pretrain    {"text"}: 1-3 short paragraphs                  7,000 records, about 1.5M characters
    sft         {"conversations"}: 1-4 turns, identity Q&A     12,000 dialogues, each under 512 tokens
    sft_long    {"conversations"}: many turns                  2,000 dialogues of 512-1024 tokens
    r1          {"conversations", "answer"}: <think>/<answer>  6,000 problems with gold answers
    dpo         {"chosen", "rejected"}: message lists          4,000 pairs
    r1_test     the same as r1: held-out problems               200 problems, none asked in r1
    r1_val      the same as r1: problems for choosing settings  200 problems, none in r1 or r1_test
    dpo_test    the same as dpo: held-out pairs                  200 pairs, none in dpo

r1_test is the evaluation set for the reasoning stage. It has its own random
stream, and every question of r1 (same seed, default size, so any smaller r1
too: a smaller size is a prefix) is left out, as is any repeat within it.
r1_val is the validation split: settings (steps, learning rates, GRPO's group
size...) are chosen on it, so that r1_test still measures something new. It
leaves out every question of r1 and of r1_test.

`size` always counts records. The same (kind, seed, size) gives byte-identical
files: each kind draws from its own random.Random seeded by a string, never the
global RNG or hash() (whose value changes between runs). A sidecar
{kind}.meta.json records the generator version, a fingerprint of the generator
source, the seed and size, and the file's byte count; when any of them differs,
ensure_demo_corpus() writes the file again.

    python -m dataset.demo                       # write all eight, print counts and samples
    python -m dataset.demo --kind r1 --seed 1
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from .chat import sft_long_record, sft_record
from .pretrain import pretrain_record
from .reason import dpo_record, held_out_records, pair_of, question_of, r1_record, r1_train_record

GENERATOR_MODULES = ("world", "word_problems", "pretrain", "chat", "reason")  # this package's generators, fingerprinted
DEMO_DIR = Path("out/demo")  # relative to the current directory (the repo root when the scripts run)
DEMO_KINDS: tuple[str, ...] = ("pretrain", "sft", "sft_long", "r1", "dpo", "r1_test", "r1_val", "dpo_test")
DEMO_VERSION = 1  # bump when the output changes in a way the source fingerprint would not show
# Records per kind: each file is a few MB and takes about a second to write. r1_test holds 500
# problems so that pass@k before and after RL is measured on at least 400 (with an interval).
DEFAULT_SIZES: dict[str, int] = {"pretrain": 7_000, "sft": 12_000, "sft_long": 2_000, "r1": 6_000, "dpo": 4_000,
                                  "r1_test": 500, "r1_val": 200, "dpo_test": 200}
_MAKERS: dict[str, Callable[[random.Random], dict]] = {
    "pretrain": pretrain_record, "sft": sft_record, "sft_long": sft_long_record,
    "r1": r1_train_record, "dpo": dpo_record,
}
# The held-out kinds: (maker, the key that must be new, the kinds of the same seed whose keys are excluded).
HELD_OUT: dict[str, tuple[Callable[[random.Random], dict], Callable[[dict], str], tuple[str, ...]]] = {
    "r1_test": (r1_record, question_of, ("r1",)),
    "r1_val": (r1_record, question_of, ("r1", "r1_test")),
    "dpo_test": (dpo_record, pair_of, ("dpo",)),
}


def _check(kind: str, seed: int, size: int | None) -> int:
    """Validate the arguments; return the number of records to make."""
    if kind not in DEMO_KINDS:
        raise ValueError(f"unknown demo corpus kind {kind!r}; choose one of {', '.join(DEMO_KINDS)}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"demo corpus seed must be an integer, got {seed!r}")
    n = DEFAULT_SIZES[kind] if size is None else size
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"demo corpus size must be a positive number of records, got {size!r}")
    return n


def demo_records(kind: str, seed: int = 0, size: int | None = None) -> Iterator[dict]:
    """The records of one kind, deterministic for (kind, seed, size); size counts records."""
    n = _check(kind, seed, size)
    # A string seed goes through SHA-512, so kinds and seeds get independent, stable streams.
    rng = random.Random(f"spongebob-demo/{kind}/{seed}")
    if kind in HELD_OUT:
        make, key, excluded = HELD_OUT[kind]
        seen = {key(r) for k in excluded for r in demo_records(k, seed)}
        yield from held_out_records(make, key, rng, n, seen)
        return
    make = _MAKERS[kind]
    if kind == "pretrain":  # its worked problems never ask a held-out question
        held_out = frozenset(r["conversations"][0]["content"] for k in ("r1_test", "r1_val")
                             for r in demo_records(k, seed))
        make = functools.partial(pretrain_record, held_out=held_out)
    for _ in range(n):
        yield make(rng)


def _source_fingerprint() -> str:
    """SHA-256 over the generator modules (world, pretrain, chat, reason), so editing a template regenerates."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for path in sorted(here / f"{name}.py" for name in GENERATOR_MODULES):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _meta(kind: str, seed: int, size: int) -> dict:
    return {"kind": kind, "version": DEMO_VERSION, "source": _source_fingerprint(), "seed": seed, "size": size}


def _meta_path(out_dir: Path, kind: str) -> Path:
    return out_dir / f"{kind}.meta.json"


def demo_corpus_current(kind: str, out_dir: Path = DEMO_DIR, seed: int = 0, size: int | None = None) -> bool:
    """True when out_dir/{kind}.jsonl exists and was written by this generator with this seed and size."""
    n = _check(kind, seed, size)
    path, meta_path = Path(out_dir) / f"{kind}.jsonl", _meta_path(Path(out_dir), kind)
    try:
        recorded = json.loads(meta_path.read_text(encoding="utf-8"))
        on_disk = path.stat().st_size
    except (OSError, ValueError):  # missing or unreadable: make it again
        return False
    # The byte count catches a file that was truncated or edited after it was written.
    return recorded == {**_meta(kind, seed, n), "bytes": on_disk}


def _write_atomic(path: Path, lines: Iterator[str]) -> int:
    """Write lines to a temporary file next to path, then rename it over path; return the byte count.
    A crash midway leaves the old file (or none), never a partial one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for line in lines:
                f.write(line)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path.stat().st_size


def ensure_demo_corpus(kind: str, out_dir: Path = DEMO_DIR, seed: int = 0, size: int | None = None) -> Path:
    """Make out_dir/{kind}.jsonl unless an up-to-date one is there; return its path. Prints nothing."""
    n = _check(kind, seed, size)
    out_dir = Path(out_dir)
    path = out_dir / f"{kind}.jsonl"
    if demo_corpus_current(kind, out_dir, seed, n):
        return path
    out_dir.mkdir(parents=True, exist_ok=True)
    _meta_path(out_dir, kind).unlink(missing_ok=True)  # no stale meta may vouch for the new file midway
    lines = (json.dumps(rec, ensure_ascii=False) + "\n" for rec in demo_records(kind, seed, n))
    n_bytes = _write_atomic(path, lines)
    meta = json.dumps({**_meta(kind, seed, n), "bytes": n_bytes}, indent=1) + "\n"
    _write_atomic(_meta_path(out_dir, kind), iter([meta]))
    return path


# ---------------------------------------------------------------- command line

def _summary(path: Path) -> tuple[int, int]:
    """(records, characters of text) in a demo file."""
    records = chars = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            records += 1
            rec = json.loads(line)
            if "text" in rec:
                chars += len(rec["text"])
            else:
                msgs = rec.get("conversations") or rec["chosen"] + rec["rejected"]
                chars += sum(len(m["content"]) for m in msgs)
    return records, chars


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataset.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--kind", default="all", choices=("all",) + DEMO_KINDS,
                        help="which corpus to write (default: all eight)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same bytes")
    parser.add_argument("--size", type=int, default=None,
                        help="number of records (default per kind: "
                        + ", ".join(f"{k} {v}" for k, v in DEFAULT_SIZES.items()) + ")")
    parser.add_argument("--out_dir", type=Path, default=DEMO_DIR,
                        help="folder to write KIND.jsonl and KIND.meta.json in (default out/demo)")
    parser.add_argument("--samples", type=int, default=2, help="how many records of each kind to print")
    args = parser.parse_args(argv)
    if args.size is not None and args.size < 1:
        parser.error(f"--size must be at least 1, got {args.size}")
    for kind in DEMO_KINDS if args.kind == "all" else (args.kind,):
        fresh = not demo_corpus_current(kind, args.out_dir, args.seed, args.size)
        start = time.perf_counter()
        path = ensure_demo_corpus(kind, args.out_dir, args.seed, args.size)
        took = time.perf_counter() - start
        records, chars = _summary(path)
        state = f"generated in {took:.1f} s" if fresh else "already up to date"
        print(f"{path}: {records:,} records, {chars:,} characters, {path.stat().st_size / 1e6:.1f} MB ({state})")
        for rec in demo_records(kind, args.seed, args.samples) if args.samples > 0 else ():
            print("  " + json.dumps(rec, ensure_ascii=False)[:300])
    return 0


if __name__ == "__main__":
    sys.exit(main())
