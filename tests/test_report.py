"""The stage report (python -m evaluation.report): bits per byte and the multiple-choice scorer pinned by
hand-computed stubs, the file readers' one-line errors, pass@k and Wilson, and the whole command on two
tiny checkpoints."""
import json
import math
from types import SimpleNamespace

import pytest
import torch

import evaluation.math_eval as math_eval
from dataset.readers import DataError
from evaluation import report
from evaluation.bpb import bits_per_byte, held_out_texts, text_bits_per_byte, worked_problem_text
from evaluation.math_data import MathProblem, equation_value, iter_math
from evaluation.math_eval import evaluate_math
from evaluation.pass_at_k import pass_at_k, wilson
from evaluation.mc import iter_questions, option_logprobs, pick
from evaluation.report_plot import plot_report
from test_eval_model import save_tiny
from tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


class Bigram(torch.nn.Module):
    """A stub language model: the logits at a position are log P(next | the token there), from a table."""

    def __init__(self, probs: list[list[float]], context: int = 64):
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(probs).log(), requires_grad=False)
        self.config = SimpleNamespace(max_position_embeddings=context)

    def forward(self, x):
        return self.table[x]


UNIFORM = [0.25] * 4
# After token 1 the next token is 0, 1, 2, 3 with probability .1, .2, .3, .4; after any other, uniform.
AFTER_ONE = [UNIFORM, [0.1, 0.2, 0.3, 0.4], UNIFORM, UNIFORM]


@pytest.mark.parametrize("context", [1, 2, 8])  # windows never change a model that looks at one token
def test_bits_per_byte_by_hand(context):
    model = Bigram(AFTER_ONE)
    # <|endoftext|> is 0 here: 0 -> 1 (p .25), 1 -> 3 (p .4), 3 -> 2 (p .25); the text is 5 bytes.
    nats = -(math.log(0.25) + math.log(0.4) + math.log(0.25))
    assert bits_per_byte(model, [[0, 1, 3, 2]], 5, context) == pytest.approx(nats / (math.log(2) * 5))


def test_lists_of_unequal_length_batch_like_one_at_a_time(tok, tmp_path):
    stub = Bigram(AFTER_ONE)
    both = -(2 * math.log(0.25) + math.log(0.4) + math.log(0.25) + math.log(0.1)) / (math.log(2) * 9)
    assert bits_per_byte(stub, [[0, 1, 3, 2], [0, 1, 0]], 9, 4) == pytest.approx(both)  # 0->1, 1->0: .25 * .1
    model, _ = save_tiny(tmp_path / "t.pth", tok, {})  # a real model: right padding must change nothing
    texts = ["海绵宝宝住在菠萝屋里。", "派大星有八个贝壳，海绵宝宝有两个贝壳，派大星的贝壳多。"]
    sizes = [len(t.encode()) for t in texts]
    alone = sum(text_bits_per_byte(model, tok, [t], 512) * n for t, n in zip(texts, sizes)) / sum(sizes)
    assert text_bits_per_byte(model, tok, texts, 512) == pytest.approx(alone, rel=1e-5)


def test_uniform_model_costs_log2_vocab_per_token(tok):
    vocab = len(tok)
    model = Bigram([[1.0 / vocab] * vocab] * vocab)
    text = "海绵宝宝住在菠萝屋里。"
    tokens = len(tok.encode(text))
    assert text_bits_per_byte(model, tok, [text], 512) == pytest.approx(tokens * math.log2(vocab) / len(text.encode()))


def test_option_scorer_by_hand():
    model = Bigram(AFTER_ONE)
    # The prompt ends in token 1, so each option's first token is read from AFTER_ONE.
    options = [[1], [3, 3], [2], [0]]  # A: .2; B: .4 * .25 = .1; C: .3; D: .1
    logprobs = option_logprobs(model, [0, 1], options)
    assert logprobs == pytest.approx([math.log(0.2), math.log(0.1), math.log(0.3), math.log(0.1)])
    assert pick(logprobs) == 2                     # C: the likeliest continuation
    assert pick(logprobs, [1, 4, 1, 1]) == 1       # per character, B's long text wins: ln .1 / 4 > ln .3


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_cmmlu_and_ceval_rows_are_read(tmp_path):
    cmmlu = write(tmp_path / "cmmlu.csv", ",Question,A,B,C,D,Answer\n0,1+1=?,2,3,4,5,A\n")
    ceval = write(tmp_path / "ceval.csv", "id,question,A,B,C,D,answer,explanation\n7,2+2=?,1,4,3,2,B,因为\n")
    jsonl = write(tmp_path / "mc.jsonl", json.dumps({"question": "q", "A": "a", "B": "b", "C": "c", "D": "d",
                                                     "answer": "D"}) + "\n")
    got = list(iter_questions([cmmlu, ceval, jsonl]))
    assert [(q.question, q.answer) for q in got] == [("1+1=?", 0), ("2+2=?", 1), ("q", 3)]
    assert got[1].options == ("1", "4", "3", "2") and got[1].where == f"{ceval}:2"


