"""Batch evaluation of a model on a chat file: predictions, BLEU/ROUGE, loss and speed.

    python eval_model.py --model_mode 1 --eval_file data/alpaca_zh_demo.json --out out/eval/sft.jsonl

Each conversation in the file (any chat format dataset/chat_formats.py reads)
becomes one sample: everything before its LAST assistant turn is the prompt and
that turn is the reference. The report gives, like LLaMA-Factory's predict run:

  bleu-4, rouge-1/2/l   the generated reply against the reference, averaged over
                        samples x 100 (evaluation/text_metrics.py: per-character
                        tokens; ROUGE-L is plain F1, where LLaMA-Factory's rouge
                        package weights recall by beta = P/R, and its ROUGE runs
                        over jieba words, so compare our ROUGE with ours only)
  loss, ppl             teacher-forced cross-entropy of the reference reply
                        given the same prompt, averaged over its tokens (the
                        reply's <|im_end|> included in chat modes), and exp(loss)
  tokens/s              generated tokens over the seconds spent generating

When every reference has an <answer> part (R1 data), the report adds the
reasoning scores of evaluation/reasoning_metrics.py against the reference's
answer: format compliance, accuracy, strict accuracy and mean think length.
Those are computed for any mode, so an SFT-only model and a distilled one can be
compared on the same file.

How the prompt is shown to the model depends on the stage. A chat model
(modes 1-3) gets the ChatML conversation with the assistant header, exactly as in
SFT. A pretrained model (mode 0) has never seen ChatML, so it gets the plain
text of the turns (system, then user and assistant contents, one per line) to
continue; that is the honest "before" of a before/after comparison.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from dataset.chat_formats import iter_conversations
from dataset.readers import SkipStats
from inference.budget import ThinkBudget
from inference.batch import generate_batch
from inference.sampling import SamplingConfig
from inference.think_split import split_reasoning
from model import SpongeBob
from tokenizer import SpongeTokenizer
from .reasoning_metrics import score_replies
from .text_metrics import corpus_scores


@dataclass
class EvalSample:
    where: str            # file:line, for the predictions file and for errors
    prompt: str           # the prompt as text (what --out records)
    prompt_ids: list[int]
    reference: str        # the last assistant turn
    reference_ids: list[int]  # its token ids as the model should produce them


def _plain_prompt(turns: list[dict]) -> str:
    return "\n".join(m["content"] for m in turns) + "\n"


def make_sample(where: str, messages: list[dict], tok: SpongeTokenizer, chat: bool) -> EvalSample:
    """Split a conversation at its last assistant turn into prompt and reference."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    turns, reference = messages[:last], messages[last]["content"]
    if chat:
        prompt_ids = tok.apply_chat_template(turns, add_generation_prompt=True, tokenize=True)
        prompt = tok.decode(prompt_ids)
        reference_ids = tok.encode(reference) + [tok.im_end_id]
    else:
        # The pretraining stream starts every document after <|endoftext|>.
        prompt = _plain_prompt(turns)
        prompt_ids = [tok.endoftext_id] + tok.encode(prompt)
        reference_ids = tok.encode(reference)
    return EvalSample(where, prompt, list(prompt_ids), reference, reference_ids)


def load_samples(path: str | Path, tok: SpongeTokenizer, chat: bool, data_format: str | None = None,
                 skip: SkipStats | None = None, max_samples: int | None = None) -> list[EvalSample]:
    """The samples of one chat file; bad records raise DataError unless skip counts them."""
    samples = []
    for where, messages in iter_conversations(path, data_format, skip):
        samples.append(make_sample(where, messages, tok, chat))
        if max_samples is not None and len(samples) >= max_samples:
            break
    return samples


@torch.no_grad()
def reference_loss(model: SpongeBob, sample: EvalSample) -> tuple[float, int]:
    """(summed cross-entropy, token count) of the reference reply after the prompt.
    A sequence longer than the context keeps its end: the reply and the prompt's tail."""
    ids = sample.prompt_ids + sample.reference_ids
    n_ref = len(sample.reference_ids)
    context = model.config.max_position_embeddings
    ids = ids[-(context + 1):]
    n_ref = min(n_ref, len(ids) - 1)
    device = model.embed.weight.device
    seq = torch.tensor(ids, dtype=torch.long, device=device)
    logits = model(seq[None, :-1])[0, -n_ref:].float()
    loss = F.cross_entropy(logits, seq[-n_ref:], reduction="sum")
    return float(loss), n_ref


