"""Reasoning problems (r1) and preference pairs (dpo) for the demo corpus.

r1: the word problems of word_problems.py, each with a gold answer (a number or
an option letter) so that accuracy can be measured. The assistant thinks in the
problem's steps, then answers:

    <think>\\n...steps...\\n</think>\\n<answer>\\n12\\n</answer>

In r1, about half the replies skip the working (DIRECT_SHARE, below); the
held-out splits always show it, as references.

r1_test: the held-out problems for measuring format compliance and accuracy,
drawn from their own random stream and never equal to a training question
(held_out_records); r1_val, the same for choosing settings; dpo_test, held-out
preference pairs.

dpo: MiniMind's {"chosen": [msgs], "rejected": [msgs]} — the same conversation
ending in a right answer or in a wrong or unhelpful one.
"""
from __future__ import annotations

import json
import random
import zlib
from typing import Callable, Iterator

from .chat import UNHELPFUL, ask, to_messages
from .word_problems import LETTERS, problem
from .world import pick_other


def r1_reply(steps: list[str], answer: str) -> str:
    return "<think>\n" + "\n".join(steps) + "\n</think>\n<answer>\n" + answer + "\n</answer>"


# The demo's teacher is always right, but in a share of its traces it skips the working
# and writes only the answer, as answer keys and hurried annotators do. The distilled
# model imitates both habits; a tiny model that answers straight away is mostly wrong,
# one that works it out is right far more often, so sampling already finds the better
# habit and RL with a correctness reward has something to sharpen (docs/post_training.md).
DIRECT_SHARE = 0.5
DIRECT_STEP = "这题不用算，直接写答案。"


def skips_working(question: str) -> bool:
    """Whether the teacher answers this question without working: a fixed hash of the text,
    not the record's random stream, so the held-out questions stay the same whatever the share."""
    return zlib.crc32(question.encode("utf-8")) % 1000 < DIRECT_SHARE * 1000


def r1_record(rng: random.Random) -> dict:
    """A problem with the teacher's worked solution (the held-out splits: their replies are references)."""
    q, steps, answer = problem(rng)
    return {"conversations": [{"role": "user", "content": q},
                              {"role": "assistant", "content": r1_reply(steps, answer)}],
            "answer": answer}


def r1_train_record(rng: random.Random) -> dict:
    """A training problem as the teacher answered it: worked, or straight away (skips_working)."""
    record = r1_record(rng)
    question, answer = record["conversations"][0]["content"], record["answer"]
    if skips_working(question):
        record["conversations"][1]["content"] = r1_reply([DIRECT_STEP], answer)
    return record


def held_out_records(make: Callable[[random.Random], dict], key: Callable[[dict], str], rng: random.Random,
                     n: int, seen: set[str]) -> Iterator[dict]:
    """n records whose key is new: none is in seen (the training set's keys), none repeats.
    A held-out problem that also appears in training would measure memory, not reasoning."""
    seen, made, tries = set(seen), 0, 0
    while made < n:
        tries += 1
        if tries > 100 * n + 10_000:  # the space of records is large, but not endless
            raise ValueError(f"found only {made} held-out records not in the training set; ask for fewer")
        record = make(rng)
        if key(record) in seen:
            continue
        seen.add(key(record))
        made += 1
        yield record


def question_of(record: dict) -> str:
    """An r1 record's key: its question."""
    return record["conversations"][0]["content"]


def pair_of(record: dict) -> str:
    """A dpo record's key: the whole pair (the demo world is small, so its questions recur;
    a held-out pair is a new pairing of a prompt with its chosen and rejected replies)."""
    return json.dumps([record["chosen"], record["rejected"]], ensure_ascii=False)


def _wrong_answer(rng: random.Random, answer: str) -> str:
    """Another option letter, or the number a little off (never below zero)."""
    if not answer.isdigit():
        return pick_other(rng, list(LETTERS), answer)
    n = int(answer)
    return str(n + rng.choice((-3, -2, -1, 1, 2, 3)) if n > 3 else n + rng.randint(1, 3))


def dpo_record(rng: random.Random) -> dict:
    """A preference pair: most are questions about the world (the wrong fact, or no help at all);
    one in six is a reasoning problem whose rejected reply skips the thinking and gets it wrong."""
    if rng.random() < 1 / 6:
        q, steps, answer = problem(rng)
        prompt = [{"role": "user", "content": q}]
        chosen = r1_reply(steps, answer)
        rejected = rng.choice((_wrong_answer(rng, answer), r1_reply(["我猜一下。"], _wrong_answer(rng, answer))))
    else:
        qa = ask(rng)
        prompt = to_messages([ask(rng)]) if rng.random() < 0.2 else []  # some pairs follow an earlier turn
        prompt.append({"role": "user", "content": qa.question})
        chosen, rejected = qa.answer, qa.wrong if rng.random() < 0.7 else rng.choice(UNHELPFUL)
    return {"chosen": prompt + [{"role": "assistant", "content": chosen}],
            "rejected": prompt + [{"role": "assistant", "content": rejected}]}
