"""Serve a trained model over an OpenAI-compatible HTTP API, with a chat page at /.

    python serve.py                         # out/sft.pth on http://127.0.0.1:8000
    python serve.py --model_mode 2          # the reasoning model, out/distill.pth
    python serve.py --out_dir runs/a        # runs/a/sft.pth, what `sft.py --out_dir runs/a` wrote
    python serve.py --ckpt out/my.pth --api_key secret --port 8080

Endpoints: POST /v1/chat/completions (streaming or not), GET /v1/models, and
the chat page at /. A reasoning model's thinking is returned in
`reasoning_content`, its answer in `content` (DeepSeek's convention);
--no_reasoning_split returns the raw text with its tags instead.

The model id clients send is the checkpoint's file name without .pth
(`sft` for out/sft.pth). One worker thread generates up to --max_concurrent
requests together, one batched forward per step (serving/engine.py says why).
"""
from __future__ import annotations

import argparse
import logging
import socket
import sys

import uvicorn

from inference.loading import MODES_HELP, UserError, checkpoint_path, load, mode_number, mode_stage
from serving import Engine, ServerSettings, create_app
from common.cli import OneLineParser

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_mode", type=mode_number, default=1,
                   help=f"a chat stage's number or name ({MODES_HELP.partition(', ')[2]}); picks the checkpoint "
                        "in --out_dir as eval_model.py does")
    p.add_argument("--tokenizer_dir", default=None,
                   help="the tokenizer the model was trained with (default: the one its checkpoint records, "
                        "else the shipped one)")
    p.add_argument("--out_dir", default="out", help="the folder the training stages wrote to (their --out_dir)")
    p.add_argument("--ckpt", default=None, help="checkpoint to serve instead of the mode's <out_dir>/<stage>.pth")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; the default is this machine only (0.0.0.0: every network)")
    p.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    p.add_argument("--api_key", default=None,
                   help="require 'Authorization: Bearer KEY' on the API (default: no auth)")
    p.add_argument("--max_tokens_limit", type=int, default=1024,
                   help="the most tokens one request may generate; also the default max_tokens")
    p.add_argument("--max_request_bytes", type=int, default=1 << 20,
                   help="larger request bodies are refused with 413")
    p.add_argument("--max_concurrent", type=int, default=8,
                   help="requests generated together, in one batch per step; more wait in a queue")
    p.add_argument("--prefill_chunk", type=int, default=256,
                   help="prompt tokens prefilled per step: a long prompt delays the running requests by at most "
                        "one chunk at a time")
    p.add_argument("--max_waiting", type=int, default=64,
                   help="requests allowed to wait; more are refused with 429")
    p.add_argument("--no_reasoning_split", action="store_true",
                   help="send the raw text with its <think>/<answer> tags as content")
    p.add_argument("--allowed_hosts", nargs="*", default=[],
                   help="Host headers to answer besides this server's own address (e.g. a name it is reached by); "
                        "others get 403, so a web page cannot drive the local model")
    p.add_argument("--device", default="auto", help="cuda, mps, cpu or auto (cuda, then mps, then cpu)")
    return p


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not mode_stage(args.model_mode).chat:
        parser.error(f"--model_mode {args.model_mode}: the pretrained model continues text and has no chat; "
                     "serve a chat stage (1 sft and up), or try it with eval_model.py --model_mode 0")
    for flag in ("max_tokens_limit", "max_request_bytes", "max_concurrent", "max_waiting", "prefill_chunk"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} {getattr(args, flag)}: must be at least 1")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port}: must be in 0..65535")
    if args.api_key is not None and not args.api_key.strip():
        parser.error("--api_key: must not be empty")


def allowed_hosts(host: str, port: int, extra: list[str]) -> frozenset[str] | None:
    """The Host headers this server answers: its own address (and localhost's names when bound to
    loopback), each with the port, plus --allowed_hosts. Bound to every interface: any, unless listed."""
    if host in ("0.0.0.0", "::", "") and not extra:
        return None
    names = {host, f"[{host}]" if ":" in host else host}
    if host in LOOPBACK:
        names |= {"127.0.0.1", "localhost", "[::1]"}
    hosts = {f"{name}:{port}" for name in names} | set(extra) | {f"{h}:{port}" for h in extra}
    return frozenset(hosts)


def listen(host: str, port: int) -> socket.socket:
    """Bind the listening socket ourselves, so a taken port is a one-line error."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    return sock


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    try:
        model, tok, _ = load(args)
        sock = listen(args.host, args.port)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ckpt = checkpoint_path(args)
    host, port = sock.getsockname()[:2]
    settings = ServerSettings(model_id=ckpt.stem, created=int(ckpt.stat().st_mtime), api_key=args.api_key,
                              max_tokens_limit=args.max_tokens_limit, max_request_bytes=args.max_request_bytes,
                              split_reasoning=not args.no_reasoning_split,
                              allowed_hosts=allowed_hosts(args.host, port, args.allowed_hosts),
                              stage=mode_stage(args.model_mode).name, checkpoint=str(ckpt))
    engine = Engine(model, tok, max_active=args.max_concurrent, max_waiting=args.max_waiting,
                    prefill_chunk=args.prefill_chunk)
    if args.host not in LOOPBACK and args.api_key is None:
        print(f"warning: listening on {args.host} with no --api_key: anyone who can reach it can use it",
              file=sys.stderr)
    print(f"serving '{settings.model_id}' on http://{host}:{port}/ (chat page) and "
          f"http://{host}:{port}/v1 (API)", file=sys.stderr)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Ctrl-C waits at most 5 s for open streams before cutting them off.
    server = uvicorn.Server(uvicorn.Config(create_app(engine, settings), log_level="info",
                                           timeout_graceful_shutdown=5))
    exit_on_signal = server.handle_exit

    def handle_exit(sig: int, frame: object) -> None:
        engine.stop()  # open streams end with an error event, so the shutdown need not wait for them
        exit_on_signal(sig, frame)

    server.handle_exit = handle_exit  # type: ignore[method-assign]  # read when uvicorn installs its handlers
    try:
        server.run(sockets=[sock])
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
