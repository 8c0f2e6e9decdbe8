"""serve.py's OpenAI-compatible server, driven by the real `openai` client over real HTTP.

Two tiny models are served from threads on free loopback ports:
  * `tiny`: seeded random weights, so answers differ per prompt; the oracle is
    model.generate run directly, one request at a time.
  * `scripted`: weights built by hand so that the next token depends only on the
    current one, following a fixed chain; it always writes
    <think>海绵</think><answer>蟹堡</answer> and then <|im_end|>, at any temperature.
"""
import asyncio
import dataclasses
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

import serve  # noqa: E402
from inference.generate import generate  # noqa: E402
from inference.sampling import SamplingConfig  # noqa: E402
from model import SpongeBob, get_preset, load_model, save_model  # noqa: E402
from serving import Engine, ServerSettings, create_app  # noqa: E402
from serving.app import build_request  # noqa: E402
from serving.engine import QueueFull  # noqa: E402
from serving.generation import Failed, GenerationRequest, Piece  # noqa: E402
from serving.schemas import ChatRequest  # noqa: E402
from test_eval_model import save_tiny  # noqa: E402
from tokenizer import load_tokenizer  # noqa: E402

KEY = "test-key"
LIMIT = 64
# The scripted model's chain, token by token: the prompt always ends with "\n" (205),
# the last token of "<|im_start|>assistant\n". 蟹 is two byte-level tokens (2460, 124).
CHAIN = [205, 3, 790, 3512, 4, 5, 2460, 124, 4716, 6, 2]
SCRIPT_THINK, SCRIPT_ANSWER, SCRIPT_TOKENS = "海绵", "蟹堡", 9   # 9: <think> .. </answer>, not <|im_end|>
SCRIPT_RAW = "<think>海绵</think><answer>蟹堡</answer>"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def scripted_model(tok) -> SpongeBob:
    """Attention and MLP outputs zeroed, so the residual stream is the current token's
    embedding; chain tokens get orthogonal embeddings and the head maps each to the next."""
    cfg = dataclasses.replace(get_preset("spongebob-tiny"), tie_embeddings=False)
    model = SpongeBob(cfg).eval()
    with torch.no_grad():
        for block in model.layers:
            block.attn.o_proj.weight.zero_()
            block.mlp.down_proj.weight.zero_()
        model.embed.weight.zero_()
        model.lm_head.weight.zero_()
        for i, (current, following) in enumerate(zip(CHAIN, CHAIN[1:])):
            model.embed.weight[current, i] = 1.0
            model.lm_head.weight[following, i] = 20.0   # logit 20·√dim = 160 against 0 for every other token
    return model


class Server:
    """A served checkpoint on a free 127.0.0.1 port, in a thread."""

    def __init__(self, path: Path, tok, **settings):
        model, _ = load_model(path, tokenizer=tok, device="cpu")
        self.model, self.engine = model, Engine(model, tok)
        self.settings = ServerSettings(model_id=path.stem, api_key=KEY, max_tokens_limit=LIMIT,
                                       max_request_bytes=20_000, **settings)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(self.engine, self.settings), log_level="warning",
                                                    timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 10
        while not self.server.started and time.time() < deadline:
            time.sleep(0.02)
        assert self.server.started
        # One client each, reused: building an HTTP client (its TLS context) costs ~0.1 s.
        self.api = openai.OpenAI(base_url=self.url + "/v1", api_key=KEY, max_retries=0)
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {KEY}"})

    def client(self, key=KEY):
        return self.api if key == KEY else openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0)

    def close(self):
        self.api.close()
        self.http.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.engine.close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tok):
    _, path = save_tiny(tmp_path_factory.mktemp("ckpt") / "tiny.pth", tok, {"stage": "sft", "step": 1})
    server = Server(path, tok)
    yield server
    server.close()


