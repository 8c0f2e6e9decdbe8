"""serve.py under load: tokens/s and time to first token with 1 and with 8 concurrent clients.

    python -m bench.bench_serve [--clients 1,8] [--max_tokens 64] [--device cpu]
    python -m bench.bench_serve --max_concurrent 1      # the same with a plain request queue
    python -m bench.bench_serve --url http://127.0.0.1:8000 --model sft   # a server already running

Without --url it starts `serve.py` in a subprocess on a free port, serving a
random-weight checkpoint of --preset (speed does not depend on what the
weights say), and stops it at the end. Each client streams one greedy request
over real HTTP, as any OpenAI client would; a request counts its tokens from
the server's usage report.

  TTFT          from sending the request to the first text delta
  per stream    a request's tokens / its time after its first token
  aggregate     all tokens of the round / the round's wall time
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import torch

from bench.device_info import describe_device
from model import SpongeBob, get_preset, save_model
from tokenizer import load_tokenizer

PROMPTS = ["海绵宝宝住在哪里？", "派大星最喜欢什么？", "介绍一下章鱼哥。", "蟹老板有多少钱？",
           "珊迪来自哪里？", "痞老板想要什么？", "讲一个笑话。", "1+1等于几？"]


async def one_request(client: httpx.AsyncClient, model: str, prompt: str, max_tokens: int) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
            "max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first = None
    tokens = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            delta = chunk["choices"][0]["delta"] if chunk["choices"] else {}
            if first is None and (delta.get("content") or delta.get("reasoning_content")):
                first = time.perf_counter()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    end = time.perf_counter()
    first = first or end
    return {"ttft": first - start, "tokens": tokens, "decode_s": end - first, "total": end - start}


async def one_round(url: str, model: str, clients: int, max_tokens: int, api_key: str | None) -> dict:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(one_request(client, model, PROMPTS[i % len(PROMPTS)], max_tokens)
                                         for i in range(clients)))
        wall = time.perf_counter() - start
    return {"results": results, "wall": wall}


def report(clients: int, run: dict) -> None:
    results, wall = run["results"], run["wall"]
    tokens = sum(r["tokens"] for r in results)
    ttft = [r["ttft"] for r in results]
    per_stream = [(r["tokens"] - 1) / r["decode_s"] for r in results if r["tokens"] > 1 and r["decode_s"] > 0]
    print(f"  {clients} client{'s' if clients > 1 else ' '}: aggregate {tokens / wall:6.1f} tokens/s "
          f"({tokens} tokens in {wall:.2f} s); TTFT median {statistics.median(ttft) * 1000:6.0f} ms, "
          f"max {max(ttft) * 1000:6.0f} ms; per stream {statistics.median(per_stream):5.1f} tokens/s")


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str, str]:
    """serve.py on a random-weight checkpoint, on a port the OS picks: (process, url, model id)."""
    ckpt = Path("out/bench") / f"serve_{args.preset}.pth"
    if not ckpt.is_file():
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        save_model(ckpt, SpongeBob(get_preset(args.preset)), load_tokenizer().identity(), meta={"stage": "bench"})
    cmd = [sys.executable, "serve.py", "--ckpt", str(ckpt), "--port", "0", "--device", args.device,
           "--max_tokens_limit", str(args.max_tokens), "--max_concurrent", str(args.max_concurrent or max(args.clients))]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # serve.py names its address once it listens
        found = re.search(r"on (http://\S+)/ \(chat page\)", line)
        if found:
            # Keep draining its log (an access line per request) so a full pipe never blocks it.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, found.group(1), ckpt.stem
    raise SystemExit(f"serve.py exited without serving (status {proc.wait()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="benchmark this running server instead of starting one")
    parser.add_argument("--model", default=None, help="with --url: the model id to ask for")
    parser.add_argument("--api_key", default=None, help="with --url: the server's API key")
    parser.add_argument("--preset", default="spongebob-29m", help="model preset of the served random checkpoint")
    parser.add_argument("--device", default="cpu", help="device the started server runs on")
    parser.add_argument("--clients", default="1,8", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--max_tokens", type=int, default=64, help="tokens generated per request")
    parser.add_argument("--max_concurrent", type=int, default=None,
                        help="the started server's --max_concurrent (default: the most clients); 1 = a plain queue")
    parser.add_argument("--repeats", type=int, default=2, help="rounds per client count; the best is reported")
    args = parser.parse_args()
    args.clients = [int(n) for n in args.clients.split(",")]

    proc = None
    if args.url:
        url, model = args.url.rstrip("/"), args.model
        if model is None:
            parser.error("--url needs --model")
    else:
        proc, url, model = start_server(args)
    try:
        print(f"device: {describe_device(args.device)}" + ("" if proc else " (this client's machine)"))
        interleaved = "" if proc is None else f", --max_concurrent {args.max_concurrent or max(args.clients)}"
        print(f"server: {url}, model {model}{interleaved}, greedy, {args.max_tokens} new tokens per request, "
              f"best of {args.repeats} rounds")
        asyncio.run(one_round(url, model, 1, 4, args.api_key))  # warm-up: first-call allocations
        for clients in args.clients:
            runs = [asyncio.run(one_round(url, model, clients, args.max_tokens, args.api_key))
                    for _ in range(args.repeats)]
            report(clients, max(runs, key=lambda run: sum(r["tokens"] for r in run["results"]) / run["wall"]))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
