"""Export a trained checkpoint for other tools: Hugging Face transformers, llama.cpp, Ollama.

  python export.py --model_mode 1 --format hf          (or --ckpt out/sft.pth)
      -> out/export/sft-hf/   a LlamaForCausalLM directory (safetensors, config,
         generation config, tokenizer with its chat template)
  python export.py --model_mode 2 --format gguf --dtype f16
      -> out/export/distill-f16.gguf   one GGUF file (f32, f16 or q8_0 weights)
  python export.py --out_dir runs/a --model_mode 1     runs/a/sft.pth -> runs/a/export/sft-hf/
  python export.py --ckpt out/sft.pth --format peft    a LoRA run's adapter -> out/export/sft-peft/
      (adapter_config.json + adapter_model.safetensors for Hugging Face peft, on the
      hf export of the adapter's base; hf and gguf exports of an adapter merge it in)

--model_mode picks a stage's checkpoint in --out_dir as eval_model.py does.

Any stage's checkpoint works (pretrain, sft, sft_long, distill): they all hold
the same model. The output is written next to its destination under a temporary
name and renamed into place when complete, so a failed export leaves nothing
behind. An existing output is only replaced with --overwrite.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from exporters.gguf_file import GGUF_DTYPES, write_gguf
from exporters.hf_dir import WEIGHTS_FILE, write_hf_export
from inference.loading import MODES_HELP, checkpoint_path, mode_number
from exporters.peft_dir import ADAPTER_WEIGHTS, write_peft_export
from model import (ADAPTER_FORMAT, CheckpointError, ModelConfig, SpongeBob, checkpoint_tokenizer, load_model,
                   read_checkpoint)
from tokenizer import TokenizerError, load_tokenizer, tokenizer_for
from common.cli import OneLineParser, shown_path


class UserError(Exception):
    """Something the user can fix; printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=None, help="model checkpoint to export, e.g. out/sft.pth (or use --model_mode)")
    p.add_argument("--model_mode", type=mode_number, default=None,
                   help=MODES_HELP + "; a number or a stage name; exports that stage's checkpoint in --out_dir")
    p.add_argument("--out_dir", default="out",
                   help="the folder the training stages wrote to; exports go to its export/ folder by default")
    p.add_argument("--format", choices=("hf", "gguf", "peft"), default="hf",
                   help="hf: a transformers LlamaForCausalLM directory; gguf: one file for llama.cpp/Ollama; "
                        "peft: a LoRA checkpoint's adapter alone, for Hugging Face peft")
    p.add_argument("--export_dir", default=None,
                   help="hf/peft: output directory (default <out_dir>/export/<ckpt name>-hf or -peft)")
    p.add_argument("--out_file", default=None,
                   help="gguf: output file (default <out_dir>/export/<ckpt name>-<dtype>.gguf)")
    p.add_argument("--dtype", choices=GGUF_DTYPES, default="f32",
                   help="gguf: weight type; norms stay f32 (hf is always f32)")
    p.add_argument("--tokenizer_dir", default=None,
                   help="the tokenizer the model was trained with (default: the one its checkpoint records, "
                        "else the shipped one)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return p


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if (args.ckpt is None) == (args.model_mode is None):
        parser.error("say which checkpoint: --model_mode N (a stage's, in --out_dir) or --ckpt FILE, one of them")
    if args.format != "gguf" and args.out_file is not None:
        parser.error(f"--out_file is for --format gguf; use --export_dir with --format {args.format}")
    if args.format == "gguf" and args.export_dir is not None:
        parser.error("--export_dir is for --format hf or peft; use --out_file with --format gguf")
    if args.format != "gguf" and args.dtype != "f32":
        parser.error(f"--dtype is for --format gguf; the {args.format} export is always f32")
    name = Path(args.out_dir).name
    if args.format != "gguf" and args.export_dir is None and ("export" in name or name.endswith(("-hf", "-peft"))):
        # --out_dir is the training folder: this one would write <it>/export/<name>-hf, a folder in a folder.
        parser.error(f"--out_dir {args.out_dir}: that reads like the export folder itself; --out_dir is the "
                     f"folder the stages wrote to (the export goes to <out_dir>/export/); to name the export "
                     f"folder, pass --export_dir {args.out_dir}")


def output_path(args: argparse.Namespace) -> Path:
    stem = checkpoint_path(args).stem
    if args.format in ("hf", "peft"):
        return Path(args.export_dir or Path(args.out_dir) / "export" / f"{stem}-{args.format}")
    return Path(args.out_file or Path(args.out_dir) / "export" / f"{stem}-{args.dtype}.gguf")


def check_target(target: Path, is_dir: bool, overwrite: bool, marker: str = WEIGHTS_FILE) -> None:
    """Refuse to clobber anything but a previous export of the same kind, and that only on request."""
    if not target.exists() and not target.is_symlink():
        return
    if not overwrite:
        raise UserError(f"{target} already exists; pass --overwrite to replace it")
    if is_dir and not (target / marker).is_file():
        # --export_dir . or a typo must never wipe a directory that is not ours.
        raise UserError(f"{target} exists and holds no {marker}; refusing to replace it")
    if not is_dir and not target.is_file():
        raise UserError(f"{target} exists and is not a file; refusing to replace it")


@contextmanager
def staged_output(target: Path, is_dir: bool, overwrite: bool, marker: str = WEIGHTS_FILE) -> Iterator[Path]:
    """Yield a temporary sibling of target to write into.

    On success it is renamed over target (a rename within one directory is
    atomic); on any failure or Ctrl-C it is deleted, so no half-written
    export is ever left where a user or a tool would pick it up.
    """
    check_target(target, is_dir, overwrite, marker)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = f".{target.name}.", ".tmp"
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        # mkdtemp/mkstemp create private (0700/0600) entries; an export should
        # get the permissions any new file gets under the user's umask.
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod((0o777 if is_dir else 0o666) & ~umask)
        yield tmp
        if is_dir and target.exists():
            # A directory cannot be renamed over a non-empty one: move the old one aside first.
            old = Path(tempfile.mkdtemp(prefix=prefix, suffix=".old", dir=target.parent))
            os.replace(target, old / "x")
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old / "x", target)  # put the previous export back
                raise
            finally:
                shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp)
        elif tmp.exists():
            tmp.unlink()


