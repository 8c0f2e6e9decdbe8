"""Math accuracy of a thinking model: greedy accuracy, format compliance, pass@k, with intervals.

Each problem is asked as a chat (ChatML with the assistant header, as in training)
and answered by the batched decoder (inference/batch.py). A reply is scored by the
project's one matcher (common/reasoning.py, through reasoning_metrics.py):
accuracy reads even a malformed reply's answer, compliance checks the
<think>...</think><answer>...</answer> format.

pass@k. With --samples n, every problem is also answered n times at temperature 1,
and pass@k and the 95% Wilson intervals are evaluation/pass_at_k.py's (the same as
eval_model.py --samples): at n = 100 an accuracy of 30% means anything from about 22%
to 40%.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from inference.batch import generate_batch
from inference.calculator import Calculator
from inference.sampling import SamplingConfig
from .bpb import model_device
from .math_data import MathProblem
from .pass_at_k import pass_at_k, wilson
from .reasoning_metrics import score_replies

BATCH = 64  # sequences decoded together


def generate_replies(model, tok, prompts: list[list[int]], sampling: SamplingConfig,
                     seeds: Sequence[int | None]) -> list[str]:
    """Every prompt answered (BATCH at a time), decoded without special tokens, as the scorer reads replies."""
    sampling = replace(sampling, stop_ids=(tok.im_end_id, tok.endoftext_id))
    device, replies = model_device(model), []
    for start in range(0, len(prompts), BATCH):
        chunk = prompts[start:start + BATCH]
        generators = [torch.Generator(device=device).manual_seed(s) if s is not None else None
                      for s in seeds[start:start + BATCH]]
        outputs = generate_batch(model, chunk, [sampling] * len(chunk), generators)
        replies += [tok.decode(ids, skip_special_tokens=True).strip() for ids in outputs]
    return replies


def evaluate_math(model, tok, problems: Sequence[MathProblem], max_new_tokens: int, samples: int = 0,
                  pass_k: int | None = None, seed: int = 0, calculator: Calculator | None = None) -> dict:
    """accuracy, compliance (fractions) with their intervals; with samples > 0, pass@1 and pass@k too.
    calculator: the tool writes the results of the model's equations (inference/calculator.py)."""
    prompts = [tok.apply_chat_template(p.prompt, add_generation_prompt=True, tokenize=True) for p in problems]
    golds = [p.gold for p in problems]
    count = lambda text: len(tok.encode(text))  # noqa: E731 - think length, as eval_model counts it
    greedy = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0, calculator=calculator)
    scores = score_replies(generate_replies(model, tok, prompts, greedy, [None] * len(prompts)), golds, count)
    n = scores["n"]
    right, compliant = round(scores["accuracy"] * n / 100), round(scores["compliance"] * n / 100)
    report = {"n": n, "accuracy": right / max(n, 1), "accuracy_ci": wilson(right / max(n, 1), n),
              "compliance": compliant / max(n, 1), "compliance_ci": wilson(compliant / max(n, 1), n)}
    if samples > 0:
        k = pass_k or samples
        warm = SamplingConfig(max_new_tokens=max_new_tokens, temperature=1.0, calculator=calculator)
        many = [p for p in prompts for _ in range(samples)]
        seeds = [seed * 1_000_003 + j for j in range(len(many))]  # every sample its own stream, repeatable
        replies = generate_replies(model, tok, many, warm, seeds)
        correct = [score_replies(replies[i * samples:(i + 1) * samples], [g] * samples, count)["accuracy"]
                   * samples / 100 for i, g in enumerate(golds)]
        correct = [round(c) for c in correct]
        report.update({"samples": samples, "k": k,
                       "pass@1": sum(c / samples for c in correct) / max(n, 1),
                       f"pass@{k}": sum(pass_at_k(samples, c, k) for c in correct) / max(n, 1)})
    return report
