"""eval_model.py for reasoning models: mode 2's display, budget flags, reasoning scores in batch evaluation."""
import io
import json

import pytest

import evaluation.batch_eval as batch_eval
import inference.chat as chat
from evaluation.batch_eval import evaluate_samples, make_sample
from inference.sampling import SamplingConfig
from inference.chat import ChatSession, ReasoningRender
from test_batch_eval import per_sample
from test_eval_chat import run_main
from test_eval_model import save_tiny
from tokenizer import load_tokenizer

REPLY = "<think>\n3 + 4 = 7。\n</think>\n<answer>\n7\n</answer>"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tok):
    return save_tiny(tmp_path_factory.mktemp("ckpt") / "tiny_distill.pth", tok, {"stage": "distill", "step": 1})


def render(chunks, **kwargs):
    out = io.StringIO()
    ReasoningRender(**kwargs)(iter(chunks), out)
    return out.getvalue()


def test_thinking_is_labelled_apart_from_the_answer():
    chunks = ["<thi", "nk>\n3 + 4", " = 7。\n</th", "ink>\n<answer>\n7", "\n</answer>"]
    assert render(chunks) == "[思考] 3 + 4 = 7。\n[回答] 7"
    assert render(chunks, hide_think=True) == "[回答] 7"
    assert render(chunks, color=True) == "\033[2m思考: 3 + 4 = 7。\033[0m\n7\033[0m"


def test_a_reply_without_tags_is_all_answer():
    assert render(["你好", "！"]) == "[回答] 你好！"


@pytest.fixture
def scripted(monkeypatch, tok):
    """generate in inference/chat.py and evaluation/batch_eval.py replies from a script; records budgets."""
    calls = []

    def fake_generate(model, prompt_ids, cfg, generator=None, budget=None):
        calls.append({"prompt": tok.decode(prompt_ids), "budget": budget, "calculator": cfg.calculator})
        yield from tok.encode(calls[-1].get("reply", REPLY))

    monkeypatch.setattr(chat, "generate", fake_generate)
    monkeypatch.setattr(batch_eval, "generate_batch", per_sample(fake_generate))
    return calls


def test_mode_2_prompt_shows_thinking_then_answer(monkeypatch, capsys, tiny, scripted):
    _, ckpt = tiny
    code, out, err = run_main(monkeypatch, capsys, ["--model_mode", 2, "--ckpt", ckpt, "--prompt", "3加4？"])
    assert code == 0, err
    assert out == "[思考] 3 + 4 = 7。\n[回答] 7\n"
    assert scripted[0]["budget"] is None


def test_mode_2_piped_hide_think_and_history_keeps_only_answers(monkeypatch, capsys, tiny, scripted):
    _, ckpt = tiny
    code, out, err = run_main(monkeypatch, capsys, ["--model_mode", 2, "--ckpt", ckpt, "--hide_think"],
                              stdin="3加4？\n再加1？\n")
    assert code == 0, err
    assert [json.loads(line)["assistant"] for line in out.splitlines()] == ["7", "7"]
    # Turn 2's prompt carries turn 1's answer, not its thinking.
    assert "<|im_start|>assistant\n7<|im_end|>\n<|im_start|>user\n再加1？" in scripted[1]["prompt"]


def test_budget_flags_reach_generate(monkeypatch, capsys, tok, tiny, scripted):
    _, ckpt = tiny
    code, _, err = run_main(monkeypatch, capsys, ["--model_mode", 2, "--ckpt", ckpt, "--prompt", "3加4？",
                                                  "--max_think_tokens", 8, "--min_think_tokens", 2,
                                                  "--continue_word", "Wait"])
    assert code == 0, err
    budget = scripted[0]["budget"]
    assert (budget.max_think_tokens, budget.min_think_tokens) == (8, 2)
    assert budget.continue_ids == tuple(tok.encode("Wait"))
    with pytest.raises(SystemExit):
        run_main(monkeypatch, capsys, ["--ckpt", ckpt, "--max_think_tokens", 4, "--min_think_tokens", 5])


