"""Preference evaluation (eval_model.py --eval_file PAIRS): does a model prefer the chosen replies?

For every pair (dataset/preference.py) both conversations are scored teacher-forced:
the summed log-probability of each reply's trained tokens (SFT's mask) under the
model and under a reference (DPO's starting point). Reported:

  chosen likelier    share of pairs whose chosen reply is the more probable reply as a
                     whole (higher summed log-prob) under the model: reference-free, so
                     before (the SFT model) and after (the DPO model) compare directly
  chosen preferred   the same by mean log-prob per token (SimPO's view: a short rejected
                     reply no longer wins by being short)
  reward accuracy    share of pairs with beta * [(log pi(c) - log ref(c)) - (log pi(r) - log ref(r))] > 0:
                     DPO's own implicit reward (rewards/accuracies in training); 0 for the reference itself
  reward margin      the mean of that bracket times beta (rewards/margins)

With reference=None (the report's reference-free view) the reference is not run
and the two reward figures are None.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from dataset.chat_mask import shift_targets, tokenize_chat
from dataset.preference import iter_pairs
from dataset.readers import SkipStats
from model import IGNORE_INDEX, SpongeBob
from tokenizer import SpongeTokenizer


@torch.no_grad()
def reply_logps(model: SpongeBob, tok: SpongeTokenizer, messages: list[dict]) -> tuple[float, int]:
    """(summed log-prob of the reply's trained tokens, their count), teacher-forced."""
    ids, mask = tokenize_chat(messages, tok)
    inputs, targets = shift_targets(ids, mask)
    device = model.embed.weight.device
    logits = model(torch.tensor([inputs], device=device))[0]
    t = torch.tensor(targets, device=device)
    logp = -F.cross_entropy(logits.float(), t, ignore_index=IGNORE_INDEX, reduction="none")
    return float(logp.sum()), int((t != IGNORE_INDEX).sum())


def evaluate_pairs(model: SpongeBob, reference: SpongeBob | None, tok: SpongeTokenizer, path: Path, beta: float,
                   data_format: str | None = None, skip: SkipStats | None = None,
                   max_samples: int | None = None) -> dict:
    limit = model.config.max_position_embeddings
    n = likelier = preferred = rewarded = 0
    margin = chosen_sum = rejected_sum = 0.0
    for _, (prompt, chosen, rejected) in iter_pairs(path, data_format, skip):
        convs = [prompt + [{"role": "assistant", "content": reply}] for reply in (chosen, rejected)]
        if any(len(tok.apply_chat_template(c, tokenize=True)) > limit for c in convs):
            continue  # longer than the model's context: not scorable
        (pc, nc), (pr, nr) = (reply_logps(model, tok, c) for c in convs)
        (rc, _), (rr, _) = (reply_logps(reference, tok, c) for c in convs) if reference is not None \
            else ((0.0, 0), (0.0, 0))
        delta = beta * ((pc - rc) - (pr - rr))
        n += 1
        likelier += pc > pr
        preferred += pc / max(nc, 1) > pr / max(nr, 1)
        rewarded += delta > 0
        margin, chosen_sum, rejected_sum = margin + delta, chosen_sum + pc, rejected_sum + pr
        if max_samples and n >= max_samples:
            break
    per_pair = max(n, 1)
    rewards = reference is not None
    return {"pairs": n, "chosen_likelier": likelier / per_pair, "chosen_preferred": preferred / per_pair,
            "reward_accuracy": rewarded / per_pair if rewards else None,
            "reward_margin": margin / per_pair if rewards else None,
            "logps_chosen": chosen_sum / per_pair, "logps_rejected": rejected_sum / per_pair}


def format_pref_report(report: dict, beta: float) -> str:
    return "\n".join([
        f"pairs              {report['pairs']}",
        f"chosen likelier    {100 * report['chosen_likelier']:.1f}%   (higher summed log-prob of the reply, no reference)",
        f"chosen preferred   {100 * report['chosen_preferred']:.1f}%   (higher mean log-prob per token, no reference)",
        f"reward accuracy    {100 * report['reward_accuracy']:.1f}%   (DPO's implicit reward against the reference, "
        f"beta {beta:g})",
        f"reward margin      {report['reward_margin']:.3f}",
        f"logps chosen       {report['logps_chosen']:.2f}",
        f"logps rejected     {report['logps_rejected']:.2f}",
    ])
