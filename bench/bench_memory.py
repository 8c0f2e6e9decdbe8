"""Peak memory of a training step, measured, against trainer/memory.py's estimate.

    python -m bench.bench_memory                 # CPU: a few shapes, fp32 and the auto dtype

Each configuration runs in a fresh process (peak RSS only grows within one): the
engine's own train_step for three steps on random token rows, then the process's
peak resident set size (getrusage). Printed beside the estimate, with the ratio;
the estimate's constants (trainer/memory.py) were fitted to these figures, and the
check in tests/test_first_hour.py only uses the estimate's arithmetic.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = [("spongebob-demo", 16, 256), ("spongebob-demo", 64, 256), ("spongebob-29m", 4, 512),
           ("spongebob-29m", 16, 512), ("spongebob-29m", 32, 512)]


def measure(preset: str, batch: int, seq: int, dtype: str) -> dict:
    """Runs in the child process: three engine steps, then the peak RSS."""
    import torch

    from bench.engine_step import engine_step, make_engine
    from common.device import pick_dtype
    from trainer.memory import estimate_peak_bytes

    class Rows:  # random token rows, enough for three steps
        def num_batches(self, batch_size: int) -> int:
            return 3

        def batches(self, batch_size: int, epoch: int, start: int = 0):
            for _ in range(start, 3):
                ids = torch.randint(0, 6400, (batch_size, seq))
                yield {"input_ids": ids, "targets": ids.roll(-1, dims=1)}

    device = torch.device("cpu")
    compute = pick_dtype(dtype, device)
    engine = make_engine(preset, batch, seq, device, compute, False, Rows(), str(REPO / "out" / "bench" / "memory"))
    model = engine.model
    for rows in Rows().batches(batch, 0):
        engine_step(engine, [rows])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KB on Linux
    estimate = estimate_peak_bytes(model.config, model.num_parameters(), batch, seq, compute)
    return {"preset": preset, "batch": batch, "seq": seq, "dtype": str(compute)[6:], "peak": peak,
            "estimate": estimate}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(measure(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtypes", default="float32,auto", help="comma list of dtypes to measure")
    args = p.parse_args()
    from bench.device_info import describe_device
    print(f"device: {describe_device('cpu')}")
    for preset, batch, seq in CONFIGS:
        for dtype in args.dtypes.split(","):
            done = subprocess.run([sys.executable, "-m", "bench.bench_memory", "--child", preset, str(batch),
                                   str(seq), dtype], cwd=REPO, capture_output=True, text=True)
            if done.returncode:
                print(f"  {preset} {batch}x{seq} {dtype}: failed ({done.stderr.strip().splitlines()[-1:]})")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"  {r['preset']:>14} {r['batch']:>3} x {r['seq']} {r['dtype']:>8}: peak RSS "
                  f"{r['peak'] / 1e9:5.2f} GB, estimate {r['estimate'] / 1e9:5.2f} GB "
                  f"({r['estimate'] / r['peak']:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
