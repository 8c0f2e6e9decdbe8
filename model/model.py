"""The SpongeBob model: a LLaMA-3 style decoder.

Pre-norm blocks of RMSNorm -> GQA attention with RoPE -> RMSNorm -> SwiGLU MLP,
no biases anywhere. Every weight has a one-to-one counterpart in Hugging Face's
LlamaForCausalLM (see model/hf.py), and the maths follows the same conventions
(RMSNorm in fp32, rotate_half RoPE), so exported weights give the same logits.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .masks import flex, is_block_mask

# A KV cache is generation's (inference/kv_cache.py): the network only reads its length, hands each
# layer's new keys and values to update(layer, k, v) and calls advance(n) after the last layer.
KVCache = Any

# enable_gqa lets SDPA read each key/value head for its group of query heads in place; the CUDA cases
# where only a copy reaches a fast kernel (expand_kv) get the same grouping by copying K/V with
# repeat_interleave, as HF's repeat_kv does.


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 even under bf16/fp16 autocast: the mean of squares
        # overflows or loses precision in half types. Cast back *before* the
        # weight multiply, exactly as LlamaRMSNorm does.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_cos_sin(head_dim: int, max_positions: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables of shape (max_positions, head_dim), Hugging Face layout.

    Frequency i is theta^(-2i/d). The table holds the d/2 angles twice,
    [a_0..a_{d/2-1}, a_0..a_{d/2-1}], because rotate_half pairs dimension j
    with j + d/2 (split halves), not with j+1 (the interleaved Meta layout).
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    angles = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, heads, T, head_dim) by the angles of its T positions, in x's own dtype:
    under bf16 autocast the tables come down to bf16 rather than q and k going up to fp32."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.update(self.layer_idx, k, v)

        if mask is not None:
            # The caller's mask: packed rows (model/masks.py) or rows of different lengths in a batch.
            y = self.attend(q, k, v, mask=mask)
        elif past == 0:
            # Plain causal attention: SDPA builds no mask and can use flash kernels.
            y = self.attend(q, k, v, is_causal=True)
        elif T == 1:
            # One new token attends to every cached position: no mask at all.
            y = self.attend(q, k, v)
        else:
            # A chunk after a non-empty cache: SDPA's is_causal is top-left
            # aligned, so build the (T, past+T) bottom-right mask. It is only
            # as big as this chunk, never max_seq_len^2.
            query_pos = torch.arange(past, past + T, device=x.device)
            key_pos = torch.arange(past + T, device=x.device)
            y = self.attend(q, k, v, mask=key_pos[None, :] <= query_pos[:, None])
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
               is_causal: bool = False) -> torch.Tensor:
        """SDPA with GQA: query head h reads key/value head h // (n_heads / n_kv_heads).
        A FlexAttention BlockMask goes to flex_attention instead (packed rows on CUDA)."""
        if is_block_mask(mask):
            return flex(q, k, v, mask)
        return sdpa(q, k, v, mask, is_causal)


def expand_kv(q: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """Whether to copy each K/V head for its group of query heads before SDPA rather than pass enable_gqa.

    On CUDA only the flash kernel reads grouped K/V in place, and flash needs compute capability
    8.0+, fp16/bf16 and no mask. Anywhere else enable_gqa=True sends SDPA to its math kernel,
    which materialises the scores, while with expanded K/V the memory-efficient kernel runs (it
    takes masks and fp32). Decided from the device, dtype and mask alone: no host sync, and the
    capability is constant-folded under torch.compile. CPUs keep enable_gqa (their kernel takes it)."""
    if q.device.type != "cuda":
        return False
    return (mask is not None or q.dtype not in (torch.float16, torch.bfloat16)
            or torch.cuda.get_device_properties(q.device).major < 8)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
         is_causal: bool = False, expand: bool | None = None) -> torch.Tensor:
    """Scaled dot-product attention over (B, heads, T, head_dim), K/V with fewer heads than q (GQA).
    expand: copy K/V per query head (True) or let SDPA group them (False); None decides (expand_kv)."""
    if expand is None:
        expand = expand_kv(q, mask)
    if not expand:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=True)
    n_rep = q.size(1) // k.size(1)  # as HF's repeat_kv
    k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.down_proj = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg, layer_idx)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, cache, mask)
        return x + self.mlp(self.mlp_norm(x))


class SpongeBob(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        # Not persistent: derived from the config, so they stay out of checkpoints.
        cos, sin = rope_cos_sin(cfg.head_dim, cfg.max_position_embeddings, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # GPT-2 style: the two projections that write into the residual stream
        # get std / sqrt(2 * n_layers), so the stream's variance does not grow
        # with depth at initialisation.
        residual_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
        for block in self.layers:
            nn.init.normal_(block.attn.o_proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.down_proj.weight, mean=0.0, std=residual_std)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)

    def num_parameters(self) -> int:
        """Distinct parameters (a tied head is counted once)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, position_ids: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None, last_only: bool = False) -> torch.Tensor:
        """idx: (B, T) token ids -> (B, T, vocab) logits; the loss is the caller's (model/loss.py).
        position_ids: (B, T) each token's RoPE position (packed rows restart at 0 for each
        conversation; batched generation gives each row its own); default 0, 1, 2, ...
        after what the cache holds. attn_mask: bool (B, 1, T, keys) or a FlexAttention
        BlockMask (model/masks.py); default causal.
        last_only: logits of the last position only, (B, 1, vocab): all a prefill needs."""
        T = idx.size(1)
        start = cache.length if cache is not None else 0
        if position_ids is None and start + T > self.config.max_position_embeddings:
            raise ValueError(f"sequence of {start + T} tokens exceeds max_position_embeddings "
                             f"{self.config.max_position_embeddings}")
        x = self.embed(idx)
        if position_ids is None:
            cos, sin = self.rope_cos[start:start + T], self.rope_sin[start:start + T]
        else:  # (B, 1, T, head_dim): one angle table per row, broadcast over the heads
            cos, sin = self.rope_cos[position_ids].unsqueeze(1), self.rope_sin[position_ids].unsqueeze(1)
        for block in self.layers:
            x = block(x, cos, sin, cache, attn_mask)
        if cache is not None:
            cache.advance(T)
        return self.lm_head(self.norm(x[:, -1:] if last_only else x))
