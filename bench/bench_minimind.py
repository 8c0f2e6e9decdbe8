"""MiniMind's own pretraining trainer against ours, side by side: trained tokens/s on the same data,
the same model shape and the same device.

    python bench/bench_minimind.py --minimind_dir ../minimind [--steps 20 --batch_size 16 --max_seq_len 512]

The MiniMind checkout stays outside this repository and is run as it is (its trainer/train_pretrain.py
as a subprocess, in its own Python: --minimind_python, which needs its requirements, e.g. transformers
and datasets). Nothing of it is copied here.

Fairness:
  - one jsonl of {"text"} written to a temp folder, read by both (the demo corpus, or --data);
  - their 512 x 8 config (8 heads, 4 KV heads, FFN 1664, tied head: ~26M) against our
    spongebob-29m-tied (512 x 8, tied head); both parameter counts are printed;
  - bf16 autocast on CUDA for both; fp32 on a CPU (MiniMind's CPU path has no autocast);
    --compile applies to both (MiniMind's --use_compile);
  - start-up (imports, tokenizing, model build, the final checkpoint) is not counted: each trainer
    runs N and then 2N steps, in turns (theirs N, ours N, theirs 2N, ours 2N), and the rate is the
    extra N steps' tokens over the extra time.
Trained tokens: theirs pads one document per row, so a row trains only its document's tokens (counted
with their tokenizer); ours packs rows full, so every position trains.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.device_info import describe_device  # noqa: E402


def texts(path: Path | None) -> list[str]:
    if path is None:
        from dataset.demo import ensure_demo_corpus
        path = ensure_demo_corpus("pretrain")
    with open(path, encoding="utf-8") as f:
        found = [json.loads(line)["text"] for line in f if line.strip()]
    if not found:
        raise SystemExit(f"error: no {{\"text\"}} rows in {path}")
    return found


def write_rows(docs: list[str], n: int, path: Path) -> list[str]:
    rows = list(itertools.islice(itertools.cycle(docs), n))
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in rows), encoding="utf-8")
    return rows


def their_trained_tokens(minimind: Path, rows: list[str], seq: int) -> float:
    """Mean trained tokens per row in MiniMind's PretrainDataset: bos + text + eos, cut to seq, then
    labels shifted by one inside the model; padding is -100."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(minimind / "model" / "tokenizer.json"))
    lengths = [min(len(tok.encode(t, add_special_tokens=False).ids), seq - 2) + 2 for t in rows]
    return sum(n - 1 for n in lengths) / len(lengths)


def run(command: list[str], cwd: Path, env: dict, what: str) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise SystemExit(f"error: {what} failed (exit {done.returncode}): {tail[0][:300]}")
    return seconds, done.stdout + done.stderr


def theirs(args, data: Path, work: Path, steps: int) -> tuple[float, str]:
    # Their trainer reads its tokenizer from ../model and writes ../checkpoints relative to the working
    # folder: give it a folder whose ../model is theirs and whose ../checkpoints is ours to throw away.
    cwd = work / "minimind" / "run"
    cwd.mkdir(parents=True, exist_ok=True)
    if not (work / "minimind" / "model").exists():
        (work / "minimind" / "model").symlink_to(args.minimind_dir / "model")
    device = "cuda:0" if args.device == "cuda" else "cpu"
    command = [args.minimind_python, str(args.minimind_dir / "trainer" / "train_pretrain.py"),
               "--data_path", str(data), "--epochs", "1", "--batch_size", str(args.batch_size),
               "--max_seq_len", str(args.max_seq_len), "--accumulation_steps", "1", "--hidden_size", "512",
               "--num_hidden_layers", "8", "--device", device, "--dtype", "bfloat16",
               "--num_workers", str(args.num_workers), "--log_interval", str(10 ** 9),
               "--save_interval", str(10 ** 9), "--save_dir", str(work / "minimind" / f"out{steps}"),
               "--use_compile", "1" if args.compile == "true" else "0"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [args.minimind_pythonpath,
                                                                      os.environ.get("PYTHONPATH")])))
    return run(command, cwd, env, f"MiniMind's train_pretrain.py ({steps} steps)")


