"""Questions and answers about the demo world, and the SFT dialogues built from them.

Every question generator returns a QA: the question, the right answer and a
plausible wrong one. SFT (sft, sft_long) uses the right answers; DPO
(reason.py) pairs them with the wrong ones, so the two stages teach the
same facts. Answers are whole short sentences that repeat the question's
subject ("派大星住在石头下面。"), which is how a small model learns to answer
on topic. Identity questions get answers that start with "我是 SpongeBob", so a
chat visibly changes after SFT.
"""
from __future__ import annotations

import random
from typing import Callable, NamedTuple

from .pretrain import day_out, profile
from .world import (BY_NAME, CHARACTERS, MAX_NUMBER, STORY_CAST, THING_COLORS, WEEKDAYS, Character, pick_other,
                         residents, join_names, zh_number)


class QA(NamedTuple):
    question: str
    answer: str
    wrong: str  # a plausible wrong or unhelpful answer, for DPO's rejected side


NAME = "SpongeBob"
IDENTITY_QUESTIONS = ("你是谁？", "你叫什么名字？", "请介绍一下你自己。", "你是什么？", "你是哪个模型？",
                      "你好，你是谁呀？", "能告诉我你的名字吗？", "你是人还是机器？", "谁训练了你？")
IDENTITY_ANSWERS = (
    f"我是 {NAME}，一个住在比奇堡的小模型。我知道海绵宝宝和他的朋友们的故事，也会做简单的算术。",
    f"我是 {NAME}，一个只有两千多万个参数的小语言模型。有什么可以帮你的吗？",
    f"我是 {NAME}，一个从零开始训练出来的小模型。我会聊天、讲故事，还会算简单的数学题。",
    f"我是 {NAME}！我是一个很小的语言模型，最喜欢讲比奇堡的故事。",
    f"我是 {NAME}，一个用 {NAME} 框架训练的小模型，不是真人。你可以问我比奇堡的事情。",
)
WRONG_IDENTITY = ("我是一块海绵，住在菠萝屋里。", "我不知道我是谁。", "我是派大星，我要去睡觉了。")
SMALL_TALK = (  # (what the user says, some good replies)
    ("你好", ("你好！我是 SpongeBob，很高兴见到你。", "你好呀！今天想聊点什么？")),
    ("早上好", ("早上好！祝你今天过得开心。", "早上好！比奇堡今天也是个好天气。")),
    ("谢谢你", ("不客气！", "不用谢，很高兴能帮到你。")),
    ("再见", ("再见！欢迎下次再来聊天。", "再见，祝你今天开心！")),
)
UNHELPFUL = ("我不知道。", "这个问题太难了，我不想回答。", "你自己去查吧。", "嗯。", "今天天气不错。")
SYSTEM_PROMPTS = ("你是 SpongeBob，一个友好的小助手。", "你是一个乐于助人的助手。", "请用简短的话回答问题。",
                  "你是比奇堡的小助手 SpongeBob，请回答关于比奇堡的问题。")


def identity(rng: random.Random) -> QA:
    return QA(rng.choice(IDENTITY_QUESTIONS), rng.choice(IDENTITY_ANSWERS), rng.choice(WRONG_IDENTITY))


def small_talk(rng: random.Random) -> QA:
    said, replies = rng.choice(SMALL_TALK)
    return QA(said, rng.choice(replies), rng.choice(UNHELPFUL))


# ---------------------------------------------------------------- facts about one character

# field → (questions about subject {s}, the answer about {n}); {v} is the field's value.
_FACT_QA: dict[str, tuple[tuple[str, ...], str]] = {
    "home": (("{s}住在哪里？", "{s}的家在哪里？"), "{n}住在{v}。"),
    "color": (("{s}是什么颜色的？", "{s}是什么颜色？"), "{n}是{v}的。"),
    "species": (("{s}是什么动物？", "{s}是什么？"), "{n}是{v}。"),
    "work": (("{s}每天做什么？", "{s}的工作是什么？"), "{n}每天{v}。"),
    "hobby": (("{s}最喜欢做什么？", "{s}有什么爱好？"), "{n}最喜欢{v}。"),
    "food": (("{s}最爱吃什么？", "{s}最喜欢的食物是什么？"), "{n}最爱吃{v}。"),
    "friend": (("{s}最好的朋友是谁？", "谁是{s}最好的朋友？"), "{n}最好的朋友是{v}。"),
}


