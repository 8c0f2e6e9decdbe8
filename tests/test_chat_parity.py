"""Training and inference tokenize a conversation identically.

What SFT trains on must be the ids the model meets at inference, where the whole
ChatML text is encoded at once (apply_chat_template(..., tokenize=True)). The
edge cases are where byte-level BPE glues characters across the border between a
role header and its content: replies that start with spaces, whitespace-only
replies, newlines, emoji, and tag text typed inside a message.
"""
import json
import random

import pytest

from dataset.chat_formats import to_messages
from dataset.chat_mask import render_with_spans, tokenize_chat
from dataset.sft_tokenize import pretokenize_chat
from tokenizer import load_tokenizer, render_chat

EDGE_CONTENTS = ["  leading spaces", "trailing spaces   ", " x", "\n\n两行\n", "\t制表",
                 "emoji 🙂🐙 and 海绵宝宝", "<think>literal</think> tags <answer>", "a<|im_end|>b", "x"]
# The chat readers refuse these as empty turns, but a conversation built in code may hold them.
BLANK_CONTENTS = ["   ", " ", "\n", "\t\n "]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def records(user: str, reply: str) -> dict[str, dict]:
    """One conversation in every chat format."""
    return {
        "minimind": {"conversations": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]},
        "sharegpt": {"conversations": [{"from": "human", "value": user}, {"from": "gpt", "value": reply}]},
        "openai": {"messages": [{"role": "system", "content": " sys "}, {"role": "user", "content": user},
                                {"role": "assistant", "content": reply}]},
        "alpaca": {"instruction": user, "input": "", "output": reply},
        "qa": {"question": user, "answer": reply},
    }


def check_mask(tok, messages: list[dict], ids: list[int], mask: list[int]) -> None:
    """Every character of every reply (and its <|im_end|>) is inside a trained token, and every
    trained token overlaps a reply: the mask is exact up to BPE's own merges."""
    text, spans = render_with_spans(messages)
    _, offsets = tok.encode_with_offsets(text)
    trained_chars = {c for (start, end), m in zip(offsets, mask) if m for c in range(start, end)}
    reply_chars = {c for start, end in spans for c in range(start, end)}
    assert reply_chars <= trained_chars
    for (start, end), m in zip(offsets, mask):
        if m:
            assert any(start < e and end > s for s, e in spans)


@pytest.mark.parametrize("content", EDGE_CONTENTS)
def test_every_format_gives_the_inference_ids_for_edge_content(tok, content):
    for fmt, record in records(content, content).items():
        messages = to_messages(record, fmt)
        ids, mask = tokenize_chat(messages, tok)
        assert ids == tok.apply_chat_template(messages, tokenize=True), fmt
        assert ids == tok.encode(render_chat(messages)), fmt
        check_mask(tok, messages, ids, mask)


@pytest.mark.parametrize("content", BLANK_CONTENTS)
def test_whitespace_only_turns_give_the_inference_ids(tok, content):
    messages = [{"role": "system", "content": content}, {"role": "user", "content": content},
                {"role": "assistant", "content": content}]
    ids, mask = tokenize_chat(messages, tok)
    assert ids == tok.apply_chat_template(messages, tokenize=True)
    check_mask(tok, messages, ids, mask)


def test_a_reply_that_starts_with_spaces_is_trained_from_its_first_character(tok):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  hi"}]
    ids, mask = tokenize_chat(messages, tok)
    pieces = [tok.decode([i]) for i in ids]
    # BPE glues the header's newline to the first space: that token is trained (it holds reply text).
    glued = pieces.index("\n ", pieces.index("assistant") if "assistant" in pieces else 0)
    assert mask[glued] == 1 and mask[glued - 1] == 0
    assert "".join(p for p, m in zip(pieces, mask) if m) == "\n  hi<|im_end|>"


def test_random_conversations_tokenize_the_same_for_training_and_inference(tok):
    rng = random.Random(0)
    alphabet = [" ", "  ", "\n", "\t", "a", "好", "海绵", "🙂", "1", "。", "<think>", "</answer>", "\u3000", "é"]
    for _ in range(400):
        messages = []
        if rng.random() < 0.3:
            messages.append({"role": "system", "content": "".join(rng.choices(alphabet, k=rng.randrange(0, 6)))})
        for _ in range(rng.randrange(1, 4)):
            for role in ("user", "assistant"):
                messages.append({"role": role, "content": "".join(rng.choices(alphabet, k=rng.randrange(0, 12)))})
        ids, mask = tokenize_chat(messages, tok)
        assert ids == tok.apply_chat_template(messages, tokenize=True)
        check_mask(tok, messages, ids, mask)


def test_the_sft_token_files_hold_the_inference_ids(tok, tmp_path):
    path = tmp_path / "edge.jsonl"
    rows = [records(f"问{i}", content)["minimind"] for i, content in enumerate(EDGE_CONTENTS)]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    corpus = pretokenize_chat([path], tok, max_seq_len=256, val_fraction=0.0, cache_root=tmp_path / "cache",
                              show_progress=False)
    split = corpus.train
    ends = list(split.doc_starts[1:]) + [split.n_tokens]
    stored = [split.tokens[s:e - 1].tolist() for s, e in zip(split.doc_starts, ends)]  # without the end-of-text
    expected = [tok.apply_chat_template(to_messages(r, "minimind"), tokenize=True) for r in rows]
    assert stored == expected
