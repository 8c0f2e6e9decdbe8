"""pretokenize: exact round trips with the shipped tokenizer, document offsets, the
val split, the cache (hits, invalidation, partial builds) and bad input."""
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from dataset import pretokenize as pt
from dataset.pretokenize import DataError, load_tokenized, pretokenize
from dataset.pretrain_dataset import PretrainDataset
from dataset.text_fields import iter_texts
from tokenizer import load_tokenizer

DOCS = ["你好，世界。这是第一篇文档。", "Second document, in English.\nWith two lines.",
        "emoji 🙂 and 繁體字 and <think>tags</think>", "短", "  indented code:\n    x = 1\n"]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def write_jsonl(path: Path, texts) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return path


def docs_of(token_file, tok) -> list[list[int]]:
    """Each document's tokens, end-of-text included, cut at doc_starts."""
    ends = list(token_file.doc_starts[1:]) + [token_file.n_tokens]
    return [token_file.tokens[s:e].tolist() for s, e in zip(token_file.doc_starts, ends)]


def build(paths, tok, tmp_path, **kw):
    kw.setdefault("show_progress", False)
    return pretokenize([str(p) for p in paths], tok, cache_root=tmp_path / "cache", **kw)


# ---------------------------------------------------------------- the token files

def test_round_trip_with_end_of_text_after_each_document(tmp_path, tok):
    src = write_jsonl(tmp_path / "a.jsonl", DOCS)
    corpus = build([src], tok, tmp_path, val_fraction=0.0)
    assert corpus.val.n_docs == 0 and corpus.train.n_docs == len(DOCS)
    assert corpus.train.tokens.dtype == np.uint16
    docs = docs_of(corpus.train, tok)
    for text, ids in zip(DOCS, docs):
        assert ids[-1] == tok.endoftext_id == 0
        assert tok.decode(ids[:-1]) == text
        assert ids[:-1] == tok.encode(text)  # the one-at-a-time encoder is the oracle
    # doc_starts: each document starts right after the previous one and its end-of-text.
    lengths = [len(tok.encode(t)) + 1 for t in DOCS]
    assert corpus.train.doc_starts.tolist() == [sum(lengths[:i]) for i in range(len(DOCS))]
    assert corpus.train.n_tokens == sum(lengths)


def test_folders_of_mixed_formats_keep_file_order(tmp_path, tok):
    folder = tmp_path / "data"
    write_jsonl(folder / "a.jsonl", ["甲一", "甲二"])
    (folder / "b.txt").write_text("乙段落第一行\n第二行\n\n乙第二段\n", encoding="utf-8")
    (folder / "c.json").write_text(json.dumps([{"text": "丙"}, "丁"], ensure_ascii=False), encoding="utf-8")
    corpus = build([folder], tok, tmp_path, val_fraction=0.0)
    assert [tok.decode(d[:-1]) for d in docs_of(corpus.train, tok)] == \
        ["甲一", "甲二", "乙段落第一行\n第二行", "乙第二段", "丙", "丁"]
    assert [s["path"] for s in corpus.meta["sources"]] == [str((folder / n).resolve()) for n in ("a.jsonl", "b.txt", "c.json")]


def test_val_split_is_deterministic_disjoint_and_nonempty(tmp_path, tok):
    texts = [f"第{i}篇文档，编号 {i}。" for i in range(200)]
    src = write_jsonl(tmp_path / "a.jsonl", texts)
    a = build([src], tok, tmp_path / "one", val_fraction=0.25, seed=1)
    b = build([src], tok, tmp_path / "two", val_fraction=0.25, seed=1)
    c = build([src], tok, tmp_path / "three", val_fraction=0.25, seed=2)
    decoded = {name: {split: [tok.decode(d[:-1]) for d in docs_of(getattr(x, split), tok)]
                      for split in ("train", "val")} for name, x in (("a", a), ("b", b), ("c", c))}
    assert decoded["a"] == decoded["b"]  # same seed: same split
    assert decoded["a"]["val"] != decoded["c"]["val"]  # another seed: another split
    train, val = decoded["a"]["train"], decoded["a"]["val"]
    assert not set(train) & set(val)
    assert Counter(train + val) == Counter(texts)  # nothing lost or duplicated
    assert 25 <= len(val) <= 75  # binomial(200, 0.25): mean 50, sd 6
    assert train == [t for t in texts if t in set(train)]  # input order kept within a split


