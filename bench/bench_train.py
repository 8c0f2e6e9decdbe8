"""Training throughput of the engine against plain baselines, side by side in one run.

    python -m bench.bench_train                       # CPU, 29M preset, seq 512
    python -m bench.bench_train --device cuda --batch_size 84

Four ways to train the same model config on the same real text, taking
turns step by step for --steps timed optimizer steps each, after a warm-up:
  engine       the engine's step (bench/engine_step.py) on packed rows (PretrainDataset) at --dtype
               (auto: bf16 where the hardware has it) and --compile (auto: on CUDA)
  engine-fp32  the same engine in fp32 and eager: what the engine did before bf16 on CPUs
  padded       the reference recipe: each document in its own row, truncated or
               padded to seq_len, a plain fp32 forward/backward/AdamW step, no compile
               (SpongeBob's and MiniMind's trainers, which ignore --dtype on a CPU)
  hf           transformers' LlamaForCausalLM on the same packed rows at --dtype (if installed)
"Useful" tokens/s counts only positions whose target is a real token, which
is what training progress depends on. Also reports loader time as a fraction
of the engine's step time, and MFU on a known GPU.
The text is real Chinese pretraining text from ../shared/data when present,
else the built-in demo corpus.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from bench.device_info import describe_device
from dataset.demo import ensure_demo_corpus
from dataset.pretokenize import pretokenize
from dataset.pretrain_dataset import PretrainDataset
from model import IGNORE_INDEX, SpongeBob, get_preset
from tokenizer import load_tokenizer
from bench.engine_step import engine_step, make_engine
from common.device import matmul_params, peak_flops, pick_compile, pick_dtype, step_flops
from model import token_loss

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_TEXT = ["steel-llm-samples/2021-31_zh_head_0000_sample.jsonl", "steel-llm-samples/part-010205-a894b46e_sample.jsonl",
             "steel-llm-samples/wikipedia-cn-20230720-filtered_sample.json", "luxun"]


def corpus_paths() -> tuple[list[str], str]:
    real = [str(SHARED / p) for p in REAL_TEXT if (SHARED / p).exists()]
    if real:
        return real, "real Chinese text from ../shared/data (" + ", ".join(REAL_TEXT) + ")"
    return [str(ensure_demo_corpus("pretrain"))], "the built-in demo corpus (../shared/data absent)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def padded_batches(tokens: np.ndarray, doc_starts: np.ndarray, seq_len: int, batch_size: int,
                   count: int) -> Iterator[dict[str, torch.Tensor]]:
    """The reference layout: one document per row, cut or padded to seq_len.
    Documents are drawn at random (seeded) so the rows are typical of the corpus."""
    ends = np.append(doc_starts[1:], len(tokens))
    picks = np.random.default_rng(0).permutation(len(doc_starts))
    for b in range(count):
        ids = torch.zeros(batch_size, seq_len + 1, dtype=torch.long)
        targets_mask = torch.zeros(batch_size, seq_len + 1, dtype=torch.bool)
        for i in range(batch_size):
            d = picks[(b * batch_size + i) % len(picks)]
            doc = torch.from_numpy(tokens[doc_starts[d]:ends[d]].astype(np.int64))[: seq_len + 1]
            ids[i, :len(doc)] = doc
            targets_mask[i, :len(doc)] = True
        targets = ids[:, 1:].masked_fill(~targets_mask[:, 1:], IGNORE_INDEX)
        yield {"input_ids": ids[:, :-1], "targets": targets}


def time_interleaved(variants: dict, steps: int, device: torch.device) -> dict[str, tuple[float, int, int]]:
    """{name: (seconds, positions, useful positions)} over `steps` timed steps per variant.

    The variants take turns step by step (after one warm-up step each), so a
    slow phase of the machine (another process, CPU frequency, allocator
    warm-up) costs all of them alike instead of whichever ran first.
    """
    for step_fn, batches in variants.values():
        step_fn(batches[0])
    totals = {name: [0.0, 0, 0] for name in variants}
    for i in range(1, steps + 1):
        for name, (step_fn, batches) in variants.items():
            batch = batches[i]
            synchronize(device)
            start = time.perf_counter()
            step_fn(batch)
            synchronize(device)
            totals[name][0] += time.perf_counter() - start
            totals[name][1] += batch[0]["input_ids"].numel()
            totals[name][2] += int((batch[0]["targets"] != IGNORE_INDEX).sum())
    return {name: tuple(t) for name, t in totals.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="spongebob-29m", help="model preset")
    p.add_argument("--seq_len", type=int, default=512, help="tokens per row")
    p.add_argument("--batch_size", type=int, default=8, help="rows per step")
    p.add_argument("--steps", type=int, default=3, help="timed optimizer steps per variant")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="auto", help="the engine's dtype: float32, bfloat16, float16 or auto")
    p.add_argument("--compile", default="auto", choices=("auto", "true", "false"),
                   help="torch.compile the engine (auto: on for CUDA)")
    p.add_argument("--skip_hf", action="store_true", help="do not run the transformers baseline")
    args = p.parse_args()
    device = torch.device(args.device)
    dtype = pick_dtype(args.dtype, device)
    compiled = pick_compile(None if args.compile == "auto" else args.compile == "true", device)
    paths, source = corpus_paths()
    corpus = pretokenize(paths, load_tokenizer(), show_progress=False)
    print(f"device: {describe_device(args.device)}")
    print(f"model {args.preset}, seq {args.seq_len}, batch {args.batch_size}; engine {str(dtype)[6:]}, "
          f"{'compiled' if compiled else 'eager'}; text: {source}")

    data = PretrainDataset(corpus.train, args.seq_len, seed=0)
    stream = data.batches(args.batch_size, epoch=0)
    load_start = time.perf_counter()
    packed = [[next(stream)] for _ in range(args.steps + 1)]
    load_s = (time.perf_counter() - load_start) / len(packed)
    variants = {"engine": (engine_variant(args, device, dtype, compiled, data), packed),
                "engine-fp32": (engine_variant(args, device, torch.float32, False, data), packed)}
    padded = [[b] for b in padded_batches(corpus.train.tokens, corpus.train.doc_starts, args.seq_len,
                                          args.batch_size, args.steps + 1)]
    variants["padded"] = (plain_step(args, device), padded)
    if not args.skip_hf:
        variants.update(hf_baseline(args, packed, device, dtype))
    report(time_interleaved(variants, args.steps, device), args, load_s, device)


def engine_variant(args: argparse.Namespace, device: torch.device, dtype: torch.dtype, compiled: bool,
                data: PretrainDataset):
    """The engine's step, for a given dtype and compile setting."""
    engine = make_engine(args.preset, args.batch_size, args.seq_len, device, dtype, compiled, data, "out/bench/train")
    return lambda micro: engine_step(engine, micro)


