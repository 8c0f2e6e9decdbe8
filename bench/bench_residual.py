"""The residual stream under bf16 autocast: fp32 (the embedding's output is fp32, and fp32 + bf16 stays
fp32 through every block) against bf16 (the embedding's output cast to bf16, as nanochat keeps it),
side by side: the same weights, data and order, the two engines taking turns step by step.

    python -m bench.bench_residual --preset spongebob-demo --steps 200           # held-out loss and tokens/s
    python -m bench.bench_residual --preset spongebob-29m --steps 12 --batch_size 8 --max_seq_len 512

The bf16 stream is made by a forward hook on the embedding (no change to the model's code), so
either result can be adopted by one line in model/model.py.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from itertools import islice
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_train import corpus_paths  # noqa: E402
from bench.device_info import describe_device  # noqa: E402
from bench.engine_step import LOSS, engine_step, make_engine  # noqa: E402
from common.device import autocast, pick_dtype  # noqa: E402
from dataset.pretokenize import pretokenize  # noqa: E402
from dataset.pretrain_dataset import PretrainDataset  # noqa: E402
from tokenizer import load_tokenizer  # noqa: E402
from trainer.engine import loss_normaliser  # noqa: E402


@torch.no_grad()
def held_out_loss(engine, val: PretrainDataset, batch_size: int) -> float:
    engine.model.eval()
    total = count = 0.0
    for batch in val.batches(batch_size, epoch=0):
        batch = engine.to_device(batch)
        with autocast(engine.device, engine.dtype):
            total += float(LOSS(engine.model(batch["input_ids"]), batch))
        count += float(loss_normaliser(batch))
    engine.model.train()
    return total / count


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="spongebob-demo", help="model preset")
    p.add_argument("--steps", type=int, default=200, help="optimizer steps of each engine")
    p.add_argument("--batch_size", type=int, default=16, help="rows per step")
    p.add_argument("--max_seq_len", type=int, default=256, help="tokens per row")
    p.add_argument("--learning_rate", type=float, default=2e-3, help="peak lr (both)")
    p.add_argument("--optimizer", default="muon", help="muon or adamw (both)")
    args = p.parse_args()
    device = torch.device("cpu")
    dtype = pick_dtype("auto", device)
    if dtype != torch.bfloat16:
        raise SystemExit("error: this CPU trains in fp32; the residual stream's dtype only matters under bf16")
    paths, source = corpus_paths()
    corpus = pretokenize(paths, load_tokenizer(), val_fraction=0.01, show_progress=False)
    train = PretrainDataset(corpus.train, args.max_seq_len, seed=0)
    val = PretrainDataset(corpus.val, args.max_seq_len, shuffle=False)
    engines = {}
    for stream in ("fp32", "bf16"):
        e = make_engine(args.preset, args.batch_size, args.max_seq_len, device, dtype, False, train,
                        f"out/bench/residual/{stream}", optimizer=args.optimizer, learning_rate=args.learning_rate,
                        min_lr=args.learning_rate / 10, warmup_steps=20, max_steps=args.steps, epochs=1000)
        if stream == "bf16":
            e.model.embed.register_forward_hook(lambda module, inputs, out: out.to(torch.bfloat16))
        engines[stream] = e
    seconds = {s: 0.0 for s in engines}
    stream = train.batches(args.batch_size, epoch=0)
    for batch in islice(stream, args.steps):
        for name, e in engines.items():
            start = time.perf_counter()
            engine_step(e, [batch])
            seconds[name] += time.perf_counter() - start
    tokens = args.steps * args.batch_size * args.max_seq_len
    print(f"device: {describe_device()}; {args.preset}, {args.steps} steps of {args.batch_size} x {args.max_seq_len}, "
          f"{args.optimizer} lr {args.learning_rate:g}; text: {source}")
    for name, e in engines.items():
        loss = held_out_loss(e, val, args.batch_size)
        print(f"  residual stream {name}: {tokens / seconds[name]:,.0f} tokens/s, held-out loss {loss:.4f} "
              f"(perplexity {math.exp(loss):.1f})")
    print(f"  bf16 / fp32 tokens/s: {seconds['fp32'] / seconds['bf16']:.3f}x")


if __name__ == "__main__":
    main()
