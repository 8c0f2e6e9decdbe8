"""Pretraining paragraphs for the demo corpus: {"text": "..."} records.

A paragraph is a few sentences on one topic — a character's profile, a day
out with a friend, an arithmetic lesson, the days of the week, colours,
counting, a little dialogue, a meal, a worked word problem. Each topic has its own small set of
sentence templates, and every fact comes from world.py, so the same facts
recur in many phrasings: that regularity is what lets a tiny model learn the
world in minutes, and the variety of slots keeps it from simply memorising.
"""
from __future__ import annotations

import random
from typing import Callable

from .world import (BY_NAME, CHARACTERS, FEELINGS, FOODS, OUTINGS, MENU, SEASONS, STORY_CAST,
                         THING_COLORS, TIMES, TOWN, WEATHER, WEEKDAYS, COUNTABLES, Character,
                         MAX_NUMBER, pick_other, residents, join_names, zh_count, zh_number)
from .word_problems import problem


def fill(rng: random.Random, templates: tuple[str, ...], **slots: str) -> str:
    """One of the templates, filled in."""
    return rng.choice(templates).format(**slots)


# ---------------------------------------------------------------- a character's profile

_INTRO = ("{n}是{species}。", "{n}是{species}，住在比奇堡。", "在比奇堡的海底，住着{species}，名叫{n}。",
          "你认识{n}吗？{n}是{species}。")
# One tuple per fact; the subject {s} is the name or, after the first sentence, often the pronoun.
_FACTS: tuple[tuple[str, ...], ...] = (
    ("{s}是{color}的。", "{s}的身体是{color}的。", "{s}全身都是{color}的。"),
    ("{s}住在{home}。", "{s}的家在{home}。", "每天晚上，{s}都回到{home}。"),
    ("{s}每天{work}。", "白天，{s}{work}。", "{s}的工作是{work}。"),
    ("{s}最喜欢{hobby}。", "{s}的爱好是{hobby}。", "有空的时候，{s}喜欢{hobby}。"),
    ("{s}最爱吃{food}。", "{s}最喜欢的食物是{food}。", "只要有{food}，{s}就很开心。"),
    ("{s}最好的朋友是{friend}。", "{s}和{friend}是好朋友。", "{friend}是{s}最好的朋友。"),
    ("{s}很{trait}。", "大家都说{s}很{trait}。"),
)


def character_slots(c: Character, subject: str) -> dict[str, str]:
    return dict(s=subject, n=c.name, species=c.species, color=c.color, home=c.home, work=c.work,
                hobby=c.hobby, food=c.food, friend=c.friend, trait=c.trait)


def profile(rng: random.Random, c: Character | None = None) -> list[str]:
    c = c or rng.choice(CHARACTERS)
    out = [fill(rng, _INTRO, **character_slots(c, c.name))]
    for phrasings in rng.sample(_FACTS, rng.randint(3, len(_FACTS))):
        subject = c.pronoun if rng.random() < 0.5 else c.name
        out.append(fill(rng, phrasings, **character_slots(c, subject)))
    neighbours = residents(c.home)
    if len(neighbours) > 1 and rng.random() < 0.5:
        out.append(f"{join_names(neighbours)}都住在{c.home}。")
    return out


# ---------------------------------------------------------------- a day out

def day_out(rng: random.Random, a: Character | None = None) -> list[str]:
    a = a or BY_NAME[rng.choice(STORY_CAST)]
    b = BY_NAME[pick_other(rng, STORY_CAST, a.name)]
    trip = rng.choice(OUTINGS)
    day, (weather, weather_line) = rng.choice(WEEKDAYS), rng.choice(WEATHER)
    x, y = rng.randint(1, 9), rng.randint(1, 9)
    s = dict(a=a.name, b=b.name, day=day, weather=weather, place=trip.place, act=trip.activity,
             verb=trip.verb, thing=trip.thing, x=zh_count(x, trip.measure), y=zh_count(y, trip.measure),
             t=zh_count(x + y, trip.measure), p=a.pronoun, home=a.home)
    out = [fill(rng, ("{day}的早上，天气是{weather}。", "这一天是{day}，是个{weather}。", "那是一个{weather}，{day}。"), **s),
           weather_line]
    out.append(fill(rng, ("{a}对{b}说：“我们去{place}{act}吧！”{b}说：“好啊！”",
                          "{a}想去{place}{act}，就去找{b}。", "{a}和{b}约好一起去{place}{act}。"), **s))
    if rng.random() < 0.4:  # somebody else on the way, doing what they always do
        c = BY_NAME[rng.choice([n for n in STORY_CAST if n not in (a.name, b.name)])]
        out.append(f"在路上，他们遇到了{c.name}。{c.name}正在{c.hobby}。")
    out.append(fill(rng, ("到了{place}，{a}{verb}{x}{thing}，{b}{verb}{y}{thing}。",
                          "在{place}，{a}{verb}{x}{thing}，{b}也{verb}{y}{thing}。"), **s))
    out.append(fill(rng, ("他们一共{verb}{t}{thing}。", "{x}加{y}，一共是{t}。"), **s))
    out.append(fill(rng, ("天黑了，{a}回到了{home}。", "晚上，{a}高高兴兴地回到了{home}。"), **s))
    out.append(f"{a.pronoun}觉得今天{rng.choice(FEELINGS)}。")
    return out


