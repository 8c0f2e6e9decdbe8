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
from inference.generate import SamplingConfig
from common.stages import stage
from inference.loading import UserError, mode_stage
from model import CheckpointError, SpongeBob, load_model
from tokenizer import SpongeTokenizer

from .batch_eval import evaluate_samples, format_report, load_samples
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
