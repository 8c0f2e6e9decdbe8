"""TrainConfig: every knob of the training engine, and how it is set.

Each field is declared once, with option(): its default, its --help text, its check and what
--resume asks of it. The field is the flag (--name) and the config-file key; its kind (int,
float, str, bool, a list) is its default's. Where values come from, lowest to highest:

    TrainConfig's defaults < the stage's REFERENCE < its DEMO (only without --data_path)
    < --config file.yaml|.json < the flags given

Names follow MiniMind/SpongeBob (--batch_size, --learning_rate, --accumulation_steps, ...). A stage
with knobs of its own (distill.py) subclasses TrainConfig; its fields become flags the same way,
shown only by that stage's --help.
"""
from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from common.cli import OneLineParser, suggest
from common.device import DTYPES, trains_in_fp32_on_cpu
from .memory import Footprint


Check = Callable[[Any], "str | None"]  # a value -> what is wrong with it, or None
OPTIMIZERS = ("muon", "adamw")   # trainer/optim.py
SCHEDULES = ("cosine", "wsd")


def option(default: Any, help: str, *, check: Check | None = None, resume: str = "match",
           kind: str | None = None) -> Any:
    """A config field that is also a flag: its --help text, its check, and what --resume asks of it.

    check   value -> None when fine, else the problem ("must be at least 1"); the error
            line then reads "--name value: problem". Checks that relate two fields live
            in the config class's check() method.
    resume  "match": the value shapes the data order, the schedule or the loss, so a
            resumed run must have the saved one (this is the default: a new field is
            safe until someone decides otherwise); "free": it may change (logging,
            saving, device); "grow": it may only grow (--max_steps extends a run).
    kind    int, float, str, bool or list (of strings), read from the default; "floats" is a
            comma-separated list of numbers, "bool?" a bool that may stay unset (None).
    """
    if resume not in ("match", "free", "grow"):
        raise ValueError(f"resume={resume!r}: choose match, free or grow")
    kind = kind or {bool: "bool", int: "int", float: "float", str: "str", list: "list"}[type(default)]
    meta = {"help": help, "check": check, "resume": resume, "kind": kind}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


# Small checks for option(check=...).
def at_least(low: float) -> Check:
    return lambda v: None if v >= low else f"must be at least {low:g}"


def within(low: float, high: float, high_open: bool = True) -> Check:
    """low <= v < high (or <= high with high_open=False), and finite."""
    def check(v: float) -> str | None:
        ok = math.isfinite(v) and low <= v and (v < high if high_open else v <= high)
        return None if ok else f"must be in [{low:g}, {high:g}{')' if high_open else ']'}"
    return check


def non_negative(v: float) -> str | None:
    return None if math.isfinite(v) and v >= 0 else "must be a finite number 0 or above"


def positive(v: float) -> str | None:
    return None if math.isfinite(v) and v > 0 else "must be a finite number above 0"


def parses(parse: Callable[[str], Any], flag: str) -> Check:
    """A check that runs parse(value) and reports its ValueError, whose message already starts
    with "--flag value: " (the check's caller adds that prefix itself)."""
    def check(v: str) -> str | None:
        try:
            parse(v)
        except ValueError as e:
            return str(e).removeprefix(f"--{flag} {v}: ")
        return None
    return check


def one_of(*choices: str, empty: bool = False) -> Check:
    """The value is one of choices (or empty, with empty=True: detect / off)."""
    def check(v: str) -> str | None:
        if v in choices or (empty and v == ""):
            return None
        return f"choose {', '.join(choices)}" + (" (or leave it out)" if empty else "")
    return check


