"""GRPO: advantages, the clipped objective and the k3 KL by hand; rewards on hand-written
completions; problems with and without gold; exact resume; one-line errors."""
import json
import math

import pytest
import torch

import grpo
from dataset.problems import Problem, iter_problems
from dataset.readers import DataError, SkipStats
from model import SpongeBob, get_preset, save_model
from tokenizer import load_tokenizer
from engine_run import Run
from trainer import ConfigError, parse_config
from grpo import GRPOLoss, ProblemEval, ProblemSet, clipped_objective, group_advantages, k3_kl
from evaluation.rewards import accuracy_reward, arithmetic_reward, format_reward, parse_reward_weights

GOOD = "<think>\n12 + 5 = 17\n</think>\n<answer>\n17\n</answer>"
PROBLEM = Problem("p:1", [{"role": "user", "content": "12 加 5 是多少？"}], "17")


def test_group_advantages_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    assert group_advantages(rewards, scale=False).tolist() == [[0.5, -0.5, -0.5, 0.5], [0.0] * 4]
    scaled = group_advantages(rewards, scale=True)
    # std (unbiased) of 1, 0, 0, 1 is sqrt(1/3); an all-equal group stays 0: no signal.
    assert torch.allclose(scaled[0], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (math.sqrt(1 / 3) + 1e-4))
    assert scaled[1].tolist() == [0.0] * 4


def test_the_clipped_objective_by_hand():
    logp, old = torch.log(torch.tensor([0.6, 0.6])), torch.log(torch.tensor([0.4, 0.4]))  # ratio 1.5
    loss, clipped = clipped_objective(logp, old, torch.tensor([1.0, -1.0]), epsilon=0.2)
    # A = +1: min(1.5, 1.2) = 1.2, clipped; A = -1: min(-1.5, -1.2) = -1.5, not clipped.
    assert torch.allclose(loss, torch.tensor([-1.2, 1.5])) and clipped.tolist() == [True, False]


def test_k3_by_hand():
    kl = k3_kl(torch.log(torch.tensor(0.5)), torch.log(torch.tensor(0.25)))
    assert math.isclose(float(kl), 0.5 - math.log(0.5) - 1, rel_tol=1e-6)  # d = log 0.5: e^d - d - 1


def test_one_update_per_rollout_is_the_policy_gradient():
    # Ratio 1 (no old_logps): the loss is -sum A_t and its gradient -A_t (one_hot - softmax).
    logits = torch.tensor([[[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]]], requires_grad=True)
    batch = {"targets": torch.tensor([[2, 0]]), "advantages": torch.tensor([[2.0, -1.0]])}
    loss = GRPOLoss(None, beta=0.0, epsilon=0.2)(logits, batch)
    assert math.isclose(float(loss), -(2.0 - 1.0), rel_tol=1e-6)
    loss.backward()
    p = torch.softmax(logits.detach(), dim=-1)[0]
    expected = torch.stack([-2.0 * (torch.tensor([0.0, 0, 1]) - p[0]), 1.0 * (torch.tensor([1.0, 0, 0]) - p[1])])
    assert torch.allclose(logits.grad[0], expected, atol=1e-6)


@pytest.mark.parametrize("completion,accuracy,fmt", [
    (GOOD, 1.0, 1.0),
    (GOOD.replace("17\n</answer>", "18\n</answer>"), 0.0, 1.0),             # wrong
    ("<think>\n12 + 5 = 17\n<answer>\n17\n</answer>", 1.0, 0.0),              # malformed: no </think>
    ("<think>\n12 + 5\n</think>\n<answer>\n17\n</answer>\n<answer>17</answer>", 1.0, 0.0),  # a tag twice
    ("", 0.0, 0.0),                                                            # empty
])
def test_rewards_on_hand_written_completions(completion, accuracy, fmt):
    assert accuracy_reward(completion, PROBLEM) == accuracy and format_reward(completion, PROBLEM) == fmt


