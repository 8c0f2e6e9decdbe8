"""Math word problems for the report, in the three forms users have (--math_file).

  GSM8K     {"question", "answer"}: the gold is what follows '#### ' in answer
  Ape210K   {"original_text" or "question", "ans" or "equation"}: the gold is ans;
            with no ans, the value of the equation's right side ("x=(11-1)*3" -> 30)
  R1        anything dataset/problems.py's iter_problems reads (the demo's r1 files,
            `python -m dataset.convert` output): a conversation and its gold

The first record decides the form. Each problem becomes one user turn (R1: its own
prompt turns); a record that does not fit is a DataError naming file:line. These
small readers live here so the report does not depend on the converters.
"""
from __future__ import annotations

import ast
import operator
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from dataset.problems import iter_problems
from dataset.readers import DataError, iter_records


@dataclass(frozen=True)
class MathProblem:
    where: str            # file:line
    prompt: list[dict]    # messages, ending with the user's turn
    gold: str


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos}


def _value(node: ast.AST) -> Fraction:
    """Exact value of + - * / ** on numbers; ValueError for anything else (no eval of user text)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return Fraction(str(node.value))
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow) and (right.denominator != 1 or abs(right) > 64):
            raise ValueError("unsupported power")
        return _OPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_value(node.operand))
    raise ValueError("not arithmetic")


def equation_value(equation: str) -> str:
    """The right side of Ape210K's 'x=...' as a number string ('x=(11-1)*3' -> '30', '1/3' stays a fraction)."""
    rhs = equation.split("=", 1)[-1].replace("%", "/100").replace("^", "**").replace("[", "(").replace("]", ")")
    try:
        value = _value(ast.parse(rhs.strip(), mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError):
        raise ValueError(f"cannot compute the equation {equation!r}") from None
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def detect_math_form(record: object) -> str:
    if isinstance(record, dict) and ("original_text" in record or ("question" in record and
                                                                    ("ans" in record or "equation" in record))):
        return "ape210k"
    if isinstance(record, dict) and isinstance(record.get("question"), str) and "####" in str(record.get("answer")):
        return "gsm8k"
    return "r1"


def _question_gold(record: object, form: str) -> tuple[str, str]:
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object")
    question = record.get("question") if form == "gsm8k" else record.get("original_text", record.get("question"))
    if not isinstance(question, str) or not question.strip():
        raise ValueError("no question text")
    if form == "gsm8k":
        answer = str(record.get("answer", ""))
        if "####" not in answer:
            raise ValueError("the answer has no '#### gold' line")
        return question.strip(), answer.rsplit("####", 1)[1].strip()
    if str(record.get("ans", "")).strip():
        return question.strip(), str(record["ans"]).strip()
    if isinstance(record.get("equation"), str):
        return question.strip(), equation_value(record["equation"])
    raise ValueError("no 'ans' and no 'equation'")


def iter_math(path: str | Path, max_samples: int | None = None) -> Iterator[MathProblem]:
    path = Path(path)
    first = next(iter_records(path), None)
    if first is None:
        raise DataError(f"{path}: no problem in the file")
    form = detect_math_form(first[1])
    if form == "r1":
        source = ((p.where, p.prompt, p.gold) for p in iter_problems(path))
    else:
        source = _plain_problems(path, form)
    for count, (where, prompt, gold) in enumerate(source, 1):
        yield MathProblem(where, prompt, gold)
        if max_samples is not None and count >= max_samples:
            return


def _plain_problems(path: Path, form: str) -> Iterator[tuple[str, list[dict], str]]:
    for line, record in iter_records(path):
        try:
            question, gold = _question_gold(record, form)
        except ValueError as e:
            raise DataError(f"{path}:{line}: {e} ({form} form, decided by the first record)") from None
        yield f"{path}:{line}", [{"role": "user", "content": question}], gold
