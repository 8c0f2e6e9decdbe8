"""eval_model.py and the streaming decoder it prints through (inference/streaming.py)."""
import io
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import eval_model
from inference.generate import generate
from inference.sampling import SamplingConfig
from model import SpongeBob, get_preset, save_model
from inference.streaming import REPLACEMENT_CHAR, StreamDecoder, stream_text
from tokenizer import load_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_PARAMS = "905,536"  # spongebob-tiny, as documented in the README table


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def gpt2_byte_chars() -> dict[int, str]:
    """The byte-level BPE alphabet, written out from its definition: printable
    Latin-1 bytes stand for themselves, the other 68 take code points 256, 257, ..."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def byte_ids(tok, data: bytes) -> list[int]:
    """One token per byte: the worst split a generation can produce."""
    chars = gpt2_byte_chars()
    ids = [tok.token_to_id(chars[b]) for b in data]
    assert None not in ids
    return ids


def pushes(tok, ids, **kw) -> list[str]:
    decoder = StreamDecoder(tok, **kw)
    return [decoder.push(i) for i in ids] + [decoder.flush()]


# ---------------------------------------------------------------- streaming decoder

def test_a_character_split_over_tokens_comes_out_whole_when_complete(tok):
    ids = byte_ids(tok, "a😀b中".encode())  # 1 + 4 + 1 + 3 bytes
    # Expected by hand: each character appears with the push of its last byte.
    assert pushes(tok, ids) == ["a", "", "", "", "😀", "b", "", "", "中", ""]


@pytest.mark.parametrize("text", ["😀👍🏽 emoji", "中文，CJK：𠀀𪚥", "mixed 你好 ok 🎉\n第二行", "ä€𝄞"])
def test_streamed_chunks_equal_the_whole_decode(tok, text):
    for ids in (tok.encode(text), byte_ids(tok, text.encode())):
        chunks = pushes(tok, ids)
        assert "".join(chunks) == tok.decode(ids) == text
        assert not any(REPLACEMENT_CHAR in c for c in chunks)


def test_invalid_bytes_are_kept_not_lost(tok):
    # A character cut short at the end: held back, then emitted by flush.
    ids = byte_ids(tok, b"a") + byte_ids(tok, "中".encode()[:2])
    assert pushes(tok, ids) == ["a", "", "", REPLACEMENT_CHAR]
    assert tok.decode(ids) == "a" + REPLACEMENT_CHAR
    # A stray continuation byte mid-stream: printed once the next token shows it is no prefix.
    ids = byte_ids(tok, b"a\x80b")
    assert pushes(tok, ids) == ["a", "", REPLACEMENT_CHAR + "b", ""]


def test_random_streams_match_the_whole_decode_and_stay_cheap(tok):
    """Fuzz: byte tokens, whole words, control tokens and long runs of one bad byte."""
    decoded_lengths = []

    class Spy:
        def decode(self, ids, skip_special_tokens=False):
            decoded_lengths.append(len(ids))
            return tok.decode(ids, skip_special_tokens=skip_special_tokens)

    rng = random.Random(0)
    pool = byte_ids(tok, bytes(range(256))) + list(range(7)) + tok.encode("你好世界，今天 weather 很好")
    for trial in range(200):
        ids = [rng.choice(pool) for _ in range(rng.randint(1, 40))]
        if trial % 10 == 0:
            ids += byte_ids(tok, b"\x80") * 100  # a degenerate model repeating one bad byte
        for skip in (False, True):
            decoded_lengths.clear()
            chunks = list(stream_text(Spy(), ids, skip_special_tokens=skip))
            assert "".join(chunks) == tok.decode(ids, skip_special_tokens=skip)
            # Each decode spans at most an unfinished character (3 bytes) and the new token.
            assert max(decoded_lengths) <= 4


# ---------------------------------------------------------------- eval_model.py

def save_tiny(path, tok, meta: dict):
    """A seeded tiny model saved as a checkpoint: (model, path)."""
    torch.manual_seed(0)
    model = SpongeBob(get_preset("spongebob-tiny")).eval()
    save_model(path, model, tok.identity(), meta=meta)
    return model, path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tok):
    return save_tiny(tmp_path_factory.mktemp("ckpt") / "tiny.pth", tok, {"stage": "pretrain", "step": 3})


def greedy_oracle(model, tok, prompt: str, max_new: int, penalty: float) -> str:
    """The continuation computed without eval_model: generate, cut at a stop token, decode at once."""
    cfg = SamplingConfig(max_new_tokens=max_new, temperature=0.0, repetition_penalty=penalty)
    ids = list(generate(model, [tok.endoftext_id] + tok.encode(prompt), cfg))
    for i, token_id in enumerate(ids):
        if token_id in (tok.endoftext_id, tok.eos_id):
            ids = ids[:i]
            break
    return tok.decode(ids)


def run_main(monkeypatch, capsys, argv, stdin=""):
    monkeypatch.setattr(sys, "stdin", stdin if isinstance(stdin, io.IOBase) else io.StringIO(stdin))
    code = eval_model.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


GREEDY = ["--temperature", 0, "--repetition_penalty", 1.3, "--max_new_tokens", 12, "--device", "cpu"]


def test_prompt_greedy_equals_direct_generation(monkeypatch, capsys, tok, tiny):
    model, path = tiny
    code, out, err = run_main(monkeypatch, capsys, ["--ckpt", path, "--prompt", "床前明月光", *GREEDY])
    assert code == 0
    assert out == "床前明月光" + greedy_oracle(model, tok, "床前明月光", 12, 1.3) + "\n"
    assert str(path) in err and "step 3" in err and TINY_PARAMS in err and "cpu" in err


@pytest.mark.parametrize("argv,penalty", [
    (["--temperature", "0"], 1.0),                                 # greedy is plain argmax
    (["--eval_file", "x.jsonl"], 1.0),                             # batch evaluation is greedy by default
    ([], 1.1),                                                     # chat samples at 0.7
    (["--temperature", "0", "--repetition_penalty", "1.1"], 1.1),  # a named penalty always holds
    (["--temperature", "0.5", "--repetition_penalty", "1"], 1.0),
])
def test_greedy_is_plain_argmax_unless_a_penalty_is_named(argv, penalty):
    parser = eval_model.build_parser()
    args = parser.parse_args(argv)
    eval_model.check_args(parser, args)
    assert args.repetition_penalty == penalty


def test_piped_lines_give_one_json_line_each_in_order(monkeypatch, capsys, tok, tiny):
    model, path = tiny
    prompts = ["床前明月光", "Hello world", "😀 一行"]
    stdin = f"{prompts[0]}\n\n{prompts[1]}\n   \n{prompts[2]}"  # blank lines are skipped
    code, out, _ = run_main(monkeypatch, capsys, ["--ckpt", path, *GREEDY], stdin)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows == [{"prompt": p, "continuation": greedy_oracle(model, tok, p, 12, 1.3)} for p in prompts]


def test_default_checkpoint_of_mode_0(monkeypatch, capsys, tmp_path, tiny):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "pretrain.pth").write_bytes(tiny[1].read_bytes())
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(monkeypatch, capsys, ["--prompt", "hi", *GREEDY])
    assert code == 0 and out.startswith("hi") and "out/pretrain.pth" in err


def test_seed_makes_sampling_reproducible(monkeypatch, capsys, tiny):
    path = tiny[1]
    sample = ["--ckpt", path, "--temperature", 1.0, "--top_p", 1.0, "--max_new_tokens", 12]

    def sampled(seed):
        code, out, _ = run_main(monkeypatch, capsys, [*sample, "--seed", seed, "--prompt", "今天"])
        assert code == 0
        return out

    assert sampled(5) == sampled(5)
    assert sampled(5) != sampled(6)  # 12 draws from ~6400 near-equal choices: the seed must matter
    # Seeded per prompt: a prompt's output does not depend on the prompts before it.
    code, out, _ = run_main(monkeypatch, capsys, [*sample, "--seed", 5], "明天\n今天\n")
    assert "今天" + json.loads(out.splitlines()[1])["continuation"] + "\n" == sampled(5)


def test_empty_prompt_starts_a_new_document(monkeypatch, capsys, tok, tiny):
    model, path = tiny
    code, out, _ = run_main(monkeypatch, capsys, ["--ckpt", path, "--prompt", "", *GREEDY])
    cfg = SamplingConfig(max_new_tokens=12, temperature=0.0, repetition_penalty=1.3,
                         stop_ids=(tok.endoftext_id, tok.eos_id))
    assert code == 0 and out == tok.decode(list(generate(model, [tok.endoftext_id], cfg))) + "\n"


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_interactive_loop(monkeypatch, capsys, tok, tiny):
    model, path = tiny
    code, out, _ = run_main(monkeypatch, capsys, ["--ckpt", path, *GREEDY], FakeTerminal("床前\n\n明月\n"))
    assert code == 0  # Ctrl-D (end of input) quits cleanly
    expected = [f"{p}{greedy_oracle(model, tok, p, 12, 1.3)}\n" for p in ("床前", "明月")]
    marker = eval_model.PROMPT_MARKER
    # The empty line just asks again.
    assert out == f"{marker}{expected[0]}{marker}{marker}{expected[1]}{marker}\n"


def test_ctrl_c_stops_one_generation_then_ctrl_c_at_the_prompt_quits(monkeypatch, capsys, tok, tiny):
    calls = []

    def interrupted(model, prompt_ids, cfg, generator=None, budget=None):
        calls.append(prompt_ids)
        yield from tok.encode("半句")
        raise KeyboardInterrupt

    class CtrlCAtTheEnd(FakeTerminal):
        def readline(self, *args):
            line = super().readline(*args)
            if not line:
                raise KeyboardInterrupt
            return line

    monkeypatch.setattr(eval_model, "generate", interrupted)
    code, out, _ = run_main(monkeypatch, capsys, ["--ckpt", tiny[1], *GREEDY], CtrlCAtTheEnd("一\n二\n"))
    assert code == 0 and len(calls) == 2
    assert out.count("半句") == 2


def one_line_error(err: str) -> str:
    """The error line of stderr, checking that it is one line and the only other
    line, if any, is the model description."""
    assert "Traceback" not in err
    *before, last = err.strip().splitlines()
    assert last.startswith("error: ") and all(line.startswith("loaded ") for line in before[:1])
    assert len(before) <= 1
    return last


def test_missing_checkpoint_is_one_line_exit_2(tmp_path):
    # As a real process: the exit status and stderr a user sees.
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "eval_model.py"), "--prompt", "hi"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    line = one_line_error(proc.stderr)
    assert "out/pretrain.pth not found" in line and "python pretrain.py" in line and "--ckpt" in line


@pytest.mark.parametrize("mode, path, script", [(1, "out/sft.pth", "sft.py"), (2, "out/distill.pth", "distill.py"),
                                                (3, "out/sft_long.pth", "sft_long.py")])
def test_missing_checkpoint_names_the_stage_script(monkeypatch, capsys, tmp_path, mode, path, script):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(monkeypatch, capsys, ["--model_mode", mode, "--prompt", "hi"])
    assert code == 2 and out == ""
    line = one_line_error(err)
    assert f"{path} not found" in line and f"python {script}" in line


def test_missing_explicit_ckpt_names_it(monkeypatch, capsys, tmp_path):
    code, _, err = run_main(monkeypatch, capsys, ["--ckpt", tmp_path / "nope.pth", "--prompt", "hi"])
    assert code == 2 and str(tmp_path / "nope.pth") in one_line_error(err)


def test_checkpoint_for_another_vocabulary_is_refused(monkeypatch, capsys, tmp_path):
    path = tmp_path / "other_vocab.pth"
    model = SpongeBob(get_preset("spongebob-tiny").with_changes(vocab_size=512))
    save_model(path, model, {"vocab_size": 512, "sha256": "c" * 64})
    code, out, err = run_main(monkeypatch, capsys, ["--ckpt", path, "--prompt", "hi"])
    assert code == 2 and out == ""
    line = one_line_error(err)
    assert "512" in line and "6400" in line


def test_corrupt_checkpoint_is_refused(monkeypatch, capsys, tmp_path, tiny):
    path = tmp_path / "cut.pth"
    path.write_bytes(tiny[1].read_bytes()[:1000])
    code, _, err = run_main(monkeypatch, capsys, ["--ckpt", path, "--prompt", "hi"])
    assert code == 2 and str(path) in one_line_error(err)


def test_bad_stdin_and_bad_flags(monkeypatch, capsys, tiny):
    not_utf8 = io.TextIOWrapper(io.BytesIO(b"ok\n\xff\xfe\n"), encoding="utf-8")
    code, _, err = run_main(monkeypatch, capsys, ["--ckpt", tiny[1], *GREEDY], not_utf8)
    assert code == 2 and "stdin line 2: not valid UTF-8" in one_line_error(err)
    code, _, err = run_main(monkeypatch, capsys, ["--ckpt", tiny[1], "--prompt", "x", "--device", "nonsense"])
    assert code == 2 and "--device nonsense" in one_line_error(err)
    for flag, value in [("--temperature", -1), ("--top_p", 0), ("--top_k", -1), ("--max_new_tokens", 0)]:
        with pytest.raises(SystemExit) as exc:
            eval_model.main(["--prompt", "x", flag, str(value)])
        assert exc.value.code == 2 and flag in capsys.readouterr().err
