"""Device, precision and speed accounting (MFU).

--dtype is honoured, unlike the reference scripts whose bare autocast() ran
fp16 whatever the flag said:
    float32   no autocast (TF32 matmuls on CUDA GPUs that have them)
    bfloat16  autocast to bf16 (same exponent range as fp32: no loss scaling)
    float16   autocast to fp16 with a GradScaler, so small gradients do not
              underflow to zero
Weights and optimizer state always stay fp32.

--dtype auto picks what the hardware does natively:
    CUDA, compute capability >= 8.0 (A100, RTX 30xx, H100 ...)   bf16
    older CUDA GPUs (T4, V100, RTX 20xx)                          fp16 + GradScaler
    CPUs with AVX512-BF16 or AMX (recent Xeon, Zen 4/5), or Arm
    CPUs with the BF16 extension                                  bf16 (1.9-2.3x fp32 on 2 cores: bench/LOG.md)
    other CPUs, and Apple MPS                                     fp32
torch.cuda.is_bf16_supported() is not used: it also says yes where bf16 is only
emulated, and emulated bf16 is slower than fp16 (and on a CPU, than fp32).
"""
from __future__ import annotations

import contextlib
import logging
import re
import shutil
import sys
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Dense tensor-core peaks in FLOP/s for bf16/fp16 inputs with fp32 accumulation (what
# PyTorch uses), matched against torch.cuda.get_device_name in this order: the more
# specific names first (an H100 PCIe card's name also contains "H100"). GeForce cards
# run fp32-accumulate at half their fp16-accumulate rate, which is the figure usually quoted.
PEAK_FLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("GH200", 989e12), ("H200 NVL", 835e12), ("H200", 989e12),
    ("H100", 989e12), ("H800 PCIe", 756e12), ("H800", 989e12), ("A100", 312e12), ("A800", 312e12), ("L40S", 362e12),
    ("L4", 121e12), ("RTX 4090", 165.2e12), ("RTX 3090 Ti", 40e12), ("RTX 3090", 35.6e12), ("V100", 125e12),
    ("T4", 65e12),
]
TRITON_MIN_CAPABILITY = 7  # Triton (inductor's GPU code generator) needs Volta or newer; Pascal is 6.x


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


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; x86 'flags' or Arm 'Features'), empty if unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16(flags: set[str] | None = None) -> bool:
    """bf16 matmuls in hardware: AVX512-BF16 or AMX-BF16 on x86, the BF16 extension on Arm."""
    flags = cpu_flags() if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16", "bf16"} & flags)


