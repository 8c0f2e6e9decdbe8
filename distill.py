"""Stage 4, R1-style distillation: learn to think before answering, from reasoning traces.

    python distill.py                                       # built-in demo problems, after python sft_long.py
    python distill.py --data_path out/r1/gsm8k.jsonl        # your R1 data (see python -m dataset.convert)
    python distill.py --data_path r1.jsonl --teacher out/big/distill.pth   # white-box, from a teacher

What is special about this stage (everything else lives in trainer/):
  data   chat data whose replies think: the MiniMind shape (<think>/<answer>
         tags), DeepSeek style (</think> then a bare answer), API dumps
         (reasoning_content + content) or {"question", "answer"} records. All are
         normalised to <think>\\n...\\n</think>\\n<answer>\\n...\\n</answer>; a record with
         an unclosed, nested or duplicated tag or an empty answer is an error
         (or, with --skip_bad, counted and skipped).
  loss   SFT's mask, with the four tag tokens weighted --tag_weight and the
         thinking span --think_weight, normalised by the total weight
         (trainer/losses.py). With --teacher, alpha * T^2 * KL(teacher || student)
         + (1 - alpha) * CE on the same weighted tokens.
  start  <out_dir>/sft_long.pth (--init); the weights go to <out_dir>/distill.pth.
"""
from dataclasses import dataclass
from functools import partial

import torch

from model import CheckpointError, SpongeBob, load_model
from tokenizer import SpongeTokenizer
from trainer import StageData, cli_config, run_stage
from trainer.chat_data import ChatConfig, chat_data
from trainer.config import _f
from trainer.distributed import DistInfo
from trainer.losses import TeacherLoss, reasoning_weights


@dataclass
class DistillConfig(ChatConfig):
    tag_weight: float = _f(10.0, "loss weight of the <think> </think> <answer> </answer> tokens in the replies")
    think_weight: float = _f(1.0, "loss weight of the tokens between <think> and </think>")
    teacher: str = _f("", "white-box distillation from this checkpoint (same tokenizer); empty = off")
    kd_alpha: float = _f(0.5, "with --teacher: share of the KL term (the rest is cross-entropy on the data)")
    kd_temperature: float = _f(2.0, "with --teacher: softmax temperature of both models in the KL term")


# The seed's advice: a very low lr at an effective batch of about 600 rows of 1024.
REFERENCE = dict(epochs=1, batch_size=24, accumulation_steps=25, learning_rate=1e-6,
                 min_lr=1e-7, warmup_steps=10, max_seq_len=1024, save_interval=100, eval_interval=50)
# The CPU demo after the long-SFT demo: a few minutes on the built-in problems.
DEMO = dict(epochs=1, max_steps=150, batch_size=16, accumulation_steps=1,
            max_seq_len=512, learning_rate=1e-3, min_lr=1e-4, warmup_steps=10, save_interval=100,
            eval_interval=100, log_interval=5, eval_batches=10)


def build_data(cfg: DistillConfig, tok: SpongeTokenizer, dist: DistInfo) -> StageData:
    # Weighed per conversation, before any packing, so a weight never leaks into the next one.
    weigh = partial(reasoning_weights, tag_ids=(tok.think_id, tok.think_end_id, tok.answer_id, tok.answer_end_id),
                    think_open_id=tok.think_id, think_close_id=tok.think_end_id,
                    tag_weight=cfg.tag_weight, think_weight=cfg.think_weight)
    data = chat_data(cfg, tok, dist, demo_kind="r1", reasoning=True, weigh=weigh)
    data.description += f"; tag weight {cfg.tag_weight:g}, think weight {cfg.think_weight:g}"
    return data


def build_loss(cfg: DistillConfig, tok: SpongeTokenizer, device: torch.device,
               model: SpongeBob | None = None) -> TeacherLoss | None:
    """Cross-entropy on the weighted tokens, or the teacher's mix with --teacher."""
    if not cfg.teacher:
        return None
    if not 0 <= cfg.kd_alpha <= 1 or cfg.kd_temperature <= 0:
        raise ValueError(f"--kd_alpha {cfg.kd_alpha} must be in [0, 1] and --kd_temperature "
                         f"{cfg.kd_temperature} above 0")
    # load_model refuses a teacher trained with another tokenizer or vocabulary size.
    teacher, _ = load_model(cfg.teacher, tokenizer=tok, device=device)
    if teacher.config.max_position_embeddings < cfg.max_seq_len:
        raise CheckpointError(f"--teacher {cfg.teacher}: context of {teacher.config.max_position_embeddings} "
                              f"tokens is shorter than --max_seq_len {cfg.max_seq_len}")
    return TeacherLoss(teacher, cfg.kd_alpha, cfg.kd_temperature)


if __name__ == "__main__":
    cfg = cli_config(__doc__, REFERENCE, DEMO, DistillConfig, init_from="sft_long")
    run_stage(cfg, "distill", build_data, build_loss)
