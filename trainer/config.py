"""TrainConfig: every knob of the training engine, and how it is set.

Precedence, lowest to highest:
    TrainConfig defaults < the stage's defaults < the demo profile (built-in data)
    < --config file.yaml|.json < command-line flags
The flags are built from the dataclass fields, so a field, its flag, its help
string and its config-file key are one thing. Names follow MiniMind/SpongeBob
(--batch_size, --learning_rate, --accumulation_steps, ...). A stage with knobs
of its own (distill.py) subclasses TrainConfig, and its fields become flags the
same way, shown only by that stage's --help.
"""
from __future__ import annotations

import argparse
import difflib
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


def _f(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field that carries its --help text."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **extra})
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainConfig:
    # data
    data_path: list[str] = _f([], "training files or folders (.jsonl/.json/.txt/.parquet/.csv); "
                                  "empty = the built-in demo corpus")
    text_field: str = _f("", "JSON/CSV field holding the text; empty = detect it")
    skip_bad: bool = _f(False, "skip malformed records and report counts instead of stopping at the first")
    data_format: str = _f("", "chat data format: minimind, sharegpt, openai, alpaca or qa; empty = detect it")
    truncation: str = _f("drop", "chat data longer than --max_seq_len: drop it, or truncate it (may cut a reply)")
    val_fraction: float = _f(0.01, "fraction of documents held out for validation loss")
    max_seq_len: int = _f(512, "tokens per training row")
    # model
    preset: str = _f("spongebob-29m", "model preset for a model trained from scratch")
    init: str = _f("", "checkpoint to start from, its config included; empty = a new model from --preset")
    # schedule
    epochs: int = _f(2, "passes over the training data")
    max_steps: int = _f(0, "stop after this many optimizer steps whatever --epochs says (0 = no cap)")
    batch_size: int = _f(84, "rows per micro-batch (per GPU)")
    accumulation_steps: int = _f(2, "micro-batches per optimizer step")
    learning_rate: float = _f(5e-4, "peak learning rate, reached after warmup")
    min_lr: float = _f(5e-5, "learning rate at the end of the cosine decay")
    warmup_steps: int = _f(100, "optimizer steps of linear warmup from 0 to --learning_rate")
    weight_decay: float = _f(0.1, "AdamW weight decay (matrices and embeddings only)")
    beta1: float = _f(0.9, "AdamW beta1")
    beta2: float = _f(0.95, "AdamW beta2")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0 = off)")
    # hardware
    device: str = _f("auto", "cuda, mps, cpu or auto (cuda, then mps, then cpu)")
    dtype: str = _f("auto", "float32, bfloat16, float16 or auto (bf16 on GPUs that support it, else "
                            "fp16 with loss scaling; fp32 on CPU)")
    compile: bool = _f(False, "torch.compile the model (faster on GPU after a warm-up)")
    seed: int = _f(42, "seed for initialisation and data order")
    # checkpoints and logs
    out_dir: str = _f("out", "where weights (<stage>.pth) and the run folder (<stage>/) go")
    save_interval: int = _f(500, "save weights and resumable state every N optimizer steps")
    keep_last: int = _f(3, "resumable states to keep (older ones are deleted)")
    save_at_epochs: list[float] = _f([], "extra weight milestones at these epochs, e.g. 0.5,1.5")
    resume: bool = _f(False, "continue exactly from the newest saved state in <out_dir>/<stage>/state")
    log_interval: int = _f(10, "write a metrics row every N optimizer steps")
    eval_interval: int = _f(200, "measure validation loss every N optimizer steps (0 = only at the end)")
    eval_batches: int = _f(20, "validation micro-batches per measurement")
    skip_nonfinite: bool = _f(False, "skip (and count) steps whose loss is NaN/inf instead of stopping")
    use_wandb: bool = _f(False, "also log to Weights & Biases (pip install wandb)")
    wandb_project: str = _f("spongebob", "wandb project name")
    wandb_mode: str = _f("offline", "wandb mode: offline (no network needed; `wandb sync` later), "
                                    "online, or disabled")
    config: str = _f("", "YAML or JSON file of these options; command-line flags win over it")


class ConfigError(ValueError):
    """A bad flag, key or value; the message is one line."""