PREDICT_BATCH = 64  # prompts generated together (inference/batch.py): each row as if it were alone


def predict_all(model: SpongeBob, tok: SpongeTokenizer, samples: list[EvalSample], sampling: SamplingConfig,
                seed: int | None, budget: ThinkBudget | None, show_progress: bool = True) -> tuple[list, float]:
    """([(reply text, generated token count)], seconds): every sample generated, PREDICT_BATCH at a time.
    With a seed, every sample gets its own generator seeded alike, so a prediction does not depend
    on the samples generated beside or before it."""
    results, seconds = [], 0.0
    device = model.embed.weight.device
    for start in tqdm(range(0, len(samples), PREDICT_BATCH), desc="evaluating", unit=" batch",
                      disable=not show_progress):
        chunk = samples[start:start + PREDICT_BATCH]
        generators = [torch.Generator(device=device).manual_seed(seed) if seed is not None else None for _ in chunk]
        began = time.perf_counter()
        outputs = generate_batch(model, [s.prompt_ids for s in chunk], [sampling] * len(chunk), generators,
                                 [budget] * len(chunk))
        seconds += time.perf_counter() - began
        results += [(tok.decode(ids, skip_special_tokens=True).strip(), len(ids)) for ids in outputs]
    return results, seconds


def gold_answers(samples: list[EvalSample]) -> list[str] | None:
    """The <answer> part of every reference, or None unless all of them have one."""
    if not samples or not all("<answer>" in s.reference for s in samples):
        return None
    return [split_reasoning(s.reference)[1].strip() for s in samples]


def evaluate_samples(model: SpongeBob, tok: SpongeTokenizer, samples: list[EvalSample],
                     sampling: SamplingConfig, seed: int | None = None, out_path: Path | None = None,
                     show_progress: bool = True, budget: ThinkBudget | None = None) -> dict:
    """Generate for every sample, score, and write predictions JSONL to out_path (atomically)."""
    # A chat reply ends at <|im_end|>; a continuation at <|endoftext|>.
    sampling = replace(sampling, stop_ids=(tok.im_end_id, tok.endoftext_id))
    predicted, gen_seconds = predict_all(model, tok, samples, sampling, seed, budget, show_progress)
    predictions, rows = [text for text, _ in predicted], []
    gen_tokens = sum(n for _, n in predicted)
    loss_sum, loss_tokens = 0.0, 0
    for sample, text in zip(samples, predictions):
        loss, n_ref = reference_loss(model, sample)
        loss_sum, loss_tokens = loss_sum + loss, loss_tokens + n_ref
        rows.append({"where": sample.where, "prompt": sample.prompt, "label": sample.reference, "predict": text})
    report = {"samples": len(samples), **corpus_scores(predictions, [s.reference for s in samples])}
    mean_loss = loss_sum / max(loss_tokens, 1)
    report.update({"loss": mean_loss, "ppl": math.exp(min(mean_loss, 50.0)), "generated_tokens": gen_tokens,
                   "tokens_per_s": gen_tokens / gen_seconds if gen_seconds > 0 else 0.0})
    golds = gold_answers(samples)
    if golds is not None:
        report["reasoning"] = score_replies(predictions, golds, lambda text: len(tok.encode(text)))
    if out_path is not None:
        write_jsonl_atomic(out_path, rows)
    return report


def write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    """Write to a sibling temp file, then rename: an interrupted run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def format_report(report: dict) -> str:
    """One line per figure, in the order users compare them."""
    lines = [
        f"samples        {report['samples']}",
        f"bleu-4         {report['bleu-4']:.2f}",
        f"rouge-1        {report['rouge-1']:.2f}",
        f"rouge-2        {report['rouge-2']:.2f}",
        f"rouge-l        {report['rouge-l']:.2f}",
        f"loss           {report['loss']:.4f}   (reference replies, teacher-forced)",
        f"ppl            {report['ppl']:.2f}",
        f"tokens/s       {report['tokens_per_s']:.1f}   ({report['generated_tokens']} generated, "
        f"{PREDICT_BATCH} prompts at a time)",
    ]
    r = report.get("reasoning")
    if r is not None:
        lines += [f"compliance     {r['compliance']:.1f}%   (<think>...</think> then <answer>...</answer>)",
                  f"accuracy       {r['accuracy']:.1f}%   (strict, compliant and correct: {r['strict_accuracy']:.1f}%)",
                  f"think tokens   {r['mean_think_tokens']:.1f}   (mean over the {r['with_think']} replies that think)"]
    return "\n".join(lines)
