"""train_tokenizer.py and its corpus sampling, on small synthetic corpora written here."""
import json
import random
import subprocess
import sys

import pytest
import torch
# The texts and helpers that define "behaves like the shipped tokenizer" (tests/ is on sys.path).
from test_tokenizer import ROUND_TRIP, SKIP_TEXT, _without_control_tokens

from tokenizer import CHAT_TEMPLATE, DEFAULT_TOKENIZER_DIR, SPECIAL_TOKENS, load_tokenizer

REPO_ROOT = REPO = DEFAULT_TOKENIZER_DIR.parent


# ---------------------------------------------------------------- sampling


def test_split_chunks_reassembles_and_respects_size():
    from tokenizer.sample import split_chunks
    rng = random.Random(2)
    text = "".join(rng.choice(["你", "a", " ", "\n"]) for _ in range(20000)) + "x" * 5000  # a long line too
    chunks = list(split_chunks(text, size=700))
    assert "".join(chunks) == text
    assert all(0 < len(c) <= 700 for c in chunks)
    assert sum(c.endswith("\n") for c in chunks) > len(chunks) // 2  # cut at line breaks when possible


def test_sample_is_bounded_disjoint_and_order_free():
    from tokenizer.sample import sample_texts
    rng = random.Random(3)
    docs = ["".join(chr(rng.randrange(0x4E00, 0x9FFF)) for _ in range(rng.randrange(10, 300))) for _ in range(2000)]
    a = sample_texts(docs, max_chars=50_000, heldout_chars=3_000, seed=7)
    assert 50_000 - 300 <= a.train_chars <= 50_000 and 0 < a.heldout_chars <= 3_000 + 300
    assert not set(a.train) & set(a.heldout)
    shuffled = docs * 3  # repeated and reordered: same distinct text, so the same sample
    rng.shuffle(shuffled)
    b = sample_texts(shuffled, max_chars=50_000, heldout_chars=3_000, seed=7)
    assert (b.train, b.heldout) == (a.train, a.heldout) and b.duplicates > 0
    c = sample_texts(docs, max_chars=50_000, heldout_chars=3_000, seed=8)
    assert c.train != a.train  # the seed matters


def test_sample_of_a_small_corpus_keeps_most_for_training():
    from tokenizer.sample import sample_texts
    docs = [f"第{i}篇短文。" * 3 for i in range(300)]
    sample = sample_texts(docs, max_chars=10**6, heldout_chars=10**6)
    assert sample.train_chars + sample.heldout_chars == sum(map(len, docs))  # nothing dropped
    assert 0 < sample.heldout_chars <= 0.1 * sum(map(len, docs)) + max(map(len, docs))  # 10%, + at most one doc


# ---------------------------------------------------------------- train_tokenizer.py


