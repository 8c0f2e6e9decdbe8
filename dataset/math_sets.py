"""The raw math sets users bring most, recognised by their keys, with their gold answers.

  GSM8K    {"question", "answer"}: the answer is a worked solution ending "#### 72";
           the gold is the number after ####, thousands commas dropped ("1,080" -> "1080").
  Ape210K  {"id", "segmented_text", "original_text", "ans", "equation"}: the gold is ans.
  CMATH    {"grade", "input" (or "question"), "golden", ...}: the gold is golden.

Ape210K's ans comes in several shapes, checked on its test and valid files: a number
("2", "56.52"), a fraction in brackets ("(1/10)"), a percentage ("150%", "62.5%"), a
mixed number ("4(5/11)" = 4 + 5/11) and, in about 1 in 200, a sum left unworked
("100-15", "1800/(1+20%)"). The project's one matcher (common/reasoning.py) compares
numbers when the gold holds exactly one, and a mixed number or a sum holds several, so
gold_value() writes every shape as one number: kept as written when it already is one
(brackets and commas dropped: "1/10", "150%"), else worked out exactly ("49/11", "85").

GRPO reads all three as they are (dataset/problems.py). Their replies are not reasoning
data (GSM8K's solution has no <think>, Ape210K has an equation and no reply, CMATH no
reply at all), so the chat readers refuse them, naming the command that converts
GSM8K and Ape210K (convert_hint()) or, for CMATH, grpo.py.
"""
from __future__ import annotations

import ast
import operator
import re
from fractions import Fraction
from typing import Any

from .streaming import ChatFormatError

APE210K_KEYS = frozenset({"original_text", "ans"})
QUESTION_KEYS = {"gsm8k": "question", "ape210k": "original_text"}  # CMATH: "input", or "question"
_GSM8K_FINAL = re.compile(r"####\s*(-?[\d,]*\.?\d+)\s*$")
# One number as written: digits (thousands commas allowed), decimals, a fraction, a percent sign.
_ONE_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+(?:\.\d+)?)?%?|-?\.\d+%?")
_MIXED = re.compile(r"(?<![\d.)])(\d+)\((\d+)/(\d+)\)")  # 4(5/11): four and five elevenths
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)%")
_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def raw_set(record: Any) -> str | None:
    """'gsm8k', 'ape210k' or 'cmath' for a record of a raw set, else None."""
    if not isinstance(record, dict):
        return None
    if APE210K_KEYS <= set(record):
        return "ape210k"
    if "golden" in record and ("input" in record or "question" in record):
        return "cmath"
    answer = record.get("answer")
    if "question" in record and isinstance(answer, str) and _GSM8K_FINAL.search(answer):
        return "gsm8k"
    return None


def convert_hint(name: str, path: object) -> str:
    """The one command that turns a raw file of this set into R1 reasoning data."""
    return f"python -m dataset.convert --preset {name} --data_path {path}"


def _evaluate(node: ast.AST) -> Fraction:
    """An arithmetic expression of numbers, + - * / and brackets, worked out exactly."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return Fraction(repr(node.value))  # repr keeps 0.35 as written, not its binary float
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    raise ValueError("not arithmetic")


def _written(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def gold_value(answer: str) -> str:
    """A math answer as one number (see the module docstring); ChatFormatError if it is no arithmetic."""
    text = answer.strip()
    while text.startswith("(") and text.endswith(")") and _ONE_NUMBER.fullmatch(text[1:-1].strip()):
        text = text[1:-1].strip()
    if _ONE_NUMBER.fullmatch(text):
        return text.replace(",", "")
    expression = _PERCENT.sub(r"(\1/100)", _MIXED.sub(r"(\1+\2/\3)", text.replace(",", "")))
    try:
        return _written(_evaluate(ast.parse(expression, mode="eval")))
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        raise ChatFormatError(f"the answer {answer!r} is neither a number nor arithmetic that gives one",
                              "not a number") from None


def raw_problem(record: dict, name: str) -> tuple[str, str]:
    """(question, gold) of a raw GSM8K, Ape210K or CMATH record; ChatFormatError when either is missing."""
    question_key = QUESTION_KEYS.get(name) or ("input" if "input" in record else "question")
    question = record.get(question_key)
    if not isinstance(question, str) or not question.strip():
        raise ChatFormatError(f'the question ("{question_key}") is missing or empty', "empty question")
    if name == "gsm8k":
        return question.strip(), gold_value(_GSM8K_FINAL.search(record["answer"]).group(1))
    answer_key = "ans" if name == "ape210k" else "golden"
    answer = record.get(answer_key)
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str) or not answer.strip():
        raise ChatFormatError(f'the answer ("{answer_key}") is missing or empty', "no gold answer")
    return question.strip(), gold_value(answer)
