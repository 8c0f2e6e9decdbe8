"""The training loss two ways, side by side: the chunked cross-entropy (model/loss.py, gradients
written by hand, the logits never whole) against a plain F.cross_entropy on the full fp32 logits.

    python -m bench.bench_loss                      # 29M, bf16 where the CPU has it: 84 x 512 and 28 x 1024

What decides whether the chunked loss stays (issue: "plain cross-entropy"): the peak memory and the
time of one forward + backward at the seed's pretraining shape (84 x 512) and the long-SFT shape
(28 x 1024). Each (shape, loss) runs in a fresh process, since a process's peak RSS only grows:
one warm-up step, then --steps timed steps, then the peak RSS (getrusage).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAPES = [(84, 512), (28, 1024)]


def measure(loss: str, batch: int, seq: int, steps: int) -> dict:
    """In the child: forward + loss + backward of the 29M model on random rows, the engine's dtype."""
    import torch
    import torch.nn.functional as F

    from common.device import autocast, pick_dtype
    from model import SpongeBob, get_preset

    device = torch.device("cpu")
    dtype = pick_dtype("auto", device)
    torch.manual_seed(0)
    model = SpongeBob(get_preset("spongebob-29m"))
    ids = torch.randint(0, 6400, (batch, seq))
    targets = ids.roll(-1, dims=1)

    def validation() -> None:  # what a validation pass costs: the loss under no_grad, no backward
        with torch.no_grad(), autocast(device, dtype):
            if loss.startswith("chunked"):
                model(ids, targets=targets, reduction="sum", return_logits=False)
            else:
                F.cross_entropy(model(ids).logits.float().flatten(0, 1), targets.flatten(), reduction="sum")

    def step() -> None:
        if loss.endswith("validation"):
            return validation()
        with autocast(device, dtype):
            if loss == "chunked":
                value = model(ids, targets=targets, reduction="sum", return_logits=False).loss
            else:
                logits = model(ids).logits
                value = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="sum")
        value.backward()
        model.zero_grad(set_to_none=True)

    step()
    began = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - began) / steps
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"loss": loss, "batch": batch, "seq": seq, "dtype": str(dtype)[6:], "seconds": seconds, "peak": peak}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(measure(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=2, help="timed steps per (shape, loss), after one warm-up step")
    p.add_argument("--losses", default="chunked,plain", help="comma list of chunked, plain, chunked-validation, "
                                                             "plain-validation (the loss alone under no_grad)")
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    from bench.device_info import describe_device
    print(f"device: {describe_device()}")
    print("| rows x tokens | loss | s per forward+backward (validation: forward) | peak RSS |")
    print("|---|---|---:|---:|")
    for batch, seq in SHAPES:
        for loss in args.losses.split(","):  # alternated within a shape, each in a fresh process
            out = subprocess.run([sys.executable, "-m", "bench.bench_loss", "--child", loss, str(batch), str(seq),
                                  str(args.steps)], cwd=REPO, check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"| {batch} x {seq} | {loss} ({r['dtype']}) | {r['seconds']:.2f} | {r['peak'] / 1e9:.2f} GB |",
                  flush=True)


if __name__ == "__main__":
    main()