# ---------------------------------------------------------------- numbers

def _fact(rng: random.Random, op: str, a: int, b: int, c: int) -> str:
    """One arithmetic fact, in words or in digits."""
    words = {"+": "加", "-": "减", "×": "乘以"}[op]
    if rng.random() < 1 / 3:
        return f"{zh_number(a)}{words}{zh_number(b)}等于{zh_number(c)}。"
    return f"{a}{op}{b}={c}。"  # written as the reasoning steps write it (reason.py)


def arithmetic(rng: random.Random) -> list[str]:
    # No character opens a lesson: "海绵宝宝在练习算术" outnumbered "海绵宝宝住在菠萝屋里", and the demo
    # model then continued the README's prompt 海绵宝宝住在 with 练习算术 and a line of sums.
    out = [rng.choice(("我们来学算术。", "今天的算术课上，泡芙老师在黑板上写了几道题。", "算术很有趣。",
                       "我们一起来练习算术。"))]
    for _ in range(rng.randint(5, 9)):  # every number at most MAX_NUMBER, as in the reasoning problems
        op = rng.choice("+-×")
        if op == "×":
            a = rng.randint(1, 9)
            b = rng.randint(1, min(9, MAX_NUMBER // a))
        else:
            a = rng.randint(0, MAX_NUMBER)
            b = rng.randint(0, MAX_NUMBER - a if op == "+" else a)
        out.append(_fact(rng, op, a, b, a + b if op == "+" else a - b if op == "-" else a * b))
    n = rng.randint(1, 98)
    out.append(fill(rng, ("{n}的后面是{m}。", "{m}的前面是{n}。", "{m}比{n}大一。"),
                    n=zh_number(n), m=zh_number(n + 1)))
    return out


def counting(rng: random.Random) -> list[str]:
    c = rng.choice(CHARACTERS)
    thing, measure = rng.choice(COUNTABLES)
    n = rng.randint(3, 9)
    steps = "、".join(zh_count(i, measure) for i in range(1, n + 1))
    out = [f"{c.name}数了数{thing}：{steps}。一共有{zh_count(n, measure)}{thing}。"]
    k = rng.choice([d for d in (2, 3, 4) if n * 2 % d == 0])
    total = n * 2  # doubled so that sharing among 2, 3 or 4 friends can come out even
    out.append(f"后来{c.pronoun}又找到了{zh_count(n, measure)}，现在有{zh_count(total, measure)}{thing}。")
    out.append(f"{c.pronoun}把{zh_count(total, measure)}{thing}分给{zh_count(k, '个')}朋友，"
               f"每个朋友分到{zh_count(total // k, measure)}。")
    return out


def comparing(rng: random.Random) -> list[str]:
    nums = rng.sample(range(1, 30), 3)
    a, b, c = nums
    out = [f"{zh_number(a)}和{zh_number(b)}比，{zh_number(max(a, b))}大，{zh_number(min(a, b))}小。",
           f"{max(a, b)} > {min(a, b)}。",
           f"在{zh_number(a)}、{zh_number(b)}和{zh_number(c)}里面，最大的是{zh_number(max(nums))}，"
           f"最小的是{zh_number(min(nums))}。"]
    x, y = rng.sample(CHARACTERS, 2)
    m, n = rng.sample(range(2, 10), 2)
    out.append(f"{x.name}有{zh_count(m, '个')}贝壳，{y.name}有{zh_count(n, '个')}贝壳，"
               f"{x.name if m > n else y.name}的贝壳多，多{zh_count(abs(m - n), '个')}。")
    return out


# ---------------------------------------------------------------- calendar and colours

def calendar(rng: random.Random) -> list[str]:
    i = rng.randrange(7)
    day, nxt, prev, after = (WEEKDAYS[i], WEEKDAYS[(i + 1) % 7], WEEKDAYS[(i - 1) % 7], WEEKDAYS[(i + 2) % 7])
    out = [rng.choice(("一个星期有七天。", "一个星期有七天，从星期一到星期日。")),
           fill(rng, ("{d}的后面是{n}。", "{d}过去了，就是{n}。"), d=day, n=nxt),
           f"今天是{day}，明天是{nxt}，后天是{after}，昨天是{prev}。"]
    if rng.random() < 0.5:
        out.append("星期六和星期日是周末，" + rng.choice(("海绵宝宝不用去上班。", "大家都出去玩。")))
    season, sight = rng.choice(SEASONS)
    out.append(rng.choice(("一年有四个季节：春天、夏天、秋天和冬天。", "一年有十二个月，四个季节。")))
    out.append(f"{season}的时候，{sight}。")
    return out


def colours(rng: random.Random) -> list[str]:
    out = [rng.choice(("世界上有很多颜色。", "我们来说说颜色。", "比奇堡是一个五颜六色的地方。"))]
    for thing, color in rng.sample(THING_COLORS, rng.randint(3, 5)):
        out.append(f"{thing}是{color}的。")
        same = [c.name for c in CHARACTERS if c.color == color]
        if same and rng.random() < 0.5:
            out.append(f"{same[0]}也是{color}的，和{thing}一样。")
    c = rng.choice(CHARACTERS)
    out.append(f"{c.name}是{c.color}的。")
    return out


# ---------------------------------------------------------------- talk and meals

def dialogue(rng: random.Random) -> list[str]:
    a, b = (BY_NAME[n] for n in rng.sample(STORY_CAST, 2))  # 小蜗 only says 喵
    trip = rng.choice(OUTINGS)
    time = rng.choice(("早上好", "下午好", "晚上好", "你好"))
    out = [f"{a.name}见到了{b.name}。{a.name}说：“{b.name}，{time}！”"]
    asks = (
        ("你要去哪里？", f"我要去{trip.place}{trip.activity}。"),
        ("你住在哪里？", f"我住在{b.home}。"),
        ("你最喜欢吃什么？", f"我最喜欢吃{b.food}。"),
        ("你最好的朋友是谁？", f"我最好的朋友是{b.friend}。"),
        ("你在忙什么？", f"我在{b.hobby}。"),
    )
    for question, answer in rng.sample(asks, rng.randint(2, 3)):
        out.append(f"{a.name}问：“{question}”{b.name}说：“{answer}”")
    out.append(rng.choice((f"“再见，{b.name}！”{a.name}挥了挥手。", "他们聊得很开心。")))
    return out


def meal(rng: random.Random) -> list[str]:
    c = BY_NAME[rng.choice(STORY_CAST)]
    food = rng.choice(list(MENU))
    (price, measure), k = MENU[food], rng.randint(2, 6)
    place = "海之霸餐厅" if c.name == "痞老板" else "蟹堡王"  # 痞老板 would never eat at 蟹堡王
    out = [f"{rng.choice(TIMES)}，{c.name}饿了。",
           f"{c.pronoun}去{place}买了{zh_count(k, measure)}{food}。",
           f"一{measure}{food}要{zh_count(price, '枚')}金币，{zh_count(k, measure)}一共要{zh_count(k * price, '枚')}金币。",
           f"{k}×{price}={k * price}。"]
    out.append(f"{c.pronoun}最爱吃的是{c.food}。" if c.food != food else f"{food}是{c.pronoun}最爱吃的东西。")
    return out


def town(rng: random.Random) -> list[str]:
    """Who lives where, all in one place: the facts SFT later asks about."""
    chosen = rng.sample(CHARACTERS, rng.randint(3, 5))
    out = [rng.choice((f"{TOWN}是海底的一个小镇。", f"在大海的最深处，有一个小镇叫{TOWN}。"))]
    out += [f"{c.name}住在{c.home}。" for c in chosen]
    food = rng.choice(FOODS)
    fans = [c.name for c in CHARACTERS if c.food == food]
    if fans:
        out.append(f"{fans[0]}最爱吃{food}。")
    return out


# ---------------------------------------------------------------- worked problems

def worked_problem(rng: random.Random, held_out: frozenset[str] = frozenset()) -> list[str]:
    """A word problem and its solution in prose, as an exercise book prints them: the
    copying and arithmetic that the reasoning stage builds on. A question of the
    held-out sets (r1_test, r1_val) is drawn again, so they stay unseen."""
    question, steps, answer = problem(rng)
    while question in held_out:
        question, steps, answer = problem(rng)
    return [f"练习：{question}\n", "解：" + "".join(steps), f"答案是{answer}。"]


# How often each kind of paragraph appears: stories and profiles carry the world, so they lead.
PARAGRAPHS: tuple[tuple[Callable[..., list[str]], int], ...] = (
    (day_out, 6), (profile, 5), (dialogue, 3), (arithmetic, 5), (worked_problem, 4), (meal, 2), (counting, 2),
    (comparing, 2), (calendar, 2), (colours, 2), (town, 2),
)


def pretrain_record(rng: random.Random, held_out: frozenset[str] = frozenset()) -> dict:
    """One {"text"} record: one to three paragraphs joined into a short document."""
    makers, weights = zip(*PARAGRAPHS)
    parts = ["".join(maker(rng, held_out) if maker is worked_problem else maker(rng))
             for maker in rng.choices(makers, weights, k=rng.choice((1, 2, 3)))]
    return {"text": "\n".join(parts)}
