"""DPO: the losses by hand, every preference format read with the exact SFT mask, bad pairs
named by file:line, a frozen reference, and the chain pretrain -> sft -> dpo (full and LoRA) -> eval."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dpo
from dataset.chat_mask import tokenize_chat
from dataset.pref_dataset import PreferenceDataset
from dataset.preference import iter_pairs, to_pair
from dataset.readers import DataError, SkipStats
from dataset.sft_tokenize import pretokenize_chat
from model import SpongeBob, get_preset, save_model
from model.masks import document_mask
from test_pretrain import write_corpus
from tokenizer import load_tokenizer
from trainer.reference import FrozenCopy
from dpo import PreferenceLoss, pair_losses, sequence_logps

REPO = Path(__file__).resolve().parents[1]
PROMPT = [{"role": "user", "content": "派大星住在哪里？"}]
CHOSEN, REJECTED = "派大星住在石头下面。", "你自己去查吧。"


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_the_three_losses_by_hand():
    # Two pairs. Policy sums (chosen, rejected) per pair and their token counts; the reference's sums.
    policy = (torch.tensor([-2.0, -5.0, -3.0, -3.5]), torch.tensor([2.0, 5.0, 3.0, 1.0]))
    reference = (torch.tensor([-3.0, -4.0, -3.0, -3.0]), torch.tensor([2.0, 5.0, 3.0, 1.0]))
    beta = 0.1
    loss, chosen, rejected = pair_losses(policy, reference, "sigmoid", beta)
    # Pair 0: z = (-2 + 3) - (-5 + 4) = 2; pair 1: z = (-3 + 3) - (-3.5 + 3) = 0.5.
    assert torch.allclose(loss, torch.tensor([-math.log(sig(0.2)), -math.log(sig(0.05))]))
    assert torch.allclose(chosen, torch.tensor([0.1, 0.0])) and torch.allclose(rejected, torch.tensor([-0.1, -0.05]))
    loss, _, _ = pair_losses(policy, reference, "ipo", beta)
    # Per-token averages: pair 0: (1/2) - (-1/5) = 0.7; pair 1: 0/3 - (-0.5/1) = 0.5; target 1/(2 beta) = 5.
    assert torch.allclose(loss, torch.tensor([(0.7 - 5) ** 2, (0.5 - 5) ** 2]))
    loss, chosen, _ = pair_losses(policy, None, "simpo", 2.0, gamma=0.5)
    # Averages: pair 0: -1 vs -1 -> 2 * 0 - 0.5; pair 1: -1 vs -3.5 -> 2 * 2.5 - 0.5.
    assert torch.allclose(loss, torch.tensor([-math.log(sig(-0.5)), -math.log(sig(4.5))]))
    assert torch.allclose(chosen, torch.tensor([-2.0, -2.0]))


def test_sequence_logps_sum_the_trained_targets_of_each_sequence():
    # One row of 4 positions over a vocabulary of 2: sequence 0 owns positions 0-1, sequence 1 positions 2-3.
    logits = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]])
    batch = {"targets": torch.tensor([[1, 0, -100, 1]]), "seq_index": torch.tensor([[0, 0, 1, 1]])}
    sums, counts = sequence_logps(logits, batch, 3)
    expected0 = math.log(0.5) + (1.0 - math.log(math.e + 1))
    assert torch.allclose(sums, torch.tensor([expected0, math.log(0.5), 0.0]))
    assert counts.tolist() == [2.0, 1.0, 0.0]


def records():
    """The same pair in every format."""
    return {
        "minimind": {"chosen": PROMPT + [{"role": "assistant", "content": CHOSEN}],
                     "rejected": PROMPT + [{"role": "assistant", "content": REJECTED}]},
        "prompt": {"prompt": PROMPT[0]["content"], "chosen": CHOSEN, "rejected": REJECTED},
        "sharegpt": {"conversations": [{"from": "human", "value": PROMPT[0]["content"]}],
                     "chosen": {"from": "gpt", "value": CHOSEN}, "rejected": {"from": "gpt", "value": REJECTED}},
        "alpaca": {"instruction": PROMPT[0]["content"], "input": "", "chosen": CHOSEN, "rejected": REJECTED},
        "medicalgpt": {"conversations": [{"from": "human", "value": PROMPT[0]["content"]}], "chosen": CHOSEN,
                       "rejected": REJECTED},
    }


@pytest.mark.parametrize("fmt", list(records()))
def test_every_format_gives_the_pair_with_sfts_exact_mask(tmp_path, fmt):
    tok = load_tokenizer()
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(records()[fmt], ensure_ascii=False) + "\n", encoding="utf-8")
    assert [p for _, p in iter_pairs(path)] == [(PROMPT, CHOSEN, REJECTED)]
    corpus = pretokenize_chat([path], tok, 128, val_fraction=0.0, cache_root=tmp_path / "c", show_progress=False,
                              pairs=True)
    split = corpus.train
    ends = list(split.doc_starts[1:]) + [split.n_tokens]
    for doc, reply in enumerate((CHOSEN, REJECTED)):
        ids, mask = tokenize_chat(PROMPT + [{"role": "assistant", "content": reply}], tok)
        start, end = int(split.doc_starts[doc]), int(ends[doc]) - 1
        assert split.tokens[start:end].tolist() == ids
        assert split.loss_mask[start:end].tolist() == mask
        # The mask is exactly the reply and its <|im_end|>.
        assert tok.decode([i for i, m in zip(ids, mask) if m]) == reply + "<|im_end|>"


@pytest.mark.parametrize("record,reason", [
    ({"prompt": "问", "chosen": "答", "rejected": "答"}, "chosen and rejected are the same reply"),
    ({"prompt": "问", "chosen": "", "rejected": "答"}, "chosen is empty"),
    ({"prompt": "问", "chosen": "答"}, None),  # no rejected at all: not preference data
    ({"chosen": [{"role": "user", "content": "甲"}, {"role": "assistant", "content": "好"}],
      "rejected": [{"role": "user", "content": "乙"}, {"role": "assistant", "content": "坏"}]}, "different prompts"),
])
def test_bad_pairs_name_file_and_line_or_are_counted(tmp_path, record, reason):
    path = tmp_path / "p.jsonl"
    good = records()["prompt"] if "prompt" in record else records()["minimind"]
    path.write_text(json.dumps(good, ensure_ascii=False) + "\n" + json.dumps(record, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    if reason is None:  # the second record is in no preference format
        with pytest.raises(DataError):
            list(iter_pairs(path, data_format="prompt"))
        return
    with pytest.raises(DataError, match=f"p.jsonl:2: .*{reason}"):
        list(iter_pairs(path))
    skip = SkipStats()
    assert len(list(iter_pairs(path, skip=skip))) == 1 and skip.total == 1


def test_an_unknown_format_is_one_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"text": "plain"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="p.jsonl:1: not preference data \\(keys: text\\)"):
        list(iter_pairs(path))
    with pytest.raises(Exception, match="unknown preference format"):
        to_pair({}, "nope")


def test_packed_and_padded_batches_give_the_same_dpo_loss(tmp_path):
    tok = load_tokenizer()
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"问题{i}" + "海" * i, "chosen": "好" * (i + 1), "rejected": "坏" * (2 * i + 1)} for i in range(8)]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    corpus = pretokenize_chat([path], tok, 128, val_fraction=0.0, cache_root=tmp_path / "c", show_progress=False,
                              pairs=True)
    torch.manual_seed(0)
    policy, reference = SpongeBob(get_preset("spongebob-tiny")), SpongeBob(get_preset("spongebob-tiny"))
    losses = {}
    for packing in ("none", "pack"):
        batch = next(PreferenceDataset(corpus.train, 128, packing=packing, shuffle=False).batches(4, epoch=0))
        inputs = {}
        if "doc_ids" in batch:
            inputs = {"position_ids": batch["position_ids"], "attn_mask": document_mask(batch["doc_ids"], flex=False)}
        ref = lambda b: reference(b["input_ids"], **inputs)  # noqa: E731
        loss_fn = PreferenceLoss(ref, "sigmoid", 0.1, 0.0, 0.5, max_pairs=4)
        losses[packing] = loss_fn(policy(batch["input_ids"], **inputs), batch)
        rows = len(batch["input_ids"])
        assert rows == 8 if packing == "none" else rows < 8  # 4 pairs = 8 sequences, fewer rows when packed
    assert torch.allclose(losses["none"], losses["pack"], rtol=1e-5)


def run(script, args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_chain_pretrain_sft_dpo_full_and_lora_then_eval(tmp_path):
    tiny = ["--batch_size", "4", "--max_steps", "3", "--warmup_steps", "1", "--eval_interval", "0", "--device", "cpu"]
    write_corpus(tmp_path / "text.jsonl", n_docs=60)
    run("pretrain.py", ["--data_path", "text.jsonl", "--preset", "spongebob-tiny", "--max_seq_len", "64", *tiny],
        tmp_path)
    run("sft.py", ["--max_seq_len", "256", *tiny], tmp_path)  # the built-in dialogues
    out = run("dpo.py", ["--max_seq_len", "256", *tiny], tmp_path)  # the built-in pairs, from out/sft.pth
    assert "from out/sft.pth" in out
    run("dpo.py", ["--max_seq_len", "256", "--lora_rank", "4", "--out_dir", "lora", "--init", "out/sft.pth", *tiny],
        tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "out" / "dpo" / "metrics.jsonl").read_text().splitlines()]
    assert {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
            "logps/rejected"} <= set(rows[-1])
    assert (tmp_path / "lora" / "dpo.pth").stat().st_size < (tmp_path / "out" / "dpo.pth").stat().st_size / 5
    # A resume that would mix two objectives is refused in one line naming the flag.
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, str(REPO / "dpo.py"), "--max_seq_len", "256", *tiny, "--resume",
                           "--pref_beta", "0.2"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: --resume: --pref_beta was 0.1 in the saved run"), done.stderr
    pairs = tmp_path / "out" / "demo" / "dpo.jsonl"
    for ckpt in ("out/dpo.pth", "lora/dpo.pth"):
        report = run("eval_model.py", ["--model_mode", "dpo", "--ckpt", ckpt, "--eval_file", str(pairs),
                                       "--max_samples", "20", "--device", "cpu"], tmp_path)
        assert "pairs              20" in report and "reward accuracy" in report


def test_the_reference_is_frozen_and_never_changes(tmp_path):
    tok = load_tokenizer()
    torch.manual_seed(0)
    save_model(tmp_path / "sft.pth", SpongeBob(get_preset("spongebob-tiny")), tok.identity())
    frozen = FrozenCopy(str(tmp_path / "sft.pth"), tok, torch.device("cpu"))
    before = {k: v.clone() for k, v in frozen.model.state_dict().items()}
    assert not any(p.requires_grad for p in frozen.model.parameters())
    policy = SpongeBob(get_preset("spongebob-tiny"))
    batch = {"input_ids": torch.randint(0, 6400, (2, 12)), "targets": torch.randint(0, 6400, (2, 12)),
             "seq_index": torch.tensor([[0] * 12, [1] * 12]), "loss_count": torch.tensor(1.0)}
    loss = PreferenceLoss(frozen, "sigmoid", 0.1, 0.0, 0.0, max_pairs=1)(policy(batch["input_ids"]), batch)
    loss.backward()
    assert all(p.grad is None for p in frozen.model.parameters())
    assert all(torch.equal(before[k], v) for k, v in frozen.model.state_dict().items())
    assert np.isfinite(float(loss))


def test_dataset_stats_reads_preference_pairs(tmp_path):
    from dataset.stats import file_stats
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(records()["prompt"], ensure_ascii=False) for _ in range(3)) + "\n",
                    encoding="utf-8")
    stats = file_stats(path, load_tokenizer())
    assert stats["format"] == "prompt preference pairs" and stats["records"] == 6
    chosen = len(tokenize_chat(PROMPT + [{"role": "assistant", "content": CHOSEN}], load_tokenizer())[0])
    rejected = len(tokenize_chat(PROMPT + [{"role": "assistant", "content": REJECTED}], load_tokenizer())[0])
    assert stats["tokens_total"] == 3 * (chosen + rejected)


def test_preference_report_counts_by_hand(tmp_path, monkeypatch):
    # Three pairs with made-up (summed log-prob, trained tokens) per reply, model and reference.
    from evaluation import pref_eval
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"q{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    policy = {"c0": (-10.0, 5), "r0": (-9.0, 2), "c1": (-9.0, 3), "r1": (-6.0, 3), "c2": (-4.0, 4), "r2": (-8.0, 2)}
    ref = {"c0": (-11.0, 5), "r0": (-11.0, 2), "c1": (-9.0, 3), "r1": (-5.0, 3), "c2": (-4.0, 4), "r2": (-8.0, 2)}
    models = {"policy": policy, "ref": ref}
    monkeypatch.setattr(pref_eval, "reply_logps", lambda m, tok, conv: models[m][conv[-1]["content"]])
    monkeypatch.setattr(pref_eval, "SpongeBob", object)

    class Cfg:
        max_position_embeddings = 4096

    class Fake(str):
        config = Cfg()

    report = pref_eval.evaluate_pairs(Fake("policy"), Fake("ref"), load_tokenizer(), path, beta=0.5)
    # summed: -10 > -9 no; -9 > -6 no; -4 > -8 yes -> 1/3
    # per token: -2 > -4.5 yes; -3 > -2 no; -1 > -4 yes -> 2/3 (the short rejected r0 loses per token)
    # reward: 0.5*((-10+11) - (-9+11)) = -0.5; 0.5*(0 - (-6+5)) = 0.5; 0.5*(0 - 0) = 0 -> 1/3 above 0, mean 0
    assert report["pairs"] == 3
    assert math.isclose(report["chosen_likelier"], 1 / 3) and math.isclose(report["chosen_preferred"], 2 / 3)
    assert math.isclose(report["reward_accuracy"], 1 / 3) and math.isclose(report["reward_margin"], 0.0, abs_tol=1e-12)
    assert math.isclose(report["logps_chosen"], -23 / 3) and math.isclose(report["logps_rejected"], -23 / 3)
