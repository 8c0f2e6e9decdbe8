"""Reasoning problems (r1) and preference pairs (dpo) for the demo corpus.

r1: word problems set in the demo world, each with a gold answer (a number or
an option letter) so that accuracy can be measured. The assistant thinks in
small steps, writing every calculation as "a op b = c", then answers:

    <think>\\n...steps...\\n</think>\\n<answer>\\n12\\n</answer>

Each problem maker returns (question, steps, answer). Numbers stay small
(results under 200) so the steps are within a tiny model's reach.

r1_test: the held-out problems for measuring format compliance and accuracy,
drawn from their own random stream and never equal to a training question
(see r1_test_records).

dpo: MiniMind's {"chosen": [msgs], "rejected": [msgs]} — the same conversation
ending in a right answer or in a wrong or unhelpful one.
"""
from __future__ import annotations

import random
from typing import Callable, Iterator

from .chat import UNHELPFUL, ask, to_messages
from .world import (CHARACTERS, COUNTABLES, MENU, OUTINGS, WEEKDAYS, Character, pick_other)

Problem = tuple[str, list[str], str]  # question, think steps, gold answer
LETTERS = "ABCD"


def _two(rng: random.Random) -> tuple[Character, Character]:
    a, b = rng.sample(CHARACTERS, 2)
    return a, b


def add_gift(rng: random.Random) -> Problem:
    (a, b), (thing, m) = _two(rng), rng.choice(COUNTABLES)
    x, y = rng.randint(2, 50), rng.randint(2, 50)
    q = rng.choice(("{a}有{x}{m}{t}，{b}又送给{p}{y}{m}。{a}现在一共有多少{m}{t}？",
                    "{a}原来有{x}{m}{t}，后来{b}又给了{p}{y}{m}。现在{a}有几{m}{t}？"))
    steps = [f"{a.name}原来有{x}{m}{thing}。", f"{b.name}又给了{y}{m}，东西变多了，用加法。",
             f"{x} + {y} = {x + y}。", f"所以{a.name}现在有{x + y}{m}{thing}。"]
    return q.format(a=a.name, b=b.name, p=a.pronoun, x=x, y=y, m=m, t=thing), steps, str(x + y)


def take_away(rng: random.Random) -> Problem:
    (a, b), (thing, m) = _two(rng), rng.choice(COUNTABLES)
    x = rng.randint(5, 60)
    y = rng.randint(1, x - 1)
    how = rng.choice((f"送给{b.name}", "弄丢", "用掉"))
    q = f"{a.name}有{x}{m}{thing}，{how}了{y}{m}。{a.name}还剩多少{m}{thing}？"
    steps = [f"原来有{x}{m}，{how}了{y}{m}，东西变少了，用减法。", f"{x} - {y} = {x - y}。",
             f"所以{a.name}还剩{x - y}{m}{thing}。"]
    return q, steps, str(x - y)


def boxes(rng: random.Random) -> Problem:
    a, (thing, m) = rng.choice(CHARACTERS), rng.choice(COUNTABLES)
    x, y = rng.randint(2, 12), rng.randint(2, 9)
    q = f"每个盒子里有{x}{m}{thing}，{a.name}有{y}个盒子。{a.name}一共有多少{m}{thing}？"
    steps = [f"每个盒子有{x}{m}，一共有{y}个盒子，用乘法。", f"{x} × {y} = {x * y}。",
             f"所以{a.name}一共有{x * y}{m}{thing}。"]
    return q, steps, str(x * y)


def shopping(rng: random.Random) -> Problem:
    a, food = rng.choice(CHARACTERS), rng.choice(list(MENU))
    (price, m), k = MENU[food], rng.randint(2, 8)
    cost = price * k
    money = cost + rng.randint(0, 30)
    q = f"{a.name}有{money}枚金币。一{m}{food}要{price}枚金币，{a.name}买了{k}{m}{food}。{a.name}还剩多少枚金币？"
    steps = [f"先算买{food}花了多少金币：{price} × {k} = {cost}。", f"再算还剩多少：{money} - {cost} = {money - cost}。",
             f"所以{a.name}还剩{money - cost}枚金币。"]
    return q, steps, str(money - cost)


def three_days(rng: random.Random) -> Problem:
    a, trip = rng.choice(CHARACTERS), rng.choice(OUTINGS)
    x, y, z = (rng.randint(1, 30) for _ in range(3))
    v, m = trip.verb, trip.measure
    q = f"{a.name}星期一{v}{x}{m}{trip.thing}，星期二{v}{y}{m}，星期三{v}{z}{m}。三天一共{v}多少{m}{trip.thing}？"
    steps = [f"先把星期一和星期二加起来：{x} + {y} = {x + y}。", f"再加上星期三的：{x + y} + {z} = {x + y + z}。",
             f"所以三天一共{v}{x + y + z}{m}{trip.thing}。"]
    return q, steps, str(x + y + z)


def difference(rng: random.Random) -> Problem:
    (a, b), (thing, m) = _two(rng), rng.choice(COUNTABLES)
    y = rng.randint(1, 40)
    x = y + rng.randint(1, 30)
    q = f"{a.name}有{x}{m}{thing}，{b.name}有{y}{m}{thing}。{a.name}比{b.name}多多少{m}？"
    steps = [f"{a.name}有{x}{m}，{b.name}有{y}{m}，求多多少用减法。", f"{x} - {y} = {x - y}。",
             f"所以{a.name}比{b.name}多{x - y}{m}。"]
    return q, steps, str(x - y)


