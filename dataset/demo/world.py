"""The little world of the demo corpus: who lives where, likes what, and the everyday words.

Every stage draws on these same facts, so what pretraining teaches (派大星住在石头下面)
is what SFT asks about, what the reasoning problems count with, and what DPO
rewards. The world is deliberately small — nine characters, a dozen places and
foods, colours, numbers, days — so that a tiny model can learn all of it and a
reader can check its answers by eye. Everything here was written for this
project; no outside text.
"""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Character:
    name: str
    pronoun: str   # 他 / 她 / 它
    species: str   # what they are, as in "海绵宝宝是一块海绵"
    color: str     # their colour, as in "海绵宝宝是黄色的"
    home: str      # where they live, as in "海绵宝宝住在菠萝屋里"
    work: str      # what they do all day, as in "海绵宝宝每天在蟹堡王煎蟹黄堡"
    hobby: str     # as in "海绵宝宝最喜欢抓水母"
    food: str      # favourite food
    friend: str    # best friend
    trait: str     # as in "海绵宝宝很开朗"


CHARACTERS: tuple[Character, ...] = (
    Character("海绵宝宝", "他", "一块海绵", "黄色", "菠萝屋里", "在蟹堡王煎蟹黄堡", "抓水母", "蟹黄堡", "派大星", "开朗"),
    Character("派大星", "他", "一只海星", "粉红色", "石头下面", "在家里看守他的石头", "睡觉", "冰淇淋", "海绵宝宝", "憨厚"),
    Character("章鱼哥", "他", "一只章鱼", "青色", "石像屋里", "在蟹堡王收钱", "吹竖笛", "海藻汤", "泡芙老师", "爱安静"),
    Character("蟹老板", "他", "一只螃蟹", "红色", "铁锚屋里", "经营蟹堡王", "数金币", "珊瑚饼干", "珍珍", "精明"),
    Character("珊迪", "她", "一只松鼠", "棕色", "玻璃树屋里", "做科学实验", "练空手道", "橡果", "海绵宝宝", "勇敢"),
    Character("痞老板", "他", "一只浮游生物", "绿色", "海之霸餐厅里", "经营海之霸餐厅", "想办法偷蟹黄堡的秘方", "海带卷", "凯伦", "狡猾"),
    Character("珍珍", "她", "一头鲸鱼", "灰色", "铁锚屋里", "在比奇堡中学上学", "逛商店", "草莓奶昔", "珊迪", "活泼"),
    Character("泡芙老师", "她", "一条河豚", "白色", "学校旁边的小屋里", "在驾驶学校教大家开船", "种花", "海苔饭团", "章鱼哥", "耐心"),
    Character("小蜗", "它", "一只蜗牛", "蓝色", "菠萝屋里", "陪着海绵宝宝", "喵喵叫", "蜗牛饼干", "海绵宝宝", "安静"),
)
BY_NAME: dict[str, Character] = {c.name: c for c in CHARACTERS}
NAMES: tuple[str, ...] = tuple(c.name for c in CHARACTERS)
# Who goes on outings in stories (小蜗 stays at home).
STORY_CAST: tuple[str, ...] = ("海绵宝宝", "派大星", "章鱼哥", "蟹老板", "珊迪", "珍珍", "泡芙老师", "痞老板")

TOWN = "比奇堡"  # the town at the bottom of the sea where everyone lives


@dataclass(frozen=True)
class Outing:
    """A trip in a story: go to place, do activity, and come back with some things."""
    place: str
    activity: str
    verb: str      # what is done to the things: "抓到了" 三只水母
    thing: str
    measure: str


OUTINGS: tuple[Outing, ...] = (
    Outing("水母田", "抓水母", "抓到了", "水母", "只"),
    Outing("贝壳公园", "散步", "捡到了", "贝壳", "个"),
    Outing("沙滩", "堆沙堡", "堆了", "沙堡", "座"),
    Outing("图书馆", "看书", "看了", "书", "本"),
    Outing("海底市场", "买水果", "买了", "苹果", "个"),
    Outing("蟹堡王", "吃蟹黄堡", "吃了", "蟹黄堡", "个"),
    Outing("珊迪的树屋", "做实验", "做了", "实验", "个"),
    Outing("比奇堡广场", "放风筝", "放了", "风筝", "只"),
    Outing("珊瑚山", "采珍珠", "采到了", "珍珠", "颗"),
    Outing("海草湖", "钓鱼", "钓到了", "小鱼", "条"),
    Outing("花园", "摘花", "摘了", "花", "朵"),
)

