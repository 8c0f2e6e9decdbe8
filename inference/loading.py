"""Which checkpoint each eval/serve mode loads, and loading it with its tokenizer.

eval_model.py and serve.py both pick a stage's model by --model_mode (or a --ckpt
path); this is the one place that knows the modes, so neither script imports the other.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from model import CheckpointError, SpongeBob, load_model
from tokenizer import SpongeTokenizer, TokenizerError, load_tokenizer
from trainer.device import pick_device

# mode -> (stage, the checkpoint that stage's script writes)
MODEL_MODES: dict[int, tuple[str, str]] = {
    0: ("pretrain", "out/pretrain.pth"),
    1: ("sft", "out/sft.pth"),
    2: ("distill", "out/distill.pth"),
    3: ("sft_long", "out/sft_long.pth"),
}
STAGE_SCRIPTS = {"pretrain": "pretrain.py", "sft": "sft.py", "distill": "distill.py", "sft_long": "sft_long.py"}


class UserError(Exception):
    """Something the user can fix; printed as one line, exit status 2."""


def load(args: argparse.Namespace) -> tuple[SpongeBob, SpongeTokenizer, torch.device]:
    """The model and tokenizer for args (model_mode, ckpt, device), with a one-line description on stderr."""
    stage, default_path = MODEL_MODES[args.model_mode]
    path = Path(args.ckpt or default_path)
    if not path.is_file():
        how = "check the path" if args.ckpt else f"run python {STAGE_SCRIPTS[stage]} first, or pass --ckpt"
        raise UserError(f"{path} not found: {how}")
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
    return model, tok, device
