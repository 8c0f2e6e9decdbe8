"""One report for every stage: the same held-out sets, stages as rows, measures as columns.

    python -m evaluation.report --out_dir out
    python -m evaluation.report --out_dir out --mc_file cmmlu/dev --math_file gsm8k_test.jsonl --max_samples 200

It finds DIR/<stage>.pth for every row of common/stages.py (or --stages a,b),
scores each on the sets below and writes DIR/report.md (the table and the command
that made it) and DIR/report.png (the same as bars). docs/report.md says what each
column means. Each measure runs only where it means something:

  text   bits per byte (bpb.py)              every stage     default: r1_test as worked-problem prose
  mc     multiple-choice accuracy (mc.py)    every stage     only with --mc_file
  math   greedy accuracy, format, pass@k     stages that think (their replies have an <answer> to read)
         (math_eval.py)                                      default: r1_test
  chat   BLEU-4, ROUGE-L (batch_eval.py)     chat stages     only with --chat_file
  pref   chosen likelier (pref_eval.py)      chat stages     default: dpo_test

Every data file is read (and checked) before any model runs: a bad file is one
line naming file:line and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from common.device import pick_device
from common.stages import STAGES, Stage, stage as stage_row
from dataset.demo.corpus import ensure_demo_corpus
from dataset.preference import iter_pairs
from dataset.readers import DataError, SkipStats, expand_paths
from inference.sampling import SamplingConfig
from model import CheckpointError, checkpoint_tokenizer, load_model
from tokenizer import TokenizerError, load_tokenizer, tokenizer_for
from .batch_eval import evaluate_samples, load_samples
from .bpb import held_out_texts, text_bits_per_byte, trained_context
from .math_data import iter_math
from inference.calculator import Calculator
from .math_eval import evaluate_math
from .mc import CHANCE, evaluate_mc, iter_questions
from .pref_eval import evaluate_pairs
from .report_plot import plot_report

MEASURES = ("text", "mc", "math", "chat", "pref")
# (key, column label); the markdown shows them in this order, the plot too.
COLUMNS = [("bpb", "text bits/byte (lower is better)"), ("mc_acc", "MC acc %"), ("mc_acc_norm", "MC acc_norm %"),
           ("math_acc", "math acc %"), ("math_format", "math format %"), ("pass@1", "pass@1 %"),
           ("pass@k", "pass@k %"), ("bleu-4", "chat BLEU-4"), ("rouge-l", "chat ROUGE-L"),
           ("pref", "pref chosen likelier %")]
PERCENT = {"mc_acc", "mc_acc_norm", "math_acc", "math_format", "pass@1", "pass@k", "pref"}


class UserError(Exception):
    """Printed as one line; exit status 2."""


def applies(measure: str, row: Stage) -> bool:
    return {"text": True, "mc": True, "math": row.thinks, "chat": row.chat, "pref": row.chat}[measure]


@dataclass
class Sets:
    """The held-out data, read once and shared by every stage; `what` says where each came from."""
    texts: list[str] = field(default_factory=list)
    questions: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    chat: list = field(default_factory=list)
    pref: Path | None = None
    what: dict[str, str] = field(default_factory=dict)


def load_sets(args: argparse.Namespace, tok) -> Sets:
    """Read every set the flags name (or the demo's held-out splits); DataError on a bad record."""
    n, sets = args.max_samples, Sets()
    r1_test = None if args.text_file and args.math_file else ensure_demo_corpus("r1_test")
    text_path = Path(args.text_file) if args.text_file else r1_test
    sets.texts = list(held_out_texts(text_path, from_r1=not args.text_file, max_samples=n))
    sets.what["text"] = f"{text_path}: {len(sets.texts)} texts" + ("" if args.text_file else
                                                                   " (r1_test problems written as worked problems)")
    if args.mc_file:
        sets.questions = list(iter_questions(args.mc_file, n))
        files = [str(f) for f in expand_paths(args.mc_file)]
        named = ", ".join(files) if len(files) <= 3 else f"{len(files)} files ({files[0]} ... {files[-1]})"
        sets.what["mc"] = f"{named}: {len(sets.questions)} questions (chance {CHANCE:.0%})"
    math_path = Path(args.math_file) if args.math_file else r1_test
    sets.problems = list(iter_math(math_path, n))
    sets.what["math"] = (f"{math_path}: {len(sets.problems)} problems, greedy, {args.max_new_tokens} new tokens"
                         + (", with the calculator" if args.calculator else ""))
    if args.samples:
        sets.what["math"] += f"; pass@1 and pass@{args.pass_k or args.samples} from {args.samples} answers at temperature 1"
    if args.chat_file:
        skip = SkipStats() if args.skip_bad else None
        sets.chat = load_samples(args.chat_file, tok, chat=True, skip=skip, max_samples=n)
        sets.what["chat"] = f"{args.chat_file}: {len(sets.chat)} conversations, greedy"
        if skip is not None and skip.total:
            sets.what["chat"] += f" ({skip.summary()})"
            print(f"{args.chat_file}: {skip.summary()}", file=sys.stderr)
    sets.pref = Path(args.pref_file) if args.pref_file else ensure_demo_corpus("dpo_test")
    pairs = sum(1 for _ in iter_pairs(sets.pref))  # read it all now: a bad record fails before any model runs
    sets.what["pref"] = f"{sets.pref}: {min(pairs, n or pairs)} pairs"
    return sets


def wanted(sets: Sets) -> list[str]:
    have = {"text": sets.texts, "mc": sets.questions, "math": sets.problems, "chat": sets.chat, "pref": sets.pref}
    return [m for m in MEASURES if have[m]]


def score(measure: str, model, meta: dict, tok, sets: Sets, args: argparse.Namespace) -> dict:
    """The columns one measure gives one model (meta: its checkpoint's, for the length it was trained on)."""
    if measure == "text":
        return {"bpb": text_bits_per_byte(model, tok, sets.texts, trained_context(model, meta))}
    if measure == "mc":
        r = evaluate_mc(model, tok, sets.questions, trained_context(model, meta))
        return {"mc_acc": 100 * r["acc"], "mc_acc_norm": 100 * r["acc_norm"]}
    if measure == "math":
        r = evaluate_math(model, tok, sets.problems, args.max_new_tokens, args.samples, args.pass_k, args.seed,
                          Calculator.for_tokenizer(tok) if args.calculator else None)
        out = {"math_acc": 100 * r["accuracy"], "math_acc_ci": r["accuracy_ci"], "math_format": 100 * r["compliance"]}
        if args.samples:
            out.update({"pass@1": 100 * r["pass@1"], "pass@k": 100 * r[f"pass@{r['k']}"]})
        return out
    if measure == "chat":
        greedy = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=0.0)
        r = evaluate_samples(model, tok, sets.chat, greedy, seed=args.seed, show_progress=False)
        return {"bleu-4": r["bleu-4"], "rouge-l": r["rouge-l"]}
    r = evaluate_pairs(model, None, tok, sets.pref, beta=1.0, max_samples=args.max_samples)
    return {"pref": 100 * r["chosen_likelier"]}


