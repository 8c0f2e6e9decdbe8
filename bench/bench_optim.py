"""Time to loss: held-out bits per byte against tokens and seconds, for AdamW + cosine (MiniMind's
recipe and this project's old default), Muon + cosine and Muon + warmup-stable-decay.

    python -m bench.bench_optim --preset spongebob-demo --steps 200
    python -m bench.bench_optim --preset spongebob-29m --steps 600 --batch_size 8 --max_seq_len 512 \\
        --arms adamw-cosine@5e-4,muon-wsd@2e-3

Every arm trains the same model from the same seed on the same real text (../shared/data's web text
and Lu Xun; the demo corpus if it is absent), in the same order, with the engine itself
(trainer/loop.py's fit), one arm after the other in this one process. The held-out text is the
corpus's validation split (a fixed, seeded share of the documents, never trained on), scored whole
every --eval_every steps; bits per byte = summed nats / (ln 2 x its UTF-8 bytes), so any tokenizer
would compare. Seconds: the arms run one after the other, so their own clocks would compare a quiet
minute with a busy one; instead each optimizer's seconds per step are timed afterwards, the
optimizers taking turns step by step (--timing_rounds), and an arm's seconds are its steps times that.

Printed: each arm's curve, then the tokens (and seconds) each arm needs to reach AdamW's final
held-out loss, interpolated between evaluations; the last line is the best arm's tokens over
AdamW's: `token ratio to AdamW's final loss: <x>` (lower is better).
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import time
from itertools import islice
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_train import corpus_paths  # noqa: E402
from bench.engine_step import engine_step, make_engine  # noqa: E402
from bench.device_info import describe_device  # noqa: E402
from common.device import pick_dtype  # noqa: E402
from dataset.pretokenize import pretokenize  # noqa: E402
from dataset.pretrain_dataset import PretrainDataset  # noqa: E402
from model import SpongeBob  # noqa: E402
from tokenizer import load_tokenizer  # noqa: E402
from trainer import Engine, StageData, parse_config  # noqa: E402
from trainer.distributed import DistInfo  # noqa: E402
from trainer.loop import fit  # noqa: E402
from trainer.run import model_config  # noqa: E402

OUT = REPO / "out" / "bench" / "optim"


def parse_arm(text: str) -> tuple[str, str, float, dict]:
    """'muon-wsd@2e-3' -> ('muon', 'wsd', 0.002, {}); more TrainConfig values may follow after colons:
    'muon-wsd@2e-3:embedding_lr_scale=3' -> (..., {'embedding_lr_scale': 3.0})."""
    head, *extra = text.split(":")
    name, _, lr = head.partition("@")
    optimizer, _, schedule = name.partition("-")
    options = {key: float(value) for key, _, value in (item.partition("=") for item in extra)}
    return optimizer, schedule or "cosine", float(lr), options


def train_arm(arm: str, args: argparse.Namespace, corpus, device: torch.device, dtype: torch.dtype) -> list[dict]:
    """One arm through the engine; its rows with a validation: step, tokens, seconds, val_loss."""
    optimizer, schedule, lr, options = parse_arm(arm)
    out = OUT / arm.replace("@", "_").replace(":", "_").replace("=", "")
    shutil.rmtree(out, ignore_errors=True)
    values = dict(preset=args.preset, batch_size=args.batch_size, accumulation_steps=1, max_seq_len=args.max_seq_len,
                  max_steps=args.steps, epochs=1000, learning_rate=lr, min_lr=lr / 10, warmup_steps=args.warmup,
                  optimizer=optimizer, lr_schedule=schedule, decay_fraction=args.decay_fraction, out_dir=str(out),
                  eval_interval=args.eval_every, log_interval=args.eval_every, save_interval=10 ** 9, seed=0,
                  device=device.type, compile=False, eval_batches=10 ** 6) | options
    cfg = parse_config([], "bench", values)
    torch.manual_seed(0)
    model = SpongeBob(model_config(cfg, corpus.meta["tokenizer"]["vocab_size"]))
    train = PretrainDataset(corpus.train, args.max_seq_len, seed=0)
    val = PretrainDataset(corpus.val, args.max_seq_len, shuffle=False)
    data = StageData(train, val, "bench", "bench")
    engine = Engine(cfg, model, "pretrain", device, dtype, DistInfo(), data.steps_per_epoch(args.batch_size, 1,
                                                                                               args.max_seq_len), {})
    fit(engine, data, None)
    rows = [json.loads(line) for line in (out / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    return [{"step": r["step"], "tokens": r["tokens"], "val_loss": r["val_loss"]} for r in rows if "val_loss" in r]


def step_seconds(optimizers: list[str], args: argparse.Namespace, corpus, device: torch.device,
                 dtype: torch.dtype) -> dict[str, float]:
    """The median seconds of one training step per optimizer, the optimizers taking turns step by
    step on the same batches (after one untimed warm-up step each)."""
    data = PretrainDataset(corpus.train, args.max_seq_len, seed=0)
    batches = list(islice(data.batches(args.batch_size, epoch=0), args.timing_rounds + 1))
    engines = {name: make_engine(args.preset, args.batch_size, args.max_seq_len, device, dtype, False, data,
                                 str(OUT / f"timing_{name}"), optimizer=name) for name in optimizers}
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    for i, batch in enumerate(batches):
        for name, engine in engines.items():
            start = time.perf_counter()
            engine_step(engine, [batch])[0].item()  # .item(): wait for the device
            if i > 0:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def reach(rows: list[dict], target: float, key: str) -> float | None:
    """The tokens (or seconds) at which an arm's held-out loss first reaches target, linearly
    interpolated between its evaluations; None when it never does."""
    previous = {"tokens": 0, "seconds": 0.0, "val_loss": math.inf}
    for row in rows:
        if row["val_loss"] <= target:
            if not math.isfinite(previous["val_loss"]):
                return row[key]
            share = (previous["val_loss"] - target) / (previous["val_loss"] - row["val_loss"])
            return previous[key] + share * (row[key] - previous[key])
        previous = row
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="spongebob-demo", help="model preset")
    p.add_argument("--steps", type=int, default=200, help="optimizer steps per arm")
    p.add_argument("--batch_size", type=int, default=16, help="rows per step")
    p.add_argument("--max_seq_len", type=int, default=256, help="tokens per row")
    p.add_argument("--arms", default="adamw-cosine@2e-3,muon-cosine@4e-3,muon-wsd@4e-3",
                   help="comma list of optimizer-schedule@peak_lr[:flag=value...]; the first is the baseline")
    p.add_argument("--warmup", type=int, default=20, help="warmup steps of every arm")
    p.add_argument("--decay_fraction", type=float, default=0.3,
                   help="wsd arms: the share of the steps that decay (the engine's default)")
    p.add_argument("--eval_every", type=int, default=0, help="steps between held-out evaluations (0: steps / 10)")
    p.add_argument("--timing_rounds", type=int, default=10, help="timed steps per optimizer, taking turns")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    args = p.parse_args()
    args.eval_every = args.eval_every or max(1, args.steps // 10)
    device = torch.device(args.device)
    dtype = pick_dtype("auto", device)
    paths, source = corpus_paths()
    tok = load_tokenizer()
    corpus = pretokenize(paths, tok, val_fraction=0.01, show_progress=False)
    val_bytes = len(tok.decode(corpus.val.tokens.tolist(), skip_special_tokens=True).encode("utf-8"))
    val_targets = corpus.val.n_tokens - 1  # every held-out token but the first is predicted once
    print(f"device: {describe_device(args.device)}, {str(dtype)[6:]}")
    print(f"text: {source}; held out: {corpus.val.n_docs:,} documents, {corpus.val.n_tokens:,} tokens, "
          f"{val_bytes / 1e6:.2f} MB")
    print(f"{args.preset}, {args.steps} steps of {args.batch_size} x {args.max_seq_len} tokens, warmup {args.warmup}")
    bpb = {}
    for arm in args.arms.split(","):
        rows = train_arm(arm, args, corpus, device, dtype)
        for row in rows:
            row["bpb"] = row["val_loss"] * val_targets / (math.log(2) * val_bytes)
        bpb[arm] = rows
        print(f"{arm}: " + ", ".join(f"{r['step']}: {r['bpb']:.4f}" for r in rows), flush=True)
    per_step = step_seconds(sorted({parse_arm(arm)[0] for arm in bpb}), args, corpus, device, dtype)
    print("seconds per step, taking turns: " + ", ".join(f"{k} {v:.3f}" for k, v in per_step.items()))
    for arm, rows in bpb.items():
        for row in rows:
            row["seconds"] = row["step"] * per_step[parse_arm(arm)[0]]
    baseline, *others = list(bpb)
    final = bpb[baseline][-1]
    print(f"\nto reach {baseline}'s final {final['bpb']:.4f} bits/byte ({final['tokens']:,} tokens, "
          f"{final['seconds']:.0f} s):")
    best = None
    for arm in others:
        tokens = reach(bpb[arm], final["val_loss"], "tokens")
        seconds = reach(bpb[arm], final["val_loss"], "seconds")
        if tokens is None or seconds is None:
            print(f"  {arm}: not reached (final {bpb[arm][-1]['bpb']:.4f})")
            continue
        print(f"  {arm}: {tokens:,.0f} tokens ({tokens / final['tokens']:.3f}x), {seconds:.0f} s "
              f"({seconds / final['seconds']:.3f}x); its final {bpb[arm][-1]['bpb']:.4f}")
        best = tokens if best is None else min(best, tokens)
    print(f"token ratio to AdamW's final loss: {best / final['tokens']:.3f}" if best is not None else
          "token ratio to AdamW's final loss: not reached")


if __name__ == "__main__":
    main()
