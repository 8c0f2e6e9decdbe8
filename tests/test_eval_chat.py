"""Chat modes of eval_model.py (inference/chat.py): prompts with history, commands, piped turns."""
import io
import json
import sys

import pytest

import eval_model
import inference.chat as chat
from inference.generate import generate
from inference.sampling import SamplingConfig
from test_eval_model import save_tiny
from tokenizer import load_tokenizer

# The ChatML a prompt must render to, written out by hand.
SYS = "<|im_start|>system\n{}<|im_end|>\n"
USER = "<|im_start|>user\n{}<|im_end|>\n"
ASSISTANT = "<|im_start|>assistant\n{}<|im_end|>\n"
ASK = "<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tok):
    return save_tiny(tmp_path_factory.mktemp("ckpt") / "tiny_sft.pth", tok, {"stage": "sft", "step": 1})


@pytest.fixture
def fake(monkeypatch, tok):
    """Replace generate in inference/chat.py: record what the model is fed, reply 答1, 答2, ..."""
    calls = []

    def fake_generate(model, prompt_ids, cfg, generator=None, budget=None):
        calls.append((tok.decode(prompt_ids), cfg))
        yield from tok.encode(f"答{len(calls)}")

    monkeypatch.setattr(chat, "generate", fake_generate)
    return calls


def run_main(monkeypatch, capsys, argv, stdin=""):
    monkeypatch.setattr(sys, "stdin", stdin if isinstance(stdin, io.IOBase) else io.StringIO(stdin))
    code = eval_model.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def chat_args(path, *extra):
    return ["--model_mode", 1, "--ckpt", path, "--device", "cpu", *extra]


def test_turn_two_sees_turn_one_and_replies_stop_at_im_end(monkeypatch, capsys, tok, tiny, fake):
    code, out, _ = run_main(monkeypatch, capsys, chat_args(tiny[1]), "你好\n\n再见\n")
    assert code == 0
    assert [prompt for prompt, _ in fake] == [
        USER.format("你好") + ASK,
        USER.format("你好") + ASSISTANT.format("答1") + USER.format("再见") + ASK,
    ]
    assert set(fake[0][1].stop_ids) == {tok.im_end_id, tok.endoftext_id}
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows == [{"user": "你好", "assistant": "答1"}, {"user": "再见", "assistant": "答2"}]


def test_history_turns_1_keeps_only_the_last_exchange(monkeypatch, capsys, tiny, fake):
    code, _, _ = run_main(monkeypatch, capsys, chat_args(tiny[1], "--history_turns", 1), "一\n二\n三\n")
    assert code == 0
    assert fake[2][0] == USER.format("二") + ASSISTANT.format("答2") + USER.format("三") + ASK


def test_no_history_makes_every_line_a_new_conversation(monkeypatch, capsys, tiny, fake):
    code, out, _ = run_main(monkeypatch, capsys, chat_args(tiny[1], "--no_history"), "一\n二\n")
    assert code == 0
    assert [prompt for prompt, _ in fake] == [USER.format("一") + ASK, USER.format("二") + ASK]
    assert [json.loads(line)["assistant"] for line in out.splitlines()] == ["答1", "答2"]


def test_system_prompt_comes_first_in_every_turn(monkeypatch, capsys, tiny, fake):
    code, _, _ = run_main(monkeypatch, capsys, chat_args(tiny[1], "--system", "你是海绵宝宝"), "一\n二\n")
    assert code == 0
    head = SYS.format("你是海绵宝宝")
    assert fake[0][0] == head + USER.format("一") + ASK
    assert fake[1][0] == head + USER.format("一") + ASSISTANT.format("答1") + USER.format("二") + ASK


