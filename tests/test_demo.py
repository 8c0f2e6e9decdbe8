"""The built-in demo corpus: formats, determinism, consistent facts, checkable reasoning
problems (re-solved here from the question text alone), token lengths with the shipped
tokenizer, and the caching/atomic-write behaviour of ensure_demo_corpus."""
import json
import re
from pathlib import Path

import pytest

from dataset.demo import corpus as demo
from dataset.demo import DEMO_KINDS, demo_corpus_current, demo_records, ensure_demo_corpus
from dataset.demo.world import zh_count, zh_number
from dataset.demo.reason import DIRECT_STEP, skips_working
from tokenizer import load_tokenizer

# The world's facts, written out by hand (not imported) so the corpus is checked against them.
HOMES = {"海绵宝宝": "菠萝屋里", "派大星": "石头下面", "章鱼哥": "石像屋里", "蟹老板": "铁锚屋里",
         "珊迪": "玻璃树屋里", "痞老板": "海之霸餐厅里", "珍珍": "铁锚屋里", "泡芙老师": "学校旁边的小屋里",
         "小蜗": "菠萝屋里"}
COLORS = {"海绵宝宝": "黄色", "派大星": "粉红色", "章鱼哥": "青色", "蟹老板": "红色", "珊迪": "棕色",
          "痞老板": "绿色", "珍珍": "灰色", "泡芙老师": "白色", "小蜗": "蓝色"}
WEEK = ["星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日"]
NAMES = "|".join(HOMES)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, list[dict]]:
    """All eight kinds at their default sizes, generated once for the module."""
    out = tmp_path_factory.mktemp("demo")
    return {kind: read_jsonl(ensure_demo_corpus(kind, out)) for kind in DEMO_KINDS}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


# ---------------------------------------------------------------- the world's words

def test_chinese_numbers_by_hand():
    expected = {0: "零", 7: "七", 10: "十", 11: "十一", 20: "二十", 35: "三十五", 100: "一百",
                105: "一百零五", 110: "一百一十", 999: "九百九十九"}
    assert {n: zh_number(n) for n in expected} == expected
    assert zh_count(2, "个") == "两个" and zh_count(12, "只") == "十二只"


# ---------------------------------------------------------------- formats

def check_messages(msgs: list, where: str) -> None:
    roles = [m["role"] for m in msgs]
    if roles and roles[0] == "system":
        roles = roles[1:]
    assert roles and roles == ["user", "assistant"] * (len(roles) // 2), where
    assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) and m["content"].strip()
               for m in msgs), where


def test_pretrain_format_and_size(corpus):
    recs = corpus["pretrain"]
    assert all(set(r) == {"text"} and isinstance(r["text"], str) and len(r["text"]) > 20 for r in recs)
    chars = sum(len(r["text"]) for r in recs)
    assert 1_150_000 <= chars <= 1_400_000  # the documented default: about 1.3M characters


def test_the_readmes_prompt_reads_on_into_a_world_fact(corpus):
    """The README's first command continues 海绵宝宝住在. A tiny model early in training takes the
    most frequent continuation of a character + 在, so 住在菠萝屋里 must be that, by a margin:
    "海绵宝宝在练习算术" once outnumbered it and the model answered with a line of sums."""
    counts: dict[str, int] = {}
    for r in corpus["pretrain"]:
        for m in re.finditer(r"海绵宝宝(住在|正在|在)(..)", r["text"]):
            counts[m.group(1) + m.group(2)] = counts.get(m.group(1) + m.group(2), 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    assert ranked[0][0] == "住在菠萝" and ranked[0][1] >= 3 * ranked[1][1], ranked[:3]
    lived = [m.group(1) for r in corpus["pretrain"] for m in re.finditer(r"海绵宝宝住在(.{4})", r["text"])]
    assert set(lived) == {"菠萝屋里"}


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_demo_model_continues_the_readmes_prompt_with_its_home(tmp_path, dtype):
    """The README's main job, as a user runs it (bf16 where the CPU has it, else fp32 and its shorter
    demo), then its prompt greedily: the first sentence is a fact of the demo's world."""
    import subprocess
    import sys
    from common.device import cpu_has_native_bf16
    if dtype == "bfloat16" and not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16")
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "pretrain.py", "--out_dir", str(tmp_path), "--dtype", dtype], cwd=root,
                   check=True, capture_output=True)
    out = subprocess.run([sys.executable, "eval_model.py", "--model_mode", "0", "--out_dir", str(tmp_path),
                          "--prompt", "海绵宝宝住在", "--temperature", "0", "--max_new_tokens", "12"], cwd=root,
                         check=True, capture_output=True, text=True).stdout
    assert out.startswith("海绵宝宝住在菠萝屋里。"), out


