"""The shipped tokenizer, its loader and the chat template (training: test_train_tokenizer.py).

transformers is used only as an oracle (the same directory must behave the
same under AutoTokenizer); no expected token ids are hard-coded: we test
properties and agreement, never snapshots of our own output.
"""
import hashlib
import json
import os
import random

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # before any transformers import

from tokenizer.hf_format import write_hf_dir
from tokenizer import (  # noqa: E402
    CHAT_TEMPLATE,
    CONTROL_TOKENS,
    DEFAULT_TOKENIZER_DIR,
    REASONING_TAGS,
    SPECIAL_TOKENS,
    TokenizerError,
    load_tokenizer,
    render_chat,
)

REPO_ROOT = DEFAULT_TOKENIZER_DIR.parent

ROUND_TRIP = [
    "",
    "你好，世界！今天天气不错。",
    "Hello, world! The quick brown fox jumps over 13 lazy dogs.",
    "中英混排 mixed text：GPT-2 与 BPE，价格 ¥12.5 / $3.99。",
    "emoji 😀🎉 and ZWJ families 👨‍👩‍👧‍👦 👩🏽‍💻 🏳️‍🌈 flags 🇨🇳🇺🇸",
    "rare CJK: 𠀀 𪚥 𰻞𰻞面 龘 靐 (Extension B and beyond)",
    "control chars: \x00 \x01 \t tab \x1b[31mred\x1b[0m \r\n windows \x7f",
    "  leading and trailing spaces  \n\n\n  multiple   spaces\t\t",
    "code:\n    def f(x):\n        return x ** 2  # 注释\n",
    "<|im_start|>user\n你好<|im_end|>\n<think>嗯</think><answer>好</answer><|endoftext|>",
    "half a tag: <think <|im_start <answer </ans",
    "\u200b zero width \ufeff BOM \u00a0 nbsp \u3000 ideographic space",
]

CONVERSATIONS = [
    [{"role": "user", "content": "你好"}],
    [{"role": "system", "content": "你是一个乐于助人的助手。"}, {"role": "user", "content": "1+1=?"}],
    [
        {"role": "user", "content": "讲个笑话"},
        {"role": "assistant", "content": "好的。\n有一天……"},
        {"role": "user", "content": "再来一个"},
        {"role": "assistant", "content": "没有了 😀"},
    ],
    [
        {"role": "system", "content": "Think step by step."},
        {"role": "user", "content": "2*3?"},
        {"role": "assistant", "content": "<think>\n2 乘 3 等于 6\n</think>\n<answer>\n6\n</answer>"},
    ],
    [{"role": "user", "content": "  spaces and\nnewlines \n"}, {"role": "assistant", "content": ""}],
]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture(scope="module")
def hf_tok():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(DEFAULT_TOKENIZER_DIR))


# ---------------------------------------------------------------- special tokens


def test_special_tokens_have_the_fixed_ids(tok):
    assert SPECIAL_TOKENS == CONTROL_TOKENS + REASONING_TAGS
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(token) == expected_id
        assert tok.encode(token) == [expected_id]
        assert tok.id_to_token(expected_id) == token
    assert (tok.endoftext_id, tok.im_start_id, tok.im_end_id) == (0, 1, 2)
    assert (tok.think_id, tok.think_end_id, tok.answer_id, tok.answer_end_id) == (3, 4, 5, 6)
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 0, 2)  # bos: what pretraining puts before a document


def test_vocab_size_counts_every_id(tok):
    assert tok.vocab_size == len(tok) == 6400
    data = json.loads((DEFAULT_TOKENIZER_DIR / "tokenizer.json").read_text(encoding="utf-8"))
    ids = set(data["model"]["vocab"].values()) | {t["id"] for t in data["added_tokens"]}
    assert ids == set(range(tok.vocab_size))


@pytest.mark.parametrize("token", SPECIAL_TOKENS)
def test_special_tokens_are_single_ids_inside_text(tok, token):
    text = f"你好{token}嗯abc{token}{token}"
    ids = tok.encode(text)
    assert ids.count(tok.token_to_id(token)) == 3
    assert tok.decode(ids) == text


def test_think_tag_in_running_text(tok):
    assert tok.think_id in tok.encode("你好<think>嗯</think>")
    assert tok.think_end_id in tok.encode("你好<think>嗯</think>")


def _without_control_tokens(text: str) -> str:
    for token in CONTROL_TOKENS:
        text = text.replace(token, "")
    return text


SKIP_TEXT = "<|im_start|>assistant\n<think>\n想一想\n</think>\n<answer>\n42\n</answer><|im_end|>\n<|endoftext|>"


def test_skip_special_tokens_keeps_reasoning_tags(tok):
    ids = tok.encode(SKIP_TEXT)
    assert tok.decode(ids) == SKIP_TEXT
    visible = tok.decode(ids, skip_special_tokens=True)
    assert visible == _without_control_tokens(SKIP_TEXT)
    assert all(tag in visible for tag in REASONING_TAGS)


def test_skip_special_tokens_keeps_reasoning_tags_hf(tok, hf_tok):
    ids = hf_tok.encode(SKIP_TEXT, add_special_tokens=False)
    assert ids == tok.encode(SKIP_TEXT)
    assert hf_tok.decode(ids, skip_special_tokens=False) == SKIP_TEXT
    assert hf_tok.decode(ids, skip_special_tokens=True) == _without_control_tokens(SKIP_TEXT)


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip_exact(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_round_trip_random_code_points(tok):
    rng = random.Random(0)
    # Every plane, surrogates excluded (they are not valid in UTF-8 text).
    points = [c for c in (rng.randrange(0x110000) for _ in range(20000)) if not 0xD800 <= c <= 0xDFFF]
    texts = ["".join(map(chr, points[i:i + 50])) for i in range(0, len(points), 50)]
    assert tok.decode(tok.encode("".join(texts))) == "".join(texts)
    assert [tok.decode(ids) for ids in tok.encode_batch(texts)] == texts


def test_round_trip_random_bytes(tok):
    rng = random.Random(1)
    for _ in range(200):
        text = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))).decode("utf-8", errors="replace")
        assert tok.decode(tok.encode(text)) == text


