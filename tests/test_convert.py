"""python -m dataset.convert on small hand-written records in the style of each preset
(TAL-SCQ5K, GSM8K, GAOKAO-Bench GPT-4 outputs), a generic field map with dotted paths,
the gold filter, bad input and the atomic write. Expected outputs are written by hand."""
import json

import pytest

from dataset import convert
from dataset.convert import PRESETS, FieldMap, convert_files, convert_record, render_options
from dataset.readers import DataError


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def r1(question, reply, answer):
    return {"conversations": [{"role": "user", "content": question}, {"role": "assistant", "content": reply}],
            "answer": answer}


# ---------------------------------------------------------------- each preset's style

def test_tal_style_question_with_options_analysis_list_and_answer_value():
    record = {"problem": "1. 小明有$$3$$个苹果，又买了$$4$$个，一共有几个？ ",
              "answer_option_list": [[{"aoVal": "A", "content": "$$6$$ "}], [{"aoVal": "B", "content": "$$7$$ "}],
                                     [{"aoVal": "C", "content": "$$8$$ "}]],
              "answer_analysis": ["$$3+4=7$$ ", "所以选B．"], "answer_value": "B", "qid": "1"}
    assert convert_record(record, PRESETS["tal-scq5k"]) == r1(
        "1. 小明有$$3$$个苹果，又买了$$4$$个，一共有几个？\nA. $$6$$\nB. $$7$$\nC. $$8$$",
        "<think>\n$$3+4=7$$ \n所以选B．\n</think>\n<answer>\nB\n</answer>", "B")


def test_gsm8k_style_steps_before_the_marker_and_calculator_notes_removed():
    record = {"question": "Tom has 3 apples and buys 4 more. How many does he have?",
              "answer": "He buys 4, so 3 + 4 = <<3+4=7>>7.\nHe has 7 apples.\n#### 7"}
    assert convert_record(record, PRESETS["gsm8k"]) == r1(
        "Tom has 3 apples and buys 4 more. How many does he have?",
        "<think>\nHe buys 4, so 3 + 4 = 7.\nHe has 7 apples.\n</think>\n<answer>\n7\n</answer>", "7")


def test_gsm8k_final_answer_without_thousands_commas():
    record = {"question": "A farm sells 1,080 eggs a day. How many in 2 days?",
              "answer": "1,080 * 2 = <<1080*2=2160>>2,160 eggs.\n#### 2,160"}
    assert convert_record(record, PRESETS["gsm8k"]) == r1(
        "A farm sells 1,080 eggs a day. How many in 2 days?",
        "<think>\n1,080 * 2 = 2,160 eggs.\n</think>\n<answer>\n2160\n</answer>", "2160")


@pytest.mark.parametrize("ans,gold", [
    ("3750", "3750"), ("56.52", "56.52"), ("(1/10)", "1/10"), ("150%", "150%"),
    ("4(5/11)", "49/11"),            # a mixed number: 4 + 5/11
    ("100-15", "85"),                # a sum the set left unworked
    ("1800/(1+20%)", "1500"),
])
def test_ape210k_style_equation_as_thinking_and_ans_as_one_number(ans, gold):
    record = {"id": "1", "segmented_text": "一 共 ？", "original_text": "王艳家一共花了多少元？", "ans": ans,
              "equation": "x=6000/(1+(3/5))"}
    assert convert_record(record, PRESETS["ape210k"]) == r1(
        "王艳家一共花了多少元？", f"<think>\nx=6000/(1+(3/5))\n</think>\n<answer>\n{gold}\n</answer>", gold)


def test_ape210k_answer_that_is_no_number_is_a_one_line_error(tmp_path):
    src = write_jsonl(tmp_path / "ape.json", [
        {"id": "1", "original_text": "1+1=?", "ans": "2", "equation": "x=1+1"},
        {"id": "2", "original_text": "x=?", "ans": "x=3", "equation": "x=3"}])
    with pytest.raises(DataError) as info:
        convert_files([src], tmp_path / "out.jsonl", PRESETS["ape210k"], show_progress=False)
    assert str(info.value) == f"{src}:2: the answer 'x=3' is neither a number nor arithmetic that gives one"


