"""Which checkpoint each eval/serve/export mode loads, and loading it with its tokenizer.

eval_model.py, serve.py and export.py pick a stage's model by --model_mode inside
--out_dir (the folder the stages wrote, `out` by default), or take a --ckpt path;
this is the one place that knows the modes, so no script imports another.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from model import CheckpointError, SpongeBob, load_model
from tokenizer import SpongeTokenizer, TokenizerError, load_tokenizer
from trainer.cli import relative_note
from trainer.device import pick_device

# mode -> (stage, the checkpoint that stage's script writes, relative to its --out_dir)
MODEL_MODES: dict[int, tuple[str, str]] = {
    0: ("pretrain", "pretrain.pth"),
    1: ("sft", "sft.pth"),
    2: ("distill", "distill.pth"),
    3: ("sft_long", "sft_long.pth"),
    4: ("dpo", "dpo.pth"),
    5: ("grpo", "grpo.pth"),
}
REASONING_MODES = (2, 5)  # models that think before they answer: <think>...</think><answer>...</answer>
STAGE_SCRIPTS = {stage: f"{stage}.py" for stage, _ in MODEL_MODES.values()}
MODES_HELP = "0 pretrain (continue text), 1 sft, 2 distill (thinks), 3 sft_long, 4 dpo, 5 grpo (thinks)"


class UserError(Exception):
    """Something the user can fix; printed as one line, exit status 2."""


def checkpoint_path(args: argparse.Namespace) -> Path:
    """--ckpt, or the checkpoint that --model_mode's stage writes in --out_dir."""
    if args.ckpt:
        return Path(args.ckpt)
    return Path(args.out_dir) / MODEL_MODES[args.model_mode][1]


def load(args: argparse.Namespace) -> tuple[SpongeBob, SpongeTokenizer, torch.device]:
    """The model and tokenizer for args (model_mode, ckpt, out_dir, device), with a one-line
    description on stderr, and a warning when a chat mode gets a model that never saw a chat."""
    stage = MODEL_MODES[args.model_mode][0]
    path = checkpoint_path(args)
    if not path.is_file():
        out_dir = f" --out_dir {args.out_dir}" if args.out_dir != "out" else ""
        how = "check the path" if args.ckpt else f"run python {STAGE_SCRIPTS[stage]}{out_dir} first, or pass --ckpt"
        raise UserError(f"{path} not found{relative_note(path)}: {how}")
    try:
        device = pick_device(args.device)
    except ValueError as e:  # a known device that this machine does not have
        raise UserError(str(e)) from None
    except RuntimeError:  # torch.device("nonsense")
        raise UserError(f"--device {args.device}: not a device; use cuda, cuda:N, mps, cpu or auto") from None
    try:
        tok = load_tokenizer()
        model, meta = load_model(path, tokenizer=tok, device=device)
    except (CheckpointError, TokenizerError) as e:
        raise UserError(str(e)) from None
    trained = ", ".join(f"{key} {meta[key]}" for key in ("stage", "step") if key in meta)
    print(f"loaded {path}{f' ({trained})' if trained else ''}: {model.num_parameters():,} parameters, "
          f"device {device}", file=sys.stderr)
    if args.model_mode != 0 and meta.get("stage") == "pretrain":
        print(f"warning: {path} is a pretrained model that has never seen a chat; expect it to continue the "
              f"text rather than answer (fine-tune it with sft.py, or use --model_mode 0)", file=sys.stderr)
    return model, tok, device
