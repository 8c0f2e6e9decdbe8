"""OpenAI-shaped responses: a whole chat completion, or its stream of SSE chunks.

Thinking goes to `reasoning_content` and the answer to `content`, as DeepSeek's
API does; a client that knows nothing of reasoning still reads `content`.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from inference.think_split import THINK

from .engine import Job
from .generation import Failed, Finished, Piece

FIELDS = {THINK: "reasoning_content"}   # every other kind is "content"
DISCONNECT_POLL_S = 0.5


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


class Completion:
    """The fields one response shares between its chunks."""

    def __init__(self, model_id: str):
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model_id = model_id

    def head(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model_id}

    def message(self, parts: dict[str, str], finished: Finished) -> dict:
        message = {"role": "assistant", "content": parts.get("answer", "")}
        if parts.get(THINK):
            message["reasoning_content"] = parts[THINK]
        choice = {"index": 0, "message": message, "finish_reason": finished.finish_reason, "logprobs": None}
        return {**self.head("chat.completion"), "choices": [choice], "usage": usage(finished)}

    def chunk(self, delta: dict, finish_reason: str | None = None, with_usage: bool = False) -> str:
        body = {**self.head("chat.completion.chunk"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}
        if with_usage:  # OpenAI sends usage: null on every chunk but the last when usage is asked for
            body["usage"] = None
        return sse(body)


def usage(finished: Finished) -> dict:
    return {"prompt_tokens": finished.prompt_tokens, "completion_tokens": finished.completion_tokens,
            "total_tokens": finished.prompt_tokens + finished.completion_tokens}


def sse(body: dict) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


async def wait_for_disconnect(is_disconnected: Callable[[], Awaitable[bool]]) -> None:
    """Return once the client has hung up. Polled on a timer, because a request
    whose tokens keep arriving would otherwise never be checked."""
    while not await is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_S)


async def collect(job: Job, completion: Completion,
                  is_disconnected: Callable[[], Awaitable[bool]]) -> dict | Failed:
    """The whole answer of a non-streaming request, or why it failed; ClientGone if nobody waits for it."""
    parts: dict[str, str] = {}
    gone = asyncio.ensure_future(wait_for_disconnect(is_disconnected))
    try:
        while True:
            getter = asyncio.ensure_future(job.events.get())
            await asyncio.wait({getter, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                job.cancel()
                raise ClientGone()
            event = getter.result()
            if isinstance(event, Piece):
                parts[event.kind] = parts.get(event.kind, "") + event.text
            elif isinstance(event, Finished):
                return completion.message(parts, event)
            else:
                return event
    finally:
        gone.cancel()


async def stream(job: Job, completion: Completion, include_usage: bool) -> AsyncIterator[str]:
    """SSE chunks: the role, then text deltas, the finish reason, the usage if asked, [DONE]."""
    try:
        yield completion.chunk({"role": "assistant", "content": ""}, with_usage=include_usage)
        while True:
            event = await job.events.get()
            if isinstance(event, Piece):
                yield completion.chunk({FIELDS.get(event.kind, "content"): event.text}, with_usage=include_usage)
            elif isinstance(event, Finished):
                yield completion.chunk({}, event.finish_reason, with_usage=include_usage)
                if include_usage:
                    yield sse({**completion.head("chat.completion.chunk"), "choices": [], "usage": usage(event)})
                break
            else:  # the status line is long gone: report the failure in the stream itself
                yield sse({"error": {"message": event.message, "type": "server_error", "param": None, "code": None}})
                break
        yield "data: [DONE]\n\n"
    finally:
        # Also when the client hangs up: the server cancels this generator, and
        # the worker must stop spending steps on an answer nobody reads.
        job.cancel()
