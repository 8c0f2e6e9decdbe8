"""The distillation losses: weighted reasoning tags, and white-box distillation from a teacher.

Per-token weights. A distillation row is an SFT row (the loss mask is exactly
SFT's: assistant replies, each through its <|im_end|>) whose reply looks like

    <think>\\n step, step \\n</think>\\n<answer>\\n 12 \\n</answer><|im_end|>

Every trained target gets weight 1, except
  - the four tag tokens, which get --tag_weight (10 in the seeds), and
  - the tokens between <think> and </think>, which get --think_weight (default 1).
Weights only ever apply where the mask is already on: a tag in a user turn, a
prompt position or padding has no target, so it gets no weight. (The reference
tokenizer split the tags into common sub-tokens, so its x10 leaked onto those
sub-tokens wherever they appeared; ours are single tokens.)

Normalisation: weighted sum over weighted count,

    loss = sum_t w_t * l_t / sum_t w_t      over the trained targets t,

the same as token_loss and the engine's accumulation (it divides by the step's
total weight, across micro-batches and ranks). So raising the tags' weight raises
their share of the gradient without inflating the loss scale.

White-box distillation (--teacher): l_t = alpha * T^2 * KL(p_teacher || p_student)
+ (1 - alpha) * CE(target), both distributions softened by temperature T; T^2
keeps the soft term's gradient scale independent of T (Hinton et al. 2015).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from model import IGNORE_INDEX, SpongeBob

Batch = dict[str, torch.Tensor]


def reasoning_weights(targets: torch.Tensor, tag_ids: Sequence[int], think_open_id: int, think_close_id: int,
                      tag_weight: float = 10.0, think_weight: float = 1.0) -> torch.Tensor:
    """Per-target weights (B, T) for reasoning rows; 0 where the target is ignored."""
    trained = targets != IGNORE_INDEX
    is_tag = torch.isin(targets, torch.tensor(list(tag_ids), device=targets.device)) & trained
    # Depth of thinking at each target: opens so far minus closes so far, counting
    # only trained tags, so a literal <think> typed in a user turn changes nothing.
    opens = torch.cumsum((targets == think_open_id) & trained, dim=-1)
    closes = torch.cumsum((targets == think_close_id) & trained, dim=-1)
    thinking = (opens - closes > 0) & trained & ~is_tag
    weights = trained.float()
    weights = torch.where(thinking, torch.full_like(weights, think_weight), weights)
    return torch.where(is_tag, torch.full_like(weights, tag_weight), weights)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                      weight: torch.Tensor | None, alpha: float, temperature: float) -> torch.Tensor:
    """Summed sum_t w_t * (alpha * T^2 * KL_t + (1 - alpha) * CE_t) over trained targets."""
    vocab = student_logits.size(-1)
    student = student_logits.float().reshape(-1, vocab)
    teacher = teacher_logits.float().reshape(-1, vocab)
    flat_targets = targets.reshape(-1)
    trained = (flat_targets != IGNORE_INDEX).float()
    w = trained if weight is None else weight.reshape(-1).float() * trained
    ce = F.cross_entropy(student, flat_targets, ignore_index=IGNORE_INDEX, reduction="none")
    log_p_student = F.log_softmax(student / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)
    per_token = alpha * temperature ** 2 * kl + (1 - alpha) * ce
    return (per_token * w).sum()


class TeacherLoss:
    """The engine's loss_fn for white-box distillation: runs the frozen teacher on
    the same inputs (no grad, eval mode, under the engine's autocast) and mixes
    its soft targets with the hard labels."""

    def __init__(self, teacher: SpongeBob, alpha: float, temperature: float):
        self.teacher = teacher.eval().requires_grad_(False)
        self.alpha, self.temperature = alpha, temperature

    def __call__(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        # Packed rows: the teacher must see the same positions and the same mask, or its targets
        # would be those of conversations reading each other.
        packed = {k: batch[k] for k in ("position_ids", "attn_mask") if k in batch}
        with torch.no_grad():
            teacher_logits = self.teacher(batch["input_ids"], **packed).logits
        return distillation_loss(logits, teacher_logits, batch["targets"], batch.get("loss_weight"),
                                 self.alpha, self.temperature)
