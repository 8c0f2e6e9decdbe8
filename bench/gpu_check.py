"""The GPU check, in one call: is the engine correct and fast on this GPU? (bench/gpu_check.sh runs it)

Sized for one H100/H200 in under 5 minutes, compiles included, on the machine's own torch.
Every section has its own time budget; a section that would not fit in what is left of the
total is skipped with a line saying so, and a failure is a line in the table, not fatal.
Each result is appended to <out>/gpu_check.md and <out>/gpu_check.jsonl the moment it is
measured, so a run cut short still leaves what it measured. Self-contained: the built-in demo
corpus (or real chats copied to bench/gpu_data/ by hand), no ../shared.

Sections, most wanted first:
  1. pretraining tokens/s and MFU, spongebob-29m at 84 x 512 bf16: eager, then compiled
  2. the largest batch that fits (the compiled step of 1, fed larger batches: one recompile)
  3. SFT rows: --packing none / group / pack (FlexAttention's block mask for pack)
  4. generation tokens/s at batch 1 with the KV cache
  5. DDP: a process group of one rank (nccl; gloo on CPU), one compiled step, gradients
     against the plain model's
  6. the reference recipe (one document per row padded to 512, materialised logits, plain
     AdamW, no compile: the SpongeBob/MiniMind trainers) against the engine
  7. bf16 against fp32 (TF32): the demo's loss over the same first steps
Timed batches are pinned beforehand and copied with non_blocking, as the engine's prefetch does.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_train import padded_batches  # noqa: E402
from bench.device_info import describe_device  # noqa: E402
from common.device import enable_tf32, peak_flops, step_flops  # noqa: E402
from dataset.demo import ensure_demo_corpus  # noqa: E402
from dataset.pretokenize import pretokenize  # noqa: E402
from dataset.pretrain_dataset import PretrainDataset  # noqa: E402
from dataset.sft_dataset import SFTDataset  # noqa: E402
from dataset.sft_tokenize import pretokenize_chat  # noqa: E402
from inference.generate import generate  # noqa: E402
from inference.sampling import SamplingConfig  # noqa: E402
from model import IGNORE_INDEX, SpongeBob, get_preset, token_loss  # noqa: E402
from tokenizer import load_tokenizer  # noqa: E402
from bench.engine_step import engine_step, make_engine  # noqa: E402
from trainer import Engine  # noqa: E402
from trainer.engine import batch_tokens  # noqa: E402
from trainer.loop import pin  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--smoke", action="store_true", help="every section on the CPU at toy sizes (tests)")
parser.add_argument("--out", default=os.environ.get("OUT", ""), help="folder for the results (default: $OUT)")
parser.add_argument("--budget", type=float, default=280.0, help="seconds for the whole check")
ARGS = parser.parse_args()
SMOKE = ARGS.smoke
DEVICE = torch.device("cpu" if SMOKE else "cuda")
BIG = "spongebob-tiny" if SMOKE else "spongebob-29m"
ROWS_84, SEQ, STEPS = (4, 64, 6) if SMOKE else (84, 512, 25)
# bf16 on the GPU; the smoke run's CPU may only emulate bf16 (slow), and it checks code paths, not speed.
DTYPE, DT = (torch.float32, "fp32") if SMOKE else (torch.bfloat16, "bf16")
HERE = Path(__file__).resolve().parent
OUT = Path(ARGS.out) if ARGS.out else None
ROWS: list[tuple[str, str]] = []  # (what, result) for the summary table
SHARED: dict = {}                 # the compiled pretraining engine, reused by later sections


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def row(what: str, result: str, section: str = "") -> None:
    """One result: printed, and appended to the markdown table and the json lines at once."""
    ROWS.append((what, result))
    print(f"{what}: {result}", flush=True)
    if OUT:
        with open(OUT / "gpu_check.md", "a") as f:
            f.write(f"| {what} | {result} |\n")
        with open(OUT / "gpu_check.jsonl", "a") as f:
            f.write(json.dumps({"section": section, "check": what, "result": result}, ensure_ascii=False) + "\n")


def graphs() -> int:
    """Graphs dynamo has compiled so far in this process (a recompile adds one)."""
    from torch._dynamo.utils import counters
    return int(counters["stats"]["unique_graphs"])


def engine(preset: str, batch: int, seq: int, dtype: torch.dtype, compile_: bool, data) -> Engine:
    return make_engine(preset, batch, seq, DEVICE, dtype, compile_ and not SMOKE, data, "out/gpu_check")


def timed_engine(t: Engine, batches: list, warmup: int, deadline: float) -> tuple[float, int, int, float]:
    """(seconds, real tokens, trained tokens, FLOPs) of engine steps over batches[warmup:], stopping early
    (after at least two) at the deadline. Batches are pinned first, off the clock, as the prefetch does."""
    prepared = [pin(b) if DEVICE.type == "cuda" else b for b in batches]
    tokens = [sum(batch_tokens(m)[0] for m in b) for b in batches]
    c = t.model.config
    flops = [sum(step_flops(t.matmul_n, c.n_layers, c.dim, *batch_tokens(m)) for m in b) for b in batches]
    trained = [int(sum((m["targets"] != IGNORE_INDEX).sum() for m in b)) for b in batches]
    for micro in prepared[:warmup]:
        engine_step(t, micro)
    sync()
    start, n = time.perf_counter(), 0
    for micro in prepared[warmup:]:
        engine_step(t, micro)
        n += 1
        if n >= 2 and time.perf_counter() > deadline:
            break
    sync()
    done = slice(warmup, warmup + n)
    return time.perf_counter() - start, sum(tokens[done]), sum(trained[done]), sum(flops[done])


def rate(t: Engine, seconds: float, tokens: int, flops: float) -> str:
    mfu = f", MFU {flops / seconds / t.peak_flops:.1%}" if t.peak_flops else ", MFU unknown peak"
    return f"{tokens / seconds:,.0f} tokens/s{mfu}"


def pretrain_data(seq: int) -> PretrainDataset:
    corpus = pretokenize([str(ensure_demo_corpus("pretrain"))], load_tokenizer(), show_progress=False)
    return PretrainDataset(corpus.train, seq, seed=0)


def take(data, batch: int, n: int) -> list:
    stream = data.batches(batch, epoch=0)
    return [[next(stream)] for _ in range(n)]


def check_pretrain(deadline: float) -> None:
    data = pretrain_data(SEQ)
    batches = take(data, ROWS_84, STEPS)
    for compile_ in (False, True):
        t = engine(BIG, ROWS_84, SEQ, DTYPE, compile_, data)
        warmup = 5 if compile_ else 2
        before = graphs()
        seconds, real, _, flops = timed_engine(t, batches, warmup, deadline if compile_ else time.perf_counter() + 20)
        note = f", {graphs() - before} graphs compiled" if compile_ and not SMOKE else ""
        row(f"pretrain {BIG} {ROWS_84}x{SEQ} {DT} {'compiled' if compile_ else 'eager'}",
            rate(t, seconds, real, flops) + note, "pretrain")
    SHARED.update(trainer=t, data=data)


def check_largest_batch(deadline: float) -> None:
    """The compiled engine of check_pretrain fed larger batches: the first new size recompiles with the
    batch dynamic, later ones reuse that graph, so the search costs one compile."""
    t, data = SHARED.get("trainer"), SHARED.get("data")
    if t is None:
        row("pretrain largest batch", "skipped: the compiled pretraining section did not finish", "largest")
        return
    best, failed, before = None, None, graphs()
    for batch in (8, 16) if SMOKE else (168, 336, 672):
        if time.perf_counter() > deadline:
            failed = f"{batch} not tried (section budget)"
            break
        try:
            seconds, real, _, flops = timed_engine(t, take(data, batch, 7), 2, deadline)
            best = (batch, rate(t, seconds, real, flops))
        except torch.OutOfMemoryError:
            failed = f"{batch} did not fit"
            break
        finally:
            for optimizer in t.optimizers:
                optimizer.zero_grad(set_to_none=True)
            if DEVICE.type == "cuda":
                torch.cuda.empty_cache()
    if best:
        row(f"pretrain {BIG} largest batch that fits x {SEQ}, compiled",
            f"batch {best[0]}: {best[1]}" + (f" ({failed})" if failed else "") +
            f"; {graphs() - before} graphs compiled for the new sizes", "largest")


def check_sft(deadline: float) -> None:
    real = sorted((HERE / "gpu_data").glob("*.json*")) if (HERE / "gpu_data").is_dir() else []
    paths = [str(p) for p in real] or [str(ensure_demo_corpus("sft"))]
    seq = 128 if SMOKE else 512
    corpus = pretokenize_chat(paths, load_tokenizer(), seq, val_fraction=0.0, cache_root=Path("out/gpu_check/cache"),
                              show_progress=False)
    rates: dict[str, float] = {}
    t = None
    share = (deadline - time.perf_counter()) / 3
    for mode in ("none", "group", "pack"):
        data = SFTDataset(corpus.train, seq, seed=0, packing=mode)
        t = t or engine(BIG, ROWS_84, seq, DTYPE, True, data)  # one engine: its graphs are shared
        batches = [[b] for _, b in zip(range(4 if SMOKE else 8), data.batches(ROWS_84, epoch=0))]
        seconds, _, trained, _ = timed_engine(t, batches, 2 if SMOKE else 3, time.perf_counter() + share)
        rates[mode] = trained / seconds
        row(f"SFT {BIG} batch {ROWS_84} x {seq} compiled, --packing {mode} "
            f"({'real chats' if real else 'demo dialogues'})",
            f"{rates[mode]:,.0f} trained tokens/s, {data.padding_share(ROWS_84):.1%} padding, "
            f"{rates[mode] / rates['none']:.2f}x none", "sft")


def check_generation(deadline: float) -> None:
    torch.manual_seed(0)
    model = SpongeBob(get_preset(BIG)).to(DEVICE).eval()
    prompt = list(range(7, 23))
    cfg = SamplingConfig(max_new_tokens=32 if SMOKE else 256, temperature=0)
    sum(1 for _ in generate(model, prompt, SamplingConfig(max_new_tokens=8, temperature=0)))
    sync()
    start = time.perf_counter()
    n = sum(1 for _ in generate(model, prompt, cfg))
    sync()
    row(f"generation {BIG} batch 1, KV cache, fp32", f"{n / (time.perf_counter() - start):,.0f} tokens/s",
        "generation")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_ddp(deadline: float) -> None:
    """DDP wrapped then compiled, as the engine does under torchrun, with one rank: the process group
    comes up, the step runs, and its gradients are the plain model's (one rank averages nothing)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    backend = "nccl" if DEVICE.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        plain = SpongeBob(get_preset("spongebob-tiny")).to(DEVICE)
        model = copy.deepcopy(plain)
        ddp = DistributedDataParallel(model, device_ids=[DEVICE.index or 0] if DEVICE.type == "cuda" else None,
                                      broadcast_buffers=False)
        step_model = ddp if SMOKE else torch.compile(ddp)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        idx = torch.randint(0, 6400, (4, 128), device=DEVICE)
        targets = torch.randint(0, 6400, (4, 128), device=DEVICE)
        loss = token_loss(step_model(idx), targets, reduction="sum")
        loss.backward()
        token_loss(plain(idx), targets, reduction="sum").backward()
        gap = max(float((a.grad - b.grad).abs().max() / b.grad.abs().max().clamp(min=1e-12))
                  for a, b in zip(model.parameters(), plain.parameters()))
        opt.step()
        finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
        row(f"DDP, 1 rank, {backend}, {'eager' if SMOKE else 'compiled'}, one fp32 step",
            f"loss {float(loss.detach()) / targets.numel():.4f}; gradients vs the plain model: largest relative gap "
            f"{gap:.1e}; weights {'finite' if finite else 'NOT FINITE'} after the update", "ddp")
    finally:
        dist.destroy_process_group()


