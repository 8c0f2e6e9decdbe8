"""Model configuration and named presets.

A checkpoint stores `ModelConfig.to_dict()`, so a model can be rebuilt from the
checkpoint alone. Field names are ours; `model/hf.py` translates them to the
names of Hugging Face's LlamaConfig.
"""
from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 6400
    dim: int = 512                 # width of the residual stream
    n_layers: int = 8
    n_heads: int = 8               # query heads
    n_kv_heads: int = 2            # key/value heads; n_heads % n_kv_heads == 0 (GQA)
    hidden_dim: int = 1408         # SwiGLU inner width
    max_position_embeddings: int = 4096
    rope_theta: float = 1e6
    norm_eps: float = 1e-5
    tie_embeddings: bool = False   # share the input embedding with the output head
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not divisible by n_kv_heads {self.n_kv_heads}")
        if (self.dim // self.n_heads) % 2:
            raise ValueError(f"head size {self.dim // self.n_heads} must be even for RoPE")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        """Build from a dict, rejecting unknown keys with a did-you-mean hint."""
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                hint = difflib.get_close_matches(key, known, n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise ValueError(f"unknown model config key '{key}'{suggestion}")
        return cls(**values)

    def with_changes(self, **changes) -> "ModelConfig":
        return replace(self, **changes)


# The default is the SpongeBob/MiniMind2 "small" shape with GQA (2 KV heads)
# and an untied head: 29,106,688 parameters.
PRESETS: dict[str, ModelConfig] = {
    "spongebob-29m": ModelConfig(),
    # Same shape with the output head tied to the embedding: 25,829,888 parameters.
    "spongebob-29m-tied": ModelConfig(tie_embeddings=True),
    # The CPU demo: small enough to learn the built-in corpus in ~10 minutes on 2 cores.
    "spongebob-demo": ModelConfig(dim=256, n_layers=4, n_heads=4, n_kv_heads=2, hidden_dim=704),
    # Under a million parameters, for unit tests and smoke runs.
    "spongebob-tiny": ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=160,
                                  max_position_embeddings=512),
}
DEFAULT_PRESET = "spongebob-29m"


def get_preset(name: str) -> ModelConfig:
    """Look up a preset by name; an unknown name suggests the closest one."""
    if name not in PRESETS:
        hint = difflib.get_close_matches(name, PRESETS, n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise ValueError(f"unknown preset '{name}'{suggestion}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]
