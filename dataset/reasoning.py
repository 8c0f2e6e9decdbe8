"""R1-style replies, normalised to one form.

Every reasoning reply we train on has exactly this shape (thinking and answer
stripped of surrounding whitespace):

    <think>\\n{thinking}\\n</think>\\n<answer>\\n{answer}\\n</answer>

Replies arrive in several shapes, all accepted by normalise_reply():

  (a) MiniMind      "<think>…</think><answer>…</answer>" (any whitespace around the tags)
  (b) DeepSeek      "<think>…</think> bare answer"; also "…</think> answer" with no opening
                    tag, because the R1 chat template puts "<think>\\n" in the prompt, so dumps
                    of its completions begin inside the thinking
  (c) API dumps     content plus a separate reasoning_content: pass it as `reasoning`
  (d) QA dumps      {"question", "answer"} whose answer holds (a) or (b): the same text

Bad replies raise ChatFormatError(one-line message, reason). The reasons, which
--skip_bad counts:
  "no thinking"                no <think> block at all, or an empty one (distillation data must think)
  "unclosed think"             <think> with no </think>
  "unclosed answer"            <answer> without </answer>, or the reverse
  "nested or duplicated tags"  a tag twice, or an answer tag inside the thinking
  "misplaced tags"             a closing tag before its opening tag
  "text outside tags"          words before <think>, between </think> and <answer>, or after </answer>
  "empty answer"               nothing after the thinking
  "wrong type"                 the reply (or the reasoning) is not a string

Whether an answer equals a gold answer is decided elsewhere, by the project's one
matcher: evaluation/reasoning_metrics.py (answers_match).
"""
from __future__ import annotations

from tokenizer.specials import ANSWER, ANSWER_END, THINK, THINK_END
from .chat_formats import ChatFormatError

TAGS: tuple[str, ...] = (THINK, THINK_END, ANSWER, ANSWER_END)


def canonical_reply(thinking: str, answer: str) -> str:
    """The one form every reasoning reply is trained in."""
    return f"{THINK}\n{thinking.strip()}\n{THINK_END}\n{ANSWER}\n{answer.strip()}\n{ANSWER_END}"


def _check_tags(text: str) -> dict[str, int]:
    """Where each tag is (-1: absent), after checking none appears twice."""
    found = {}
    for tag in TAGS:
        n = text.count(tag)
        if n > 1:
            raise ChatFormatError(f"{tag} appears {n} times; a reply has one thinking and one answer",
                                  "nested or duplicated tags")
        found[tag] = text.find(tag)
    return found


def _answer_part(text: str, after_think: int, a0: int, a1: int) -> str:
    """The answer: inside <answer>…</answer> when tagged, else everything after </think>."""
    if (a0 < 0) != (a1 < 0):
        missing = ANSWER_END if a1 < 0 else ANSWER
        raise ChatFormatError(f"the answer has no {missing}", "unclosed answer")
    if a0 < 0:
        return text[after_think:]
    if min(a0, a1) < after_think:
        raise ChatFormatError("an answer tag inside the thinking", "nested or duplicated tags")
    if a1 < a0:
        raise ChatFormatError(f"{ANSWER_END} comes before {ANSWER}", "misplaced tags")
    between, after = text[after_think:a0].strip(), text[a1 + len(ANSWER_END):].strip()
    if between or after:
        stray = between or after
        raise ChatFormatError(f"text outside the tags: {stray[:30]!r}", "text outside tags")
    return text[a0 + len(ANSWER):a1]


def split_reply(text: str) -> tuple[str, str]:
    """(thinking, answer) of a reply in any accepted shape, both stripped; raises ChatFormatError."""
    if not isinstance(text, str):
        raise ChatFormatError(f"a reply must be a string, got {type(text).__name__}", "wrong type")
    at = _check_tags(text)
    t0, t1 = at[THINK], at[THINK_END]
    if t0 < 0 and t1 < 0:
        raise ChatFormatError("no <think> block: distillation data must show its thinking", "no thinking")
    if t1 < 0:
        raise ChatFormatError(f"{THINK} is never closed by {THINK_END}", "unclosed think")
    if t0 > t1:
        raise ChatFormatError(f"{THINK_END} comes before {THINK}", "misplaced tags")
    if t0 > 0 and text[:t0].strip():
        raise ChatFormatError(f"text before {THINK}: {text[:t0].strip()[:30]!r}", "text outside tags")
    thinking = text[t0 + len(THINK) if t0 >= 0 else 0:t1].strip()
    answer = _answer_part(text, t1 + len(THINK_END), at[ANSWER], at[ANSWER_END]).strip()
    if not thinking:
        raise ChatFormatError("the thinking is empty: distillation data must show its thinking", "no thinking")
    if not answer:
        raise ChatFormatError("empty answer after the thinking (fix the record, or pass --skip_bad to skip "
                              "such records)", "empty answer")
    return thinking, answer


def normalise_reply(content: str, reasoning: str | None = None) -> str:
    """An assistant reply in the canonical form. `reasoning` is an API dump's separate
    reasoning_content; the content must then carry no thinking of its own."""
    if reasoning is not None:
        if not isinstance(reasoning, str):
            raise ChatFormatError(f"reasoning must be a string, got {type(reasoning).__name__}", "wrong type")
        if not isinstance(content, str):
            raise ChatFormatError(f"a reply must be a string, got {type(content).__name__}", "wrong type")
        content = f"{THINK}{reasoning}{THINK_END}{content}"
    return canonical_reply(*split_reply(content))

