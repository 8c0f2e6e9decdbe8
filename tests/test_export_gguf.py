"""export.py --format gguf: the file against the gguf package's reader and a hand-written Llama.

The oracles are independent of the exporter: the gguf reader, hand-derived
hyperparameters, tensor shapes and Q/K permutations, a hand-written Q8_0
dequantizer, and a float64 llama.cpp-style forward pass with adjacent-pair RoPE.
"""
import json
import math

import numpy as np
import pytest
import torch

import test_export
from model import SpongeBob
from exporters.gguf_file import interleave_rope_rows
from model.model import apply_rope, rope_cos_sin
from test_export import leftovers, run_export
from tokenizer import CHAT_TEMPLATE

# pytest looks for fixtures among a module's globals: reuse test_export's tokenizer and checkpoints.
tok, ckpts = test_export.tok, test_export.ckpts
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<answer>", "</answer>"]


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
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2", "tokenizer.ggml.bos_token_id": 0,
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
            ours = model(torch.tensor([ids]))[0].double()
        torch.testing.assert_close(gguf_logits(reader, ids), ours, rtol=0, atol=1e-5)