@pytest.fixture(scope="module")
def scripted(tmp_path_factory, tok):
    path = tmp_path_factory.mktemp("ckpt") / "scripted.pth"
    save_model(path, scripted_model(tok), tok.identity(), meta={"stage": "distill"})
    server = Server(path, tok)
    yield server
    server.close()


def chatml_ids(tok, user: str) -> list[int]:
    """The prompt written out by hand in ChatML, then tokenized."""
    return tok.encode(f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")


def greedy_oracle(model, tok, user: str, max_new: int) -> str:
    # A greedy request that names no repetition_penalty gets none: greedy is plain argmax.
    cfg = SamplingConfig(max_new_tokens=max_new, temperature=0, repetition_penalty=1.0, stop_ids=(2, 0))
    return tok.decode(list(generate(model, chatml_ids(tok, user), cfg)), skip_special_tokens=True)


# ------------------------------------------------------------------ OpenAI client

def test_models_lists_the_checkpoint_stem(tiny):
    assert [m.id for m in tiny.client().models.list().data] == ["tiny"]


def test_non_streaming_reasoning_answer_and_usage(scripted, tok):
    r = scripted.client().chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "你好"}], temperature=1.0)
    msg = r.choices[0].message
    assert msg.content == SCRIPT_ANSWER
    assert msg.reasoning_content == SCRIPT_THINK
    assert r.choices[0].finish_reason == "stop"
    prompt = len(chatml_ids(tok, "你好"))
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == \
        (prompt, SCRIPT_TOKENS, prompt + SCRIPT_TOKENS)


def test_streaming_collects_reasoning_and_content_apart(scripted):
    stream = scripted.client().chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "你好"}], stream=True,
        stream_options={"include_usage": True})
    reasoning, content, finish, usage, roles = [], [], [], [], []
    for chunk in stream:
        if chunk.usage is not None:
            usage.append(chunk.usage)
        for choice in chunk.choices:
            roles += [choice.delta.role] if choice.delta.role else []
            reasoning += [getattr(choice.delta, "reasoning_content", None) or ""]
            content += [choice.delta.content or ""]
            finish += [choice.finish_reason] if choice.finish_reason else []
    assert "".join(reasoning) == SCRIPT_THINK and "".join(content) == SCRIPT_ANSWER
    assert sum(1 for r in reasoning if r) == 2     # streamed: one delta per token, 海 then 绵
    assert roles == ["assistant"] and finish == ["stop"]
    assert len(usage) == 1 and usage[0].completion_tokens == SCRIPT_TOKENS


def test_max_tokens_stop_strings_and_raw_mode(scripted):
    client = scripted.client()
    ask = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}]}
    r = client.chat.completions.create(**ask, max_tokens=3)   # <think> 海 绵
    assert (r.choices[0].message.reasoning_content, r.choices[0].message.content) == ("海绵", "")
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3
    r = client.chat.completions.create(**ask, stop=["堡"])
    assert r.choices[0].message.content == "蟹" and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == 8              # up to and including 堡
    # A stop string is matched on the raw text, tags included, across token borders; a
    # partial match (蟹 of 蟹X) is held back, then released when it turns out not to be one.
    r = client.chat.completions.create(**ask, stop=["绵</think>", "蟹X"])
    assert (r.choices[0].message.reasoning_content, r.choices[0].message.content) == ("海", "")
    r = client.chat.completions.create(**ask, stop="蟹X")
    assert (r.choices[0].message.content, r.usage.completion_tokens) == (SCRIPT_ANSWER, SCRIPT_TOKENS)
    scripted.settings.split_reasoning = False
    try:
        r = client.chat.completions.create(**ask)
    finally:
        scripted.settings.split_reasoning = True
    assert r.choices[0].message.content == SCRIPT_RAW
    assert getattr(r.choices[0].message, "reasoning_content", None) is None


