"""Model quality per hour: MiniMind's pretraining script and ours, each as it comes (its own optimizer,
schedule, precision and data layout), on the same text for the same wall clock, scored by one scorer.

    python bench/bench_minimind_clock.py --minimind_dir /tmp/minimind --minimind_python /tmp/mmvenv/bin/python \\
        --seconds 1200

The MiniMind checkout stays outside this repository and runs as it is (trainer/train_pretrain.py, in
its own Python with its requirements); nothing of it is copied here. Both train a model of width 512
and 8 layers (theirs: MiniMindConfig(hidden_size=512, num_hidden_layers=8); ours: spongebob-29m)
on rows of --max_seq_len, --batch_size rows a step, each at its own default learning rate and
schedule, sized so that its schedule ends at the budget: each trainer's seconds per step are measured
first (N and 2N steps, the difference), then it runs budget / (s per step) steps. Ours runs a second
time with a third of the budget.

The text: ../shared/data's web text and Lu Xun; every 50th document is held out, never trained on.
Both models are scored by evaluation/bpb.py's bits_per_byte on those documents, each document after
the token its pretraining puts before a document (theirs <|im_start|>, ours <|endoftext|>), in
windows of --max_seq_len: bits per byte does not depend on the tokenizer.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_minimind import run, write_rows  # noqa: E402


def split_texts(every: int = 50) -> tuple[list[str], list[str], str]:
    """(train, held-out) documents of the real text; every `every`-th document is held out."""
    from bench.bench_train import corpus_paths
    from dataset.text_fields import iter_texts
    paths, source = corpus_paths()
    docs = [t for _, t in iter_texts(paths)]
    return [d for i, d in enumerate(docs) if i % every], docs[::every], source


def score_minimind(args: argparse.Namespace) -> None:
    """In MiniMind's Python: its checkpoint's bits per byte on the held-out documents (one JSON line)."""
    import torch
    from transformers import AutoTokenizer
    from evaluation.bpb import bits_per_byte  # ours first: it loads our dataset/ package, theirs has one too
    sys.path.insert(0, str(args.minimind_dir))
    from model.model_minimind import MiniMindConfig, MiniMindForCausalLM  # theirs: our model/ is never imported
    texts = json.loads(Path(args.heldout).read_text(encoding="utf-8"))
    tok = AutoTokenizer.from_pretrained(str(args.minimind_dir / "model"))
    model = MiniMindForCausalLM(MiniMindConfig(hidden_size=512, num_hidden_layers=8))
    model.load_state_dict({k: v.float() for k, v in torch.load(args.score, map_location="cpu").items()}, strict=False)

    class Logits(torch.nn.Module):  # evaluation/bpb.py calls model(ids) for logits
        def __init__(self, hf):
            super().__init__()
            self.hf = hf

        def forward(self, ids):
            return self.hf(ids).logits
    token_lists = [[tok.bos_token_id] + tok(t, add_special_tokens=False).input_ids for t in texts]
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    with torch.no_grad():
        print(json.dumps({"bpb": bits_per_byte(Logits(model.eval()), token_lists, n_bytes, args.max_seq_len)}))


def score_ours(weights: Path, texts: list[str], seq: int) -> float:
    from evaluation.bpb import text_bits_per_byte
    from model import load_model
    from tokenizer import load_tokenizer
    model, _ = load_model(weights)
    import torch
    with torch.no_grad():
        return text_bits_per_byte(model, load_tokenizer(), texts, seq)


def minimind_command(args: argparse.Namespace, data: Path, out: Path) -> list[str]:
    return [args.minimind_python, str(args.minimind_dir / "trainer" / "train_pretrain.py"), "--data_path", str(data),
            "--epochs", "1", "--batch_size", str(args.batch_size), "--max_seq_len", str(args.max_seq_len),
            "--accumulation_steps", "1", "--hidden_size", "512", "--num_hidden_layers", "8", "--device", "cpu",
            "--num_workers", "1", "--log_interval", str(10 ** 9), "--save_interval", str(10 ** 9),
            "--save_dir", str(out)]


def our_command(args: argparse.Namespace, data: Path, out: Path, steps: int) -> list[str]:
    return [sys.executable, str(REPO / "pretrain.py"), "--data_path", str(data), "--batch_size", str(args.batch_size),
            "--max_seq_len", str(args.max_seq_len), "--accumulation_steps", "1", "--epochs", "1000",
            "--max_steps", str(steps), "--warmup_steps", str(max(1, steps // 10)), "--val_fraction", "0",
            "--eval_interval", "0", "--log_interval", str(max(1, steps // 4)), "--save_interval", str(10 ** 9),
            "--out_dir", str(out)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minimind_dir", type=Path, required=True, help="a MiniMind checkout (outside this repo)")
    p.add_argument("--minimind_python", default=sys.executable, help="the Python that has MiniMind's requirements")
    p.add_argument("--seconds", type=float, default=1200, help="the wall-clock budget of each full run")
    p.add_argument("--batch_size", type=int, default=16, help="rows per step, the same in both trainers")
    p.add_argument("--max_seq_len", type=int, default=512, help="tokens per row, the same in both trainers")
    p.add_argument("--calibration_steps", type=int, default=4, help="N: the seconds per step come from N and 2N")
    p.add_argument("--score", default=None, help=argparse.SUPPRESS)  # internal: score a MiniMind checkpoint
    p.add_argument("--heldout", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.minimind_dir = args.minimind_dir.resolve()
    if args.score:
        return score_minimind(args)
    from bench.device_info import describe_device
    train, heldout, source = split_texts()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # our model/ must not shadow theirs
    with tempfile.TemporaryDirectory(prefix="bench_clock_") as tmp:
        work = Path(tmp)
        (work / "minimind" / "run").mkdir(parents=True)  # their script reads ../model, writes ../checkpoints
        (work / "minimind" / "model").symlink_to(args.minimind_dir / "model")
        cwd = work / "minimind" / "run"
        held = work / "heldout.json"
        held.write_text(json.dumps(heldout, ensure_ascii=False), encoding="utf-8")
        n, b = args.calibration_steps, args.batch_size
        seconds = {}
        for who in ("theirs", "ours"):  # seconds per step, start-up left out: 2N steps less N steps
            took = []
            for steps in (n, 2 * n):
                data = work / f"{who}{steps}.jsonl"
                write_rows(train, steps * b, data)
                command = (minimind_command(args, data, work / f"cal{who}{steps}") if who == "theirs" else
                           our_command(args, data, work / f"cal{who}{steps}", steps))
                took.append(run(command, cwd if who == "theirs" else REPO, env, f"{who}, {steps} steps")[0])
            seconds[who] = (took[1] - took[0]) / n
        plans = {"MiniMind": ("theirs", args.seconds), "SpongeBob": ("ours", args.seconds),
                 "SpongeBob, a third of the time": ("ours", args.seconds / 3)}
        results = {}
        for name, (who, budget) in plans.items():
            steps = max(1, round(budget / seconds[who]))
            data, out = work / f"run_{len(results)}.jsonl", work / f"out_{len(results)}"
            write_rows(train, steps * b, data)
            command = minimind_command(args, data, out) if who == "theirs" else our_command(args, data, out, steps)
            took, _ = run(command, cwd if who == "theirs" else REPO, env, f"{name} ({steps} steps)")
            if who == "theirs":
                _, scored = run([args.minimind_python, __file__, "--minimind_dir", str(args.minimind_dir), "--score",
                                 str(out / "pretrain_512.pth"), "--heldout", str(held), "--max_seq_len",
                                 str(args.max_seq_len)], REPO, env, "scoring MiniMind's checkpoint")
                bpb = json.loads(_last_json(scored))["bpb"]
            else:
                bpb = score_ours(out / "pretrain.pth", heldout, args.max_seq_len)
            results[name] = (steps, took, bpb)
            print(f"  {name}: {steps} steps of {b} x {args.max_seq_len}, {took:.0f} s with start-up, "
                  f"held-out {bpb:.4f} bits/byte", flush=True)
    print(f"\n{describe_device()}; text: {source}; {len(heldout)} held-out documents "
          f"({sum(len(t.encode()) for t in heldout) / 1e6:.2f} MB)")
    print(f"seconds per step: MiniMind {seconds['theirs']:.2f}, SpongeBob {seconds['ours']:.2f}")
    for name, (steps, took, bpb) in results.items():
        print(f"| {name} | {steps} | {took:.0f} s | {bpb:.4f} |")
    theirs_bpb, ours_third = results["MiniMind"][2], results["SpongeBob, a third of the time"][2]
    verdict = "reached" if ours_third <= theirs_bpb else "not reached"
    print(f"MiniMind's final bits/byte in a third of its time: {verdict} ({ours_third:.4f} vs {theirs_bpb:.4f})")


def _last_json(text: str) -> str:
    return next(line for line in reversed(text.strip().splitlines()) if line.startswith("{"))


if __name__ == "__main__":
    main()
