"""Multiple-choice accuracy (CMMLU, C-Eval) by option likelihood, with lm-eval's scoring rule.

Files: CSV with a header holding Question/question, A, B, C, D and Answer/answer
(CMMLU's `,Question,A,B,C,D,Answer` with its unnamed index column; C-Eval's
`id,question,A,B,C,D,answer[,explanation]`), or the same fields as JSONL. The
answer is one letter A-D. A missing column, an empty option or another answer is
a DataError naming file:line.

Scoring. A model is never asked to write a letter (a tiny model rarely does);
instead each option's text is a continuation of the prompt

    <|endoftext|>{question}\\n答案：

and the option with the highest summed log-probability of its tokens wins
(lm-eval's `acc`). Summed log-prob favours short options, so `acc_norm` also
picks by log-prob per character of the option, lm-eval's length normalisation.
Every stage gets the same plain prompt (no chat template), so the columns compare.
Chance is 25%. The prompt and the option are tokenized apart, so the option's
tokens are exactly its own.

The rule is lm-eval's (acc, and acc_norm by characters), but the template is ours:
lm-eval's own cmmlu_* and ceval-valid_* tasks list the four options in the prompt
and score the letters A-D, so their numbers differ from these. To reproduce ours
with lm-eval on an export (export.py --format hf), write a task whose doc_to_text is
"<|endoftext|>{{Question}}\n答案：", whose doc_to_choice is the four option texts,
with output_type multiple_choice and target_delimiter "" (lm-eval puts a space
before each choice by default); docs/report.md has the whole YAML.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from dataset.readers import DataError, expand_paths, iter_records
from .bpb import model_device

LETTERS = ("A", "B", "C", "D")
CHANCE = 0.25


@dataclass(frozen=True)
class Question:
    where: str            # file:line
    question: str
    options: tuple[str, str, str, str]
    answer: int           # index into options


def _field(record: dict, *names: str) -> str | None:
    for name in names:
        if isinstance(record.get(name), (str, int, float)):
            return str(record[name]).strip()
    return None


def parse_question(where: str, record: object) -> Question:
    """One CMMLU/C-Eval row; DataError 'file:line: what is wrong' otherwise."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a row with question, A, B, C, D and answer")
    question = _field(record, "Question", "question")
    if not question:
        raise DataError(f"{where}: no question (a 'Question' or 'question' column)")
    options = []
    for letter in LETTERS:
        option = _field(record, letter)
        if not option:
            raise DataError(f"{where}: option {letter} is missing or empty")
        options.append(option)
    answer = (_field(record, "Answer", "answer") or "").upper()
    if answer not in LETTERS:
        raise DataError(f"{where}: answer {answer!r} is not one of A, B, C, D")
    return Question(where, question, tuple(options), LETTERS.index(answer))


def iter_questions(paths: Sequence[str | Path], max_samples: int | None = None) -> Iterator[Question]:
    """The questions of every file, in order (a directory: its .csv/.jsonl files, sorted, as
    CMMLU's dev/ and test/ come); at most max_samples per file."""
    for path in expand_paths(paths):
        count = 0
        for line, record in iter_records(path):
            yield parse_question(f"{path}:{line}", record)
            count += 1
            if max_samples is not None and count >= max_samples:
                break


@torch.no_grad()
def option_logprobs(model: torch.nn.Module, prompt_ids: Sequence[int],
                    option_ids: Sequence[Sequence[int]]) -> list[float]:
    """Summed log p(option tokens | prompt) of each option, the options right-padded in one batch
    (causal attention: padding after a row's end changes nothing before it)."""
    width = len(prompt_ids) + max(len(o) for o in option_ids)
    rows = [list(prompt_ids) + list(o) + [0] * (width - len(prompt_ids) - len(o)) for o in option_ids]
    device = model_device(model)
    logits = model(torch.tensor(rows, device=device)[:, :-1]).float()
    logp = F.log_softmax(logits, dim=-1)
    start = len(prompt_ids) - 1  # the logits at position p predict token p + 1
    sums = []
    for r, option in enumerate(option_ids):
        steps = torch.arange(start, start + len(option), device=device)
        sums.append(float(logp[r, steps, torch.tensor(option, device=device)].sum()))
    return sums


def pick(logprobs: Sequence[float], lengths: Sequence[int] | None = None) -> int:
    """The index of the best option: by summed log-prob, or per unit of length when lengths are given."""
    scores = logprobs if lengths is None else [lp / max(n, 1) for lp, n in zip(logprobs, lengths)]
    return max(range(len(scores)), key=lambda i: scores[i])  # the first of equals, like argmax


def mc_prompt(question: str) -> str:
    return f"{question}\n答案："


def evaluate_mc(model: torch.nn.Module, tok, questions: Sequence[Question], context: int) -> dict:
    """acc and acc_norm (fractions) over the questions, and their count; a question and its longest
    option fit in context tokens (the trained length: bpb.trained_context), a long question keeping its end."""
    right = right_norm = n = 0
    for q in questions:
        prompt = [tok.endoftext_id] + tok.encode(mc_prompt(q.question))
        options = [tok.encode(o) or [tok.endoftext_id] for o in q.options]
        prompt = prompt[-(context - max(len(o) for o in options)):]  # a long question keeps its end
        logprobs = option_logprobs(model, prompt, options)
        right += pick(logprobs) == q.answer
        right_norm += pick(logprobs, [len(o) for o in q.options]) == q.answer
        n += 1
    return {"n": n, "acc": right / max(n, 1), "acc_norm": right_norm / max(n, 1)}