def plain_step(args: argparse.Namespace, device: torch.device):
    """The reference recipe's step: fp32, logits materialised, plain AdamW."""
    torch.manual_seed(0)
    plain = SpongeBob(get_preset(args.preset)).to(device)
    opt = torch.optim.AdamW(plain.parameters(), lr=1e-4)

    def step(micro: list[dict]) -> None:
        batch = {k: v.to(device) for k, v in micro[0].items()}
        token_loss(plain(batch["input_ids"]), batch["targets"]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def hf_baseline(args: argparse.Namespace, packed: list, device: torch.device, dtype: torch.dtype) -> dict:
    try:
        import transformers
    except ImportError:
        print("hf: transformers not installed, skipped")
        return {}
    from model.hf import hf_config_dict
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**hf_config_dict(get_preset(args.preset))))
    hf = hf.to(device).train()
    opt = torch.optim.AdamW(hf.parameters(), lr=1e-4)

    def hf_step(micro: list[dict]) -> None:
        ids = micro[0]["input_ids"].to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = hf(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return {"hf": (hf_step, packed)}


def report(results: dict, args: argparse.Namespace, load_s: float, device: torch.device) -> None:
    cfg = get_preset(args.preset)
    model = SpongeBob(cfg)
    n = matmul_params(model.num_parameters(), cfg.vocab_size, cfg.dim, cfg.tie_embeddings)
    peak, _ = peak_flops(device)
    useful_rate = {}
    for name, (seconds, positions, useful) in results.items():
        useful_rate[name] = useful / seconds
        rows = positions // args.seq_len
        flops = step_flops(n, cfg.n_layers, cfg.dim, positions, rows * args.seq_len * (args.seq_len + 1) // 2)
        mfu = f", MFU {100 * flops / seconds / peak:.1f}%" if peak else ""
        print(f"  {name:>11}: {positions / seconds:9,.0f} tokens/s, {useful / seconds:9,.0f} useful tokens/s "
              f"({100 * (1 - useful / positions):.1f}% padding){mfu}")
    for name in results:
        if name != "engine":
            print(f"  engine / {name}: {useful_rate['engine'] / useful_rate[name]:.2f}x useful tokens/s")
    step_s = results["engine"][0] / args.steps
    print(f"  loader: {1000 * load_s:.2f} ms per batch = {100 * load_s / step_s:.2f}% of the engine's "
          f"{step_s:.2f} s step")


if __name__ == "__main__":
    main()
