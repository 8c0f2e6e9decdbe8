"""Chat formats and the SFT loss mask, pinned at exact token positions.

A character-level stub tokenizer (one id per character, special tokens whole)
makes every position countable by hand; the shipped tokenizer is then checked
against our own ChatML template.
"""
import json

import pytest

from dataset.chat_formats import detect_format, iter_conversations, to_messages
from dataset.chat_mask import shift_targets, tokenize_chat
from dataset.problems import describe_problems, iter_problems
from dataset.readers import DataError, SkipStats
from evaluation.rewards import accuracy_reward
from model import IGNORE_INDEX
from tokenizer import SPECIAL_TOKENS, load_tokenizer, render_chat


class CharTokenizer:
    """One token per character; the seven special tokens are single ids 0-6."""
    im_end_id = 2

    def encode(self, text: str) -> list[int]:
        return self.encode_with_offsets(text)[0]

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        ids, offsets, i = [], [], 0
        while i < len(text):
            special = next((s for s in SPECIAL_TOKENS if text.startswith(s, i)), None)
            width = len(special) if special else 1
            ids.append(SPECIAL_TOKENS.index(special) if special else 1000 + ord(text[i]))
            offsets.append((i, i + width))
            i += width
        return ids, offsets


def expected(segments):
    """Hand-written (text, trained) segments -> (ids, mask) under CharTokenizer."""
    tok, ids, mask = CharTokenizer(), [], []
    for text, trained in segments:
        piece = tok.encode(text)
        ids += piece
        mask += [trained] * len(piece)
    return ids, mask


TWO_TURNS = [
    {"role": "system", "content": "S"},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "yo"},
    {"role": "user", "content": "ok"},
    {"role": "assistant", "content": "z"},
]
TWO_TURNS_SEGMENTS = [
    ("<|im_start|>system\nS<|im_end|>\n", 0),
    ("<|im_start|>user\nhi<|im_end|>\n", 0),
    ("<|im_start|>assistant\n", 0), ("yo<|im_end|>", 1), ("\n", 0),
    ("<|im_start|>user\nok<|im_end|>\n", 0),
    ("<|im_start|>assistant\n", 0), ("z<|im_end|>", 1), ("\n", 0),
]


def test_mask_covers_each_reply_from_its_first_token_through_im_end():
    ids, mask = tokenize_chat(TWO_TURNS, CharTokenizer())
    assert (ids, mask) == expected(TWO_TURNS_SEGMENTS)
    # Counted by hand: the system turn is 11 tokens (0-10), the user turn 10
    # (11-20), the assistant header 1 + 9 + 1 = 11 (21-31); so 'y' is token 32,
    # 'o' 33, <|im_end|> 34 and its newline 35. The second user turn is 36-45,
    # the second header 46-56, 'z' 57, <|im_end|> 58, newline 59: 60 tokens.
    assert len(ids) == 60
    assert ids[32] == 1000 + ord("y") and ids[34] == 2 and ids[35] == 1000 + ord("\n")
    assert [i for i, m in enumerate(mask) if m] == [32, 33, 34, 57, 58]


def test_targets_start_at_the_first_reply_token_and_stop_at_im_end():
    inputs, targets = shift_targets(*tokenize_chat(TWO_TURNS, CharTokenizer()))
    assert len(inputs) == len(targets) == 60 - 1
    # Position 31 (the header's newline) predicts 'y'; 33 ('o') predicts <|im_end|>;
    # 34 (<|im_end|>) must not be taught the newline or the next turn's header.
    assert targets[30] == IGNORE_INDEX and targets[31] == 1000 + ord("y") and targets[32] == 1000 + ord("o")
    assert targets[33] == 2 and targets[34] == IGNORE_INDEX
    assert [t for t, v in enumerate(targets) if v != IGNORE_INDEX] == [31, 32, 33, 56, 57]


@pytest.mark.parametrize("record,fmt", [
    ({"conversations": [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"},
                        {"role": "assistant", "content": "yo"}, {"role": "user", "content": "ok"},
                        {"role": "assistant", "content": "z"}]}, "minimind"),
    ({"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "hi"},
                        {"from": "gpt", "value": "yo"}, {"from": "human", "value": "ok"},
                        {"from": "gpt", "value": "z"}]}, "sharegpt"),
    ({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"},
                   {"role": "assistant", "content": "yo"}, {"role": "user", "content": "ok"},
                   {"role": "assistant", "content": "z"}]}, "openai"),
    ({"system": "S", "history": [["hi", "yo"]], "instruction": "ok", "input": "", "output": "z"}, "alpaca"),
])
def test_every_format_gives_the_same_exact_mask(record, fmt):
    assert detect_format(record) == fmt
    messages = to_messages(record, fmt)
    assert messages == TWO_TURNS
    assert tokenize_chat(messages, CharTokenizer()) == expected(TWO_TURNS_SEGMENTS)


