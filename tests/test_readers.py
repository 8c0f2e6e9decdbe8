"""Streaming readers: every format on tiny fixtures, the text-field rules, bad input
(one-line messages naming file and line), --skip_bad counting, and bounded memory."""
import json
import os
import sys
import tracemalloc
from pathlib import Path

import pytest

from dataset import readers
from dataset.readers import DataError, SkipStats, expand_paths, iter_records
from dataset.text_fields import extract_text, iter_texts


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def texts(paths, **kw):
    return list(iter_texts([str(p) for p in paths] if isinstance(paths, list) else [str(paths)], **kw))


def data_error(paths, **kw) -> str:
    """Run iter_texts to the end and return the DataError message, checking it is one line."""
    with pytest.raises(DataError) as info:
        texts(paths, **kw)
    msg = str(info.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


# ---------------------------------------------------------------- formats

def test_jsonl_texts_and_line_numbers(tmp_path):
    p = write(tmp_path / "a.jsonl",
              '\ufeff{"text": "第一篇"}\n\n   \n{"content": "second"}\r\n'
              '{"conversations": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "hi"}]}')
    assert texts(p) == [(f"{p}:1", "第一篇"), (f"{p}:4", "second"), (f"{p}:5", "你好\nhi")]


def test_json_array_items_are_numbered_by_their_first_line(tmp_path):
    items = [{"instruction": "翻译", "input": "cat", "output": "猫"},
             {"instruction": "说你好", "output": "你好"}]
    p = write(tmp_path / "alpaca.json", json.dumps(items, ensure_ascii=False, indent=2))
    # indent=2 puts '[' on line 1, item 1 on line 2, and item 2 after item 1's 5 lines.
    assert texts(p) == [(f"{p}:2", "翻译\ncat\n猫"), (f"{p}:7", "说你好\n你好")]


def test_json_array_of_strings_and_minified(tmp_path):
    p = write(tmp_path / "s.json", '["甲", "乙",{"text":"丙"}]')
    assert [t for _, t in texts(p)] == ["甲", "乙", "丙"]


def test_json_lines_under_a_json_name_is_read_line_by_line(tmp_path):
    p = write(tmp_path / "belle.json", '{"instruction": "q1", "output": "a1"}\n{"instruction": "q2", "output": "a2"}\n')
    assert texts(p) == [(f"{p}:1", "q1\na1"), (f"{p}:2", "q2\na2")]


def test_json_pretty_printed_objects_one_after_another(tmp_path):
    p = write(tmp_path / "objs.json", '{\n  "text": "一"\n}\n{\n  "text": "二"\n}\n')
    assert texts(p) == [(f"{p}:1", "一"), (f"{p}:4", "二")]


def test_json_squad_style_object_yields_each_paragraph(tmp_path):
    doc = {"version": "v1", "data": [
        {"title": "T1", "id": "1", "paragraphs": [{"id": "1a", "context": "段落一", "qas": []},
                                                 {"id": "1b", "context": "段落二", "qas": []}]},
        {"title": "T2", "id": "2", "paragraphs": [{"id": "2a", "context": "段落三", "qas": []}]}]}
    p = write(tmp_path / "cmrc.json", json.dumps(doc, ensure_ascii=False, indent=1))
    assert texts(p) == [(f"{p}:1", "段落一"), (f"{p}:1", "段落二"), (f"{p}:1", "段落三")]


def test_txt_documents_split_on_blank_lines(tmp_path):
    p = write(tmp_path / "book.txt", "\ufeff第一章\r\n  正文一\r\n\r\n\n\u3000\u3000\n第二章\n正文二\n \n尾声")
    assert texts(p) == [(f"{p}:1", "第一章\n  正文一"), (f"{p}:6", "第二章\n正文二"), (f"{p}:9", "尾声")]


def test_txt_long_documents_are_cut_at_line_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "MAX_DOC_CHARS", 10)
    p = write(tmp_path / "a.txt", "一二三四五六\n七八九十一二\n三\n\nx\n")
    assert texts(p) == [(f"{p}:1", "一二三四五六\n七八九十一二"), (f"{p}:3", "三"), (f"{p}:5", "x")]


def test_txt_huge_line_is_read_in_pieces_and_cut(tmp_path, monkeypatch):
    # Pieces of 4 bytes split 3-byte characters; the cut must still happen and decode cleanly.
    monkeypatch.setattr(readers, "_TXT_PIECE_BYTES", 4)
    monkeypatch.setattr(readers, "MAX_DOC_CHARS", 6)
    line = "汉字" * 7  # 14 characters, 42 bytes, no newline
    p = write(tmp_path / "a.txt", f"ab\n{line}\n")
    got = texts(p)
    assert "".join(t for _, t in got) == "ab\n" + line
    assert all(len(t) <= 6 + 4 for _, t in got) and len(got) >= 3
    assert {w for w, _ in got[1:]} == {f"{p}:2"}


