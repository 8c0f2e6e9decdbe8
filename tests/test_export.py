"""export.py: the HF directory against transformers, and bad input for both formats.

The oracles are independent of the exporter: transformers' own Llama and
tokenizer (greedy generations must match ours token for token) and
hand-derived hyperparameters. The GGUF file is checked in test_export_gguf.py.
"""
import io
import json
import math
import logging
import re
from pathlib import Path

import pytest
import torch

import export
from inference.generate import generate
from inference.sampling import SamplingConfig
from model import SpongeBob, get_preset, save_model
from exporters.hf_dir import write_hf_export, write_safetensors
from tokenizer import load_tokenizer

TINY = get_preset("spongebob-tiny")  # dim 64, 2 layers, 4 heads / 2 KV heads, head_dim 16, FFN 160, ctx 512


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def save_tiny(path: Path, tok, tied: bool) -> tuple[SpongeBob, Path]:
    torch.manual_seed(1 if tied else 0)
    model = SpongeBob(TINY.with_changes(tie_embeddings=tied)).eval()
    save_model(path, model, tok.identity(), meta={"stage": "sft"})
    return model, path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, tok):
    root = tmp_path_factory.mktemp("ckpt")
    return {tied: save_tiny(root / f"tiny-{'tied' if tied else 'untied'}.pth", tok, tied) for tied in (False, True)}


