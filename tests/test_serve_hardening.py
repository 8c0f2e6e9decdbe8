"""serve.py's hardening: extreme and malformed requests get a 4xx (never a 5xx), POST
bodies must be JSON, the Host header must name the server, and a few hundred fuzzed
requests leave the server answering. The served model and its harness: test_serve.py.
"""
import json
import random

import pytest

pytest.importorskip("openai")
pytest.importorskip("uvicorn")

import serve  # noqa: E402
from test_eval_model import save_tiny  # noqa: E402
from test_serve import GOOD, LIMIT, Server  # noqa: E402
from tokenizer import load_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tok):
    _, path = save_tiny(tmp_path_factory.mktemp("ckpt") / "tiny.pth", tok, {"stage": "sft", "step": 1})
    server = Server(path, tok)
    yield server
    server.close()


# ------------------------------------------------------------------ hardening

def test_extreme_sampling_values_are_greedy_or_400_never_500(tiny):
    base = {**GOOD, "max_tokens": 4}
    assert tiny.http.post("/v1/chat/completions", json={**base, "temperature": 1e-40}).status_code == 200
    assert tiny.http.post("/v1/chat/completions", json={**base, "temperature": 1.0, "top_p": 1e-300}).status_code == 200
    for field, value in (("repetition_penalty", 1e-300), ("repetition_penalty", 11), ("temperature", 2.5),
                         ("top_p", 0), ("top_p", 1.5)):
        r = tiny.http.post("/v1/chat/completions", json={**base, field: value})
        assert r.status_code == 400 and r.json()["error"]["param"] == field, (field, value)


def test_post_bodies_must_be_json(tiny):
    r = tiny.http.post("/v1/chat/completions", content=json.dumps(GOOD), headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    r = tiny.http.post("/v1/chat/completions", content=json.dumps({**GOOD, "max_tokens": 2}),
                       headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 200


def test_requests_for_another_host_are_refused(tok, tmp_path):
    _, path = save_tiny(tmp_path / "hosted.pth", tok, {"stage": "sft"})
    server = Server(path, tok)
    try:
        port = server.url.rsplit(":", 1)[1]
        server.settings.allowed_hosts = serve.allowed_hosts("127.0.0.1", int(port), [])
        body = {**GOOD, "model": "hosted", "max_tokens": 2}
        assert server.http.post("/v1/chat/completions", json=body).status_code == 200  # Host: 127.0.0.1:port
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1:1"):
            r = server.http.post("/v1/chat/completions", json=body, headers={"Host": host})
            assert r.status_code == 403 and r.json()["error"]["code"] == "host_not_allowed"
        assert server.http.get("/", headers={"Host": f"localhost:{port}"}).status_code == 200
    finally:
        server.close()
    assert serve.allowed_hosts("0.0.0.0", 8000, []) is None  # every interface, on purpose: any host
    assert "chat.lan:8000" in serve.allowed_hosts("0.0.0.0", 8000, ["chat.lan"])


def extreme_body(rng):
    """A valid request at the edges of every range."""
    body = {"model": "tiny", "messages": [{"role": "user", "content": rng.choice(["hi", "海" * 200, "🙂", " "])}],
            "max_tokens": rng.choice([1, 2, LIMIT]), "temperature": rng.choice([0, 1e-40, 1e-6, 2.0]),
            "top_p": rng.choice([1e-300, 1e-9, 1.0]), "repetition_penalty": rng.choice([0.1, 1.0, 10.0]),
            "top_k": rng.choice([0, 1, 10**9]), "seed": rng.choice([0, -2**63, 2**64 - 1])}
    if rng.random() < 0.3:
        body.update(max_think_tokens=rng.choice([0, 1, 10**6]), min_think_tokens=0)
    if rng.random() < 0.3:
        body["stream"] = True
    return body


def fuzz_body(rng):
    """A request that is malformed or extreme in one or more random ways."""
    if rng.random() < 0.4:
        return extreme_body(rng)
    junk = [None, True, 0, -1, 2**70, 1e308, -1e-308, "", "x" * 300, "海" * 50, [], {}, [1, "a"], {"a": 1},
            "\ud83d\ude00", "NaN", float("inf") if rng.random() < 0.1 else 0.5]
    body = {"model": rng.choice(["tiny", "nope", 3]), "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": rng.choice([1, 2, 3, LIMIT, LIMIT + 1, 0, -5, "3"])}
    for field in rng.sample(["temperature", "top_p", "top_k", "repetition_penalty", "seed", "stop", "stream",
                             "n", "max_think_tokens", "min_think_tokens", "continue_word", "messages", "model",
                             "stream_options", "max_completion_tokens"], rng.randint(1, 4)):
        body[field] = rng.choice(junk + [rng.uniform(-3, 3), rng.randint(-3, 5)])
    if rng.random() < 0.3:
        body["messages"] = [{"role": rng.choice(["user", "assistant", "system", "tool", 1]),
                             "content": rng.choice(junk)} for _ in range(rng.randint(0, 3))]
    return body


def test_fuzzed_requests_get_2xx_or_4xx_and_the_server_still_answers(tiny):
    rng = random.Random(0)
    statuses = []
    for i in range(300):
        body = fuzz_body(rng)
        try:
            content = json.dumps(body, allow_nan=True).encode()
        except ValueError:
            content = b"{bad"
        if rng.random() < 0.1:
            content = content[: rng.randint(0, len(content))]  # cut short
        kind = rng.choice(["application/json"] * 8 + ["text/plain", ""])
        r = tiny.http.post("/v1/chat/completions", content=content, headers={"Content-Type": kind}, timeout=30)
        statuses.append(r.status_code)
        assert r.status_code < 500, (i, body, r.text)
        if r.status_code >= 400:
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert statuses.count(200) > 10 and sum(s >= 400 for s in statuses) > 100  # both kinds were exercised
    assert tiny.client().chat.completions.create(model="tiny", messages=GOOD["messages"], max_tokens=2).choices
