"""Word problems of the demo world, each with its solution steps and gold answer.

Each maker returns (question, steps, answer). The first step restates the
question's facts word for word, and every calculation is written "a+b=c" (no
spaces) right after the clause that names its numbers: copying what was just
read is what a tiny model learns first, so the steps lean on it. Every number
written in digits is at most MAX_NUMBER (20), one token each in the shipped
tokenizer (see world.py). reason.py turns them into r1 records (thinking and
answer), pretrain.py into worked exercises.
"""
from __future__ import annotations

import random
from typing import Callable

from .world import CHARACTERS, COUNTABLES, MAX_NUMBER, MENU, OUTINGS, WEEKDAYS, Character

Problem = tuple[str, list[str], str]  # question, think steps, gold answer
LETTERS = "ABCD"


def _two(rng: random.Random) -> tuple[Character, Character]:
    a, b = rng.sample(CHARACTERS, 2)
    return a, b


def add_gift(rng: random.Random) -> Problem:
    (a, b), (thing, m) = _two(rng), rng.choice(COUNTABLES)
    x = rng.randint(2, MAX_NUMBER - 2)
    y = rng.randint(2, MAX_NUMBER - x)
    facts, ask = rng.choice((("{a}有{x}{m}{t}，{b}又送给{p}{y}{m}。", "{a}现在一共有多少{m}{t}？"),
                             ("{a}原来有{x}{m}{t}，后来{b}又给了{p}{y}{m}。", "现在{a}有几{m}{t}？")))
    facts, ask = (t.format(a=a.name, b=b.name, p=a.pronoun, x=x, y=y, m=m, t=thing) for t in (facts, ask))
    steps = [facts, f"东西变多了，用加法：{x}+{y}={x + y}。", f"所以{a.name}现在有{x + y}{m}{thing}。"]
    return facts + ask, steps, str(x + y)


def take_away(rng: random.Random) -> Problem:
    (a, b), (thing, m) = _two(rng), rng.choice(COUNTABLES)
    x = rng.randint(5, MAX_NUMBER)
    y = rng.randint(1, x - 1)
    how = rng.choice((f"送给{b.name}", "弄丢", "用掉"))
    facts = f"{a.name}有{x}{m}{thing}，{how}了{y}{m}。"
    steps = [facts, f"东西变少了，用减法：{x}-{y}={x - y}。", f"所以{a.name}还剩{x - y}{m}{thing}。"]
    return facts + f"{a.name}还剩多少{m}{thing}？", steps, str(x - y)


