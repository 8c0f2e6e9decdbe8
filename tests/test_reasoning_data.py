"""R1 data: every accepted reply shape normalised to the one canonical form, every
bad-reply reason, the reasoning_content and qa chat formats, and
pretokenize_chat(reasoning=True). Expected strings are written out by hand. (The
answer matcher is tested with common/reasoning.py, where it lives.)"""
import json

import pytest

from dataset.chat_formats import ChatFormatError, detect_format, iter_conversations, to_messages
from dataset.readers import DataError
from dataset.reasoning import normalise_reply, split_reply
from dataset.sft_tokenize import pretokenize_chat
from tokenizer import load_tokenizer

CANONICAL = "<think>\n3 + 4 = 7\n</think>\n<answer>\n7\n</answer>"


# ---------------------------------------------------------------- accepted shapes

@pytest.mark.parametrize("reply", [
    CANONICAL,                                                   # (a) MiniMind, already canonical
    "<think>3 + 4 = 7</think><answer>7</answer>",                # (a) no newlines
    "  <think>\n\n 3 + 4 = 7 \n</think>\n\n<answer> 7 </answer>\n",  # (a) extra whitespace
    "<think>\n3 + 4 = 7\n</think>\n\n7",                         # (b) DeepSeek: bare answer
    "3 + 4 = 7\n</think>\n\n7\n",                                # (b) R1 completion: opening tag was in the prompt
])
def test_every_reply_shape_becomes_the_canonical_form(reply):
    assert normalise_reply(reply) == CANONICAL


def test_api_dump_reasoning_content_and_question_answer_dumps():
    assert normalise_reply("7", reasoning="3 + 4 = 7") == CANONICAL                        # (c)
    assert normalise_reply(" <answer>7</answer> ", reasoning="\n3 + 4 = 7\n") == CANONICAL
    qa = {"question": "3 + 4 = ?", "answer": "<think>3 + 4 = 7</think>\n7"}                # (d)
    assert detect_format(qa) == "qa"
    assert normalise_reply(to_messages(qa, "qa")[1]["content"]) == CANONICAL


def test_split_reply_gives_stripped_parts_and_keeps_inner_text():
    assert split_reply("<think>\n 第一步\n\n第二步 \n</think>\n 答：7 ") == ("第一步\n\n第二步", "答：7")
    assert normalise_reply("<think>a\nb</think>x\ny") == "<think>\na\nb\n</think>\n<answer>\nx\ny\n</answer>"


# ---------------------------------------------------------------- bad replies

@pytest.mark.parametrize("reply,reasoning,reason,words", [
    ("<think>3 + 4 = 7\n7", None, "unclosed think", "never closed"),
    ("<think>a<think>b</think>7", None, "nested or duplicated tags", "<think> appears 2 times"),
    ("<think>a<answer>7</answer></think>", None, "nested or duplicated tags", "inside the thinking"),
    ("<think>a</think><answer>1</answer><answer>2</answer>", None, "nested or duplicated tags", "appears 2 times"),
    ("<think>x</think>7", "y", "nested or duplicated tags", "<think> appears 2 times"),  # thinking given twice
    ("<think>a</think>\n  ", None, "empty answer", "empty answer"),
    ("<think>a</think><answer> \n</answer>", None, "empty answer", "empty answer"),
    ("7", None, "no thinking", "no <think> block"),
    ("<think> \n</think>7", None, "no thinking", "thinking is empty"),
    ("7", "", "no thinking", "thinking is empty"),
    ("</think>a<think>b", None, "misplaced tags", "</think> comes before <think>"),
    ("<think>a</think></answer>7<answer>", None, "misplaced tags", "</answer> comes before <answer>"),
    ("<think>a</think><answer>7", None, "unclosed answer", "no </answer>"),
    ("<think>a</think>7</answer>", None, "unclosed answer", "no <answer>"),
    ("好的。<think>a</think>7", None, "text outside tags", "before <think>"),
    ("<think>a</think>答：<answer>7</answer>", None, "text outside tags", "'答："),
    ("<think>a</think><answer>7</answer>谢谢", None, "text outside tags", "'谢谢'"),
    (None, None, "wrong type", "got NoneType"),
    ("7", 3, "wrong type", "reasoning must be a string, got int"),
])
def test_bad_replies_raise_one_line_errors_with_their_reason(reply, reasoning, reason, words):
    with pytest.raises(ChatFormatError) as info:
        normalise_reply(reply, reasoning)
    assert info.value.reason == reason
    assert words in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------- chat formats: reasoning_content, qa