@dataclass
class TrainConfig:
    # data
    data_path: list[str] = option([], "training files or folders (.jsonl/.json/.txt/.parquet/.csv); "
                                      "empty = the built-in demo corpus")
    text_field: str = option("", "JSON/CSV field holding the text; empty = detect it")
    skip_bad: bool = option(False, "skip malformed records and report counts instead of stopping at the first",
                            resume="free")
    val_fraction: float = option(0.01, "fraction of documents held out for validation loss", check=within(0, 1))
    max_seq_len: int = option(512, "tokens per training row", check=at_least(1))
    tokenizer_dir: str = option("", "a tokenizer directory (train_tokenizer.py's output); empty = the one --init "
                                    "was trained with, else the shipped one. Checkpoints record it, so eval_model, "
                                    "export, serve and the next stages find it untold")
    # model
    preset: str = option("spongebob-29m", "model preset for a model trained from scratch")
    init: str = option("", "checkpoint to start from, its config included; empty = a new model from --preset "
                           "(pretrain) or the previous stage's weights in --out_dir (the later stages)")
    # The model's shape, with MiniMind's / Hugging Face's names; 0 (or unset) = the preset's.
    hidden_size: int = option(0, "from scratch: width of the residual stream (0 = the preset's)", check=at_least(0))
    num_hidden_layers: int = option(0, "from scratch: number of decoder layers (0 = the preset's)", check=at_least(0))
    num_attention_heads: int = option(0, "from scratch: query heads; must divide --hidden_size (0 = the preset's)",
                                      check=at_least(0))
    num_key_value_heads: int = option(0, "from scratch: key/value heads (GQA); must divide the query heads "
                                         "(0 = the preset's)", check=at_least(0))
    intermediate_size: int = option(0, "from scratch: SwiGLU inner width (0 = the preset's, or 8/3 x hidden_size "
                                       "rounded up to 64 when --hidden_size is set)", check=at_least(0))
    max_position_embeddings: int = option(0, "from scratch: longest context the model supports (0 = the preset's)",
                                          check=at_least(0))
    tie_word_embeddings: bool | None = option(None, "from scratch: share the embedding with the output head "
                                                    "(unset = the preset's)", kind="bool?")
    # schedule
    epochs: int = option(2, "passes over the training data", check=at_least(1))
    max_steps: int = option(0, "stop after this many optimizer steps whatever --epochs says (0 = no cap); with "
                               "--resume it may grow to extend a run: the cosine is stretched over the new total, "
                               "a wsd run goes on from its stable phase and decays at the new end",
                            check=at_least(0), resume="grow")
    # Free on resume one by one: what a resume must keep is the rows of a step across all
    # processes (trainer/resume.py, check_rows), so a run can resume on another number of GPUs.
    batch_size: int = option(84, "rows per micro-batch (per GPU)", check=at_least(1), resume="free")
    accumulation_steps: int = option(2, "micro-batches per optimizer step", check=at_least(1), resume="free")
    learning_rate: float = option(5e-4, "peak learning rate, reached after warmup", check=positive)
    min_lr: float = option(5e-5, "learning rate at the end of the decay (cosine or wsd)", check=non_negative)
    warmup_steps: int = option(100, "optimizer steps of linear warmup from 0 to --learning_rate", check=at_least(0))
    lr_schedule: str = option("cosine", "after warmup: cosine (decay to --min_lr over the whole run) or wsd (stable "
                                        "at the peak, then a linear decay over the last --decay_fraction)",
                              check=one_of(*SCHEDULES))
    decay_fraction: float = option(0.3, "wsd: the share of the steps, at the end, over which the lr decays",
                                   check=within(0, 1, high_open=False))
    optimizer: str = option("adamw", "muon (Muon on the blocks' matrices, AdamW on the embedding, head and norms) "
                                     "or adamw (everywhere, as MiniMind trains)", check=one_of(*OPTIMIZERS))
    embedding_lr_scale: float = option(10.0, "muon: the embedding's AdamW lr as a multiple of --learning_rate "
                                            "(its rows move only where their token occurs)", check=positive)
    head_lr_scale: float = option(1.0, "muon: the output head's AdamW lr as a multiple of --learning_rate "
                                       "(a tied head follows the embedding)", check=positive)
    weight_decay: float = option(0.1, "decoupled weight decay of the matrices and embeddings (AdamW's and Muon's)",
                                 check=non_negative)
    beta1: float = option(0.9, "AdamW beta1", check=within(0, 1))
    beta2: float = option(0.95, "AdamW beta2", check=within(0, 1))
    grad_clip: float = option(1.0, "clip the global gradient norm to this (0 = off)", check=non_negative)
    # hardware
    device: str = option("auto", "cuda, mps, cpu or auto (cuda, then mps, then cpu)", resume="free")
    dtype: str = option("auto", "float32, bfloat16, float16 or auto: bf16 on GPUs with compute capability >= 8.0, "
                                "fp16 with loss scaling on older ones; bf16 on CPUs with native bf16 (AVX512-BF16, "
                                "AMX, Arm BF16), else fp32", check=one_of("auto", *DTYPES), resume="free")
    compile: bool | None = option(None, "torch.compile the model (unset: on for CUDA GPUs, off elsewhere)",
                                  resume="free", kind="bool?")
    seed: int = option(42, "seed for initialisation and data order")
    # checkpoints and logs
    out_dir: str = option("out", "where weights (<stage>.pth) and the run folder (<stage>/) go", resume="free")
    save_interval: int = option(500, "save weights and resumable state every N optimizer steps", check=at_least(1),
                                resume="free")
    keep_last: int = option(3, "resumable states to keep (older ones are deleted)", check=at_least(1), resume="free")
    save_at_epochs: list[float] = option([], "extra weight milestones at these epochs, e.g. 0.5,1.5", resume="free",
                                         kind="floats")
    resume: bool = option(False, "continue exactly from the newest saved state in <out_dir>/<stage>/state",
                          resume="free")
    overwrite: bool = option(False, "start afresh in an --out_dir that holds another run of this stage: that run "
                                    "is moved aside to <out_dir>/<stage>.previous-<time>/, never deleted",
                             resume="free")
    log_interval: int = option(10, "write a metrics row every N optimizer steps", check=at_least(1), resume="free")
    eval_interval: int = option(200, "measure validation loss every N optimizer steps (0 = only at the end)",
                                check=at_least(0), resume="free")
    eval_batches: int = option(20, "validation micro-batches per measurement", check=at_least(1), resume="free")
    skip_nonfinite: bool = option(False, "skip (and count) steps whose loss is NaN/inf instead of stopping",
                                  resume="free")
    use_wandb: bool = option(False, "also log to Weights & Biases (pip install wandb)", resume="free")
    wandb_project: str = option("spongebob", "wandb project name", resume="free")
    wandb_mode: str = option("offline", "wandb mode: offline (no network needed; `wandb sync` later), "
                                        "online, or disabled", check=one_of("offline", "online", "disabled"),
                             resume="free")
    config: str = option("", "YAML or JSON file of these options; command-line flags win over it", resume="free")

    def adapt(self, model: Any) -> None:
        """A later stage's change to its --init model before training (LoRA: trainer/finetune.py)."""

    def adapter_base(self, model: Any) -> dict | None:
        """What a run that trains adapters only saves with them (trainer/finetune.py); None: full weights."""
        return None

    def describe_adapters(self, model: Any) -> str:
        return ""

    def footprint(self) -> Footprint:
        """What one item of --batch_size holds in memory, for the memory plan (trainer/memory.py):
        a row here; a stage whose items are more (DPO's pairs, GRPO's groups) says so."""
        return Footprint()

    def check(self) -> None:
        """Every field's own check, then the checks that relate fields; ConfigError in one line.
        A stage's config adds its own relations by overriding this and calling super().check()."""
        for f in fields(self):
            check = f.metadata.get("check")
            problem = check(getattr(self, f.name)) if check else None
            if problem:
                raise ConfigError(f"--{f.name} {_shown(getattr(self, f.name))}: {problem}")
        if self.min_lr > self.learning_rate:
            raise ConfigError(f"--min_lr {self.min_lr:g} is above --learning_rate {self.learning_rate:g}")
        bad_epochs = [e for e in self.save_at_epochs if not 0 < e <= self.epochs]
        if bad_epochs:
            raise ConfigError(f"--save_at_epochs {bad_epochs[0]:g}: must be within the run's (0, {self.epochs}] "
                              "epochs")


