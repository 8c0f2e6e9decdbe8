"""Batched generation (inference/batch.py) gives every row exactly what generating it alone gives:
greedy and seeded sampling, rows of different lengths, chunked prefill, stops and thinking budgets."""
import torch

from inference.batch import BatchDecoder, decode_batch, generate_batch
from inference.budget import ThinkBudget
from inference.generate import generate
from inference.sampling import SamplingConfig
from model import SpongeBob, get_preset


def tiny():
    torch.manual_seed(0)
    return SpongeBob(get_preset("spongebob-tiny")).eval()


PROMPTS = [torch.randint(7, 6400, (n,), generator=torch.Generator().manual_seed(n)).tolist()
           for n in (3, 17, 5, 40, 1, 9, 25, 12)]


def test_batched_greedy_rows_equal_each_prompt_alone():
    model = tiny()
    cfg = SamplingConfig(max_new_tokens=24, temperature=0, repetition_penalty=1.1)
    alone = [list(generate(model, p, cfg)) for p in PROMPTS]
    assert generate_batch(model, PROMPTS, [cfg] * 8, prefill_chunk=7) == alone
    assert len({tuple(a) for a in alone}) > 4  # the rows really differ


def test_seeded_sampling_per_row_is_independent_of_the_batch():
    model = tiny()
    cfg = SamplingConfig(max_new_tokens=20, temperature=1.0, top_p=0.9, top_k=50)
    alone = [list(generate(model, p, cfg, generator=torch.Generator().manual_seed(i))) for i, p in enumerate(PROMPTS)]
    batched = generate_batch(model, PROMPTS, [cfg] * 8, [torch.Generator().manual_seed(i) for i in range(8)])
    assert batched == alone


def test_stop_ids_budgets_and_finish_reasons_match_generate():
    model = tiny()
    first = list(generate(model, PROMPTS[1], SamplingConfig(max_new_tokens=12, temperature=0)))
    stop = SamplingConfig(max_new_tokens=12, temperature=0, stop_ids=(first[4],))
    budget = ThinkBudget(3, 4, (4, 9, 5, 9), (7, 8), max_think_tokens=2)
    prompt = PROMPTS[2] + [3]  # ends inside <think> (id 3 here): the budget closes it after 2 tokens
    cases = [(PROMPTS[1], stop, None), (prompt, SamplingConfig(max_new_tokens=10, temperature=0), budget)]
    seqs = decode_batch(model, [p for p, _, _ in cases], [c for _, c, _ in cases], None, [b for _, _, b in cases])
    for seq, (p, c, b) in zip(seqs, cases):
        assert seq.tokens == list(generate(model, p, c, budget=b))
    assert [s.finish for s in seqs] == ["stop", "length"]
    assert seqs[1].tokens[2:6] == [4, 9, 5, 9]


def test_slots_are_freed_and_reused_mid_flight():
    model = tiny()
    cfg = SamplingConfig(max_new_tokens=6, temperature=0)
    decoder = BatchDecoder(model, slots=2, prefill_chunk=4)
    names = {decoder.add(PROMPTS[0], cfg): "a", decoder.add(PROMPTS[3], cfg): "b"}
    assert decoder.full
    out = {"a": [], "b": [], "c": []}

    def run_until(done):
        while not done():
            for slot, token in decoder.step():
                if token is not None:
                    out[names[slot]].append(token)

    slot_a = next(s for s, n in names.items() if n == "a")
    run_until(lambda: decoder.active[slot_a].finish is not None)
    decoder.remove(slot_a)
    names[decoder.add(PROMPTS[5], cfg)] = "c"  # joins in the freed slot while b is still decoding
    run_until(lambda: all(seq.finish is not None for seq in decoder.active.values()))
    for name, prompt in (("a", PROMPTS[0]), ("b", PROMPTS[3]), ("c", PROMPTS[5])):
        assert out[name] == list(generate(model, prompt, cfg)), name


def test_a_short_prompt_is_prefilled_before_the_rest_of_a_long_one():
    model = tiny()
    cfg = SamplingConfig(max_new_tokens=3, temperature=0)
    decoder = BatchDecoder(model, slots=2, prefill_chunk=4)
    long_prompt, short_prompt = list(range(10, 50)), [1, 2, 3]
    slot_long = decoder.add(long_prompt, cfg)
    decoder.step()  # the first chunk of the long prompt: 4 of 40 tokens
    assert decoder.active[slot_long].cached == 4
    slot_short = decoder.add(short_prompt, cfg)
    decoder.step()  # 3 tokens left beat 36: the short prompt goes next, whole
    assert decoder.active[slot_short].cached == 3 and decoder.active[slot_long].cached == 4
    first = dict(decoder.step())  # the short one samples its first token; the long one gets its second chunk
    assert first[slot_short] is not None and decoder.active[slot_long].cached == 8
    out = {slot_short: [first[slot_short]], slot_long: []}
    while any(seq.finish is None for seq in decoder.active.values()):
        for slot, token in decoder.step():
            if token is not None:
                out[slot].append(token)
    assert out[slot_short] == list(generate(model, short_prompt, cfg))
    assert out[slot_long] == list(generate(model, long_prompt, cfg))