def test_small_corpora_still_get_a_val_document(tmp_path, tok):
    two = build([write_jsonl(tmp_path / "two.jsonl", ["甲文档", "乙文档"])], tok, tmp_path, val_fraction=0.01)
    assert (two.train.n_docs, two.val.n_docs) == (1, 1)
    one = build([write_jsonl(tmp_path / "one.jsonl", ["唯一的文档"])], tok, tmp_path, val_fraction=0.5)
    assert (one.train.n_docs, one.val.n_docs) == (1, 0) and one.val.n_tokens == 0
    assert PretrainDataset(one.val, 8).n_rows == 0


def test_batching_does_not_change_the_files(tmp_path, tok, monkeypatch):
    texts = [f"文档 {i}：" + "天气很好。" * (i % 13) for i in range(300)]
    src = write_jsonl(tmp_path / "a.jsonl", texts)
    whole = build([src], tok, tmp_path / "one", val_fraction=0.1)
    monkeypatch.setattr(pt, "_BATCH_CHARS", 200)  # ~50 batches, several encoded at once
    batched = build([src], tok, tmp_path / "two", val_fraction=0.1)
    for split in ("train", "val"):
        assert (whole.dir / f"{split}.tokens.bin").read_bytes() == (batched.dir / f"{split}.tokens.bin").read_bytes()
        assert np.array_equal(getattr(whole, split).doc_starts, getattr(batched, split).doc_starts)
    # Every document is there once, exactly as encode() alone gives it, plus end-of-text.
    got = docs_of(batched.train, tok) + docs_of(batched.val, tok)
    assert sorted(got) == sorted(tok.encode(t) + [0] for t in texts)


def test_meta_records_sources_tokenizer_and_counts(tmp_path, tok):
    src = write_jsonl(tmp_path / "a.jsonl", DOCS)
    meta = build([src], tok, tmp_path).meta
    assert meta["sources"] == [{"path": str(src.resolve()), "size": src.stat().st_size,
                                "mtime_ns": src.stat().st_mtime_ns}]
    assert meta["tokenizer"]["sha256"] == tok.identity()["sha256"]
    assert meta["splits"]["train"]["n_docs"] + meta["splits"]["val"]["n_docs"] == len(DOCS)
    assert meta["skipped"]["total"] == 0 and meta["format_version"] == pt.FORMAT_VERSION


def test_rows_of_a_real_corpus_decode_to_the_documents(tmp_path, tok):
    src = write_jsonl(tmp_path / "a.jsonl", DOCS)
    corpus = build([src], tok, tmp_path, val_fraction=0.0)
    ds = PretrainDataset(corpus.train, seq_len=8, shuffle=False)
    inputs = [t for b in ds.batches(4, epoch=0) for t in b["input_ids"].flatten().tolist()]
    # The inputs, in order, are the documents joined by end-of-text (the final one is only a target).
    assert tok.decode(inputs[:corpus.train.n_tokens - 1]) == "<|endoftext|>".join(DOCS)


# ---------------------------------------------------------------- the cache

class NoEncoding:
    """A tokenizer that fails if asked to encode: proves a cache hit reads no text."""

    def __init__(self, tok):
        self.tok = tok
        self.vocab_size, self.endoftext_id = tok.vocab_size, tok.endoftext_id

    def identity(self):
        return self.tok.identity()

    def encode_batch(self, texts):
        raise AssertionError("the cache should have been used")


def file_times(dir: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in dir.iterdir()}


def test_cache_hit_is_instant_and_rewrites_nothing(tmp_path, tok):
    src = write_jsonl(tmp_path / "a.jsonl", DOCS)
    first = build([src], tok, tmp_path)
    before = file_times(first.dir)
    start = time.perf_counter()
    again = build([src], NoEncoding(tok), tmp_path)
    assert time.perf_counter() - start < 0.5
    assert again.dir == first.dir and file_times(again.dir) == before
    assert np.array_equal(again.train.tokens, first.train.tokens)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [first.dir.name]  # no leftovers


