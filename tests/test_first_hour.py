"""The first hour with your own data: one-line flag errors, cheap checks before any
data work, model-size flags, memory fitting, honest plans, the val floor, chat commands."""
from pathlib import Path

import numpy as np
import pytest
import torch

import distill
import eval_model
import export
import pretrain
import serve
import sft
import train_tokenizer
from dataset.token_files import SplitWriter, raise_val_floor, split_counts
from model import SpongeBob
from test_eval_chat import FakeTerminal, run_main
from test_eval_model import save_tiny
from test_pretrain import TINY, write_corpus
from tokenizer import load_tokenizer
from trainer import ConfigError, TrainConfig, parse_config, run_stage
from trainer.loop import fit
from trainer.run import model_config
from trainer.memory import DoesNotFit, estimate_peak_bytes, fit_batch


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err  # no usage dump, no traceback
    return lines[0]


# ------------------------------------------------------------------ unknown flags, in every script

@pytest.mark.parametrize("parse,argv,expected", [
    (lambda a: parse_config(a, "t", pretrain.REFERENCE, pretrain.DEMO), ["--lr", "1e-3"],
     "error: unknown option --lr (did you mean --learning_rate?)"),
    (lambda a: parse_config(a, "t", pretrain.REFERENCE), ["--bs", "8"], "error: unknown option --bs (did you mean --batch_size?)"),
    (lambda a: parse_config(a, "t", pretrain.REFERENCE), ["--save_dir", "x"],
     "error: unknown option --save_dir (did you mean --out_dir?)"),
    (lambda a: parse_config(a, "t", pretrain.REFERENCE), ["--max-seq-len", "64"],
     "error: unknown option --max-seq-len (did you mean --max_seq_len?)"),
    (lambda a: parse_config(a, "t", pretrain.REFERENCE), ["--use_moe", "true"],
     "error: --use_moe: mixture-of-experts is not supported: SpongeBob models are dense Llamas"),
    (lambda a: parse_config(a, "t", sft.REFERENCE, init_from="pretrain"), ["--dim", "768"],
     "error: unknown option --dim (did you mean --hidden_size?)"),
    (lambda a: parse_config(a, "t", distill.REFERENCE, config_cls=distill.DistillConfig), ["--tag-weight", "5"],
     "error: unknown option --tag-weight (did you mean --tag_weight?)"),
    (eval_model.main, ["--model-mode", "1"], "error: unknown option --model-mode (did you mean --model_mode?)"),
    (serve.main, ["--prot", "80"], "error: unknown option --prot (did you mean --port?)"),
    (export.main, ["--ckpt", "x.pth", "--save_dir", "y"], "error: unknown option --save_dir (did you mean --out_dir?)"),
    (train_tokenizer.parse_args, ["--vocab", "100"], "error: unknown option --vocab (did you mean --vocab_size?)"),
])
def test_an_unknown_flag_is_one_line_with_a_suggestion(capsys, parse, argv, expected):
    with pytest.raises(SystemExit) as info:
        parse(argv)
    assert info.value.code == 2
    assert one_error_line(capsys.readouterr().err) == expected


def test_several_unknown_flags_and_a_bad_type_are_one_line(capsys):
    with pytest.raises(SystemExit):
        parse_config(["--lr", "1", "--epoch", "2"], "t", pretrain.REFERENCE)
    assert one_error_line(capsys.readouterr().err) == (
        "error: unknown option --lr (did you mean --learning_rate?); unknown option --epoch (did you mean --epochs?)")
    with pytest.raises(SystemExit):
        parse_config(["--batch_size", "many"], "t", pretrain.REFERENCE)
    assert one_error_line(capsys.readouterr().err) == "error: argument --batch_size: invalid int value: 'many'"