def run_export(capsys, *argv) -> tuple[int, str, str]:
    code = export.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def leftovers(parent: Path) -> list[str]:
    """Temporary siblings an export might have left behind."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------- Hugging Face

def load_hf(out_dir: Path):
    """(model, loading info, what transformers logged at WARNING+; its logger does not propagate)."""
    transformers = pytest.importorskip("transformers")
    log, logger = io.StringIO(), logging.getLogger("transformers")
    handler = logging.StreamHandler(log)
    handler.setLevel(logging.WARNING)
    logger.addHandler(handler)
    try:
        hf, info = transformers.AutoModelForCausalLM.from_pretrained(out_dir, output_loading_info=True)
    finally:
        logger.removeHandler(handler)
    return hf.eval(), info, log.getvalue()


def hf_greedy(hf, ids: list[int], max_new: int) -> list[int]:
    out = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                      do_sample=False, repetition_penalty=1.0, max_new_tokens=max_new)[0, len(ids):].tolist()
    # HF keeps the end token it stopped on; our generate does not yield it.
    return out[:-1] if out and out[-1] in (0, 2) else out


@pytest.fixture(scope="module")
def hf_exports(tmp_path_factory, ckpts):
    """Each tiny checkpoint exported by export.py and loaded back by transformers (once: loading is slow)."""
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("hf")
    exports = {}
    for tied, (ours, ckpt) in ckpts.items():
        out_dir = root / "export" / f"tiny-{tied}-hf"
        assert export.main(["--ckpt", str(ckpt), "--format", "hf", "--export_dir", str(out_dir)]) == 0
        hf, info, warnings = load_hf(out_dir)
        exports[tied] = {"dir": out_dir, "ours": ours, "hf": hf, "info": info, "warnings": warnings,
                         "tok": transformers.AutoTokenizer.from_pretrained(out_dir)}
    return exports


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_hf_export_loads_without_warnings(hf_exports, tied):
    exp = hf_exports[tied]
    assert sorted(p.name for p in exp["dir"].iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors",
        "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    assert leftovers(exp["dir"].parent) == []
    info = exp["info"]
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    # Neither 5.x's "LOAD REPORT ... MISSING" nor 4.x's "newly initialized" (see the negative control below).
    assert not re.search(r"(?i)missing|newly initialized|not initialized|unexpected|not used", exp["warnings"])
    hf, ours = exp["hf"], exp["ours"]
    assert type(hf).__name__ == "LlamaForCausalLM"
    assert hf.config.tie_word_embeddings is tied
    if tied:
        assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()
    assert torch.equal(hf.lm_head.weight, ours.lm_head.weight)


CHATS = [[{"role": "user", "content": "你好"}],
         [{"role": "system", "content": "You are SpongeBob."}, {"role": "user", "content": "2+3=?"},
          {"role": "assistant", "content": "<think>\n2+3\n</think>\n<answer>\n5\n</answer>"},
          {"role": "user", "content": "再来一次"}]]


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_hf_export_generates_like_ours(hf_exports, tok, tied):
    exp = hf_exports[tied]
    hf_tok, ours = exp["tok"], exp["ours"]
    # No token_type_ids (transformers 4.x would add them, and Llama's generate rejects them).
    assert list(hf_tok("海绵宝宝")) == ["input_ids", "attention_mask"]
    texts = ["<|endoftext|>海绵宝宝住在", "<|endoftext|>Hello, world! 123 🙂"]
    for chat in CHATS:
        text = hf_tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        assert text == tok.apply_chat_template(chat, add_generation_prompt=True)  # the template shipped intact
        texts.append(text)
    for i, text in enumerate(texts):
        ids = hf_tok.encode(text, add_special_tokens=False)
        assert ids == tok.encode(text)
        if tied and i % 2:  # the tied head changes only the last matmul: half the prompts suffice (time)
            continue
        mine = list(generate(ours, ids, SamplingConfig(max_new_tokens=10, temperature=0.0, stop_ids=(0, 2))))
        assert hf_greedy(exp["hf"], ids, 10) == mine


def test_the_exported_defaults_decode_as_our_greedy(tmp_path, tok):
    """generate() with the shipped generation_config.json, and with do_sample=False, is our argmax
    greedy for 20 tokens; the control shows that the old file's repetition penalty would not be."""
    torch.manual_seed(5)  # a seed whose 20 greedy tokens a 1.1 penalty changes, so the control bites
    ours = SpongeBob(TINY).eval()
    ckpt = tmp_path / "tiny.pth"
    save_model(ckpt, ours, tok.identity(), meta={"stage": "sft"})
    out_dir = tmp_path / "tiny-hf"
    assert export.main(["--ckpt", str(ckpt), "--format", "hf", "--export_dir", str(out_dir)]) == 0
    hf = load_hf(out_dir)[0]
    ids = tok.apply_chat_template([{"role": "user", "content": "海绵宝宝住在哪里？"}], add_generation_prompt=True,
                                  tokenize=True)
    mine = list(generate(ours, ids, SamplingConfig(max_new_tokens=20, temperature=0.0, stop_ids=(0, 2))))
    prompt = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
    for kwargs in ({}, {"do_sample": False}):
        out = hf.generate(**prompt, max_new_tokens=20, **kwargs)[0, len(ids):].tolist()
        assert (out[:-1] if out and out[-1] in (0, 2) else out) == mine
    penalised = hf.generate(**prompt, max_new_tokens=20, do_sample=False, repetition_penalty=1.1)[0, len(ids):]
    assert penalised.tolist()[:len(mine)] != mine  # the old file's 1.1 would have changed the greedy answer


def test_hf_config_and_generation_config(hf_exports):
    exp = hf_exports[False]
    cfg = exp["hf"].config
    rope = getattr(cfg, "rope_parameters", None) or {"rope_theta": cfg.rope_theta}
    assert rope["rope_theta"] == 1e6  # not the 10000 fallback
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.intermediate_size, cfg.vocab_size, cfg.max_position_embeddings) == (64, 2, 4, 2, 160, 6400, 512)
    gen = json.loads((exp["dir"] / "generation_config.json").read_text())
    # bos <|endoftext|> 0 (what pretraining puts before a document); a reply ends at <|im_end|> 2, a
    # continuation at <|endoftext|> 0; pad 0.
    assert (gen["bos_token_id"], gen["eos_token_id"], gen["pad_token_id"]) == (0, [2, 0], 0)
    assert cfg.bos_token_id == 0 and exp["tok"].bos_token_id == 0
    assert list(exp["hf"].generation_config.eos_token_id) == [2, 0]
    assert gen["do_sample"] is False and not {"repetition_penalty", "temperature", "top_p"} & set(gen)