def test_chat_formats(corpus):
    for kind in ("sft", "sft_long"):
        for i, r in enumerate(corpus[kind]):
            assert set(r) == {"conversations"}
            check_messages(r["conversations"], f"{kind}:{i + 1}")
    for i, r in enumerate(corpus["dpo"]):
        assert set(r) == {"chosen", "rejected"}
        check_messages(r["chosen"], f"dpo:{i + 1}")
        check_messages(r["rejected"], f"dpo:{i + 1}")
        assert r["chosen"][:-1] == r["rejected"][:-1], "a pair shares its prompt"
        assert r["chosen"][-1]["content"] != r["rejected"][-1]["content"]


def test_sft_has_identity_answers_in_several_phrasings(corpus):
    pairs = [(m["content"], n["content"]) for r in corpus["sft"]
             for m, n in zip(r["conversations"], r["conversations"][1:]) if m["role"] == "user"]
    identity = [(q, a) for q, a in pairs if q in ("你是谁？", "你叫什么名字？", "请介绍一下你自己。")]
    assert len(identity) > 100
    assert all(a.startswith("我是 SpongeBob") for _, a in identity)
    assert len({a for _, a in identity}) >= 3  # several phrasings, not one memorised line


def test_sft_fits_512_and_sft_long_is_512_to_1024_tokens(corpus, tok):
    def lengths(kind, n):
        # Tokenizing every dialogue takes ~8 s here, so take the n longest and the n shortest
        # by characters (where the bounds are at stake) and every 10th of the rest.
        texts = sorted((tok.apply_chat_template(r["conversations"]) for r in corpus[kind]), key=len)
        chosen = texts[:n] + texts[n:-n:10] + texts[-n:]
        return [len(ids) for ids in tok.encode_batch(chosen)]
    assert max(lengths("sft", 300)) <= 512
    long = lengths("sft_long", 150)
    assert max(long) <= 1024
    assert sum(n >= 512 for n in long) >= 0.9 * len(long)


def test_facts_agree_across_stages(corpus):
    texts = [r["text"] for r in corpus["pretrain"]]
    texts += [m["content"] for r in corpus["sft"] + corpus["sft_long"] for m in r["conversations"]]
    texts += [r["chosen"][-1]["content"] for r in corpus["dpo"]]  # only the chosen side is true
    homes = colors = 0
    for text in texts:
        for name, home in re.findall(rf"({NAMES})住在([^。，]+)。", text):
            assert home == HOMES[name], text
            homes += 1
        for name, color in re.findall(rf"({NAMES})是(\w{{1,2}}色)的", text):
            assert color == COLORS[name], text
            colors += 1
    assert homes > 1000 and colors > 1000
    rejected = [r["rejected"][-1]["content"] for r in corpus["dpo"]]
    assert any(re.search(r"派大星住在(?!石头下面)", t) for t in rejected)  # DPO does carry false facts


# ---------------------------------------------------------------- r1: every problem re-solved

R1_REPLY = re.compile(r"<think>\n(.+)\n</think>\n<answer>\n(.+)\n</answer>", re.DOTALL)
EQUATION = re.compile(r"(\d+)([-+×÷])(\d+)=(\d+)")


