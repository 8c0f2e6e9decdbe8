"""Reasoning scores on hand-written replies: compliance, extraction, the project's one answer
matcher (options, sub-question answers, numbers, text), think length."""
import pytest

from common.reasoning import answer_span, answers_match, is_compliant, think_span
from evaluation.reasoning_metrics import budget_label, format_table, score_replies

GOOD = "<think>\n3+4=7\n</think>\n<answer>\n7\n</answer>"


@pytest.mark.parametrize("reply", [
    GOOD,
    "  \n" + GOOD + "\n\n",  # whitespace around is fine
    "<think></think><answer>7</answer>",  # an empty think span is still well formed
])
def test_compliant_replies(reply):
    assert is_compliant(reply)


@pytest.mark.parametrize("reply", [
    "<answer>7</answer>",  # no think span
    "好的<think>a</think><answer>7</answer>",  # text before <think>
    "<think>a</think>所以<answer>7</answer>",  # text between the spans
    "<think>a</think><answer>7</answer>完毕",  # text after </answer>
    "<think>a<think>b</think><answer>7</answer>",  # nested think
    "<think>a</think>x</think><answer>7</answer>",  # a second </think>
    "<think>a</think><answer>1</answer><answer>2</answer>",  # two answers
    "<think>a</think><answer> \n </answer>",  # empty answer
    "<think>a</think><answer>7",  # cut off before </answer>
    "<think>a</think><answer>7</think></answer>",  # a tag inside the answer
    "我不知道",
])
def test_non_compliant_replies(reply):
    assert not is_compliant(reply)


def test_answer_span_and_its_fallbacks():
    assert answer_span(GOOD) == "\n7\n"
    assert answer_span("<think>a</think><answer>42") == "42"  # cut off: after the last <answer>
    assert answer_span("<answer>5</answer> 多余") == "5"
    assert answer_span("<think>a</think>\n答案是42") == "\n答案是42"  # bare answer after </think>
    assert answer_span("就是42") == "就是42"  # no tags: the whole reply


@pytest.mark.parametrize("span, gold, expected", [
    ("1,000", "1000", True),
    ("1000.0", "1,000", True),
    ("3/4", "0.75", True),
    ("0.75", "3/4", True),
    ("\\frac{3}{4}", "0.75", True),
    ("共12个", "12", True),
    ("１２", "12", True),  # full-width digits
    ("18元", "18元", True),
    ("0.333333", "1/3", True),  # within 1e-6
    ("0.33", "1/3", False),
    ("3/4", "4/3", False),
    ("-.5", "-1/2", True),  # decimals alone
    ("$\\frac{3}{4}$", "3/4", True),
    ("\\boxed{12}", "12", True),
    ("$1,200.50", "1200.5", True),  # currency before, thousands comma
    ("72 clips", "72", True),  # a Latin unit after
    ("5-3=2", "2", True),  # the minus of a subtraction is no sign
    ("x=-3", "-3", True),
    ("75%", "75", True),  # % is a unit
    ("75%", "0.75", False),
    ("12,13", "1213", False),  # not a thousands comma
    ("12个苹果分给3人", "12", False),  # the last number is read
    ("3/0", "3", False),
    ("H2O", "2", False),  # no number right after a Latin letter
    ("没有数字", "5", False),
])
def test_numeric_matching(span, gold, expected):
    assert answers_match(span, gold) is expected


@pytest.mark.parametrize("span, gold, expected", [
    ("B", "B", True),
    ("(B)", "B", True),
    ("（Ｂ）", "B", True),  # full-width brackets and letter
    ("B.", "B", True),
    ("B. 3", "B", True),  # a letter with its option text
    ("选B", "B", True),
    ("答案是B，因为A不对", "B", True),  # a marked letter beats a later bare one
    ("答案是选项D", "D", True),
    ("A和B都不对，选C", "C", True),
    ("我认为是(C)，A不对", "C", True),  # a bracketed letter beats a later bare one
    ("我认为是 C", "C", True),
    ("故选：BC", "BC", True),
    ("【答案】: A <eoa>", "A", True),
    ("所以正确答案应该是A和C", "AC", True),
    ("答案：A，C", "C", False),  # a marked run of letters is read whole
    ("CB", "BC", True),  # letters compare as sets
    ("B", "BC", False),
    ("AC", "A、C", True),
    ("AND", "A", False),  # letters inside a word are not options
    ("b", "B", False),  # upper case only
    ("答案是C", "B", False),
])
def test_option_matching(span, gold, expected):
    assert answers_match(span, gold) is expected