def check_reference(deadline: float) -> None:
    corpus = pretokenize([str(ensure_demo_corpus("pretrain"))], load_tokenizer(), show_progress=False)
    padded = [[{k: v.pin_memory() if DEVICE.type == "cuda" else v for k, v in b.items()}]
              for b in padded_batches(corpus.train.tokens, corpus.train.doc_starts, SEQ, ROWS_84, 6 if SMOKE else 12)]
    torch.manual_seed(0)
    plain = SpongeBob(get_preset(BIG)).to(DEVICE)
    opt = torch.optim.AdamW(plain.parameters(), lr=1e-4)

    def plain_step(micro: list[dict]) -> None:
        b = {k: v.to(DEVICE, non_blocking=True) for k, v in micro[0].items()}
        with torch.autocast(DEVICE.type, dtype=DTYPE, enabled=DTYPE != torch.float32):
            loss = token_loss(plain(b["input_ids"]), b["targets"])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for b in padded[:2]:
        plain_step(b)
    sync()
    start = time.perf_counter()
    for b in padded[2:]:
        plain_step(b)
    sync()
    ref = sum(int((b[0]["targets"] != IGNORE_INDEX).sum()) for b in padded[2:]) / (time.perf_counter() - start)
    del plain, opt
    t = SHARED.get("trainer") or engine(BIG, ROWS_84, SEQ, DTYPE, True, pretrain_data(SEQ))
    seconds, _, trained, _ = timed_engine(t, take(SHARED.get("data") or pretrain_data(SEQ), ROWS_84, 6 if SMOKE else 12), 2,
                                         deadline)
    ours = trained / seconds
    row(f"engine vs reference recipe, trained tokens/s ({ROWS_84}x{SEQ})", f"{ours:,.0f} vs {ref:,.0f}: "
        f"{ours / ref:.2f}x", "reference")


