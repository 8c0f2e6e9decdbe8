"""serve.py's chat page in a headless Chromium, against the scripted model of test_serve.py.

Optional and slow (`-m slow`): needs playwright and a system Chromium, else it skips.
Screenshots of what the browser saw go to out/serve_page_*.png.
"""
import re
import time
from pathlib import Path

import pytest

import test_serve
from test_serve import KEY, SCRIPT_ANSWER, SCRIPT_THINK, SCRIPT_TOKENS, endless

# pytest looks for fixtures among a module's globals: reuse test_serve's tokenizer and scripted server.
tok, scripted = test_serve.tok, test_serve.scripted

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[1] / "out"
PHONE = {"width": 390, "height": 844}
WORD_PROBLEM = "海绵宝宝有12个贝壳，派大星又送给他5个。海绵宝宝现在一共有多少个贝壳？"
IDLE = "!document.getElementById('send').hidden"   # no reply is streaming


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="optional: pip install playwright")
    if not CHROMIUM.exists():
        pytest.skip(f"optional: needs a system Chromium at {CHROMIUM} (apt-get install chromium)")
    SHOTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


@pytest.fixture
def served(scripted, monkeypatch):
    """The scripted server, telling the page it serves a distilled (thinking) model."""
    monkeypatch.setattr(scripted.settings, "stage", "distill")
    monkeypatch.setattr(scripted.settings, "checkpoint", "out/scripted.pth")
    return scripted


def open_page(browser, server, viewport=None, key=KEY):
    """A fresh page (its own sessionStorage) on the chat page; posts collects each POST's JSON body."""
    page = browser.new_page(viewport=viewport or {"width": 1280, "height": 800})
    page.posts = []
    page.on("request", lambda r: page.posts.append(r.post_data_json) if r.method == "POST" else None)
    if key:
        page.add_init_script(f"sessionStorage.setItem('apiKey', '{key}')")
    page.goto(server.url + "/")
    page.wait_for_selector(".example")
    return page


def send(page, text, replies):
    """Type text, send it, and wait until the replies-th assistant turn has ended."""
    page.fill("#input", text)
    page.click("#send")
    wait_reply(page, replies)


def wait_reply(page, replies):
    page.wait_for_function(f"document.querySelectorAll('.assistant').length == {replies} && {IDLE}")


def no_horizontal_scroll(page):
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


@pytest.mark.slow
def test_header_examples_answer_thinking_timing_and_history(browser, served):
    page = open_page(browser, served)
    assert page.inner_text("#stage") == "distill" and page.is_visible("#reasoning")
    assert page.inner_text("#checkpoint") == "out/scripted.pth"
    examples = page.locator(".example").all_inner_texts()
    assert WORD_PROBLEM in examples and len(examples) == 3     # a thinking model gets word problems
    page.locator(".example", has_text=WORD_PROBLEM).click()
    wait_reply(page, 1)
    assert page.is_hidden("#welcome")
    assert page.locator(".user").all_inner_texts() == [WORD_PROBLEM]
    assert page.posts[0]["messages"] == [{"role": "user", "content": WORD_PROBLEM}]
    assert page.posts[0]["stream_options"] == {"include_usage": True}
    send(page, "再说一次", 2)
    assert page.locator(".assistant .answer").all_inner_texts() == [SCRIPT_ANSWER, SCRIPT_ANSWER]
    # The thinking is folded once the answer starts (not rendered), and apart from the answer.
    assert page.locator(".assistant .thinking > div").all_text_contents() == [SCRIPT_THINK, SCRIPT_THINK]
    assert page.locator(".assistant .thinking[open]").count() == 0
    assert page.locator(".thinking summary").first.inner_text().startswith("Thought for")
    # The timing line: TTFT and tokens/s, with the completion tokens of the usage chunk.
    for stats in page.locator(".assistant .stats").all_inner_texts():
        assert re.fullmatch(rf"TTFT \d+ ms · {SCRIPT_TOKENS} tokens · \d+\.\d tokens/s", stats), stats
    # The second request carried the first exchange, the answer without its thinking.
    assert page.posts[1]["messages"] == [{"role": "user", "content": WORD_PROBLEM},
                                         {"role": "assistant", "content": SCRIPT_ANSWER},
                                         {"role": "user", "content": "再说一次"}]
    # Left at their defaults, no sampling fields are sent: the server's defaults apply.
    assert set(page.posts[1]) == {"model", "messages", "stream", "stream_options"}
    page.locator(".thinking").first.evaluate("d => d.open = true")
    page.screenshot(path=str(SHOTS / "serve_page_desktop.png"))
    # New chat forgets the conversation and brings the examples back.
    page.click("#clear")
    assert page.locator(".turn").count() == 0 and page.is_visible("#welcome")
    send(page, "你好", 1)
    assert page.posts[2]["messages"] == [{"role": "user", "content": "你好"}]
    page.close()