def solve(q: str) -> tuple[str, str]:
    """An independent solver for the demo's problem kinds, reading only the question:
    returns (which kind it recognised, the answer)."""
    n = [int(x) for x in re.findall(r"\d+", q.split("\n")[0])]
    if m := re.search(r"篮子里有这些东西：(.+)。篮子里有几\w(.+)？", q):
        return "count", str(m.group(1).split("、").count(m.group(2)))
    if m := re.search(r"哪个数(最大|最小)", q):
        options = dict(re.findall(r"^([ABCD])：(\d+)$", q, re.M))
        pick = max if m.group(1) == "最大" else min
        return "extreme", pick(options, key=lambda k: int(options[k]))
    if m := re.search(r"今天是(星期.)。再过(\d+)天", q):
        day = WEEK[(WEEK.index(m.group(1)) + int(m.group(2))) % 7]
        return "weekday", {v: k for k, v in re.findall(r"^([ABCD])\. (星期.)$", q, re.M)}[day]
    if "平均分给" in q:
        assert n[0] % n[1] == 0, q
        return "share", str(n[0] // n[1])
    if "每个盒子里有" in q:
        return "boxes", str(n[0] * n[1])
    if "买了" in q and "还剩多少枚金币" in q:  # money, price, count
        return "shopping", str(n[0] - n[1] * n[2])
    if re.search(r"少\d+", q):  # b has y more than a, c has z fewer than b
        return "chain", str(n[0] + n[1] - n[2])
    if "三天一共" in q:
        return "three_days", str(sum(n))
    if "还剩" in q:
        return "take_away", str(n[0] - n[1])
    if "多多少" in q:
        return "difference", str(n[0] - n[1])
    if "又送给" in q or "又给了" in q:
        return "add", str(n[0] + n[1])
    raise AssertionError(f"no solver for: {q}")


def test_r1_answers_are_tagged_correct_and_match_gold(corpus):
    kinds = set()
    for i, r in enumerate(corpus["r1"]):
        assert set(r) == {"conversations", "answer"}
        (user, assistant) = r["conversations"]
        assert (user["role"], assistant["role"]) == ("user", "assistant")
        m = R1_REPLY.fullmatch(assistant["content"])
        assert m, assistant["content"]
        think, answer = m.groups()
        for tag in ("<think>", "</think>", "<answer>", "</answer>"):
            assert assistant["content"].count(tag) == 1
        kind, solved = solve(user["content"])
        assert answer == r["answer"] == solved, f"r1:{i + 1}: {user['content']}"
        for a, op, b, c in EQUATION.findall(think):
            a, b, c = int(a), int(b), int(c)
            assert (a + b if op == "+" else a - b if op == "-" else a * b if op == "×" else a / b) == c, think
        kinds.add(kind)
    assert len(kinds) == 11  # every kind of problem occurs


def test_r1_numeric_answers_come_from_the_last_step(corpus):
    checked = 0
    for r in corpus["r1"]:
        think = R1_REPLY.fullmatch(r["conversations"][1]["content"]).group(1)
        equations = EQUATION.findall(think)
        if r["answer"].isdigit() and equations:
            assert equations[-1][3] == r["answer"], think
            checked += 1
    assert checked > len(corpus["r1"]) // 4  # the equation pattern did match (half the replies show no working)


def test_half_the_r1_replies_skip_the_working_decided_by_the_question(corpus):
    """The demo teacher answers about half the questions without working (reason.py), always
    with the right answer; which ones is a fixed hash of the question, the same in every split."""
    direct = [r for r in corpus["r1"] if r["conversations"][1]["content"]
              == f"<think>\n{DIRECT_STEP}\n</think>\n<answer>\n{r['answer']}\n</answer>"]
    assert 0.45 < len(direct) / len(corpus["r1"]) < 0.55
    for r in corpus["r1"]:
        question, reply = r["conversations"][0]["content"], r["conversations"][1]["content"]
        assert (DIRECT_STEP in reply) == skips_working(question)
    # The held-out splits are references: every reply works its problem out.
    assert not any(DIRECT_STEP in r["conversations"][1]["content"] for r in corpus["r1_test"])
    assert sum(skips_working(r["conversations"][0]["content"]) for r in corpus["r1_test"]) > 100
    assert skips_working("蟹老板有14颗珍珠，珍珍又送给他5颗。蟹老板现在一共有多少颗珍珠？") is False  # crc32 % 1000 = 639 (>= 500)
    assert skips_working("珍珍有4枚金币，蟹老板比珍珍多12枚，小蜗比蟹老板少8枚。小蜗有多少枚金币？") is True  # 255 (< 500)


def test_numbers_in_problems_are_single_tokens(corpus):
    """The design rule of word_problems.py: every number a problem or its steps write in
    digits is at most MAX_NUMBER (20), which the shipped tokenizer encodes as one token."""
    tok = load_tokenizer()
    numbers = {int(x) for r in corpus["r1"] + corpus["r1_test"]
               for turn in r["conversations"] for x in re.findall(r"\d+", turn["content"])}
    assert max(numbers) == 20 and len(numbers) == 21  # 0..20, all of them used
    assert all(len(tok.encode(str(n))) == 1 for n in numbers)


def test_r1_test_is_held_out_from_r1_and_solvable(corpus):
    train = {r["conversations"][0]["content"] for r in corpus["r1"]}
    test = [r["conversations"][0]["content"] for r in corpus["r1_test"]]
    assert len(test) == 500 and len(set(test)) == 500  # no repeats: pass@k is measured on at least 400
    assert not train & set(test)
    kinds = set()
    for r in corpus["r1_test"]:
        assert set(r) == {"conversations", "answer"}
        assert R1_REPLY.fullmatch(r["conversations"][1]["content"]).group(2) == r["answer"]
        kind, solved = solve(r["conversations"][0]["content"])
        assert solved == r["answer"]
        kinds.add(kind)
    assert len(kinds) == 11


def test_r1_val_is_held_out_from_r1_and_from_r1_test(corpus):
    val = [r["conversations"][0]["content"] for r in corpus["r1_val"]]
    assert len(val) == 200 and len(set(val)) == 200
    for kind in ("r1", "r1_test"):
        assert not {r["conversations"][0]["content"] for r in corpus[kind]} & set(val), kind
    assert all(solve(q)[1] == r["answer"] for q, r in zip(val, corpus["r1_val"]))


def test_dpo_test_pairs_are_not_training_pairs(corpus):
    pair = lambda r: json.dumps([r["chosen"], r["rejected"]], ensure_ascii=False)  # noqa: E731
    test = [pair(r) for r in corpus["dpo_test"]]
    assert len(test) == 200 and len(set(test)) == 200
    assert not {pair(r) for r in corpus["dpo"]} & set(test)


def test_pretrain_exercises_never_ask_a_held_out_question(corpus):
    text = "\n".join(r["text"] for r in corpus["pretrain"])
    exercises = re.findall(r"练习：(.+?)\n解：", text, re.S)
    assert len(exercises) > 1000
    held_out = {r["conversations"][0]["content"] for kind in ("r1_test", "r1_val") for r in corpus[kind]}
    assert not held_out & set(exercises)
    assert all(solve(q)[1] for q in exercises[:200])  # real problems, with their solutions beside them


def test_r1_test_of_another_seed_is_held_out_from_that_seeds_r1():
    train = {r["conversations"][0]["content"] for r in demo_records("r1", 5)}
    test = {r["conversations"][0]["content"] for r in demo_records("r1_test", 5, 300)}
    assert len(test) == 300 and not train & test
    assert test != {r["conversations"][0]["content"] for r in demo_records("r1_test", 0, 300)}


# ---------------------------------------------------------------- determinism and caching

def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    for kind in DEMO_KINDS:
        a = ensure_demo_corpus(kind, tmp_path / "a", seed=3, size=200).read_bytes()
        b = ensure_demo_corpus(kind, tmp_path / "b", seed=3, size=200).read_bytes()
        c = ensure_demo_corpus(kind, tmp_path / "c", seed=4, size=200).read_bytes()
        assert a == b and a != c, kind
    # A smaller size is a prefix of a larger one: the size only says where to stop.
    assert list(demo_records("sft", 3, 50)) == list(demo_records("sft", 3, 200))[:50]


def test_second_call_is_a_no_op_and_a_new_seed_regenerates(tmp_path):
    path = ensure_demo_corpus("r1", tmp_path, seed=0, size=100)
    meta = tmp_path / "r1.meta.json"
    stamps = path.stat().st_mtime_ns, meta.stat().st_mtime_ns
    assert ensure_demo_corpus("r1", tmp_path, seed=0, size=100) == path
    assert (path.stat().st_mtime_ns, meta.stat().st_mtime_ns) == stamps
    before = path.read_bytes()
    ensure_demo_corpus("r1", tmp_path, seed=1, size=100)
    assert path.read_bytes() != before and json.loads(meta.read_text())["seed"] == 1
    assert demo_corpus_current("r1", tmp_path, seed=1, size=100)
    assert not demo_corpus_current("r1", tmp_path, seed=1, size=101)


def test_truncated_file_or_new_generator_version_regenerates(tmp_path, monkeypatch):
    path = ensure_demo_corpus("sft", tmp_path, size=50)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    assert not demo_corpus_current("sft", tmp_path, size=50)
    assert ensure_demo_corpus("sft", tmp_path, size=50).read_bytes() == good
    monkeypatch.setattr(demo, "DEMO_VERSION", demo.DEMO_VERSION + 1)
    assert not demo_corpus_current("sft", tmp_path, size=50)


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    path = ensure_demo_corpus("dpo", tmp_path, size=30)
    old = path.read_bytes()
    real = demo.demo_records

    def dies_midway(kind, seed=0, size=None):
        for i, rec in enumerate(real(kind, seed, size)):
            if i == 10:
                raise KeyboardInterrupt
            yield rec

    monkeypatch.setattr(demo, "demo_records", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        ensure_demo_corpus("dpo", tmp_path, seed=9, size=30)
    with pytest.raises(KeyboardInterrupt):
        ensure_demo_corpus("pretrain", tmp_path, size=30)
    assert path.read_bytes() == old  # the old file is whole, not half-replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dpo.jsonl"]  # no temp, no pretrain.jsonl
    monkeypatch.setattr(demo, "demo_records", real)
    assert not demo_corpus_current("dpo", tmp_path, seed=9, size=30)
    assert read_jsonl(ensure_demo_corpus("dpo", tmp_path, seed=9, size=30)) == list(real("dpo", 9, 30))


def test_bad_arguments_are_one_line_errors():
    for kwargs in ({"kind": "sft2"}, {"kind": "sft", "size": 0}, {"kind": "sft", "seed": "x"}):
        with pytest.raises(ValueError) as info:
            list(demo_records(**kwargs))
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="pretrain, sft, sft_long, r1, dpo"):
        ensure_demo_corpus("sft2")


def test_command_line_writes_and_reports(tmp_path, capsys):
    assert demo.main(["--kind", "r1", "--size", "5", "--out_dir", str(tmp_path), "--samples", "1"]) == 0
    out = capsys.readouterr().out
    assert "r1.jsonl: 5 records" in out and "generated" in out and "<think>" in out
    demo.main(["--kind", "r1", "--size", "5", "--out_dir", str(tmp_path), "--samples", "0"])
    assert "already up to date" in capsys.readouterr().out
    assert len(read_jsonl(tmp_path / "r1.jsonl")) == 5
