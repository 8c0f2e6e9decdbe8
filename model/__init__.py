"""SpongeBob model: config and presets, the decoder, generation, checkpoints, HF name map."""
from .checkpoint import CheckpointError, atomic_torch_save, load_model, read_checkpoint, save_model, unwrap
from .config import DEFAULT_PRESET, PRESETS, ModelConfig, get_preset
from .generate import SamplingConfig, generate
from .kv_cache import KVCache
from .model import IGNORE_INDEX, ModelOutput, SpongeBob, token_loss

__all__ = [
    "CheckpointError", "atomic_torch_save", "load_model", "read_checkpoint", "save_model", "unwrap",
    "DEFAULT_PRESET", "PRESETS", "ModelConfig", "get_preset",
    "SamplingConfig", "generate", "KVCache",
    "IGNORE_INDEX", "ModelOutput", "SpongeBob", "token_loss",
]
