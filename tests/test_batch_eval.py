"""Batch evaluation (evaluation/batch_eval.py, eval_model.py --eval_file): samples, loss, scores, CLI."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

import evaluation.batch_eval as batch_eval
from evaluation.batch_eval import EvalSample, evaluate_samples, make_sample, reference_loss
from inference.sampling import SamplingConfig
import test_eval_chat
from test_eval_chat import run_main

CONVERSATION = [
    {"role": "system", "content": "你是助手"},
    {"role": "user", "content": "一加一"},
    {"role": "assistant", "content": "二"},
    {"role": "user", "content": "再加一"},
    {"role": "assistant", "content": "三个苹果和两个梨"},
]


# The tokenizer and the tiny SFT checkpoint are test_eval_chat's fixtures.
tok, tiny = test_eval_chat.tok, test_eval_chat.tiny


def per_sample(fake):
    """A per-prompt fake of generate turned into the batched generate_batch that batch_eval calls."""
    def batched(model, prompts, samplings, generators=None, budgets=None, **kw):
        generators, budgets = generators or [None] * len(prompts), budgets or [None] * len(prompts)
        return [list(fake(model, p, s, generator=g, budget=b)) for p, s, g, b in zip(prompts, samplings, generators,
                                                                                      budgets)]
    return batched


def test_chat_sample_prompt_is_chatml_up_to_the_last_assistant_turn(tok):
    sample = make_sample("f:1", CONVERSATION, tok, chat=True)
    assert sample.prompt == ("<|im_start|>system\n你是助手<|im_end|>\n<|im_start|>user\n一加一<|im_end|>\n"
                             "<|im_start|>assistant\n二<|im_end|>\n<|im_start|>user\n再加一<|im_end|>\n"
                             "<|im_start|>assistant\n")
    assert sample.reference == "三个苹果和两个梨"
    assert sample.reference_ids == tok.encode("三个苹果和两个梨") + [tok.im_end_id]


def test_pretrain_sample_is_plain_text_after_endoftext(tok):
    sample = make_sample("f:1", CONVERSATION, tok, chat=False)
    assert sample.prompt == "你是助手\n一加一\n二\n再加一\n"
    assert sample.prompt_ids == [tok.endoftext_id] + tok.encode("你是助手\n一加一\n二\n再加一\n")
    assert sample.reference_ids == tok.encode("三个苹果和两个梨")


def test_reference_loss_counts_only_the_reply_tokens(tok, tiny):
    model, _ = tiny
    sample = EvalSample("f:1", "", [1, 10, 11, 12], "", [20, 21, 2])
    loss, count = reference_loss(model, sample)
    # By hand: positions 3, 4, 5 of the full sequence predict 20, 21, 2.
    with torch.no_grad():
        logits = model(torch.tensor([[1, 10, 11, 12, 20, 21]]))[0]
    expected = sum(-F.log_softmax(logits[pos].float(), -1)[target] for pos, target in [(3, 20), (4, 21), (5, 2)])
    assert count == 3
    assert loss == pytest.approx(float(expected), rel=1e-5)


def test_scores_and_predictions_file(monkeypatch, tmp_path, tok, tiny):
    model, _ = tiny
    replies = iter(["三个苹果和两个梨", ""])  # a perfect answer, then an empty one

    def scripted_generate(model, prompt_ids, cfg, generator=None, budget=None):
        assert cfg.stop_ids == (tok.im_end_id, tok.endoftext_id)
        yield from tok.encode(next(replies))

    monkeypatch.setattr(batch_eval, "generate_batch", per_sample(scripted_generate))
    samples = [make_sample("f:1", CONVERSATION, tok, chat=True), make_sample("f:2", CONVERSATION, tok, chat=True)]
    out = tmp_path / "pred" / "p.jsonl"
    report = evaluate_samples(model, tok, samples, SamplingConfig(), out_path=out, show_progress=False)
    # mean of 100 (identical) and 0 (empty) on every metric
    for name in ("bleu-4", "rouge-1", "rouge-2", "rouge-l"):
        assert report[name] == pytest.approx(50.0)
    assert report["samples"] == 2 and report["generated_tokens"] == len(tok.encode("三个苹果和两个梨"))
    assert report["ppl"] == pytest.approx(math.exp(report["loss"]))
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["where"], r["label"], r["predict"]) for r in rows] == [("f:1", "三个苹果和两个梨", "三个苹果和两个梨"), ("f:2", "三个苹果和两个梨", "")]


def write_alpaca(path, records):
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


def test_cli_reports_and_writes_predictions(monkeypatch, capsys, tmp_path, tiny):
    _, ckpt = tiny
    data = write_alpaca(tmp_path / "eval.json", [{"instruction": "你好", "output": "你好！"},
                                                 {"instruction": "一加一", "input": "等于几", "output": "二"}])
    out = tmp_path / "pred.jsonl"
    code, stdout, err = run_main(monkeypatch, capsys, ["--model_mode", 1, "--ckpt", ckpt, "--device", "cpu",
                                                       "--eval_file", data, "--out", out, "--max_new_tokens", 4])
    assert code == 0, err
    names = [line.split()[0] for line in stdout.splitlines()]
    assert names == ["samples", "bleu-4", "rouge-1", "rouge-2", "rouge-l", "loss", "ppl", "tokens/s"]
    assert stdout.splitlines()[0].split()[1] == "2"
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["label"] for r in rows] == ["你好！", "二"]
    assert rows[1]["prompt"].endswith("<|im_start|>user\n一加一\n等于几<|im_end|>\n<|im_start|>assistant\n")


def test_cli_default_is_greedy_so_two_runs_agree(monkeypatch, capsys, tmp_path, tiny):
    _, ckpt = tiny
    data = write_alpaca(tmp_path / "eval.json", [{"instruction": "海绵宝宝", "output": "住在菠萝屋"}])
    outputs = []
    for name in ("a.jsonl", "b.jsonl"):
        code, _, err = run_main(monkeypatch, capsys, ["--model_mode", 1, "--ckpt", ckpt, "--device", "cpu",
                                                      "--eval_file", data, "--out", tmp_path / name,
                                                      "--max_new_tokens", 8])
        assert code == 0, err
        outputs.append(json.loads((tmp_path / name).read_text(encoding="utf-8"))["predict"])
    assert outputs[0] == outputs[1]


def test_cli_bad_record_names_file_and_line(monkeypatch, capsys, tmp_path, tiny):
    _, ckpt = tiny
    data = tmp_path / "bad.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": ""}\n', encoding="utf-8")
    argv = ["--model_mode", 1, "--ckpt", ckpt, "--device", "cpu", "--eval_file", data, "--max_new_tokens", 2]
    code, _, err = run_main(monkeypatch, capsys, argv)
    assert code == 2
    assert err.strip().splitlines()[-1] == (f"error: {data}:2: output is empty (fix the record, or pass --skip_bad "
                                            "to skip such records)")
    code, stdout, err = run_main(monkeypatch, capsys, argv + ["--skip_bad"])
    assert code == 0 and stdout.splitlines()[0].split()[1] == "1"
    assert f"1 empty content (first at {data}:2)" in err


def test_cli_flag_misuse(monkeypatch, capsys, tmp_path, tiny):
    _, ckpt = tiny
    with pytest.raises(SystemExit):
        run_main(monkeypatch, capsys, ["--ckpt", ckpt, "--out", tmp_path / "p.jsonl"])
    assert "go with --eval_file" in capsys.readouterr().err
    code, _, err = run_main(monkeypatch, capsys, ["--model_mode", 1, "--ckpt", ckpt, "--eval_file",
                                                  tmp_path / "missing.json"])
    assert code == 2 and "missing.json: no such file" in err