def lm_eval_rolling_bits_per_byte(hf, hf_tok, texts: list[str]) -> float:
    """Bits per byte as lm-eval's loglikelihood_rolling computes it, with the export's own defaults:
    the text encoded without special tokens, its first window read after prefix_token_id (HFLM takes
    the tokenizer's bos_token_id), windows as long as config.max_position_embeddings."""
    prefix, max_len = hf_tok.bos_token_id, hf.config.max_position_embeddings
    nll, n_bytes = 0.0, 0
    for text in texts:
        ids = hf_tok(text, add_special_tokens=False)["input_ids"]
        assert len(ids) < max_len  # one window: the first, [prefix] + ids[:-1] predicting ids
        inputs = torch.tensor([[prefix] + ids[:-1]])
        with torch.no_grad():
            logp = torch.log_softmax(hf(inputs).logits[0].float(), dim=-1)
        nll -= float(logp[torch.arange(len(ids)), torch.tensor(ids)].sum())
        n_bytes += len(text.encode("utf-8"))
    return nll / (n_bytes * math.log(2))


def test_lm_eval_style_bits_per_byte_on_the_export_equals_ours(hf_exports, tok):
    """Any tool that starts a text with the export's BOS must see what pretraining showed the model:
    <|endoftext|> before each document. Then lm-eval's rolling loglikelihood is our bits per byte."""
    from evaluation.bpb import text_bits_per_byte
    exp = hf_exports[False]
    texts = ["海绵宝宝住在菠萝屋里。", "派大星有八个贝壳，海绵宝宝有两个贝壳。", "The quick brown fox."]
    ours = text_bits_per_byte(exp["ours"], tok, texts, 512)
    assert lm_eval_rolling_bits_per_byte(exp["hf"], exp["tok"], texts) == pytest.approx(ours, rel=1e-5)


def test_capture_sees_a_missing_head(tmp_path):
    """The negative control for 'no warning': an untied export without lm_head is reported."""
    safetensors_torch = pytest.importorskip("safetensors.torch")
    torch.manual_seed(0)
    model = SpongeBob(TINY)
    out_dir = tmp_path / "headless"
    write_hf_export(model, load_tokenizer(), out_dir)
    # Cloned: load_file maps the file, which is about to be rewritten.
    weights = {k: v.clone() for k, v in safetensors_torch.load_file(out_dir / "model.safetensors").items()}
    del weights["lm_head.weight"]
    write_safetensors(weights, out_dir / "model.safetensors")
    _, info, warnings = load_hf(out_dir)
    assert "lm_head.weight" in info["missing_keys"]
    assert "lm_head" in warnings


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_safetensors_writer_reads_back_with_the_real_library(tmp_path, dtype):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    tensors = {"a": torch.randn(3, 5).to(dtype), "b.c": torch.arange(7).to(dtype), "d": torch.randn(2, 1, 4).to(dtype)}
    path = tmp_path / "x.safetensors"
    write_safetensors(tensors, path)
    back = safetensors_torch.load_file(path)
    assert set(back) == set(tensors)
    for name, t in tensors.items():
        assert back[name].dtype == dtype and torch.equal(back[name], t)
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    assert header_len % 8 == 0  # tensor data 8-byte aligned


# ---------------------------------------------------------------- bad input

# case -> (how the checkpoint dict is spoiled, None: no checkpoint written, what the error must name)
BAD_CHECKPOINTS = {
    "missing_key": (lambda c: c["model"].pop("layers.1.mlp.up_proj.weight"), "up_proj"),
    "other_config": (lambda c: c["config"].update(hidden_dim=192), "but (192, 64) in the model"),
    "other_vocab": (lambda c: c["config"].update(vocab_size=8000), "vocab"),
    "not_a_checkpoint": (None, "not a loadable checkpoint"),
    "no_file": (None, "not found"),
}