@pytest.mark.parametrize("completion,share", [
    ("<think>\n12+9=21。\n20-7=13。\n</think>", 1.0),                     # both right
    ("3 × 4 = 12，18÷3=6，7÷2=3。", 2 / 3),                                 # spaces, ×, ÷; 7÷2 is not 3
    ("10-3=8，2*2=4。", 0.5),
    ("1.5+2=3.5", 0.0),                                                     # not integers: not a calculation here
    ("5/0=0", 0.0),                                                         # no division by zero
    ("<think>\n所以有17个。\n</think>", 0.0),                               # no calculation at all
])
def test_arithmetic_reward_scores_each_written_calculation(completion, share):
    assert math.isclose(arithmetic_reward(completion, PROBLEM), share)


def test_reward_weights_and_stage_flags_fail_in_one_line(tmp_path):
    assert parse_reward_weights("accuracy:1, format:0.2") == {"accuracy": 1.0, "format": 0.2}
    for bad in ("accuracy=1", "speed:1", "accuracy:x", "accuracy:0"):
        with pytest.raises(ValueError, match="--reward_weights .*accuracy, format, arithmetic"):
            parse_reward_weights(bad)
    cfg = parse_config(["--num_generations", "1"], "t", grpo.REFERENCE, config_cls=grpo.GRPOConfig)
    with pytest.raises(ConfigError, match="--num_generations 1: GRPO compares completions within a group"):
        cfg.check()
    cfg = parse_config(["--num_iterations", "2", "--accumulation_steps", "2"], "t", grpo.REFERENCE,
                       config_cls=grpo.GRPOConfig)
    with pytest.raises(ConfigError, match="--num_iterations 2: above 1 only with --accumulation_steps 1"):
        cfg.check()


