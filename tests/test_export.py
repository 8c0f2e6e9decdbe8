"""export.py: the HF directory against transformers, the GGUF file against the gguf reader, bad input.

The oracles are independent of the exporter: transformers' own Llama and
tokenizer (greedy generations must match ours token for token), the gguf
package's reader, hand-derived hyperparameters and permutations, and a
hand-written llama.cpp-style (adjacent pair) RoPE.
"""
import io
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import export
from model import SamplingConfig, SpongeBob, generate, get_preset, save_model
from model.export_gguf import interleave_rope_rows
from model.export_hf import write_hf_export, write_safetensors
from model.model import apply_rope, rope_cos_sin
from tokenizer import CHAT_TEMPLATE, load_tokenizer

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<answer>", "</answer>"]
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
        assert export.main(["--ckpt", str(ckpt), "--format", "hf", "--out_dir", str(out_dir)]) == 0
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


def test_hf_config_and_generation_config(hf_exports):
    exp = hf_exports[False]
    cfg = exp["hf"].config
    rope = getattr(cfg, "rope_parameters", None) or {"rope_theta": cfg.rope_theta}
    assert rope["rope_theta"] == 1e6  # not the 10000 fallback
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.intermediate_size, cfg.vocab_size, cfg.max_position_embeddings) == (64, 2, 4, 2, 160, 6400, 512)
    gen = json.loads((exp["dir"] / "generation_config.json").read_text())
    # bos <|im_start|> 1; a reply ends at <|im_end|> 2, a continuation at <|endoftext|> 0; pad 0.
    assert (gen["bos_token_id"], gen["eos_token_id"], gen["pad_token_id"]) == (1, [2, 0], 0)
    assert list(exp["hf"].generation_config.eos_token_id) == [2, 0]


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


# ---------------------------------------------------------------- GGUF layout

