"""Will the run fit? Estimate a step's peak memory before training, and fit the micro-batch to the machine.

The reference defaults (29M parameters, 84 rows of 512 per micro-batch) were sized
for a 24 GB GPU. Run as is on a laptop CPU they grow past 11 GB of RAM and the
kernel kills the process with no message. So before any data is read we estimate
the peak of one training step:

    weights + gradients + AdamW's two moments      16 bytes per parameter (all fp32)
  + autocast's low-precision copies of the weights  2 bytes per parameter (bf16/fp16 only)
  + activations kept for the backward pass           per token: layers x (dim + ffn) x k bytes
  + the logits and the loss's fp32 copies of them     per token: vocab x LOGIT_BYTES

A stage's micro-batch item may be more than one row (its Footprint): a DPO pair is two
rows, a GRPO problem is --num_generations rows, sampled first with a KV cache of as many
slots (freed before the forward and backward, so it adds to the peak only where it is
larger than the activations), and DPO and GRPO --beta hold a frozen reference copy.

k was fitted to the peak RSS of real engine steps on a CPU (bench/bench_memory.py) over
several batch sizes of two model shapes, k = 29 (fp32) and 23 (bf16); with the plain loss's
full fp32 logits (LOGIT_BYTES) the estimate is 1.06-1.31x the measured peaks, never below
(bench/RESULTS.md, "Memory"). Muon keeps one moment instead of two: the estimate stays above.

When the estimate does not fit, we keep the effective batch and lower the
micro-batch, raising --accumulation_steps by the same factor. That changes
nothing the optimizer sees: the engine divides each micro-batch's summed loss by
the trained-token count of the whole step, so the gradient is the same, and each
step still takes the same rows of data. Only when a single row does not fit do we
stop, with the flags to lower.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from model import ModelConfig

# Fitted to measured peaks (bench/bench_memory.py; bench/LOG.md "Memory estimate"): bytes kept for the
# backward pass per token, per layer, per unit of (dim + ffn). Part of it stays fp32 under autocast
# (the residual stream, the norms), hence less than half of fp32's in bf16.
ACT_BYTES = {torch.float32: 29.0, torch.bfloat16: 23.0, torch.float16: 23.0}
# Per position and vocabulary entry: the fp32 logits, their log-softmax and its gradient (12 bytes);
# under autocast the head's bf16 output adds 2. Checked with ACT_BYTES against measured peaks.
LOGIT_BYTES = {torch.float32: 12.0, torch.bfloat16: 14.0, torch.float16: 14.0}
OVERHEAD = 400e6      # the interpreter, torch's own allocations, the tokenizer
HEADROOM = 0.85       # use at most this share of the memory that is free


class DoesNotFit(ValueError):
    """Not even one row of a micro-batch fits in memory; the message names the flags to lower."""


@dataclass(frozen=True)
class Footprint:
    """What one item of a stage's --batch_size holds in memory (TrainConfig.footprint)."""
    rows_per_item: int = 1          # rows through the forward and backward: DPO 2, GRPO --num_generations
    decode_rows_per_item: int = 0   # KV-cache slots while sampling (GRPO's rollouts), 0 = no sampling
    frozen_models: int = 0          # frozen copies of the model held beside it (a reference model)


@dataclass(frozen=True)
class MemoryPlan:
    batch_size: int
    accumulation_steps: int
    estimate: float       # bytes at peak for this micro-batch
    available: float      # bytes free for this process
    changed: bool


def estimate_peak_bytes(cfg: ModelConfig, n_params: int, batch_size: int, seq_len: int,
                        dtype: torch.dtype, footprint: Footprint = Footprint()) -> float:
    """Peak bytes of one training step (forward + backward + AdamW update) of batch_size items."""
    half = dtype in (torch.bfloat16, torch.float16)
    static = n_params * (16 + (2 if half else 0)) + footprint.frozen_models * n_params * (4 + (2 if half else 0))
    tokens = batch_size * footprint.rows_per_item * seq_len
    activations = tokens * cfg.n_layers * (cfg.dim + cfg.hidden_dim) * ACT_BYTES[dtype]
    # The logits (in the compute dtype), their fp32 copy for the loss and its gradient (model/loss.py).
    logits = tokens * cfg.vocab_size * LOGIT_BYTES[dtype]
    # The sampling's KV cache (fp32 keys and values, every layer), alive before the forward, not during it.
    cache = 2 * cfg.n_layers * batch_size * footprint.decode_rows_per_item * cfg.n_kv_heads * seq_len \
        * cfg.head_dim * 4
    return static + max(activations + logits, cache) + OVERHEAD


