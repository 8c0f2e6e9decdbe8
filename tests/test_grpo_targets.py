"""GRPO trains exactly what the policy sampled: each rollout's targets, pinned position by position.

A scripted model (its choice at every position fixed in advance, so sampling at any temperature
picks it) runs through the real batch decoder, the real budget forcing and the real calculator,
and the training row is read back: the stop token it sampled is trained (<|endoftext|> as well as
<|im_end|>), nothing after a cut at the length limit, and no token that the budget or the
calculator wrote. A step that trains no token leaves the weights as they were."""
import json
from types import SimpleNamespace

import pytest
import torch

import grpo
from dataset.problems import Problem
from model import SpongeBob, get_preset
from tokenizer import load_tokenizer
from trainer import parse_config

IGNORE = -100
PROBLEM = Problem("p:1", [{"role": "user", "content": "12 加 5 是多少？"}], "17")


class ScriptedModel(SpongeBob):
    """Predicts script[k] as the k-th token after a prompt of `start` tokens, whatever came before:
    a logit of 1e4 on it, 0 elsewhere, so greedy and sampled decoding both choose it."""

    def __init__(self, script: list[int], start: int):
        super().__init__(get_preset("spongebob-tiny"))
        self.script, self.start = script, start

    def forward(self, idx, cache=None, position_ids=None, attn_mask=None, last_only=False, **_):
        B, T = idx.shape
        if position_ids is None:
            position_ids = torch.arange(T).expand(B, T)
        if last_only:
            position_ids = position_ids[:, -1:]
        logits = torch.zeros(B, position_ids.size(1), self.config.vocab_size)
        k = position_ids + 1 - self.start  # the logits at position p choose the token at p + 1
        for b in range(B):
            for t in range(position_ids.size(1)):
                if 0 <= k[b, t] < len(self.script):
                    logits[b, t, self.script[k[b, t]]] = 1e4
        return logits


def rollout(tok, script, problem=PROBLEM, **flags):
    """One group of 2 rollouts of `problem` under the scripted policy, through grpo.py's own sampling and
    training rows; returns (its prompt as the decoder kept it, the training batch, the decoded sequences)."""
    values = dict(num_generations=2, batch_size=1, temperature=0.7, max_completion_length=24) | flags
    cfg = parse_config([], "t", stage_defaults=values, config_cls=grpo.GRPOConfig)
    problems = grpo.ProblemSet([problem], tok, cfg)
    prompt = problems.prompts[0]
    start = min(len(prompt), 512 - cfg.max_completion_length)  # the decoder keeps room for the completion
    engine = SimpleNamespace(model=ScriptedModel(script, start), device=torch.device("cpu"), dtype=torch.float32)
    seqs = grpo.sample_groups(engine, problems, [0], seed=0)
    batch = grpo.training_rows(seqs, torch.zeros(len(seqs)), torch.ones(len(seqs), dtype=torch.bool), tok.endoftext_id)
    return prompt[-start:], batch, seqs


def trained(batch, row, prompt):
    """The targets of one row from the last prompt position on, and the input ids they align with."""
    return batch["targets"][row, len(prompt) - 1:].tolist(), batch["input_ids"][row].tolist()


def ids(tok, text):
    return tok.encode(text)


@pytest.mark.parametrize("stop", ["endoftext", "im_end"])
def test_the_stop_token_trained_is_the_one_sampled(stop):
    tok = load_tokenizer()
    stop_id = tok.endoftext_id if stop == "endoftext" else tok.im_end_id
    reply = ids(tok, "<think>\n12+5=17\n</think>\n<answer>\n17\n</answer>")
    prompt, batch, seqs = rollout(tok, reply + [stop_id, 7, 7])
    assert [s.stop_id for s in seqs] == [stop_id, stop_id]
    for row in range(2):
        targets, inputs = trained(batch, row, prompt)
        assert targets == reply + [stop_id]  # every sampled token, the stop token it sampled last
        assert inputs[:len(prompt) + len(reply)] == prompt + reply  # what the model read, one position behind
        assert (batch["targets"][row, :len(prompt) - 1] == IGNORE).all()


def test_a_rollout_cut_at_the_length_limit_trains_its_tokens_and_no_stop():
    tok = load_tokenizer()
    reply = ids(tok, "<think>\n12+5=17\n</think>\n<answer>\n17\n</answer>")
    prompt, batch, seqs = rollout(tok, reply + [tok.im_end_id], max_completion_length=5)
    assert [s.finish for s in seqs] == ["length", "length"]
    targets, _ = trained(batch, 0, prompt)
    assert targets == reply[:5]