def test_every_byte_has_a_token(tok):
    for b in range(256):
        text = bytes([b]).decode("latin-1")
        assert tok.decode(tok.encode(text)) == text


# ---------------------------------------------------------------- chat template


def test_chat_template_format(tok):
    # Hand-written from the ChatML spec, not produced by the code under test.
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}]
    want = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"
    assert tok.apply_chat_template(msgs) == want
    assert tok.apply_chat_template(msgs[:2], add_generation_prompt=True) == want.split("A<|im_end|>")[0]
    no_system = tok.apply_chat_template([{"role": "user", "content": "U"}])
    assert no_system == "<|im_start|>user\nU<|im_end|>\n"  # no default system prompt


def test_chat_template_tokenized_frames_turns(tok):
    ids = tok.apply_chat_template(CONVERSATIONS[3], add_generation_prompt=True, tokenize=True)
    assert ids.count(tok.im_start_id) == 4 and ids.count(tok.im_end_id) == 3
    assert tok.think_id in ids and tok.answer_end_id in ids
    assert tok.decode(ids) == render_chat(CONVERSATIONS[3], add_generation_prompt=True)


@pytest.mark.parametrize("bad", [[{"role": "tool", "content": "x"}], [{"role": "user"}], [{"content": "x"}]])
def test_chat_template_rejects_bad_messages(tok, bad):
    with pytest.raises(ValueError):
        tok.apply_chat_template(bad)


def test_hf_chat_template_rejects_unknown_roles(hf_tok):
    with pytest.raises(Exception, match="system, user or assistant"):
        hf_tok.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


@pytest.mark.parametrize("conv", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_chat_template_matches_hf(tok, hf_tok, conv, add_generation_prompt):
    ours = tok.apply_chat_template(conv, add_generation_prompt=add_generation_prompt)
    theirs = hf_tok.apply_chat_template(conv, add_generation_prompt=add_generation_prompt, tokenize=False)
    assert theirs == ours


def test_saved_chat_template_is_ours():
    config = json.loads((DEFAULT_TOKENIZER_DIR / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["chat_template"] == CHAT_TEMPLATE


# ---------------------------------------------------------------- Hugging Face format


def test_hf_files_are_portable_to_transformers_4():
    config = json.loads((DEFAULT_TOKENIZER_DIR / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"  # 5.x's "TokenizersBackend" breaks 4.x
    assert "extra_special_tokens" not in config
    data = json.loads((DEFAULT_TOKENIZER_DIR / "tokenizer.json").read_text(encoding="utf-8"))
    special = {t["content"]: t["special"] for t in data["added_tokens"]}
    assert special == {**{t: True for t in CONTROL_TOKENS}, **{t: False for t in REASONING_TAGS}}
    assert data["pre_tokenizer"]["type"] == "ByteLevel" and data["pre_tokenizer"]["use_regex"]
    assert data["pre_tokenizer"]["add_prefix_space"] is False
    assert data["decoder"]["type"] == "ByteLevel"
    assert all(isinstance(m, str) for m in data["model"]["merges"])  # "a b": readable by tokenizers < 0.20 too


def test_hf_roles_and_ids_match_ours(tok, hf_tok):
    assert (hf_tok.bos_token, hf_tok.eos_token, hf_tok.pad_token) == ("<|endoftext|>", "<|im_end|>", "<|endoftext|>")
    assert (hf_tok.bos_token_id, hf_tok.eos_token_id, hf_tok.pad_token_id) == (tok.bos_id, tok.eos_id, tok.pad_id)
    assert len(hf_tok) == tok.vocab_size
    for text in ROUND_TRIP:
        ids = hf_tok.encode(text, add_special_tokens=False)
        assert ids == tok.encode(text)
        assert hf_tok(text)["input_ids"] == ids  # the default call adds nothing either
        assert hf_tok.decode(ids) == text


# ---------------------------------------------------------------- loader


def test_identity_fingerprints_the_file(tok):
    ident = tok.identity()
    assert ident["sha256"] == hashlib.sha256((DEFAULT_TOKENIZER_DIR / "tokenizer.json").read_bytes()).hexdigest()
    assert ident["vocab_size"] == 6400
    assert ident["special_tokens"] == {t: i for i, t in enumerate(SPECIAL_TOKENS)}


def test_load_from_file_path_and_save(tok, tmp_path):
    assert load_tokenizer(DEFAULT_TOKENIZER_DIR / "tokenizer.json").identity() == tok.identity()
    saved = load_tokenizer(write_hf_dir(tok.json_text, tmp_path / "copy"))
    assert saved.identity() == tok.identity()
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == [
        "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]


def test_load_errors_are_one_line(tmp_path):
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "tokenizer.json").write_text('{"model": ', encoding="utf-8")
    from tokenizers import Tokenizer, models
    (tmp_path / "plain").mkdir()
    Tokenizer(models.BPE()).save(str(tmp_path / "plain" / "tokenizer.json"))  # valid, but none of our specials
    for path in [tmp_path / "missing", tmp_path / "corrupt", tmp_path / "plain"]:
        with pytest.raises(TokenizerError) as err:
            load_tokenizer(path)
        assert isinstance(err.value, ValueError)
        assert "\n" not in str(err.value) and str(path) in str(err.value)