# (weather, a sentence that goes with it)
WEATHER: tuple[tuple[str, str], ...] = (
    ("晴天", "阳光照进海里，海水亮亮的。"), ("阴天", "天上的云很厚，海里有点暗。"),
    ("下雨天", "海面上下着雨，海里却还是老样子。"), ("刮风天", "海面上刮着大风，海草摇来摇去。"),
    ("热天", "海水暖暖的，大家都想吃冰淇淋。"), ("冷天", "海水凉凉的，大家都穿上了毛衣。"),
)
TIMES = ("早上", "中午", "下午", "晚上")
WEEKDAYS = ("星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日")
SEASONS: tuple[tuple[str, str], ...] = (
    ("春天", "海草长出了新叶子"), ("夏天", "海水变得暖暖的"),
    ("秋天", "珊迪忙着收集橡果"), ("冬天", "海面上结了一层薄冰"),
)
FEELINGS = ("很开心", "很高兴", "有点累", "很兴奋", "很满足")

# Things everyone knows the colour of (the world's everyday facts, not the characters').
THING_COLORS: tuple[tuple[str, str], ...] = (
    ("大海", "蓝色"), ("天空", "蓝色"), ("香蕉", "黄色"), ("柠檬", "黄色"), ("苹果", "红色"),
    ("草莓", "红色"), ("橘子", "橙色"), ("胡萝卜", "橙色"), ("葡萄", "紫色"), ("海草", "绿色"),
    ("西瓜皮", "绿色"), ("珍珠", "白色"), ("雪", "白色"), ("墨鱼汁", "黑色"), ("巧克力", "棕色"),
)

# (thing, measure word) for counting: "三只水母", "五个贝壳".
COUNTABLES: tuple[tuple[str, str], ...] = (
    ("水母", "只"), ("贝壳", "个"), ("蟹黄堡", "个"), ("苹果", "个"), ("珍珠", "颗"),
    ("金币", "枚"), ("书", "本"), ("花", "朵"), ("气球", "个"), ("小鱼", "条"),
    ("饼干", "块"), ("橡果", "个"), ("贴纸", "张"), ("冰淇淋", "个"),
)
FOODS = ("蟹黄堡", "海藻汤", "珊瑚饼干", "冰淇淋", "橡果", "海带卷", "草莓奶昔", "海苔饭团", "苹果", "面包")
# What things cost at the restaurants, in gold coins (枚金币), and how a serving is counted.
MENU: dict[str, tuple[int, str]] = {"蟹黄堡": (3, "个"), "海藻汤": (2, "碗"), "珊瑚饼干": (1, "块"),
                                    "冰淇淋": (2, "个"), "海带卷": (4, "个"), "草莓奶昔": (5, "杯")}

# The largest number a demo problem writes in digits. The shipped tokenizer has one
# token for each of 0..40 (41 and 56 are two), so copying a number from the
# question into a step is copying one token, and "12+9=21" is a fact about three
# tokens: within reach of a tiny model, where split digits are not. 20 rather than
# 40 keeps the facts few enough (231 sums, 231 differences) for the model to meet
# each of them many times in one demo run.
MAX_NUMBER = 20

_DIGITS = "零一二三四五六七八九"


def zh_number(n: int) -> str:
    """A number 0..999 in Chinese characters, as it is read: 11 → 十一, 105 → 一百零五."""
    if not 0 <= n <= 999:
        raise ValueError(f"zh_number covers 0..999, got {n}")
    if n < 10:
        return _DIGITS[n]
    if n < 20:  # 十一, not 一十一, when spoken on its own
        return "十" + (_DIGITS[n % 10] if n % 10 else "")
    if n < 100:
        return _DIGITS[n // 10] + "十" + (_DIGITS[n % 10] if n % 10 else "")
    rest = n % 100
    head = _DIGITS[n // 100] + "百"
    if rest == 0:
        return head
    if rest < 10:
        return head + "零" + _DIGITS[rest]
    # Inside a hundred the tens keep their 一: 一百一十二.
    return head + _DIGITS[rest // 10] + "十" + (_DIGITS[rest % 10] if rest % 10 else "")


def zh_count(n: int, measure: str) -> str:
    """A count before a measure word: 2 is 两 there (两个苹果), otherwise zh_number."""
    return ("两" if n == 2 else zh_number(n)) + measure


def residents(home: str) -> list[str]:
    """Everyone who lives at home, in cast order (菠萝屋里: 海绵宝宝 and 小蜗)."""
    return [c.name for c in CHARACTERS if c.home == home]


def join_names(names: list[str]) -> str:
    """甲 / 甲和乙 / 甲、乙和丙."""
    return names[0] if len(names) == 1 else "、".join(names[:-1]) + "和" + names[-1]


def pick_other(rng: random.Random, pool: tuple[str, ...] | list[str], not_this: str) -> str:
    """A random item of pool that is not not_this (a companion in a story, a wrong answer for DPO)."""
    return rng.choice([x for x in pool if x != not_this])
