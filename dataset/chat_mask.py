"""ChatML token ids and the SFT loss mask.

    <|im_start|>user\\n 你好 <|im_end|> \\n <|im_start|>assistant\\n 你好！ <|im_end|> \\n
    0 .........................................................  1 1 1 ... 1   0

The mask is 1 on exactly the tokens the model must learn to produce: every
assistant reply from its first token through its closing <|im_end|>. Never the
system prompt, the user's turns, the role headers, or the newline after
<|im_end|>. (The reference masks were off by one at both ends: they skipped the
reply's first token and trained the token after the end marker.)

The ids are those of the whole ChatML text encoded at once, exactly what
`tok.apply_chat_template(messages, tokenize=True)` gives at inference. Encoding
each piece on its own would differ where BPE glues characters across a piece
border: a reply that starts with spaces ("assistant\\n" + "  hi" encodes as
"\\n " + " hi"), or one made only of whitespace. The mask comes from the
tokenizer's character offsets instead: a token is trained when any of its
characters belongs to an assistant reply or its <|im_end|>, so no character of a
reply goes untrained, even one that BPE merged with the header's newline.
"""
from __future__ import annotations

from model import IGNORE_INDEX
from tokenizer import SpongeTokenizer
from tokenizer.specials import IM_END, IM_START


def render_with_spans(messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The ChatML text of a conversation (as render_chat writes it) and the character
    spans [start, end) of every assistant reply, its <|im_end|> included."""
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    at = 0
    for message in messages:
        header, body = f"{IM_START}{message['role']}\n", f"{message['content']}{IM_END}"
        if message["role"] == "assistant":
            spans.append((at + len(header), at + len(header) + len(body)))
        parts += [header, body, "\n"]
        at += len(header) + len(body) + 1
    return "".join(parts), spans


def tokenize_chat(messages: list[dict], tok: SpongeTokenizer) -> tuple[list[int], list[int]]:
    """(ids, mask) of a conversation in ChatML; mask[i] = 1 where ids[i] is trained."""
    text, spans = render_with_spans(messages)
    ids, offsets = tok.encode_with_offsets(text)
    mask, s = [], 0
    for start, end in offsets:
        while s < len(spans) and spans[s][1] <= start:  # spans and tokens both run left to right
            s += 1
        mask.append(1 if s < len(spans) and start < spans[s][1] and end > spans[s][0] else 0)
    return ids, mask


def shift_targets(ids: list[int], mask: list[int]) -> tuple[list[int], list[int]]:
    """(inputs, targets) for next-token training: targets[t] is ids[t + 1] when
    that token is trained, else IGNORE_INDEX. So the last header token (the
    newline after `assistant`) predicts the reply's first token, and <|im_end|>
    itself is a target, but nothing after it is."""
    targets = [token if keep else IGNORE_INDEX for token, keep in zip(ids[1:], mask[1:])]
    return ids[:-1], targets
