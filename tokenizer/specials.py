"""The seven special tokens, in id order. Every other module takes them from here.

ids 0-2 are control tokens: they frame chat turns and separate documents, and
decode(skip_special_tokens=True) removes them. ids 3-6 are reasoning tags: they
are still matched as single tokens inside any text, but they are *not* marked
special, so they stay visible in decoded output (a reasoning model's answer is
unreadable without them).
"""
from common.tags import ANSWER, ANSWER_END, THINK, THINK_END

ENDOFTEXT = "<|endoftext|>"  # id 0: padding and document separator
IM_START = "<|im_start|>"  # id 1: opens a chat turn (bos)
IM_END = "<|im_end|>"  # id 2: closes a chat turn (eos)
# ids 3, 4, 5, 6: <think> </think> <answer> </answer> (common/tags.py: the reasoning format reads them too).

CONTROL_TOKENS: tuple[str, ...] = (ENDOFTEXT, IM_START, IM_END)
REASONING_TAGS: tuple[str, ...] = (THINK, THINK_END, ANSWER, ANSWER_END)
SPECIAL_TOKENS: tuple[str, ...] = CONTROL_TOKENS + REASONING_TAGS
