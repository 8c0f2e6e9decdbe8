"""SFT on real chat data: chat tokenization speed, and the three row layouts, side by side in one run.

    python -m bench.bench_sft                                  # CPU, 29M preset, dtype auto, rows of 512
    python -m bench.bench_sft --batch_sizes 16,84 --max_seq_len 1024
    python -m bench.bench_sft --device cuda --batch_sizes 84

1. Tokenization: the first --num_conversations records of --data_path are
   written as JSONL under --work_dir, then dataset/sft_tokenize.py's
   pretokenize_chat tokenizes them into a fresh cache (ChatML + loss mask),
   --token_repeats times; the median gives conversations/s, tokens/s and
   input MB/s. The same pass gives the length histogram (no length cap).
2. Training, for each of --batch_sizes: the engine's own train_step
   (trainer/engine.py, --dtype auto, the chunked loss) on the real
   SFTDataset batches of each --packing layout (dataset/packing.py):
     none   one conversation per row, padded to the longest of a random batch
     group  one conversation per row, batches of similar lengths (width rounded to 64)
     pack   whole conversations packed into rows of --max_seq_len, block-diagonal mask
   The layouts take turns step by step (one warm-up step each, then --repeats),
   each on its own copy of the same initial model. Reported per layout: the
   padding share of a whole epoch, real (non-padding) tokens/s and trained
   (reply) tokens/s, and each layout's trained tokens/s over none's.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as `python bench/bench_sft.py`: make the repo's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.device_info import describe_device
from dataset.packing import PACKING_MODES
from dataset.readers import DataError, iter_records
from dataset.sft_dataset import SFTDataset
from dataset.sft_tokenize import pretokenize_chat
from model import IGNORE_INDEX, SpongeBob, get_preset
from tokenizer import load_tokenizer
from bench.engine_step import engine_step, make_engine
from common.device import pick_dtype
from trainer import Engine
from trainer.memory import available_bytes, fit_batch

REPO_ROOT = Path(__file__).resolve().parents[1]
# BELLE's multi-turn chats (sharegpt shape), the closest of ../shared/data to MiniMind's SFT sets.
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "steel-llm-samples" / "train_3.5M_CN_sample.json"
NO_CAP = 1 << 30  # a max_seq_len that keeps every conversation, for the length histogram


# ---------------------------------------------------------------- tokenization

def write_subset(src: Path, dst: Path, n: int) -> int:
    """The first n records of src, unchanged, as JSONL; returns how many were written."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(dst, "w", encoding="utf-8") as f:
        for _, record in iter_records(src):
            if count == n:
                break
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def tokenize_throughput(subset: Path, work: Path, args: argparse.Namespace) -> None:
    """Fresh pretokenize_chat builds (median of --token_repeats), then the length histogram."""
    tok, cache, times, cpu_times = load_tokenizer(), work / "cache", [], []
    for _ in range(args.token_repeats):
        shutil.rmtree(cache, ignore_errors=True)
        start, cpu = time.perf_counter(), time.process_time()
        corpus = pretokenize_chat([subset], tok, NO_CAP, data_format=args.data_format, cache_root=cache,
                                  show_progress=False)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu)
    # Each document is a conversation plus its end-of-text id.
    lengths = np.concatenate([np.diff(np.r_[f.doc_starts, f.n_tokens]) - 1 for f in (corpus.train, corpus.val)])
    mb = subset.stat().st_size / 1e6
    print(f"tokenize (pretokenize_chat, fresh cache, median of {len(times)}): {len(lengths):,} conversations, "
          f"{int(lengths.sum()):,} tokens, {mb:.2f} MB")
    clocks = (("wall", "s", statistics.median(times)), ("cpu", "CPU-s", statistics.median(cpu_times)))
    for clock, unit, seconds in clocks:
        print(f"  {clock:>4}: {seconds:.2f} {unit} = {len(lengths) / seconds:,.0f} conversations/{unit}, "
              f"{lengths.sum() / seconds / 1e3:,.1f} k tokens/{unit}, {mb / seconds:.2f} MB/{unit}")
    print(f"  lengths: mean {lengths.mean():.0f}, median {np.median(lengths):.0f}, p90 "
          f"{np.percentile(lengths, 90):.0f}, max {lengths.max()}; over 512: {np.mean(lengths > 512):.1%}, "
          f"over 1024: {np.mean(lengths > 1024):.1%}")


# ---------------------------------------------------------------- the three layouts

def engine_for(args: argparse.Namespace, data: SFTDataset, batch_size: int, accumulation: int,
               device: torch.device, dtype: torch.dtype) -> Engine:
    # every layout starts from the same (seeded) weights
    return make_engine(args.preset, batch_size, args.max_seq_len, device, dtype, False, data,
                       str(Path(args.work_dir) / "run"), accumulation)


