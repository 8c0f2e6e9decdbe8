"""eval_model.py --eval_file: batch evaluation of a chat file, or of preference pairs.

Kept out of eval_model.py so that the script stays the command line and the chat
loops; the scoring itself lives in batch_eval.py, reasoning_metrics.py and pref_eval.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dataset.preference import detect_pref_format
from dataset.readers import DataError, SkipStats, iter_records
from inference.budget import think_budget
from inference.calculator import Calculator
from inference.sampling import SamplingConfig
from common.stages import stage
from inference.loading import UserError, mode_stage
from model import CheckpointError, SpongeBob, load_model
from tokenizer import SpongeTokenizer

from common.reasoning import answer_span, answers_match

from .batch_eval import evaluate_samples, format_report, gold_answers, load_samples
from .pass_at_k import count_correct, format_pass_table, pass_curve
from .pref_eval import evaluate_pairs, format_pref_report
from .reasoning_metrics import budget_label, format_table


def preference_evaluation(args: argparse.Namespace, model: SpongeBob, tok: SpongeTokenizer, path: Path) -> None:
    """--eval_file with preference pairs: chosen preferred, and DPO's reward against --ref_ckpt."""
    ref_path = Path(args.ref_ckpt or Path(args.out_dir) / stage("sft").checkpoint)
    try:
        reference, _ = load_model(ref_path, tokenizer=tok, device=model.embed.weight.device)
        skip = SkipStats() if args.skip_bad else None
        report = evaluate_pairs(model, reference, tok, path, args.pref_beta, args.data_format, skip, args.max_samples)
    except (CheckpointError, DataError) as e:
        raise UserError(str(e)) from None
    if skip is not None:
        print(skip.summary(), file=sys.stderr)
    if not report["pairs"]:
        raise UserError(f"--eval_file {path}: no pair to evaluate (all longer than the model's context?)")
    print(f"reference: {ref_path}", file=sys.stderr)
    print(format_pref_report(report, args.pref_beta))


def sampled_report(args: argparse.Namespace, model: SpongeBob, tok: SpongeTokenizer, samples: list,
                   greedy: dict) -> str:
    """--samples K: pass@1..K at the rollout temperature, beside the greedy accuracy, with 95% intervals."""
    golds = gold_answers(samples)
    if golds is None or "reasoning" not in greedy:
        raise UserError(f"--samples: {args.eval_file} has no <answer> in its references to score against")
    rollout = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.sample_temperature, top_p=1.0,
                             stop_ids=(tok.im_end_id, tok.endoftext_id),
                             calculator=Calculator.for_tokenizer(tok) if args.calculator else None)
    counts = count_correct(model, tok, [s.prompt_ids for s in samples], golds,
                           lambda text, gold: answers_match(answer_span(text), gold), args.samples, rollout,
                           seed=args.seed or 0)
    curve = pass_curve(counts, args.samples)
    ks = sorted({1, *(k for k in (2, 4, 8, 16) if k < args.samples), args.samples})
    spread = {c: counts.count(c) for c in range(args.samples + 1)}
    name = Path(args.ckpt).name if args.ckpt else f"--model_mode {args.model_mode}"
    return (f"\nsampled at temperature {args.sample_temperature:g}, {args.samples} per problem "
            f"(95% Wilson intervals over the problems):\n"
            + format_pass_table([(name, len(samples), greedy["reasoning"]["accuracy"] / 100, curve)], ks)
            + f"\nproblems by number of right samples (0..{args.samples}): "
            + ", ".join(f"{c}: {n}" for c, n in spread.items())
            + f"\nshare with 0 < right < {args.samples} (where RL has signal): "
            + f"{sum(n for c, n in spread.items() if 0 < c < args.samples) / len(counts):.1%}")


def is_preference_file(path: Path) -> bool:
    first = next(iter_records(path), None)
    return first is not None and detect_pref_format(first[1]) is not None


def batch_evaluation(args: argparse.Namespace, model: SpongeBob, tok: SpongeTokenizer,
                     sampling: SamplingConfig) -> None:
    """--eval_file: predictions for every conversation, then the report on stdout
    (preference pairs: the preference report instead)."""
    path = Path(args.eval_file)
    if not path.is_file():
        raise UserError(f"--eval_file {path}: no such file")
    try:
        preference = is_preference_file(path)
    except DataError as e:
        raise UserError(str(e)) from None
    if preference:
        return preference_evaluation(args, model, tok, path)
    skip = SkipStats() if args.skip_bad else None
    try:
        samples = load_samples(path, tok, chat=mode_stage(args.model_mode).chat, data_format=args.data_format,
                               skip=skip, max_samples=args.max_samples)
    except DataError as e:
        raise UserError(str(e)) from None
    if skip is not None:
        print(skip.summary(), file=sys.stderr)
    if not samples:
        raise UserError(f"--eval_file {path}: no conversation to evaluate")
    out = Path(args.out) if args.out else None
    if args.think_budgets is None:
        report = evaluate_samples(model, tok, samples, sampling, seed=args.seed, out_path=out,
                                  budget=think_budget(tok, args.max_think_tokens, args.min_think_tokens, args.continue_word))
        print(format_report(report))
        if out is not None:
            print(f"predictions: {out}", file=sys.stderr)
        if args.samples:
            print(sampled_report(args, model, tok, samples, report))
        return
    rows = []
    for cap in args.think_budgets:  # one pass over the samples per setting
        where = out.with_name(f"{out.stem}.think-{cap if cap is not None else 'none'}{out.suffix}") if out else None
        report = evaluate_samples(model, tok, samples, sampling, seed=args.seed, out_path=where,
                                  budget=think_budget(tok, cap, args.min_think_tokens, args.continue_word))
        if "reasoning" not in report:
            raise UserError(f"--think_budgets: {path} has no <answer> in its references to score against")
        rows.append((budget_label(cap, args.min_think_tokens, args.continue_word if args.min_think_tokens else None),
                     report["reasoning"]))
    print(format_table(rows))