def test_changed_input_or_tokenizer_makes_a_new_cache(tmp_path, tok):
    src = write_jsonl(tmp_path / "a.jsonl", DOCS)
    first = build([src], tok, tmp_path).dir
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: same bytes, newer time
    touched = build([src], tok, tmp_path).dir
    with open(src, "a", encoding="utf-8") as f:
        f.write(json.dumps({"text": "又一篇"}, ensure_ascii=False) + "\n")
    appended = build([src], tok, tmp_path)
    assert len({first, touched, appended.dir}) == 3
    assert appended.train.n_docs + appended.val.n_docs == len(DOCS) + 1
    # Another tokenizer: the same vocabulary saved differently has another SHA-256.
    other_dir = tmp_path / "tok2"
    other_dir.mkdir()
    data = json.loads((tok.path / "tokenizer.json").read_text(encoding="utf-8"))
    (other_dir / "tokenizer.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    other = build([src], load_tokenizer(other_dir), tmp_path)
    assert other.dir != appended.dir and other.meta["tokenizer"]["sha256"] != tok.identity()["sha256"]


def test_partial_cache_is_rebuilt(tmp_path, tok):
    src = write_jsonl(tmp_path / "a.jsonl", DOCS)
    first = build([src], tok, tmp_path)
    tokens = (first.dir / "train.tokens.bin").read_bytes()
    (first.dir / "meta.json").unlink()  # as if killed before the end
    (first.dir / "train.tokens.bin").write_bytes(tokens[:3])
    with pytest.raises(DataError, match="no meta.json"):
        load_tokenized(first.dir)
    rebuilt = build([src], tok, tmp_path)
    assert rebuilt.dir == first.dir and (rebuilt.dir / "train.tokens.bin").read_bytes() == tokens


def test_a_killed_build_leaves_no_cache_and_its_folder_is_cleaned(tmp_path, tok):
    src = write_jsonl(tmp_path / "a.jsonl", DOCS)

    class Interrupted(NoEncoding):
        def encode_batch(self, texts):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build([src], Interrupted(tok), tmp_path)
    assert list((tmp_path / "cache").iterdir()) == []
    # A build folder left by a process that no longer exists (killed with SIGKILL) is removed.
    key = build([src], tok, tmp_path).dir.name
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / "cache" / f"{key}.building-{os.uname().nodename}-{dead}"
    stale.mkdir()
    (tmp_path / "cache" / key / "meta.json").unlink()
    build([src], tok, tmp_path)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [key]


def test_a_loss_mask_beside_the_tokens_is_loaded(tmp_path, tok):
    corpus = build([write_jsonl(tmp_path / "a.jsonl", DOCS)], tok, tmp_path, val_fraction=0.0)
    assert corpus.train.loss_mask is None  # pretraining writes none
    mask = (np.arange(corpus.train.n_tokens) % 2).astype(np.uint8)
    mask.tofile(corpus.dir / "train.mask.bin")
    assert np.array_equal(load_tokenized(corpus.dir).train.loss_mask, mask)
    mask[:-1].tofile(corpus.dir / "train.mask.bin")
    with pytest.raises(DataError, match="train.mask.bin: missing or not"):
        load_tokenized(corpus.dir)


def test_damaged_token_file_is_a_clear_error(tmp_path, tok):
    corpus = build([write_jsonl(tmp_path / "a.jsonl", DOCS)], tok, tmp_path, val_fraction=0.0)
    with open(corpus.dir / "train.tokens.bin", "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(DataError, match="train.tokens.bin: missing or not"):
        load_tokenized(corpus.dir)


# ---------------------------------------------------------------- bad input

def one_line_error(paths, tok, tmp_path, **kw) -> str:
    with pytest.raises(DataError) as info:
        build(paths, tok, tmp_path, **kw)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_missing_and_empty_inputs(tmp_path, tok):
    assert one_line_error([tmp_path / "nope.jsonl"], tok, tmp_path) == f"{tmp_path / 'nope.jsonl'}: no such file or directory"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    assert one_line_error([empty], tok, tmp_path) == f"{empty}: file is empty"
    (tmp_path / "dir").mkdir()
    assert "no .jsonl" in one_line_error([tmp_path / "dir"], tok, tmp_path)
    with pytest.raises(DataError, match="no data path"):
        pretokenize([], tok, cache_root=tmp_path / "cache")


def test_bad_records_name_file_and_line(tmp_path, tok):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "好"}\n{"text": 不是JSON}\n', encoding="utf-8")
    assert one_line_error([p], tok, tmp_path).startswith(f"{p}:2: not valid JSON")
    p.write_text('{"text": "好"}\n\n{"title": "没有正文"}\n', encoding="utf-8")
    assert one_line_error([p], tok, tmp_path).startswith(f"{p}:3: no usable text field")
    p.write_bytes('{"text": "好"}\n'.encode() + b'{"text": "\xff\xfe"}\n')
    assert one_line_error([p], tok, tmp_path).startswith(f"{p}:2: not valid UTF-8")
    assert list((tmp_path / "cache").iterdir()) == []  # nothing half-built is left behind


def test_skip_bad_counts_and_keeps_the_good_records(tmp_path, tok):
    p = tmp_path / "mixed.jsonl"
    p.write_bytes('{"text": "第一"}\n{"text": oops}\n{"title": "x"}\n'.encode()
                  + b'{"text": "\xff"}\n' + '{"text": "第二"}\n{broken\n'.encode())
    corpus = build([p], tok, tmp_path, skip_bad=True, val_fraction=0.0)
    assert corpus.meta["skipped"]["counts"] == {"not valid JSON": 2, "no usable text field": 1, "not valid UTF-8": 1}
    assert corpus.meta["skipped"]["examples"]["not valid JSON"] == [f"{p}:2", f"{p}:6"]
    assert [tok.decode(d[:-1]) for d in docs_of(corpus.train, tok)] == ["第一", "第二"]
    # A strict run must not quietly reuse what the lenient run skipped.
    assert one_line_error([p], tok, tmp_path).startswith(f"{p}:2: not valid JSON")


def test_nothing_usable_is_an_error_even_when_skipping(tmp_path, tok):
    p = tmp_path / "all_bad.jsonl"
    p.write_text('{"title": "a"}\n{"title": "b"}\n', encoding="utf-8")
    msg = one_line_error([p], tok, tmp_path, skip_bad=True)
    assert msg.startswith(f"{p}: no text to train on") and "skipped 2 bad records" in msg


def test_vocab_too_big_for_uint16_is_refused(tmp_path, tok):
    big = NoEncoding(tok)
    big.vocab_size = 70_000
    with pytest.raises(ValueError, match="vocab_size 70000 does not fit"):
        build([write_jsonl(tmp_path / "a.jsonl", DOCS)], big, tmp_path)


def test_command_line(tmp_path, capsys):
    src = write_jsonl(tmp_path / "a.jsonl", DOCS)
    pt.main(["--data_path", str(src), "--cache_dir", str(tmp_path / "cache")])
    out = capsys.readouterr().out
    assert "train:" in out and "skipped 0 bad records" in out
    with pytest.raises(SystemExit) as info:
        pt.main(["--data_path", str(tmp_path / "missing.jsonl"), "--cache_dir", str(tmp_path / "cache")])
    assert str(info.value) == f"error: {tmp_path / 'missing.jsonl'}: no such file or directory"


@pytest.mark.slow
def test_real_text_round_trips_exactly(tmp_path, tok, shared_data):
    sources = [shared_data / "luxun", shared_data / "steel-llm-samples" / "wikipedia-cn-20230720-filtered_sample.json"]
    texts = [t for _, t in iter_texts(sources)]
    corpus = build(sources, tok, tmp_path, val_fraction=0.05)
    decoded = [tok.decode(d[:-1]) for split in (corpus.train, corpus.val) for d in docs_of(split, tok)]
    assert Counter(decoded) == Counter(texts)
    assert 0 < corpus.val.n_docs < 0.1 * len(texts)
