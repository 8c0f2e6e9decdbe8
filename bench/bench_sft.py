"""SFT on real chat data: chat tokenization speed, and padding against packing, side by side in one run.

    python -m bench.bench_sft                                  # CPU, 29M preset, fp32, rows of 512
    python -m bench.bench_sft --device cuda --dtype bfloat16 --batch_size 84
    python -m bench.bench_sft --data_path ../shared/data/llamafactory/alpaca_zh_demo.json

1. Tokenization: the first --num_conversations records of --data_path are
   written as JSONL under --work_dir, then dataset/sft_tokenize.py's
   pretokenize_chat tokenizes them into a fresh cache (ChatML + loss mask),
   --token_repeats times; the median gives conversations/s, tokens/s and
   input MB/s. The same pass gives the length histogram (no length cap).
2. Training: one forward + backward + AdamW step per measurement, on the same
   conversations (--batch_size of them, drawn as sft.py draws them, the
   over-long ones dropped as sft.py drops them), so every variant trains on
   exactly the same loss-masked tokens:
     padded    ours: SFTDataset rows, padded to the longest row of the batch
     padmax    the reference: every row padded to --max_seq_len
     packed    the conversations back to back, cut into --max_seq_len rows
               (only the last row padded) with plain causal attention: what
               packing could reach at best, since attention then crosses
               conversations
     packmask  the same rows with a block-diagonal causal mask, so each
               conversation sees only itself: correct packing, but SDPA must
               take an explicit (B, 1, T, T) mask, which rules out its flash
               kernel. model/model.py takes no mask, so the bench hands one
               to its SDPA call (no model file is changed), and first checks
               that a packed row then gives each conversation's own logits.
   The variants take turns for --repeats measurements after a warm-up, and
   each figure is the median, so a busy machine slows all of them alike. On
   CPU the figures are given twice: per wall-clock second and per second of
   this process's CPU time, which counts work, not waiting for a core on a
   shared machine (use --threads 1 there, so no thread spins on a preempted one).
"""
from __future__ import annotations

import argparse
import importlib
import json
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # run as `python bench/bench_sft.py`: make the repo's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.device_info import describe_device
from dataset.pretrain_dataset import epoch_order
from dataset.readers import DataError, iter_records
from dataset.sft_dataset import SFTDataset
from dataset.sft_tokenize import pretokenize_chat
from model import IGNORE_INDEX, SpongeBob, get_preset
from tokenizer import load_tokenizer
from trainer.device import pick_dtype

REPO_ROOT = Path(__file__).resolve().parents[1]
# BELLE's multi-turn chats (sharegpt shape), the closest of ../shared/data to MiniMind's SFT sets.
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "steel-llm-samples" / "train_3.5M_CN_sample.json"
NO_CAP = 1 << 30  # a max_seq_len that keeps every conversation, for the length histogram
# model/model.py calls F.scaled_dot_product_attention through its module global F.
MODEL_MODULE = importlib.import_module("model.model")


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


# ---------------------------------------------------------------- the four row layouts