def describe(model: SpongeBob, target: Path) -> str:
    files = [target] if target.is_file() else [f for f in target.iterdir() if f.is_file()]
    size = sum(f.stat().st_size for f in files)
    n_params = sum(p.numel() for p in model.parameters())
    head = "tied" if model.config.tie_embeddings else "untied"
    return f"wrote {target} ({n_params:,} parameters, {head} head, {size / 1e6:.1f} MB)"


def export_peft(args: argparse.Namespace, ckpt: Path) -> str:
    """The adapter alone, for peft; its base goes to Hugging Face with --format hf."""
    try:
        raw = read_checkpoint(ckpt)
    except CheckpointError as e:
        raise UserError(str(e)) from None
    if raw["format"] != ADAPTER_FORMAT:
        raise UserError(f"{ckpt}: --format peft needs a LoRA adapter checkpoint (a run with --lora_rank); "
                        "this one holds full weights: use --format hf")
    base = Path(raw["base"]["path"])
    base_hf = str(Path(args.out_dir) / "export" / f"{base.stem}-hf")
    target = output_path(args)
    with staged_output(target, is_dir=True, overwrite=args.overwrite, marker=ADAPTER_WEIGHTS) as tmp:
        write_peft_export(raw["adapters"], raw["lora"], ModelConfig.from_dict(raw["config"]), base_hf, tmp)
    n = sum(t.numel() for t in raw["adapters"].values())
    return (f"wrote {target} ({n:,} adapter parameters, rank {raw['lora']['rank']}); its base {base} goes to "
            f"Hugging Face with: python export.py --ckpt {base} --format hf --export_dir {base_hf}")


def run(args: argparse.Namespace) -> str:
    ckpt = checkpoint_path(args)
    if not ckpt.is_file():
        how = "check the path" if args.ckpt else f"train that stage with --out_dir {args.out_dir} first, or pass --ckpt"
        raise UserError(f"{shown_path(ckpt)}: checkpoint not found; {how}")
    if args.format == "peft":
        return export_peft(args, ckpt)
    try:
        tok = load_tokenizer(args.tokenizer_dir) if args.tokenizer_dir else tokenizer_for(checkpoint_tokenizer(ckpt))
        model, _ = load_model(ckpt, tokenizer=tok)
    except (CheckpointError, TokenizerError) as e:
        raise UserError(str(e)) from None
    target = output_path(args)
    try:
        with staged_output(target, is_dir=args.format == "hf", overwrite=args.overwrite) as tmp:
            if args.format == "hf":
                write_hf_export(model, tok, tmp)
            else:
                write_gguf(model, tok, tmp, dtype=args.dtype, name=f"SpongeBob {ckpt.stem}")
    except OSError as e:  # disk full, permissions: the staged output is already gone
        raise UserError(f"{target}: could not write ({e.strerror or e})") from None
    return describe(model, target)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    try:
        print(run(args))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