def test_csv_rows_with_quoted_newlines(tmp_path):
    p = write(tmp_path / "r.csv", 'label,review\n1,"好吃,""很快""\n下次还来"\n\n0,太慢了\n')
    assert texts(p) == [(f"{p}:2", '好吃,"很快"\n下次还来'), (f"{p}:5", "太慢了")]
    assert list(iter_records(p))[1] == (5, {"label": "0", "review": "太慢了"})


def test_parquet_rows(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    p = tmp_path / "z.parquet"
    pq.write_table(pa.table({"INSTRUCTION": ["问", "问2"], "RESPONSE": ["答", "答2"], "n": [1, 2]}), p)
    assert texts(p) == [(f"{p}:1", "问\n答"), (f"{p}:2", "问2\n答2")]


def test_parquet_without_pyarrow_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` fail
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    p = write(tmp_path / "z.parquet", "PAR1 not really")
    msg = data_error(p)
    assert msg.startswith(f"{p}: ") and "pip install pyarrow" in msg


# ---------------------------------------------------------------- text fields

@pytest.mark.parametrize("record, expected", [
    ({"text": "t", "content": "c"}, "t"),
    ({"text": "  ", "content": "c"}, "c"),
    ({"completion": "wiki", "source": "x"}, "wiki"),
    ({"title": "关雎", "content": ["关关雎鸠", "在河之洲"]}, "关关雎鸠\n在河之洲"),
    ({"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "q"},
                   {"role": "assistant", "content": "a", "reasoning_content": "think"}]}, "sys\nq\nthink\na"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}, "q\na"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "value": "q"}]},
                   {"role": "assistant", "content": [{"type": "reasoning", "value": "r"},
                                                     {"type": "text", "text": "a"}]}]}, "q\nr\na"),
    ({"instruction": "i", "input": "", "output": "o", "history": [["q1", "a1"]], "system": "s"}, "s\nq1\na1\ni\no"),
    ({"author": "a", "rhythmic": "浣溪沙", "paragraphs": ["一", "二"]}, "浣溪沙\n一\n二"),
    ({"title": "T", "summary": "S", "sections": [{"title": "h", "content": "c"}, {"title": "", "content": "d"}]},
     "T\nS\nh\nc\nd"),
    ({"question": "q", "answer": "a"}, "q\na"),
    ({"question": "q", "answer": ["A", "B"]}, "q\nA\nB"),
    ({"INSTRUCTION": "q", "RESPONSE": "a", "SOURCE": "zhihu"}, "q\na"),
    ({"qid": 1, "title": "t", "desc": "", "answer": "a"}, "t\na"),
    ({"kind": "k", "input": "i", "target": "t"}, "i\nt"),
    ({"label": "1", "review": "r"}, "r"),
    ("plain string", "plain string"),
    ({"title": "only a title", "paragraphs": []}, None),
    ({"question": "q without answer"}, None),
    ({"conversations": [{"from": "human", "value": " "}]}, None),
    ([1, 2], None),
    (None, None),
])
def test_extract_text_rules(record, expected):
    assert extract_text(record) == expected


def test_text_field_overrides_the_rules(tmp_path):
    assert extract_text({"text": "t", "body": ["a", "b"]}, "body") == "a\nb"
    assert extract_text({"text": "t"}, "body") is None
    p = write(tmp_path / "a.jsonl", '{"body": "x", "text": "t"}\n{"text": "t"}\n')
    msg = data_error(p, text_field="body")
    assert msg.startswith(f'{p}:2: field "body" missing or empty (record keys: text')
    skip = SkipStats()
    assert texts(p, text_field="body", skip=skip) == [(f"{p}:1", "x")]
    assert skip.counts == {'field "body" missing or empty': 1}


# ---------------------------------------------------------------- bad input

def test_missing_path_and_empty_directory(tmp_path):
    assert data_error(tmp_path / "nope.jsonl") == f"{tmp_path / 'nope.jsonl'}: no such file or directory"
    write(tmp_path / "d" / "notes.md", "x")
    assert data_error(tmp_path / "d").startswith(f"{tmp_path / 'd'}: directory has no .jsonl")
    write(tmp_path / "x.bin", "x")
    assert data_error(tmp_path / "x.bin").startswith(f'{tmp_path / "x.bin"}: unknown file type ".bin"')


@pytest.mark.parametrize("name, content", [("a.jsonl", ""), ("a.json", " \n\t\n"), ("a.txt", "\ufeff\n"),
                                           ("a.csv", ""), ("a.parquet", "")])
def test_empty_file(tmp_path, name, content):
    p = write(tmp_path / name, content)
    assert data_error(p) == f"{p}: file is empty"
    assert data_error(p, skip=SkipStats()) == f"{p}: file is empty"  # file-level: raised even when skipping


def test_unreadable_file(tmp_path, monkeypatch):
    p = write(tmp_path / "a.jsonl", '{"text": "x"}\n')

    def no_permission(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(readers, "open", no_permission, raising=False)
    assert data_error(p, skip=SkipStats()) == f"{p}: cannot read: Permission denied"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read anything")
def test_unreadable_file_for_real(tmp_path):
    p = write(tmp_path / "a.txt", "x")
    p.chmod(0)
    assert data_error(p) == f"{p}: cannot read: Permission denied"


def test_bad_utf8_names_line_and_column(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes('{"text": "ok"}\n{"text": "ok"}\n{"text": "汉\xff"}\n'.encode("utf-8").replace(b"\xc3\xbf", b"\xff"))
    assert data_error(p) == f"{p}:3: not valid UTF-8 (byte 0xff at column 12)"
    t = tmp_path / "a.txt"
    t.write_bytes(b"fine\n\nab\x80c\n")
    assert data_error(t) == f"{t}:3: not valid UTF-8 (byte 0x80 at column 3)"


def test_gbk_text_gets_the_iconv_command(tmp_path):
    p = tmp_path / "novel.txt"
    p.write_bytes("第一章\n从前有座山。\n".encode("gbk"))
    assert data_error(p) == (f"{p}:1: not valid UTF-8 (byte 0xb5 at column 1; it reads as GBK, so re-encode the file: "
                             f"iconv -f GBK -t UTF-8 {p} > {tmp_path / 'novel.utf8.txt'})")


def test_an_empty_text_record_names_skip_bad(tmp_path):
    p = write(tmp_path / "a.jsonl", '{"text": "ok"}\n{"text": ""}\n')
    assert data_error(p).endswith("use --text_field NAME, or pass --skip_bad to skip such records)")


def test_bad_utf8_in_streamed_json_array(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "_CHUNK_BYTES", 8)  # the bad byte sits several chunks in
    p = tmp_path / "a.json"
    p.write_bytes(b'[\n  {"text": "a"},\n  {"text": "b"},\n  {"text": "\xe6\xb1"}\n]\n')
    assert data_error(p) == f"{p}:4: not valid UTF-8 (byte 0xe6 at column 13)"


def test_jsonl_line_that_is_not_json(tmp_path):
    p = write(tmp_path / "a.jsonl", '{"text": "a"}\n\n{"text": "b",}\n')
    msg = data_error(p)
    assert msg.startswith(f"{p}:3: not valid JSON (") and "column" in msg


@pytest.mark.parametrize("body, line, what", [
    ('[\n {"text": "a"},\n {"text": "b"\n  "x": 1}\n]', 4, "Expecting ',' delimiter"),
    ('[\n {"text": "a"}\n {"text": "b"}\n]', 3, "expected ',' or ']'"),
    ('[\n {"text": "a"},\n', 3, "ends inside the top-level array"),
    ('[\n {"text": "a"},\n {"text": "b\n', 3, "Invalid control character"),
    ('[{"text": "a"}]\n\n]', 3, "extra data after the top-level array"),
    ('{\n "data": [\n  {"text": tru}\n ]\n}', 3, "Expecting value"),
])
def test_json_syntax_errors_name_the_line(tmp_path, monkeypatch, body, line, what):
    monkeypatch.setattr(readers, "_CHUNK_BYTES", 5)  # errors found across chunk boundaries
    p = write(tmp_path / "a.json", body)
    msg = data_error(p, skip=SkipStats())  # no safe place to resume inside an array: always raised
    assert msg.startswith(f"{p}:{line}: not valid JSON (") and what in msg


def test_record_without_text(tmp_path):
    p = write(tmp_path / "a.json", '[\n{"text": "a"},\n{"id": 7, "tags": ["x"]}\n]')
    msg = data_error(p)
    assert msg.startswith(f"{p}:3: no usable text field (record keys: id, tags; looked for text, content")
    assert msg.endswith("use --text_field NAME, or pass --skip_bad to skip such records)")
    p = write(tmp_path / "b.jsonl", '[1, 2]\n')
    assert data_error(p).startswith(f"{p}:1: no usable text field (record is [1, 2];")


def test_iter_records_rejects_unknown_suffix_and_directory(tmp_path):
    with pytest.raises(DataError, match="unknown file type"):
        list(iter_records(write(tmp_path / "a.md", "x")))
    (tmp_path / "d.txt").mkdir()
    with pytest.raises(DataError, match="is a directory"):
        list(iter_records(tmp_path / "d.txt"))


# ---------------------------------------------------------------- --skip_bad

def test_skip_bad_counts_by_reason_and_keeps_good_records(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"text": "one"}\nnot json\n{"text": "\xff"}\n{"id": 1}\n{"text": "two"}\n{oops\n')
    q = write(tmp_path / "b.txt", "three")
    skip = SkipStats()
    assert texts([p, q], skip=skip) == [(f"{p}:1", "one"), (f"{p}:5", "two"), (f"{q}:1", "three")]
    assert skip.counts == {"not valid JSON": 2, "not valid UTF-8": 1, "no usable text field": 1}
    assert skip.total == 4
    assert skip.summary() == (f"skipped 4 bad records: 2 not valid JSON (first at {p}:2, {p}:6); "
                              f"1 not valid UTF-8 (first at {p}:3); 1 no usable text field (first at {p}:4)")
    assert SkipStats().summary() == "skipped 0 bad records"


def test_skip_bad_keeps_a_few_examples(tmp_path):
    skip = SkipStats()
    for i in range(10):
        skip.add("no usable text field", f"a:{i}")
    assert skip.examples["no usable text field"] == ["a:0", "a:1", "a:2"] and skip.total == 10


def test_skip_bad_line_in_txt_and_csv(tmp_path):
    t = tmp_path / "a.txt"
    t.write_bytes(b"good\nbad \xc0\nalso good\n")
    c = tmp_path / "b.csv"
    c.write_bytes(b"review\nok\n\xfe\n\nfine\n")
    skip = SkipStats()
    assert texts([t, c], skip=skip) == [(f"{t}:1", "good\nalso good"), (f"{c}:2", "ok"), (f"{c}:5", "fine")]
    assert skip.counts == {"not valid UTF-8": 2}


# ---------------------------------------------------------------- streaming

def test_json_stream_matches_json_load_at_any_chunk_size(tmp_path, monkeypatch):
    # Top-level numbers first: a number cut by a chunk end still parses, as the wrong number.
    items = [12345678901234567890, -1.5e-3, "尾"] + [
        {"text": "汉字" * i, "n": 10 ** i, "ok": True, "x": None, "l": [1, [2, {}]]} for i in range(12)
    ] + [[], {"text": "😀\n\"\\u"}, 7]
    p = write(tmp_path / "a.json", json.dumps(items, ensure_ascii=False, indent=1))
    for chunk in (1, 2, 3, 7, 64, 1 << 20):
        monkeypatch.setattr(readers, "_CHUNK_BYTES", chunk)
        assert [r for _, r in iter_records(p)] == items


def test_json_array_is_streamed_not_loaded(tmp_path):
    p = tmp_path / "big.json"
    item = json.dumps({"text": "长文本" * 300}, ensure_ascii=False)  # about 2.7 KB
    n = 8000                                                          # about 22 MB in all
    with open(p, "w", encoding="utf-8") as f:
        f.write("[\n" + ",\n".join([item] * n) + "\n]\n")
    tracemalloc.start()
    try:
        records = iter_records(p)
        first = next(records)
        _, first_peak = tracemalloc.get_traced_memory()
        count = 1 + sum(1 for _ in records)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert first == (2, json.loads(item)) and count == n
    assert first_peak < 8 * 2**20 and peak < 8 * 2**20, (first_peak, peak)  # the file is 22 MB


# ---------------------------------------------------------------- paths

def test_expand_paths_walks_directories_sorted(tmp_path):
    for name in ["b/2.jsonl", "b/1.txt", "a.json", "c/x.csv", "c/y.parquet", "notes.md",
                 ".hidden/z.jsonl", "b/.ipynb_checkpoints/1.txt", "UPPER.JSONL"]:
        write(tmp_path / "data" / name, "x")
    extra = write(tmp_path / "extra.txt", "x")
    got = expand_paths([tmp_path / "data", str(extra), tmp_path / "data" / "a.json"])
    assert got == [tmp_path / "data" / n for n in ["UPPER.JSONL", "a.json", "b/1.txt", "b/2.jsonl",
                                                  "c/x.csv", "c/y.parquet"]] + [extra]


# ---------------------------------------------------------------- real data (opt-in)

@pytest.mark.slow
@pytest.mark.parametrize("folder", ["steel-llm-samples", "luxun", "classic-novels", "chinese-poetry",
                                    "cmrc2018", "llamafactory/alpaca_zh_demo.json",
                                    "medicalgpt/sharegpt_zh_1K_format.jsonl", "alpaca-chinese-mt",
                                    "sophonplus-reviews"])
def test_real_corpora_yield_text(shared_data, folder):
    paths = expand_paths([shared_data / folder])
    if any(p.suffix == ".parquet" for p in paths):
        pytest.importorskip("pyarrow")
    for path in paths:
        skip = SkipStats()
        got = sum(1 for _ in iter_texts([path], skip=skip))
        assert got > 0 and skip.total <= got // 50, (path, got, skip.summary())