def did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def _parse_floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "none"
    return repr(value) if value == "" else str(value)


def build_parser(description: str, defaults: dict[str, Any] | None = None,
                 demo_defaults: dict[str, Any] | None = None,
                 config_cls: type[TrainConfig] = TrainConfig) -> argparse.ArgumentParser:
    """One flag per TrainConfig field, its help ending with the stage's default
    (and the demo's, where it differs). argparse's own defaults are suppressed
    so that we can tell which flags were given: they must win over a config file."""
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False,
                                     argument_default=argparse.SUPPRESS,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults, demo_defaults = defaults or {}, demo_defaults or {}
    for f in fields(config_cls):
        flag, help_text = f"--{f.name}", f.metadata["help"]
        # Annotations are strings here (postponed evaluation) but real types in a
        # subclass from a module without it: compare them by name.
        kind = f.type if isinstance(f.type, str) else str(f.type) if "[" in str(f.type) else f.type.__name__
        if f.name != "config":
            default = defaults.get(f.name, field_default(f.name, config_cls))
            help_text += f" (default: {_shown(default)}"
            if f.name in demo_defaults and demo_defaults[f.name] != default:
                help_text += f"; demo: {_shown(demo_defaults[f.name])}"
            help_text = help_text.replace("%", "%%") + ")"
        if kind == "bool":
            # `--use_wandb` alone means true; `--use_wandb false` turns it off
            # (the reference's type=bool flag could never be switched off).
            parser.add_argument(flag, nargs="?", const=True, type=_parse_bool, help=help_text)
        elif kind == "list[str]":
            parser.add_argument(flag, nargs="+", help=help_text)
        elif kind == "list[float]":
            parser.add_argument(flag, type=_parse_floats, help=help_text + " (comma-separated)")
        else:
            parser.add_argument(flag, type={"int": int, "float": float}.get(kind, str), help=help_text)
    return parser


def read_config_file(path: str, config_cls: type[TrainConfig] = TrainConfig) -> dict[str, Any]:
    """Options from a YAML or JSON file, keys checked against the known fields."""
    names = [f.name for f in fields(config_cls)]
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml  # only needed for YAML configs
            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
    except Exception as e:  # yaml.YAMLError / json.JSONDecodeError: one line is enough
        raise ConfigError(f"{path}: cannot parse ({str(e).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value")
    for key in values:
        if key not in names:
            raise ConfigError(f"{path}: unknown option '{key}'{did_you_mean(key, names)}")
    if isinstance(values.get("save_at_epochs"), str):
        values["save_at_epochs"] = _parse_floats(values["save_at_epochs"])
    if isinstance(values.get("data_path"), str):
        values["data_path"] = [values["data_path"]]
    return values


def parse_config(argv: list[str] | None, description: str, stage_defaults: dict[str, Any] | None = None,
                 demo_defaults: dict[str, Any] | None = None,
                 config_cls: type[TrainConfig] = TrainConfig) -> TrainConfig:
    """Layer defaults, the optional config file and the flags into a TrainConfig (or config_cls)."""
    parser = build_parser(description, stage_defaults, demo_defaults, config_cls)
    names = [f.name for f in fields(config_cls)]
    given, unknown = parser.parse_known_args(argv)
    for arg in unknown:
        if arg.startswith("-"):
            name = arg.lstrip("-").split("=")[0]
            parser.error(f"unknown flag '{arg}'{did_you_mean(name, names)}")
        parser.error(f"unexpected argument '{arg}'")
    given = vars(given)
    from_file = read_config_file(given["config"], config_cls) if given.get("config") else {}
    chosen = {**from_file, **given}

    values: dict[str, Any] = dict(stage_defaults or {})
    if demo_defaults and not chosen.get("data_path", values.get("data_path")):
        values.update(demo_defaults)
    values.update(chosen)
    try:
        return config_cls(**values)
    except TypeError as e:
        raise ConfigError(str(e)) from None


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    return asdict(cfg)


def field_default(name: str, config_cls: type[TrainConfig] = TrainConfig) -> Any:
    f = next(f for f in fields(config_cls) if f.name == name)
    return f.default_factory() if f.default is MISSING else f.default