def test_calculator_flag_reaches_generate_in_chat_and_batch_evaluation(monkeypatch, capsys, tmp_path, tok, tiny,
                                                                        scripted):
    _, ckpt = tiny
    data = tmp_path / "r1.jsonl"
    data.write_text(json.dumps({"conversations": r1_conversation("3加4？", "7")}, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    for flags in ([], ["--calculator"]):
        scripted.clear()
        for what in (["--prompt", "3加4？"], ["--eval_file", data]):
            code, _, err = run_main(monkeypatch, capsys, ["--model_mode", 2, "--ckpt", ckpt, *what, *flags])
            assert code == 0, err
        assert len(scripted) == 2
        assert all((c["calculator"] is not None) == bool(flags) for c in scripted)
        if flags:
            assert scripted[0]["calculator"].result_ids(tok.encode("3+4=")) == tok.encode("7")


def test_session_keeps_thinking_unless_told_not_to(tok, tiny, scripted):
    model, _ = tiny
    for keep, remembered in ((True, REPLY), (False, "7")):
        session = ChatSession(model, tok, SamplingConfig(), keep_thinking=keep)
        "".join(session.reply("3加4？"))
        assert session.exchanges == [("3加4？", remembered)]


def r1_conversation(question, gold):
    reply = f"<think>\n想一想。\n</think>\n<answer>\n{gold}\n</answer>"
    return [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]


def test_batch_eval_scores_reasoning_against_the_reference_answer(monkeypatch, tok, tiny):
    model, _ = tiny
    replies = iter([REPLY, "答案是7", "<think>\n</think>\n<answer>\n8\n</answer>"])

    def fake_generate(model, prompt_ids, cfg, generator=None, budget=None):
        yield from tok.encode(next(replies))

    monkeypatch.setattr(batch_eval, "generate_batch", per_sample(fake_generate))
    samples = [make_sample(f"f:{i}", r1_conversation("3加4？", "7"), tok, chat=True) for i in range(3)]
    r = evaluate_samples(model, tok, samples, SamplingConfig(), show_progress=False)["reasoning"]
    # compliant+correct, non-compliant but correct (fallback reads 7), compliant but wrong
    assert r["n"] == 3
    assert r["compliance"] == pytest.approx(200 / 3)
    assert r["accuracy"] == pytest.approx(200 / 3)
    assert r["strict_accuracy"] == pytest.approx(100 / 3)


def test_no_reasoning_scores_without_answer_tags(monkeypatch, tok, tiny):
    model, _ = tiny
    monkeypatch.setattr(batch_eval, "generate_batch", per_sample(lambda *a, **k: iter(tok.encode("好"))))
    conversation = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}]
    report = evaluate_samples(model, tok, [make_sample("f:1", conversation, tok, chat=True)], SamplingConfig(),
                              show_progress=False)
    assert "reasoning" not in report


def test_think_budgets_table(monkeypatch, capsys, tmp_path, tiny, scripted):
    _, ckpt = tiny
    data = tmp_path / "r1.jsonl"
    rows = [{"conversations": r1_conversation("3加4？", "7")}] * 2
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    code, out, err = run_main(monkeypatch, capsys, ["--model_mode", 2, "--ckpt", ckpt, "--eval_file", data,
                                                    "--think_budgets", "none,8", "--out", tmp_path / "p.jsonl"])
    assert code == 0, err
    table = out.strip().splitlines()
    assert table[2].startswith("| no forcing | 2 | 100.0 | 100.0 |")
    assert table[3].startswith("| max 8 | 2 | 100.0 | 100.0 |")
    assert [c["budget"] is None for c in scripted] == [True, True, False, False]
    assert (tmp_path / "p.think-8.jsonl").is_file() and (tmp_path / "p.think-none.jsonl").is_file()