def test_reasoning_content_becomes_a_think_block_in_openai_and_minimind():
    turns = [{"role": "user", "content": "3 + 4 = ?"},
             {"role": "assistant", "content": "7", "reasoning_content": "3 + 4 = 7"}]
    expected = [{"role": "user", "content": "3 + 4 = ?"},
                {"role": "assistant", "content": "<think>\n3 + 4 = 7\n</think>\n7"}]
    assert to_messages({"messages": turns}, "openai") == expected
    assert to_messages({"conversations": turns}, "minimind") == expected
    # Dumps write null or "" when the model did not think: the content is left alone.
    for nothing in (None, "", "  "):
        turns[1]["reasoning_content"] = nothing
        assert to_messages({"messages": turns}, "openai")[1]["content"] == "7"


@pytest.mark.parametrize("turns,message,reason", [
    ([{"role": "user", "content": "q", "reasoning_content": "hmm"}, {"role": "assistant", "content": "a"}],
     "turn 1: reasoning_content on a user turn", "misplaced reasoning"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": ["x"]}],
     "turn 2 reasoning_content must be a string, got list", "wrong type"),
])
def test_bad_reasoning_content(turns, message, reason):
    with pytest.raises(ChatFormatError) as info:
        to_messages({"messages": turns}, "openai")
    assert message in str(info.value) and info.value.reason == reason


def test_qa_format_detected_with_optional_system_and_checked(tmp_path):
    path = tmp_path / "qa.jsonl"
    records = [{"question": "1+1?", "answer": "<think>one and one</think>2"},
               {"question": "2+2?", "answer": "4", "system": "你是数学老师。"},
               {"question": "3+3?", "answer": 6}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    found = iter_conversations(path)
    assert next(found)[1] == [{"role": "user", "content": "1+1?"},
                              {"role": "assistant", "content": "<think>one and one</think>2"}]
    assert next(found)[1] == [{"role": "system", "content": "你是数学老师。"}, {"role": "user", "content": "2+2?"},
                              {"role": "assistant", "content": "4"}]
    with pytest.raises(DataError, match=r"qa.jsonl:3: answer must be a string, got int$"):
        next(found)
    assert detect_format({"prompt": "a", "answer": "b"}) is None  # needs both keys


# ---------------------------------------------------------------- pretokenize_chat(reasoning=True)

def _chat(q, a):
    return {"conversations": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def test_pretokenize_reasoning_normalises_replies_and_counts_bad_ones(tmp_path):
    tok = load_tokenizer()
    rows = [_chat("问一", "<think>想</think><answer>7</answer>"), _chat("问二", "<think>\n算\n</think>\n\n8"),
            _chat("问三", "<think>没想完")]
    path = tmp_path / "r1.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    kwargs = dict(max_seq_len=128, cache_root=tmp_path / "cache", show_progress=False, val_fraction=0.0)
    with pytest.raises(DataError, match=r"r1.jsonl:3: turn 2: <think> is never closed by </think>$"):
        pretokenize_chat([path], tok, reasoning=True, **kwargs)
    corpus = pretokenize_chat([path], tok, reasoning=True, skip_bad=True, **kwargs)
    assert corpus.meta["skipped"] == f"skipped 1 bad record: 1 unclosed think (first at {path}:3)"
    assert corpus.meta["options"]["reasoning"] is True
    text = tok.decode(corpus.train.tokens.tolist())
    assert text == ("<|im_start|>user\n问一<|im_end|>\n<|im_start|>assistant\n"
                    "<think>\n想\n</think>\n<answer>\n7\n</answer><|im_end|>\n<|endoftext|>"
                    "<|im_start|>user\n问二<|im_end|>\n<|im_start|>assistant\n"
                    "<think>\n算\n</think>\n<answer>\n8\n</answer><|im_end|>\n<|endoftext|>")
    # Without reasoning the replies are kept as written, under another cache key.
    plain = pretokenize_chat([path], tok, **kwargs)
    assert plain.dir != corpus.dir and plain.meta["lengths"]["kept"] == 3
    assert "<think>\n算\n</think>\n\n8<|im_end|>" in tok.decode(plain.train.tokens.tolist())