def pad_to(batch: dict[str, torch.Tensor], width: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Rows widened to `width`: padding input ids, ignored targets (what the reference did)."""
    extra = width - batch["input_ids"].size(1)
    return {"input_ids": F.pad(batch["input_ids"], (0, extra), value=pad_id),
            "targets": F.pad(batch["targets"], (0, extra), value=IGNORE_INDEX)}


def packed_rows(rows: list[tuple[np.ndarray, np.ndarray]], seq_len: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Conversations back to back, cut into seq_len rows; the last row padded.

    Each conversation keeps its own (inputs, targets) pairs, so the trained
    positions are exactly those of the padded layouts. "doc" numbers each
    position's conversation (-1 on padding) for the block-diagonal mask.
    """
    inputs = np.concatenate([i for i, _ in rows])
    targets = np.concatenate([t for _, t in rows])
    doc = np.concatenate([np.full(len(i), d) for d, (i, _) in enumerate(rows)])
    n_rows = -(-len(inputs) // seq_len)
    extra = n_rows * seq_len - len(inputs)
    return {"input_ids": torch.from_numpy(np.pad(inputs, (0, extra), constant_values=pad_id)).view(n_rows, -1),
            "targets": torch.from_numpy(np.pad(targets, (0, extra), constant_values=IGNORE_INDEX)).view(n_rows, -1),
            "doc": torch.from_numpy(np.pad(doc, (0, extra), constant_values=-1)).view(n_rows, -1)}


def block_causal_mask(doc: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) bool: position t sees s when s <= t and both lie in one conversation.
    Padding (-1) sees the padding before it, so no query row is all False (SDPA would give NaN)."""
    T = doc.size(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=doc.device).tril()
    return ((doc[:, :, None] == doc[:, None, :]) & causal)[:, None]


class _MaskedSDPA:
    """Stands in for torch.nn.functional inside model/model.py: its causal
    attention call gets the block-diagonal mask instead of is_causal. Done here
    so the benchmark needs no change to the model."""

    def __init__(self, mask: torch.Tensor):
        self.mask = mask

    def __getattr__(self, name: str):
        return getattr(F, name)

    def scaled_dot_product_attention(self, q, k, v, attn_mask=None, is_causal=False, **kwargs):
        if is_causal:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, **kwargs)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, **kwargs)


@contextmanager
def block_causal_attention(doc: torch.Tensor) -> Iterator[None]:
    """While inside, every SpongeBob forward attends within conversations only (one thread: nothing else runs)."""
    saved = MODEL_MODULE.F
    MODEL_MODULE.F = _MaskedSDPA(block_causal_mask(doc))
    try:
        yield
    finally:
        MODEL_MODULE.F = saved


def check_mask(model: SpongeBob, packed: dict[str, torch.Tensor], device: torch.device) -> None:
    """Logits of the first packed row against each of its conversations run alone.
    With the block mask they agree to rounding (RoPE is relative, so the shifted
    positions do not matter); with plain causal attention they do not."""
    ids, doc = packed["input_ids"][:1].to(device), packed["doc"][:1].to(device)
    with torch.no_grad():
        alone = torch.cat([model(ids[:, doc[0] == d]).logits for d in doc[0].unique() if d >= 0], dim=1)
        real = doc[0] >= 0
        with block_causal_attention(doc):
            masked = model(ids).logits[:, real]
        plain = model(ids).logits[:, real]
    print(f"  packmask check, first packed row ({int(doc[0].max() - doc[0, 0]) + 1} conversations): max |logit "
          f"difference| to each conversation run alone {float((masked - alone).abs().max()):.1e} with the "
          f"block mask, {float((plain - alone).abs().max()):.2f} without")


def build_rounds(ds: SFTDataset, batch_size: int, n: int, seq_len: int) -> tuple[list[dict], list[int]]:
    """n measurements, each {variant: batch} over the same conversations; and each one's real token count."""
    order = epoch_order(ds.n_rows, ds.seed, 0, 0, 1, shuffle=True).numpy()
    batches = ds.batches(batch_size, epoch=0)
    pad_id = ds.file.endoftext_id
    rounds, real = [], []
    for b in range(n):
        rows = [ds.row(d) for d in order[b * batch_size:(b + 1) * batch_size]]
        ours = next(batches)  # the same conversations, batched by SFTDataset itself
        packed = packed_rows(rows, seq_len, pad_id)
        trained = {int((x["targets"] != IGNORE_INDEX).sum()) for x in (ours, packed)}
        assert len(trained) == 1, f"variants disagree on the trained tokens: {trained}"
        rounds.append({"padded": ours, "padmax": pad_to(ours, seq_len, pad_id), "packed": packed,
                       "packmask": packed})
        real.append(sum(len(inputs) for inputs, _ in rows))
    return rounds, real


def epoch_padding(ds: SFTDataset, seq_len: int, batch_sizes: tuple[int, ...] = (8, 16, 32, 84)) -> None:
    """Padding share of one whole epoch, counted not timed: per-batch padding grows with the
    batch (its longest row nears seq_len), which is why the GPU default of 84 matters here."""
    real = sum(len(ds.row(d)[0]) for d in range(ds.n_rows))
    shares = []
    for b in batch_sizes:
        positions = sum(batch["input_ids"].numel() for batch in ds.batches(b, epoch=0))
        shares.append(f"{b}: {1 - real / positions:.1%}")
    packed = -(-real // seq_len) * seq_len
    print(f"  epoch padding: padded per batch of {', '.join(shares)}; padded to {seq_len}: "
          f"{1 - real / (ds.n_rows * seq_len):.1%}; packed: {1 - real / packed:.2%}")


def make_step(model: SpongeBob, device: torch.device, dtype: torch.dtype) -> Callable[[str, dict], None]:
    """Forward + backward + AdamW step, as bench_train's plain baseline does."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(variant: str, batch: dict[str, torch.Tensor]) -> None:
        ids, targets = batch["input_ids"].to(device), batch["targets"].to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            if variant == "packmask":
                with block_causal_attention(batch["doc"].to(device)):
                    loss = model(ids, targets=targets).loss
            else:
                loss = model(ids, targets=targets).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def time_interleaved(step: Callable[[str, dict], None], rounds: list[dict], device: torch.device
                     ) -> dict[str, dict[str, list[float]]]:
    """{clock: {variant: seconds per measurement}} after the first measurement (a warm-up).

    Within a measurement the variants run back to back, so a slow phase of the
    machine costs all of them alike, and a different one goes first each time.
    "cpu" is this process's CPU time: on a machine shared with other jobs it
    counts the work, not the waiting for a core (clean with --threads 1, where
    no thread spins waiting for a preempted sibling)."""
    def timed(variant: str, batch: dict) -> tuple[float, float]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        step(variant, batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - wall, time.process_time() - cpu

    for variant, batch in rounds[0].items():
        timed(variant, batch)
    seconds: dict[str, dict[str, list[float]]] = {"wall": {v: [] for v in rounds[0]}, "cpu": {v: [] for v in rounds[0]}}
    for i, r in enumerate(rounds[1:]):
        names = list(r)
        for variant in names[i % len(names):] + names[:i % len(names)]:  # rotate who goes first
            wall, cpu = timed(variant, r[variant])
            seconds["wall"][variant].append(wall)
            seconds["cpu"][variant].append(cpu)
    return seconds


def rates(times: list[float], base: list[float], positions: list[int], trained: list[int], unit: str) -> str:
    """Median tokens and trained tokens per second, and the median per-measurement speed-up over `base`."""
    total = statistics.median(p / t for p, t in zip(positions, times))
    useful = statistics.median(n / t for n, t in zip(trained, times))
    ratios = [b / t for b, t in zip(base, times)]
    return (f"{total:8,.0f} tokens/{unit}, {useful:8,.0f} trained/{unit}, {statistics.median(ratios):.2f}x padded "
            f"({min(ratios):.2f}-{max(ratios):.2f})")


def report(seconds: dict[str, dict[str, list[float]]], rounds: list[dict], real: list[int],
           device: torch.device) -> None:
    """Medians over the measurements; a ratio is per measurement (same conversations), then the median."""
    measured, real = rounds[1:], real[1:]
    trained = [int((r["padded"]["targets"] != IGNORE_INDEX).sum()) for r in measured]
    clocks = {"wall": "s", "cpu": "CPU-s"} if device.type == "cpu" else {"wall": "s"}  # GPU work is not CPU time
    base_positions = sum(r["padded"]["input_ids"].numel() for r in measured)
    for variant in seconds["wall"]:
        shapes = [tuple(r[variant]["input_ids"].shape) for r in measured]
        positions = [rows * width for rows, width in shapes]
        # What the speed-up would be if every position cost the same: a yardstick for the timings' noise.
        print(f"  {variant:>8}: {statistics.mean(s[0] for s in shapes):4.1f} rows x "
              f"{statistics.mean(s[1] for s in shapes):3.0f}, {1 - sum(real) / sum(positions):5.1%} padding, "
              f"{base_positions / sum(positions):.2f}x padded's speed if every position cost the same")
        for clock, unit in clocks.items():
            line = rates(seconds[clock][variant], seconds[clock]["padded"], positions, trained, unit)
            print(f"  {clock:>14}: {line}")
    print(f"  per measurement: {statistics.mean(trained):,.0f} trained tokens of {statistics.mean(real):,.0f} "
          f"real ones ({sum(trained) / sum(real):.1%} of real tokens are trained: the replies)")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_path", default=str(DEFAULT_DATA), help="a chat file (.jsonl/.json) in a supported format")
    p.add_argument("--data_format", default=None, help="minimind, sharegpt, openai or alpaca (default: detected)")
    p.add_argument("--num_conversations", type=int, default=1000, help="use the first N records of --data_path")
    p.add_argument("--token_repeats", type=int, default=3, help="fresh tokenizations timed (median)")
    p.add_argument("--preset", default="spongebob-29m", help="model preset")
    p.add_argument("--max_seq_len", type=int, default=512, help="row length; longer conversations are dropped")
    p.add_argument("--batch_size", type=int, default=16, help="conversations per measurement")
    p.add_argument("--repeats", type=int, default=3, help="timed measurements per variant (after one warm-up)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--dtype", default="auto", help="float32, bfloat16, float16 or auto (fp32 on CPU)")
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
        config, dtype = get_preset(args.preset), pick_dtype(args.dtype, device)
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
                              cache_root=work / "cache", show_progress=False)
    ds = SFTDataset(corpus.train, args.max_seq_len, seed=0)
    lengths = corpus.meta["lengths"]
    print(f"training rows: {ds.n_rows:,} train conversations of <= {args.max_seq_len + 1} tokens "
          f"({lengths['dropped_too_long']} over-long dropped, as sft.py does)")
    if ds.n_rows < (args.repeats + 1) * args.batch_size:
        sys.exit(f"error: {subset}: {ds.n_rows} usable conversations, {(args.repeats + 1) * args.batch_size} "
                 f"needed for --repeats {args.repeats} + 1 warm-up of --batch_size {args.batch_size}")
    epoch_padding(ds, args.max_seq_len)
    rounds, real = build_rounds(ds, args.batch_size, args.repeats + 1, args.max_seq_len)
    torch.manual_seed(0)
    model = SpongeBob(config).to(device)
    print(f"train step: {args.preset}, {str(dtype)[6:]}, eager, forward + backward + AdamW, {args.batch_size} "
          f"conversations per measurement, median of {args.repeats} interleaved measurements")
    check_mask(model, rounds[0]["packed"], device)
    report(time_interleaved(make_step(model, device, dtype), rounds, device), rounds, real, device)


if __name__ == "__main__":
    try:
        main()
    except DataError as e:
        sys.exit(f"error: {e}")
