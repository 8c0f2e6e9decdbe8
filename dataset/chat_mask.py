"""ChatML token ids and the SFT loss mask, built piece by piece.

    <|im_start|>user\\n 你好 <|im_end|> \\n <|im_start|>assistant\\n 你好！ <|im_end|> \\n
    0 .........................................................  1 1 1 ... 1   0

The mask is 1 on exactly the tokens the model must learn to produce: every
assistant reply from its first token through its closing <|im_end|>. Never the
system prompt, the user's turns, the role headers, or the newline after
<|im_end|>. (The reference masks were off by one at both ends: they skipped the
reply's first token and trained the token after the end marker.)

Each piece (header, content, <|im_end|>, newline) is encoded on its own and
the ids are concatenated, so the span boundaries are exact by construction. It
is also the sequence the model meets at inference: the prompt ends with the
encoded `<|im_start|>assistant\\n` and the reply's tokens follow it.
"""
from __future__ import annotations

from model import IGNORE_INDEX
from tokenizer import SpongeTokenizer
from tokenizer.specials import IM_START


def tokenize_chat(messages: list[dict], tok: SpongeTokenizer) -> tuple[list[int], list[int]]:
    """(ids, mask) of a conversation in ChatML; mask[i] = 1 where ids[i] is trained."""
    ids: list[int] = []
    mask: list[int] = []
    newline = tok.encode("\n")
    for message in messages:
        header = tok.encode(f"{IM_START}{message['role']}\n")
        body = tok.encode(message["content"]) + [tok.im_end_id]
        trained = 1 if message["role"] == "assistant" else 0
        ids += header + body + newline
        mask += [0] * len(header) + [trained] * len(body) + [0] * len(newline)
    return ids, mask


def shift_targets(ids: list[int], mask: list[int]) -> tuple[list[int], list[int]]:
    """(inputs, targets) for next-token training: targets[t] is ids[t + 1] when
    that token is trained, else IGNORE_INDEX. So the last header token (the
    newline after `assistant`) predicts the reply's first token, and <|im_end|>
    itself is a target, but nothing after it is."""
    targets = [token if keep else IGNORE_INDEX for token, keep in zip(ids[1:], mask[1:])]
    return ids[:-1], targets