def compare_layouts(corpus, args: argparse.Namespace, batch_size: int, device: torch.device,
                    dtype: torch.dtype) -> None:
    """Interleaved engine steps on each layout's own batches; rates over all timed steps."""
    sets = {mode: SFTDataset(corpus.train, args.max_seq_len, seed=0, packing=mode) for mode in PACKING_MODES}
    # A step of batch_size rows in micro-batches that fit this machine (trainer/memory.py): 84 rows of
    # 1024 in one go need more RAM than a 24 GB machine has (the first try of this bench was OOM-killed).
    config = get_preset(args.preset)
    plan = fit_batch(config, SpongeBob(config).num_parameters(), batch_size, 1, args.max_seq_len, dtype,
                     available_bytes(device, 3))  # three models side by side
    micro, accumulation = plan.batch_size, plan.accumulation_steps
    need = args.repeats + 1
    short = [m for m, d in sets.items() if d.num_batches(micro) < need * accumulation]
    if short:
        print(f"  batch {batch_size}: skipped, {short[0]} has fewer than {need} steps in an epoch")
        return
    engines = {m: engine_for(args, d, micro, accumulation, device, dtype) for m, d in sets.items()}
    batches = {}
    for m, d in sets.items():
        stream = list(d.batches(micro, epoch=0))[:need * accumulation]
        batches[m] = [stream[i:i + accumulation] for i in range(0, len(stream), accumulation)]
    if accumulation > 1:
        print(f"  batch {batch_size}: {accumulation} micro-batches of {micro} per step (to fit in memory)")
    totals = {m: [0.0, 0, 0] for m in sets}  # seconds, real tokens, trained tokens
    for i in range(need):
        for mode, engine in engines.items():
            step = batches[mode][i]
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            engine_step(engine, step)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i:  # the first step of each is the warm-up
                totals[mode][0] += time.perf_counter() - start
                totals[mode][1] += sum(int(b["seq_lens"].sum()) for b in step)
                totals[mode][2] += sum(int((b["targets"] != IGNORE_INDEX).sum()) for b in step)
    base = totals["none"][2] / totals["none"][0]
    for mode, (seconds, real, trained) in totals.items():
        d = sets[mode]
        print(f"  batch {batch_size:>3} {mode:>5}: {d.n_rows:,} rows, {d.padding_share(batch_size):6.1%} padding "
              f"over the epoch; {real / seconds:8,.0f} real tokens/s, {trained / seconds:8,.0f} trained/s, "
              f"{trained / seconds / base:.2f}x none")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_path", default=str(DEFAULT_DATA), help="a chat file (.jsonl/.json) in a supported format")
    p.add_argument("--data_format", default=None, help="minimind, sharegpt, openai or alpaca (default: detected)")
    p.add_argument("--num_conversations", type=int, default=1000, help="use the first N records of --data_path")
    p.add_argument("--token_repeats", type=int, default=3, help="fresh tokenizations timed (median)")
    p.add_argument("--preset", default="spongebob-29m", help="model preset")
    p.add_argument("--max_seq_len", type=int, default=512, help="row length; longer conversations are dropped")
    p.add_argument("--batch_sizes", default="16,84", help="comma list of rows per step to compare at")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per layout (after one warm-up)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--dtype", default="auto", help="float32, bfloat16, float16 or auto (bf16 where native)")
    p.add_argument("--work_dir", default="out/bench/sft", help="where the subset and token files go")
    return p.parse_args()


def command_line() -> str:
    args = " ".join(sys.argv[1:])
    run = "python -m bench.bench_sft" if __spec__ is not None else "python bench/bench_sft.py"
    return f"{run} {args}".strip()


def main() -> None:
    args = parse_args()
    src, work = Path(args.data_path), REPO_ROOT / args.work_dir
    if not src.is_file():
        sys.exit(f"error: {src}: no such file (this benchmark needs real SFT data, e.g. ../shared/data; "
                 f"pass --data_path)")
    try:  # flag mistakes surface now, not after the tokenization
        device = torch.device(args.device)
        get_preset(args.preset)  # an unknown preset fails here, not after the tokenization
        dtype = pick_dtype(args.dtype, device)
    except (ValueError, RuntimeError) as e:
        sys.exit(f"error: {e}")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device: {describe_device(args.device)}")
    print(f"command: {command_line()}")
    subset = work / f"first_{args.num_conversations}.jsonl"
    n = write_subset(src, subset, args.num_conversations)
    print(f"data: the first {n:,} records of {src}")
    tokenize_throughput(subset, work, args)

    corpus = pretokenize_chat([subset], load_tokenizer(), args.max_seq_len, data_format=args.data_format,
                              cache_root=work / "cache", val_fraction=0.0, show_progress=False)
    print(f"training rows: {corpus.train.n_docs:,} conversations of <= {args.max_seq_len + 1} tokens "
          f"({corpus.meta['lengths']['dropped_too_long']} over-long dropped, as sft.py does); "
          f"engine step: {args.preset}, {str(dtype)[6:]}, eager, forward + backward + AdamW")
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        compare_layouts(corpus, args, batch_size, device, dtype)


if __name__ == "__main__":
    try:
        main()
    except DataError as e:
        sys.exit(f"error: {e}")
