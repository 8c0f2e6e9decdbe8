"""Command lines that fail in one line: every script's parser, with did-you-mean for flags.

argparse's own errors print the whole usage (21 lines for pretrain.py) and then
say only "unrecognized arguments". Users who come from MiniMind or
LLaMA-Factory type the flag names they know (--lr, --save_dir, --model-mode),
so an unknown flag is answered with the name it most likely meant:

    error: unknown option --lr (did you mean --learning_rate?)

Every script (the stages, eval_model, serve, export, train_tokenizer) builds its
parser with OneLineParser, so the same rule holds everywhere.
"""
from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import NoReturn

# Names people bring from MiniMind, LLaMA-Factory, Hugging Face Trainer and nanoGPT,
# mapped to ours. Only suggested when the script really has the target flag.
ALIASES = {
    "lr": "learning_rate", "max_lr": "learning_rate", "bs": "batch_size", "batch": "batch_size",
    "per_device_train_batch_size": "batch_size", "micro_batch_size": "batch_size",
    "gradient_accumulation_steps": "accumulation_steps", "grad_accum": "accumulation_steps",
    "accumulation": "accumulation_steps", "epoch": "epochs", "num_train_epochs": "epochs", "max_iters": "max_steps",
    "warmup_iters": "warmup_steps", "warmup": "warmup_steps", "save_dir": "out_dir", "output_dir": "out_dir",
    "out": "out_dir", "max_length": "max_seq_len", "cutoff_len": "max_seq_len", "seq_len": "max_seq_len",
    "block_size": "max_seq_len", "data": "data_path", "dataset": "data_path", "train_file": "data_path",
    "data_dir": "data_path", "save_steps": "save_interval", "logging_steps": "log_interval",
    "eval_steps": "eval_interval", "resume_from_checkpoint": "resume", "from_resume": "resume",
    "dim": "hidden_size", "n_embd": "hidden_size", "n_layers": "num_hidden_layers", "n_layer": "num_hidden_layers",
    "num_layers": "num_hidden_layers", "n_heads": "num_attention_heads", "n_head": "num_attention_heads",
    "n_kv_heads": "num_key_value_heads", "hidden_dim": "intermediate_size", "ffn_dim": "intermediate_size",
    "max_seq_length": "max_seq_len", "weight": "ckpt", "load": "ckpt", "model_path": "ckpt", "checkpoint": "ckpt",
    "load_from": "init", "init_from": "init", "model_name_or_path": "init", "mode": "model_mode",
    "temp": "temperature", "max_tokens": "max_new_tokens", "wandb": "use_wandb", "grad_clip_norm": "grad_clip",
    "max_grad_norm": "grad_clip",
}
# Flags of other projects that have no counterpart here: say so instead of guessing.
UNSUPPORTED = {
    "use_moe": "mixture-of-experts is not supported: SpongeBob models are dense Llamas",
    "flash_attn": "attention already uses PyTorch's SDPA (flash kernels where the GPU has them)",
    "ddp": "multi-GPU runs start with torchrun --nproc_per_node N <script>, no flag needed",
}


def normalise(flag: str) -> str:
    """'--model-mode=1' -> 'model_mode'."""
    return flag.lstrip("-").split("=", 1)[0].replace("-", "_")


def suggest(name: str, known: list[str]) -> str | None:
    """The known flag a mistyped or foreign name most likely meant, or None."""
    if name in known:
        return name  # only the dashes were wrong
    if ALIASES.get(name) in known:
        return ALIASES[name]
    longer = [k for k in known if k.startswith(name)]
    if len(longer) == 1 and len(name) >= 3:  # --vocab for --vocab_size
        return longer[0]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    return close[0] if close else None


def unknown_option(flag: str, known: list[str]) -> str:
    """The one-line message for a flag the script does not have."""
    name = normalise(flag)
    if name in UNSUPPORTED and name not in known:
        return f"--{name}: {UNSUPPORTED[name]}"
    hint = suggest(name, known)
    shown = flag.split("=", 1)[0]
    return f"unknown option {shown}" + (f" (did you mean --{hint}?)" if hint else "; see --help for the options")


def unknown_options(flags: list[str], known: list[str]) -> str:
    """All unknown flags in one line, each with its suggestion."""
    return "; ".join(unknown_option(f, known) for f in flags)


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and did-you-mean for unknown flags."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)  # --lr must not silently mean --lr_something
        super().__init__(*args, **kwargs)

    def known_flags(self) -> list[str]:
        return [normalise(s) for a in self._actions for s in a.option_strings if s.startswith("--")]

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, extra = self.parse_known_args(args, namespace)
        flags = [a for a in extra if a.startswith("-") and a != "-"]
        if flags:
            self.error(unknown_options(flags, self.known_flags()))
        if extra:
            self.error(f"unexpected argument '{extra[0]}' (options are written --name value)")
        return parsed

    def error(self, message: str) -> NoReturn:
        # argparse's "argument --x: invalid int value: 'y'" is already one line; keep it, drop the usage.
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def relative_note(path: str | Path) -> str:
    """' (relative to CWD)' for a relative path, so a message says where it looked; '' otherwise."""
    return "" if Path(path).is_absolute() else f" (relative to {Path.cwd()})"


def shown_path(path: str | Path) -> str:
    """A path for a message: a relative one says what it is relative to."""
    return f"{path}{relative_note(path)}"
