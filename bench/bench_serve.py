"""serve.py under load, side by side with an earlier server: throughput, time to first token, long prompts.

    python -m bench.bench_serve                                   # this server, 1, 4 and 8 clients
    git worktree add /tmp/sb_before 1fde235                       # the server before continuous batching
    python -m bench.bench_serve --before /tmp/sb_before           # both, taking turns round by round

Each server is serve.py started in a subprocess on a free port, serving the same
random-weight checkpoint of --preset (speed does not depend on what the weights
say). Each client streams one greedy request over real HTTP, as any OpenAI client
would, and counts its tokens from the server's usage report. Reported per server
and number of clients:

  aggregate     all tokens of a round / the round's wall time (mean over --repeats rounds)
  TTFT          from sending a request to its first text delta: median and p95 over all rounds
  per stream    a request's tokens / its time after its first token (median)
  same output   how many requests' text equals the same prompt's text when it ran alone

--long_prompt N: while one request with an N-token prompt is being prefilled, a short
request arrives; its TTFT is reported for each server, and for this server once more
with --prefill_chunk N (the whole prompt in one step: no chunking).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch

if __package__ in (None, ""):  # run as `python bench/bench_serve.py`: make the repo's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.device_info import describe_device
from model import SpongeBob, get_preset, save_model
from tokenizer import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["海绵宝宝住在哪里？", "派大星最喜欢什么？", "介绍一下章鱼哥。", "蟹老板有多少钱？",
           "珊迪来自哪里？", "痞老板想要什么？", "讲一个笑话。", "1+1等于几？"]


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    url: str
    model: str


def start_server(name: str, repo: Path, ckpt: Path, args: argparse.Namespace, extra: list[str]) -> Server:
    """repo's serve.py on ckpt, on a port the OS picks."""
    cmd = [sys.executable, "serve.py", "--ckpt", str(ckpt.resolve()), "--port", "0", "--device", args.device,
           "--max_tokens_limit", str(args.max_tokens), "--max_concurrent", str(max(args.clients)), *extra]
    proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # serve.py names its address once it listens
        found = re.search(r"on (http://\S+)/ \(chat page\)", line)
        if found:
            # Keep draining its log (an access line per request) so a full pipe never blocks it.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return Server(name, proc, found.group(1), ckpt.stem)
    raise SystemExit(f"{repo / 'serve.py'} exited without serving (status {proc.wait()})")


async def one_request(client: httpx.AsyncClient, model: str, prompt: str, max_tokens: int) -> dict:
    # repetition_penalty 1 named explicitly: servers before the greedy fix applied 1.1 at temperature 0.
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
            "repetition_penalty": 1.0, "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first, tokens, text = None, 0, []
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            delta = chunk["choices"][0]["delta"] if chunk["choices"] else {}
            piece = (delta.get("reasoning_content") or "") + (delta.get("content") or "")
            if piece:
                first = first or time.perf_counter()
                text.append(piece)
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    end = time.perf_counter()
    first = first or end
    return {"prompt": prompt, "text": "".join(text), "ttft": first - start, "tokens": tokens, "decode_s": end - first}


async def one_round(server: Server, prompts: list[str], max_tokens: int) -> dict:
    async with httpx.AsyncClient(base_url=server.url, timeout=600) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(one_request(client, server.model, p, max_tokens) for p in prompts))
        return {"results": results, "wall": time.perf_counter() - start}


async def alone(server: Server, max_tokens: int) -> dict[str, str]:
    """Each prompt's greedy text when it is the only request: the reference for 'same output'."""
    return {p: (await one_round(server, [p], max_tokens))["results"][0]["text"] for p in PROMPTS}


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def summary(rounds: list[dict], reference: dict[str, str]) -> dict:
    results = [r for run in rounds for r in run["results"]]
    ttft = [r["ttft"] for r in results]
    streams = [(r["tokens"] - 1) / r["decode_s"] for r in results if r["tokens"] > 1 and r["decode_s"] > 0]
    return {"aggregate": statistics.mean(sum(r["tokens"] for r in run["results"]) / run["wall"] for run in rounds),
            "ttft_median": statistics.median(ttft), "ttft_p95": p95(ttft), "per_stream": statistics.median(streams),
            "same": sum(r["text"] == reference[r["prompt"]] for r in results), "n": len(results)}


def long_prompt_ttft(server: Server, long_text: str, repeats: int) -> float:
    """The median TTFT of a short request sent 50 ms after a long prompt (which generates one token)."""
    async def trial() -> float:
        async with httpx.AsyncClient(base_url=server.url, timeout=600) as client:
            long_task = asyncio.create_task(one_request(client, server.model, long_text, 1))
            await asyncio.sleep(0.05)
            short = await one_request(client, server.model, PROMPTS[0], 4)
            await long_task
            return short["ttft"]
    return statistics.median(asyncio.run(trial()) for _ in range(repeats))


