"""pass@k on problems with gold answers: does ANY of k sampled answers get it right?

RL with verifiable rewards mostly sharpens what sampling already finds: it can raise
pass@1 towards pass@k, rarely pass@k itself. So pass@k well above pass@1 before RL is
the precondition, and "pass@1 up, pass@k held" is the honest measure of success.

The estimator is the unbiased one of Chen et al. (2021): from n samples of which c
are right,

    pass@k = 1 - C(n - c, k) / C(n, k)          (1 when n - c < k)

averaged over problems. Each figure comes with a 95% Wilson interval over the
problems (a problem's pass@k is treated as its success probability; the interval
is the usual one for a proportion and is a little wide for k > 1, which is the safe
side). Samples are drawn at the rollout temperature, each problem's n samples in one
batch with the KV cache, and each sample from its own seeded generator, so a run
repeats exactly.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from tqdm import tqdm

from common.seeding import seed_from
from inference.batch import decode_batch
from inference.sampling import SamplingConfig
from model import SpongeBob
from tokenizer import SpongeTokenizer

Z95 = 1.959964  # the normal quantile of a two-sided 95% interval


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k from n samples with c correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion p measured on n trials."""
    if n == 0:
        return 0.0, 1.0
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def pass_curve(correct_counts: Sequence[int], n: int) -> dict[int, float]:
    """k -> mean pass@k over problems, for k = 1..n, from each problem's number of right samples."""
    return {k: sum(pass_at_k(n, c, k) for c in correct_counts) / max(len(correct_counts), 1)
            for k in range(1, n + 1)}


@torch.no_grad()
def count_correct(model: SpongeBob, tok: SpongeTokenizer, prompts: list[list[int]], golds: list[str],
                  is_right: Callable[[str, str], bool], n: int, sampling: SamplingConfig, seed: int = 0,
                  problems_per_batch: int = 8, show_progress: bool = True) -> list[int]:
    """For every prompt, how many of n sampled completions is_right(completion, gold) accepts."""
    counts, device = [], model.embed.weight.device
    starts = range(0, len(prompts), problems_per_batch)
    for start in tqdm(starts, desc=f"pass@{n}", unit=" batch", disable=not show_progress):
        chunk = list(range(start, min(start + problems_per_batch, len(prompts))))
        rows = [prompts[i] for i in chunk for _ in range(n)]
        generators = [torch.Generator(device=device).manual_seed(seed_from(seed, i, j)) for i in chunk for j in range(n)]
        seqs = decode_batch(model, rows, [sampling] * len(rows), generators)
        texts = [tok.decode(s.tokens, skip_special_tokens=True) for s in seqs]
        for a, i in enumerate(chunk):
            counts.append(sum(is_right(texts[a * n + j], golds[i]) for j in range(n)))
    return counts


def format_pass_table(rows: Sequence[tuple[str, int, float, dict[int, float]]], ks: Sequence[int]) -> str:
    """A markdown table: name, problems, greedy accuracy and pass@k for each k, each with its 95% interval."""
    head = "| model | problems | greedy | " + " | ".join(f"pass@{k}" for k in ks) + " |"
    lines = [head, "|---|---:|---:|" + "---:|" * len(ks)]
    for name, n, greedy, curve in rows:
        cells = [_with_interval(greedy, n)] + [_with_interval(curve[k], n) for k in ks]
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _with_interval(p: float, n: int) -> str:
    low, high = wilson(p, n)
    return f"{100 * p:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"