def ours(args, data: Path, work: Path, steps: int) -> tuple[float, str]:
    command = [sys.executable, str(REPO / "pretrain.py"), "--data_path", str(data),
               "--preset", "spongebob-29m-tied", "--batch_size", str(args.batch_size),
               "--max_seq_len", str(args.max_seq_len), "--accumulation_steps", "1", "--epochs", "1000",
               "--max_steps", str(steps), "--device", args.device,
               "--dtype", "bfloat16" if args.device == "cuda" else "float32", "--val_fraction", "0",
               "--eval_interval", "0", "--log_interval", str(steps), "--save_interval", str(10 ** 9),
               "--out_dir", str(work / f"ours{steps}")]
    if args.compile != "auto":
        command += ["--compile", args.compile]
    return run(command, REPO, dict(os.environ), f"our pretrain.py ({steps} steps)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minimind_dir", type=Path, required=True, help="a MiniMind checkout (outside this repo)")
    p.add_argument("--minimind_python", default=sys.executable, help="the Python that has MiniMind's requirements")
    p.add_argument("--minimind_pythonpath", default="", help="extra PYTHONPATH for MiniMind's Python")
    p.add_argument("--data", type=Path, default=None, help="a jsonl of {\"text\"} (default: the demo corpus)")
    p.add_argument("--steps", type=int, default=20, help="N: each trainer runs N, then 2N steps")
    p.add_argument("--batch_size", type=int, default=16, help="rows per step, the same in both trainers")
    p.add_argument("--max_seq_len", type=int, default=512, help="tokens per row, the same in both trainers")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"],
                   help="where both trainers run (auto: cuda if there is one)")
    p.add_argument("--compile", default="auto", choices=["auto", "true", "false"],
                   help="torch.compile in both (auto: ours on CUDA, theirs off, each trainer's default)")
    p.add_argument("--num_workers", type=int, default=min(8, os.cpu_count() or 1), help="MiniMind's loader")
    args = p.parse_args()
    args.minimind_dir = args.minimind_dir.resolve()
    if not (args.minimind_dir / "trainer" / "train_pretrain.py").is_file():
        raise SystemExit(f"error: {args.minimind_dir} has no trainer/train_pretrain.py (a MiniMind checkout?)")
    if REPO in args.minimind_dir.parents or args.minimind_dir == REPO:
        raise SystemExit("error: keep the MiniMind checkout outside this repository")
    import torch
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"

    docs = texts(args.data)
    n, b = args.steps, args.batch_size
    with tempfile.TemporaryDirectory(prefix="bench_minimind_") as tmp:
        work = Path(tmp)
        files = {}
        for steps in (n, 2 * n):
            files[steps] = work / f"rows{steps}.jsonl"
            rows = write_rows(docs, steps * b, files[steps])
        per_row = their_trained_tokens(args.minimind_dir, rows, args.max_seq_len)
        times: dict[tuple[str, int], float] = {}
        logs: dict[str, str] = {}
        for steps in (n, 2 * n):  # in turns, so a drift in the machine's load hits both alike
            times["theirs", steps], logs["theirs"] = theirs(args, files[steps], work, steps)
            times["ours", steps], logs["ours"] = ours(args, files[steps], work, steps)
            print(f"  {steps} steps: MiniMind {times['theirs', steps]:.1f} s, ours {times['ours', steps]:.1f} s",
                  flush=True)
    extra = {who: times[who, 2 * n] - times[who, n] for who in ("theirs", "ours")}
    if min(extra.values()) <= 0:
        raise SystemExit("error: 2N steps took no longer than N (start-up noise dominates): raise --steps")
    their_rate = n * b * per_row / extra["theirs"]
    our_rate = n * b * args.max_seq_len / extra["ours"]
    found = re.search(r"Trainable Params:\s*([\d.]+)M", logs["theirs"])
    their_params = f"{found.group(1)}M" if found else "?"
    from model import SpongeBob, get_preset
    our_params = f"{SpongeBob(get_preset('spongebob-29m-tied')).num_parameters() / 1e6:.3f}M"
    print(f"\n{describe_device(args.device)}")
    print(f"{n} extra steps of batch {b} x {args.max_seq_len}, compile {args.compile}, "
          f"{'bf16' if args.device == 'cuda' else 'fp32'}")
    print(f"MiniMind train_pretrain.py ({their_params} params): {their_rate:,.0f} trained tokens/s "
          f"({per_row:.0f} of {args.max_seq_len} positions per row trained, {extra['theirs'] / n:.2f} s/step)")
    print(f"SpongeBob pretrain.py ({our_params} params):         {our_rate:,.0f} trained tokens/s "
          f"({extra['ours'] / n:.2f} s/step)")
    print(f"ours / theirs: {our_rate / their_rate:.2f}x trained tokens/s")


if __name__ == "__main__":
    main()