def resume_rules(config_cls: type[TrainConfig]) -> dict[str, str]:
    """field -> "match" | "free" | "grow", read from the fields (option(resume=...)): the resume
    check covers every stage's options without a list to keep up to date."""
    return {f.name: f.metadata["resume"] for f in fields(config_cls)}


class ConfigError(ValueError):
    """A bad flag, key or value; the message is one line."""


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
    parser = OneLineParser(description=description, argument_default=argparse.SUPPRESS,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults, demo_defaults = defaults or {}, demo_defaults or {}
    for f in fields(config_cls):
        flag, help_text, kind = f"--{f.name}", f.metadata["help"], f.metadata["kind"]
        if f.name != "config":
            default = defaults.get(f.name, field_default(f.name, config_cls))
            help_text += f" (default: {_shown(default)}"
            if f.name in demo_defaults and demo_defaults[f.name] != default:
                help_text += f"; demo: {_shown(demo_defaults[f.name])}"
            help_text = help_text.replace("%", "%%") + ")"
        if kind in ("bool", "bool?"):
            # `--use_wandb` alone means true; `--use_wandb false` turns it off
            # (the reference's type=bool flag could never be switched off).
            parser.add_argument(flag, nargs="?", const=True, type=_parse_bool, help=help_text)
        elif kind == "list":
            parser.add_argument(flag, nargs="+", help=help_text)
        elif kind == "floats":
            parser.add_argument(flag, type=_parse_floats, help=help_text + " (comma-separated)")
        else:
            parser.add_argument(flag, type={"int": int, "float": float}.get(kind, str), help=help_text)
    return parser


def _file_value_error(key: str, value: Any, kind: str) -> str | None:
    """Why a config-file value cannot be this field's, or None. YAML already typed it."""
    ok = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "bool": lambda v: isinstance(v, bool), "bool?": lambda v: v is None or isinstance(v, bool),
          "str": lambda v: isinstance(v, str),
          "list": lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)),
          "floats": lambda v: isinstance(v, (str, list))}[kind]
    return None if ok(value) else f"{key}: expected {kind.rstrip('?')}, got {value!r}"