def check_precision(deadline: float) -> None:
    data = pretrain_data(64 if SMOKE else 256)
    batches = take(data, 4 if SMOKE else 16, 2 if SMOKE else 20)
    losses = {}
    for dtype in (torch.float32, torch.bfloat16):
        t = engine("spongebob-tiny" if SMOKE else "spongebob-demo", 4 if SMOKE else 16, 64 if SMOKE else 256, dtype,
                   False, data)
        losses[dtype] = [(lambda s: float(s[0] / s[1]))(engine_step(t, b)) for b in batches]  # summed loss / count
    gap = max(abs(a - b) / abs(a) for a, b in zip(losses[torch.float32], losses[torch.bfloat16]))
    row(f"bf16 vs fp32 (TF32), demo, {len(batches)} steps", f"last loss {losses[torch.float32][-1]:.4f} vs "
        f"{losses[torch.bfloat16][-1]:.4f}; largest relative gap over the steps {gap:.2%}", "precision")


# (section, its own budget in seconds on an H100/H200, compiles included), most wanted first
SECTIONS: list[tuple[Callable[[float], None], float]] = [
    (check_pretrain, 90), (check_largest_batch, 50), (check_sft, 75), (check_generation, 10),
    (check_ddp, 30), (check_reference, 25), (check_precision, 20)]


