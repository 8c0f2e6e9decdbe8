"""Budget forcing: forced close at the cap, extension of an early close, and how it
meets stop ids, max_new_tokens and the KV cache.

Most tests drive generate with ScriptedModel, whose k-th new token is script[k]
whatever came before, so every expected sequence below is worked out by hand:
output[k] is the forced token if one is due, else script[k] (possibly replaced).
"""
from types import SimpleNamespace

import pytest
import torch

from inference.generate import generate
from inference.sampling import SamplingConfig
from model import SpongeBob, get_preset
from inference.budget import ThinkBudget, think_budget, thinking_at_end
from tokenizer import load_tokenizer

OPEN, CLOSE, ANSWER, NL = 3, 4, 5, 9  # <think>, </think>, <answer>, a newline stand-in
FORCED_CLOSE = (CLOSE, NL, ANSWER, NL)  # "</think>\n<answer>\n"
STOP = 2


class ScriptedModel(torch.nn.Module):
    """A stand-in for SpongeBob: its k-th new token is script[k]; it records every id it is fed."""

    def __init__(self, script: list[int], prompt_len: int, vocab: int = 64):
        super().__init__()
        self.embed = torch.nn.Embedding(1, 1)  # generate reads its device and dtype (for the cache)
        self.config = SimpleNamespace(max_position_embeddings=512, n_layers=1, n_kv_heads=1, head_dim=1)
        self.script, self.prompt_len, self.vocab = script, prompt_len, vocab
        self.fed: list[int] = []

    def forward(self, ids: torch.Tensor, cache=None) -> torch.Tensor:
        if cache is not None:
            self.fed += ids[0].tolist()
            cache.advance(ids.size(1))
            length = cache.length
        else:
            length = ids.size(1)
        logits = torch.zeros(1, ids.size(1), self.vocab)
        logits[0, -1, self.script[length - self.prompt_len]] = 1.0
        return logits


def budget(max_think: int | None = None, min_think: int = 0, continue_ids: tuple[int, ...] = (7, 8)) -> ThinkBudget:
    return ThinkBudget(OPEN, CLOSE, FORCED_CLOSE, continue_ids, max_think, min_think)


def run(script: list[int], prompt: list[int], think: ThinkBudget | None, max_new: int = 20,
        stop_ids: tuple[int, ...] = (STOP,)) -> list[int]:
    """Generate with and without the cache; both must agree, and the cached run must
    have fed every yielded token but the last, one at a time, after the prompt."""
    cfg = SamplingConfig(max_new_tokens=max_new, temperature=0, stop_ids=stop_ids)
    cached_model = ScriptedModel(script, len(prompt))
    cached = list(generate(cached_model, prompt, cfg, use_cache=True, budget=think))
    uncached = list(generate(ScriptedModel(script, len(prompt)), prompt, cfg, use_cache=False, budget=think))
    assert cached == uncached
    last_fed = len(cached) if len(cached) < max_new else len(cached) - 1
    assert cached_model.fed == prompt + cached[:last_fed]
    return cached


NEVER_CLOSES = list(range(10, 40))  # a model that thinks forever


def test_forced_close_exactly_at_the_cap_when_the_prompt_opened_thinking():
    out = run(NEVER_CLOSES, [1, OPEN], budget(max_think=3), max_new=9)
    # 3 thinking tokens, the 4 forced ones (script[3..6] unused), then the model again.
    assert out == [10, 11, 12, CLOSE, NL, ANSWER, NL, 17, 18]


def test_forced_close_when_the_model_opens_thinking_itself():
    script = [OPEN] + NEVER_CLOSES
    assert run(script, [1], budget(max_think=2), max_new=8) == [OPEN, 10, 11, CLOSE, NL, ANSWER, NL, 16]
    # A cap of 0 closes at once.
    assert run(script, [1], budget(max_think=0), max_new=6) == [OPEN, CLOSE, NL, ANSWER, NL, 14]


def test_a_model_that_closes_within_the_cap_is_left_alone():
    script = [10, CLOSE, ANSWER, 20, 6, STOP]
    assert run(script, [1, OPEN], budget(max_think=5)) == [10, CLOSE, ANSWER, 20, 6]


def test_early_close_is_replaced_by_the_continuation_word():
    script = [10, 11, CLOSE, 20, 21, 22, CLOSE, ANSWER, 30, 6, STOP]
    out = run(script, [1, OPEN], budget(min_think=4, continue_ids=(7, 8)))
    # 10 11 are 2 thinking tokens; the close at k=2 becomes 7, then 8 is forced
    # (script[3] unused): 4 tokens; 21 22 make 6, so the close at k=6 is accepted.
    assert out == [10, 11, 7, 8, 21, 22, CLOSE, ANSWER, 30, 6]


def test_every_early_close_is_replaced():
    script = [10, CLOSE, CLOSE, CLOSE, CLOSE, ANSWER, STOP]
    # After 10: 1 token; each replaced close adds one (7); the close at k=3 sees 3.
    assert run(script, [1, OPEN], budget(min_think=3, continue_ids=(7,))) == [10, 7, 7, CLOSE, CLOSE, ANSWER]