GAOKAO = {"keyword": "2010-2022_Math_I_MCQs", "model_name": "gpt-4", "prompt": "请你做一道数学选择题", "example": [
    {"index": 0, "question": "1. 3+4=（ ）\nA. 6\nB. 7\n", "standard_answer": ["B"], "model_answer": ["B"],
     "model_output": "【解析】 3 加 4 等于 7，选 B。 <eoe>\n【答案】 B <eoa>", "analysis": "略"},
    {"index": 1, "question": "2. 2+2=（ ）\nA. 4\nB. 5\n", "standard_answer": ["A"], "model_answer": ["B"],
     "model_output": "【解析】 2 加 2 等于 5。 <eoe>\n【答案】 B <eoa>", "analysis": "略"},
    {"index": 2, "question": "阅读下文，回答 3-4 题。", "standard_answer": ["C", "D"], "model_answer": ["C", "D"],
     "model_output": "（3）【答案】 C <eoa>\n（4）【答案】 D <eoa>", "analysis": "略"},
    {"index": 3, "question": "5. 多选：哪些是偶数？\nA. 2\nB. 3\nC. 5\nD. 8\n", "standard_answer": ["AD"],
     "model_answer": ["AD"], "model_output": "【解析】2 和 8 是偶数。\n【答案】AD<eoa>", "analysis": "略"},
    {"index": 4, "question": "回答 6-7 题。", "standard_answer": ["A", "B"], "model_answer": ["B", "A"],
     "model_output": "（6）【解析】甲。<eoe>【答案】B <eoa>\n（7）【解析】乙。<eoe>【答案】A <eoa>", "analysis": "略"},
    {"index": 5, "question": "回答 8-9 题。", "standard_answer": ["A", "B"], "model_answer": ["A", "B"],
     "model_output": "（8）【解析】丙。<eoe>【答案】A <eoa>\n（9）【解析】丁。<eoe>【答案】B <eoa>", "analysis": "略"},
]}


def test_gaokao_style_filtered_by_gold_and_answerless_thinking_skipped(tmp_path):
    src = tmp_path / "gpt4_math.json"
    src.write_text(json.dumps(GAOKAO, ensure_ascii=False, indent=1), encoding="utf-8")
    out = tmp_path / "out" / "gaokao.jsonl"
    with pytest.raises(DataError, match=r"gpt4_math.json:1 \(example\[2\]\): no thinking found by --think_extract"):
        convert_files([src], out, PRESETS["gaokao"], show_progress=False)
    assert not out.exists()
    stats, skip = convert_files([src], out, PRESETS["gaokao"], skip_bad=True, show_progress=False)
    # Filtered: example 1 (B for A) and example 4, whose two sub-answers are swapped.
    assert (stats.read, stats.written, stats.filtered) == (6, 3, 2)
    assert skip.counts == {"no thinking": 1}
    assert read_jsonl(out) == [
        r1("1. 3+4=（ ）\nA. 6\nB. 7", "<think>\n3 加 4 等于 7，选 B。\n</think>\n<answer>\nB\n</answer>", "B"),
        r1("5. 多选：哪些是偶数？\nA. 2\nB. 3\nC. 5\nD. 8",
           "<think>\n2 和 8 是偶数。\n</think>\n<answer>\nAD\n</answer>", "AD"),
        r1("回答 8-9 题。", "<think>\n丙。\n丁。\n</think>\n<answer>\nA B\n</answer>", "A B")]


# ---------------------------------------------------------------- generic field maps and the gold filter

def test_dotted_paths_and_numeric_gold_filter(tmp_path):
    rows = [{"q": {"text": "一千是多少？"}, "sol": {"steps": ["十个一百", "是一千"], "final": "1,000"}, "ref": 1000},
            {"q": {"text": "一百是多少？"}, "sol": {"steps": ["十个十"], "final": "100"}, "ref": "99"},
            {"q": {"text": "四分之三？"}, "sol": {"steps": ["3 除以 4"], "final": "0.75"}, "ref": "3/4"}]
    fm = FieldMap(question="q.text", think="sol.steps", answer="sol.final", gold="ref")
    out = tmp_path / "x.jsonl"
    stats, _ = convert_files([write_jsonl(tmp_path / "in.jsonl", rows)], out, fm, show_progress=False)
    assert (stats.read, stats.written, stats.filtered) == (3, 2, 1)
    assert read_jsonl(out) == [
        r1("一千是多少？", "<think>\n十个一百\n是一千\n</think>\n<answer>\n1,000\n</answer>", "1000"),
        r1("四分之三？", "<think>\n3 除以 4\n</think>\n<answer>\n0.75\n</answer>", "3/4")]


def test_question_answer_dumps_with_think_inside_the_answer():
    record = {"question": "2+2?", "answer": "<think>two and two</think>\n\n4"}
    assert convert_record(record, FieldMap()) == r1("2+2?", "<think>\ntwo and two\n</think>\n<answer>\n4\n</answer>",
                                                    "4")
    assert convert_record(record, FieldMap(gold="question")) is None  # "4" is not "2+2?"


def test_option_lists_in_several_shapes():
    assert render_options(["2", "3"]) == ["A. 2", "B. 3"]
    assert render_options({"B": "3", "A": "2"}) == ["A. 2", "B. 3"]
    assert render_options([{"label": "X", "text": "甲"}, [{"key": "Y", "value": 4}]]) == ["X. 甲", "Y. 4"]


# ---------------------------------------------------------------- bad input

