"""BLEU-4 / ROUGE against values worked out by hand in the comments (never by the code under test)."""
import math

import pytest

from evaluation.text_metrics import char_tokens, corpus_scores, rouge_l, rouge_n, sentence_bleu4

# Reference 猫坐在垫子上 (6 chars), hypothesis 猫在垫子上 (5 chars): the running example.
CAT_REF, CAT_HYP = list("猫坐在垫子上"), list("猫在垫子上")
# n-grams of the hypothesis vs the reference:
#   1: 猫 在 垫 子 上 (5), all in the reference          -> 5 matches / 5; reference has 6
#   2: 猫在 在垫 垫子 子上 (4); ref 猫坐 坐在 在垫 垫子 子上 -> 3 matches / 4; reference has 5
#   3: 猫在垫 在垫子 垫子上 (3); ref has 在垫子 垫子上   -> 2 matches / 3
#   4: 猫在垫子 在垫子上 (2); ref has 在垫子上           -> 1 match  / 2
# geometric mean (1 * 3/4 * 2/3 * 1/2) ** (1/4) = (1/4) ** (1/4) = 1/sqrt(2)
# c = 5 <= r = 6, so brevity penalty exp(1 - 6/5) = exp(-0.2)
CAT_BLEU = math.exp(-0.2) / math.sqrt(2)  # = 0.5789...
CAT_ROUGE1 = 2 * 5 / (5 + 6)  # P = 5/5, R = 5/6 -> F1 = 2PR/(P+R) = 10/11
CAT_ROUGE2 = 2 * 3 / (4 + 5)  # P = 3/4, R = 3/5 -> F1 = (9/10)/(27/20) = 2/3
CAT_ROUGEL = 2 * 5 / (5 + 6)  # LCS = 猫在垫子上 (skips 坐), length 5 -> 10/11


def test_char_tokens_mixed_text():
    # ASCII letter/digit runs stay whole; "." splits 3.5; CJK and punctuation one each;
    # the ASCII space, the full-width space U+3000, tab and newline are dropped.
    text = "GPT4有3.5亿 参数，OK!\u3000好\t\n的"
    assert char_tokens(text) == ["GPT4", "有", "3", ".", "5", "亿", "参", "数", "，", "OK", "!", "好", "的"]
    assert char_tokens("hello world") == ["hello", "world"]
    assert char_tokens("  \n") == []


def test_identical_strings_score_100():
    text = "今天天气很好，我们去公园。"
    scores = corpus_scores([text], [text])
    assert scores == pytest.approx({"bleu-4": 100, "rouge-1": 100, "rouge-2": 100, "rouge-l": 100})


def test_cat_example_each_metric():
    assert sentence_bleu4(CAT_HYP, CAT_REF) == pytest.approx(CAT_BLEU)
    assert sentence_bleu4(CAT_HYP, CAT_REF) == pytest.approx(0.578930, abs=1e-6)
    assert rouge_n(CAT_HYP, CAT_REF, 1) == pytest.approx(10 / 11)
    assert rouge_n(CAT_HYP, CAT_REF, 2) == pytest.approx(2 / 3)
    assert rouge_l(CAT_HYP, CAT_REF) == pytest.approx(10 / 11)


def test_bleu_method3_smoothing_two_zero_orders():
    # hyp 北京我爱 vs ref 我爱北京, both 4 tokens:
    #   1: 4/4; 2: 北京 京我 我爱 vs 我爱 爱北 北京 -> 2/3
    #   3: 北京我 京我爱 vs 我爱北 爱北京 -> 0 of 2 -> smoothed, k = 1: 1/(2 * 2) = 1/4
    #   4: 北京我爱 vs 我爱北京 -> 0 of 1 -> smoothed, k = 2: 1/(4 * 1) = 1/4
    # c = r -> BP = exp(0) = 1; BLEU = (1 * 2/3 * 1/4 * 1/4) ** (1/4) = (1/24) ** (1/4)
    assert sentence_bleu4(list("北京我爱"), list("我爱北京")) == pytest.approx((1 / 24) ** 0.25)
    assert sentence_bleu4(list("北京我爱"), list("我爱北京")) == pytest.approx(0.451801, abs=1e-6)


def test_bleu_hypothesis_shorter_than_four():
    # hyp 北京 (2) vs ref 我爱北京 (4): p1 = 2/2, p2 = 1/1; no 3- or 4-grams exist, the
    # denominator is guarded to 1: p3 = 1/(2*1), p4 = 1/(4*1). BP = exp(1 - 4/2) = exp(-1).
    expected = math.exp(-1) * (1 / 8) ** 0.25
    assert sentence_bleu4(list("北京"), list("我爱北京")) == pytest.approx(expected)


def test_bleu_longer_hypothesis_has_no_brevity_penalty():
    # hyp 我爱北京天安门 (7) vs ref 我爱北京 (4): c > r -> BP = 1.
    #   1: 4/7; 2: 我爱 爱北 北京 of 6 -> 3/6; 3: 我爱北 爱北京 of 5 -> 2/5; 4: 我爱北京 of 4 -> 1/4
    # (4/7 * 1/2 * 2/5 * 1/4) = 8/280 = 1/35
    assert sentence_bleu4(list("我爱北京天安门"), list("我爱北京")) == pytest.approx((1 / 35) ** 0.25)


def test_bleu_zero_without_unigram_match_or_hypothesis():
    assert sentence_bleu4(list("狗"), list("猫")) == 0.0
    assert sentence_bleu4([], list("猫")) == 0.0


def test_rouge_clips_repeated_ngrams():
    # hyp 的的的 vs ref 的猫: 的 counts min(3, 1) = 1 match; F1 = 2*1/(3+2) = 2/5
    assert rouge_n(list("的的的"), list("的猫"), 1) == pytest.approx(2 / 5)


def test_rouge_order_sensitivity():
    # hyp 北京我爱 vs ref 我爱北京: same characters -> ROUGE-1 = 1;
    # bigrams 北京 我爱 match of 3 each -> 2*2/6 = 2/3; LCS = 2 (北京 or 我爱) -> 2*2/8 = 1/2
    hyp, ref = list("北京我爱"), list("我爱北京")
    assert rouge_n(hyp, ref, 1) == pytest.approx(1.0)
    assert rouge_n(hyp, ref, 2) == pytest.approx(2 / 3)
    assert rouge_l(hyp, ref) == pytest.approx(1 / 2)


def test_rouge_l_textbook_lcs():
    # CLRS's example: LCS(ABCBDAB, BDCABA) = 4 (e.g. BCBA) -> F1 = 2*4/(7+6) = 8/13
    assert rouge_l(list("ABCBDAB"), list("BDCABA")) == pytest.approx(8 / 13)
    assert rouge_l([], list("猫")) == 0.0


def test_corpus_scores_mean_and_empty_prediction():
    # Example 1 is the cat example; example 2 is an empty prediction, which scores 0.
    scores = corpus_scores(["猫在垫子上", " "], ["猫坐在垫子上", "任何答案"])
    assert scores["bleu-4"] == pytest.approx(100 * CAT_BLEU / 2)
    assert scores["rouge-1"] == pytest.approx(100 * CAT_ROUGE1 / 2)  # 45.45...
    assert scores["rouge-2"] == pytest.approx(100 * CAT_ROUGE2 / 2)  # 33.33...
    assert scores["rouge-l"] == pytest.approx(100 * CAT_ROUGEL / 2)


def test_corpus_scores_edge_cases():
    assert corpus_scores([], []) == {"bleu-4": 0.0, "rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        corpus_scores(["a", "b"], ["a"])