def test_a_folder_of_mc_files_is_read_file_by_file_in_name_order(tmp_path):
    folder = tmp_path / "dev"
    folder.mkdir()
    write(folder / "b_subject.csv", ",Question,A,B,C,D,Answer\n0,second,a,b,c,d,C\n")
    write(folder / "a_subject.csv", ",Question,A,B,C,D,Answer\n0,first,a,b,c,d,B\n1,again,a,b,c,d,A\n")
    got = list(iter_questions([folder], max_samples=1))
    assert [(q.question, q.answer, q.where) for q in got] == [("first", 1, f"{folder / 'a_subject.csv'}:2"),
                                                             ("second", 2, f"{folder / 'b_subject.csv'}:2")]


@pytest.mark.parametrize("rows, message", [
    ("0,q,a,b,c,d,A\n1,q,a,b,c,d,E\n", ":3: answer 'E' is not one of A, B, C, D"),
    ("0,q,a,b,c,,A\n", ":2: option D is missing or empty"),
])
def test_bad_mc_rows_name_file_and_line(tmp_path, rows, message):
    path = write(tmp_path / "bad.csv", ",Question,A,B,C,D,Answer\n" + rows)
    with pytest.raises(DataError, match=str(path) + message):
        list(iter_questions([path]))


def test_math_forms(tmp_path):
    gsm = write(tmp_path / "gsm.jsonl", json.dumps({"question": "1+2?", "answer": "1+2=3\n#### 1,003"}) + "\n")
    ape = write(tmp_path / "ape.jsonl", json.dumps({"original_text": "几?", "equation": "x=(11-1)*3/4"}) + "\n")
    assert [(p.prompt[-1]["content"], p.gold) for p in iter_math(gsm)] == [("1+2?", "1,003")]
    assert [p.gold for p in iter_math(ape)] == ["15/2"]
    assert equation_value("x=50%*8") == "4"
    bad = write(tmp_path / "bad.jsonl", json.dumps({"question": "a", "answer": "#### 1"}) + "\n"
                + json.dumps({"question": "b", "answer": "no gold"}) + "\n")
    with pytest.raises(DataError, match=f"{bad}:2: the answer has no '#### gold' line"):
        list(iter_math(bad))


def test_pass_at_k_and_wilson_by_hand():
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)   # 1 - C(3,2)/C(5,2)
    assert pass_at_k(5, 0, 3) == 0.0 and pass_at_k(5, 3, 3) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert wilson(0.0, 4) == pytest.approx((0.0, 0.4899), abs=1e-4)
    assert wilson(0.30, 100) == pytest.approx((0.2189, 0.3958), abs=1e-4)


def test_math_scores_scripted_replies(monkeypatch, tok):
    right, wrong = "<think>\n1+2=3\n</think>\n<answer>\n3\n</answer>", "是4"

    def scripted(model, prompts, samplings, generators=None, **kw):
        # greedy: one right, one wrong; sampled (temperature 1): the first problem right once in two
        replies = [right, wrong] if samplings[0].temperature == 0 else [right, wrong, wrong, wrong]
        return [tok.encode(r) for r in replies]

    monkeypatch.setattr(math_eval, "generate_batch", scripted)
    problems = [MathProblem("f:1", [{"role": "user", "content": "1+2?"}], "3"),
                MathProblem("f:2", [{"role": "user", "content": "2+2?"}], "3")]
    r = evaluate_math(torch.nn.Linear(1, 1), tok, problems, max_new_tokens=8, samples=2, pass_k=2)
    assert (r["accuracy"], r["compliance"], r["pass@1"], r["pass@2"]) == (0.5, 0.5, 0.25, 0.5)


