"""The table of stages: the one place that knows which stages exist and how they chain.

Each stage script (pretrain.py, sft.py, ...) holds what is special to it: its flags,
data, loss and reference. This table holds what the rest of the project needs to know
about it, and everything reads it: the stage scripts (where to start from), eval_model,
serve and export (which checkpoint --model_mode loads, whether the model thinks), the
resume check, the demo and the report.

Adding a stage: its script at the top, one row here, and its tests.

Mode numbers are the ones users already type (MiniMind's 0 pretrain, 1 sft, 2 reasoning);
names work too, so `--model_mode sft` is `--model_mode 1` (inference/loading.py reads --model_mode).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str              # the script is <name>.py; its weights <out_dir>/<name>.pth, its run folder <out_dir>/<name>/
    previous: str | None   # whose <out_dir>/<previous>.pth is the default --init (None: a new model)
    mode: int              # --model_mode number of eval_model.py, serve.py, export.py
    thinks: bool           # replies are <think>...</think><answer>...</answer>
    chat: bool             # trained on chat turns (False: continues plain text)
    demo: str              # the built-in demo corpus it trains on (dataset/demo/)
    what: str              # a few words for --help and reports

    @property
    def script(self) -> str:
        return f"{self.name}.py"

    @property
    def checkpoint(self) -> str:
        return f"{self.name}.pth"


# In the order the demo chain runs them.
STAGES: tuple[Stage, ...] = (
    Stage("pretrain", None, 0, thinks=False, chat=False, demo="pretrain", what="continues text"),
    Stage("sft", "pretrain", 1, thinks=False, chat=True, demo="sft", what="chat, 512 tokens"),
    Stage("sft_long", "sft", 3, thinks=False, chat=True, demo="sft_long", what="chat, 1024 tokens"),
    Stage("distill", "sft_long", 2, thinks=True, chat=True, demo="r1", what="thinks, then answers"),
    Stage("dpo", "sft", 4, thinks=False, chat=True, demo="dpo", what="chat, preference-tuned"),
    Stage("grpo", "distill", 5, thinks=True, chat=True, demo="r1", what="thinks, RL on rewards"),
)
BY_NAME = {s.name: s for s in STAGES}


def stage(name: str) -> Stage:
    """The row of a stage by name; a KeyError names the stages that exist."""
    if name not in BY_NAME:
        raise KeyError(f"unknown stage {name!r}; the stages are {', '.join(BY_NAME)}")
    return BY_NAME[name]