def boxes(rng: random.Random) -> Problem:
    a, (thing, m) = rng.choice(CHARACTERS), rng.choice(COUNTABLES)
    x = rng.randint(2, 10)
    y = rng.randint(2, min(9, MAX_NUMBER // x))
    facts = f"每个盒子里有{x}{m}{thing}，{a.name}有{y}个盒子。"
    steps = [facts, f"每个盒子一样多，用乘法：{x}×{y}={x * y}。", f"所以{a.name}一共有{x * y}{m}{thing}。"]
    return facts + f"{a.name}一共有多少{m}{thing}？", steps, str(x * y)


def shopping(rng: random.Random) -> Problem:
    a, food = rng.choice(CHARACTERS), rng.choice(list(MENU))
    price, m = MENU[food]
    k = rng.randint(2, min(8, MAX_NUMBER // price))
    cost = price * k
    money = cost + rng.randint(0, MAX_NUMBER - cost)
    facts = f"{a.name}有{money}枚金币。一{m}{food}要{price}枚金币，{a.name}买了{k}{m}{food}。"
    steps = [facts, f"先算花了多少金币：{price}×{k}={cost}。", f"再算还剩多少：{money}-{cost}={money - cost}。",
             f"所以{a.name}还剩{money - cost}枚金币。"]
    return facts + f"{a.name}还剩多少枚金币？", steps, str(money - cost)


def three_days(rng: random.Random) -> Problem:
    a, trip = rng.choice(CHARACTERS), rng.choice(OUTINGS)
    x, y, z = (rng.randint(1, MAX_NUMBER // 3) for _ in range(3))
    v, m = trip.verb, trip.measure
    facts = f"{a.name}星期一{v}{x}{m}{trip.thing}，星期二{v}{y}{m}，星期三{v}{z}{m}。"
    steps = [facts, f"先把星期一和星期二加起来：{x}+{y}={x + y}。", f"再加上星期三的：{x + y}+{z}={x + y + z}。",
             f"所以三天一共{v}{x + y + z}{m}{trip.thing}。"]
    return facts + f"三天一共{v}多少{m}{trip.thing}？", steps, str(x + y + z)


def difference(rng: random.Random) -> Problem:
    (a, b), (thing, m) = _two(rng), rng.choice(COUNTABLES)
    y = rng.randint(1, MAX_NUMBER - 10)
    x = y + rng.randint(1, MAX_NUMBER - y)
    facts = f"{a.name}有{x}{m}{thing}，{b.name}有{y}{m}{thing}。"
    steps = [facts, f"求多多少，用减法：{x}-{y}={x - y}。", f"所以{a.name}比{b.name}多{x - y}{m}。"]
    return facts + f"{a.name}比{b.name}多多少{m}？", steps, str(x - y)


def share(rng: random.Random) -> Problem:
    a, (thing, m) = rng.choice(CHARACTERS), rng.choice(COUNTABLES)
    k = rng.randint(2, 6)
    each = rng.randint(2, min(10, MAX_NUMBER // k))
    n = k * each
    facts = f"{a.name}有{n}{m}{thing}，平均分给{k}个朋友。"
    steps = [facts, f"平均分用除法，找一个数乘以{k}等于{n}：{k}×{each}={n}，所以{n}÷{k}={each}。", f"每个朋友分到{each}{m}{thing}。"]
    return facts + f"每个朋友分到几{m}？", steps, str(each)


def chain_compare(rng: random.Random) -> Problem:
    a, b, c = rng.sample(CHARACTERS, 3)
    thing, m = rng.choice(COUNTABLES)
    x = rng.randint(3, MAX_NUMBER - 10)
    y = rng.randint(1, min(20, MAX_NUMBER - x))
    z = rng.randint(1, x + y - 1)
    facts = f"{a.name}有{x}{m}{thing}，{b.name}比{a.name}多{y}{m}，{c.name}比{b.name}少{z}{m}。"
    steps = [facts, f"先算{b.name}有多少：{x}+{y}={x + y}。", f"再算{c.name}有多少：{x + y}-{z}={x + y - z}。",
             f"所以{c.name}有{x + y - z}{m}{thing}。"]
    return facts + f"{c.name}有多少{m}{thing}？", steps, str(x + y - z)


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
    nums = rng.sample(range(1, MAX_NUMBER + 1), 4)
    want_max = rng.random() < 0.5
    best = max(nums) if want_max else min(nums)
    word = "最大" if want_max else "最小"
    letter = LETTERS[nums.index(best)]
    listing = "\n".join(f"{L}：{n}" for L, n in zip(LETTERS, nums))  # "A. 38" would split 38 into " 3" "8"
    q = f"下面哪个数{word}？\n{listing}"
    steps = ["四个选项是：" + "，".join(f"{L}：{n}" for L, n in zip(LETTERS, nums)) + "。",
             f"{'、'.join(map(str, nums))}里面{word}的是{best}。", f"{best}是选项{letter}。"]
    return q, steps, letter


def weekday_after(rng: random.Random) -> Problem:
    i, n = rng.randrange(7), rng.randint(1, MAX_NUMBER)
    weeks, rest = divmod(n, 7)
    answer = WEEKDAYS[(i + rest) % 7]
    choices, letter = _options(rng, answer, list(WEEKDAYS))
    listing = "\n".join(f"{L}. {c}" for L, c in zip(LETTERS, choices))
    q = f"今天是{WEEKDAYS[i]}。再过{n}天是星期几？\n{listing}"
    steps = [f"一个星期有7天，每过7天又是{WEEKDAYS[i]}。",
             f"{n}天里有{weeks}个整星期：7×{weeks}={7 * weeks}，{n}-{7 * weeks}={rest}。",
             f"从{WEEKDAYS[i]}往后数{rest}天是{answer}。", f"{answer}是选项{letter}。"]
    return q, steps, letter


# Every kind of problem, with how often it is drawn.
PROBLEMS: tuple[tuple[Callable[[random.Random], Problem], int], ...] = (
    (add_gift, 3), (take_away, 3), (boxes, 2), (shopping, 2), (three_days, 2), (difference, 2),
    (share, 2), (chain_compare, 2), (counting, 2), (biggest, 2), (weekday_after, 2),
)


def problem(rng: random.Random) -> Problem:
    makers, weights = zip(*PROBLEMS)
    return rng.choices(makers, weights)[0](rng)
