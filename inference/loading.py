"""Which checkpoint each eval/serve/export mode loads, and loading it with its tokenizer.

eval_model.py, serve.py and export.py pick a stage's model by --model_mode inside
--out_dir (the folder the stages wrote, `out` by default), or take a --ckpt path;
the modes themselves are the table of stages (common/stages.py), so no script imports another.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from model import CheckpointError, SpongeBob, checkpoint_tokenizer, load_model
from tokenizer import SpongeTokenizer, TokenizerError, load_tokenizer, tokenizer_for
from common.cli import relative_note
from common.device import pick_device
from common.stages import BY_NAME, STAGES, Stage

BY_MODE = {s.mode: s for s in STAGES}
MODES_HELP = ", ".join(f"{s.mode} {s.name}{' (thinks)' if s.thinks else ''}" for s in sorted(STAGES, key=lambda s: s.mode))

__all__ = ["MODES_HELP", "UserError", "checkpoint_path", "load", "mode_number", "mode_stage"]


def mode_number(text: str | int) -> int:
    """argparse type of --model_mode: a mode number (2) or a stage name (distill) -> the number."""
    value = str(text).strip()
    if value.lstrip("-").isdigit() and int(value) in BY_MODE:
        return int(value)
    if value in BY_NAME:
        return BY_NAME[value].mode
    raise argparse.ArgumentTypeError(f"{value}: choose a number or a name: {MODES_HELP}")


def mode_stage(mode: int) -> Stage:
    """The row of the table of stages that a --model_mode number names."""
    return BY_MODE[mode]


class UserError(Exception):
    """Something the user can fix; printed as one line, exit status 2."""


def checkpoint_path(args: argparse.Namespace) -> Path:
    """--ckpt, or the checkpoint that --model_mode's stage writes in --out_dir."""
    if args.ckpt:
        return Path(args.ckpt)
    return Path(args.out_dir) / mode_stage(args.model_mode).checkpoint


def load(args: argparse.Namespace) -> tuple[SpongeBob, SpongeTokenizer, torch.device]:
    """The model and tokenizer for args (model_mode, ckpt, out_dir, device), with a one-line
    description on stderr, and a warning when a chat mode gets a model that never saw a chat."""
    stage = mode_stage(args.model_mode)
    path = checkpoint_path(args)
    if not path.is_file():
        out_dir = f" --out_dir {args.out_dir}" if args.out_dir != "out" else ""
        how = "check the path" if args.ckpt else f"run python {stage.script}{out_dir} first, or pass --ckpt"
        raise UserError(f"{path} not found{relative_note(path)}: {how}")
    try:
        device = pick_device(args.device)
    except ValueError as e:  # a known device that this machine does not have
        raise UserError(str(e)) from None
    except RuntimeError:  # torch.device("nonsense")
        raise UserError(f"--device {args.device}: not a device; use cuda, cuda:N, mps, cpu or auto") from None
    try:
        given = getattr(args, "tokenizer_dir", None)
        tok = load_tokenizer(given) if given else tokenizer_for(checkpoint_tokenizer(path))
        model, meta = load_model(path, tokenizer=tok, device=device)
    except (CheckpointError, TokenizerError) as e:
        raise UserError(str(e)) from None
    trained = ", ".join(f"{key} {meta[key]}" for key in ("stage", "step") if key in meta)
    own = f", tokenizer {tok.path}" if "dir" in tok.record() else ""
    print(f"loaded {path}{f' ({trained})' if trained else ''}: {model.num_parameters():,} parameters, "
          f"device {device}{own}", file=sys.stderr)
    if stage.chat and meta.get("stage") == "pretrain":
        print(f"warning: {path} is a pretrained model that has never seen a chat; expect it to continue the "
              f"text rather than answer (fine-tune it with sft.py, or use --model_mode 0)", file=sys.stderr)
    return model, tok, device
