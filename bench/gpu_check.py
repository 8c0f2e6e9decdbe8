"""The GPU check, in one call: is the engine correct and fast on this GPU? (bench/gpu_check.sh runs it)

Sized for one H100/H200 in under 6 minutes. Each section is timed on its own and a
failure in one is reported in the table, not fatal. Self-contained: it needs no
../shared (the built-in demo corpus, or real chats copied to bench/gpu_data/ by
hand) and runs on whatever torch the GPU machine has.

  1. bf16 vs fp32 (TF32): the demo's loss over the same first steps, side by side
  2. pretraining tokens/s and MFU at 84 x 512: eager vs compiled, then compiled at
     the largest batch that fits
  3. the reference recipe (one document per row padded to 512, materialised fp32
     logits, plain AdamW, no compile, bf16 autocast: the SpongeBob/MiniMind trainers)
     against the engine, in trained tokens/s
  4. SFT rows: none / group / pack at batch 84 (FlexAttention's block mask for pack)
  5. generation: tokens/s at batch 1 with the KV cache
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_train import padded_batches  # noqa: E402
from bench.device_info import describe_device  # noqa: E402
from dataset.demo import ensure_demo_corpus  # noqa: E402
from dataset.pretokenize import pretokenize  # noqa: E402
from dataset.pretrain_dataset import PretrainDataset  # noqa: E402
from dataset.sft_dataset import SFTDataset  # noqa: E402
from dataset.sft_tokenize import pretokenize_chat  # noqa: E402
from inference.generate import SamplingConfig, generate  # noqa: E402
from model import IGNORE_INDEX, SpongeBob, get_preset  # noqa: E402
from tokenizer import load_tokenizer  # noqa: E402
from trainer import Trainer, parse_config  # noqa: E402
from common.device import enable_tf32, peak_flops  # noqa: E402
from trainer.distributed import DistInfo  # noqa: E402

# `--smoke` runs every section on the CPU at toy sizes (tests/test_gpu_check.py), so the script's
# own code is exercised before it meets a GPU.
SMOKE = "--smoke" in sys.argv
DEVICE = torch.device("cpu" if SMOKE else "cuda")
BIG = "spongebob-tiny" if SMOKE else "spongebob-29m"
ROWS_84, SEQ, STEPS = (4, 64, 8) if SMOKE else (84, 512, 25)
HERE = Path(__file__).resolve().parent
ROWS: list[tuple[str, str]] = []  # (what, result) for the summary table


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def row(what: str, result: str) -> None:
    ROWS.append((what, result))
    print(f"{what}: {result}", flush=True)


def engine(preset: str, batch: int, seq: int, dtype: torch.dtype, compile_: bool, data) -> Trainer:
    cfg = parse_config([], "gpu", dict(preset=preset, batch_size=batch, accumulation_steps=1, max_seq_len=seq,
                                       compile=compile_ and not SMOKE, out_dir="out/gpu_check", warmup_steps=1,
                                       device=DEVICE.type, epochs=1))
    torch.manual_seed(0)
    return Trainer(cfg, SpongeBob(get_preset(preset)), data, None, {}, "gpu", DEVICE, dtype, DistInfo())


def timed_steps(step_fn, batches: list, warmup: int) -> tuple[float, int, int]:
    """(seconds, real tokens, trained tokens) over batches[warmup:], after warmup steps."""
    for b in batches[:warmup]:
        step_fn(b)
    sync()
    start = time.perf_counter()
    for b in batches[warmup:]:
        step_fn(b)
    sync()
    seconds = time.perf_counter() - start
    real = sum(int(b[0].get("seq_lens", torch.tensor(b[0]["input_ids"].numel())).sum()) for b in batches[warmup:])
    trained = sum(int((b[0]["targets"] != IGNORE_INDEX).sum()) for b in batches[warmup:])
    return seconds, real, trained


def mfu(t: Trainer, seconds: float, batches: list) -> float | None:
    flops = sum(t._prepare(b)[2] for b in batches)
    return flops / seconds / t.peak_flops if t.peak_flops else None


def pretrain_data(seq: int) -> PretrainDataset:
    corpus = pretokenize([str(ensure_demo_corpus("pretrain"))], load_tokenizer(), show_progress=False)
    return PretrainDataset(corpus.train, seq, seed=0)


def check_precision() -> None:
    data = pretrain_data(256)
    batches = [[b] for _, b in zip(range(4 if SMOKE else 20), data.batches(16, epoch=0))]
    losses = {}
    for dtype in (torch.float32, torch.bfloat16):
        t = engine("spongebob-tiny" if SMOKE else "spongebob-demo", 16, 256, dtype, False, data)
        losses[dtype] = [(lambda s: float(s[0] / s[1]))(t.train_step(b)) for b in batches]  # summed loss / count
    gap = max(abs(a - b) / abs(a) for a, b in zip(losses[torch.float32], losses[torch.bfloat16]))
    row("bf16 vs fp32 (TF32), demo, 20 steps", f"last loss {losses[torch.float32][-1]:.4f} vs "
        f"{losses[torch.bfloat16][-1]:.4f}; largest relative gap over the steps {gap:.2%}")


def check_pretrain() -> None:
    data = pretrain_data(SEQ)
    stream = data.batches(ROWS_84, epoch=0)
    batches = [[next(stream)] for _ in range(STEPS)]
    for compile_ in (False, True):
        t = engine(BIG, ROWS_84, SEQ, torch.bfloat16, compile_, data)
        seconds, real, _ = timed_steps(lambda b: t.train_step(b), batches, warmup=5 if compile_ else 2)
        m = mfu(t, seconds, batches[5 if compile_ else 2:])
        row(f"pretrain {BIG} {ROWS_84}x{SEQ} bf16 {'compiled' if compile_ else 'eager'}",
            f"{real / seconds:,.0f} tokens/s" + (f", MFU {m:.1%}" if m else ", MFU unknown peak"))
    best = None
    for batch in (8, 16) if SMOKE else (168, 336, 672):
        try:
            stream = data.batches(batch, epoch=0)
            big = [[next(stream)] for _ in range(10)]
            t = engine(BIG, batch, SEQ, torch.bfloat16, True, data)
            seconds, real, _ = timed_steps(lambda b: t.train_step(b), big, warmup=4)
            best = (batch, real / seconds, mfu(t, seconds, big[4:]))
            t = None  # free the model before trying a larger batch
            if DEVICE.type == "cuda":
                torch.cuda.empty_cache()
        except torch.OutOfMemoryError:
            break
    if best:
        row(f"pretrain {BIG} largest batch that fits x {SEQ}, compiled",
            f"batch {best[0]}: {best[1]:,.0f} tokens/s" + (f", MFU {best[2]:.1%}" if best[2] else ""))


def check_reference() -> None:
    data = pretrain_data(SEQ)
    corpus = pretokenize([str(ensure_demo_corpus("pretrain"))], load_tokenizer(), show_progress=False)
    padded = [[b] for b in padded_batches(corpus.train.tokens, corpus.train.doc_starts, SEQ, ROWS_84, 12)]
    torch.manual_seed(0)
    plain = SpongeBob(get_preset(BIG)).to(DEVICE)
    opt = torch.optim.AdamW(plain.parameters(), lr=1e-4)

    def plain_step(micro: list[dict]) -> None:
        b = {k: v.to(DEVICE) for k, v in micro[0].items()}
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            loss = plain(b["input_ids"], targets=b["targets"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    ref_s, _, ref_trained = timed_steps(plain_step, padded, warmup=2)
    stream = data.batches(ROWS_84, epoch=0)
    packed = [[next(stream)] for _ in range(12)]
    t = engine(BIG, ROWS_84, SEQ, torch.bfloat16, True, data)
    eng_s, _, eng_trained = timed_steps(lambda b: t.train_step(b), packed, warmup=4)
    row(f"engine vs reference recipe, trained tokens/s ({ROWS_84}x{SEQ})",
        f"{eng_trained / eng_s:,.0f} vs {ref_trained / ref_s:,.0f}: {eng_trained / eng_s / (ref_trained / ref_s):.2f}x")


def check_sft() -> None:
    real = sorted((HERE / "gpu_data").glob("*.json*")) if (HERE / "gpu_data").is_dir() else []
    paths = [str(p) for p in real] or [str(ensure_demo_corpus("sft"))]
    seq = 256 if SMOKE else 512
    corpus = pretokenize_chat(paths, load_tokenizer(), seq, val_fraction=0.0, cache_root=Path("out/gpu_check/cache"),
                              show_progress=False)
    rates = {}
    for mode in ("none", "group", "pack"):
        data = SFTDataset(corpus.train, seq, seed=0, packing=mode)
        batches = [[b] for _, b in zip(range(8), data.batches(ROWS_84, epoch=0))]
        t = engine(BIG, ROWS_84, seq, torch.bfloat16, True, data)
        seconds, _, trained = timed_steps(lambda b: t.train_step(b), batches, warmup=3)
        rates[mode] = trained / seconds
        row(f"SFT {BIG} batch {ROWS_84} x {seq} compiled, --packing {mode} "
            f"({'real chats' if real else 'demo dialogues'})",
            f"{rates[mode]:,.0f} trained tokens/s, {data.padding_share(ROWS_84):.1%} padding, "
            f"{rates[mode] / rates['none']:.2f}x none")


def check_generation() -> None:
    torch.manual_seed(0)
    model = SpongeBob(get_preset(BIG)).to(DEVICE).eval()
    prompt = list(range(7, 23))
    cfg = SamplingConfig(max_new_tokens=32 if SMOKE else 256, temperature=0)
    sum(1 for _ in generate(model, prompt, SamplingConfig(max_new_tokens=8, temperature=0)))
    sync()
    start = time.perf_counter()
    n = sum(1 for _ in generate(model, prompt, cfg))
    sync()
    row(f"generation {BIG} batch 1, KV cache, fp32", f"{n / (time.perf_counter() - start):,.0f} tokens/s")


def main() -> None:
    if not SMOKE and not torch.cuda.is_available():
        sys.exit("error: bench/gpu_check.py needs a CUDA GPU (--smoke runs it on the CPU at toy sizes)")
    enable_tf32(DEVICE)
    peak, _ = peak_flops(DEVICE)
    where = describe_device(DEVICE.type)
    print(f"device: {where}; peak {peak / 1e12:.0f} TFLOP/s" if peak else f"device: {where}; unknown peak (no MFU)")
    sections = [check_precision, check_pretrain, check_reference, check_sft, check_generation]
    for section in sections:
        start = time.perf_counter()
        try:
            section()
        except Exception as e:  # report and go on: one broken section must not hide the others
            traceback.print_exc()
            row(section.__name__, f"FAILED: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        print(f"  ({section.__name__}: {time.perf_counter() - start:.0f} s)", flush=True)
    table = "\n".join(["| check | result |", "|---|---|"] + [f"| {w} | {r} |" for w, r in ROWS])
    print(f"\n{where}\n\n{table}")
    out = os.environ.get("OUT")
    if out:
        Path(out, "gpu_check.md").write_text(f"{where}\n\n{table}\n")
        Path(out, "gpu_check.json").write_text(json.dumps(ROWS, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