def trains_in_fp32_on_cpu(device: str = "auto", dtype: str = "auto") -> bool:
    """True when --device/--dtype will train in fp32 on a CPU: no GPU to pick, and a CPU without
    native bf16 (AVX2-only x86). Such CPUs run the demo several times slower than bf16 ones."""
    gpu = torch.cuda.is_available() or (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    on_cpu = device == "cpu" or (device == "auto" and not gpu)
    return on_cpu and dtype in ("auto", "float32", "fp32") and (dtype != "auto" or not cpu_has_native_bf16())


def cuda_has_native_bf16(device: torch.device) -> bool:
    return torch.cuda.get_device_capability(device)[0] >= 8


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """The compute dtype for --dtype on this device; a dtype the device cannot run natively is an error."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if cuda_has_native_bf16(device) else torch.float16
        if device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        return torch.float32
    if name not in DTYPES:
        raise ValueError(f"--dtype {name}: choose float32, bfloat16, float16 or auto")
    dtype = DTYPES[name]
    if dtype == torch.float16 and device.type == "cpu":
        raise ValueError("--dtype float16 is not supported on CPU; use bfloat16 (where the CPU has it) or float32")
    if dtype == torch.bfloat16 and device.type == "cuda" and not cuda_has_native_bf16(device):
        major, minor = torch.cuda.get_device_capability(device)
        raise ValueError(f"--dtype bfloat16: {torch.cuda.get_device_name(device)} (compute capability {major}.{minor}) "
                         "has no native bf16; use --dtype float16 (or auto, which picks it)")
    return dtype


def pick_compile(wanted: bool | None, device: torch.device) -> bool:
    """--compile: on by default on CUDA; an explicit request where it cannot work is an error.
    Where the default cannot work on a GPU it is turned off with one line saying why."""
    if wanted is False or (wanted is None and device.type != "cuda"):
        return False
    missing = compile_blocker(device)
    if missing and wanted:
        raise ValueError(f"--compile true: torch.compile cannot work here ({missing}); use --compile false")
    if missing:
        print(f"compile: off ({missing})", flush=True)
    if missing is None:
        warn_on_recompile_limit()
    return missing is None


def compile_blocker(device: torch.device) -> str | None:
    """Why torch.compile cannot run on device, or None: inductor needs Triton on GPUs, a C++ compiler on CPUs."""
    if sys.platform == "win32":
        return "torch.compile is not supported on Windows"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major < TRITON_MIN_CAPABILITY:  # inductor would raise GPUTooOldForTriton at the first step
            return (f"{torch.cuda.get_device_name(device)} has compute capability {major}.{minor}; "
                    f"Triton needs {TRITON_MIN_CAPABILITY}.0 or newer")
        try:
            import triton  # noqa: F401  (inductor's GPU kernels are written in Triton)
        except ImportError:
            return "Triton is not installed: pip install triton"
        return None
    if device.type == "cpu" and not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
        return "no C++ compiler found (inductor compiles its CPU kernels with one)"
    if device.type == "mps":
        return "inductor does not support Apple MPS well enough to train"
    return None


class _RecompileLimitLine(logging.Filter):
    """Turns dynamo's multi-line 'hit config.recompile_limit' warning into one line, printed once:
    past the limit the function runs uncompiled for the rest of the run, which is easy to miss."""
    said = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("torch._dynamo hit config."):
            return True
        if not _RecompileLimitLine.said:
            _RecompileLimitLine.said = True
            limit, value, where, reason = (list(record.args or ()) + ["?"] * 4)[:4]
            print(f"warning: torch.compile hit its {limit} ({value}) in {where}; it runs uncompiled from now on "
                  f"(last reason: {str(reason).strip().splitlines()[0] if str(reason).strip() else '?'}; "
                  "TORCH_LOGS=recompiles lists them all)", file=sys.stderr, flush=True)
        return False


def warn_on_recompile_limit() -> None:
    """Say in one line when dynamo gives up compiling a function (idempotent)."""
    logger = logging.getLogger("torch._dynamo.convert_frame")
    if not any(isinstance(f, _RecompileLimitLine) for f in logger.filters):
        logger.addFilter(_RecompileLimitLine())


def enable_tf32(device: torch.device) -> None:
    """fp32 matmuls through TF32 tensor cores on CUDA (10-bit mantissa products, fp32 sums)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_scaler(device: torch.device, dtype: torch.dtype) -> torch.amp.GradScaler:
    """A loss scaler that is active only for fp16 (bf16 and fp32 do not underflow)."""
    return torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16))


def matmul_params(n_params: int, vocab_size: int, dim: int, tied: bool) -> int:
    """Parameters that take part in a matmul. The input embedding is a table lookup, not a
    matmul, so an untied one does not count; a tied one is also the output head, which does."""
    return n_params if tied else n_params - vocab_size * dim


def step_flops(matmul_n: int, n_layers: int, dim: int, tokens: int, attended_pairs: int) -> float:
    """Training FLOPs (forward + backward) of a step.

    6 per matmul parameter per token (2 forward, 4 backward), plus attention: each
    (query, key) pair that is attended costs 2*dim for the scores and 2*dim for the
    weighted values per layer forward, x3 with the backward. Causal attention over a
    sequence of n tokens attends n(n+1)/2 pairs, so packed or padded rows count only
    what is really computed (PaLM's 12*L*d*T per token counts the full square).
    """
    return 6.0 * matmul_n * tokens + 12.0 * n_layers * dim * attended_pairs


def peak_flops(device: torch.device) -> tuple[float | None, str]:
    """(peak bf16/fp16 FLOP/s, device name) for MFU; None for CPUs and GPUs not in the table."""
    if device.type != "cuda":
        return None, device.type
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_FLOPS:
        if re.search(rf"\b{re.escape(key)}\b", name):  # whole words: "L4" is not "L40S"
            return flops, name
    return None, name