def test_bad_records_are_one_line_errors_or_counted(tmp_path):
    rows = [{"question": "q1", "answer": "steps\n#### 1"}, {"question": "q2", "answer": "no marker here"},
            {"question": "q3"}, {"question": "q4", "answer": "#### 4"}, {"question": " ", "answer": "a\n#### 5"},
            {"question": "q6", "answer": "x <think> y\n#### 6"}]
    src = write_jsonl(tmp_path / "bad.jsonl", rows)
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    fm = FieldMap(answer_split="####")
    with pytest.raises(DataError) as info:
        convert_files([src], out, fm, show_progress=False)
    assert str(info.value) == f'{src}:2: the answer has no "####" before its final answer'
    assert out.read_text() == "old\n"  # a failed run leaves the old file whole
    stats, skip = convert_files([src], out, fm, skip_bad=True, show_progress=False)
    assert (stats.read, stats.written) == (6, 1)
    assert skip.counts == {"missing separator": 1, "missing field": 1, "no thinking": 1, "empty question": 1,
                           "nested or duplicated tags": 1}
    assert skip.examples["missing field"] == [f"{src}:3"]
    assert len(read_jsonl(out)) == 1


def test_nothing_converted_is_an_error_and_writes_nothing(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"question": "q", "answer": "7", "gold": "8", "why": "w"}])
    with pytest.raises(DataError, match="no record converted: read 1 records, wrote 0 .* 1 filtered out"):
        convert_files([src], tmp_path / "o.jsonl", FieldMap(think="why", gold="gold"), show_progress=False)
    assert list(tmp_path.iterdir()) == [src]


# ---------------------------------------------------------------- command line

def test_command_line_summary_and_errors(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [{"problem": "1+1?", "why": ["1+1=2"], "sol": 2, "ref": "2.0"},
                                              {"problem": "1+2?", "why": "1+2=3", "sol": 4, "ref": "3"}])
    out = tmp_path / "r1" / "x.jsonl"
    args = [str(src), "--out", str(out), "--question", "problem", "--think", "why", "--answer", "sol",
            "--gold", "ref"]
    assert convert.main(args) == 0
    assert capsys.readouterr().out.startswith(f"read 2 records, wrote 1 to {out}; 1 filtered out")
    assert read_jsonl(out) == [r1("1+1?", "<think>\n1+1=2\n</think>\n<answer>\n2\n</answer>", "2.0")]
    assert convert.main([str(src), "--out", str(out), "--question", "nope"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f'error: {src}:1: no field "nope"'


def test_data_path_names_inputs_as_the_stage_scripts_do(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    src = write_jsonl(tmp_path / "ape.json",
                      [{"id": "1", "original_text": "2加3是多少？", "ans": "5", "equation": "x=2+3"}])
    assert convert.main(["--preset", "ape210k", "--data_path", str(src)]) == 0
    assert read_jsonl(tmp_path / "out" / "r1" / "ape210k.jsonl") == [
        r1("2加3是多少？", "<think>\nx=2+3\n</think>\n<answer>\n5\n</answer>", "5")]


@pytest.mark.parametrize("args,message", [
    (["in.jsonl"], "--out is required without --preset"),
    (["--preset", "gsm8k"], "give the data files to convert"),
    (["in.jsonl", "--preset", "gsm8k", "--think", "why"], "give one"),
    (["in.jsonl", "--out", "o.jsonl", "--think_remove", "(["], "--think_remove: not a valid regular expression"),
])
def test_bad_flags_are_usage_errors(args, message, capsys):
    with pytest.raises(SystemExit) as info:
        convert.main(args)
    assert info.value.code == 2 and message in capsys.readouterr().err


# ---------------------------------------------------------------- the real sets (slow, need ../shared/data)

@pytest.mark.slow
def test_presets_on_the_real_sets(shared_data, tmp_path):
    tal = shared_data / "tal-scq5k" / "ch_single_choice_train_3K.jsonl"
    stats, _ = convert_files([tal], tmp_path / "tal.jsonl", PRESETS["tal-scq5k"], show_progress=False)
    assert stats.written == 3000  # every train record has an analysis and an answer
    gsm = shared_data / "gsm8k" / "train.jsonl"
    stats, _ = convert_files([gsm], tmp_path / "gsm.jsonl", PRESETS["gsm8k"], show_progress=False)
    assert stats.written == 7473
    ape = shared_data / "ape210k" / "valid.ape.json"
    stats, _ = convert_files([ape], tmp_path / "ape.jsonl", PRESETS["ape210k"], show_progress=False)
    assert stats.written == stats.read == 5000  # every ans is one number, or arithmetic that gives one
    folder = shared_data / "gaokao-bench" / "gpt_4_0314_obj"
    # The oracle: GAOKAO-Bench's own extracted answers, compared as lists.
    examples = [e for f in sorted(folder.glob("*.json")) for e in json.loads(f.read_text())["example"]]
    right = [e for e in examples if e["model_answer"] == e["standard_answer"]]
    stats, skip = convert_files([folder], tmp_path / "gk.jsonl", PRESETS["gaokao"], skip_bad=True,
                                show_progress=False)
    assert (stats.read, stats.filtered) == (len(examples), len(examples) - len(right))
    assert stats.written == sum("【解析】" in e["model_output"] for e in right)
    assert skip.counts == {"no thinking": len(right) - stats.written}
