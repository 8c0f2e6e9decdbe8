"""serve.py's chat page in a headless Chromium, against the scripted model of test_serve.py.

Optional and slow (`-m slow`): needs playwright and a system Chromium, else it skips.
"""
import time
from pathlib import Path

import pytest

import test_serve
from test_serve import KEY, SCRIPT_ANSWER, SCRIPT_THINK, endless

# pytest looks for fixtures among a module's globals: reuse test_serve's tokenizer and scripted server.
tok, scripted = test_serve.tok, test_serve.scripted

CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.slow
def test_chat_page_streams_an_answer_with_its_thinking(scripted, monkeypatch):
    sync_api = pytest.importorskip("playwright.sync_api", reason="optional: pip install playwright")
    if not CHROMIUM.exists():
        pytest.skip(f"optional: needs a system Chromium at {CHROMIUM} (apt-get install chromium)")
    shot = Path(__file__).resolve().parents[1] / "out" / "serve_page.png"
    shot.parent.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page()
        sent = []
        page.on("request", lambda r: sent.append(r.post_data_json) if r.method == "POST" else None)
        page.add_init_script(f"sessionStorage.setItem('apiKey', '{KEY}')")
        page.goto(scripted.url + "/")
        page.wait_for_selector("text=model: scripted")
        for n, turn in enumerate(("你好", "再说一次"), start=1):
            page.fill("#input", turn)
            page.click("#send")
            page.wait_for_function(f"document.querySelectorAll('.assistant').length == {n} && "
                                   "!document.getElementById('send').disabled")
        answers = page.locator(".assistant > span").all_inner_texts()
        thinking = page.locator(".assistant details > div").all_text_contents()   # folded: not rendered
        page.locator(".assistant details").first.evaluate("d => d.open = true")
        page.screenshot(path=str(shot))
        # The stop button, on an answer that would never end by itself.
        endless(scripted.engine, monkeypatch)
        dropped = scripted.engine.dropped
        page.fill("#input", "停")
        page.click("#send")
        page.wait_for_function("document.querySelectorAll('.assistant > span')[2].textContent.length > 0")
        page.click("#stop")
        page.wait_for_selector("text=(stopped)")
        browser.close()
    assert answers == [SCRIPT_ANSWER, SCRIPT_ANSWER] and thinking == [SCRIPT_THINK, SCRIPT_THINK]
    # The second request carried the first exchange, the answer without its thinking.
    assert sent[1]["messages"] == [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "蟹堡"},
                                   {"role": "user", "content": "再说一次"}]
    deadline = time.time() + 5
    while scripted.engine.dropped == dropped and time.time() < deadline:
        time.sleep(0.05)
    assert scripted.engine.dropped == dropped + 1 and scripted.engine.active_count == 0