def test_the_cap_cuts_a_continuation_word_short():
    script = [10, 11, CLOSE] + NEVER_CLOSES
    out = run(script, [1, OPEN], budget(max_think=4, min_think=3, continue_ids=(7, 8, 8)), max_new=8)
    # 10 11 (2), close -> 7 (3), 8 (4 = the cap): the last 8 of the word is dropped.
    assert out == [10, 11, 7, 8, CLOSE, NL, ANSWER, NL]


def test_no_budget_or_no_open_thinking_changes_nothing():
    script = [10, CLOSE, 11, 12, 13, 14, STOP]
    expected = [10, CLOSE, 11, 12, 13, 14]
    assert run(script, [1, OPEN], None) == expected
    # Thinking closed in the prompt, or never opened: the limits do not apply.
    for prompt in ([1, OPEN, 15, CLOSE], [1, 15]):
        assert run(script, prompt, budget(max_think=1, min_think=1)) == expected


def test_max_new_tokens_cuts_a_forced_close():
    assert run(NEVER_CLOSES, [1, OPEN], budget(max_think=2), max_new=4) == [10, 11, CLOSE, NL]


def test_a_sampled_stop_id_ends_thinking_even_below_the_minimum():
    assert run([10, STOP, 11], [1, OPEN], budget(min_think=5)) == [10]
    # The stop check comes first: a caller stopping at </think> gets its stop.
    assert run([10, CLOSE, 11], [1, OPEN], budget(min_think=5), stop_ids=(CLOSE,)) == [10]


def test_forced_tokens_are_never_taken_for_stop_ids():
    out = run(NEVER_CLOSES, [1, OPEN], budget(max_think=1), max_new=6, stop_ids=(NL,))
    assert out == [10, CLOSE, NL, ANSWER, NL, 15]


def test_thinking_at_end_reads_the_last_tag():
    assert thinking_at_end([1, OPEN, 10], OPEN, CLOSE)
    assert not thinking_at_end([1, OPEN, 10, CLOSE, 11], OPEN, CLOSE)
    assert thinking_at_end([OPEN, CLOSE, OPEN], OPEN, CLOSE)
    assert not thinking_at_end([1, 10], OPEN, CLOSE)


def test_think_budget_builds_from_the_tokenizer_and_checks_its_limits():
    tok = load_tokenizer()
    assert think_budget(tok) is None
    made = think_budget(tok, max_think_tokens=8, min_think_tokens=2, continue_word="Wait")
    newline = tok.encode("\n")
    assert len(newline) == 1
    assert (made.think_open_id, made.think_close_id) == (3, 4)
    assert made.forced_close_ids == (4, newline[0], 5, newline[0])
    assert tok.decode(list(made.continue_ids)) == "Wait"
    assert think_budget(tok, min_think_tokens=1).max_think_tokens is None
    with pytest.raises(ValueError, match="min_think_tokens 9 is above max_think_tokens 8"):
        think_budget(tok, max_think_tokens=8, min_think_tokens=9)
    with pytest.raises(ValueError, match="max_think_tokens must be 0 or more"):
        think_budget(tok, max_think_tokens=-1)
    with pytest.raises(ValueError, match="continuation word is empty"):
        think_budget(tok, min_think_tokens=1, continue_word="")
    with pytest.raises(ValueError, match="must not contain <think> or </think>"):
        think_budget(tok, min_think_tokens=1, continue_word="等等</think>")
    with pytest.raises(ValueError, match="must start with think_close_id"):
        ThinkBudget(OPEN, CLOSE, (NL, CLOSE), (7,), 4, 0)


def test_budget_forcing_on_the_real_model_is_the_same_with_and_without_the_cache():
    torch.manual_seed(0)
    model = SpongeBob(get_preset("spongebob-tiny").with_changes(init_std=0.2)).eval()
    prompt = [1, 50, 60, OPEN]
    plain = list(generate(model, prompt, SamplingConfig(max_new_tokens=3, temperature=0)))
    # Let a token this model really says play </think>, so the early-close path runs too.
    close = plain[2]
    think = ThinkBudget(OPEN, close, (close, NL, ANSWER, NL), (77, 78), max_think_tokens=10, min_think_tokens=5)
    greedy = SamplingConfig(max_new_tokens=16, temperature=0)
    for cfg in (greedy, SamplingConfig(max_new_tokens=16, temperature=1.0, top_k=50)):
        cached, uncached = [list(generate(model, prompt, cfg, use_cache=use_cache, budget=think,
                                          generator=torch.Generator().manual_seed(3)))
                            for use_cache in (True, False)]
        assert cached == uncached
        if cfg is greedy:
            assert cached[:3] == plain[:2] + [77]  # the early close at k=2 was replaced
            assert cached[10:14] == [close, NL, ANSWER, NL]  # and the cap closed after 10 thinking tokens
