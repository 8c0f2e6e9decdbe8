"""Distillation (distill.py): tag and think weights, normalisation, the KD loss."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from model import IGNORE_INDEX as IGN
from model import read_checkpoint
from test_pretrain import write_corpus
from test_sft import REPO, TINY, run
from trainer.engine import loss_normaliser
from trainer.loop import CrossEntropy

default_loss = CrossEntropy()  # the loss of distillation without a teacher
from distill import TeacherLoss, distillation_loss, reasoning_weights

THINK, THINK_END, ANSWER, ANSWER_END, IM_END = 3, 4, 5, 6, 2
TAGS = (THINK, THINK_END, ANSWER, ANSWER_END)


def weights(targets, tag_weight=10.0, think_weight=1.0):
    return reasoning_weights(torch.tensor([targets]), TAGS, THINK, THINK_END, tag_weight, think_weight)[0].tolist()


def test_tags_weighted_only_where_the_mask_is_on():
    # A user turn with a literal <think> (ignored target), then a reply:
    # <think> a b </think> <answer> c </answer> <|im_end|>, then padding.
    targets = [IGN, IGN, IGN, THINK, 50, 51, THINK_END, ANSWER, 60, ANSWER_END, IM_END, IGN]
    assert weights(targets) == [0, 0, 0, 10, 1, 1, 10, 10, 1, 10, 1, 0]
    assert weights(targets, tag_weight=10, think_weight=2) == [0, 0, 0, 10, 2, 2, 10, 10, 1, 10, 1, 0]


def test_two_turns_each_with_thinking():
    targets = [THINK, 1, THINK_END, ANSWER, 9, ANSWER_END, IM_END, IGN, IGN, THINK, 1, 1, THINK_END, ANSWER, 9,
               ANSWER_END, IM_END]
    assert weights(targets, tag_weight=3, think_weight=2) == [3, 2, 3, 3, 1, 3, 1, 0, 0, 3, 2, 2, 3, 3, 1, 3, 1]


def test_loss_is_weighted_sum_over_weighted_count():
    # Vocab 4; each position puts logit a on its target and 0 elsewhere, so by
    # hand ce = log(e^a + 3) - a.
    a = [2.0, 0.0, -1.0]
    targets = torch.tensor([[1, 2, 3]])
    logits = torch.zeros(1, 3, 4)
    for pos, (value, target) in enumerate(zip(a, [1, 2, 3])):
        logits[0, pos, target] = value
    w = torch.tensor([[10.0, 1.0, 2.0]])
    ce = [math.log(math.exp(x) + 3) - x for x in a]
    batch = {"targets": targets, "loss_weight": w}
    loss = float(default_loss(logits, batch) / loss_normaliser(batch))
    assert loss == pytest.approx((10 * ce[0] + ce[1] + 2 * ce[2]) / 13, rel=1e-6)
    assert loss != pytest.approx((10 * ce[0] + ce[1] + 2 * ce[2]) / 3, rel=1e-3)  # not the plain count


def _softmax(xs):
    exps = [math.exp(x) for x in xs]
    return [e / sum(exps) for e in exps]


def test_kd_loss_matches_a_hand_computation():
    student, teacher = [1.0, 0.0, -1.0], [0.0, 2.0, 0.0]
    alpha, temp, target, w = 0.3, 2.0, 1, 4.0
    p_s = _softmax([x / temp for x in student])
    p_t = _softmax([x / temp for x in teacher])
    kl = sum(t * (math.log(t) - math.log(s)) for t, s in zip(p_t, p_s))
    ce = -math.log(_softmax(student)[target])
    expected = w * (alpha * temp ** 2 * kl + (1 - alpha) * ce)
    # A second, ignored position must add nothing.
    s_logits = torch.tensor([[student, [5.0, 5.0, 5.0]]])
    t_logits = torch.tensor([[teacher, [0.0, 9.0, 0.0]]])
    got = distillation_loss(s_logits, t_logits, torch.tensor([[target, IGN]]), torch.tensor([[w, 7.0]]),
                            alpha, temp)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_kd_alpha_zero_is_plain_weighted_cross_entropy():
    torch.manual_seed(0)
    logits, teacher = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    targets = torch.randint(0, 11, (2, 5))
    targets[0, :2] = IGN
    w = torch.rand(2, 5) + 0.5
    batch = {"targets": targets, "loss_weight": w}
    assert float(distillation_loss(logits, teacher, targets, w, 0.0, 3.0)) == pytest.approx(
        float(default_loss(logits, batch)), rel=1e-5)


class Recorder(torch.nn.Module):
    """A stand-in teacher that records how it is called."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, ids):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return torch.zeros(*ids.shape, 7)