def test_alpaca_input_is_appended_to_the_instruction():
    messages = to_messages({"instruction": "翻译成英文", "input": "你好", "output": "Hello"}, "alpaca")
    assert messages == [{"role": "user", "content": "翻译成英文\n你好"}, {"role": "assistant", "content": "Hello"}]
    no_input = to_messages({"instruction": "讲个笑话", "input": "", "output": "好"}, "alpaca")
    assert no_input[0] == {"role": "user", "content": "讲个笑话"}


def test_shipped_tokenizer_ids_decode_to_our_chatml_and_mask_only_replies():
    tok = load_tokenizer()
    messages = [{"role": "system", "content": "你是海绵宝宝。"}, {"role": "user", "content": "你是谁？"},
                {"role": "assistant", "content": "<think>\n想想\n</think>\n<answer>\n我是 SpongeBob。\n</answer>"},
                {"role": "user", "content": "再说一次"}, {"role": "assistant", "content": "我是 SpongeBob！"}]
    ids, mask = tokenize_chat(messages, tok)
    assert tok.decode(ids) == render_chat(messages)
    trained = "".join(tok.decode([i]) for i, m in zip(ids, mask) if m)
    assert trained == messages[2]["content"] + "<|im_end|>" + messages[4]["content"] + "<|im_end|>"


# ------------------------------------------------------------------ files: detection, mixing, bad input

def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n"
                            for r in records), encoding="utf-8")
    return path


GOOD = {"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}


@pytest.mark.parametrize("bad,message", [
    ({"conversations": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}, "unknown role 'robot'"),
    ({"conversations": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]}, "must be the user's"),
    ({"conversations": [{"role": "user", "content": "x"}]}, "no assistant turn"),
    ({"conversations": [{"role": "user", "content": " "}, {"role": "assistant", "content": "y"}]}, "turn 1 content is empty"),
    ({"conversations": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}]}, "must be a string, got int"),
    ({"conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]}, "mixed formats"),
])
def test_bad_records_name_file_line_and_problem(tmp_path, bad, message):
    path = write_jsonl(tmp_path / "chat.jsonl", [GOOD, bad])
    with pytest.raises(DataError) as err:
        list(iter_conversations(path))
    assert str(err.value).startswith(f"{path}:2: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_no_known_format_is_a_clear_error_and_override_reads_as_told(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"prompt": "a", "answer": "b"}])
    with pytest.raises(DataError, match=r"x.jsonl:1: no known chat format .* \(keys: answer, prompt\); pass --data_format"):
        list(iter_conversations(path))
    sharegpt = write_jsonl(tmp_path / "s.jsonl", [{"conversations": [{"from": "human", "value": "q"},
                                                                     {"from": "gpt", "value": "a"}]}])
    with pytest.raises(DataError, match="s.jsonl:1: turn 1: unknown role None"):
        list(iter_conversations(sharegpt, data_format="minimind"))  # forced, and wrong
    assert [m for _, m in iter_conversations(sharegpt, data_format="sharegpt")][0][1]["content"] == "a"


def test_an_empty_turn_names_skip_bad(tmp_path):
    bad = {"conversations": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "  "}]}
    with pytest.raises(DataError) as err:
        list(iter_conversations(write_jsonl(tmp_path / "e.jsonl", [GOOD, bad])))
    assert str(err.value).endswith(":2: turn 2 content is empty (fix the record, or pass --skip_bad to skip such records)")