@pytest.mark.parametrize("fmt", ["hf", "gguf"])
@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_bad_checkpoint_is_one_line_and_leaves_nothing(tmp_path, capsys, ckpts, case, fmt):
    spoil, want = BAD_CHECKPOINTS[case]
    bad = tmp_path / "bad.pth"
    if spoil is not None:
        ckpt = torch.load(ckpts[False][1], weights_only=True)
        spoil(ckpt)
        torch.save(ckpt, bad)
    elif case == "not_a_checkpoint":
        bad.write_text("hello")
    out = tmp_path / "out"
    out.mkdir()
    target = out / ("x-hf" if fmt == "hf" else "x.gguf")
    flag = "--export_dir" if fmt == "hf" else "--out_file"
    code, stdout, err = run_export(capsys, "--ckpt", bad, "--format", fmt, flag, target)
    assert code == 2 and stdout == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert str(bad) in err and want in err
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("fmt", ["hf", "gguf"])
def test_a_failure_while_writing_leaves_nothing(tmp_path, capsys, ckpts, monkeypatch, fmt):
    def half_written(model, tok, path, **kwargs):
        target = Path(path) / "model.safetensors" if fmt == "hf" else Path(path)
        target.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "write_hf_export" if fmt == "hf" else "write_gguf", half_written)
    target = tmp_path / ("x-hf" if fmt == "hf" else "x.gguf")
    flag = "--export_dir" if fmt == "hf" else "--out_file"
    code, _, err = run_export(capsys, "--ckpt", ckpts[False][1], "--format", fmt, flag, target)
    assert code == 2 and err == f"error: {target}: could not write (No space left on device)\n"
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite_and_only_replaces_an_export(tmp_path, capsys, ckpts):
    ckpt = ckpts[False][1]
    gguf_file = tmp_path / "m.gguf"
    gguf_file.write_bytes(b"old")
    code, _, err = run_export(capsys, "--ckpt", ckpt, "--format", "gguf", "--out_file", gguf_file)
    assert code == 2 and "already exists; pass --overwrite" in err and gguf_file.read_bytes() == b"old"
    assert run_export(capsys, "--ckpt", ckpt, "--format", "gguf", "--out_file", gguf_file, "--overwrite")[0] == 0
    assert gguf_file.read_bytes()[:4] == b"GGUF"

    hf_dir = tmp_path / "hf"
    assert run_export(capsys, "--ckpt", ckpt, "--export_dir", hf_dir)[0] == 0
    (hf_dir / "stale.txt").write_text("from an older export")
    assert run_export(capsys, "--ckpt", ckpt, "--export_dir", hf_dir, "--overwrite")[0] == 0
    assert not (hf_dir / "stale.txt").exists() and (hf_dir / "model.safetensors").is_file()

    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    code, _, err = run_export(capsys, "--ckpt", ckpt, "--export_dir", precious, "--overwrite")
    assert code == 2 and "refusing to replace it" in err
    assert (precious / "notes.txt").read_text() == "keep me"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("argv", [["--out_file", "x.gguf"], ["--format", "gguf", "--export_dir", "d"], ["--dtype", "f16"]])
def test_flags_for_the_other_format_are_refused(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        export.main(["--ckpt", "x.pth"] + argv)
    assert exc.value.code == 2 and "error: --" in capsys.readouterr().err


@pytest.mark.parametrize("out_dir", ["out/export/distill-hf", "runs/a/sft-peft", "exports"])
def test_an_export_folder_given_as_out_dir_is_refused_with_the_right_flag(capsys, out_dir):
    # The README once said --out_dir out/export/distill-hf, which wrote .../distill-hf/export/distill-hf.
    with pytest.raises(SystemExit) as exc:
        export.main(["--ckpt", "x.pth", "--format", "hf", "--out_dir", out_dir])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1
    assert f"--out_dir {out_dir}: that reads like the export folder itself" in err
    assert err.rstrip().endswith(f"pass --export_dir {out_dir}")
