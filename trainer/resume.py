"""What a resumed run must share with the saved one, and the RNG state.

Exact resume means the same data order, the same schedule and the same loss,
so every option that shapes one of them must match; the others (logging,
saving, device, compile) may change between runs. Each option says which it is
where it is declared (option(resume=...)).
"""
from __future__ import annotations

import os

import torch

from .config import TrainConfig, config_dict, resume_rules


def check_resumable(state: dict, cfg: TrainConfig, world_size: int, data_identity: str) -> None:
    """Refuse, in one line naming the flag, a resume whose options would change the data order,
    the schedule or the loss. Which options those are is declared with each option
    (option(resume=...)): every stage's own flags are covered, --pref_beta and
    --num_generations included. --max_steps may grow (the run is extended)."""
    saved, now = state["config"], config_dict(cfg)
    for key, rule in resume_rules(type(cfg)).items():
        was, is_now = saved.get(key), now.get(key)
        if rule == "free" or was == is_now or (key in PATH_OPTIONS and same_files(was, is_now)):
            continue
        if rule == "grow" and was and is_now > was:  # a larger cap than the saved run's extends it
            continue
        how = ("it may only grow, to extend the run" if rule == "grow" else
               "resume with the same value, or start a new run in another --out_dir")
        raise ValueError(f"--resume: --{key} was {was!r} in the saved run ({state['path']}) but is "
                         f"{is_now!r} now; {how}")
    check_rows(state, cfg, world_size)
    if state["data_identity"] != data_identity:
        raise ValueError("--resume: the training data changed since the state was saved "
                         f"({state['data_identity']} -> {data_identity})")


# Options that name files: a resume compares the files, not how they were spelt (runs/a.jsonl and
# /home/me/runs/a.jsonl are one file). The data's own fingerprint is checked besides (data_identity).
PATH_OPTIONS = ("data_path", "init", "tokenizer_dir", "teacher")


def same_files(was: str | list[str] | None, now: str | list[str] | None) -> bool:
    def resolved(v: str | list[str] | None) -> list[str]:
        return [os.path.realpath(x) for x in ([v] if isinstance(v, str) else v or []) if x]
    return resolved(was) == resolved(now)


def check_rows(state: dict, cfg: TrainConfig, world_size: int) -> None:
    """The rows of a step, across all processes, must stay what they were.

    Every dataset here deals one seeded permutation per epoch out to the ranks (rank r takes
    every world_size-th row), so the rows of step s are the same block of that permutation
    whatever the number of processes: a run resumes exactly on another number of GPUs (a
    preempted job that comes back smaller) when batch x accumulation x processes is unchanged.
    Length-grouped batches (--packing group) are cut per micro-step, so there the rows of a
    micro-step across processes (batch x processes) must be unchanged too."""
    was, ws = state["config"], state["world_size"]
    then_micro, now_micro = was["batch_size"] * ws, cfg.batch_size * world_size
    then_step, now_step = then_micro * was["accumulation_steps"], now_micro * cfg.accumulation_steps
    if then_step != now_step:
        raise ValueError(f"--resume: a step was {then_step} rows (--batch_size {was['batch_size']} x "
                         f"--accumulation_steps {was['accumulation_steps']} x {ws} process(es)) but would be "
                         f"{now_step} now; keep batch x accumulation x processes at {then_step}")
    if then_micro != now_micro and getattr(cfg, "packing", None) == "group":
        raise ValueError(f"--resume with --packing group: a micro-step was {then_micro} rows across processes "
                         f"(--batch_size {was['batch_size']} x {ws}); keep --batch_size x processes at {then_micro}")


def elastic_batch(state_config: dict, state_world_size: int, world_size: int) -> tuple[int, int] | None:
    """(batch_size, accumulation_steps) that keep a saved run's rows per step on another number of
    processes: the same rows per micro-step when they divide evenly, else the same micro-batch with
    more or fewer accumulation steps; None when no whole numbers do."""
    batch, accumulation = state_config["batch_size"], state_config["accumulation_steps"]
    if (batch * state_world_size) % world_size == 0:
        return batch * state_world_size // world_size, accumulation
    rows = batch * accumulation * state_world_size
    if rows % (batch * world_size) == 0:
        return batch, rows // (batch * world_size)
    return None


def rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
