"""BLEU-4 and ROUGE-1/2/L for Chinese text, stdlib only, in the style of LLaMA-Factory's predict report.

LLaMA-Factory scores each (prediction, reference) pair with NLTK's sentence BLEU-4
(smoothing method3) and rouge_chinese's ROUGE F-scores, then averages over the
examples and multiplies by 100. We do the same maths here without nltk, jieba or a
rouge package, so evaluation adds no dependency and gives the same number on every
machine.

Tokenization (documented, deterministic): see `char_tokens`. Each CJK character is
one token, which needs no segmentation dictionary. LLaMA-Factory's BLEU is also
per character (it passes list(text) to NLTK), so on Chinese text without spaces or
Latin letters our BLEU is the same number; its ROUGE runs over jieba *words*, so our
ROUGE is comparable in spirit, not numerically identical.
"""
import math
import re
from collections import Counter

# An ASCII letter/digit run first (an English word or a number stays whole), else any
# single non-space character (a CJK character or a punctuation mark). Whitespace,
# ASCII or full-width, matches neither and is dropped.
_TOKEN = re.compile(r"[A-Za-z0-9]+|\S")

METRIC_NAMES = ("bleu-4", "rouge-1", "rouge-2", "rouge-l")


def char_tokens(text: str) -> list[str]:
    """Split text into tokens: one per CJK character (or other non-space, non-ASCII-
    alphanumeric character, e.g. punctuation), one per run of ASCII letters/digits;
    whitespace is dropped. Example: "GPT4有3.5亿 参数" -> GPT4 有 3 . 5 亿 参 数."""
    return _TOKEN.findall(text)


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _overlap(hypothesis: list[str], reference: list[str], n: int) -> tuple[int, int, int]:
    """(clipped matches, hypothesis n-gram count, reference n-gram count).

    Clipping: an n-gram seen twice in the hypothesis but once in the reference
    matches once, so repeating a correct word earns nothing."""
    hyp, ref = _ngrams(hypothesis, n), _ngrams(reference, n)
    matches = sum(min(count, ref[gram]) for gram, count in hyp.items())
    return matches, sum(hyp.values()), sum(ref.values())


def sentence_bleu4(hypothesis: list[str], reference: list[str]) -> float:
    """Sentence BLEU-4 in [0, 1], matching NLTK's sentence_bleu with one reference,
    uniform weights (1/4 each) and SmoothingFunction().method3.

    p_n = clipped n-gram matches / max(1, hypothesis n-grams), n = 1..4.
    Smoothing method3 (NIST geometric sequence): every p_n with zero matches becomes
    1 / (2**k * max(1, hypothesis n-grams)), where k = 1 for the first such order,
    2 for the second, and so on; orders with matches are left alone.
    BLEU = BP * exp(sum(log p_n) / 4), BP = 1 if c > r else exp(1 - r/c), with c, r
    the hypothesis and reference lengths. No unigram match at all gives 0, as in NLTK
    (smoothing would otherwise reward an answer sharing nothing with the reference).
    """
    if not hypothesis:
        return 0.0
    log_sum, k = 0.0, 1
    for n in range(1, 5):
        matches, total, _ = _overlap(hypothesis, reference, n)
        if n == 1 and matches == 0:
            return 0.0
        # NLTK guards the denominator with max(1, .) when the hypothesis is shorter than n.
        total = max(1, total)
        if matches == 0:
            precision = 1.0 / (2 ** k * total)
            k += 1
        else:
            precision = matches / total
        log_sum += math.log(precision) / 4
    c, r = len(hypothesis), len(reference)
    brevity = 1.0 if c > r else math.exp(1 - r / c)
    return brevity * math.exp(log_sum)


def _f1(matches: int, hyp_total: int, ref_total: int) -> float:
    """F1 of precision m/h and recall m/r, which simplifies to 2m / (h + r)."""
    if matches == 0:
        return 0.0
    return 2 * matches / (hyp_total + ref_total)


def rouge_n(hypothesis: list[str], reference: list[str], n: int) -> float:
    """ROUGE-N F1 in [0, 1] from clipped n-gram overlap."""
    return _f1(*_overlap(hypothesis, reference, n))


def _lcs_length(a: list[str], b: list[str]) -> int:
    """Longest common subsequence length; keeps two DP rows, O(len(a) * len(b)) time."""
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0] * (len(b) + 1)
        for j, other in enumerate(b, start=1):
            if token == other:
                current[j] = previous[j - 1] + 1
            else:
                current[j] = max(previous[j], current[j - 1])
        previous = current
    return previous[-1]


def rouge_l(hypothesis: list[str], reference: list[str]) -> float:
    """ROUGE-L F1 in [0, 1]: precision LCS/len(hyp), recall LCS/len(ref).

    Plain F1 (beta = 1), as rouge_chinese 1.0.3 computes it (checked: a hypothesis of 6 tokens
    sharing an LCS of 2 with a reference of 3 gives P 1/3, R 2/3, F 4/9 there and here)."""
    return _f1(_lcs_length(hypothesis, reference), len(hypothesis), len(reference))


def corpus_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean over examples of each sentence score x 100, LLaMA-Factory style:
    {"bleu-4", "rouge-1", "rouge-2", "rouge-l"}. An empty (or all-whitespace)
    prediction scores 0 on every metric; no examples gives all zeros."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    sums = dict.fromkeys(METRIC_NAMES, 0.0)
    for prediction, reference in zip(predictions, references):
        hyp, ref = char_tokens(prediction), char_tokens(reference)
        if not hyp:
            continue  # adds zero to every sum but still counts in the mean
        sums["bleu-4"] += sentence_bleu4(hyp, ref)
        sums["rouge-1"] += rouge_n(hyp, ref, 1)
        sums["rouge-2"] += rouge_n(hyp, ref, 2)
        sums["rouge-l"] += rouge_l(hyp, ref)
    count = max(1, len(predictions))
    return {name: 100 * total / count for name, total in sums.items()}