def _write_corpus(root, n_docs: int = 400, seed: int = 0):
    """A small synthetic corpus in three formats, with enough repeated pairs for 512 tokens."""
    rng = random.Random(seed)
    words = ["".join(chr(rng.randrange(0x4E00, 0x4E00 + 300)) for _ in range(rng.randrange(1, 4))) for _ in range(400)]
    words += ["token", "model", "hello", "world", "data", "train"]

    def doc():
        return "".join(rng.choice(words) + rng.choice(["", "，", " ", "。\n"]) for _ in range(rng.randrange(20, 80)))

    root.mkdir(parents=True, exist_ok=True)
    with open(root / "a.jsonl", "w", encoding="utf-8") as f:
        for _ in range(n_docs // 2):
            f.write(json.dumps({"text": doc()}, ensure_ascii=False) + "\n")
    convs = [{"conversations": [{"role": "user", "content": doc()}, {"role": "assistant", "content": doc()}]}
             for _ in range(n_docs // 4)]
    (root / "b.json").write_text(json.dumps(convs, ensure_ascii=False), encoding="utf-8")
    (root / "c.txt").write_text("\n".join(doc() for _ in range(n_docs // 4)), encoding="utf-8")
    return root


def _train(tmp_path, name, *extra):
    import train_tokenizer
    out = tmp_path / name
    argv = ["--data_path", str(tmp_path / "corpus"), "--vocab_size", "512", "--out_dir", str(out), *extra]
    return train_tokenizer.main(argv), out


def test_train_end_to_end(tmp_path, capsys):
    _write_corpus(tmp_path / "corpus")
    code, out = _train(tmp_path, "tok", "--heldout_chars", "5000")
    printed = capsys.readouterr().out
    assert code == 0
    assert "held-out compression:" in printed and "chars/token" in printed and "bytes/token" in printed
    trained = load_tokenizer(out)
    assert trained.vocab_size == 512
    assert [trained.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(7))
    for text in ROUND_TRIP:
        assert trained.decode(trained.encode(text)) == text
    assert trained.decode(trained.encode(SKIP_TEXT), skip_special_tokens=True) == _without_control_tokens(SKIP_TEXT)
    config = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["chat_template"] == CHAT_TEMPLATE


def test_train_is_deterministic(tmp_path, capsys):
    _write_corpus(tmp_path / "corpus")
    assert _train(tmp_path, "one")[0] == 0 and _train(tmp_path, "two")[0] == 0
    first, second = [(tmp_path / d / "tokenizer.json").read_bytes() for d in ("one", "two")]
    assert first == second


BAD_INPUTS = {
    "missing": (None, None),
    "empty.jsonl": (b"", None),
    "latin1.jsonl": ('{"text": "ok"}\n{"text": "caf\xe9"}\n'.encode("latin-1"), 2),
    "notjson.jsonl": (b'{"text": "ok"}\n{"text": "ok"}\nnot json at all\n', 3),
    "nofield.jsonl": (b'{"text": "ok"}\n{"foo": 1, "bar": [2]}\n', 2),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_one_line_error(tmp_path, capsys, name):
    import train_tokenizer
    content, line = BAD_INPUTS[name]
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    code = train_tokenizer.main(["--data_path", str(path), "--vocab_size", "300", "--out_dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert name in err
    if line is not None:
        assert f"{name}:{line}" in err
    assert not (tmp_path / "o").exists()


def test_bad_input_subprocess_exit_code_no_traceback(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{broken\n', encoding="utf-8")
    proc = subprocess.run([sys.executable, "train_tokenizer.py", "--data_path", str(bad)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "bad.jsonl:2" in proc.stderr and "Traceback" not in proc.stderr


def test_no_data_path_says_what_to_pass(capsys):
    import train_tokenizer
    assert train_tokenizer.main([]) == 2
    err = capsys.readouterr().err
    assert "--data_path" in err and len(err.strip().splitlines()) == 1


def test_skip_bad_continues_and_reports(tmp_path, capsys):
    corpus = _write_corpus(tmp_path / "corpus", n_docs=200)
    (corpus / "bad.jsonl").write_bytes(b'{"text": "fine"}\nnot json\n{"foo": 1}\n{"text": "caf\xe9"}\n')
    code, out = _train(tmp_path, "tok", "--skip_bad")
    printed = capsys.readouterr().out
    assert code == 0 and load_tokenizer(out).vocab_size > 263
    assert "bad.jsonl" in printed  # the skip summary names where records were dropped


def test_an_own_tokenizer_goes_through_every_stage_and_tool_untold(tmp_path, capsys):
    """train_tokenizer.py -> pretrain.py --tokenizer_dir -> sft.py (untold) -> eval_model.py and
    export.py (untold): the checkpoint records the tokenizer, so only the first stage names it."""
    import os
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    _write_corpus(tmp_path / "corpus")
    code, tok_dir = _train(tmp_path, "mytok")
    assert code == 0

    def run(*argv):
        done = subprocess.run([sys.executable, *argv], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-1500:]
        return done.stdout + done.stderr
    tiny = ["--preset", "spongebob-tiny", "--batch_size", "4", "--max_steps", "2", "--warmup_steps", "1",
            "--eval_interval", "0", "--device", "cpu", "--max_seq_len", "64"]
    out = run(str(REPO / "pretrain.py"), "--data_path", "corpus/a.jsonl", "--tokenizer_dir", str(tok_dir), *tiny)
    assert "6,400" not in out
    pretrained = torch.load(tmp_path / "out" / "pretrain.pth", weights_only=True)
    assert pretrained["config"]["vocab_size"] == 512 and pretrained["tokenizer"]["dir"] == str(tok_dir.resolve())
    run(str(REPO / "sft.py"), "--data_path", "corpus/b.json", *tiny[2:-1], "256", "--truncation", "truncate")
    # sft.py was not told: it took the tokenizer its --init (out/pretrain.pth) records.
    assert torch.load(tmp_path / "out" / "sft.pth", weights_only=True)["tokenizer"]["dir"] == str(tok_dir.resolve())
    said = run(str(REPO / "eval_model.py"), "--model_mode", "sft", "--prompt", "hello", "--max_new_tokens", "4",
               "--device", "cpu")
    assert f"tokenizer {tok_dir.resolve()}" in said
    run(str(REPO / "export.py"), "--model_mode", "sft", "--format", "hf")
    exported = json.loads((tmp_path / "out" / "export" / "sft-hf" / "config.json").read_text())
    assert exported["vocab_size"] == 512
    # The shipped tokenizer, named by hand, is refused with both identities rather than garbling text.
    done = subprocess.run([sys.executable, str(REPO / "eval_model.py"), "--model_mode", "sft", "--prompt", "x",
                           "--tokenizer_dir", str(REPO / "tokenizer")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and "vocab_size is 512 but the tokenizer has 6400" in done.stderr


def test_an_existing_tokenizer_is_never_overwritten_silently(tmp_path, capsys):
    """A tokenizer that trained checkpoints must survive a second run into its folder: refused, or with
    --overwrite moved aside (its bytes intact); the shipped tokenizer is never written at all."""
    import train_tokenizer
    from tokenizer import DEFAULT_TOKENIZER_DIR
    _write_corpus(tmp_path / "corpus")
    assert _train(tmp_path, "tok")[0] == 0
    first = (tmp_path / "tok" / "tokenizer.json").read_bytes()
    capsys.readouterr()
    code, out = _train(tmp_path, "tok", "--seed", "7")
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: --out_dir {out} already holds a tokenizer") and "--overwrite" in err
    assert (out / "tokenizer.json").read_bytes() == first
    code, out = _train(tmp_path, "tok", "--seed", "7", "--overwrite")
    printed = capsys.readouterr().out
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("tok.previous-")]
    assert code == 0 and len(aside) == 1 and f"is now in {aside[0]}" in printed
    assert (aside[0] / "tokenizer.json").read_bytes() == first != (out / "tokenizer.json").read_bytes()
    shipped = (DEFAULT_TOKENIZER_DIR / "tokenizer.json").read_bytes()
    for extra in ([], ["--overwrite"]):
        code = train_tokenizer.main(["--data_path", str(tmp_path / "corpus"), "--vocab_size", "512",
                                     "--out_dir", str(DEFAULT_TOKENIZER_DIR), *extra])
        assert code == 2 and "is the shipped tokenizer" in capsys.readouterr().err
    assert (DEFAULT_TOKENIZER_DIR / "tokenizer.json").read_bytes() == shipped