# (limit file, usage file) per cgroup version; v1 keeps the memory controller in its own hierarchy.
CGROUP_FILES = {2: ("memory.max", "memory.current"), 1: ("memory.limit_in_bytes", "memory.usage_in_bytes")}


def _own_cgroup(proc_cgroup: Path) -> tuple[int, str] | None:
    """(version, path) of this process's memory cgroup, from /proc/self/cgroup: '0::/path' on v2,
    'N:...memory...:/path' on v1. Under Slurm or systemd-run the path is nested below the mount root."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if "memory" in controllers.split(","):
            return 1, path
    for line in lines:
        if line.startswith("0::"):
            return 2, line[3:]
    return None


def _cgroup_free(proc_cgroup: Path = Path("/proc/self/cgroup"),
                 mount: Path = Path("/sys/fs/cgroup")) -> float | None:
    """Memory left under the tightest cgroup limit around this process (containers, CI runners, Slurm
    jobs), or None when unlimited. A limit anywhere from its own cgroup up to the root applies, so each
    level is read and the least room left wins; a level not visible in the mount is skipped."""
    own = _own_cgroup(proc_cgroup)
    version, path = own if own else (2 if (mount / "memory.max").exists() else 1, "/")
    base = mount if version == 2 else mount / "memory"
    limit_name, usage_name = CGROUP_FILES[version]
    level = base / path.strip("/") if path.strip("/") else base
    free: float | None = None
    while True:
        try:
            cap, used = (level / limit_name).read_text().strip(), (level / usage_name).read_text().strip()
            if cap.isdigit() and int(cap) < 1 << 60:
                room = float(int(cap) - int(used))
                free = room if free is None else min(free, room)
        except (OSError, ValueError):
            pass
        if level == base or base not in level.parents:
            return free
        level = level.parent


def available_bytes(device: torch.device, local_processes: int = 1) -> float | None:
    """Memory this process may use on device (its share when several ranks share it), or None if unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free)
    if device.type != "cpu":
        return None  # MPS shares the system's memory in ways we do not model
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        free = float(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None  # not Linux: no estimate, no change
    cgroup = _cgroup_free()
    free = min(free, cgroup) if cgroup is not None else free
    return free / max(1, local_processes)


def fit_batch(cfg: ModelConfig, n_params: int, batch_size: int, accumulation_steps: int, seq_len: int,
              dtype: torch.dtype, available: float | None, footprint: Footprint = Footprint()) -> MemoryPlan:
    """The largest micro-batch dividing batch_size whose step fits; accumulation grows to keep the
    effective batch. Raises DoesNotFit when even one item would not fit."""
    estimate = estimate_peak_bytes(cfg, n_params, batch_size, seq_len, dtype, footprint)
    if available is None or estimate <= HEADROOM * available:
        return MemoryPlan(batch_size, accumulation_steps, estimate, available or 0.0, False)
    for micro in sorted((d for d in range(1, batch_size) if batch_size % d == 0), reverse=True):
        need = estimate_peak_bytes(cfg, n_params, micro, seq_len, dtype, footprint)
        if need <= HEADROOM * available:
            return MemoryPlan(micro, accumulation_steps * (batch_size // micro), need, available, True)
    one = estimate_peak_bytes(cfg, n_params, 1, seq_len, dtype, footprint)
    what = "one row" if footprint.rows_per_item == 1 else f"one item ({footprint.rows_per_item} rows)"
    raise DoesNotFit(f"{what} of --max_seq_len {seq_len} needs about {gb(one)} with this model "
                     f"({n_params / 1e6:.1f}M parameters) but only {gb(available)} is free; lower --max_seq_len, "
                     "or use a smaller model (--preset spongebob-demo, --hidden_size, --num_hidden_layers)")


def gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def local_world_size() -> int:
    """Ranks on this machine (torchrun sets LOCAL_WORLD_SIZE): they share its RAM."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
