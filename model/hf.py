"""Translation between our state dict and Hugging Face's LlamaForCausalLM.

Our module names are short; HF's are what transformers, llama.cpp's
converter and every Llama tool expect. The mapping is one-to-one: no weight
is split, merged, transposed or permuted, because our RoPE already uses the
HF (rotate_half) convention.
"""
from __future__ import annotations

import re

import torch

from .config import ModelConfig

# (our name pattern, HF name pattern); {i} is the layer index.
_LAYER_NAMES = [
    ("layers.{i}.attn_norm.weight", "model.layers.{i}.input_layernorm.weight"),
    ("layers.{i}.attn.q_proj.weight", "model.layers.{i}.self_attn.q_proj.weight"),
    ("layers.{i}.attn.k_proj.weight", "model.layers.{i}.self_attn.k_proj.weight"),
    ("layers.{i}.attn.v_proj.weight", "model.layers.{i}.self_attn.v_proj.weight"),
    ("layers.{i}.attn.o_proj.weight", "model.layers.{i}.self_attn.o_proj.weight"),
    ("layers.{i}.mlp_norm.weight", "model.layers.{i}.post_attention_layernorm.weight"),
    ("layers.{i}.mlp.gate_proj.weight", "model.layers.{i}.mlp.gate_proj.weight"),
    ("layers.{i}.mlp.up_proj.weight", "model.layers.{i}.mlp.up_proj.weight"),
    ("layers.{i}.mlp.down_proj.weight", "model.layers.{i}.mlp.down_proj.weight"),
]
_GLOBAL_NAMES = [
    ("embed.weight", "model.embed_tokens.weight"),
    ("norm.weight", "model.norm.weight"),
    ("lm_head.weight", "lm_head.weight"),
]


def hf_name_map(cfg: ModelConfig) -> dict[str, str]:
    """Our parameter name -> LlamaForCausalLM parameter name, for this config.

    With tied embeddings the head is left out: HF re-ties it from
    tie_word_embeddings, and safetensors refuses two names for one tensor.
    """
    names = {ours: hf for ours, hf in _GLOBAL_NAMES}
    if cfg.tie_embeddings:
        del names["lm_head.weight"]
    for i in range(cfg.n_layers):
        for ours, hf in _LAYER_NAMES:
            names[ours.format(i=i)] = hf.format(i=i)
    return names


def to_hf_state_dict(state_dict: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Rename our weights to HF's. Fails loudly on any name it does not know."""
    names = hf_name_map(cfg)
    skipped = {"lm_head.weight"} if cfg.tie_embeddings else set()
    unknown = set(state_dict) - set(names) - skipped
    missing = set(names) - set(state_dict)
    if unknown or missing:
        raise KeyError(f"state dict does not match the config: unknown {sorted(unknown)[:3]}, "
                       f"missing {sorted(missing)[:3]}")
    return {names[k]: v for k, v in state_dict.items() if k in names}


def from_hf_state_dict(hf_state_dict: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Inverse of to_hf_state_dict (HF's rotary inv_freq buffers, if present, are derived and dropped)."""
    back = {hf: ours for ours, hf in hf_name_map(cfg).items()}
    ours = {}
    for name, tensor in hf_state_dict.items():
        if name in back:
            ours[back[name]] = tensor
        elif not re.search(r"rotary_emb\.inv_freq$", name) and not (cfg.tie_embeddings and name == "lm_head.weight"):
            raise KeyError(f"unexpected Hugging Face weight '{name}'")
    if cfg.tie_embeddings:
        ours["lm_head.weight"] = ours["embed.weight"]
    return ours


def hf_config_dict(cfg: ModelConfig, bos_token_id: int = 0, eos_token_id: int = 2,
                   pad_token_id: int = 0) -> dict:
    """A config.json for LlamaForCausalLM that transformers 4.x and 5.x both read.

    rope_theta is written twice on purpose: 5.x reads rope_parameters, and
    4.x, given only rope_parameters, silently falls back to theta = 10000.
    """
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_theta": cfg.rope_theta, "rope_type": "default"},
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": cfg.init_std,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
        "torch_dtype": "float32",
        "use_cache": True,
    }