def test_budget_forcing_extras(scripted):
    ask = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}]}
    # An early </think> (after 海 绵: 2 < 4 thinking tokens) is replaced by the continue
    # word 海绵 (tokens 海, 绵), after which the chain closes thinking again, now at 4.
    r = scripted.client().chat.completions.create(
        **ask, extra_body={"min_think_tokens": 4, "continue_word": "海绵"})
    msg = r.choices[0].message
    assert (msg.reasoning_content, msg.content, r.usage.completion_tokens) == ("海绵海绵", "蟹堡", 11)
    # A cap of 1: <think> 海, then </think>\n<answer>\n is forced; the chain starts over at that
    # last \n (<think> 海 ...), and the 8th token ends it: thinking 海 + 海, no answer yet.
    r = scripted.client().chat.completions.create(**ask, max_tokens=8, extra_body={"max_think_tokens": 1})
    msg = r.choices[0].message
    assert (msg.reasoning_content, msg.content, r.choices[0].finish_reason) == ("海海", "", "length")


def test_untagged_model_output_is_all_content_and_multi_turn_is_rendered(tiny, tok):
    messages = [{"role": "system", "content": "你是海绵宝宝"}, {"role": "user", "content": "一"},
                {"role": "assistant", "content": "二"}, {"role": "user", "content": "三"}]
    r = tiny.client().chat.completions.create(model="tiny", messages=messages, temperature=0, max_tokens=10)
    prompt = tok.encode("<|im_start|>system\n你是海绵宝宝<|im_end|>\n<|im_start|>user\n一<|im_end|>\n"
                        "<|im_start|>assistant\n二<|im_end|>\n<|im_start|>user\n三<|im_end|>\n<|im_start|>assistant\n")
    cfg = SamplingConfig(max_new_tokens=10, temperature=0, repetition_penalty=1.0, stop_ids=(2, 0))
    expected = tok.decode(list(generate(tiny.model, prompt, cfg)), skip_special_tokens=True)
    assert r.choices[0].message.content == expected
    assert getattr(r.choices[0].message, "reasoning_content", None) is None
    assert r.usage.prompt_tokens == len(prompt)


@pytest.mark.parametrize("fields,penalty", [
    ({"temperature": 0}, 1.0), ({"temperature": 1e-6}, 1.0), ({}, 1.1), ({"temperature": 0.7}, 1.1),
    ({"temperature": 0, "repetition_penalty": 1.2}, 1.2),
])
def test_greedy_requests_get_no_repetition_penalty_unless_they_name_one(tiny, fields, penalty):
    req = ChatRequest(model="tiny", messages=[{"role": "user", "content": "一"}], **fields)
    assert build_request(req, tiny.engine, tiny.settings).sampling.repetition_penalty == penalty


def test_seeded_sampling_is_reproducible(tiny, tok):
    ask = dict(model="tiny", messages=[{"role": "user", "content": "种子"}], temperature=1.0, top_p=0.95,
               max_tokens=12, seed=7)
    first = tiny.client().chat.completions.create(**ask).choices[0].message.content
    cfg = SamplingConfig(max_new_tokens=12, temperature=1.0, top_p=0.95, repetition_penalty=1.1, stop_ids=(2, 0))
    ids = generate(tiny.model, chatml_ids(tok, "种子"), cfg, generator=torch.Generator().manual_seed(7))
    assert first == tok.decode(list(ids), skip_special_tokens=True)
    assert tiny.client().chat.completions.create(**ask).choices[0].message.content == first


def test_auth(tiny):
    with pytest.raises(openai.AuthenticationError) as e:
        tiny.client(key="wrong").models.list()
    assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
    r = tiny.http.post("/v1/chat/completions", json={"model": "tiny", "messages": []},
                       headers={"Authorization": ""})
    assert r.status_code == 401 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert tiny.http.get("/", headers={"Authorization": ""}).status_code == 200   # the page itself is public; its API calls are not


