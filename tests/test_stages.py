"""The table of stages (common/stages.py) and what reads it: modes by number or name, the
chain of default starts, and the resume rules declared with each option."""
import argparse
from pathlib import Path

import pytest

import distill
import dpo
import grpo
from common.stages import STAGES, stage
from inference.loading import mode_number, mode_stage
from trainer.chat_data import ChatConfig
from trainer.config import TrainConfig, config_dict, parse_config, resume_rules
from trainer.resume import check_resumable

REPO = Path(__file__).resolve().parents[1]


def test_the_modes_users_know_keep_their_numbers():
    # MiniMind's 0 pretrain / 1 sft / 2 reasoning, then this project's additions in the order they came.
    assert {s.mode: s.name for s in STAGES} == {0: "pretrain", 1: "sft", 2: "distill", 3: "sft_long", 4: "dpo",
                                                5: "grpo"}
    assert [s.name for s in STAGES if s.thinks] == ["distill", "grpo"]
    assert [s.name for s in STAGES if not s.chat] == ["pretrain"]


def test_every_stage_has_its_script_and_a_chain_back_to_pretraining():
    for row in STAGES:
        assert (REPO / row.script).is_file(), row.script
        assert row.checkpoint == f"{row.name}.pth"
        seen, at = set(), row
        while at.previous is not None:  # no loop, and every previous stage exists
            assert at.name not in seen
            seen.add(at.name)
            at = stage(at.previous)
        assert at.name == "pretrain"


@pytest.mark.parametrize("text, mode", [("2", 2), ("distill", 2), ("sft_long", 3), (" sft ", 1), ("0", 0)])
def test_model_mode_takes_a_number_or_a_name(text, mode):
    assert mode_number(text) == mode and mode_stage(mode).mode == mode


@pytest.mark.parametrize("text", ["6", "-1", "reasoning", "", "1.0"])
def test_an_unknown_mode_lists_numbers_and_names(text):
    with pytest.raises(argparse.ArgumentTypeError, match="choose a number or a name: 0 pretrain, 1 sft, "
                                                         r"2 distill \(thinks\), 3 sft_long"):
        mode_number(text)


def test_the_stage_scripts_start_from_the_previous_row():
    # sft.py with no --init starts from <out_dir>/pretrain.pth, distill.py from sft_long.pth, ...
    for row in STAGES[1:]:
        cfg = parse_config(["--out_dir", "runs/x"], "t", {}, init_from=row.previous, config_cls=ChatConfig)
        assert cfg.init == f"runs/x/{row.previous}.pth"


def saved_state(cfg: TrainConfig, step: int = 5) -> dict:
    return {"config": config_dict(cfg), "path": "out/x/state/step_5.pt", "world_size": 1, "data_identity": "d",
            "step": step}


@pytest.mark.parametrize("config_cls, flag, old, new", [
    (dpo.DPOConfig, "pref_beta", "0.1", "0.2"), (dpo.DPOConfig, "pref_loss", "sigmoid", "ipo"),
    (grpo.GRPOConfig, "num_generations", "8", "4"), (grpo.GRPOConfig, "reward_weights", "accuracy:1", "format:1"),
    (grpo.GRPOConfig, "beta", "0", "0.04"), (distill.DistillConfig, "tag_weight", "10", "5"),
    (ChatConfig, "packing", "pack", "group"), (TrainConfig, "learning_rate", "1e-3", "2e-3")])
def test_a_resume_that_changes_the_objective_is_refused_naming_the_flag(config_cls, flag, old, new):
    saved = parse_config([f"--{flag}", old], "t", {}, config_cls=config_cls)
    now = parse_config([f"--{flag}", new], "t", {}, config_cls=config_cls)
    check_resumable(saved_state(saved), saved, 1, "d")  # the same options resume
    with pytest.raises(ValueError, match=rf"^--resume: --{flag} was .* in the saved run .* but is .* now; "
                                         "resume with the same value"):
        check_resumable(saved_state(saved), now, 1, "d")


def test_logging_and_saving_may_change_on_resume_and_max_steps_may_grow():
    saved = parse_config(["--max_steps", "40"], "t", {}, config_cls=grpo.GRPOConfig)
    changed = parse_config(["--max_steps", "80", "--log_interval", "1", "--eval_samples", "7", "--out_dir", "b",
                            "--keep_last", "9"], "t", {}, config_cls=grpo.GRPOConfig)
    check_resumable(saved_state(saved), changed, 1, "d")
    for shrink in ("20", "0"):  # fewer steps, or no cap at all, is not an extension
        now = parse_config(["--max_steps", shrink], "t", {}, config_cls=grpo.GRPOConfig)
        with pytest.raises(ValueError, match="--max_steps was 40 .* it may only grow, to extend the run"):
            check_resumable(saved_state(saved), now, 1, "d")


def test_every_option_says_what_a_resume_asks_of_it():
    # A new option is "match" unless declared otherwise: safe by default.
    rules = resume_rules(grpo.GRPOConfig)
    assert set(rules.values()) <= {"match", "free", "grow"}
    assert rules["num_generations"] == rules["epsilon"] == rules["learning_rate"] == "match"
    assert rules["eval_samples"] == rules["log_interval"] == "free" and rules["max_steps"] == "grow"


def test_a_resume_compares_files_not_how_their_paths_are_spelt(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "good_rel.jsonl").write_text("{}\n")
    (tmp_path / "runs" / "other.jsonl").write_text("{}\n")
    saved = parse_config(["--data_path", "runs/good_rel.jsonl", "--init", "runs/sft.pth"], "t", {},
                         config_cls=ChatConfig)
    same = parse_config(["--data_path", str(tmp_path / "runs" / "good_rel.jsonl"), "--init",
                         "./runs/../runs/sft.pth"], "t", {}, config_cls=ChatConfig)
    check_resumable(saved_state(saved), same, 1, "d")
    other = parse_config(["--data_path", "runs/other.jsonl", "--init", "runs/sft.pth"], "t", {}, config_cls=ChatConfig)
    with pytest.raises(ValueError, match=r"^--resume: --data_path was \['runs/good_rel.jsonl'\]"):
        check_resumable(saved_state(saved), other, 1, "d")
