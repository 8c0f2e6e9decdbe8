"""Math accuracy of a thinking model: greedy accuracy, format compliance, pass@k, with intervals.

Each problem is asked as a chat (ChatML with the assistant header, as in training)
and answered by the batched decoder (inference/batch.py). A reply is scored by the
project's one matcher (common/reasoning.py, through reasoning_metrics.py):
accuracy reads even a malformed reply's answer, compliance checks the
<think>...</think><answer>...</answer> format.

pass@k. With --samples n, every problem is also answered n times at temperature 1;
with c of them correct, pass@k = 1 - C(n-c, k) / C(n, k) (Chen et al. 2021: the
unbiased estimate of "at least one of k tries is right"), averaged over problems.

Intervals. Accuracies come with a 95% Wilson score interval, which unlike the
normal approximation stays inside [0, 1] and is honest at the small n of a demo:
at n = 100 an accuracy of 30% means anything from about 22% to 40%.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import torch

from inference.batch import generate_batch
from inference.generate import SamplingConfig
from .bpb import model_device
from .math_data import MathProblem
from .reasoning_metrics import score_replies

BATCH = 64  # sequences decoded together


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion, as fractions; (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def pass_at_k(n: int, c: int, k: int) -> float:
    """1 - C(n-c, k) / C(n, k): the chance that k of the n samples, drawn without replacement, hold a right one."""
    if not 0 < k <= n:
        raise ValueError(f"pass@k needs 0 < k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


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
                  pass_k: int | None = None, seed: int = 0) -> dict:
    """accuracy, compliance (fractions) with their intervals; with samples > 0, pass@1 and pass@k too."""
    prompts = [tok.apply_chat_template(p.prompt, add_generation_prompt=True, tokenize=True) for p in problems]
    golds = [p.gold for p in problems]
    count = lambda text: len(tok.encode(text))  # noqa: E731 - think length, as eval_model counts it
    greedy = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0)
    scores = score_replies(generate_replies(model, tok, prompts, greedy, [None] * len(prompts)), golds, count)
    n = scores["n"]
    right, compliant = round(scores["accuracy"] * n / 100), round(scores["compliance"] * n / 100)
    report = {"n": n, "accuracy": right / max(n, 1), "accuracy_ci": wilson_interval(right, n),
              "compliance": compliant / max(n, 1), "compliance_ci": wilson_interval(compliant, n)}
    if samples > 0:
        k = pass_k or samples
        warm = SamplingConfig(max_new_tokens=max_new_tokens, temperature=1.0)
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