def test_pretraining_text_names_pretrain_py(tmp_path):
    txt = tmp_path / "book.txt"
    txt.write_text("第一章\n从前有座山。\n\n第二章\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        list(iter_conversations(txt))
    assert str(err.value) == (f"{txt}:1: this is pretraining text (plain text, no turns); "
                              f"train on it with pretrain.py --data_path {txt}")
    jsonl = write_jsonl(tmp_path / "t.jsonl", [{"text": "从前有座山。"}])
    with pytest.raises(DataError, match=r'this is pretraining text \(\{"text": ...\} records, no turns\)'):
        list(iter_conversations(jsonl, skip=SkipStats()))  # a whole-file mistake: not skipped


GSM8K = {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"}
APE210K = {"id": "1", "segmented_text": "3 加 4", "original_text": "3加4", "ans": "7", "equation": "x=3+4"}


def test_raw_math_sets_name_the_convert_command(tmp_path):
    gsm = write_jsonl(tmp_path / "gsm.jsonl", [GSM8K])
    with pytest.raises(DataError) as err:
        list(iter_conversations(gsm, reasoning=True))  # distillation: there is no thinking to learn
    assert str(err.value) == (f"{gsm}:1: this is raw GSM8K (solutions with no <think>), not reasoning data: "
                              f"convert it first: python -m dataset.convert --preset gsm8k --data_path {gsm}")
    assert len(list(iter_conversations(gsm))) == 1  # SFT on the worked solutions is the user's choice
    ape = write_jsonl(tmp_path / "ape.json", [APE210K])
    for reasoning in (False, True):
        with pytest.raises(DataError) as err:
            list(iter_conversations(ape, reasoning=reasoning))
        assert str(err.value).endswith(f"convert it first: python -m dataset.convert --preset ape210k --data_path {ape}")


def test_cmath_given_to_a_chat_stage_names_grpo(tmp_path):
    cmath = write_jsonl(tmp_path / "cmath.jsonl", [{"grade": 1, "input": "3加4？", "golden": "7"}])
    with pytest.raises(DataError) as err:
        list(iter_conversations(cmath))
    assert str(err.value) == (f"{cmath}:1: this is CMATH (math problems with a gold answer, no reply), not chat data: "
                              f"train on it with grpo.py --data_path {cmath}, or score stages on it: "
                              f"python -m evaluation.report --math_file {cmath}")


def test_raw_cmath_is_read_with_golden_as_gold(tmp_path):
    """CMATH ({"grade", "input", "golden", ...}, as XiaoMi ships it; "question" works too) is a problem set."""
    cmath = write_jsonl(tmp_path / "cmath_dev.jsonl", [
        {"grade": 1, "input": "芳芳买了一本书有99页，看了90页，她还剩多少页没有看？", "golden": "9", "reasoning_step": 1,
         "num_digits": 2},
        {"question": "一块布12米，平均分成3段，每段几米？", "golden": "4"}])
    problems = list(iter_problems(cmath))
    assert [(p.prompt, p.gold, p.read_as) for p in problems] == [
        ([{"role": "user", "content": "芳芳买了一本书有99页，看了90页，她还剩多少页没有看？"}], "9", "cmath"),
        ([{"role": "user", "content": "一块布12米，平均分成3段，每段几米？"}], "4", "cmath")]
    assert describe_problems(problems) == "2 read as CMATH, gold: golden"
    assert accuracy_reward("<think>\n99-90=9\n</think>\n<answer>\n9\n</answer>", problems[0]) == 1.0
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"input": "1+1?", "golden": " "}])
    with pytest.raises(DataError, match=r'empty.jsonl:1: the answer \("golden"\) is missing or empty'):
        list(iter_problems(empty))


def test_zhihu_kol_records_are_one_exchange():
    record = {"INSTRUCTION": "怎么学做饭？", "RESPONSE": "从蛋炒饭开始。", "SOURCE": "Zhihu", "METADATA": "{}"}
    assert detect_format(record) == "zhihu"
    assert to_messages(record, "zhihu") == [{"role": "user", "content": "怎么学做饭？"},
                                            {"role": "assistant", "content": "从蛋炒饭开始。"}]
    with pytest.raises(Exception, match="RESPONSE is empty"):
        to_messages({"INSTRUCTION": "q", "RESPONSE": ""}, "zhihu")


def test_skip_bad_counts_each_reason_and_keeps_the_good(tmp_path):
    records = [GOOD, "not json", {"conversations": [{"role": "user", "content": "x"}]}, GOOD,
               {"conversations": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}]
    skip = SkipStats()
    kept = list(iter_conversations(write_jsonl(tmp_path / "c.jsonl", records), skip=skip))
    assert [where.rsplit(":", 1)[1] for where, _ in kept] == ["1", "4"]
    assert skip.counts == {"not valid JSON": 1, "no assistant turn": 1, "unknown role": 1}


def test_content_given_as_parts_is_joined_and_reasoning_becomes_think():
    record = {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "1+1?"}]},
        {"role": "assistant", "content": [{"type": "reasoning", "value": "one and one"},
                                          {"type": "text", "value": "2"}]}]}
    assert to_messages(record, "openai") == [{"role": "user", "content": "1+1?"},
                                             {"role": "assistant", "content": "<think>\none and one\n</think>\n2"}]
    with pytest.raises(Exception, match="each part must be an object with a text or value string"):
        to_messages({"messages": [{"role": "user", "content": [3]}, {"role": "assistant", "content": "x"}]}, "openai")


def test_belle_eval_std_answer_is_the_reply_and_an_empty_one_is_counted_under_skip(tmp_path):
    path = tmp_path / "eval_set.json"
    rows = [{"question": "写一首诗", "class": "generation", "std_answer": ""},
            {"question": "1+1等于几？", "class": "math", "std_answer": "2"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert detect_format(rows[1]) == "qa"
    with pytest.raises(DataError, match=r"eval_set.json:1: std_answer is empty"):
        list(iter_conversations(path))
    skip = SkipStats()
    got = list(iter_conversations(path, skip=skip))
    assert [m for _, m in got] == [[{"role": "user", "content": "1+1等于几？"}, {"role": "assistant", "content": "2"}]]
    assert skip.counts == {"empty content": 1}