def test_budget_forced_tokens_get_no_target():
    tok = load_tokenizer()
    # The policy would think on; the budget closes its thinking after 2 tokens with </think>\n<answer>\n.
    script = ids(tok, "<think>\n12+5=17\n17\n</answer>") + [tok.im_end_id]
    prompt, batch, seqs = rollout(tok, script, max_think_tokens=2)
    forced = ids(tok, "</think>\n<answer>\n")
    completion = script[:3] + forced + script[7:]
    assert seqs[0].tokens + [seqs[0].stop_id] == completion
    assert seqs[0].forced_positions == [3, 4, 5, 6]
    targets, _ = trained(batch, 0, prompt)
    assert targets == script[:3] + [IGNORE] * 4 + script[7:]


def test_the_calculators_tokens_get_no_target():
    tok = load_tokenizer()
    written = ids(tok, "<think>\n12+5=")  # then the calculator writes 17, whatever the policy would say
    script = written + ids(tok, "99\n</think>\n<answer>\n17\n</answer>") + [tok.im_end_id]
    prompt, batch, seqs = rollout(tok, script, calculator=True)
    assert seqs[0].tool_positions == [len(written)]
    assert tok.decode([seqs[0].tokens[len(written)]]) == "17"
    targets, _ = trained(batch, 0, prompt)
    expected = list(script)
    expected[len(written)] = IGNORE
    assert targets == expected


def test_a_prompt_cut_by_the_decoder_is_trained_as_cut():
    tok = load_tokenizer()
    long = Problem("p:2", [{"role": "user", "content": "很长的题目。" * 400 + "12 加 5 是多少？"}], "17")
    reply = ids(tok, "<answer>\n17\n</answer>")
    prompt, batch, seqs = rollout(tok, reply + [tok.im_end_id], problem=long)
    assert len(prompt) == 512 - 24 and seqs[0].prompt == prompt  # the tiny model's 512 positions, less the reply's
    targets, inputs = trained(batch, 0, prompt)
    assert inputs[:len(prompt)] == prompt and targets == reply + [tok.im_end_id]


def test_the_loss_uses_the_sampling_temperature():
    """-log pi_T(a) with pi_T = softmax(logits / T): its gradient is A (one_hot - pi_T) / T."""
    logits = torch.tensor([[[2.0, 0.0, -1.0]]], requires_grad=True)
    batch = {"targets": torch.tensor([[0]]), "advantages": torch.tensor([[1.0]])}
    loss = grpo.GRPOLoss(None, beta=0.0, epsilon=0.2, temperature=0.5)(logits, batch)
    p = torch.softmax(torch.tensor([4.0, 0.0, -2.0]), dim=0)  # logits / 0.5, by hand
    assert float(loss.detach()) == pytest.approx(-1.0)  # ratio 1, A = 1
    loss.backward()
    assert torch.allclose(logits.grad[0, 0], -(torch.tensor([1.0, 0, 0]) - p) / 0.5, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])  # fused AdamW skips on the device, Muon on the host
def test_steps_whose_groups_are_all_dropped_leave_the_weights_as_they_were(tmp_path, monkeypatch, optimizer):
    """--dynamic_sampling drops every all-wrong group; with nothing trained, the step must not move the
    weights (no momentum, no weight decay), and the metrics row says so."""
    tok = load_tokenizer()
    wrong = "<think>\n12+5=16\n</think>\n<answer>\n16\n</answer>"

    class AllWrong:
        def __call__(self, model, prompts, samplings, *a, **k):
            return [type("Done", (), {"tokens": tok.encode(wrong), "finish": "stop", "stop_id": tok.im_end_id,
                                      "prompt": p, "tool_positions": [], "forced_positions": []})() for p in prompts]
    monkeypatch.setattr(grpo, "decode_batch", AllWrong())
    from test_grpo import grpo_run
    problems = [Problem(f"p:{i}", [{"role": "user", "content": f"{i} 加 1 是多少？"}], str(i + 1)) for i in range(4)]
    trainer = grpo_run(tmp_path, problems, tok, dynamic_sampling=True, weight_decay=0.1, max_steps=2, save_interval=2,
                       optimizer=optimizer)
    start = {k: v.clone() for k, v in trainer.engine.model.state_dict().items()}
    trainer.fit()
    saved = torch.load(tmp_path / "grpo.pth", weights_only=True)["model"]
    assert all(torch.equal(saved[k], start[k]) for k in start)
    rows = [json.loads(line) for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("empty_steps") for r in rows] == [1, 1] and rows[-1]["trained_groups"] == 0.0