def test_worked_problem_text_is_the_pretrain_form():
    record = {"conversations": [{"role": "user", "content": "问？"},
                                {"role": "assistant", "content": "<think>\n一步。\n两步。\n</think>\n<answer>\n7\n</answer>"}],
              "answer": "7"}
    assert worked_problem_text(record) == "练习：问？\n解：一步。两步。答案是7。"


@pytest.fixture
def two_stages(tmp_path, tok, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the demo's held-out sets are written under ./out/demo
    for name in ("pretrain", "distill"):
        save_tiny(tmp_path / f"{name}.pth", tok, {"stage": name})
    mc = write(tmp_path / "F.csv", ",Question,A,B,C,D,Answer\n" + "".join(
        f"{i},{i}+1=?,{i + 1},{i + 2},{i + 3},{i + 4},A\n" for i in range(5)))
    math_file = write(tmp_path / "G.jsonl", "".join(json.dumps({"question": f"{i}+1?", "answer": f"#### {i + 1}"})
                                                    + "\n" for i in range(5)))
    return tmp_path, mc, math_file


def test_the_report_bars(two_stages, capsys):
    out, mc, math_file = two_stages
    chat = write(out / "chat.jsonl", json.dumps({"conversations": [{"role": "user", "content": "你好"},
                                                                  {"role": "assistant", "content": "你好！"}]}) + "\n")
    argv = ["--out_dir", str(out), "--mc_file", str(mc), "--math_file", str(math_file), "--max_samples", "4",
            "--max_new_tokens", "4", "--device", "cpu", "--chat_file", str(chat)]
    assert report.main(argv) == 0
    text = (out / "report.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert set(rows) == {"stage", "pretrain", "distill"}
    assert "MC acc %" in rows["stage"] and "math acc %" in rows["stage"] and "text bits/byte" in rows["stage"]
    assert "chat BLEU-4" in rows["stage"]
    assert rows["pretrain"].count("—") == 5 and "—" not in rows["distill"]  # math, chat, pref: not for pretrain
    assert "python -m evaluation.report " + " ".join(argv) in text
    assert f"{math_file}: 4 problems" in text and f"{mc}: 4 questions" in text
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(out.glob(".report*"))  # no temp file left behind


def test_a_malformed_mc_file_is_one_line_and_exit_2(two_stages, capsys):
    out, _, math_file = two_stages
    bad = write(out / "bad.csv", ",Question,A,B,C,D,Answer\n0,q,a,b,c,d,A\n1,q,a,b,c,d,Z\n")
    code = report.main(["--out_dir", str(out), "--mc_file", str(bad), "--math_file", str(math_file),
                        "--text_file", str(math_file), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"error: {bad}:3: answer 'Z' is not one of A, B, C, D\n"
    assert not (out / "report.md").exists()


def test_no_checkpoint_is_one_line(tmp_path, capsys):
    assert report.main(["--out_dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path}: no stage checkpoint")


def test_no_matplotlib_is_one_line_and_no_image(tmp_path, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    why = plot_report(tmp_path / "report.png", ["sft"], [("pref", "pref %")], {"sft": {"pref": 50.0}}, {}, {"pref"})
    assert why.startswith("matplotlib is not installed") and "\n" not in why
    assert not (tmp_path / "report.png").exists()


def test_chat_records_without_a_reference_stop_the_report_or_are_counted_under_skip_bad(two_stages, capsys):
    out, _, math_file = two_stages
    belle = write(out / "belle.json", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [
        {"question": "写一首诗", "class": "generation", "std_answer": ""},
        {"question": "1+1等于几？", "class": "math", "std_answer": "2"}]))
    argv = ["--out_dir", str(out), "--stages", "distill", "--math_file", str(math_file), "--text_file",
            str(math_file), "--chat_file", str(belle), "--max_new_tokens", "2", "--device", "cpu"]
    assert report.main(argv) == 2
    assert capsys.readouterr().err.startswith(f"error: {belle}:1: std_answer is empty")
    assert not (out / "report.md").exists()
    assert report.main(argv + ["--skip_bad"]) == 0
    text = (out / "report.md").read_text(encoding="utf-8")
    assert f"{belle}: 1 conversations, greedy (skipped 1 bad record: 1 empty content" in text


def test_a_run_with_its_own_tokenizer_is_scored_with_it(tmp_path, monkeypatch, capsys):
    """The README's own-data block ends with the report: it must read the tokenizer the checkpoints
    record, not the shipped one (a 512-token vocabulary here, so the shipped 6400 would not even load)."""
    from model import SpongeBob, get_preset, save_model
    from test_train_tokenizer import _train, _write_corpus
    monkeypatch.chdir(tmp_path)
    _write_corpus(tmp_path / "corpus")
    assert _train(tmp_path, "tok")[0] == 0
    own = load_tokenizer(tmp_path / "tok")
    torch.manual_seed(0)
    model = SpongeBob(get_preset("spongebob-tiny").with_changes(vocab_size=own.vocab_size)).eval()
    (tmp_path / "run").mkdir()
    save_model(tmp_path / "run" / "pretrain.pth", model, own.record(), {"stage": "pretrain"})
    text = write(tmp_path / "held_out.txt", "海绵宝宝住在菠萝屋里。\n派大星住在石头下面。\n")
    math_file = write(tmp_path / "G.jsonl", json.dumps({"question": "1+1?", "answer": "#### 2"}) + "\n")
    pairs = write(tmp_path / "pairs.jsonl", json.dumps({"prompt": "你好", "chosen": "你好！", "rejected": "走开"}) + "\n")
    argv = ["--out_dir", "run", "--text_file", str(text), "--math_file", str(math_file), "--pref_file", str(pairs),
            "--device", "cpu"]
    assert report.main(argv) == 0, capsys.readouterr().err
    table = (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    expected = text_bits_per_byte(model, own, list(held_out_texts(text, from_r1=False, max_samples=None)), 512)
    assert f"| pretrain | {expected:.3f} |" in table


def test_text_and_choices_are_scored_within_the_length_the_model_was_trained_on(tmp_path, tok, monkeypatch):
    """A checkpoint trained on rows of 8 tokens is scored in windows of 8, never at positions it never saw
    (its RoPE table reaches 512): the report's figures are those of hand-cut windows and prompts."""
    monkeypatch.chdir(tmp_path)
    model, _ = save_tiny(tmp_path / "pretrain.pth", tok, {"stage": "pretrain", "max_seq_len": 8})
    text = "海绵宝宝住在菠萝屋里。派大星住在石头下面。章鱼哥住在复活节岛石像里。"
    ids = [tok.endoftext_id] + tok.encode(text)
    assert len(ids) > 9
    by_hand = sum(-torch.log_softmax(model(torch.tensor([w[:-1]]))[0].float(), -1)[
        torch.arange(len(w) - 1), torch.tensor(w[1:])].sum().item() for w in
        [ids[i:i + 9] for i in range(0, len(ids) - 1, 8)]) / (math.log(2) * len(text.encode()))
    assert by_hand != pytest.approx(bits_per_byte(model, [ids], len(text.encode()), 512))  # the cut matters
    text_file = write(tmp_path / "t.txt", text + "\n")
    mc = write(tmp_path / "F.csv", ",Question,A,B,C,D,Answer\n0,海绵宝宝住在哪里？派大星住在哪里？,菠萝屋里,石头下面,"
                                   "岛上,海底,A\n")
    math_file = write(tmp_path / "G.jsonl", json.dumps({"question": "1+1?", "answer": "#### 2"}) + "\n")
    pairs = write(tmp_path / "pairs.jsonl", json.dumps({"prompt": "你好", "chosen": "你好！", "rejected": "走开"}) + "\n")
    argv = ["--out_dir", str(tmp_path), "--text_file", str(text_file), "--mc_file", str(mc), "--math_file",
            str(math_file), "--pref_file", str(pairs), "--device", "cpu"]
    results, seen = {}, []
    monkeypatch.setattr(report, "markdown", lambda stages, r, *a: results.update(r) or "")
    import evaluation.mc as mc_module
    real_logprobs = mc_module.option_logprobs
    monkeypatch.setattr(mc_module, "option_logprobs", lambda m, p, o: seen.append((p, o)) or real_logprobs(m, p, o))
    assert report.main(argv) == 0
    assert results["pretrain"]["bpb"] == pytest.approx(by_hand, rel=1e-5)
    prompt = [tok.endoftext_id] + tok.encode("海绵宝宝住在哪里？派大星住在哪里？\n答案：")
    options = [tok.encode(o) for o in ("菠萝屋里", "石头下面", "岛上", "海底")]
    cut = prompt[-(8 - max(len(o) for o in options)):]  # the question keeps its end; the longest option fits
    assert seen == [(cut, options)] and len(cut) < len(prompt)