def test_problems_need_a_gold_answer(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [{"conversations": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": GOOD}],
             "answer": "2"},
            {"conversations": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataError, match="p.jsonl:2: no gold answer"):
        list(iter_problems(path))
    skip = SkipStats()
    problems = list(iter_problems(path, skip=skip))
    assert [p.gold for p in problems] == ["2"] and skip.counts == {"no gold answer": 1}
    rows[1]["conversations"][1]["content"] = GOOD  # a reply with <answer> is gold enough
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert [p.gold for p in iter_problems(path)] == ["2", "17"]


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_raw_gsm8k_and_ape210k_are_read_with_their_final_answers_as_gold(tmp_path):
    gsm = write_rows(tmp_path / "gsm.jsonl", [
        {"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
        {"question": "How many eggs in 2 days at 1,080 a day?", "answer": "1,080 * 2 = 2,160\n#### 2,160"}])
    problems = list(iter_problems(gsm))
    assert [p.gold for p in problems] == ["7", "2160"]  # not the worked solution
    assert problems[0].prompt == [{"role": "user", "content": "Tom has 3 apples and buys 4 more. How many?"}]
    ape = write_rows(tmp_path / "ape.json", [
        {"id": "1", "segmented_text": "…", "original_text": "王阿姨每分钟打60字，15分钟打多少字？", "ans": "900",
         "equation": "x=60*15"},
        {"id": "2", "segmented_text": "…", "original_text": "分数？", "ans": "4(5/11)", "equation": "x=4+5/11"},
        {"id": "3", "segmented_text": "…", "original_text": "百分数？", "ans": "25%", "equation": "x=1/4"}])
    problems = list(iter_problems(ape))
    assert [p.gold for p in problems] == ["900", "49/11", "25%"]
    assert problems[0].prompt == [{"role": "user", "content": "王阿姨每分钟打60字，15分钟打多少字？"}]
    assert accuracy_reward("<think>\n60*15\n</think>\n<answer>\n900\n</answer>", problems[0]) == 1.0


def test_golds_that_are_not_short_answers_are_refused_by_file_line(tmp_path):
    def r1(question, gold):
        return {"conversations": [{"role": "user", "content": question}, {"role": "assistant", "content": GOOD}],
                "answer": gold}
    # Read as a chat (--data_format qa), a GSM8K answer is its whole solution: never earnable.
    long = write_rows(tmp_path / "long.jsonl",
                      [{"question": "3+4?", "answer": "He has 3 apples and buys 4 more: 3 + 4 = 7.\n#### 7"}])
    with pytest.raises(DataError) as info:
        list(iter_problems(long, data_format="qa"))
    message = str(info.value)
    assert message.startswith(f"{long}:1: the gold answer is 50 characters") and "\n" not in message
    assert f"python -m dataset.convert --preset gsm8k --data_path {long}" in message
    several = write_rows(tmp_path / "several.jsonl", [r1("1+1?", "2"), r1("2+2?", "4"), r1("x, y?", "x=3, y=4")])
    with pytest.raises(DataError, match=r"several.jsonl:3: the gold answer 'x=3, y=4' holds 2 numbers where "
                                        r"this file's golds are single numbers"):
        list(iter_problems(several))
    skip = SkipStats()
    assert [p.gold for p in iter_problems(several, skip=skip)] == ["2", "4"]
    assert skip.counts == {"gold not a short answer": 1}
    texts = write_rows(tmp_path / "texts.jsonl", [r1("坐标？", "(3, 4)"), r1("城市？", "北京")])
    assert [p.gold for p in iter_problems(texts)] == ["(3, 4)", "北京"]  # not a file of numbers: kept


class Crash(Exception):
    pass


class CrashingProblems(ProblemSet):
    """Dies when asked for the problems of its n-th rollout, like a kill in the middle of a run."""
    crash_at = 0

    def rollout_problems(self, epoch, index):
        self.crash_at -= 1
        if self.crash_at == 0:
            raise Crash
        return super().rollout_problems(epoch, index)


def grpo_run(root, problems, tok, val=None, crash_at=0, loss_fn=None, **overrides):
    """grpo.py's loop over the tiny model, as its stage script runs it."""
    values = dict(out_dir=str(root), preset="spongebob-tiny", epochs=1, batch_size=2, accumulation_steps=1,
                  learning_rate=1e-2,
                  warmup_steps=1, log_interval=1, eval_interval=0, save_interval=2, max_seq_len=256,
                  device="cpu", dtype="float32", num_generations=3, max_completion_length=8, keep_last=5)
    values.update(overrides)
    cfg = parse_config([], "t", stage_defaults=values, config_cls=grpo.GRPOConfig)
    torch.manual_seed(0)
    model = SpongeBob(get_preset("spongebob-tiny"))
    data = CrashingProblems(problems, tok, cfg)
    data.crash_at = crash_at
    return Run(cfg, model, data, val or ProblemEval([], tok, 8), loss_fn=loss_fn or GRPOLoss(None, 0.0, 0.2),
               stage="grpo", tokenizer_id=tok.identity(), loop=grpo.train)


PROBLEMS = [Problem(f"p:{i}", [{"role": "user", "content": f"{i} 加 1 是多少？"}], str(i + 1)) for i in range(8)]


def test_grpo_resumes_exactly_and_logs_its_metrics(tmp_path, monkeypatch):
    tok = load_tokenizer()
    # The tiny model's own rollouts: sampled, never right, so their advantages are 0; the scripted
    # half-right ones make the updates real (they are the same whatever the weights, but the loss is not).
    monkeypatch.setattr(grpo, "decode_batch", Scripted(tok, [GOOD, GOOD.replace("17", "16"), "17"] * 2))
    PROBLEMS = [PROBLEM] * 8  # noqa: N806
    full = grpo_run(tmp_path / "full", PROBLEMS, tok)
    full.fit()
    rows = [json.loads(line) for line in (tmp_path / "full" / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert {"reward", "rewards/accuracy", "rewards/format", "completion_length", "zero_signal_groups",
            "clip_fraction", "entropy", "correct", "truncated", "mixed_groups", "all_wrong_groups",
            "all_wrong_advantage_share", "trained_groups"} <= set(rows[-1])
    assert "kl" not in rows[-1]  # --beta 0 holds no reference: no KL to report
    cut = grpo_run(tmp_path / "cut", PROBLEMS, tok, crash_at=4)
    with pytest.raises(Crash):  # dies making step 4's rollout; the last state is step 2
        cut.fit()
    resumed = grpo_run(tmp_path / "cut", PROBLEMS, tok, resume=True)
    assert resumed.engine.step == 2
    resumed.fit()
    a, b = full.engine.model.state_dict(), resumed.engine.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # A resume with another group size would mix two objectives: refused, naming the flag.
    with pytest.raises(ValueError, match=r"^--resume: --num_generations was 3 in the saved run .* but is 4 now"):
        grpo_run(tmp_path / "cut", PROBLEMS, tok, resume=True, num_generations=4)


def test_a_resume_between_a_rollouts_iterations_trains_on_that_rollout(tmp_path, monkeypatch):
    """With --num_iterations 2 a rollout serves two steps; a kill after the first of them resumes on
    the same rollout (saved with the state: its pi_old is the weights that sampled it), not on one
    made again by the changed weights. Scripted completions, half right: the advantages are not 0."""
    tok = load_tokenizer()
    monkeypatch.setattr(grpo, "decode_batch", Scripted(tok, [GOOD, GOOD.replace("17", "16"), GOOD] * 2))
    common = dict(num_iterations=2, save_interval=1, max_steps=4, weight_decay=0.0)
    full = grpo_run(tmp_path / "full", [PROBLEM] * 8, tok, **common)
    full.fit()

    class CrashingLoss(GRPOLoss):  # dies in step 4, the second update on the rollout made at step 3
        calls = 0

        def __call__(self, logits, batch):
            CrashingLoss.calls += 1
            if CrashingLoss.calls == 4:
                raise Crash
            return super().__call__(logits, batch)
    cut = grpo_run(tmp_path / "cut", [PROBLEM] * 8, tok, loss_fn=CrashingLoss(None, 0.0, 0.2), **common)
    with pytest.raises(Crash):
        cut.fit()
    resumed = grpo_run(tmp_path / "cut", [PROBLEM] * 8, tok, resume=True, **common)
    assert resumed.engine.step == 3 and "rollout" in resumed.engine.restored
    resumed.fit()
    a, b = full.engine.model.state_dict(), resumed.engine.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_held_out_accuracy_counts_correct_greedy_answers(monkeypatch):
    tok = load_tokenizer()
    import evaluation.rollouts as module

    class Done:
        def __init__(self, text):
            self.tokens, self.finish = tok.encode(text), "stop"

    monkeypatch.setattr(module, "decode_batch", lambda model, prompts, samplings, *a, **k: [
        Done(GOOD), Done(GOOD.replace("17", "16")), Done("17")][:len(prompts)])
    evaluation = ProblemEval([PROBLEM, PROBLEM, PROBLEM], tok, 16)
    result = evaluation.evaluate(SpongeBob(get_preset("spongebob-tiny")), torch.device("cpu"), torch.float32,
                                 lambda t: t)
    assert result == {"val_accuracy": 2 / 3, "val_compliance": 2 / 3}


class Scripted:
    """decode_batch's stand-in: the completions to return, in order, each 'stop'ped."""

    def __init__(self, tok, texts, tool_positions=None):
        self.tok, self.texts = tok, list(texts)
        self.tool_positions = tool_positions or [[] for _ in self.texts]

    def __call__(self, model, prompts, samplings, *a, **k):
        done = [type("Done", (), {"tokens": self.tok.encode(t), "finish": "stop", "stop_id": self.tok.im_end_id,
                                  "prompt": p, "tool_positions": where, "forced_positions": []})()
                for t, where, p in zip(self.texts, self.tool_positions, prompts)]
        return done[:len(prompts)]


class Recording(GRPOLoss):
    """GRPO's loss, keeping every batch it is given."""

    def __init__(self):
        super().__init__(None, 0.0, 0.2)
        self.batches = []

    def __call__(self, logits, batch):
        self.batches.append(batch)
        return super().__call__(logits, batch)


def test_rollout_diagnostics_and_dynamic_sampling_by_hand(monkeypatch, tmp_path):
    tok = load_tokenizer()
    wrong = GOOD.replace("17", "16")          # compliant, wrong, and its sum 12 + 5 = 16 is wrong
    wrong_sum_right = "<think>\n12 + 5 = 17\n</think>\n<answer>\n16\n</answer>"  # compliant, wrong answer
    # Group 1 (3 samples): one right, two wrong -> mixed. Group 2: all wrong, but the arithmetic differs.
    texts = [GOOD, wrong, wrong, wrong, wrong_sum_right, wrong]
    monkeypatch.setattr(grpo, "decode_batch", Scripted(tok, texts))
    for dynamic in (False, True):
        loss = Recording()
        run = grpo_run(tmp_path / str(dynamic), [PROBLEM, PROBLEM], tok, loss_fn=loss, max_steps=1, scale_rewards=False,
                       reward_weights="accuracy:1,arithmetic:0.5", dynamic_sampling=dynamic, max_completion_length=16)
        run.fit()
        metrics = json.loads((tmp_path / str(dynamic) / "grpo" / "metrics.jsonl").read_text().splitlines()[-1])
        batch = loss.batches[0]
        # rewards: group 1 = [1 + 0.5, 0 + 0, 0 + 0]; group 2 = [0, 0.5, 0] (arithmetic only)
        # advantages (r - mean): group 1 = [1, -0.5, -0.5]; group 2 = [-1/6, 1/3, -1/6]
        assert metrics["correct"] == pytest.approx(1 / 6, abs=1e-6)  # the row is rounded to 6 places
        assert metrics["mixed_groups"] == 0.5 and metrics["all_wrong_groups"] == 0.5
        assert metrics["all_wrong_advantage_share"] == pytest.approx((2 / 3) / (2 + 2 / 3), abs=1e-6)
        assert metrics["truncated"] == 0.0
        firsts = batch["advantages"].gather(1, (batch["targets"] != -100).float().argmax(1, keepdim=True)).view(-1)
        expected = [1.0, -0.5, -0.5] + [-1 / 6, 1 / 3, -1 / 6]
        trained_rows = (batch["targets"] != -100).any(dim=1).tolist()
        assert trained_rows == ([True] * 3 + [not dynamic] * 3)  # the all-wrong group is dropped when dynamic
        assert firsts[:3].tolist() == pytest.approx(expected[:3])
        if not dynamic:
            assert firsts[3:].tolist() == pytest.approx(expected[3:])
        assert metrics["trained_groups"] == (0.5 if dynamic else 1.0)


def test_the_best_validation_becomes_the_weights_with_keep_best(tmp_path, monkeypatch):
    tok = load_tokenizer()
    problems = [Problem(f"p:{i}", [{"role": "user", "content": f"{i} 加 1 是多少？"}], str(i + 1)) for i in range(8)]
    scores = iter([0.6, 0.5, 0.75, 0.25])  # validations at steps 0 (the start), 1, 2 and 3: the best is step 2's

    class Val(ProblemEval):
        def evaluate(self, model, device, dtype, reduce):
            return {"val_accuracy": next(scores)}
    trainer = grpo_run(tmp_path, problems, tok, Val(problems[:2], tok, 8), eval_interval=1, save_interval=1,
                       max_steps=3)
    saved = {}
    engine = trainer.engine
    original = engine.save_weights

    def remember(path, val_loss):
        original(path, val_loss)
        saved[(path.name, engine.step)] = path.read_bytes()
    monkeypatch.setattr(engine, "save_weights", remember)
    trainer.fit()
    assert engine.extra_state["best"] == {"key": "val_accuracy", "value": 0.75, "step": 2}
    assert (tmp_path / "grpo.pth").read_bytes() == saved[("grpo.pth", 2)] != saved[("grpo.pth", 3)]
    rows = [json.loads(line) for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0] == {"step": 0, "val_accuracy": 0.6}  # the start is measured, and could have been kept


def test_a_run_that_only_makes_things_worse_keeps_its_start(tmp_path):
    tok = load_tokenizer()
    problems = [Problem(f"p:{i}", [{"role": "user", "content": f"{i} 加 1 是多少？"}], str(i + 1)) for i in range(8)]
    scores = iter([0.9, 0.5, 0.4])

    class Val(ProblemEval):
        def evaluate(self, model, device, dtype, reduce):
            return {"val_accuracy": next(scores)}
    trainer = grpo_run(tmp_path, problems, tok, Val(problems[:2], tok, 8), eval_interval=1, save_interval=1,
                       max_steps=2)
    start = {k: v.clone() for k, v in trainer.engine.model.state_dict().items()}
    trainer.fit()
    kept = torch.load(tmp_path / "grpo.pth", weights_only=True)["model"]
    assert trainer.engine.extra_state["best"]["step"] == 0 and all(torch.equal(kept[k], start[k]) for k in start)


def test_held_out_evaluation_is_shared_out_over_ranks(monkeypatch):
    tok = load_tokenizer()
    problems = [PROBLEM] * 5
    evaluation = ProblemEval(problems, tok, 16, rank=1, world_size=2)
    assert len(evaluation.mine) == 2  # problems 1 and 3 of 0..4
    import evaluation.rollouts as rollouts
    monkeypatch.setattr(rollouts, "decode_batch", Scripted(tok, [GOOD, GOOD.replace("17", "16")]))
    # The other rank answered its 3 problems: 3 right, 2 compliant; the sum is over all 5.
    other_rank = lambda t: t + torch.tensor([3.0, 2.0, 3.0])  # noqa: E731
    result = evaluation.evaluate(SpongeBob(get_preset("spongebob-tiny")), torch.device("cpu"), torch.float32,
                                 other_rank)
    assert result == {"val_accuracy": 4 / 5, "val_compliance": 4 / 5}


def test_the_reference_never_changes(tmp_path):
    tok = load_tokenizer()
    torch.manual_seed(0)
    save_model(tmp_path / "distill.pth", SpongeBob(get_preset("spongebob-tiny")), tok.identity())
    cfg = parse_config(["--init", str(tmp_path / "distill.pth"), "--beta", "0.1"], "t", grpo.REFERENCE,
                       config_cls=grpo.GRPOConfig)
    policy = SpongeBob(get_preset("spongebob-tiny"))
    loss_fn = grpo.build_loss(cfg, tok, torch.device("cpu"), policy)
    frozen = loss_fn.reference.model
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    ids = torch.randint(0, 6400, (2, 10))
    batch = {"input_ids": ids, "targets": ids.roll(-1, 1), "advantages": torch.ones(2, 10)}
    loss_fn(policy(ids), batch).backward()
    assert all(p.grad is None and not p.requires_grad for p in frozen.parameters())
    assert all(torch.equal(before[k], v) for k, v in frozen.state_dict().items())


def test_the_data_line_says_how_the_problems_were_read(tmp_path):
    from dataset.problems import describe_problems
    gsm = write_rows(tmp_path / "gsm.jsonl", [
        {"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"}] * 3)
    r1 = write_rows(tmp_path / "r1.jsonl", [{"conversations": [{"role": "user", "content": "1+1?"},
                                                             {"role": "assistant", "content": GOOD}]}])
    problems = list(iter_problems(gsm)) + list(iter_problems(r1))
    assert describe_problems(problems) == ("3 read as GSM8K, gold: the number after ####; "
                                           "1 read as minimind, gold: the answer field or <answer>")
