"""Attention masks for packed rows: a token attends to the earlier tokens of its own sequence only.

A packed row holds several conversations back to back. Plain causal attention
would let the second one read the first (LLaMA-Factory's users found their packed
models contaminated that way). With doc_ids (B, T), one id per token, the mask is
block-diagonal and causal:

    allowed(q, k) = doc[q] == doc[k] and k <= q

Padding carries an id of its own, so it attends only to padding and no query is
left with nothing to attend to (an all-masked row would give NaN). Positions
restart at 0 in each conversation, so RoPE sees every conversation exactly as it
would alone; tests/test_packing.py checks the logits match to 1e-5.

Two forms of the same mask:
  - a boolean (B, 1, T, T) tensor for SDPA, on any device (O(T^2) memory, fine at
    the lengths we train: 84 x 1 x 512 x 512 booleans are 22 MB);
  - a FlexAttention BlockMask on CUDA, whose kernel skips the blocks that lie
    wholly across conversations instead of computing and discarding them.
"""
from __future__ import annotations

from typing import Any

import torch

from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

_compiled_flex: Any = None


def use_flex(device: torch.device) -> bool:
    return device.type == "cuda"


def document_mask(doc_ids: torch.Tensor, flex: bool | None = None) -> torch.Tensor | Any:
    """The block-diagonal causal mask of packed rows: a bool tensor, or a BlockMask (flex, CUDA)."""
    flex = use_flex(doc_ids.device) if flex is None else flex
    if not flex:
        same = doc_ids[:, :, None] == doc_ids[:, None, :]
        T = doc_ids.size(1)
        causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
        return (same & causal).unsqueeze(1)

    def allowed(b: Any, h: Any, q: Any, k: Any) -> Any:
        return (doc_ids[b, q] == doc_ids[b, k]) & (k <= q)

    B, T = doc_ids.shape
    return create_block_mask(allowed, B, None, T, T, device=doc_ids.device)


def is_block_mask(mask: Any) -> bool:
    return isinstance(mask, BlockMask)


def compile_flex(backend: str = "inductor") -> Any:
    """flex_attention compiled with dynamic shapes left to dynamo (dynamic=None): the first shape
    compiles static, a new row count or width recompiles once with that size symbolic, and that
    graph serves every later shape. dynamic=False compiled every new shape anew, and packed
    batches change their row count often: past dynamo's recompile limit (8) flex ran its eager
    reference, which materialises the scores."""
    return torch.compile(flex_attention, dynamic=None, backend=backend)


def flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: Any) -> torch.Tensor:
    """FlexAttention with GQA, compiled once (in eager mode flex is a slow reference implementation)."""
    global _compiled_flex
    if q.device.type != "cuda":  # CPU tests run the reference implementation
        return flex_attention(q, k, v, block_mask=block_mask, enable_gqa=True)
    if _compiled_flex is None:
        _compiled_flex = compile_flex()
    return _compiled_flex(q, k, v, block_mask=block_mask, enable_gqa=True)
