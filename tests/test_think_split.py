"""inference/think_split.py: thinking vs answer, tags and framing newlines removed, on any chunking."""
import random

import pytest

from inference.think_split import ThinkSplitter, split_reasoning

R1 = "<think>\n先想一想。\n1+1=2\n</think>\n<answer>\n答案是 2。\n</answer>"


def pieces(chunks: list[str]) -> list[tuple[str, str]]:
    splitter = ThinkSplitter()
    out = []
    for chunk in chunks:
        out += splitter.feed(chunk)
    return out + splitter.flush()


def joined(chunks: list[str]) -> tuple[str, str]:
    think = "".join(t for k, t in pieces(chunks) if k == "think")
    answer = "".join(t for k, t in pieces(chunks) if k == "answer")
    return think, answer


def every_split(text: str):
    """All ways to cut text into 1, 2 and 3 chunks."""
    yield [text]
    for i in range(len(text) + 1):
        yield [text[:i], text[i:]]
        for j in range(i, len(text) + 1, 3):
            yield [text[:i], text[i:j], text[j:]]


# Expected values written out by hand from the format in the docstring.
@pytest.mark.parametrize("text, think, answer", [
    (R1, "先想一想。\n1+1=2", "答案是 2。"),
    ("<think>\n想\n</think>\n直接回答", "想", "直接回答"),          # DeepSeek style, no answer tags
    ("你好！我是海绵宝宝。", "", "你好！我是海绵宝宝。"),            # an SFT model: no tags at all
    ("<think>\n\n</think>\n<answer>\n好\n</answer>", "", "好"),    # empty thinking
    ("<think>\n没想完", "没想完", ""),                              # cut off by max_tokens
    ("a\n\nb\n", "", "a\n\nb\n"),                                  # newlines away from tags are kept
    ("x < y and a<b", "", "x < y and a<b"),                        # '<' that is not a tag
    ("<think>\n想\n</think>\n<answer>\n答\n</answer>\n", "想", "答"),
])
def test_whole_text_splits_as_written_by_hand(text, think, answer):
    assert split_reasoning(text) == (think, answer)


@pytest.mark.parametrize("text", [R1, "<think>\n想\n</think>\n直接回答", "前<think>\n中\n</think>\n后\n",
                                  "a\n<b\n</answer>\n"])
def test_every_chunking_gives_the_same_parts(text):
    whole = split_reasoning(text)
    for chunks in every_split(text):
        assert joined(chunks) == whole, chunks


def test_pieces_come_in_order_and_merged():
    assert pieces([R1]) == [("think", "先想一想。\n1+1=2"), ("answer", "答案是 2。")]
    assert pieces(["前", "<think>", "\n中\n", "</think>", "\n后"]) == [
        ("answer", "前"), ("think", "中"), ("answer", "后")]


def test_released_text_is_not_held_longer_than_needed():
    splitter = ThinkSplitter()
    assert splitter.feed("<think>\n") == []
    assert splitter.feed("一步") == [("think", "一步")]
    # A newline may frame a closing tag, and '</th' may start one: both wait.
    assert splitter.feed("\n</th") == []
    assert splitter.feed("ink>\n<answer>\n答") == [("answer", "答")]
    # '<b' cannot start a tag: released with the newline before it.
    assert splitter.feed("\n<b") == [("answer", "\n<b")]
    assert splitter.feed("\n") == []
    assert splitter.flush() == [("answer", "\n")]
    assert splitter.flush() == []


def test_random_chunkings_of_random_tagged_texts_agree():
    rng = random.Random(0)
    atoms = ["<think>", "</think>", "<answer>", "</answer>", "\n", "想", "a", "<", "/", ">", " "]
    for _ in range(300):
        text = "".join(rng.choice(atoms) for _ in range(rng.randint(0, 25)))
        cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randint(0, 6))))
        chunks = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
        assert joined(chunks) == split_reasoning(text), (text, chunks)
        # Nothing but tags and their framing newlines is ever dropped.
        kept = "".join(t for _, t in pieces(chunks))
        stripped = text
        for tag in ("<think>", "</think>", "<answer>", "</answer>"):
            stripped = stripped.replace(tag, "")
        assert len(kept) <= len(stripped)
        assert kept.replace("\n", "") == stripped.replace("\n", "")