def test_terminal_clear_and_exit(monkeypatch, capsys, tiny, fake):
    stdin = FakeTerminal("一\n/clear\n二\n/exit\n三\n")
    code, out, _ = run_main(monkeypatch, capsys, chat_args(tiny[1]), stdin)
    assert code == 0
    # /clear forgot turn one; /exit stopped before 三.
    assert [prompt for prompt, _ in fake] == [USER.format("一") + ASK, USER.format("二") + ASK]
    marker = chat.CHAT_MARKER
    assert out == f"{marker}答1\n{marker}(conversation cleared)\n{marker}答2\n{marker}"


def test_ctrl_c_stops_one_reply_and_the_part_shown_stays_in_history(monkeypatch, capsys, tok, tiny):
    calls = []

    def interrupted(model, prompt_ids, cfg, generator=None, budget=None):
        calls.append(tok.decode(prompt_ids))
        yield from tok.encode("半句")
        raise KeyboardInterrupt

    monkeypatch.setattr(chat, "generate", interrupted)
    code, out, _ = run_main(monkeypatch, capsys, chat_args(tiny[1]), FakeTerminal("一\n二\n"))
    assert code == 0 and out.count("半句 (stopped)") == 2  # then Ctrl-D quit
    assert calls[1] == USER.format("一") + ASSISTANT.format("半句") + USER.format("二") + ASK


def test_oldest_exchanges_go_when_the_context_is_short(tok, tiny):
    model = tiny[0]
    context = model.config.max_position_embeddings
    # Room for 60 prompt tokens only.
    session = chat.ChatSession(model, tok, SamplingConfig(max_new_tokens=context - 60), system="S",
                               history_turns=10)
    session.exchanges = [("旧" * 40, "a"), ("新", "b")]
    ids = session.prompt_ids("问")
    assert len(ids) <= 60
    assert tok.decode(ids) == SYS.format("S") + USER.format("新") + ASSISTANT.format("b") + USER.format("问") + ASK


def greedy_reply_oracle(model, tok, user: str, max_new: int, penalty: float) -> str:
    """The reply computed without inference/chat.py: template, generate, cut at a turn end, decode."""
    prompt = tok.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True,
                                     tokenize=True)
    cfg = SamplingConfig(max_new_tokens=max_new, temperature=0.0, repetition_penalty=penalty)
    ids = list(generate(model, prompt, cfg))
    for i, token_id in enumerate(ids):
        if token_id in (tok.im_end_id, tok.endoftext_id):
            ids = ids[:i]
            break
    return tok.decode(ids, skip_special_tokens=True)


GREEDY = ["--temperature", 0, "--repetition_penalty", 1.3, "--max_new_tokens", 12]


def test_prompt_greedy_reply_equals_direct_generation(monkeypatch, capsys, tok, tiny):
    model, path = tiny
    code, out, err = run_main(monkeypatch, capsys, chat_args(path, "--prompt", "你好", *GREEDY))
    assert code == 0 and err.startswith("loaded ")
    expected = greedy_reply_oracle(model, tok, "你好", 12, 1.3)
    assert expected and out == expected + "\n"


@pytest.mark.parametrize("mode", [2, 3])
def test_distill_and_long_modes_chat_too(monkeypatch, capsys, tok, tiny, mode):
    model, path = tiny
    argv = ["--model_mode", mode, "--ckpt", path, "--device", "cpu", *GREEDY]
    code, out, err = run_main(monkeypatch, capsys, argv, "你好\n")
    assert code == 0 and "Traceback" not in err
    assert [json.loads(line) for line in out.splitlines()] == [
        {"user": "你好", "assistant": greedy_reply_oracle(model, tok, "你好", 12, 1.3)}]


def test_chat_flag_errors(monkeypatch, capsys, tiny):
    for argv, flag in [(chat_args(tiny[1], "--history_turns", -1), "--history_turns"),
                       (["--ckpt", tiny[1], "--system", "hi"], "--system")]:
        with pytest.raises(SystemExit) as exc:
            eval_model.main([str(a) for a in argv])
        assert exc.value.code == 2 and flag in capsys.readouterr().err
