"""Generation speed of the 29M preset: tokens/s with the KV cache versus without it.

    python -m bench.bench_generate [--new_tokens 256] [--device cpu]

Both variants decode greedily from the same random-weight model and prompt,
side by side in one run, so the ratio is measured under the same conditions.
Random weights are fine here: speed does not depend on what the weights say.
"""
from __future__ import annotations

import argparse
import time

import torch

from bench.device_info import describe_device
from inference.generate import generate
from inference.sampling import SamplingConfig
from model import DEFAULT_PRESET, SpongeBob, get_preset


def time_generation(model: SpongeBob, prompt: list[int], new_tokens: int, use_cache: bool) -> float:
    """Seconds to generate exactly new_tokens tokens (no stop ids, greedy)."""
    cfg = SamplingConfig(max_new_tokens=new_tokens, temperature=0)
    start = time.perf_counter()
    produced = sum(1 for _ in generate(model, prompt, cfg, use_cache=use_cache))
    if model.embed.weight.is_cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    assert produced == new_tokens
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=DEFAULT_PRESET, help="model preset to time")
    parser.add_argument("--new_tokens", type=int, default=256, help="tokens generated per run")
    parser.add_argument("--prompt_tokens", type=int, default=16, help="prompt length in tokens")
    parser.add_argument("--repeats", type=int, default=2, help="runs per variant; the best is reported")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = SpongeBob(get_preset(args.preset)).to(args.device).eval()
    prompt = torch.randint(7, model.config.vocab_size, (args.prompt_tokens,)).tolist()
    time_generation(model, prompt, 8, use_cache=True)  # warm-up: first-call allocations

    print(f"device: {describe_device(args.device)}")
    print(f"model: {args.preset}, {model.num_parameters():,} params, fp32, batch 1, "
          f"prompt {args.prompt_tokens} tokens, {args.new_tokens} new tokens, best of {args.repeats}")
    results = {}
    for use_cache in (True, False):
        best = min(time_generation(model, prompt, args.new_tokens, use_cache) for _ in range(args.repeats))
        results[use_cache] = args.new_tokens / best
        label = "with KV cache" if use_cache else "without cache"
        print(f"  {label:>14}: {results[use_cache]:8.1f} tokens/s ({best:.2f} s)")
    print(f"  KV cache speed-up: {results[True] / results[False]:.2f}x")


if __name__ == "__main__":
    main()
