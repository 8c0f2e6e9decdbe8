"""dataset.stats: counts, format detection, token lengths, broken records, errors.

Expected token lengths come from chat_mask.tokenize_chat (or tok.encode for
plain text), called here on the same conversations: stats.py counts tokens its
own way (encoding only the contents, in batches), so this is an independent check.
"""
import json
import random
import string

import pytest

from dataset.chat_mask import tokenize_chat
from dataset.stats import file_stats, main
from tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def letters(n, seed):
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_letters) for _ in range(n))


def chat(user, reply):
    return [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]


def test_chat_counts_lengths_and_buckets(tmp_path, tok):
    convs = [chat("你好", "你好！"), chat("hi", "<think>想一想</think>hello"),
             chat("long", letters(700, 1)), chat("longer", letters(1500, 2))]
    path = write_jsonl(tmp_path / "sft.jsonl", [{"conversations": c} for c in convs])
    lengths = [len(tokenize_chat(c, tok)[0]) for c in convs]
    # The records must really be on both sides of the 512 and 1024 lines for this test to mean anything.
    assert lengths[0] <= 128 and lengths[1] <= 128 and 512 < lengths[2] <= 1024 and 1024 < lengths[3] <= 2048

    s = file_stats(path, tok)
    assert s["format"] == "minimind"
    assert s["records"] == 4
    assert s["chars_total"] == sum(len(m["content"]) for c in convs for m in c)
    assert s["tokens_total"] == sum(lengths)
    assert s["tokens_max"] == lengths[3]
    assert s["histogram"] == [("0-128", 2), ("129-256", 0), ("257-512", 0),
                              ("513-1024", 1), ("1025-2048", 1), (">2048", 0)]
    assert s["pct_over_512"] == 50.0
    assert s["pct_over_1024"] == 25.0
    assert s["pct_think"] == 25.0
    assert s["bad_total"] == 0


@pytest.mark.parametrize("record, fmt", [
    ({"conversations": [{"from": "human", "value": "问"}, {"from": "gpt", "value": "答"}]}, "sharegpt"),
    ({"messages": [{"role": "user", "content": "问"}, {"role": "assistant", "content": "答"}]}, "openai"),
    ({"instruction": "问", "input": "", "output": "答"}, "alpaca"),
])
def test_format_detected_and_measured_as_chatml(tmp_path, tok, record, fmt):
    path = write_jsonl(tmp_path / "d.jsonl", [record, record])
    s = file_stats(path, tok)
    assert s["format"] == fmt and s["records"] == 2
    assert s["tokens_total"] == 2 * len(tokenize_chat(chat("问", "答"), tok)[0])
    assert s["chars_total"] == 4


def test_broken_records_counted_by_reason(tmp_path, tok):
    good = {"conversations": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    lines = [
        "{not json",                                                                      # line 1
        json.dumps(good),                                                                 # line 2
        json.dumps({"conversations": [{"role": "user", "content": "a"},
                                      {"role": "assistant", "content": "  "}]}),          # line 3
        json.dumps({"conversations": [{"role": "user", "content": "a"}]}),                # line 4
        json.dumps({"messages": [{"role": "user", "content": "a"}]}),                     # line 5
        json.dumps({"conversations": [{"role": "user", "content": "a"},
                                      {"role": "assistant", "content": ""}]}),            # line 6
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    s = file_stats(path, tok)
    assert s["format"] == "minimind"  # the broken first line does not decide the format
    assert s["records"] == 1
    assert s["bad_counts"] == {"not valid JSON": 1, "empty content": 2, "no assistant turn": 1, "mixed formats": 1}
    assert s["bad_examples"]["empty content"] == [f"{path}:3", f"{path}:6"]
    assert s["bad_total"] == 5


def test_pretraining_text_fallback(tmp_path, tok):
    docs = ["海绵宝宝住在菠萝里。", "派大星是他最好的朋友。\n第二行。", "<think>x</think>"]
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    s = file_stats(path, tok)
    assert s["format"] == "pretraining text"
    assert s["records"] == 3
    assert s["chars_total"] == sum(map(len, docs))
    assert s["tokens_total"] == sum(len(tok.encode(d)) for d in docs)
    assert s["pct_think"] == pytest.approx(100 / 3)

    jsonl = write_jsonl(tmp_path / "p.jsonl", [{"text": d} for d in docs[:2]] + [{"text": ""}])
    s = file_stats(jsonl, tok)
    assert s["format"] == "pretraining text" and s["records"] == 2
    assert s["bad_counts"] == {"no usable text field": 1}


def test_data_format_override_and_max_records(tmp_path, tok):
    convs = [{"conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": "a"}]}
             for i in range(5)]
    path = write_jsonl(tmp_path / "s.jsonl", convs)
    s = file_stats(path, tok, max_records=3)
    assert s["records"] == 3 and s["stopped_early"]
    # Read as the wrong format, every record is broken, and counted, not fatal.
    s = file_stats(path, tok, data_format="minimind")
    assert s["records"] == 0 and s["bad_counts"] == {"unknown role": 5}


def test_main_prints_report(tmp_path, capsys):
    path = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "问", "output": "答"}] * 3)
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: 3 records, format alpaca" in out
    assert "over 512 tokens: 0.0%" in out and "129-256" in out


def test_missing_file_is_one_line_error(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    assert main([str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(missing) in err and "\n" not in err
    assert main([str(tmp_path)]) == 2  # a directory is not a file
    assert capsys.readouterr().err.startswith("error: ")
