"""The Gradio demo in a real headless Chromium: type a prompt, press Generate, see the streamed sentences.

Needs Debian's chromium and chromium-driver (`.ci/run` installs them) and the `dev` extra (gradio, selenium).
"""

import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tiny_sonar_llm_dir):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "space" / "app.py"), "--model", str(tiny_sonar_llm_dir),
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(process.stdout.read()) from None
            time.sleep(1)
    else:
        process.kill()
        raise RuntimeError("the app did not start within 3 minutes")
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    yield driver
    driver.quit()


def test_prompt_generate_and_stream(app_url, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(app_url)
    wait = WebDriverWait(browser, 120)
    prompt = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#prompt textarea"))
    prompt.clear()
    prompt.send_keys("The cat sat on the mat. It was happy.")
    output = browser.find_element(By.CSS_SELECTOR, "#output textarea")
    browser.find_element(By.CSS_SELECTOR, "#generate").click()
    # sentences arrive one by one: the text grows through at least two distinct non-empty values
    seen = []
    deadline = time.time() + 120
    while time.time() < deadline:
        value = output.get_attribute("value")
        if value and (not seen or value != seen[-1]):
            seen.append(value)
        if len(seen) >= 2 and not browser.find_elements(By.CSS_SELECTOR, ".generating"):
            break
        time.sleep(0.05)
    assert seen, "no sentence appeared"
    assert len(seen) >= 2, f"the continuation did not stream: {seen}"
    assert seen[-1].startswith(seen[0])
    browser.save_screenshot(str(tmp_path / "space_app.png"))


def test_concurrent_requests_queue(app_url):
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    results, errors = [], []

    def ask(text):
        try:
            results.append(client.predict(text, "eng_Latn", "eng_Latn", 0.98, 1, 2, api_name="/continue_text"))
        except Exception as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=ask, args=(f"Tom had a red car number {i}.",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert len(results) == 3 and all(isinstance(r, str) and r for r in results)
