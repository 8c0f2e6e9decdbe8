"""The chat stages end to end: pretrain -> sft -> sft_long through the real scripts."""
import json
import os
import subprocess
import sys
from pathlib import Path

from dataset.sft_tokenize import pretokenize_chat
from model import read_checkpoint
from test_pretrain import write_corpus
from tokenizer import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
TINY = ["--batch_size", "4", "--max_steps", "2", "--warmup_steps", "1", "--eval_interval", "0",
        "--device", "cpu", "--out_dir", "out"]


def run(script, args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def chat_file(path, fmt, n=24):
    rows = []
    for i in range(n):
        q, a = f"第{i}个问题：{i}加{i}等于几？", f"{i}加{i}等于{2 * i}。"
        if fmt == "sharegpt":
            rows.append({"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]})
        else:  # alpaca
            rows.append({"instruction": q, "input": "", "output": a, "history": [["你好", "你好！"]]})
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


def test_pretrain_sft_sft_long_chain_through_the_scripts(tmp_path):
    write_corpus(tmp_path / "text.jsonl", n_docs=60)
    run("pretrain.py", ["--data_path", "text.jsonl", "--preset", "spongebob-tiny", "--max_seq_len", "64", *TINY],
        tmp_path)
    out = run("sft.py", ["--data_path", str(chat_file(tmp_path / "chat.jsonl", "sharegpt")),
                         "--max_seq_len", "128", *TINY], tmp_path)
    assert "from out/pretrain.pth" in out
    out = run("sft_long.py", ["--data_path", str(chat_file(tmp_path / "long.json", "alpaca")),
                              "--max_seq_len", "256", *TINY], tmp_path)
    assert "from out/sft.pth" in out
    metas = [read_checkpoint(tmp_path / "out" / f"{stage}.pth")["meta"] for stage in ("pretrain", "sft", "sft_long")]
    assert [m["stage"] for m in metas] == ["pretrain", "sft", "sft_long"]
    assert [m["max_seq_len"] for m in metas] == [64, 128, 256]


def test_over_long_conversations_are_dropped_or_truncated_and_counted(tmp_path):
    tok = load_tokenizer()
    long_reply = "很长的回答。" * 40  # far over 32 tokens
    rows = [{"conversations": [{"role": "user", "content": "短"}, {"role": "assistant", "content": "好"}]},
            {"conversations": [{"role": "user", "content": "长"}, {"role": "assistant", "content": long_reply}]}]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    dropped = pretokenize_chat([path], tok, max_seq_len=32, truncation="drop", cache_root=tmp_path / "cache",
                               show_progress=False)
    assert dropped.meta["lengths"] == {"kept": 1, "dropped_too_long": 1, "truncated": 0, "dropped_no_reply_left": 0}
    cut = pretokenize_chat([path], tok, max_seq_len=32, truncation="truncate", cache_root=tmp_path / "cache",
                           show_progress=False)
    assert cut.meta["lengths"]["kept"] == 2 and cut.meta["lengths"]["truncated"] == 1
    docs = cut.train.doc_starts.tolist() + cut.val.doc_starts.tolist()
    assert len(docs) == 2
    # Every stored conversation fits: at most 33 tokens plus its end-of-text.
    for split in (cut.train, cut.val):
        ends = list(split.doc_starts[1:]) + [split.n_tokens]
        assert all(e - s <= 34 for s, e in zip(split.doc_starts, ends))