def share(rng: random.Random) -> Problem:
    a, (thing, m) = rng.choice(CHARACTERS), rng.choice(COUNTABLES)
    k, each = rng.randint(2, 6), rng.randint(2, 10)
    n = k * each
    q = f"{a.name}有{n}{m}{thing}，平均分给{k}个朋友。每个朋友分到几{m}？"
    steps = [f"平均分用除法，要找一个数，乘以{k}等于{n}。", f"{k} × {each} = {n}。", f"所以{n} ÷ {k} = {each}。",
             f"每个朋友分到{each}{m}{thing}。"]
    return q, steps, str(each)


def chain_compare(rng: random.Random) -> Problem:
    a, b, c = rng.sample(CHARACTERS, 3)
    thing, m = rng.choice(COUNTABLES)
    x, y = rng.randint(3, 40), rng.randint(1, 20)
    z = rng.randint(1, x + y - 1)
    q = (f"{a.name}有{x}{m}{thing}，{b.name}比{a.name}多{y}{m}，{c.name}比{b.name}少{z}{m}。"
         f"{c.name}有多少{m}{thing}？")
    steps = [f"先算{b.name}有多少：{x} + {y} = {x + y}。", f"再算{c.name}有多少：{x + y} - {z} = {x + y - z}。",
             f"所以{c.name}有{x + y - z}{m}{thing}。"]
    return q, steps, str(x + y - z)


def counting(rng: random.Random) -> Problem:
    (target, m), (other, _), (third, _) = rng.sample(COUNTABLES, 3)
    n, total = rng.randint(1, 6), rng.randint(7, 12)
    items = [target] * n + [rng.choice((other, third)) for _ in range(total - n)]
    rng.shuffle(items)
    where = [str(i + 1) for i, x in enumerate(items) if x == target]
    q = f"篮子里有这些东西：{'、'.join(items)}。篮子里有几{m}{target}？"
    steps = [f"把{target}一个一个找出来：第{'、'.join(where)}个是{target}。",
             f"数一数：{'、'.join(str(i) for i in range(1, n + 1))}。", f"一共有{n}{m}{target}。"]
    return q, steps, str(n)


def _options(rng: random.Random, right: str, pool: list[str]) -> tuple[list[str], str]:
    """Four choices with the right one at a random place, and its letter."""
    choices = rng.sample([p for p in pool if p != right], 3) + [right]
    rng.shuffle(choices)
    return choices, LETTERS[choices.index(right)]


def biggest(rng: random.Random) -> Problem:
    nums = rng.sample(range(1, 100), 4)
    want_max = rng.random() < 0.5
    best = max(nums) if want_max else min(nums)
    word = "最大" if want_max else "最小"
    letter = LETTERS[nums.index(best)]
    listing = "\n".join(f"{L}. {n}" for L, n in zip(LETTERS, nums))
    q = f"下面哪个数{word}？\n{listing}"
    steps = ["四个选项是：" + "，".join(f"{L} 是 {n}" for L, n in zip(LETTERS, nums)) + "。",
             f"{'、'.join(map(str, nums))} 里面{word}的是 {best}。", f"{best} 是选项 {letter}。"]
    return q, steps, letter


def weekday_after(rng: random.Random) -> Problem:
    i, n = rng.randrange(7), rng.randint(1, 30)
    weeks, rest = divmod(n, 7)
    answer = WEEKDAYS[(i + rest) % 7]
    choices, letter = _options(rng, answer, list(WEEKDAYS))
    listing = "\n".join(f"{L}. {c}" for L, c in zip(LETTERS, choices))
    q = f"今天是{WEEKDAYS[i]}。再过{n}天是星期几？\n{listing}"
    steps = [f"一个星期有7天，每过7天又是{WEEKDAYS[i]}。",
             f"{n}天里有{weeks}个整星期：7 × {weeks} = {7 * weeks}，{n} - {7 * weeks} = {rest}。",
             f"从{WEEKDAYS[i]}往后数{rest}天是{answer}。", f"{answer}是选项 {letter}。"]
    return q, steps, letter


# Every kind of problem, with how often it is drawn.
PROBLEMS: tuple[tuple[Callable[[random.Random], Problem], int], ...] = (
    (add_gift, 3), (take_away, 3), (boxes, 2), (shopping, 2), (three_days, 2), (difference, 2),
    (share, 2), (chain_compare, 2), (counting, 2), (biggest, 2), (weekday_after, 2),
)


def r1_reply(steps: list[str], answer: str) -> str:
    return "<think>\n" + "\n".join(steps) + "\n</think>\n<answer>\n" + answer + "\n</answer>"


def problem(rng: random.Random) -> Problem:
    makers, weights = zip(*PROBLEMS)
    return rng.choices(makers, weights)[0](rng)


def r1_record(rng: random.Random) -> dict:
    q, steps, answer = problem(rng)
    return {"conversations": [{"role": "user", "content": q},
                              {"role": "assistant", "content": r1_reply(steps, answer)}],
            "answer": answer}


def r1_test_records(rng: random.Random, n: int, train_questions: set[str]) -> Iterator[dict]:
    """n r1 records whose questions are all new: none is in train_questions, none repeats.
    A held-out problem that also appears in training would measure memory, not reasoning."""
    seen, made, tries = set(train_questions), 0, 0
    while made < n:
        tries += 1
        if tries > 100 * n + 10_000:  # the problem space is large, but not endless
            raise ValueError(f"found only {made} held-out problems not in the training set; ask for fewer")
        record = r1_record(rng)
        question = record["conversations"][0]["content"]
        if question in seen:
            continue
        seen.add(question)
        made += 1
        yield record


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