def fact(rng: random.Random, c: Character | None = None, subject: str | None = None) -> QA:
    """A question about one of c's facts; subject is how the question names c (a pronoun in follow-ups)."""
    c = c or rng.choice(CHARACTERS)
    field = rng.choice(list(_FACT_QA))
    questions, answer = _FACT_QA[field]
    value = getattr(c, field)
    wrong_value = rng.choice([v for v in (getattr(o, field) for o in CHARACTERS) if v != value])
    q = rng.choice(questions).format(s=subject or c.name)
    return QA(q, answer.format(n=c.name, v=value), answer.format(n=c.name, v=wrong_value))


def who(rng: random.Random) -> QA:
    """The other way round: who lives under the rock? (Shared homes are answered with everyone.)"""
    c = rng.choice(CHARACTERS)
    wrong = pick_other(rng, [o.name for o in CHARACTERS if o.home != c.home], c.name)
    kind = rng.randrange(3)
    if kind == 0:
        names = join_names(residents(c.home))
        return QA(f"谁住在{c.home}？", f"{names}住在{c.home}。", f"{wrong}住在{c.home}。")
    if kind == 1:
        return QA(f"谁最喜欢{c.hobby}？", f"{c.name}最喜欢{c.hobby}。", f"{wrong}最喜欢{c.hobby}。")
    animal = c.species[2:]  # "一只海星" → "海星"
    return QA(f"比奇堡里的{animal}是谁？", f"比奇堡里的{animal}是{c.name}。", f"比奇堡里的{animal}是{wrong}。")


def describe(rng: random.Random) -> QA:
    c = rng.choice(CHARACTERS)
    q = rng.choice(("介绍一下{n}。", "你知道{n}吗？", "给我讲讲{n}吧。", "{n}是谁？")).format(n=c.name)
    other = BY_NAME[pick_other(rng, [o.name for o in CHARACTERS], c.name)]
    return QA(q, "".join(profile(rng, c)), "".join(profile(rng, other)))


def story(rng: random.Random) -> QA:
    c = BY_NAME[rng.choice(STORY_CAST)]
    q = rng.choice(("讲一个关于{n}的小故事。", "给我讲个{n}的故事吧。", "你能讲一个{n}出去玩的故事吗？")).format(n=c.name)
    return QA(q, "".join(day_out(rng, c)), rng.choice(("我不会讲故事。", "从前有一个人，后来他走了。")))


# ---------------------------------------------------------------- numbers, days, colours