def run_all(found: list[tuple[Stage, Path]], sets: Sets, tok, args: argparse.Namespace) -> dict[str, dict]:
    """Every applicable (stage, measure), one model in memory at a time, under one progress bar."""
    device = pick_device(args.device)
    measures = wanted(sets)
    tasks = [(row, path, m) for row, path in found for m in measures if applies(m, row)]
    results: dict[str, dict] = {row.name: {} for row, _ in found}
    loaded: tuple[str, object, dict] | None = None
    with tqdm(total=len(tasks), desc="report", unit=" score", file=sys.stderr) as bar:
        for row, path, measure in tasks:
            bar.set_postfix_str(f"{row.name} {measure}")
            if loaded is None or loaded[0] != row.name:
                try:
                    loaded = (row.name, *load_model(path, tokenizer=tok, device=device))
                except CheckpointError as e:
                    raise UserError(str(e)) from None
            torch.manual_seed(args.seed)
            results[row.name].update(score(measure, loaded[1], loaded[2], tok, sets, args))
            bar.update(1)
    return results


def cell(key: str, value) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}" if key in PERCENT or key in ("bleu-4", "rouge-l") else f"{value:.3f}"


def markdown(stages: list[str], results: dict[str, dict], sets: Sets, command: str, seconds: float) -> str:
    columns = [(k, label) for k, label in COLUMNS if any(results[s].get(k) is not None for s in stages)]
    lines = ["# Stage report", "", "| stage | " + " | ".join(label for _, label in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for s in stages:
        cells = []
        for key, _ in columns:
            text = cell(key, results[s].get(key))
            if key == "math_acc" and results[s].get("math_acc_ci"):
                low, high = results[s]["math_acc_ci"]
                text += f" [{100 * low:.0f}–{100 * high:.0f}]"
            cells.append(text)
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines += ["", "— : the measure does not apply to the stage (math: stages that think; chat and pref: chat stages).",
              "math acc has its 95% Wilson interval in brackets. MC chance is 25%. "
              "pref is reference-free: the chosen reply has the higher summed log-prob.", "", "Sets:", ""]
    lines += [f"- {m}: {sets.what[m]}" for m in MEASURES if m in wanted(sets)]
    lines += ["", f"Made in {seconds:.0f} s by:", "", "```", command, "```", ""]
    return "\n".join(lines)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def find_stages(out_dir: Path, names: str | None) -> list[tuple[Stage, Path]]:
    try:
        rows = [stage_row(n.strip()) for n in names.split(",") if n.strip()] if names else list(STAGES)
    except KeyError as e:
        raise UserError(f"--stages: {e.args[0]}") from None
    found = [(row, out_dir / row.checkpoint) for row in rows if (out_dir / row.checkpoint).is_file()]
    if names and len(found) < len(rows):
        missing = [str(out_dir / r.checkpoint) for r in rows if not (out_dir / r.checkpoint).is_file()]
        raise UserError(f"--stages: no checkpoint at {', '.join(missing)}")
    if not found:
        raise UserError(f"{out_dir}: no stage checkpoint (looked for {', '.join(r.checkpoint for r in rows)})")
    return found


def run_tokenizer(found: list[tuple[Stage, Path]], tokenizer_dir: str | None):
    """The tokenizer the stages were trained with: --tokenizer_dir, else the one their checkpoints
    record (an own tokenizer's directory, or the shipped one). Stages trained with different
    tokenizers cannot share the report's tokenized sets: one line says so."""
    if tokenizer_dir:
        return load_tokenizer(tokenizer_dir)
    identities = {row.name: checkpoint_tokenizer(path) for row, path in found}
    if len({i.get("sha256") for i in identities.values()}) > 1:
        names = ", ".join(f"{n} ({i.get('sha256', '?')[:12]})" for n, i in identities.items())
        raise UserError(f"the stages were trained with different tokenizers: {names}; report them apart with --stages")
    return tokenizer_for(next(iter(identities.values())))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m evaluation.report", description=__doc__.split("\n")[0])
    p.add_argument("--out_dir", default="out", help="where the stages wrote <stage>.pth; report.md/.png go here")
    p.add_argument("--stages", default=None, help="comma-separated stage names (default: every checkpoint found)")
    p.add_argument("--text_file", default=None, help="held-out text for bits per byte (.jsonl {'text'} or .txt)")
    p.add_argument("--mc_file", nargs="+", default=None,
                   help="CMMLU/C-Eval CSV or JSONL files, or folders of them (e.g. CMMLU's dev/)")
    p.add_argument("--math_file", default=None, help="GSM8K, Ape210K, CMATH or R1 jsonl (default: the demo's r1_test)")
    p.add_argument("--chat_file", default=None, help="a chat file for BLEU-4/ROUGE-L (any supported format)")
    p.add_argument("--skip_bad", action="store_true",
                   help="chat: skip and count records that cannot be scored (e.g. BELLE's open-ended questions, "
                        "which have an empty std_answer) instead of stopping at the first")
    p.add_argument("--pref_file", default=None, help="preference pairs (default: the demo's dpo_test)")
    p.add_argument("--max_samples", type=int, default=None, help="at most this many records of each set")
    p.add_argument("--samples", type=int, default=0, help="math: answers per problem at temperature 1 for pass@k")
    p.add_argument("--pass_k", type=int, default=None, help="k of pass@k (default: --samples)")
    p.add_argument("--max_new_tokens", type=int, default=160, help="generation length for math and chat")
    p.add_argument("--seed", type=int, default=0, help="seeds the sampling of pass@k")
    p.add_argument("--calculator", action="store_true",
                   help="math: a calculator writes the result after each equation's '=' (as grpo.py --calculator)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--tokenizer_dir", default=None,
                   help="the tokenizer the stages were trained with (default: the one their checkpoints record)")
    args = p.parse_args(argv)
    if args.max_samples is not None and args.max_samples < 1:
        p.error("--max_samples must be at least 1")
    if args.samples < 0 or (args.pass_k is not None and not 0 < args.pass_k <= max(args.samples, 0)):
        p.error("--pass_k needs 0 < k <= --samples")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    began, out_dir = time.perf_counter(), Path(args.out_dir)
    try:
        found = find_stages(out_dir, args.stages)
        tok = run_tokenizer(found, args.tokenizer_dir)
        sets = load_sets(args, tok)
        results = run_all(found, sets, tok, args)
    except (UserError, DataError, TokenizerError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stages = [row.name for row, _ in found]
    command = "python -m evaluation.report " + shlex.join(argv)
    write_atomic(out_dir / "report.md", markdown(stages, results, sets, command, time.perf_counter() - began))
    print(f"wrote {out_dir / 'report.md'}", file=sys.stderr)
    why_not = plot_report(out_dir / "report.png", stages, COLUMNS, results, {"mc_acc": 25.0, "mc_acc_norm": 25.0},
                          PERCENT)
    print(why_not or f"wrote {out_dir / 'report.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
