"""Generation: KV cache equals recomputation, sampling filters, stop ids and limits."""
import torch

from inference.generate import generate
from inference.sampling import SamplingConfig
from inference.kv_cache import KVCache
from model import SpongeBob, get_preset
from inference.sampling import apply_repetition_penalty, filter_top_k, filter_top_p, sample_next


def tiny_model(seed: int = 0) -> SpongeBob:
    torch.manual_seed(seed)
    # A wide init gives peaked, varied logits, so greedy decoding does not
    # collapse to one repeated token and the comparison below means something.
    return SpongeBob(get_preset("spongebob-tiny").with_changes(init_std=0.2)).eval()


def test_cached_and_uncached_greedy_decoding_are_identical():
    model = tiny_model()
    greedy = SamplingConfig(max_new_tokens=48, temperature=0)
    for prompt in ([5, 17, 300], list(range(100, 160)), [7]):
        cached = list(generate(model, prompt, greedy, use_cache=True))
        uncached = list(generate(model, prompt, greedy, use_cache=False))
        assert cached == uncached
        assert len(cached) == 48 and len(set(cached)) > 5


def test_cache_with_multi_token_chunks_matches_one_full_pass():
    # Prefill, then a 5-token chunk, then single tokens: the chunk exercises
    # the bottom-right causal mask that SDPA's is_causal does not provide.
    model = tiny_model(1)
    idx = torch.randint(0, 6400, (1, 20))
    with torch.no_grad():
        full = model(idx)
        cache = KVCache.for_model(model, 1, 20)
        parts = [model(idx[:, :12], cache=cache), model(idx[:, 12:17], cache=cache)]
        parts += [model(idx[:, t:t + 1], cache=cache) for t in range(17, 20)]
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)


def test_same_seed_same_sample_and_stop_ids_end_generation():
    model = tiny_model()
    cfg = SamplingConfig(max_new_tokens=30, temperature=1.0, top_k=50, top_p=0.9)
    run = lambda: list(generate(model, [1, 2, 3], cfg, generator=torch.Generator().manual_seed(7)))
    first = run()
    assert first == run() and len(first) == 30
    # Stopping on the 4th token yields exactly the 3 before it, not the stop id.
    stop_cfg = SamplingConfig(max_new_tokens=30, temperature=1.0, top_k=50, top_p=0.9, stop_ids=(first[3],))
    stopped = list(generate(model, [1, 2, 3], stop_cfg, generator=torch.Generator().manual_seed(7)))
    assert stopped == first[:first.index(first[3])]


def test_generation_respects_the_context_window():
    model = tiny_model()  # tiny preset: 512 positions
    out = list(generate(model, list(range(600)), SamplingConfig(max_new_tokens=40, temperature=0)))
    assert len(out) == 40


def test_top_k_keeps_exactly_the_k_best():
    logits = torch.tensor([1.0, 5.0, 3.0, 4.0, 2.0])
    kept = torch.isfinite(filter_top_k(logits, 2)).nonzero().flatten().tolist()
    assert kept == [1, 3]


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([0.5, 0.1, 0.3, 0.1])
    logits = probs.log()
    # 0.5 alone < 0.7; 0.5 + 0.3 reaches it, so tokens 0 and 2 stay.
    assert torch.isfinite(filter_top_p(logits, 0.7)).nonzero().flatten().tolist() == [0, 2]
    assert torch.isfinite(filter_top_p(logits, 0.5)).nonzero().flatten().tolist() == [0]
    assert torch.isfinite(filter_top_p(logits, 1.0)).all()


def test_repetition_penalty_lowers_seen_tokens_whatever_their_sign():
    logits = torch.tensor([2.0, -2.0, 1.0])
    out = apply_repetition_penalty(logits, torch.tensor([0, 1, 1]), 2.0)
    assert out.tolist() == [1.0, -4.0, 1.0]


def test_temperature_zero_is_argmax_even_with_filters():
    logits = torch.tensor([0.1, 3.0, 2.9])
    cfg = SamplingConfig(temperature=0, top_k=1, top_p=0.1)
    assert sample_next(logits, torch.tensor([], dtype=torch.long), cfg) == 1
