"""The HTTP side: FastAPI routes, auth, request limits, and every error in OpenAI's shape.

    GET  /                      the chat page (static/index.html)
    GET  /v1/models             the one model this server has
    POST /v1/chat/completions   streaming (SSE) or not

Handlers only check and translate; the model runs on the engine's worker thread
(engine.py), so the event loop stays free while tokens are generated.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.stages import BY_NAME
from inference.budget import DEFAULT_CONTINUE_WORD, ThinkBudget, think_budget
from inference.sampling import SamplingConfig, default_repetition_penalty
from tokenizer import SpongeTokenizer

from .engine import Engine, QueueFull
from .generation import Failed, GenerationRequest
from .responses import ClientGone, Completion, collect, stream
from .schemas import ApiError, ChatRequest, parse_chat_request, parse_json

log = logging.getLogger("serving")
INDEX_HTML = Path(__file__).parent / "static" / "index.html"


def thinks(stage: str) -> bool:
    """Whether the stage's model writes <think>...</think><answer>...</answer> (common/stages.py)."""
    return stage in BY_NAME and BY_NAME[stage].thinks


@dataclass
class ServerSettings:
    model_id: str
    created: int = 0                      # for /v1/models: when the checkpoint was written
    api_key: str | None = None
    max_tokens_limit: int = 1024
    max_request_bytes: int = 1 << 20
    split_reasoning: bool = True
    # What a request that leaves a field out gets: eval_model.py's defaults, which
    # suit a small model better than OpenAI's (temperature 1, no penalty); the repetition
    # penalty is 1.1 when sampling and off when greedy (inference.generate.default_repetition_penalty).
    temperature: float = 0.7
    top_p: float = 0.9
    # Host headers the server answers (serve.py: its own address and port, plus --allowed_hosts);
    # None answers any, for a server bound to every interface on purpose.
    allowed_hosts: frozenset[str] | None = None
    stage: str = ""                       # shown on the chat page: which stage's model this is
    checkpoint: str = ""


