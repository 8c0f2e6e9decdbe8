"""Attention kernels that must agree with each other: GQA through SDPA's enable_gqa or through
expanded K/V (model/model.py sdpa), and FlexAttention compiled with dynamic shapes (model/masks.py)
compiling a bounded number of times over changing row counts and widths."""
import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from model.masks import create_block_mask, document_mask, flex_attention, compile_flex
from model.model import expand_kv, sdpa


def qkv(B=2, T=19, heads=8, kv_heads=2, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, heads, T, dim, generator=g), torch.randn(B, kv_heads, T, dim, generator=g),
            torch.randn(B, kv_heads, T, dim, generator=g))


@pytest.mark.parametrize("how", ["causal", "mask", "none"])
def test_grouped_and_expanded_kv_give_the_same_attention(how):
    q, k, v = qkv()
    doc = torch.tensor([[0] * 7 + [1] * 12, [0] * 19])
    mask = document_mask(doc, flex=False) if how == "mask" else None
    causal = how == "causal"
    grouped = sdpa(q, k, v, mask, causal, expand=False)
    expanded = sdpa(q, k, v, mask, causal, expand=True)
    assert torch.allclose(grouped, expanded, atol=1e-6)
    # query head h reads K/V head h // 4: head 5's output is head 5 attending with K/V head 1 alone
    alone = torch.nn.functional.scaled_dot_product_attention(q[:, 5:6], k[:, 1:2], v[:, 1:2], attn_mask=mask,
                                                             is_causal=causal)
    assert torch.allclose(expanded[:, 5:6], alone, atol=1e-6)


def test_cpus_keep_enable_gqa():
    q, _, _ = qkv()
    assert expand_kv(q, None) is False and expand_kv(q.bfloat16(), torch.ones(1, dtype=torch.bool)) is False


def test_compiled_flex_recompiles_at_most_twice_over_changing_shapes():
    torch._dynamo.reset()
    counters.clear()
    compiled = compile_flex(backend="aot_eager")
    for B, T in ((2, 128), (3, 128), (4, 256), (2, 384), (5, 128), (6, 256), (3, 512), (7, 384)):
        doc = torch.arange(T).div(40, rounding_mode="floor").expand(B, T).contiguous()
        mask = document_mask(doc, flex=True)
        q, k, v = qkv(B, T, heads=4, kv_heads=2)
        out = compiled(q, k, v, block_mask=mask, enable_gqa=True)
        assert torch.allclose(out, flex_attention(q, k, v, block_mask=mask, enable_gqa=True), atol=1e-5)
    # Eight shapes: static first, then the row count symbolic, then the width too (each compile traces
    # flex_attention and its inner wrapper: two graphs). dynamic=False compiled all eight (16 graphs).
    assert counters["stats"]["unique_graphs"] <= 6, dict(counters["stats"])
    torch._dynamo.reset()