def arithmetic(rng: random.Random) -> QA:
    op = rng.choice("+-×")
    if op == "×":
        a = rng.randint(1, 9)
        b = rng.randint(1, min(9, MAX_NUMBER // a))
    else:  # every number at most MAX_NUMBER: one token each (world.py)
        a = rng.randint(0, MAX_NUMBER)
        b = rng.randint(0, MAX_NUMBER - a if op == "+" else a)
    c = a + b if op == "+" else a - b if op == "-" else a * b
    off = c + rng.choice((-2, -1, 1, 2)) if c >= 2 else c + rng.choice((1, 2))
    words = {"+": "加", "-": "减", "×": "乘以"}[op]
    if rng.random() < 0.5:  # in words
        q = rng.choice(("{a}{w}{b}等于几？", "{a}{w}{b}等于多少？", "请问{a}{w}{b}是多少？"))
        a_, b_ = zh_number(a), zh_number(b)
        return QA(q.format(a=a_, w=words, b=b_), f"{a_}{words}{b_}等于{zh_number(c)}。",
                  f"{a_}{words}{b_}等于{zh_number(off)}。")
    q = rng.choice(("{a}{op}{b}等于多少？", "请算一下{a}{op}{b}。", "{a}{op}{b}=?", "{a} {op} {b} 等于多少？"))
    return QA(q.format(a=a, op=op, b=b), f"{a}{op}{b}={c}。", f"{a}{op}{b}={off}。")


def compare(rng: random.Random) -> QA:
    a, b = rng.sample(range(0, 50), 2)
    q = rng.choice(("{a}和{b}哪个大？", "{a}和{b}，哪个数更大？")).format(a=zh_number(a), b=zh_number(b))
    big, small = (a, b) if a > b else (b, a)
    return QA(q, f"{zh_number(big)}比{zh_number(small)}大。", f"{zh_number(small)}比{zh_number(big)}大。")


def weekday(rng: random.Random) -> QA:
    i, step = rng.randrange(7), rng.choice((1, -1, 2))
    day, answer = WEEKDAYS[i], WEEKDAYS[(i + step) % 7]
    wrong = pick_other(rng, WEEKDAYS, answer)
    if step == 1:
        q, a = rng.choice(((f"今天是{day}，明天是星期几？", f"今天是{day}，明天是{{}}。"),
                           (f"{day}的后一天是星期几？", f"{day}的后一天是{{}}。")))
    elif step == -1:
        q, a = f"今天是{day}，昨天是星期几？", f"今天是{day}，昨天是{{}}。"
    else:
        q, a = f"今天是{day}，后天是星期几？", f"今天是{day}，后天是{{}}。"
    return QA(q, a.format(answer), a.format(wrong))


def colour(rng: random.Random) -> QA:
    thing, color = rng.choice(THING_COLORS)
    wrong = rng.choice([c for _, c in THING_COLORS if c != color])
    q = rng.choice(("{t}是什么颜色的？", "{t}是什么颜色？")).format(t=thing)
    return QA(q, f"{thing}是{color}的。", f"{thing}是{wrong}的。")


# How often each kind of question is asked in SFT; facts lead because they are the world.
QUESTIONS: tuple[tuple[Callable[[random.Random], QA], int], ...] = (
    (fact, 8), (identity, 3), (who, 3), (arithmetic, 4), (weekday, 2), (colour, 2), (compare, 2),
    (small_talk, 1), (describe, 2), (story, 2),
)


def ask(rng: random.Random) -> QA:
    makers, weights = zip(*QUESTIONS)
    return rng.choices(makers, weights)[0](rng)


def chain(rng: random.Random, turns: int) -> list[QA]:
    """Several questions about one character; after the first, the question says 他/她/它."""
    c = rng.choice(CHARACTERS)
    return [fact(rng, c, c.name if i == 0 else c.pronoun) for i in range(turns)]


def to_messages(qas: list[QA], system: str | None = None) -> list[dict]:
    msgs = [{"role": "system", "content": system}] if system else []
    for qa in qas:
        msgs += [{"role": "user", "content": qa.question}, {"role": "assistant", "content": qa.answer}]
    return msgs


def sft_record(rng: random.Random) -> dict:
    """A short dialogue: 1-4 turns, a quarter of them a chain about one character, a fifth with a system prompt."""
    turns = rng.choices((1, 2, 3, 4), (50, 25, 15, 10))[0]
    qas = chain(rng, turns) if turns > 1 and rng.random() < 0.25 else [ask(rng) for _ in range(turns)]
    system = rng.choice(SYSTEM_PROMPTS) if rng.random() < 0.2 else None
    return {"conversations": to_messages(qas, system)}


def approx_tokens(text: str) -> float:
    """About how many tokens text costs as one ChatML message with the shipped tokenizer.

    Fitted on this corpus by least squares (a Chinese character ≈ 0.875 tokens, an ASCII
    character ≈ 0.41, the message frame ≈ 7; residual σ ≈ 21 tokens per dialogue), so that
    sft_long is sized without loading a tokenizer. tests/test_demo.py checks real counts.
    """
    ascii_chars = sum(ch.isascii() for ch in text)
    return 0.875 * (len(text) - ascii_chars) + 0.41 * ascii_chars + 7


# Estimated-token bounds of a long dialogue: 60 tokens inside 512..1024 on each side, about
# three residual σ, so the real rendered length lands in range.
LONG_MIN_TOKENS, LONG_MAX_TOKENS = 572, 964
SHORT_QUESTIONS = (fact, arithmetic, weekday, colour, compare)  # fillers that fit in a small gap


def _qa_tokens(batch: list[QA]) -> float:
    return sum(approx_tokens(qa.question) + approx_tokens(qa.answer) for qa in batch)


def sft_long_record(rng: random.Random) -> dict:
    """A long dialogue for the 1024-token stage: turns are added until a drawn length is reached."""
    target = rng.uniform(LONG_MIN_TOKENS, LONG_MAX_TOKENS - 80)
    system = rng.choice(SYSTEM_PROMPTS) if rng.random() < 0.3 else None
    qas: list[QA] = []
    used = approx_tokens(system) if system else 0.0
    while used < target:
        roll = rng.random()  # long dialogues lean on stories and profiles: longer answers
        batch = (chain(rng, rng.randint(2, 4)) if roll < 0.2 else [rng.choice((story, describe))(rng)]
                 if roll < 0.4 else [ask(rng)])
        if used + _qa_tokens(batch) > LONG_MAX_TOKENS:  # too long for what is left: a short question
            batch = [rng.choice(SHORT_QUESTIONS)(rng)]
            if used + _qa_tokens(batch) > LONG_MAX_TOKENS:
                break
        qas += batch
        used += _qa_tokens(batch)
    return {"conversations": to_messages(qas, system)}
