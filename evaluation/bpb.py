"""Bits per byte of held-out text: how well a model predicts text, whatever its tokenizer.

    bits/byte = (sum over the text's tokens of -ln p(token | the tokens before)) / (ln 2 * UTF-8 bytes)

Loss per token depends on how long the tokens are; per byte it does not, so two
tokenizers (or a byte model) compare on the same text. Each text is scored as the
pretraining stream shows a document: <|endoftext|>, then its tokens, the first
token predicted from <|endoftext|> alone. A text longer than the context is scored
in consecutive windows, each conditioned only on its own tokens (a slight
overestimate at each window start, never an underestimate). The context is the
length the model was trained on (its checkpoint's max_seq_len: trained_context),
not the positions RoPE could reach: a model trained on rows of 512 has never seen
position 600, and scoring there would measure extrapolation, not the model.

The default held-out text (held_out_texts) is the demo's r1_test problems written
the way the pretraining corpus writes its worked problems (练习：question 解：steps
答案是answer。): the same kind of prose every stage has seen, on questions that no
training set asks (dataset/demo/corpus.py keeps them out of pretrain and r1).
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from common.reasoning import answer_span, think_span
from dataset.readers import iter_records
from dataset.text_fields import iter_texts


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


BATCH = 32  # windows scored in one forward


def windows(ids: Sequence[int], context: int) -> list[list[int]]:
    """ids cut into pieces of at most context + 1 tokens, each piece's last token the next one's first,
    so every token after the first is predicted exactly once."""
    return [list(ids[start:start + context + 1]) for start in range(0, len(ids) - 1, context)]


@torch.no_grad()
def summed_nll(model: torch.nn.Module, pieces: Sequence[Sequence[int]]) -> float:
    """Summed -ln p of every piece's tokens after its first, BATCH pieces right-padded per forward
    (causal attention: the padding after a piece changes nothing in it, and its targets are ignored)."""
    total, device = 0.0, model_device(model)
    for start in range(0, len(pieces), BATCH):
        chunk = pieces[start:start + BATCH]
        width = max(len(p) for p in chunk)
        inputs = torch.tensor([p[:-1] + [0] * (width - len(p)) for p in chunk], device=device)
        targets = torch.tensor([p[1:] + [-100] * (width - len(p)) for p in chunk], device=device)
        logits = model(inputs).float()
        total += float(F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum"))
    return total


def bits_per_byte(model: torch.nn.Module, token_lists: Sequence[Sequence[int]], n_bytes: int,
                  context: int) -> float:
    """sum of every list's NLL (its first id is the <|endoftext|> that starts it) / (ln 2 * n_bytes)."""
    if n_bytes <= 0:
        raise ValueError("bits per byte needs at least one byte of text")
    pieces = [w for ids in token_lists for w in windows(ids, context)]
    return summed_nll(model, pieces) / (math.log(2) * n_bytes)


def trained_context(model: torch.nn.Module, meta: dict) -> int:
    """The longest row the model was trained on (its checkpoint's max_seq_len), within its positions."""
    positions = model.config.max_position_embeddings
    return min(int(meta.get("max_seq_len") or positions), positions)


def text_bits_per_byte(model: torch.nn.Module, tok, texts: Sequence[str], context: int) -> float:
    """bits_per_byte of texts under the model, each text after <|endoftext|>, in windows of context tokens."""
    token_lists = [[tok.endoftext_id] + tok.encode(t) for t in texts]
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return bits_per_byte(model, token_lists, n_bytes, context)


def worked_problem_text(record: dict) -> str:
    """An r1 record as the pretraining corpus prints a worked problem (dataset/demo/pretrain.py)."""
    question = record["conversations"][0]["content"]
    reply = record["conversations"][-1]["content"]
    steps = "".join(line.strip() for line in (think_span(reply) or "").splitlines())
    answer = record.get("answer") or answer_span(reply).strip()
    return f"练习：{question}\n解：{steps}答案是{answer}。"


def held_out_texts(path: Path, from_r1: bool, max_samples: int | None) -> Iterator[str]:
    """The texts to score: any text file (dataset/readers.py's rules), or r1 records as worked problems."""
    count = 0
    source = ((f"{path}:{line}", worked_problem_text(r)) for line, r in iter_records(path)) if from_r1 \
        else iter_texts([path])
    for _, text in source:
        yield text
        count += 1
        if max_samples is not None and count >= max_samples:
            return
