"""Show the model: `python -m model [--preset NAME]`.

Prints the configuration and parameter count, then streams a generation from
randomly initialised weights through the shipped tokenizer. The text is
gibberish on purpose: this is what the model says before any training.
"""
from __future__ import annotations

import argparse
import sys

import torch

from inference.generate import generate
from inference.sampling import SamplingConfig
from inference.streaming import stream_text
from model import DEFAULT_PRESET, PRESETS, SpongeBob, get_preset
from tokenizer import TokenizerError, load_tokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS), help="model preset to build")
    parser.add_argument("--prompt", default="你好，我是", help="text to continue")
    parser.add_argument("--max_new_tokens", type=int, default=40, help="tokens to generate")
    parser.add_argument("--seed", type=int, default=0, help="seed for the random weights and sampling")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    cfg = get_preset(args.preset)
    model = SpongeBob(cfg)
    print(f"preset {args.preset}: dim {cfg.dim}, {cfg.n_layers} layers, {cfg.n_heads} query heads / "
          f"{cfg.n_kv_heads} KV heads, SwiGLU {cfg.hidden_dim}, vocab {cfg.vocab_size}, "
          f"RoPE theta {cfg.rope_theta:g}, {cfg.max_position_embeddings} positions, "
          f"{'tied' if cfg.tie_embeddings else 'untied'} head")
    print(f"parameters: {model.num_parameters():,}")

    try:
        tok = load_tokenizer()
    except TokenizerError as e:
        sys.exit(f"error: {e}")
    if tok.vocab_size != cfg.vocab_size:
        sys.exit(f"error: tokenizer has {tok.vocab_size} tokens but the preset expects {cfg.vocab_size}")
    print(f"untrained model continues '{args.prompt}':")
    print(args.prompt, end="", flush=True)
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=1.0, top_k=50)
    # stream_text holds back a character until its last byte has arrived.
    for chunk in stream_text(tok, generate(model, tok.encode(args.prompt), sampling)):
        print(chunk, end="", flush=True)
    print()


if __name__ == "__main__":
    main()