def main() -> None:
    if not SMOKE and not torch.cuda.is_available():
        sys.exit("error: bench/gpu_check.py needs a CUDA GPU (--smoke runs it on the CPU at toy sizes)")
    began = time.perf_counter()
    enable_tf32(DEVICE)
    peak, _ = peak_flops(DEVICE)
    where = describe_device(DEVICE.type)
    print(f"device: {where}; peak {peak / 1e12:.0f} TFLOP/s" if peak else f"device: {where}; unknown peak (no MFU)")
    if OUT:
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "gpu_check.md").write_text(f"{where}\n\n| check | result |\n|---|---|\n")
        (OUT / "gpu_check.jsonl").write_text(json.dumps({"device": where, "smoke": SMOKE}) + "\n")
    for section, need in SECTIONS:
        name = section.__name__
        left = ARGS.budget - (time.perf_counter() - began)
        if left < need:
            row(name, f"skipped: {max(left, 0):.0f} s left of the {ARGS.budget:.0f} s budget, the section needs {need:.0f} s",
                name)
            continue
        start = time.perf_counter()
        try:
            section(start + need)
        except Exception as e:  # report and go on: one broken section must not hide the others
            if OUT:  # the whole traceback to a file, for the one GPU run there may be; one line here
                with open(OUT / "gpu_check_errors.txt", "a") as f:
                    f.write(f"--- {name}\n{traceback.format_exc()}\n")
            row(name, f"FAILED: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}", name)
        print(f"  ({name}: {time.perf_counter() - start:.0f} s of its {need:.0f} s)", flush=True)
        if DEVICE.type == "cuda":
            torch.cuda.empty_cache()
    table = "\n".join(["| check | result |", "|---|---|"] + [f"| {w} | {r} |" for w, r in ROWS])
    print(f"\n{where} ({time.perf_counter() - began:.0f} s)\n\n{table}")


if __name__ == "__main__":
    main()
