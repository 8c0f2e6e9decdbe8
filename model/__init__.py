"""The network and its files: config and presets, the decoder, checkpoints, the Hugging Face name map.

Not here: generation, KV cache and chat (inference/), exporters (exporters/), training (trainer/).
`python -m model` prints a preset's size and what its untrained weights say.
"""
from .checkpoint import (ADAPTER_FORMAT, CheckpointError, atomic_torch_save, checkpoint_tokenizer, file_sha256,
                         load_model, read_checkpoint, save_adapter, save_model, unwrap)
from .config import DEFAULT_PRESET, PRESETS, ModelConfig, get_preset
from .loss import IGNORE_INDEX, token_loss
from .model import SpongeBob
