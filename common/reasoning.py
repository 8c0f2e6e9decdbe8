"""The reasoning format and the project's one answer matcher, below dataset/, trainer/ and evaluation/.

Data building (dataset/convert.py, dataset/problems.py), GRPO's rewards and the
evaluation all read replies through this module, so "compliant" and "correct" mean
the same when data is built, when a model is rewarded and when it is scored.

A reply is the assistant text as generated, decoded with skip_special_tokens=True
(so the four reasoning tags are visible and <|im_end|> is not). If the prompt
itself ended inside the thinking (say it ended with "<think>\\n"), prepend that
part to the reply before scoring.

Format compliance. A reply is compliant when, leading and trailing whitespace
aside, it is exactly `<think>T</think>W<answer>A</answer>`: W is whitespace only
(possibly none), neither T nor A contains any of the four tags, and A holds at
least one non-whitespace character. T may be empty: a thinking budget of 0 gives
an empty but well-formed span. Anything else is non-compliant: a missing, nested
or repeated tag, text before <think>, between the spans or after </answer>, an
empty answer, or a reply cut off before </answer>.

Answer extraction. A compliant reply's answer is A. For a non-compliant one a
fallback picks the span to read, so the matcher can still find an answer:
  1. the text after the last <answer>, up to the next </answer> or the end;
  2. else the text after the last </think> (DeepSeek style: a bare answer);
  3. else the whole reply.
accuracy counts every reply, non-compliant ones read by this fallback: it
measures whether the model knows the answer, and compliance measures the format.
strict_accuracy counts a reply only when it is compliant and correct.

Matching. answers_match(span, gold) is the project's one answer matcher: the
accuracy above and the --gold filter of dataset/convert.py both use it, so
"correct" means the same when data is built and when a model is scored. Both
sides first get full-width digits, Latin letters and ．／－（） mapped to ASCII
("１２" -> "12"). The gold decides how the span is read:
- option letters, one answer: the gold is one or more letters A-G (upper case),
  run together or separated by commas, 、 or 和 ("B", "BC", "A、C"). The
  span's letters are, by priority:
  (1) the whole span, when without spaces, brackets and .。,，、 it is only such
      letters ("(B)", "B.", "B、C");
  (2) else the last run of letters after a marker 答案/选项/故选/应选/选择/选,
      optionally followed by 】, a colon, 应该是/应是/是/为 and a bracket
      ("答案是B", "选B", "故选：BC", "答案为（C）", "【答案】: A", "正确答案应该是A");
      the run is read like a gold, so "答案：A，C" gives A and C;
  (3) else the last bracketed letter ("(B)", "（B）");
  (4) else the last A-G with no Latin letter on either side ("我认为是 C"; never
      the A of "AND").
  They match when the sets of letters are equal ("CB" matches "BC"): a
  multi-select answer is a set of choices.
- option letters, one answer per sub-question: the gold is two or more groups
  of letters separated by whitespace alone ("B C A", "AC BD"), which is how
  dataset/convert.py writes a list of answers (["B", "C", "A"] -> "B C A").
  The span's groups are every run of letters after a marker as in (2), in
  order, each cut at spaces, commas, 、 and 和 ("（1）【答案】B（2）【答案】C",
  "答案：B C A"); else, with no marker, every run of A-G with no Latin letter
  on either side, in order ("B、C、A", "1.B 2.C 3.A"). They match when there
  are as many groups as in the gold and each is, as a set, the gold's group in
  the same place: "CA BD" matches "AC BD", but "B C A" does not match "A B C"
  and "BCA" (one group) does not match "B C A". Order matters because the
  sub-questions are different questions: GAOKAO-Bench, whose standard_answer is
  such a list for its reading, cloze and multi-part items, scores position by
  position (model_answer[j] == standard_answer[j]), so an item is wholly right
  only when the two lists are equal, and a swapped pair is two wrong answers.
  Within one place it compares strings, but all its answer strings are in
  alphabetical order, so reading each as a set changes none of its verdicts.
- number: otherwise, when the gold holds exactly one number. The span's number
  is its last number. A number is an optional minus, digits with optional
  thousands commas in groups of three ("1,000"), optional decimals (or
  decimals alone: ".5", "-.5") and an optional "/denominator" ("3/4");
  \\frac{a}{b} and \\dfrac{a}{b} read as a/b. It never starts right after a
  Latin letter, a digit or a dot (H2O holds no number; the minus of "5-3" is no
  sign). What surrounds it is ignored, so units and currency pass ("12个",
  "3.5亿" -> 3.5, "$1,200.50" -> 1200.5) and % is a unit too ("75%" -> 75, not
  0.75). They match when |x - gold| <= 1e-6 * max(1, |gold|), on exact
  fractions: "1,000" = "1000.0", "3/4" = "0.75", "0.333333" = "1/3", but
  "0.33" != "1/3".
- text: otherwise, the span and the gold are compared whole, after dropping
  LaTeX's $ signs and a \\boxed{…} around the whole, removing all whitespace
  and trailing 。.！!；;, and ignoring case ("$\\boxed{北京}$。" matches "北京").
  An empty gold matches nothing.
"""
from __future__ import annotations

