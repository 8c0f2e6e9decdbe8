"""A preallocated key/value cache for incremental decoding.

Keys and values for all layers live in two tensors sized for the whole
generation, so a decoding step writes into place instead of concatenating
(which would copy the cache every token).
"""
from __future__ import annotations

import torch


class KVCache:
    def __init__(self, n_layers: int, batch_size: int, n_kv_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        shape = (n_layers, batch_size, n_kv_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.length = 0  # positions already filled, shared by all layers

    @classmethod
    def for_model(cls, model: torch.nn.Module, batch_size: int, max_len: int) -> KVCache:
        """An empty cache of up to max_len positions for model, on its device and in its weights' dtype."""
        cfg, weight = model.config, model.embed.weight
        return cls(cfg.n_layers, batch_size, cfg.n_kv_heads, min(max_len, cfg.max_position_embeddings),
                   cfg.head_dim, dtype=weight.dtype, device=weight.device)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's (B, kv_heads, T, head_dim) keys/values for one
        layer and return everything cached for it so far, new positions included."""
        end = self.length + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KV cache is full: {end} positions needed, {self.max_len} allocated")
        self.keys[layer, :, :, self.length:end] = k
        self.values[layer, :, :, self.length:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, n: int) -> None:
        """Called once per forward pass, after every layer has written its n new positions."""
        self.length += n
