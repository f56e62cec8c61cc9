"""The chat page at / and /chat (web/, served from the binary) in a real browser: Debian's headless
chromium driven by chromedriver through selenium.

One daemon with --api-key: the page itself is served without the key and asks for it; then a
message is typed and sent and the reply is seen arriving in pieces (a MutationObserver in the
page records the reply's length at each change), with its token counts and tokens/s; a second,
long reply is stopped mid-stream, and the server must abort that request (the abort counter on
/metrics goes up and nothing is left running); a reload finds the conversation again
(localStorage). --disable-web-ui answers 404 for the page and its files.

SLUICE_SCREENSHOTS=DIR saves the page at desktop and phone widths there (left off by default).
Skipped only where chromium, chromedriver or selenium is missing (scripts/setup.sh installs them).
"""
import os
import re
import shutil
import time

import pytest
import requests

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - setup.sh installs it
    webdriver = None

pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None or webdriver is None,
                                reason="chromium, chromedriver or selenium is missing (scripts/setup.sh installs them)")

KEY = "web-ui-key"
PAGE_FILES = ["/", "/chat", "/chat/chat.js", "/chat/chat.css", "/chat/marked.min.js", "/chat/marked-LICENSE.txt"]


@pytest.fixture(scope="module")
def srv(start_server):
    return start_server(api_key=KEY)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
              "--window-size=1280,800", f"--user-data-dir={tmp_path_factory.mktemp('profile')}"]:
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    d.set_page_load_timeout(30)
    yield d
    d.quit()


def metric(srv, series):
    m = re.search(r"^sluice:%s\{[^}]*\} (\S+)$" % re.escape(series), requests.get(srv.url + "/metrics", timeout=10).text, re.M)
    return float(m.group(1))


def aborted(srv):
    text = requests.get(srv.url + "/metrics", timeout=10).text
    return float(re.search(r'^sluice:request_success_total\{[^}]*finished_reason="abort"\} (\S+)$', text, re.M).group(1))


def wait(d, what, timeout=30):
    return WebDriverWait(d, timeout, poll_frequency=0.05).until(lambda _: what())


def js(d, script, *args):
    return d.execute_script(script, *args)


def replies(d):
    """The replies shown, as [{text, stats}] (read in the page: it redraws them as they change)."""
    return js(d, """return [...document.querySelectorAll('#messages .msg.assistant')].map(m => ({
        text: m.querySelector('.content').innerText, stats: m.querySelector('.stats').innerText}))""")


def test_files_are_served_without_the_key_and_with_a_strict_policy(srv):
    for path in PAGE_FILES:
        r = requests.get(srv.url + path, timeout=10)
        assert r.status_code == 200, path
        assert r.headers["Content-Security-Policy"].startswith("default-src 'none'"), path
    page = requests.get(srv.url + "/", timeout=10)
    assert page.headers["Content-Type"].startswith("text/html") and "chat/chat.js" in page.text
    assert "MIT" in requests.get(srv.url + "/chat/marked-LICENSE.txt", timeout=10).text
    assert requests.get(srv.url + "/chat/nothing.js", timeout=10).status_code == 404
    assert requests.get(srv.url + "/v1/models", timeout=10).status_code == 401  # the API still needs it


