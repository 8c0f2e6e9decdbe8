"""Where a run's files go, and the resumable training state.

    <out_dir>/<stage>.pth                  model weights: what eval and the next stage load
    <out_dir>/<stage>/config.json          the effective configuration of the run
    <out_dir>/<stage>/metrics.jsonl        one JSON row per log step
    <out_dir>/<stage>/state/step_N.pt      resumable state: weights + optimizer + scaler + RNG + position
    <out_dir>/<stage>/state/stable_step_N.pt   a wsd run's state where its decay began (never pruned:
                                           a larger --max_steps goes on from it, trainer/ops.py)
    <out_dir>/<stage>/milestones/<stage>_epochE.pth   weights at --save_at_epochs

Weights and state are separate files on purpose: the weights file is small and
loadable anywhere; the state (3x larger with AdamW moments) only matters to
--resume. Every file is written atomically (model.checkpoint.atomic_torch_save),
so a kill during a save never corrupts the last good one.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import torch

from model.checkpoint import atomic_torch_save

STATE_FORMAT = "spongebob-train-state-v1"
STATE_KINDS = ("step", "stable_step")  # the resumable states, and a wsd run's where its decay began


class RunPaths:
    """Where one stage's files go under --out_dir (the table above)."""

    def __init__(self, out_dir: Path, stage: str):
        self.out_dir, self.stage = Path(out_dir), stage
        self.weights = self.out_dir / f"{stage}.pth"
        self.run_dir = self.out_dir / stage
        self.state_dir = self.run_dir / "state"
        self.metrics = self.run_dir / "metrics.jsonl"
        self.config = self.run_dir / "config.json"

    def milestone(self, epoch: float) -> Path:
        return self.run_dir / "milestones" / f"{self.stage}_epoch{epoch:g}.pth"

    def state(self, step: int, kind: str = "step") -> Path:
        return self.state_dir / f"{kind}_{step:08d}.pt"


def list_states(paths: RunPaths, kind: str = "step") -> list[tuple[int, Path]]:
    """Saved states of one kind, oldest first. Temp files from interrupted saves are ignored."""
    if not paths.state_dir.is_dir():
        return []
    name = re.compile(rf"^{kind}_(\d+)\.pt$")
    return sorted((int(m.group(1)), p) for p in paths.state_dir.iterdir() if (m := name.match(p.name)))


def move_aside(paths: RunPaths) -> Path:
    """Move an earlier run of this stage (its run folder, with its states, and its weights) into
    <out_dir>/<stage>.previous-<time>/, so a fresh run never mixes with it or prunes its states."""
    aside = paths.out_dir / f"{paths.stage}.previous-{time.strftime('%Y%m%d-%H%M%S')}"
    while aside.exists():  # two moves within a second
        aside = aside.with_name(aside.name + "x")
    aside.mkdir(parents=True)
    for part in (paths.run_dir, paths.weights):
        if part.exists():
            part.rename(aside / part.name)
    return aside


def save_state(paths: RunPaths, step: int, state: dict, keep_last: int, kind: str = "step") -> Path:
    """Write the state for `step`, then delete all but the newest keep_last of the regular ones.
    The new file is complete before any old one is removed."""
    target = paths.state(step, kind)
    atomic_torch_save({"format": STATE_FORMAT, "step": step, **state}, target)
    for _, old in list_states(paths)[:-max(1, keep_last)]:
        old.unlink(missing_ok=True)
    return target


def latest_state(paths: RunPaths, peek: bool = False, kind: str = "step") -> dict | None:
    """The newest readable state of a kind, or None. An unreadable newest file (it cannot be
    half-written, but a disk can fail) falls back to the one before it. peek: only its config, world
    size, step and planned steps, read without loading its tensors (mmap)."""
    for _, path in reversed(list_states(paths, kind)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=peek)
        except Exception as e:  # corrupt file: say so (the full load) and try the previous one
            if not peek:
                print(f"warning: cannot read {path} ({type(e).__name__}); trying an older state")
            continue
        if isinstance(state, dict) and state.get("format") == STATE_FORMAT:
            keys = ("config", "world_size", "step", "total_steps")
            return {k: state.get(k) for k in keys} if peek else {**state, "path": str(path)}
    return None