@pytest.mark.parametrize("span, gold, expected", [
    ("B C A", "B C A", True),
    ("B C A", "A B C", False),  # sub-questions are answered in order
    ("B、C、A", "B C A", True),
    ("1.B 2.C 3.A", "B C A", True),
    ("答案：B C A", "B C A", True),
    ("(1) A passage says so.【答案】B (2)【答案】C", "B C", True),  # marked runs beat the lone A
    ("BCA", "B C A", False),  # letters run together are one answer
    ("B C", "B C A", False),  # a sub-question unanswered
    ("CA BD", "AC BD", True),  # each place a set of letters
    ("CA", "A, C", True),  # letters apart by a comma are one multi-select gold
])
def test_sub_question_matching(span, gold, expected):
    assert answers_match(span, gold) is expected


def test_text_matching():
    assert answers_match("北京。", "北京")
    assert answers_match(" Paris ", "paris")
    assert answers_match("$\\boxed{北京}$。", "北京")  # LaTeX around the whole
    assert not answers_match("上海", "北京")
    assert not answers_match("选举权", "举权")  # 选 is no prefix to drop from a text answer
    assert not answers_match("", "")
    assert not answers_match("7", "")  # an empty gold matches nothing


def test_think_span():
    assert think_span(GOOD) == "\n3+4=7\n"
    assert think_span("<think>abc<answer>1</answer>") == "abc"  # unclosed: up to <answer>
    assert think_span("<think>abc") == "abc"
    assert think_span("<answer>1</answer>") is None


def test_score_replies_by_hand():
    replies = [
        GOOD,  # compliant, right; think "\n3+4=7\n" = 7 characters
        "<think>只有B对</think><answer>答案是B</answer>",  # compliant, right; think 4
        "<think>12*3=36</think>\n<answer>\n35\n</answer>",  # compliant, wrong; think 7
        "<think>算一下：1,000-1=999</think>答案是999",  # no <answer>, right by fallback; think 15
        "我不知道",  # non-compliant, no number, no think
    ]
    golds = ["7", "B", "36", "999", "4"]
    scores = score_replies(replies, golds, count_tokens=len)  # one "token" per character
    assert scores == {
        "n": 5,
        "compliance": 60.0,  # 3 of 5
        "accuracy": 60.0,  # replies 1, 2 and 4
        "strict_accuracy": 40.0,  # replies 1 and 2
        "mean_think_tokens": 8.25,  # (7 + 4 + 7 + 15) / 4
        "with_think": 4,
    }


def test_score_replies_edge_cases():
    with pytest.raises(ValueError, match="2 replies but 1 gold answers"):
        score_replies(["a", "b"], ["1"], count_tokens=len)
    assert score_replies([], [], count_tokens=len) == {
        "n": 0, "compliance": 0.0, "accuracy": 0.0, "strict_accuracy": 0.0,
        "mean_think_tokens": 0.0, "with_think": 0,
    }


def test_budget_table():
    rows = [
        (budget_label(), {"n": 4, "compliance": 75.0, "accuracy": 50.0, "strict_accuracy": 25.0,
                          "mean_think_tokens": 10.125, "with_think": 4}),
        (budget_label(64, 16, "等等"), {"n": 4, "compliance": 100.0, "accuracy": 2 / 3 * 100,
                                       "strict_accuracy": 2 / 3 * 100, "mean_think_tokens": 40.0,
                                       "with_think": 4}),
    ]
    assert format_table(rows) == (
        "| setting | n | compliance % | accuracy % | strict accuracy % | mean think tokens |\n"
        "|---|---:|---:|---:|---:|---:|\n"
        "| no forcing | 4 | 75.0 | 50.0 | 25.0 | 10.1 |\n"
        "| max 64, min 16 (等等) | 4 | 100.0 | 66.7 | 66.7 | 40.0 |"
    )
    assert budget_label(max_think_tokens=0) == "max 0"
    assert budget_label(min_think_tokens=8) == "min 8"