def test_interleave_rope_rows_on_a_hand_made_matrix():
    w = torch.arange(8.0)[:, None] * torch.ones(1, 3)  # row r holds r
    # 2 heads of 4: HF pairs (0,2),(1,3) in each head; llama.cpp wants them adjacent.
    assert interleave_rope_rows(w, n_heads=2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    w6 = torch.arange(6.0)[:, None]
    assert interleave_rope_rows(w6, n_heads=1)[:, 0].tolist() == [0, 3, 1, 4, 2, 5]


def rope_adjacent_pairs(x: torch.Tensor, theta: float) -> torch.Tensor:
    """llama.cpp's Llama RoPE, written from its definition: x (T, heads, d); pair (2i, 2i+1)
    at position p turns by p * theta^(-2i/d)."""
    T, _, d = x.shape
    out = torch.empty_like(x)
    for i in range(d // 2):
        angle = torch.arange(T, dtype=torch.float64)[:, None] * theta ** (-2 * i / d)
        a, b = x[..., 2 * i], x[..., 2 * i + 1]
        out[..., 2 * i] = a * torch.cos(angle) - b * torch.sin(angle)
        out[..., 2 * i + 1] = a * torch.sin(angle) + b * torch.cos(angle)
    return out


def test_permuted_qk_give_the_same_attention_scores_under_llamacpp_rope():
    torch.manual_seed(0)
    n_heads, n_kv, d, dim, T, theta = 4, 2, 16, 32, 9, 1e6
    wq, wk = torch.randn(n_heads * d, dim, dtype=torch.float64), torch.randn(n_kv * d, dim, dtype=torch.float64)
    x = torch.randn(T, dim, dtype=torch.float64)
    cos, sin = rope_cos_sin(d, T, theta)
    cos, sin = cos.double()[:, None], sin.double()[:, None]
    q_hf = apply_rope((x @ wq.T).view(T, n_heads, d), cos, sin)
    k_hf = apply_rope((x @ wk.T).view(T, n_kv, d), cos, sin)
    q_cpp = rope_adjacent_pairs((x @ interleave_rope_rows(wq, n_heads).T).view(T, n_heads, d), theta)
    k_cpp = rope_adjacent_pairs((x @ interleave_rope_rows(wk, n_kv).T).view(T, n_kv, d), theta)
    for h in range(n_heads):
        kv = h // (n_heads // n_kv)
        hf_scores = q_hf[:, h] @ k_hf[:, kv].T
        torch.testing.assert_close(q_cpp[:, h] @ k_cpp[:, kv].T, hf_scores, rtol=1e-6, atol=1e-6)
    # And the layouts really differ: without the permutation the scores do not match.
    q_raw = rope_adjacent_pairs((x @ wq.T).view(T, n_heads, d), theta)
    k_raw = rope_adjacent_pairs((x @ wk.T).view(T, n_kv, d), theta)
    assert not torch.allclose(q_raw[:, 0] @ k_raw[:, 0].T, q_hf[:, 0] @ k_hf[:, 0].T, atol=1e-3)


# ---------------------------------------------------------------- GGUF file

def hf_rows_from_gguf(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo the Q/K permutation by a formula independent of the exporter's:
    GGUF row (head h, 2i + j) came from HF row (head h, j * d/2 + i)."""
    rows, cols = w.shape
    d = rows // n_heads
    return w.reshape(n_heads, d // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def dequantize_q8_0(raw: np.ndarray, n_cols: int) -> np.ndarray:
    """Q8_0 by hand: each block of 32 values is a float16 scale then 32 int8s."""
    blocks = raw.reshape(raw.shape[0], n_cols // 32, 34)
    scale = blocks[..., :2].copy().view(np.float16).astype(np.float32)
    q = blocks[..., 2:].copy().view(np.int8).astype(np.float32)
    return (scale * q).reshape(raw.shape[0], n_cols)


def expected_tensors(model: SpongeBob) -> dict[str, tuple[torch.Tensor, list[int]]]:
    """GGUF name -> (our weight, GGML shape [cols, rows]) for the tiny preset, written out by hand."""
    sd = model.state_dict()
    out = {"token_embd.weight": (sd["embed.weight"], [64, 6400]),
           "output_norm.weight": (sd["norm.weight"], [64])}
    if not model.config.tie_embeddings:
        out["output.weight"] = (sd["lm_head.weight"], [64, 6400])
    for i in range(2):
        p = f"layers.{i}."
        out |= {f"blk.{i}.attn_norm.weight": (sd[p + "attn_norm.weight"], [64]),
                f"blk.{i}.attn_q.weight": (sd[p + "attn.q_proj.weight"], [64, 64]),
                f"blk.{i}.attn_k.weight": (sd[p + "attn.k_proj.weight"], [64, 32]),
                f"blk.{i}.attn_v.weight": (sd[p + "attn.v_proj.weight"], [64, 32]),
                f"blk.{i}.attn_output.weight": (sd[p + "attn.o_proj.weight"], [64, 64]),
                f"blk.{i}.ffn_norm.weight": (sd[p + "mlp_norm.weight"], [64]),
                f"blk.{i}.ffn_gate.weight": (sd[p + "mlp.gate_proj.weight"], [64, 160]),
                f"blk.{i}.ffn_up.weight": (sd[p + "mlp.up_proj.weight"], [64, 160]),
                f"blk.{i}.ffn_down.weight": (sd[p + "mlp.down_proj.weight"], [160, 64])}
    return out


def check_metadata(reader, tok) -> None:
    fields = {name: field.contents() for name, field in reader.fields.items()}
    expected = {
        "general.architecture": "llama", "llama.context_length": 512, "llama.embedding_length": 64,
        "llama.block_count": 2, "llama.feed_forward_length": 160, "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2, "llama.rope.dimension_count": 16, "llama.vocab_size": 6400,
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2", "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.padding_token_id": 0,
        "tokenizer.ggml.add_bos_token": False, "tokenizer.chat_template": CHAT_TEMPLATE,
    }
    for key, value in expected.items():
        assert fields[key] == value, key
    assert fields["llama.rope.freq_base"] == 1e6
    assert math.isclose(fields["llama.attention.layer_norm_rms_epsilon"], 1e-5, rel_tol=1e-6)
    tokens = fields["tokenizer.ggml.tokens"]
    assert len(tokens) == 6400 and tokens[:7] == SPECIALS
    assert tokens == [tok.id_to_token(i) for i in range(6400)]
    assert fields["tokenizer.ggml.token_type"] == [3, 3, 3, 4, 4, 4, 4] + [1] * (6400 - 7)  # control, user-defined
    merges = json.loads(tok.json_path.read_text(encoding="utf-8"))["model"]["merges"]
    assert fields["tokenizer.ggml.merges"] == [m if isinstance(m, str) else " ".join(m) for m in merges]


def gguf_logits(reader, ids: list[int]) -> torch.Tensor:
    """A Llama forward pass in float64 that knows only the GGUF file, computed the way
    llama.cpp does: hyperparameters from the metadata, adjacent-pair RoPE, and the
    embedding as output head when there is no output tensor."""
    meta = {k: f.contents() for k, f in reader.fields.items() if k.startswith("llama.")}
    w = {}
    for t in reader.tensors:
        shape = t.shape.tolist()[::-1]
        data = dequantize_q8_0(np.asarray(t.data), shape[-1]) if t.tensor_type.name == "Q8_0" else np.array(t.data)
        w[t.name] = torch.tensor(data, dtype=torch.float64).reshape(shape)
    n_head, n_kv = meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"]
    eps, theta = meta["llama.attention.layer_norm_rms_epsilon"], meta["llama.rope.freq_base"]

    def norm(x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight

    T = len(ids)
    x = w["token_embd.weight"][ids]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(meta["llama.block_count"]):
        b = lambda name: w[f"blk.{i}.{name}.weight"]  # noqa: E731
        h = norm(x, b("attn_norm"))
        q = rope_adjacent_pairs((h @ b("attn_q").T).view(T, n_head, -1), theta)
        k = rope_adjacent_pairs((h @ b("attn_k").T).view(T, n_kv, -1), theta)
        v = (h @ b("attn_v").T).view(T, n_kv, -1)
        heads = []
        for hd in range(n_head):
            kv = hd // (n_head // n_kv)
            scores = (q[:, hd] @ k[:, kv].T) / math.sqrt(q.shape[-1])
            heads.append(torch.softmax(scores.masked_fill(~causal, -math.inf), -1) @ v[:, kv])
        x = x + torch.cat(heads, -1) @ b("attn_output").T
        h = norm(x, b("ffn_norm"))
        x = x + (torch.nn.functional.silu(h @ b("ffn_gate").T) * (h @ b("ffn_up").T)) @ b("ffn_down").T
    return norm(x, w["output_norm.weight"]) @ w.get("output.weight", w["token_embd.weight"]).T


@pytest.mark.parametrize("dtype,tied", [("f32", False), ("f32", True), ("f16", False), ("q8_0", True)])
def test_gguf_reads_back_with_every_key_and_tensor(tmp_path, capsys, tok, ckpts, dtype, tied):
    gguf = pytest.importorskip("gguf")
    model, ckpt = ckpts[tied]
    path = tmp_path / "m.gguf"
    code, _, err = run_export(capsys, "--ckpt", ckpt, "--format", "gguf", "--dtype", dtype, "--out_file", path)
    assert code == 0, err
    assert leftovers(tmp_path) == []
    reader = gguf.GGUFReader(path)
    file_type = {"f32": 0, "f16": 1, "q8_0": 7}[dtype]  # llama.cpp's LLAMA_FTYPE_ALL_F32 / MOSTLY_F16 / MOSTLY_Q8_0
    assert reader.fields["general.file_type"].contents() == file_type
    if dtype == "f32" and not tied:  # the same metadata in every file; reading 6400 tokens back is slow
        check_metadata(reader, tok)
    expected = expected_tensors(model)
    assert sorted(t.name for t in reader.tensors) == sorted(expected)
    for t in reader.tensors:
        weight, shape = expected[t.name]
        assert t.shape.tolist() == shape, t.name
        want = weight.detach().numpy()
        if weight.dim() == 1 or dtype == "f32":
            assert t.tensor_type.name == "F32"
            got = np.asarray(t.data)
        elif dtype == "f16":
            assert t.tensor_type.name == "F16"
            got, want = np.asarray(t.data), want.astype(np.float16)
        else:
            assert t.tensor_type.name == "Q8_0"
            got = dequantize_q8_0(np.asarray(t.data), shape[0])
        if t.name.endswith(("attn_q.weight", "attn_k.weight")):
            got = hf_rows_from_gguf(got, 4 if "attn_q" in t.name else 2)
        if t.tensor_type.name == "Q8_0":
            # Rounding to 255 levels: each value is within half a step (amax/127/2) of the original.
            assert np.abs(got - want).max() <= np.abs(want).max() / 127 * 0.51, t.name
        else:
            assert np.array_equal(got, want), t.name
    if dtype == "f32":
        ids = [1] + tok.encode("user\n海绵宝宝住在哪里？") + [2]
        with torch.no_grad():
            ours = model(torch.tensor([ids])).logits[0].double()
        torch.testing.assert_close(gguf_logits(reader, ids), ours, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- bad input

# case -> (how the checkpoint dict is spoiled, None: no checkpoint written, what the error must name)
BAD_CHECKPOINTS = {
    "missing_key": (lambda c: c["model"].pop("layers.1.mlp.up_proj.weight"), "up_proj"),
    "other_config": (lambda c: c["config"].update(hidden_dim=192), "do not match"),  # weights of another shape
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
    flag = "--out_dir" if fmt == "hf" else "--out_file"
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
    flag = "--out_dir" if fmt == "hf" else "--out_file"
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
    assert run_export(capsys, "--ckpt", ckpt, "--out_dir", hf_dir)[0] == 0
    (hf_dir / "stale.txt").write_text("from an older export")
    assert run_export(capsys, "--ckpt", ckpt, "--out_dir", hf_dir, "--overwrite")[0] == 0
    assert not (hf_dir / "stale.txt").exists() and (hf_dir / "model.safetensors").is_file()

    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    code, _, err = run_export(capsys, "--ckpt", ckpt, "--out_dir", precious, "--overwrite")
    assert code == 2 and "refusing to replace it" in err
    assert (precious / "notes.txt").read_text() == "keep me"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("argv", [["--out_file", "x.gguf"], ["--format", "gguf", "--out_dir", "d"], ["--dtype", "f16"]])
def test_flags_for_the_other_format_are_refused(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        export.main(["--ckpt", "x.pth"] + argv)
    assert exc.value.code == 2 and "error: --" in capsys.readouterr().err
