"""Turn any question / analysis / answer dataset into R1 training data.

    python -m dataset.convert INPUT... --out out/r1/NAME.jsonl --question FIELD --think FIELD --answer FIELD
    python -m dataset.convert ../shared/data/gsm8k/train.jsonl --preset gsm8k
    python -m dataset.convert --preset ape210k --data_path ../shared/data/ape210k/valid.ape.json

Every input record becomes one line of MiniMind's R1 shape,

    {"conversations": [{"role": "user", "content": QUESTION},
                       {"role": "assistant", "content": "<think>\\n…\\n</think>\\n<answer>\\n…\\n</answer>"}],
     "answer": GOLD}

with the reply in the one canonical form of dataset/reasoning.py, and "answer"
the gold answer (--gold) or else the reply's own answer, for evaluation.

The field map says where each part is. A FIELD is a key, or a dotted path into
nested objects and lists ("solution.steps", "choices.0"):
  --question   the question; --options adds a list of choices under it as "A. …" lines
  --think      the reasoning (a list of strings is joined by newlines)
  --answer     the final answer (a list is joined by spaces: ["B", "C"] -> "B C")
  --answer_split SEP   instead of --think: the answer field holds the steps, then SEP,
               then the final answer (GSM8K's "#### 18"); it is cut at the last SEP
  neither      the answer field is a whole reply with its own <think> (QA dumps)
  --think_extract RE   keep only group 1 of each match in the reasoning (joined by newlines)
  --think_remove RE    delete every match from the reasoning
  --math_answer        the final answer is one math value, written as one number so the matcher
               compares numbers: thousands commas dropped, Ape210K's "(1/10)" -> "1/10", its
               mixed numbers and unworked sums worked out ("4(5/11)" -> "49/11", "100-15" -> "85");
               see dataset/math_sets.py
  --records FIELD      each input record holds a list of records there (GAOKAO-Bench's "example")
  --gold FIELD         keep only records whose answer matches this field, by the project's one
               matcher, answers_match of evaluation/reasoning_metrics.py (the rules are in its
               docstring), so the filter keeps exactly what evaluation would score correct. A
               list of sub-question answers is joined by spaces (["B", "C", "A"] -> "B C A"),
               which that matcher reads as answers in order (against it, "A B C" is wrong)

Presets fill the field map for the real sets in ../shared/data (flags still win):
  tal-scq5k  problem + answer_option_list, answer_analysis -> think, answer_value -> answer
  gsm8k      question, answer cut at "####"; the <<48/2=24>> calculator notes are removed;
             the answer is the number after #### without thousands commas (--math_answer)
  ape210k    original_text -> question, equation -> think ("x=6000/(1+(3/5))": the only
             working the set has), ans -> answer, as one number (--math_answer)
  gaokao     GAOKAO-Bench GPT-4 objective outputs: the 【解析】 parts of model_output -> think,
             model_answer -> answer, kept only where it matches standard_answer

Records that cannot become a reply (no thinking, an empty answer, broken tags, a
missing field) stop the run with 'file:line: what is wrong', or with --skip_bad
are counted by reason. The output is written to a temporary file and renamed
into place, so a failed run leaves no partial file.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from common.reasoning import answers_match
from .chat_formats import ChatFormatError
from .math_sets import gold_value
from .readers import DataError, SkipStats, expand_paths, iter_records
from .reasoning import normalise_reply, split_reply

OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LABEL_KEYS = ("aoVal", "label", "key", "letter")  # how option lists name their letter ...
_TEXT_KEYS = ("content", "text", "value")          # ... and their text


@dataclass(frozen=True)
class FieldMap:
    """Where each part of an R1 example is in an input record (see the module docstring)."""
    question: str = "question"
    answer: str = "answer"
    think: str | None = None
    options: str | None = None
    answer_split: str | None = None
    think_extract: str | None = None
    think_remove: str | None = None
    records: str | None = None
    gold: str | None = None
    math_answer: bool | None = None


PRESETS: dict[str, FieldMap] = {
    "tal-scq5k": FieldMap(question="problem", options="answer_option_list", think="answer_analysis",
                          answer="answer_value"),
    "gsm8k": FieldMap(question="question", answer="answer", answer_split="####", think_remove=r"<<[^<>]*>>",
                      math_answer=True),
    "ape210k": FieldMap(question="original_text", think="equation", answer="ans", math_answer=True),
    # GPT-4 wrote "【解析】 steps <eoe> 【答案】 B <eoa>"; some records end the steps at 【答案】 instead.
    "gaokao": FieldMap(records="example", question="question", think="model_output", answer="model_answer",
                       think_extract=r"【解析】(.*?)(?:<eoe>|【答案】|\Z)", gold="standard_answer"),
}


# ---------------------------------------------------------------- one record

def get_field(record: Any, path: str) -> Any:
    """record[path], where a dotted path walks into objects and (by index) lists."""
    value = record
    for key in path.split("."):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise ChatFormatError(f'no field "{path}"', "missing field")
    if value is None:
        raise ChatFormatError(f'field "{path}" is null', "missing field")
    return value


def as_text(value: Any, joiner: str, what: str) -> str:
    """A field as text: numbers written out, lists (nested too) joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list):
        return joiner.join(as_text(v, joiner, what) for v in value)
    raise ChatFormatError(f"{what} must be text, a number or a list of them, got {type(value).__name__}",
                          "wrong type")