def create_app(engine: Engine, settings: ServerSettings) -> FastAPI:
    app = FastAPI(title="SpongeBob", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.settings = engine, settings
    add_error_handlers(app)

    app.add_middleware(HostCheck, settings=settings)

    @app.get("/v1/info", include_in_schema=False)
    async def info(request: Request) -> dict:
        """What the chat page shows in its header and which examples it offers."""
        return {"model": settings.model_id, "stage": settings.stage, "checkpoint": settings.checkpoint,
                "reasoning": settings.split_reasoning and thinks(settings.stage)}

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(INDEX_HTML, media_type="text/html; charset=utf-8")

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        check_auth(request, settings)
        card = {"id": settings.model_id, "object": "model", "created": settings.created, "owned_by": "spongebob"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        check_auth(request, settings)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":  # a plain form or text/plain body is a cross-site request, or a mistake
            raise ApiError(415, f"Content-Type must be application/json, got '{kind or 'none'}'",
                           code="unsupported_media_type")
        req = parse_chat_request(parse_json(await read_body(request, settings.max_request_bytes)))
        gen_request = await asyncio.to_thread(build_request, req, engine, settings)
        try:
            job = engine.submit(gen_request, asyncio.get_running_loop())
        except QueueFull as e:
            raise ApiError(429, f"server busy: {e}; retry later", "rate_limit_error",
                           code="too_many_requests") from None
        completion = Completion(settings.model_id)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(stream(job, completion, include_usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            result = await collect(job, completion, request.is_disconnected)
        except ClientGone:
            return Response(status_code=204)  # nobody is there to read it
        finally:
            job.cancel()  # also when this handler itself is cancelled
        if isinstance(result, Failed):
            raise ApiError(500, result.message, "server_error")
        return JSONResponse(result)

    return app


class HostCheck:
    """Answer only requests addressed to this server (raw ASGI, so disconnects still reach the handlers).

    A web page the user visits can send requests to 127.0.0.1 too, and a DNS-rebinding page can
    even read the answers; either way its requests carry another host name, refused here with 403.
    """

    def __init__(self, app: Any, settings: ServerSettings):
        self.app, self.settings = app, settings

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        allowed = self.settings.allowed_hosts
        if scope["type"] == "http" and allowed is not None:
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if host not in allowed:
                error = ApiError(403, f"Host '{host}' is not this server's address; start serve.py with "
                                 "--allowed_hosts to accept it", code="host_not_allowed")
                await JSONResponse(error.body(), status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def check_auth(request: Request, settings: ServerSettings) -> None:
    if settings.api_key is None:
        return
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    # compare_digest: how long a wrong key takes to refuse says nothing about the right one.
    if scheme.lower() != "bearer" or not secrets.compare_digest(key.strip().encode(), settings.api_key.encode()):
        raise ApiError(401, "invalid or missing API key: send the header 'Authorization: Bearer <key>'",
                       code="invalid_api_key")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed limit bytes."""
    too_large = ApiError(413, f"request body larger than {limit} bytes (the server's --max_request_bytes)",
                         code="request_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():  # a chunked body has no declared length: count as it comes
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def build_request(req: ChatRequest, engine: Engine, settings: ServerSettings) -> GenerationRequest:
    """Check the request against this model and these limits; render its prompt."""
    if req.model != settings.model_id:
        raise ApiError(404, f"model '{req.model}' not found: this server has '{settings.model_id}'",
                       param="model", code="model_not_found")
    asked = req.max_completion_tokens or req.max_tokens
    if asked is not None and asked > settings.max_tokens_limit:
        raise ApiError(400, f"max_tokens {asked} is above this server's limit of {settings.max_tokens_limit}",
                       param="max_tokens")
    tok = engine.tok
    prompt = tok.apply_chat_template([m.chatml() for m in req.messages], add_generation_prompt=True, tokenize=True)
    room = engine.model.config.max_position_embeddings - len(prompt)
    if room < 1 or (asked is not None and asked > room):
        raise ApiError(400, f"the model's context is {engine.model.config.max_position_embeddings} tokens; "
                       f"the messages take {len(prompt)} and max_tokens asks for {asked or 1} more",
                       param="messages", code="context_length_exceeded")
    temperature = settings.temperature if req.temperature is None else req.temperature
    sampling = SamplingConfig(
        max_new_tokens=asked or min(settings.max_tokens_limit, room),
        temperature=temperature,
        top_p=settings.top_p if req.top_p is None else req.top_p,
        top_k=req.top_k or 0,
        repetition_penalty=req.repetition_penalty or default_repetition_penalty(temperature),
        stop_ids=(tok.im_end_id, tok.endoftext_id))
    return GenerationRequest(prompt_ids=list(prompt), sampling=sampling, seed=req.seed,
                             stop=req.stop_strings(), split_reasoning=settings.split_reasoning,
                             budget=request_budget(req, tok))


def request_budget(req: ChatRequest, tok: SpongeTokenizer) -> ThinkBudget | None:
    """Budget forcing, when the request asks for it: the same knobs as eval_model.py's flags."""
    if req.max_think_tokens is not None and (req.min_think_tokens or 0) > req.max_think_tokens:
        raise ApiError(400, f"min_think_tokens {req.min_think_tokens} is above max_think_tokens "
                       f"{req.max_think_tokens}", param="min_think_tokens")
    try:
        return think_budget(tok, req.max_think_tokens, req.min_think_tokens or 0,
                            req.continue_word or DEFAULT_CONTINUE_WORD)
    except ValueError as e:  # what is left to refuse is the word itself (a tag inside it)
        raise ApiError(400, f"continue_word: {e}", param="continue_word") from None


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        # Unknown paths (404) and wrong methods (405), in the same shape as ours.
        error = ApiError(e.status_code, f"{request.method} {request.url.path}: {e.detail}")
        return JSONResponse(error.body(), status_code=e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception) -> JSONResponse:
        # A bug of ours, not a bad request: logged with its traceback, answered in the same shape.
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(ApiError(500, f"internal error: {type(e).__name__}", "server_error").body(),
                            status_code=500)
