"""pretrain.py end to end: kill and resume bit-exactly, torchrun, and bad input."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import pretrain
from model import SpongeBob, get_preset, read_checkpoint, save_model
from trainer import parse_config, run_stage
from trainer.loop import fit

REPO = Path(__file__).resolve().parents[1]
TINY = ["--preset", "spongebob-tiny", "--max_seq_len", "32", "--batch_size", "4", "--accumulation_steps", "2",
        "--warmup_steps", "2", "--eval_interval", "0", "--log_interval", "1", "--device", "cpu"]


def write_corpus(path: Path, n_docs: int = 300, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n_docs):
            text = "".join(chr(rng.randrange(0x4E00, 0x4E00 + 500)) for _ in range(rng.randrange(5, 80)))
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    return path


def run_script(args, cwd, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, str(REPO / "pretrain.py"), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_a_killed_run_resumes_to_bit_identical_weights(tmp_path):
    data = write_corpus(tmp_path / "corpus.jsonl", n_docs=120)  # ~24 steps per epoch
    args = [*TINY, "--data_path", str(data), "--epochs", "2", "--save_interval", "5", "--keep_last", "2"]
    full = run_script([*args, "--out_dir", "full"], tmp_path)
    assert full.wait(timeout=300) == 0, full.stderr.read()

    victim = run_script([*args, "--out_dir", "cut"], tmp_path)
    state_dir = tmp_path / "cut" / "pretrain" / "state"
    deadline = time.time() + 120
    while not (state_dir.is_dir() and any(state_dir.glob("step_*.pt"))) and time.time() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)  # no chance to clean up: like a power cut or the OOM killer
    assert victim.wait(timeout=30) == -signal.SIGKILL
    killed_at = max(int(p.stem.split("_")[1]) for p in state_dir.glob("step_*.pt"))
    total = sum(1 for _ in open(tmp_path / "full" / "pretrain" / "metrics.jsonl"))
    assert killed_at < total  # it really was cut short

    resumed = run_script([*args, "--out_dir", "cut", "--resume"], tmp_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resuming from" in out
    a = read_checkpoint(tmp_path / "full" / "pretrain.pth")["model"]
    b = read_checkpoint(tmp_path / "cut" / "pretrain.pth")["model"]
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in open(tmp_path / "cut" / "pretrain" / "metrics.jsonl")]
    assert steps == list(range(1, total + 1))  # each step logged once, even across the kill


def test_torchrun_two_cpu_processes_train_and_exit_cleanly(tmp_path):
    data = write_corpus(tmp_path / "corpus.jsonl")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "pretrain.py"), *TINY, "--data_path", str(data), "--max_steps", "3", "--out_dir", "out"]
    # A new session, so that a hang can be killed with all of torchrun's workers.
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("torchrun did not exit within 120 s (a hang)")
    assert proc.returncode == 0, err[-2000:]
    assert out.count("[pretrain] model:") == 1  # only rank 0 speaks
    assert "2 process(es)" in out
    assert len((tmp_path / "out" / "pretrain" / "metrics.jsonl").read_text().splitlines()) == 3
    assert read_checkpoint(tmp_path / "out" / "pretrain.pth")["meta"]["step"] == 3


# ------------------------------------------------------------------ bad input: one line, non-zero exit

def run_inline(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tiny = TINY[2:] if "--init" in argv else TINY  # with --init the shape is the checkpoint's: no --preset
    cfg = parse_config([*tiny, "--max_steps", "1", *argv], "test", pretrain.REFERENCE, pretrain.DEMO)
    with pytest.raises(SystemExit) as exit_info:
        run_stage(cfg, "pretrain", pretrain.build_data, fit)
    err = capsys.readouterr().err.strip().splitlines()
    return exit_info.value.code, err[-1] if err else ""


@pytest.mark.parametrize("content,expected", [
    (None, "nope.jsonl"),
    ("", "file is empty"),
    ('{"text": "好"}\nnot json\n', "bad.jsonl:2: not valid JSON"),
    ('{"text": "好"}\n{"title": 3}\n', "bad.jsonl:2: no usable text field"),
    (b'{"text": "\xff\xfe"}\n', "bad.jsonl:1: not valid UTF-8"),
])
def test_bad_data_is_one_line_naming_file_and_line(tmp_path, monkeypatch, capsys, content, expected):
    path = tmp_path / ("nope.jsonl" if content is None else "bad.jsonl")
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    code, last = run_inline(["--data_path", str(path)], tmp_path, monkeypatch, capsys)
    assert code == 2 and last.startswith("error: ") and expected in last


def test_skip_bad_counts_and_trains(tmp_path, monkeypatch, capsys):
    good = write_corpus(tmp_path / "good.jsonl", n_docs=50)
    with open(good, "a") as f:
        f.write("not json\n{\"title\": 1}\n")
    monkeypatch.chdir(tmp_path)
    cfg = parse_config([*TINY, "--max_steps", "1", "--data_path", str(good), "--skip_bad"], "t",
                       pretrain.REFERENCE, pretrain.DEMO)
    run_stage(cfg, "pretrain", pretrain.build_data, fit)
    out = capsys.readouterr().out
    assert "skipped 2 bad records" in out and "not valid JSON" in out and "no usable text field" in out


def test_checkpoint_with_another_vocab_is_refused(tmp_path, monkeypatch, capsys):
    data = write_corpus(tmp_path / "c.jsonl", n_docs=30)
    other = SpongeBob(get_preset("spongebob-tiny").with_changes(vocab_size=6000))
    save_model(tmp_path / "other.pth", other, {"vocab_size": 6000})
    code, last = run_inline(["--data_path", str(data), "--init", str(tmp_path / "other.pth")],
                            tmp_path, monkeypatch, capsys)
    assert code == 2 and "vocab_size is 6000" in last and "6400" in last


def test_resume_without_state_and_unwritable_out_dir(tmp_path, monkeypatch, capsys):
    data = write_corpus(tmp_path / "c.jsonl", n_docs=30)
    code, last = run_inline(["--data_path", str(data), "--resume"], tmp_path, monkeypatch, capsys)
    assert code == 2 and "--resume: no saved training state" in last
    (tmp_path / "a_file").write_text("x")
    code, last = run_inline(["--data_path", str(data), "--out_dir", "a_file/out"], tmp_path, monkeypatch, capsys)
    assert code == 2 and "--out_dir a_file/out: not writable" in last


def test_out_of_memory_says_which_flags_to_lower(tmp_path, monkeypatch, capsys):
    from trainer.engine import Engine

    def no_memory(self, *args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Engine, "backward", no_memory)
    data = write_corpus(tmp_path / "c.jsonl", n_docs=30)
    code, last = run_inline(["--data_path", str(data)], tmp_path, monkeypatch, capsys)
    assert code == 1 and "out of memory at --batch_size 4" in last and "--accumulation_steps" in last


def test_use_wandb_without_the_package_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` fail
    data = write_corpus(tmp_path / "c.jsonl", n_docs=30)
    code, last = run_inline(["--data_path", str(data), "--use_wandb"], tmp_path, monkeypatch, capsys)
    assert code == 2 and "pip install wandb" in last


def test_wandb_logs_offline_with_no_network_or_account(tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb")  # optional dependency: skipped where it is not installed
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    data = write_corpus(tmp_path / "c.jsonl", n_docs=30)
    monkeypatch.chdir(tmp_path)
    cfg = parse_config([*TINY, "--max_steps", "2", "--data_path", str(data), "--use_wandb"], "t",
                       pretrain.REFERENCE, pretrain.DEMO)
    run_stage(cfg, "pretrain", pretrain.build_data, fit)
    assert list((tmp_path / "out" / "pretrain" / "wandb").glob("offline-run-*"))