def test_teacher_runs_frozen_in_eval_mode_without_grad():
    teacher = Recorder().train()
    loss_fn = TeacherLoss(teacher, alpha=0.5, temperature=1.0)
    logits = torch.randn(1, 3, 7, requires_grad=True)
    loss = loss_fn(logits, {"input_ids": torch.zeros(1, 3, dtype=torch.long),
                            "targets": torch.tensor([[1, 2, IGN]])})
    loss.backward()
    assert teacher.calls == [(False, False)]
    assert logits.grad is not None


def r1_file(path, n=24):
    rows = []
    for i in range(n):
        reply = f"<think>\n{i}加{i}，用加法。\n{i} + {i} = {2 * i}。\n</think>\n<answer>\n{2 * i}\n</answer>"
        rows.append({"conversations": [{"role": "user", "content": f"{i}加{i}等于几？"},
                                       {"role": "assistant", "content": reply}], "answer": str(2 * i)})
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


def test_distill_cli_from_sft_long_and_with_a_teacher(tmp_path):
    write_corpus(tmp_path / "text.jsonl", n_docs=60)
    run("pretrain.py", ["--data_path", "text.jsonl", "--preset", "spongebob-tiny", "--max_seq_len", "64", *TINY],
        tmp_path)
    (tmp_path / "out" / "pretrain.pth").rename(tmp_path / "out" / "sft_long.pth")  # any checkpoint will do
    data = str(r1_file(tmp_path / "r1.jsonl"))
    out = run("distill.py", ["--data_path", data, "--max_seq_len", "128", *TINY], tmp_path)
    assert "from out/sft_long.pth" in out and "tag weight 10" in out
    assert read_checkpoint(tmp_path / "out" / "distill.pth")["meta"]["stage"] == "distill"
    # Another --out_dir starts from its own sft_long.pth unless --init says otherwise.
    run("distill.py", ["--data_path", data, "--max_seq_len", "128", "--teacher", "out/sft_long.pth",
                       "--init", "out/sft_long.pth", "--kd_alpha", "0.7", "--out_dir", "kd", *TINY[:-2]], tmp_path)
    assert (tmp_path / "kd" / "distill.pth").is_file()


def test_distill_flags_show_only_in_distill_help(tmp_path):
    assert "--tag_weight" in run("distill.py", ["--help"], tmp_path)
    assert "--tag_weight" not in run("sft.py", ["--help"], tmp_path)


def test_teacher_with_another_vocabulary_is_refused(tmp_path):
    from dataclasses import replace

    import distill
    from model import CheckpointError, SpongeBob, get_preset, save_model
    from tokenizer import load_tokenizer
    tok = load_tokenizer()
    wrong = SpongeBob(replace(get_preset("spongebob-tiny"), vocab_size=tok.vocab_size + 64))
    save_model(tmp_path / "teacher.pth", wrong, tok.identity(), meta={"stage": "distill"})
    cfg = distill.DistillConfig(teacher=str(tmp_path / "teacher.pth"), max_seq_len=64)
    with pytest.raises(CheckpointError, match=f"vocab_size is {tok.vocab_size + 64} but the tokenizer has {tok.vocab_size}"):
        distill.build_loss(cfg, tok, torch.device("cpu"))


def test_missing_teacher_is_one_line(tmp_path):
    (tmp_path / "out").mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, str(REPO / "distill.py"), "--data_path", str(r1_file(tmp_path / "r.jsonl")),
                           "--init", "", "--preset", "spongebob-tiny", "--max_seq_len", "128", "--teacher", "nope.pth",
                           *TINY],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: nope.pth")