def test_eight_concurrent_streams_each_get_their_own_answer(tiny, tok):
    users = ["海绵宝宝", "派大星住在哪里？", "章鱼哥", "Hello!", "1+1=?", "蟹老板的钱", "珊迪来自德州", "小蜗喵喵"]
    expected = [greedy_oracle(tiny.model, tok, u, 16) for u in users]
    client = openai.AsyncOpenAI(base_url=tiny.url + "/v1", api_key=KEY, max_retries=0)

    async def one(user):
        stream = await client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": user}], temperature=0, max_tokens=16, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async def all_at_once():
        return await asyncio.gather(*(one(u) for u in users))

    got = asyncio.run(all_at_once())
    assert got == expected
    assert len(set(expected)) == 8
    assert tiny.engine.peak_active >= 2   # they really were generated together


# ------------------------------------------------------------------ bad requests

GOOD = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
BAD_REQUESTS = [
    # (body, status, param)
    (b"{not json", 400, None),
    (b"", 400, None),
    (b"\x80 not utf-8", 400, None),
    (b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', 400, None),
    (b"[" * 9_000 + b"]" * 9_000, 400, None),
    ([1, 2], 400, None),
    ({"messages": GOOD["messages"]}, 400, "model"),
    ({"model": "tiny"}, 400, "messages"),
    ({"model": "tiny", "messages": []}, 400, "messages"),
    ({**GOOD, "messages": "hi"}, 400, "messages"),
    ({**GOOD, "messages": [{"role": "tool", "content": "x"}]}, 400, "messages.0.role"),
    ({**GOOD, "messages": [{"role": "user", "content": 5}]}, 400, "messages.0.content"),
    ({**GOOD, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "messages.0.content.0.type"),
    ({**GOOD, "temperature": "hot"}, 400, "temperature"),
    ({**GOOD, "temperature": -1}, 400, "temperature"),
    ({**GOOD, "top_p": 0}, 400, "top_p"),
    ({**GOOD, "max_tokens": True}, 400, "max_tokens"),
    ({**GOOD, "max_tokens": 0}, 400, "max_tokens"),
    ({**GOOD, "max_tokens": LIMIT + 1}, 400, "max_tokens"),
    ({**GOOD, "stream": "yes"}, 400, "stream"),
    ({**GOOD, "stream_options": {"include_usage": 1}}, 400, "stream_options.include_usage"),
    ({**GOOD, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({**GOOD, "stop": [""]}, 400, "stop"),
    ({**GOOD, "seed": 2**70}, 400, "seed"),
    ({**GOOD, "seed": 1.5}, 400, "seed"),
    ({**GOOD, "n": 2}, 400, "n"),
    ({**GOOD, "min_think_tokens": 5, "max_think_tokens": 4}, 400, "min_think_tokens"),
    ({**GOOD, "min_think_tokens": 5, "continue_word": "<think>"}, 400, "continue_word"),
    ({**GOOD, "max_think_tokens": -1}, 400, "max_think_tokens"),
    ({**GOOD, "model": "gpt-4"}, 404, "model"),
    ({**GOOD, "messages": [{"role": "user", "content": "海" * 600}]}, 400, "messages"),   # > 512 context
    ({**GOOD, "messages": [{"role": "user", "content": "x" * 30_000}]}, 413, None),     # > max_request_bytes
]


@pytest.mark.parametrize("body, status, param", BAD_REQUESTS,
                         ids=[f"{i}-{s}-{p}" for i, (_, s, p) in enumerate(BAD_REQUESTS)])
def test_bad_requests_get_a_4xx_in_openai_shape(tiny, body, status, param):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = tiny.http.post("/v1/chat/completions", content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param


def test_openai_client_sees_the_errors_as_its_own_exceptions(tiny):
    client = tiny.client()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=GOOD["messages"])
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=GOOD["messages"], max_tokens=LIMIT + 1)
    assert e.value.body["param"] == "max_tokens"


@pytest.mark.parametrize("method, path, status", [("GET", "/nope", 404), ("DELETE", "/v1/models", 405),
                                                  ("GET", "/v1/chat/completions", 405)])
def test_unknown_routes_and_methods(tiny, method, path, status):
    r = tiny.http.request(method, path)
    assert r.status_code == status and set(r.json()["error"]) == {"message", "type", "param", "code"}


def endless(engine, monkeypatch):
    """Make the engine's decoder give every request 海 (790) forever: only a cancel ends one."""
    def step():
        time.sleep(0.002)
        return [(slot, 790) for slot in engine.decoder.active]
    monkeypatch.setattr(engine.decoder, "step", step)


def test_client_disconnects_cancel_the_generation(tiny, monkeypatch):
    endless(tiny.engine, monkeypatch)
    body = {**GOOD, "max_tokens": LIMIT, "stream": True}
    before = tiny.engine.dropped
    with tiny.http.stream("POST", "/v1/chat/completions", json=body) as r:
        lines = r.iter_lines()
        while '"content": "海"' not in next(lines):   # generating (endless yields 海); now hang up
            pass
    with pytest.raises(httpx.ReadTimeout):   # a non-streaming client that gives up waiting
        tiny.http.post("/v1/chat/completions", json={**body, "stream": False}, timeout=0.3)
    deadline = time.time() + 10
    while (tiny.engine.dropped < before + 2 or tiny.engine.active_count) and time.time() < deadline:
        time.sleep(0.05)
    assert tiny.engine.dropped == before + 2 and tiny.engine.active_count == 0
    monkeypatch.undo()
    assert tiny.client().chat.completions.create(model="tiny", messages=GOOD["messages"], max_tokens=2).choices


def test_engine_refuses_past_max_waiting_and_ends_open_requests_when_stopped(tok, monkeypatch):
    engine = Engine(SpongeBob(get_preset("spongebob-tiny")), tok, max_active=1, max_waiting=1)
    endless(engine, monkeypatch)
    loop = asyncio.new_event_loop()
    request = GenerationRequest(prompt_ids=[1], sampling=SamplingConfig(max_new_tokens=10))
    running = engine.submit(request, loop)
    deadline = time.time() + 5
    while engine.active_count == 0 and time.time() < deadline:
        time.sleep(0.01)
    waiting = engine.submit(request, loop)   # no room to run: it waits
    with pytest.raises(QueueFull):
        engine.submit(request, loop)
    engine.close()
    loop.run_until_complete(asyncio.sleep(0))   # deliver what the worker sent
    got = {name: [job.events.get_nowait() for _ in range(job.events.qsize())]
           for name, job in (("running", running), ("waiting", waiting))}
    loop.close()
    assert all(isinstance(e, Piece) for e in got["running"][:-1]) and isinstance(got["running"][-1], Failed)
    assert len(got["waiting"]) == 1 and got["waiting"][0].message == "the server is shutting down"


# ------------------------------------------------------------------ serve.py

def test_serve_flags_are_checked_before_anything_loads(capsys):
    for argv, fragment in [(["--port", "70000"], "--port"), (["--max_tokens_limit", "0"], "--max_tokens_limit"),
                           (["--api_key", " "], "--api_key")]:
        with pytest.raises(SystemExit):
            serve.main(argv)
        assert fragment in capsys.readouterr().err


def test_serve_missing_checkpoint_and_taken_port_are_one_line_errors(tiny, capsys, tmp_path):
    assert serve.main(["--ckpt", str(tmp_path / "none.pth"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "none.pth" in err and len(err.splitlines()) == 1
    path = tmp_path / "tiny.pth"
    save_tiny(path, load_tokenizer(), {"stage": "sft"})
    port = tiny.url.rsplit(":", 1)[1]
    assert serve.main(["--ckpt", str(path), "--device", "cpu", "--port", port]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