def read_config_file(path: str, config_cls: type[TrainConfig] = TrainConfig) -> dict[str, Any]:
    """Options from a YAML or JSON file, every key and value checked, all problems in one line."""
    kinds = {f.name: f.metadata["kind"] for f in fields(config_cls)}
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
    problems = []
    for key, value in values.items():
        if key not in kinds:
            hint = suggest(str(key).replace("-", "_"), list(kinds))
            problems.append(f"unknown key '{key}'" + (f" (did you mean '{hint}'?)" if hint else ""))
        elif (why := _file_value_error(key, value, kinds[key])) is not None:
            problems.append(why)
    if problems:  # every bad key at once, not one per run
        raise ConfigError(f"{path}: " + "; ".join(problems))
    if isinstance(values.get("save_at_epochs"), str):
        values["save_at_epochs"] = _parse_floats(values["save_at_epochs"])
    if isinstance(values.get("data_path"), str):
        values["data_path"] = [values["data_path"]]
    return values


# The model-shape options: they build a new model, so they cannot go with --init.
SHAPE_OPTIONS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                 "intermediate_size", "max_position_embeddings", "tie_word_embeddings")


def parse_config(argv: list[str] | None, description: str, stage_defaults: dict[str, Any] | None = None,
                 demo_defaults: dict[str, Any] | None = None,
                 config_cls: type[TrainConfig] = TrainConfig, init_from: str | None = None,
                 fp32_cpu_demo: dict[str, Any] | None = None) -> TrainConfig:
    """Layer defaults, the optional config file and the flags into a TrainConfig (or config_cls).

    fp32_cpu_demo: the demo's settings on a CPU that trains in fp32 (see trains_in_fp32_on_cpu).
    init_from names the previous stage: with no --init, the run starts from its weights in
    the same --out_dir (<out_dir>/<init_from>.pth), so stages chain under any --out_dir."""
    stage_defaults = dict(stage_defaults or {})
    if init_from:
        stage_defaults.setdefault("init", f"<out_dir>/{init_from}.pth")  # shown by --help
    parser = build_parser(description, stage_defaults, demo_defaults, config_cls)
    given = vars(parser.parse_args(argv))
    from_file = read_config_file(given["config"], config_cls) if given.get("config") else {}
    chosen = {**from_file, **given}

    values: dict[str, Any] = dict(stage_defaults)
    if demo_defaults and not chosen.get("data_path", values.get("data_path")):
        values.update(demo_defaults)
        # A CPU without native bf16 trains in fp32, several times slower: the demo is sized down
        # there so that it takes the same minutes (what the user sets still wins).
        if fp32_cpu_demo and trains_in_fp32_on_cpu(chosen.get("device", "auto"), chosen.get("dtype", "auto")):
            values.update(fp32_cpu_demo)
    values.update(chosen)
    if init_from and values.get("init", "").startswith("<out_dir>/"):
        values["init"] = str(Path(values.get("out_dir", field_default("out_dir"))) / f"{init_from}.pth")
    if values.get("init"):
        shaped = [k for k in ("preset",) + SHAPE_OPTIONS if k in chosen]
        if shaped:
            raise ConfigError(f"--{shaped[0]}: the model's shape comes from --init {values['init']}; drop "
                              f"--{shaped[0]}, or train a new model of that shape with pretrain.py")
    try:
        return config_cls(**values)
    except TypeError as e:
        raise ConfigError(str(e)) from None


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    return asdict(cfg)


def field_default(name: str, config_cls: type[TrainConfig] = TrainConfig) -> Any:
    f = next(f for f in fields(config_cls) if f.name == name)
    return f.default_factory() if f.default is MISSING else f.default
