"""Device, precision and speed accounting (MFU).

--dtype is honoured, unlike the reference scripts whose bare autocast() ran
fp16 whatever the flag said:
    float32   no autocast
    bfloat16  autocast to bf16 (same exponent range as fp32: no loss scaling)
    float16   autocast to fp16 with a GradScaler, so small gradients do not
              underflow to zero
Weights and optimizer state always stay fp32.
"""
from __future__ import annotations

import contextlib

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Dense bf16 tensor-core peaks (no sparsity), for MFU. Unknown GPUs get no MFU.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12,
                   "RTX 4090": 165e12, "RTX 3090": 71e12, "A10G": 70e12, "L4": 121e12, "V100": 125e12}


def pick_device(name: str = "auto") -> torch.device:
    """cuda, then mps, then cpu; an explicit name that is not available is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (try --device cpu)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: Apple MPS is not available on this machine (try --device cpu)")
    return device


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32  # CPU and MPS: fp32 is the safe, exact default
    if name not in DTYPES:
        raise ValueError(f"--dtype {name}: choose float32, bfloat16, float16 or auto")
    dtype = DTYPES[name]
    if dtype == torch.float16 and device.type == "cpu":
        raise ValueError("--dtype float16 is not supported on CPU; use bfloat16 or float32")
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("--dtype bfloat16: this GPU has no bf16 support; use float16")
    return dtype


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_scaler(device: torch.device, dtype: torch.dtype) -> torch.amp.GradScaler:
    """A loss scaler that is active only for fp16 (bf16 and fp32 do not underflow)."""
    return torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16))


def flops_per_token(n_params: int, n_layers: int, dim: int, seq_len: int) -> float:
    """Training FLOPs per token: 6N for the matmuls (forward + backward) plus
    attention scores, 12 * layers * dim * seq_len (PaLM appendix B accounting)."""
    return 6 * n_params + 12 * n_layers * dim * seq_len


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_BF16_FLOPS.items():
        if key in name:
            return flops
    return None