import re
from fractions import Fraction

from .tags import ANSWER, ANSWER_END, THINK, THINK_END  # single tokens of the tokenizer (tokenizer/specials.py)

TAGS = (THINK, THINK_END, ANSWER, ANSWER_END)

_FULL_WIDTH = str.maketrans(
    {chr(0xFF10 + i): chr(0x30 + i) for i in range(10)}
    | {chr(0xFF21 + i): chr(0x41 + i) for i in range(26)}
    | {chr(0xFF41 + i): chr(0x61 + i) for i in range(26)}
    | {"．": ".", "／": "/", "－": "-", "（": "(", "）": ")"}
)
_COMPLIANT = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)

_LETTER_RUN = r"[A-G](?:[\s,，、和]*[A-G])*"  # "BC", "B, C", "B，C", "B和C"
_GOLD_OPTIONS = re.compile(_LETTER_RUN)
_GOLD_SEQUENCE = re.compile(r"[A-G]+(?:\s+[A-G]+)+")  # whitespace alone: one group per sub-question
_GROUP_SEPARATORS = re.compile(r"[\s,，、和]+")
_WORDLESS_RUN = re.compile(r"(?<![A-Za-z])[A-G]+(?![A-Za-z])")
_BARE_OPTIONS = re.compile(r"[A-G]+")
_OPTION_NOISE = re.compile(r"[\s()\[\].。,，、]")
_MARKED_OPTIONS = re.compile(r"(?:答案|选项|故选|应选|选择|选)[\s:：】]*(?:应该是|应是|是|为)?[\s:：]*[(\[]?\s*"
                             rf"({_LETTER_RUN})(?![A-Za-z])")
_BRACKETED_OPTION = re.compile(r"[(\[]\s*([A-G])\s*[)\]]")
_LONE_OPTION = re.compile(r"(?<![A-Za-z])[A-G](?![A-Za-z])")

# Thousands commas only in exact groups of three, so "12,13" stays two numbers.
_NUMBER = re.compile(r"(?<![0-9A-Za-z.])-?(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)"
                     r"(?:\s*/\s*\d+(?:\.\d+)?)?")
_LATEX_FRAC = re.compile(r"\\d?frac\s*\{\s*(-?[\d.]+)\s*\}\s*\{\s*([\d.]+)\s*\}")
_TEXT_TRAILER = re.compile(r"[。.！!；;]+$")
_BOXED = re.compile(r"\\boxed\{(.*)\}")
TOLERANCE = Fraction(1, 10**6)


def normalize(text: str) -> str:
    """Full-width digits, Latin letters and ．／－（） as ASCII; nothing else changes."""
    return text.translate(_FULL_WIDTH)


def is_compliant(reply: str) -> bool:
    """True when reply is exactly one well-formed think span, then one non-empty answer span."""
    match = _COMPLIANT.fullmatch(reply)
    if match is None:
        return False
    think, answer = match.groups()
    return not any(tag in think or tag in answer for tag in TAGS) and answer.strip() != ""