def long_text_of(tokens: int) -> str:
    """A user message whose ChatML prompt is about `tokens` tokens long."""
    tok, unit = load_tokenizer(), "海绵宝宝住在菠萝屋里，他每天去蟹堡王做蟹黄堡。"
    per_unit = len(tok.encode(unit * 10)) / 10
    text = unit * int(tokens / per_unit)
    while len(tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                      tokenize=True)) > tokens:
        text = text[:-len(unit)]
    return text


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", default=None, help="a checkout of an earlier SpongeBob whose serve.py runs alongside")
    p.add_argument("--preset", default="spongebob-29m", help="model preset of the served random checkpoint")
    p.add_argument("--device", default="cpu", help="device the servers run on")
    p.add_argument("--clients", default="1,4,8", help="comma-separated numbers of concurrent clients")
    p.add_argument("--max_tokens", type=int, default=64, help="tokens generated per request")
    p.add_argument("--repeats", type=int, default=2, help="rounds per client count and server")
    p.add_argument("--long_prompt", type=int, default=4000, help="tokens of the long prompt (0: skip that test)")
    args = p.parse_args()
    args.clients = [int(n) for n in args.clients.split(",")]
    return args


def main() -> None:
    args = parse_args()
    ckpt = REPO / "out" / "bench" / f"serve_{args.preset}.pth"
    if not ckpt.is_file():
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        save_model(ckpt, SpongeBob(get_preset(args.preset)), load_tokenizer().identity(), meta={"stage": "bench"})
    limit = ["--max_tokens_limit", str(max(args.max_tokens, 4096))]
    servers = [start_server("after", REPO, ckpt, args, limit)]
    if args.before:
        servers.append(start_server("before", Path(args.before), ckpt, args, limit))
    try:
        print(f"device: {describe_device(args.device)}")
        print(f"servers: {', '.join(f'{s.name} = {s.url}' for s in servers)}; {args.preset} random weights, greedy, "
              f"{args.max_tokens} new tokens per request, {args.repeats} rounds each, taking turns")
        for s in servers:
            asyncio.run(one_round(s, ["热身"], 4))  # warm-up: first-call allocations
        reference = {s.name: asyncio.run(alone(s, args.max_tokens)) for s in servers}
        rounds: dict[tuple[str, int], list[dict]] = {}
        for clients in args.clients:
            prompts = [PROMPTS[i % len(PROMPTS)] for i in range(clients)]
            for _ in range(args.repeats):
                for s in servers:
                    rounds.setdefault((s.name, clients), []).append(asyncio.run(one_round(s, prompts, args.max_tokens)))
        table = {key: summary(runs, reference[key[0]]) for key, runs in rounds.items()}
        print(f"{'server':>7} {'clients':>7} {'aggregate tok/s':>16} {'TTFT median':>12} {'TTFT p95':>9} "
              f"{'per stream':>11} {'same output':>12}")
        for (name, clients), row in table.items():
            print(f"{name:>7} {clients:>7} {row['aggregate']:>16.1f} {row['ttft_median'] * 1000:>10.0f}ms "
                  f"{row['ttft_p95'] * 1000:>7.0f}ms {row['per_stream']:>11.1f} {row['same']:>7}/{row['n']}")
        most = max(args.clients)
        for s in servers:
            ratio = table[(s.name, most)]["aggregate"] / table[(s.name, 1)]["aggregate"]
            print(f"{s.name}: {most} clients / 1 client aggregate = {ratio:.2f}x")
        if args.before:
            for clients in args.clients:
                ratio = table[("after", clients)]["aggregate"] / table[("before", clients)]["aggregate"]
                print(f"after / before at {clients} client(s): {ratio:.2f}x")
        if args.long_prompt:
            long_text = long_text_of(args.long_prompt)
            unchunked = start_server("after, unchunked", REPO, ckpt, args,
                                     limit + ["--prefill_chunk", str(args.long_prompt + 16)])
            try:
                print(f"TTFT of a short request sent while a {args.long_prompt}-token prompt is prefilled "
                      f"(median of 3):")
                for s in servers + [unchunked]:
                    print(f"  {s.name:>16}: {long_prompt_ttft(s, long_text, 3) * 1000:7.0f} ms")
            finally:
                unchunked.proc.terminate()
                unchunked.proc.wait(timeout=30)
    finally:
        for s in servers:
            s.proc.terminate()
            s.proc.wait(timeout=30)


if __name__ == "__main__":
    main()
