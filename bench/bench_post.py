"""Post-training costs, side by side in one run: LoRA against full SFT, and a DPO step against an SFT step.

    python -m bench.bench_post                     # the demo chain's checkpoints and data (after demo.sh)
    python -m bench.bench_post --sft_data ../shared/data/steel-llm-samples/train_3.5M_CN_sample.json \\
        --pref_data ../shared/data/llamafactory/dpo_zh_demo.json --init out/real/pretrain.pth --dpo_init out/real/sft.pth

1. LoRA vs full SFT: two engines (trainer/) start from the same --init and train on
   the same batches of --sft_data, taking turns step by step, each with its own
   learning rate (--full_lr, --lora_lr: LoRA needs a larger one). Reported: trainable
   parameters, the optimizer's state in bytes, the median step time, and the
   validation loss of both after --steps steps (the same validation batches).
2. DPO vs SFT: the same batches of --pref_data pairs (chosen and rejected rows in one
   forward) go through a DPO step (policy forward + backward, plus the frozen
   reference's forward without gradients) and an SFT step (the same forward +
   backward with plain cross-entropy on both replies). The ratio of their median
   step times is the price of the reference pass and the pair loss.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as `python bench/bench_post.py`: make the repo's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.device_info import describe_device
from dataset.demo import ensure_demo_corpus
from dataset.pref_dataset import PreferenceDataset
from dataset.sft_dataset import SFTDataset
from dataset.sft_tokenize import pretokenize_chat
from model import load_model
from model.lora import apply_lora, parse_targets
from tokenizer import load_tokenizer
from trainer import Trainer, parse_config
from trainer.device import pick_dtype
from trainer.distributed import DistInfo
from trainer.preference import PreferenceLoss


def engine(args: argparse.Namespace, init: str, data, val, lr: float, lora_rank: int = 0,
           loss_fn=None) -> Trainer:
    cfg = parse_config([], "bench", dict(batch_size=args.batch_size, accumulation_steps=1, max_seq_len=args.max_seq_len,
                                         out_dir=str(Path(args.work_dir) / "run"), learning_rate=lr, warmup_steps=1,
                                         device=args.device, epochs=1, compile=False, eval_batches=args.eval_batches))
    model, _ = load_model(init, tokenizer=load_tokenizer(), device=args.device)
    if lora_rank:
        apply_lora(model, lora_rank, 2.0 * lora_rank, 0.0, parse_targets(args.lora_target))
    return Trainer(cfg, model, data, val, {}, "bench", torch.device(args.device), args.dtype, DistInfo(),
                   loss_fn=loss_fn)


def optimizer_bytes(trainer: Trainer) -> int:
    return sum(t.numel() * t.element_size() for state in trainer.optimizer.state.values()
               for t in state.values() if torch.is_tensor(t))


def timed_steps(engines: dict[str, Trainer], batches: list, steps: int) -> dict[str, list[float]]:
    """Each engine takes each batch in turn; the first step of each is a warm-up and not timed."""
    times: dict[str, list[float]] = {name: [] for name in engines}
    for i, batch in enumerate(batches[:steps + 1]):
        for name, trainer in engines.items():
            prepared = trainer._prepare([batch])
            sync(trainer.device)
            start = time.perf_counter()
            stats = trainer.train_step(prepared[0], prepared[1])
            stats.cpu()  # wait for the step to finish
            if i:
                times[name].append(time.perf_counter() - start)
    return times


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def lora_vs_full(args: argparse.Namespace) -> None:
    tok = load_tokenizer()
    corpus = pretokenize_chat([args.sft_data], tok, args.max_seq_len, val_fraction=0.05, seed=0,
                              cache_root=Path(args.work_dir) / "cache", show_progress=False)
    train = SFTDataset(corpus.train, args.max_seq_len, seed=0, packing=args.packing)
    val = SFTDataset(corpus.val, args.max_seq_len, shuffle=False, packing=args.packing)
    engines = {"full": engine(args, args.init, train, val, args.full_lr),
               "lora": engine(args, args.init, train, val, args.lora_lr, args.lora_rank)}
    before = engines["full"].evaluate().get("val_loss")
    times = timed_steps(engines, list(train.batches(args.batch_size, epoch=0)), args.steps)
    print(f"\nLoRA vs full SFT: {args.sft_data}, from {args.init}, {args.steps} steps of {args.batch_size} x "
          f"{args.max_seq_len} (--packing {args.packing}); validation loss before: {before:.4f}")
    for name, trainer in engines.items():
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        base = sum(p.numel() for n, p in trainer.model.named_parameters() if "lora_" not in n)
        what = f"rank {args.lora_rank} on {args.lora_target}, lr {args.lora_lr:g}" if name == "lora" \
            else f"lr {args.full_lr:g}"
        print(f"  {name:>4} ({what}): {trainable:,} trainable ({trainable / base:.2%} of the model's {base:,}); "
              f"optimizer state {optimizer_bytes(trainer) / 2**20:,.1f} MiB; "
              f"step {statistics.median(times[name]):.3f} s (median); "
              f"val loss {trainer.evaluate()['val_loss']:.4f}")
    ratio = statistics.median(times["lora"]) / statistics.median(times["full"])
    print(f"  lora step / full step: {ratio:.2f}x")


def dpo_vs_sft(args: argparse.Namespace) -> None:
    tok = load_tokenizer()
    corpus = pretokenize_chat([args.pref_data], tok, args.max_seq_len, val_fraction=0.0, seed=0, pairs=True,
                              cache_root=Path(args.work_dir) / "cache", show_progress=False)
    pairs = PreferenceDataset(corpus.train, args.max_seq_len, seed=0, packing=args.packing)
    reference, _ = load_model(args.dpo_init, tokenizer=tok, device=args.device)
    reference.requires_grad_(False)

    def reference_logits(batch: dict) -> torch.Tensor:
        extra = {k: batch[k] for k in ("position_ids", "attn_mask") if k in batch}
        return reference(batch["input_ids"], **extra).logits

    dpo_loss = PreferenceLoss(reference_logits, "sigmoid", 0.1, 0.5, 0.0, args.batch_size)
    engines = {"dpo": engine(args, args.dpo_init, pairs, None, 1e-5, loss_fn=dpo_loss),
               "sft": engine(args, args.dpo_init, pairs, None, 1e-5)}
    times = timed_steps(engines, list(pairs.batches(args.batch_size, epoch=0)), args.steps)
    print(f"\nDPO vs SFT step on the same pairs: {args.pref_data}, {args.batch_size} pairs per step "
          f"(chosen and rejected in one forward), rows of {args.max_seq_len}, --packing {args.packing}")
    for name in engines:
        print(f"  {name}: step {statistics.median(times[name]):.3f} s (median of {len(times[name])})")
    print(f"  dpo step / sft step: {statistics.median(times['dpo']) / statistics.median(times['sft']):.2f}x "
          f"(the reference forward and the pair loss)")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sft_data", default=None, help="chat file for LoRA vs full (default: the demo's sft corpus)")
    p.add_argument("--pref_data", default=None, help="preference pairs for DPO vs SFT (default: the demo's pairs)")
    p.add_argument("--init", default="out/pretrain.pth", help="starting checkpoint of the LoRA/full comparison")
    p.add_argument("--dpo_init", default="out/sft.pth", help="starting checkpoint (and reference) of the DPO step")
    p.add_argument("--steps", type=int, default=30, help="timed steps of each variant (after one warm-up)")
    p.add_argument("--batch_size", type=int, default=8, help="rows (SFT) or pairs (DPO) per step")
    p.add_argument("--max_seq_len", type=int, default=512, help="row length")
    p.add_argument("--packing", default="group", help="none, group or pack (dataset/packing.py)")
    p.add_argument("--full_lr", type=float, default=5e-4, help="learning rate of full fine-tuning")
    p.add_argument("--lora_lr", type=float, default=2e-3, help="learning rate of the LoRA run")
    p.add_argument("--lora_rank", type=int, default=8, help="LoRA rank")
    p.add_argument("--lora_target", default="all", help="layers with adapters (model/lora.py)")
    p.add_argument("--eval_batches", type=int, default=10, help="validation batches for the loss")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--dtype", default="auto", help="float32, bfloat16, float16 or auto (bf16 where native)")
    p.add_argument("--only", choices=("lora", "dpo"), default=None, help="run one of the two comparisons")
    p.add_argument("--work_dir", default="out/bench/post", help="where token files and run folders go")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    for flag in ("init", "dpo_init"):
        if not Path(getattr(args, flag)).is_file():
            sys.exit(f"error: --{flag} {getattr(args, flag)}: no such checkpoint (run demo.sh, or pass --{flag})")
    try:
        args.dtype = pick_dtype(args.dtype, torch.device(args.device))
    except (ValueError, RuntimeError) as e:
        sys.exit(f"error: {e}")
    args.sft_data = args.sft_data or str(ensure_demo_corpus("sft"))
    args.pref_data = args.pref_data or str(ensure_demo_corpus("dpo"))
    print(f"device: {describe_device(args.device)}; dtype {str(args.dtype)[6:]}")
    print(f"command: python -m bench.bench_post {' '.join(sys.argv[1:])}".strip())
    if args.only in (None, "lora"):
        lora_vs_full(args)
    if args.only in (None, "dpo"):
        dpo_vs_sft(args)


if __name__ == "__main__":
    main()
