"""What a resumed run must share with the saved one, and the RNG state.

Exact resume means the same data order, the same schedule and the same loss,
so every option that shapes one of them must match; the others (logging,
saving, device, compile) may change between runs. Each option says which it is
where it is declared (option(resume=...)).
"""
from __future__ import annotations

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
        if rule == "free" or was == is_now:
            continue
        if rule == "grow" and key == "max_steps" and _extends(was, is_now, state):
            continue
        how = ("it may only grow, to extend the run" if rule == "grow" else
               "resume with the same value, or start a new run in another --out_dir")
        raise ValueError(f"--resume: --{key} was {was!r} in the saved run ({state['path']}) but is "
                         f"{is_now!r} now; {how}")
    if state["world_size"] != world_size:
        raise ValueError(f"--resume: the saved run used {state['world_size']} processes, this one {world_size}; "
                         "the data shards would differ")
    if state["data_identity"] != data_identity:
        raise ValueError("--resume: the training data changed since the state was saved "
                         f"({state['data_identity']} -> {data_identity})")


def _extends(was: int | None, now: int, state: dict) -> bool:
    """A larger --max_steps than the saved run's cap (a run with no cap has nothing to extend)."""
    return bool(was) and now > was


def rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
