"""One line naming the machine a benchmark ran on: every figure must say its device."""
from __future__ import annotations

import os
import platform

import torch


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_device(device: str = "cpu") -> str:
    """e.g. 'cpu: Intel Xeon ... (2 cores used / 2 visible), torch 2.13.0+cpu'."""
    if device.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(torch.device(device))
        return f"{device}: {name}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return (f"cpu: {cpu_name()} ({torch.get_num_threads()} threads, {os.cpu_count()} cores visible), "
            f"torch {torch.__version__}")