def test_chat_stream_stop_and_history(srv, browser):
    d = browser
    d.get(srv.url + "/")
    # the key prompt: /v1/models answered 401 without it
    wait(d, lambda: d.find_element(By.ID, "key-dialog").get_attribute("open") is not None)
    d.find_element(By.ID, "key-input").send_keys(KEY)
    d.find_element(By.ID, "key-save").click()
    wait(d, lambda: d.find_element(By.ID, "model").text == srv.model_id())

    d.find_element(By.CSS_SELECTOR, "#settings summary").click()
    d.find_element(By.ID, "max-tokens").clear()
    d.find_element(By.ID, "max-tokens").send_keys("48")
    d.find_element(By.ID, "temperature").clear()
    d.find_element(By.ID, "temperature").send_keys("0")
    # every change of the messages' text, as lengths of the last reply (the stream's pieces)
    js(d, """window.seen = [];
        new MutationObserver(() => {
          const r = document.querySelectorAll('#messages .msg.assistant .content');
          if (r.length) window.seen.push(r[r.length - 1].textContent.length);
        }).observe(document.getElementById('messages'), {childList: true, subtree: true, characterData: true});""")
    box = d.find_element(By.ID, "input")
    box.send_keys("Write a short poem about rivers.")
    d.find_element(By.ID, "send").click()
    wait(d, lambda: replies(d) and "tokens/s" in replies(d)[-1]["stats"])
    first = replies(d)[-1]
    stats = first["stats"]
    m = re.search(r"(\d+) prompt \+ (\d+) completion tokens", stats)
    # the counts are the server's usage (stream_options.include_usage): the prompt as /tokenize counts it
    prompt = srv.post("/tokenize", {"messages": [{"role": "user", "content": "Write a short poem about rivers."}]})
    assert m and int(m.group(1)) == prompt.json()["count"] and 3 <= int(m.group(2)) <= 48, stats
    text = first["text"]
    assert text.strip()
    grew = sorted({n for n in js(d, "return window.seen") if 0 < n})
    assert len(grew) >= 3, f"the reply did not arrive in pieces: {grew}"

    # a long reply, stopped as soon as text shows: the server aborts the request
    before = aborted(srv)
    d.find_element(By.ID, "max-tokens").clear()
    d.find_element(By.ID, "max-tokens").send_keys("1500")
    box.send_keys("Count from 1 to 1000, one number per line.")
    d.find_element(By.ID, "send").click()
    wait(d, lambda: len(replies(d)) == 2 and replies(d)[-1]["text"].strip())
    d.find_element(By.ID, "stop").click()
    wait(d, lambda: "stopped" in replies(d)[-1]["stats"])
    assert d.find_element(By.ID, "send").is_displayed() and not d.find_element(By.ID, "stop").is_displayed()
    t0 = time.time()
    while aborted(srv) < before + 1 and time.time() - t0 < 10:
        time.sleep(0.1)
    assert aborted(srv) == before + 1, "the stopped request was not aborted on the server"
    assert metric(srv, "num_requests_running") == 0
    stopped_text = replies(d)[-1]["text"]

    shots = os.environ.get("SLUICE_SCREENSHOTS")
    if shots:
        os.makedirs(shots, exist_ok=True)
        d.save_screenshot(os.path.join(shots, "desktop.png"))

    # reload: the conversation, both replies and their stats, come back from localStorage
    d.refresh()
    wait(d, lambda: d.find_element(By.ID, "model").text == srv.model_id())  # the key was kept too
    classes = js(d, "return [...document.querySelectorAll('#messages .msg')].map(m => m.className)")
    assert classes == ["msg user", "msg assistant"] * 2
    assert [r["text"] for r in replies(d)] == [text, stopped_text]
    chats = d.find_elements(By.CSS_SELECTOR, "#chats .chat")
    assert len(chats) == 1 and "rivers" in chats[0].text

    if shots:
        d.set_window_size(390, 844)
        time.sleep(0.5)  # the sidebar slides away (a CSS transition)
        d.save_screenshot(os.path.join(shots, "phone.png"))
        d.find_element(By.ID, "menu").click()
        time.sleep(0.3)
        d.save_screenshot(os.path.join(shots, "phone-menu.png"))
        d.set_window_size(1280, 800)
    errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE" and "401" not in e["message"]]
    assert not errors, errors  # no script error, no refused load (CSP)


def test_model_output_html_is_not_markup(srv, browser):
    # marked renders the reply; raw HTML in it must come out as text (chat.js), whatever the model says
    d = browser
    html = js(d, "return marked.parse('a <img src=x id=evil> b')")
    assert "<img" not in html and "&#60;img" in html
    assert "<strong>b</strong>" in js(d, "return marked.parse('**b**')")  # markdown itself still renders


def test_disable_web_ui(start_server):
    off = start_server("--disable-web-ui")
    for path in PAGE_FILES:
        r = requests.get(off.url + path, timeout=10)
        assert r.status_code == 404, path
    assert requests.get(off.url + "/health", timeout=10).status_code == 200