def render_options(value: Any) -> list[str]:
    """Choices as "A. text" lines. Accepted: a list of strings (lettered in order), an
    object {letter: text}, or a list of objects with a letter and a text key, each
    possibly wrapped in a one-item list (TAL-SCQ5K writes [[{"aoVal", "content"}], ...])."""
    if isinstance(value, dict):
        return [f"{k}. {as_text(v, ' ', 'an option').strip()}" for k, v in sorted(value.items())]
    if not isinstance(value, list) or len(value) > len(OPTION_LETTERS):
        raise ChatFormatError("options must be a list or an object of choices", "wrong type")
    lines = []
    for letter, item in zip(OPTION_LETTERS, value):
        if isinstance(item, list) and len(item) == 1:
            item = item[0]
        if isinstance(item, dict):
            letter = next((str(item[k]) for k in _LABEL_KEYS if k in item), letter)
            item = next((item[k] for k in _TEXT_KEYS if k in item), None)
        lines.append(f"{letter}. {as_text(item, ' ', 'an option').strip()}")
    return lines


def _question(record: Any, fm: FieldMap) -> str:
    question = as_text(get_field(record, fm.question), "\n", "the question").strip()
    if not question:
        raise ChatFormatError(f'the question ("{fm.question}") is empty (or pass --skip_bad to skip such records)',
                              "empty question")
    if fm.options:
        question += "\n" + "\n".join(render_options(get_field(record, fm.options)))
    return question


def _answer(record: Any, fm: FieldMap) -> tuple[str, str | None]:
    """(answer, steps): the answer field, cut at --answer_split into steps and answer."""
    answer = as_text(get_field(record, fm.answer), " ", "the answer")
    if not fm.answer_split:
        return answer, None
    steps, sep, answer = answer.rpartition(fm.answer_split)
    if not sep:
        raise ChatFormatError(f'the answer has no "{fm.answer_split}" before its final answer', "missing separator")
    return answer, steps


def _thinking(record: Any, fm: FieldMap, steps: str | None) -> str:
    """The reasoning: the steps before --answer_split, or the --think field, cleaned."""
    think = steps if steps is not None else as_text(get_field(record, fm.think), "\n", "the thinking")
    if fm.think_extract:
        think = "\n".join(m.strip() for m in re.findall(fm.think_extract, think, re.DOTALL))
        if not think:
            raise ChatFormatError(f'no thinking found by --think_extract in "{fm.think or fm.answer}"',
                                  "no thinking")
    if fm.think_remove:
        think = re.sub(fm.think_remove, "", think)
    return think


def convert_record(record: Any, fm: FieldMap) -> dict | None:
    """One R1 record, or None when --gold is set and the answer does not match it.
    Raises ChatFormatError for a record that cannot be converted. The gold check comes
    before the reasoning is looked at: a wrong answer counts as filtered, not as bad,
    however poor its reasoning."""
    question = _question(record, fm)
    gold = as_text(get_field(record, fm.gold), " ", "the gold answer").strip() if fm.gold else None
    answer, steps = _answer(record, fm)
    whole_reply = not fm.answer_split and not fm.think  # QA dumps: <think> is inside the answer
    if whole_reply:
        reply = normalise_reply(answer)
        answer = split_reply(reply)[1]
    elif fm.math_answer:  # before the gold check and the reply, so both see one number
        answer = gold_value(answer)
    if gold is not None and not answers_match(answer, gold):
        return None
    if not whole_reply:
        reply = normalise_reply(answer, reasoning=_thinking(record, fm, steps))
    return {"conversations": [{"role": "user", "content": question}, {"role": "assistant", "content": reply}],
            "answer": answer.strip() if gold is None else gold}


# ---------------------------------------------------------------- files

def iter_input(paths: Sequence[str | Path], fm: FieldMap, skip: SkipStats | None) -> Iterator[tuple[str, Any]]:
    """(where, record) for every input record, lists under --records expanded."""
    for path in expand_paths(paths):
        for line, record in iter_records(path, skip):
            if not fm.records:
                yield f"{path}:{line}", record
                continue
            items = record.get(fm.records) if isinstance(record, dict) else None
            if not isinstance(items, list):
                where, why = f"{path}:{line}", f'no list of records in "{fm.records}"'
                if skip is None:
                    raise DataError(f"{where}: {why}")
                skip.add("missing field", where)
                continue
            for i, item in enumerate(items):
                yield f"{path}:{line} ({fm.records}[{i}])", item


