"""The calculator tool (inference/calculator.py): which equations it answers, with what tokens,
and how generation feeds them (generate.py and batch.py alike, at pinned positions)."""
import pytest
import torch

from inference.batch import decode_batch
from inference.calculator import Calculator, evaluate
from inference.generate import generate
from inference.sampling import SamplingConfig
from model import SpongeBob, get_preset
from tokenizer import load_tokenizer


@pytest.mark.parametrize("a, op, b, value", [
    (14, "+", 5, 19), (12, "-", 12, 0), (3, "×", 4, 12), (3, "*", 4, 12), (20, "÷", 4, 5), (20, "/", 4, 5),
    (7, "÷", 2, None),   # not whole: left to the model
    (3, "-", 5, None),   # negative: the demo's problems never need one
    (5, "÷", 0, None),
])
def test_evaluate_by_hand(a, op, b, value):
    assert evaluate(a, op, b) == value


def test_result_tokens_only_right_after_an_equations_equals_sign():
    tok = load_tokenizer()
    calc = Calculator.for_tokenizer(tok)
    assert calc.result_ids(tok.encode("用加法：14+5=")) == tok.encode("19")
    assert calc.result_ids(tok.encode("先算：3×4=12。\n再算：12-12=")) == tok.encode("0")
    assert calc.result_ids(tok.encode("7×2=14，20-14=")) == tok.encode("6")
    assert calc.result_ids(tok.encode("用加法：14+5=19")) == []   # not at the "=": nothing to write
    assert calc.result_ids(tok.encode("答案=")) == []             # no equation before it
    assert calc.result_ids(tok.encode("12-15=")) == []            # negative
    assert calc.result_ids([]) == []


class FakeCalculator:
    """Writes [42, 43] the first time `trigger` is the last token (so any model can be used)."""

    def __init__(self, trigger: int):
        self.trigger, self.fired = trigger, False

    def result_ids(self, tokens):
        if tokens[-1] == self.trigger and not self.fired:
            self.fired = True
            return [42, 43]
        return []


def test_generation_feeds_the_tools_tokens_at_their_place():
    torch.manual_seed(0)
    model = SpongeBob(get_preset("spongebob-tiny")).eval()
    prompt = [5, 900, 17, 3000]
    plain = SamplingConfig(max_new_tokens=8, temperature=0)
    alone = list(generate(model, prompt, plain))
    trigger = alone[1]
    with_tool = SamplingConfig(max_new_tokens=8, temperature=0, calculator=FakeCalculator(trigger))
    tokens = list(generate(model, prompt, with_tool))
    assert tokens[:4] == alone[:2] + [42, 43]   # the model's two tokens, then the tool's, in place of sampling
    # The model goes on from the tool's tokens: what greedy gives after prompt + those four.
    assert tokens[4:] == list(generate(model, prompt + tokens[:4], SamplingConfig(max_new_tokens=4, temperature=0)))
    with_tool = SamplingConfig(max_new_tokens=8, temperature=0, calculator=FakeCalculator(trigger))
    [seq] = decode_batch(model, [prompt], [with_tool])
    assert seq.tokens == tokens and seq.tool_positions == [2, 3]
