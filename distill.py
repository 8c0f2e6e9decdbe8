"""Stage 4, R1-style distillation: learn to think before answering, from reasoning traces.

    python distill.py                                       # built-in demo problems, after python sft_long.py
    python distill.py --data_path out/r1/gsm8k.jsonl        # your R1 data (see python -m dataset.convert)
    python distill.py --data_path r1.jsonl --teacher out/big/distill.pth   # white-box, from a teacher

Everything special about this stage is in this file (the loop, precision, checkpoints and
resume are trainer/'s):
  data   chat data whose replies think: the MiniMind shape (<think>/<answer>
         tags), DeepSeek style (</think> then a bare answer), API dumps
         (reasoning_content + content) or {"question", "answer"} records. All are
         normalised to <think>\\n...\\n</think>\\n<answer>\\n...\\n</answer>; a record with
         an unclosed, nested or duplicated tag or an empty answer is an error
         (or, with --skip_bad, counted and skipped).
  loss   SFT's mask, with the four tag tokens weighted --tag_weight and the
         thinking span --think_weight, normalised by the total weight
         (below). With --teacher, alpha * T^2 * KL(teacher || student)
         + (1 - alpha) * CE on the same weighted tokens.
  start  <out_dir>/sft_long.pth (--init); the weights go to <out_dir>/distill.pth.

The losses, in full:

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
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from model import IGNORE_INDEX, CheckpointError, SpongeBob, load_model
from tokenizer import SpongeTokenizer
from trainer import StageData, StageLoss, train_stage
from trainer.chat_data import ChatConfig, chat_data
from trainer.config import non_negative, option, positive, within
from trainer.stage import Batch
from trainer.distributed import DistInfo
from trainer.loop import fit
from trainer.reference import packed_inputs


@dataclass
class DistillConfig(ChatConfig):
    tag_weight: float = option(10.0, "loss weight of the <think> </think> <answer> </answer> tokens in the replies",
                               check=non_negative)
    think_weight: float = option(1.0, "loss weight of the tokens between <think> and </think>", check=non_negative)
    teacher: str = option("", "white-box distillation from this checkpoint (same tokenizer); empty = off")
    kd_alpha: float = option(0.5, "with --teacher: share of the KL term (the rest is cross-entropy on the data)",
                             check=within(0, 1, high_open=False))
    kd_temperature: float = option(2.0, "with --teacher: softmax temperature of both models in the KL term",
                                   check=positive)


# The seed's advice: a very low lr at an effective batch of about 600 rows of 1024.
REFERENCE = dict(epochs=1, batch_size=24, accumulation_steps=25, learning_rate=1e-6,
                 min_lr=1e-7, warmup_steps=10, max_seq_len=1024, save_interval=100, eval_interval=50)
# The CPU demo after the long-SFT demo: a few minutes on the built-in problems. Half of
# them are answered without working (dataset/demo/reason.py), so one packed epoch is
# only 66 steps: the 150 steps run into the third.
DEMO = dict(epochs=3, max_steps=150, batch_size=16, accumulation_steps=1,
            max_seq_len=512, learning_rate=1e-3, min_lr=1e-4, warmup_steps=10, save_interval=100,
            eval_interval=100, log_interval=5, eval_batches=10)


def build_data(cfg: DistillConfig, tok: SpongeTokenizer, dist: DistInfo) -> StageData:
    # Weighed per conversation, before any packing, so a weight never leaks into the next one.
    weigh = partial(reasoning_weights, tag_ids=(tok.think_id, tok.think_end_id, tok.answer_id, tok.answer_end_id),
                    think_open_id=tok.think_id, think_close_id=tok.think_end_id,
                    tag_weight=cfg.tag_weight, think_weight=cfg.think_weight)
    data = chat_data(cfg, tok, dist, "distill", reasoning=True, weigh=weigh)
    data.description += f"; tag weight {cfg.tag_weight:g}, think weight {cfg.think_weight:g}"
    return data


def build_loss(cfg: DistillConfig, tok: SpongeTokenizer, device: torch.device,
               model: SpongeBob | None = None) -> TeacherLoss | None:
    """Cross-entropy on the weighted tokens, or the teacher's mix with --teacher."""
    if not cfg.teacher:
        return None
    # load_model refuses a teacher trained with another tokenizer or vocabulary size.
    teacher, _ = load_model(cfg.teacher, tokenizer=tok, device=device)
    if teacher.config.max_position_embeddings < cfg.max_seq_len:
        raise CheckpointError(f"--teacher {cfg.teacher}: context of {teacher.config.max_position_embeddings} "
                              f"tokens is shorter than --max_seq_len {cfg.max_seq_len}")
    return TeacherLoss(teacher, cfg.kd_alpha, cfg.kd_temperature)


# ------------------------------------------------------------------ the losses
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


class TeacherLoss(StageLoss):
    """The engine's loss_fn for white-box distillation: runs the frozen teacher on
    the same inputs (no grad, eval mode, under the engine's autocast) and mixes
    its soft targets with the hard labels."""

    def __init__(self, teacher: SpongeBob, alpha: float, temperature: float):
        self.teacher = teacher.eval().requires_grad_(False)
        self.alpha, self.temperature = alpha, temperature

    def __call__(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        # Packed rows: the teacher must see the same positions and the same mask, or its targets
        # would be those of conversations reading each other.
        with torch.no_grad():
            teacher_logits = self.teacher(batch["input_ids"], **packed_inputs(batch))
        return distillation_loss(logits, teacher_logits, batch["targets"], batch.get("loss_weight"),
                                 self.alpha, self.temperature)


if __name__ == "__main__":
    train_stage("distill", __doc__, REFERENCE, DEMO, build_data, fit, build_loss, DistillConfig)