@pytest.mark.slow
def test_settings_are_sent_with_each_request(browser, served):
    page = open_page(browser, served)
    assert page.is_hidden("#temperature")                        # the panel starts folded
    page.click("#settings summary")
    page.get_by_label("Temperature").fill("0")
    page.get_by_label("Max tokens").fill("8")
    page.get_by_label("Max thinking tokens").fill("5")
    assert "temperature 0" in page.inner_text("#settings-summary")
    send(page, "你好", 1)
    body = page.posts[0]
    assert (body["temperature"], body["max_tokens"], body["max_think_tokens"]) == (0, 8, 5)
    assert "top_p" not in body and "min_think_tokens" not in body
    # 8 tokens end before </answer>: the timing line says the reply was cut off.
    assert re.fullmatch(r"TTFT \d+ ms · 8 tokens · \d+\.\d tokens/s · cut off at max tokens",
                        page.inner_text(".assistant .stats"))
    # A request the server refuses shows its message, and is left out of the conversation.
    page.get_by_label("Min thinking tokens").fill("9")
    send(page, "矛盾", 2)
    assert page.posts[1]["min_think_tokens"] == 9
    assert "min_think_tokens 9 is above max_think_tokens 5" in page.inner_text(".assistant >> nth=1")
    # An out-of-range value is pointed out and nothing is sent; Reset goes back to the defaults.
    page.get_by_label("Top-p").fill("1.5")
    page.fill("#input", "再来")
    page.click("#send")
    assert len(page.posts) == 2 and page.input_value("#input") == "再来"
    page.click("#reset")
    assert page.inner_text("#settings-summary") == "(server defaults)"
    send(page, "再来", 3)
    assert set(page.posts[2]) == {"model", "messages", "stream", "stream_options"}
    assert page.posts[2]["messages"] == [{"role": "user", "content": "你好"},
                                         {"role": "assistant", "content": SCRIPT_ANSWER},
                                         {"role": "user", "content": "再来"}]
    page.close()


@pytest.mark.slow
def test_examples_and_settings_follow_the_stage(browser, served, monkeypatch):
    for stage, example, thinks in (("sft", "派大星住在哪里？", False), ("pretrain", "海绵宝宝住在", False),
                                   ("grpo", WORD_PROBLEM, True)):
        monkeypatch.setattr(served.settings, "stage", stage)
        page = open_page(browser, served)
        assert page.inner_text("#stage") == stage and page.is_visible("#reasoning") == thinks
        assert example in page.locator(".example").all_inner_texts()
        page.click("#settings summary")
        assert page.is_visible("#max_think_tokens") == thinks     # budget forcing: thinking models only
        page.close()


@pytest.mark.slow
def test_stop_cancels_the_generation_on_the_server(browser, served, monkeypatch):
    page = open_page(browser, served)
    endless(served.engine, monkeypatch)     # an answer that would never end by itself
    dropped = served.engine.dropped
    page.fill("#input", "停")
    page.click("#send")
    page.wait_for_function("document.querySelector('.assistant .answer').textContent.length > 0")
    assert page.is_visible("#stop") and page.is_hidden("#send")
    page.click("#stop")
    wait_reply(page, 1)
    assert page.inner_text(".assistant .stats").endswith("stopped")
    page.close()
    deadline = time.time() + 5
    while served.engine.dropped == dropped and time.time() < deadline:
        time.sleep(0.05)
    assert served.engine.dropped == dropped + 1 and served.engine.active_count == 0


@pytest.mark.slow
def test_phone_width_without_horizontal_scroll_and_the_key_prompt(browser, served):
    page = open_page(browser, served, viewport=PHONE, key=None)   # no key yet: the page asks for it on 401
    asked = []
    page.on("dialog", lambda d: (asked.append(d.message), d.accept(KEY)))
    assert no_horizontal_scroll(page)
    page.locator(".example").first.click()
    wait_reply(page, 1)
    assert asked == ["API key for this server:"]
    assert page.inner_text(".assistant .answer") == SCRIPT_ANSWER
    send(page, "一个很长的没有空格的词" * 8 + "x" * 120, 2)   # long unbroken text must wrap
    page.click("#settings summary")
    assert no_horizontal_scroll(page)
    assert page.evaluate("sessionStorage.getItem('apiKey')") == KEY
    page.locator(".thinking").first.evaluate("d => d.open = true")
    page.click("#settings summary")
    page.screenshot(path=str(SHOTS / "serve_page_phone.png"))
    page.close()