def test_every_bad_yaml_key_is_reported_at_once(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("lr: 0.001\nepoch: 3\nbatch_size: many\nwarmup_steps: 10\n")
    with pytest.raises(ConfigError) as info:
        parse_config(["--config", str(f)], "t", pretrain.REFERENCE)
    assert str(info.value) == (f"{f}: unknown key 'lr' (did you mean 'learning_rate'?); unknown key 'epoch' "
                               "(did you mean 'epochs'?); batch_size: expected int, got 'many'")


# ------------------------------------------------------------------ checks before any data work

def run_stage_inline(script, argv, tmp_path, monkeypatch, capsys, init_from=None):
    """Run a stage in-process in tmp_path; returns (exit code or 0, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)
    config_cls = getattr(script, "DistillConfig", getattr(script, "ChatConfig", TrainConfig))
    try:
        cfg = parse_config(argv, "t", script.REFERENCE, script.DEMO, config_cls, init_from)
        run_stage(cfg, "stage", script.build_data, fit)
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv,expected", [
    (["--batch_size", "0"], "error: --batch_size 0: must be at least 1"),
    (["--preset", "spongebob-tiniest"], "error: --preset: unknown preset 'spongebob-tiniest' (did you mean "
                                        "'spongebob-tiny'?)"),
    (["--preset", "spongebob-tiny", "--max_seq_len", "8192"],
     "error: --max_seq_len 8192 exceeds the 512 positions of the model (--max_position_embeddings); "
     "lower --max_seq_len"),
    (["--learning_rate", "1e-3", "--min_lr", "1e-2"], "error: --min_lr 0.01 is above --learning_rate 0.001"),
    (["--resume"], "error: --resume: no saved training state in out/stage/state"),
    (["--hidden_size", "100", "--num_attention_heads", "8"],
     "error: --hidden_size 100 is not a multiple of --num_attention_heads 8"),
    (["--num_attention_heads", "8", "--num_key_value_heads", "3"],
     "error: --num_attention_heads 8 is not a multiple of --num_key_value_heads 3"),
    (["--hidden_size", "36", "--num_attention_heads", "4"],
     "error: head size --hidden_size / --num_attention_heads = 9 must be even for RoPE"),
])
def test_flag_mistakes_fail_before_the_corpus_is_made(tmp_path, monkeypatch, capsys, argv, expected):
    code, _, err = run_stage_inline(pretrain, argv, tmp_path, monkeypatch, capsys)
    assert code == 2 and one_error_line(err).startswith(expected)
    assert not (tmp_path / "out").exists()  # no demo corpus, no cache, nothing in --out_dir


def test_a_chat_stage_without_its_previous_stage_fails_first(tmp_path, monkeypatch, capsys):
    code, _, err = run_stage_inline(sft, ["--out_dir", "runs/a"], tmp_path, monkeypatch, capsys, "pretrain")
    assert code == 2 and one_error_line(err) == (
        f"error: --init runs/a/pretrain.pth (relative to {tmp_path}): checkpoint not found; run the previous "
        "stage with the same --out_dir first, or pass --init")
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_an_unknown_packing_is_one_line_before_any_data(tmp_path, monkeypatch, capsys):
    tok = load_tokenizer()
    _, init = save_tiny(tmp_path / "init.pth", tok, {"stage": "pretrain"})
    code, _, err = run_stage_inline(sft, ["--init", str(init), "--packing", "tight"], tmp_path, monkeypatch, capsys,
                                    "pretrain")
    assert code == 2 and one_error_line(err) == "error: --packing tight: choose none, group, pack"
    assert not (tmp_path / "out").exists()


def test_shape_flags_are_refused_when_init_gives_the_shape():
    with pytest.raises(ConfigError, match="^--hidden_size: the model's shape comes from --init out/pretrain.pth"):
        parse_config(["--hidden_size", "768"], "t", sft.REFERENCE, init_from="pretrain")
    assert parse_config(["--out_dir", "runs/b"], "t", sft.REFERENCE, init_from="pretrain").init == "runs/b/pretrain.pth"
    assert parse_config(["--init", "x.pth"], "t", sft.REFERENCE, init_from="pretrain").init == "x.pth"
    with pytest.raises(ConfigError, match="--preset: the model's shape comes from --init runs/b/pretrain.pth"):
        parse_config(["--out_dir", "runs/b", "--preset", "spongebob-demo"], "t", sft.REFERENCE, init_from="pretrain")


def test_shape_flags_build_the_model_they_name():
    cfg = TrainConfig(preset="spongebob-tiny", hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, tie_word_embeddings=False)
    config = model_config(cfg, 6400)
    assert (config.dim, config.n_layers, config.n_heads, config.n_kv_heads) == (128, 2, 4, 2)
    assert config.hidden_dim == 384  # 8/3 x 128 = 341.3, rounded up to a multiple of 64
    # Counted by hand: embedding and head 6400 x 128 each; per layer q, o 128 x 128, k, v 128 x 64,
    # gate, up, down 128 x 384, two norms of 128; the final norm 128.
    per_layer = 2 * 128 * 128 + 2 * 128 * 64 + 3 * 128 * 384 + 2 * 128
    assert SpongeBob(config).num_parameters() == 2 * 6400 * 128 + 2 * per_layer + 128 == 2_032_256
    assert model_config(TrainConfig(preset="spongebob-tiny", intermediate_size=200), 6400).hidden_dim == 200


# ------------------------------------------------------------------ memory

def test_a_batch_that_does_not_fit_keeps_its_effective_size():
    config = model_config(TrainConfig(), 6400)
    n = SpongeBob(config).num_parameters()
    need = {b: estimate_peak_bytes(config, n, b, 512, torch.float32) for b in (84, 42, 28, 21)}
    assert need[84] > need[42] > need[28] > need[21]
    # Memory for 21 rows but not 28: the largest divisor of 84 that fits is chosen.
    available = (need[21] + need[28]) / 2 / 0.85
    plan = fit_batch(config, n, 84, 2, 512, torch.float32, available)
    assert (plan.batch_size, plan.accumulation_steps, plan.changed) == (21, 8, True)
    assert fit_batch(config, n, 84, 2, 512, torch.float32, None).batch_size == 84  # unknown memory: no change
    with pytest.raises(DoesNotFit, match="one row of --max_seq_len 512 needs about .* lower --max_seq_len"):
        fit_batch(config, n, 84, 2, 512, torch.float32, 1e8)


def test_the_stage_lowers_the_micro_batch_and_says_so(tmp_path, monkeypatch, capsys):
    data = write_corpus(tmp_path / "c.jsonl", n_docs=40)
    monkeypatch.setattr("trainer.ops.available_bytes", lambda device, ranks: 2.2e9)
    code, out, _ = run_stage_inline(pretrain, [*TINY, "--data_path", str(data), "--max_steps", "1",
                                               "--batch_size", "4096", "--accumulation_steps", "1"],
                                    tmp_path, monkeypatch, capsys)
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith("memory:"))
    assert "--batch_size 4096 x --max_seq_len 32" in line and "the same 4096 rows" in line
    assert "batch 2048 x accumulation 2" in out or "accumulation 4 x" in out or "x accumulation" in out


# ------------------------------------------------------------------ an honest plan

def test_warmup_longer_than_the_run_and_a_truthful_cap(tmp_path, monkeypatch, capsys):
    data = write_corpus(tmp_path / "c.jsonl", n_docs=40)
    argv = [*TINY, "--data_path", str(data), "--epochs", "1", "--max_steps", "500", "--warmup_steps", "100"]
    code, out, _ = run_stage_inline(pretrain, argv, tmp_path, monkeypatch, capsys)
    assert code == 0
    assert "capped by" not in out and "(--epochs 1 x " in out
    assert "warning: --warmup_steps 100 is not below the" in out
    assert "measured: " in out and " s per step, so the remaining " in out


def test_the_plan_line_names_the_flags_that_make_hours_minutes():
    from types import SimpleNamespace
    from trainer.ops import plan_time as plan

    def plan_time(run, seconds):
        return plan(run.total_steps, run.step, seconds, run.device, run.cfg)

    def trainer(init, device="cpu", steps=2000):
        cfg = SimpleNamespace(init=init)
        return SimpleNamespace(total_steps=steps, step=0, device=torch.device(device), cfg=cfg)
    hours = plan_time(trainer(""), 463.0)  # the reference defaults on an AVX2 laptop: 463 s a step
    assert hours.startswith("measured: 463.0 s per step, so the remaining 2,000 steps take about 257 h 13 min")
    assert hours.endswith("for a CPU-sized run of minutes: --preset spongebob-demo --max_seq_len 256 "
                          "--batch_size 16 --accumulation_steps 1 --learning_rate 4e-3 --max_steps 300")
    with_init = plan_time(trainer("out/pretrain.pth"), 463.0)  # a later stage: the shape is the checkpoint's
    assert "--preset" not in with_init and with_init.endswith("--accumulation_steps 1 --max_steps 300")
    assert "CPU-sized" not in plan_time(trainer(""), 1.0)  # 33 minutes: no advice
    assert "CPU-sized" not in plan_time(trainer("", device="cuda"), 463.0)


def test_a_cpu_without_native_bf16_gets_the_smaller_demo(monkeypatch):
    import common.device as device
    monkeypatch.setattr(device.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device.torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(device, "cpu_flags", lambda: {"avx2", "fma"})
    small = dict(fp32_cpu_demo=pretrain.FP32_CPU_DEMO)
    assert parse_config([], "t", pretrain.REFERENCE, pretrain.DEMO, **small).max_steps == 130
    assert parse_config(["--max_steps", "0"], "t", pretrain.REFERENCE, pretrain.DEMO, **small).max_steps == 0
    assert parse_config(["--dtype", "bfloat16"], "t", pretrain.REFERENCE, pretrain.DEMO, **small).max_steps == 0
    assert parse_config(["--data_path", "x.jsonl"], "t", pretrain.REFERENCE, pretrain.DEMO, **small).max_steps == 0
    monkeypatch.setattr(device, "cpu_flags", lambda: {"avx2", "amx_bf16"})  # native bf16: the whole demo
    assert parse_config([], "t", pretrain.REFERENCE, pretrain.DEMO, **small).max_steps == 0


def test_the_validation_split_has_a_floor(tmp_path):
    def split(train_docs: int, length: int, val_docs: int) -> Path:
        d = tmp_path / f"s{train_docs}_{length}_{val_docs}"
        d.mkdir()
        for name, docs in (("train", train_docs), ("val", val_docs)):
            w = SplitWriter(d, name)
            w.add(np.arange(docs * length) % 7, np.full(docs, length))
            w.close()
        return d

    small = split(100, 50, 1)  # 5,050 tokens: the 10% cap (505) binds before 8,192 tokens
    assert raise_val_floor(small, 0.01) == 9 and split_counts(small)["val"] == {"n_docs": 10, "n_tokens": 500}
    large = split(1000, 100, 1)  # 100,100 tokens: 8,192 tokens reached at 82 documents
    assert raise_val_floor(large, 0.01) == 81 and split_counts(large)["val"]["n_tokens"] == 8200
    assert raise_val_floor(split(100, 50, 0), 0.0) == 0  # --val_fraction 0: no validation wanted
    moved_tokens = np.fromfile(large / "val.tokens.bin", dtype=np.uint16)[100:]
    assert moved_tokens.tolist() == (np.arange(919 * 100, 1000 * 100) % 7).tolist()  # the tail of train, in order


# ------------------------------------------------------------------ chat commands and warnings

def test_mode_0_takes_the_commands_instead_of_prompting_with_them(monkeypatch, capsys, tmp_path):
    tok = load_tokenizer()
    _, path = save_tiny(tmp_path / "p.pth", tok, {"stage": "pretrain", "step": 1})
    code, out, err = run_main(monkeypatch, capsys, ["--ckpt", path, "--device", "cpu", "--max_new_tokens", "2"],
                              FakeTerminal("/help\n/exit\n海绵\n"))
    assert code == 0 and "海绵" not in out and "/exit" not in out
    assert err.count("/exit or Ctrl-D quits") == 2  # the banner, then /help
    code, out, _ = run_main(monkeypatch, capsys, ["--ckpt", path, "--device", "cpu", "--max_new_tokens", "2"],
                            "海绵\n/exit\n派大星\n")
    assert code == 0 and out.count('{"prompt"') == 1


def test_a_chat_mode_on_a_pretrained_model_warns(monkeypatch, capsys, tmp_path):
    tok = load_tokenizer()
    _, path = save_tiny(tmp_path / "p.pth", tok, {"stage": "pretrain", "step": 1})
    _, _, err = run_main(monkeypatch, capsys, ["--model_mode", 1, "--ckpt", path, "--device", "cpu",
                                               "--max_new_tokens", 1, "--prompt", "你好"])
    assert "warning: " in err and "has never seen a chat" in err


def test_pretraining_text_given_to_sft_names_pretrain_py(tmp_path, monkeypatch, capsys):
    data = write_corpus(tmp_path / "text.jsonl", n_docs=5)
    tok = load_tokenizer()
    _, init = save_tiny(tmp_path / "init.pth", tok, {"stage": "pretrain"})
    code, _, err = run_stage_inline(sft, ["--data_path", str(data), "--init", str(init), "--max_seq_len", "64",
                                          "--device", "cpu"], tmp_path, monkeypatch, capsys, "pretrain")
    assert code == 2 and one_error_line(err) == (
        f"error: {data}:1: this is pretraining text ({{\"text\": ...}} records, no turns); "
        f"train on it with pretrain.py --data_path {data}")


def test_eval_serve_and_export_find_a_stage_in_out_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = serve.build_parser().parse_args(["--out_dir", "runs/a", "--model_mode", "2"])
    from inference.loading import checkpoint_path
    assert checkpoint_path(args) == Path("runs/a/distill.pth")
    code, _, err = run_main(monkeypatch, capsys, ["--out_dir", "runs/a", "--model_mode", "1", "--prompt", "x"])
    assert code == 2 and one_error_line(err) == (
        f"error: runs/a/sft.pth not found (relative to {tmp_path}): run python sft.py --out_dir runs/a first, "
        "or pass --ckpt")
    assert export.main(["--out_dir", "runs/a", "--model_mode", "1"]) == 2
    assert "runs/a/sft.pth (relative to" in capsys.readouterr().err


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_state(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    data = write_corpus(tmp_path / "c.jsonl", n_docs=400)
    repo = Path(__file__).resolve().parents[1]
    # Steps of about a second (the demo model, fp32), so both presses land inside one step.
    argv = [sys.executable, str(repo / "pretrain.py"), "--data_path", str(data), "--preset", "spongebob-demo",
            "--max_seq_len", "256", "--batch_size", "16", "--dtype", "float32", "--device", "cpu",
            "--save_interval", "1", "--max_steps", "1000", "--warmup_steps", "1", "--eval_interval", "0"]
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(repo)))
    states = tmp_path / "out" / "pretrain" / "state"
    deadline = time.time() + 120
    while not (states.is_dir() and any(states.glob("step_*.pt"))) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-1500:]
    line = next(line for line in err.splitlines() if line.startswith("second Ctrl-C"))
    kept = line.split("last saved state: ")[1].split(";")[0]
    assert line.startswith("second Ctrl-C: stopped at once; last saved state: ") and (tmp_path / kept).is_file()
    assert line.endswith("continue with the same command plus --resume")
    assert not [p for p in states.iterdir() if not p.name.endswith(".pt")]  # nothing half-written


def test_a_rerun_in_a_used_folder_is_refused_or_moves_the_old_run_aside(tmp_path, monkeypatch, capsys):
    data = write_corpus(tmp_path / "c.jsonl", n_docs=40)
    # cosine: a wsd run also keeps the state where its decay began (tests/test_trainer.py pins that)
    argv = [*TINY, "--data_path", str(data), "--max_steps", "2", "--save_interval", "1", "--keep_last", "1",
            "--lr_schedule", "cosine"]
    assert run_stage_inline(pretrain, argv, tmp_path, monkeypatch, capsys)[0] == 0
    states = tmp_path / "out" / "stage" / "state"
    first = sorted(p.name for p in states.iterdir())
    assert first == ["step_00000002.pt"]
    # Forgetting --resume: refused in one line, naming both ways on; nothing touched.
    code, _, err = run_stage_inline(pretrain, argv, tmp_path, monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: out/stage/state (relative to ") and "holds an earlier stage run (saved up to " \
        "step 2): continue it with --resume, or start afresh with --overwrite" in err
    assert sorted(p.name for p in states.iterdir()) == first
    # --overwrite: the old run (states, metrics, weights) moves aside, whole, and the new one starts clean.
    code, out, _ = run_stage_inline(pretrain, [*argv, "--max_steps", "1", "--overwrite"], tmp_path, monkeypatch, capsys)
    assert code == 0
    aside = next((tmp_path / "out").glob("stage.previous-*"))
    assert f"--overwrite: the earlier stage run is now in out/{aside.name}" in out
    assert sorted(p.name for p in (aside / "stage" / "state").iterdir()) == first and (aside / "stage.pth").is_file()
    assert sorted(p.name for p in states.iterdir()) == ["step_00000001.pt"]
    # Extending the new run: --resume with a larger --max_steps goes on from step 1 to step 3.
    code, out, _ = run_stage_inline(pretrain, [*argv, "--max_steps", "3", "--resume"], tmp_path, monkeypatch, capsys)
    assert code == 0 and "resuming from" in out and "done: 3 steps" in out


@pytest.mark.parametrize("stage,rows", [("dpo", 2), ("grpo", 8)])
def test_the_memory_plan_counts_every_row_of_a_pair_or_a_group(stage, rows):
    """A DPO item is 2 rows and a GRPO item is --num_generations rows: where 16 plain rows fit but 16
    pairs or groups do not, the plan lowers those stages' micro-batch and leaves SFT's alone."""
    import dpo
    import grpo
    cls = {"dpo": dpo.DPOConfig, "grpo": grpo.GRPOConfig}[stage]
    cfg = parse_config(["--batch_size", "16", "--max_seq_len", "512"], "t", config_cls=cls)
    config = model_config(TrainConfig(), 6400)
    n = SpongeBob(config).num_parameters()
    plain = estimate_peak_bytes(config, n, 16, 512, torch.float32)
    as_rows = estimate_peak_bytes(config, n, 16 * rows, 512, torch.float32)
    available = (plain + as_rows) / 2 / 0.85  # room for 16 rows, not for 16 x rows
    assert fit_batch(config, n, 16, 1, 512, torch.float32, available).changed is False
    plan = fit_batch(config, n, 16, 1, 512, torch.float32, available, cfg.footprint())
    assert plan.changed and plan.batch_size * plan.accumulation_steps == 16
    assert plan.estimate <= 0.85 * available