@dataclass
class Summary:
    read: int = 0
    written: int = 0
    filtered: int = 0
    seconds: float = 0.0

    def line(self, out: Path, skip: SkipStats | None) -> str:
        return (f"read {self.read:,} records, wrote {self.written:,} to {out}; "
                f"{self.filtered:,} filtered out (answer does not match gold); "
                f"{skip.summary() if skip else 'skipped 0 bad records'}; {self.seconds:.1f} s")


def _write_records(f, paths: Sequence[str | Path], fm: FieldMap, skip: SkipStats | None, stats: Summary,
                   show_progress: bool) -> None:
    for where, record in tqdm(iter_input(paths, fm, skip), desc="converting", unit=" records",
                              disable=not show_progress):
        stats.read += 1
        try:
            converted = convert_record(record, fm)
        except ChatFormatError as e:
            if skip is None:
                raise DataError(f"{where}: {e}") from None
            skip.add(e.reason, where)
            continue
        if converted is None:
            stats.filtered += 1
            continue
        f.write(json.dumps(converted, ensure_ascii=False) + "\n")
        stats.written += 1


def convert_files(paths: Sequence[str | Path], out: Path, fm: FieldMap, skip_bad: bool = False,
                  show_progress: bool = True) -> tuple[Summary, SkipStats | None]:
    """Convert every input record into out (written atomically); raises DataError on bad
    input unless skip_bad, and when no record at all could be converted."""
    out = Path(out)
    skip, stats, start = SkipStats() if skip_bad else None, Summary(), time.time()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{out.parent}: cannot create the output folder ({e.strerror or e})") from None
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            _write_records(f, paths, fm, skip, stats, show_progress)
            f.flush()
            os.fsync(f.fileno())
        stats.seconds = time.time() - start
        if stats.written == 0:
            raise DataError(f"no record converted: {stats.line(out, skip)}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return stats, skip


# ---------------------------------------------------------------- command line

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dataset.convert",
                                description="Convert question/analysis/answer data into R1 JSONL.")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="data files or folders (.jsonl, .json, .csv, .parquet)")
    # The stage scripts all take --data_path, so the same flag works here too.
    p.add_argument("--data_path", nargs="+", default=[], metavar="INPUT",
                   help="more inputs, as the stage scripts name them")
    p.add_argument("--out", type=Path, default=None,
                   help="output .jsonl (default out/r1/PRESET.jsonl; required without --preset)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="field map of a known dataset; other flags override it")
    defaults = FieldMap()
    helps = {"question": f"field with the question (default {defaults.question})",
             "answer": f"field with the final answer (default {defaults.answer})",
             "think": "field with the reasoning; without it and --answer_split, the answer holds <think> itself",
             "options": "field with the choices, listed under the question as 'A. ...' lines",
             "answer_split": "instead of --think: cut the answer field at the last SEP into steps and answer",
             "think_extract": "regular expression; the reasoning is group 1 of its matches, joined by newlines",
             "think_remove": "regular expression whose matches are deleted from the reasoning",
             "records": "field holding a list of records inside each input record",
             "gold": "field with the gold answer; keep only records whose answer matches it "
                     "(by evaluation/reasoning_metrics.py's answers_match)"}
    for name, text in helps.items():
        metavar = "SEP" if name == "answer_split" else "REGEX" if name.startswith("think_") else "FIELD"
        p.add_argument(f"--{name}", default=None, metavar=metavar, help=text)
    # store_const, not store_true: None means "not given", so a preset's True is not overridden.
    p.add_argument("--math_answer", action="store_const", const=True, default=None,
                   help="write the final answer as one number (commas dropped, Ape210K's 4(5/11) and sums worked out)")
    p.add_argument("--skip_bad", action="store_true", help="count and skip bad records instead of stopping")
    return p


def field_map(args: argparse.Namespace, parser: argparse.ArgumentParser) -> FieldMap:
    """The preset's map (or the defaults) with every flag given on top."""
    fm = PRESETS[args.preset] if args.preset else FieldMap()
    given = {k: getattr(args, k) for k in asdict(fm) if getattr(args, k) is not None}
    fm = replace(fm, **given)
    if fm.answer_split and fm.think:
        parser.error("--think and --answer_split are two ways to find the reasoning: give one")
    for name in ("think_extract", "think_remove"):
        try:
            re.compile(getattr(fm, name) or "")
        except re.error as e:
            parser.error(f"--{name}: not a valid regular expression ({e})")
    return fm


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    inputs = args.inputs + args.data_path
    if not inputs:
        parser.error("give the data files to convert (INPUT... or --data_path INPUT...)")
    if args.out is None and args.preset is None:
        parser.error("--out is required without --preset")
    out = args.out or Path("out/r1") / f"{args.preset}.jsonl"
    fm = field_map(args, parser)
    try:
        stats, skip = convert_files(inputs, out, fm, skip_bad=args.skip_bad)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(stats.line(out, skip))
    return 0


if __name__ == "__main__":
    sys.exit(main())