def answer_span(reply: str) -> str:
    """The text the matcher reads: the answer of a compliant reply, else the documented fallback."""
    match = _COMPLIANT.fullmatch(reply)
    if match is not None and is_compliant(reply):
        return match.group(2)
    if ANSWER in reply:
        return reply.rsplit(ANSWER, 1)[1].split(ANSWER_END, 1)[0]
    if THINK_END in reply:
        return reply.rsplit(THINK_END, 1)[1]
    return reply


def think_span(reply: str) -> str | None:
    """The thinking text (raw, unstripped), or None when the reply has no <think>."""
    if THINK not in reply:
        return None
    after = reply.split(THINK, 1)[1]
    end = THINK_END if THINK_END in after else ANSWER
    return after.split(end, 1)[0]


def gold_options(gold: str) -> tuple[frozenset[str], ...] | None:
    """The option answer gold gives, one set of letters per sub-question: one set for
    "B", "BC" or "A、C", several for groups apart by whitespace ("B C A"); None for no letters."""
    text = normalize(gold).strip()
    if _GOLD_SEQUENCE.fullmatch(text):
        return tuple(frozenset(group) for group in text.split())
    if _GOLD_OPTIONS.fullmatch(text) is None:
        return None
    return (frozenset(ch for ch in text if "A" <= ch <= "G"),)


def extract_options(span: str) -> frozenset[str] | None:
    """The option letters a span gives, by the priority in the module docstring."""
    text = normalize(span)
    bare = _OPTION_NOISE.sub("", text)
    if _BARE_OPTIONS.fullmatch(bare):
        return frozenset(bare)
    for pattern in (_MARKED_OPTIONS, _BRACKETED_OPTION):
        found = pattern.findall(text)
        if found:
            return frozenset(ch for ch in found[-1] if "A" <= ch <= "G")
    found = _LONE_OPTION.findall(text)
    return frozenset(found[-1]) if found else None


def extract_option_groups(span: str) -> list[frozenset[str]]:
    """One set of letters per sub-question answer a span gives, in order (module docstring)."""
    text = normalize(span)
    marked = _MARKED_OPTIONS.findall(text)
    if marked:  # "答案：B C" holds two answers, "（1）答案B（2）答案C" too
        runs = [group for run in marked for group in _GROUP_SEPARATORS.split(run)]
    else:
        runs = _WORDLESS_RUN.findall(text)
    return [frozenset(run) for run in runs]


def _parse_number(token: str) -> Fraction | None:
    numerator, _, denominator = token.replace(",", "").replace(" ", "").partition("/")
    try:
        value = Fraction(numerator)
        return value / Fraction(denominator) if denominator else value
    except ZeroDivisionError:  # "3/0" reads as no number
        return None


def numbers_in(text: str) -> list[Fraction]:
    """Every number in text, in order, as an exact fraction."""
    text = _LATEX_FRAC.sub(r"\1/\2", normalize(text))
    values = (_parse_number(m.group()) for m in _NUMBER.finditer(text))
    return [value for value in values if value is not None]


def _plain_text(text: str) -> str:
    """Text as compared: no whitespace, $ signs, final full stops or \\boxed{} around it; folded case."""
    text = _TEXT_TRAILER.sub("", "".join(normalize(text).replace("$", "").split()))
    boxed = _BOXED.fullmatch(text)
    return (_TEXT_TRAILER.sub("", boxed.group(1)) if boxed else text).casefold()


def answers_match(span: str, gold: str) -> bool:
    """Whether the answer span matches gold: by option letters, number or text (module docstring)."""
    options = gold_options(gold)
    if options is not None and len(options) == 1:
        return extract_options(span) == options[0]
    if options is not None:  # sub-questions: in order, each a set
        return tuple(extract_option_groups(span)) == options
    gold_numbers = numbers_in(gold)
    if len(gold_numbers) == 1:
        found = numbers_in(span)
        if not found:
            return False
        target = gold_numbers[0]
        return abs(found[-1] - target) <= TOLERANCE * max(1, abs(target))
    return _plain_text(span) == _plain_text(gold) != ""
