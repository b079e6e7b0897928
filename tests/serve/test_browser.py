"""The served page in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`,
which `.ci/run` installs) driven by Selenium. Upload a CXR, ask for the report with the task button,
ask for a lateral view of a finding, and check what a person sees: the answer text, the drawn
`<img>`, no error anywhere, and not one request leaving 127.0.0.1. A screenshot is saved
(`LIT_MEDXCHAT_SERVE_SCREENSHOT=docs/serve.png` writes the one the docs show)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest
from serve_dialogues import DRAW_PROMPT, REPORT

from lit_medxchat.core.constants import XRAY_END, XRAY_START

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

WAIT_S = 120  # page load and each answer on a loaded 2-core machine; the tiny models answer in seconds


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        message = "headless Chromium is missing: apt-get install -y chromium chromium-driver (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return browser, driver


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _chromium()
    options = Options()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1440,1000", "--force-device-scale-factor=1",
                     "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",  # nothing but loopback resolves
                     "--disable-background-networking", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, what: str, condition) -> None:
    try:
        WebDriverWait(driver, WAIT_S, poll_frequency=0.25).until(lambda d: condition(d))
    except TimeoutException:
        body = driver.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"the page did not show {what} within {WAIT_S} s; it shows:\n{body[-3000:]}") from None


def _chat_text(driver) -> str:
    return driver.find_element(By.ID, "chat").text


def _page_errors(driver) -> list[str]:
    """Error toasts, gradio's error status and anything looking like a traceback."""
    errors = [toast.text for toast in driver.find_elements(By.CSS_SELECTOR, "[data-testid='toast-body']")
              if "error" in (toast.get_attribute("class") or "").lower() or "error" in toast.text.lower()]
    body = driver.find_element(By.TAG_NAME, "body").text
    errors += [line for line in body.splitlines() if "Traceback" in line or line.strip() == "Error"]
    notice = driver.find_element(By.ID, "notice").text.strip()
    if notice:
        errors.append(f"notice: {notice}")
    return errors


def _requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_upload_report_and_draw_in_a_real_browser(server, cxr_file, browser, tmp_path):
    browser.get(server.url)
    _wait(browser, "the upload box", lambda d: d.find_elements(By.CSS_SELECTOR, "#uploads input[type=file]"))
    header = browser.find_element(By.ID, "run-header").text
    assert "chat model" in header and "CXR-SD" in header and "view classifier" in header
    assert "step 2" in header  # the fit runs' checkpoints

    browser.find_element(By.CSS_SELECTOR, "#uploads input[type=file]").send_keys(str(cxr_file))
    _wait(browser, "the thumbnail with its view", lambda d: "cxr.png:" in d.find_element(By.ID, "thumbnails").text
          and d.find_elements(By.CSS_SELECTOR, "#thumbnails img"))

    browser.find_element(By.ID, "task-report").click()
    _wait(browser, "the report", lambda d: REPORT in _chat_text(d))

    browser.find_element(By.ID, "task-draw").click()  # the menus default to a lateral view of a pleural effusion
    _wait(browser, "the drawn CXR", lambda d: d.execute_script(
        "const imgs = document.querySelectorAll('#chat img');"
        "return imgs.length > 0 && [...imgs].every(i => i.complete && i.naturalWidth > 0);"))
    chat = _chat_text(browser)
    assert f"{XRAY_START} {DRAW_PROMPT} {XRAY_END}" in chat  # the prompt, shown as the model wrote it
    assert "Synthetic CXR" in chat
    assert _page_errors(browser) == []

    shot = tmp_path / "serve.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if target := os.environ.get("LIT_MEDXCHAT_SERVE_SCREENSHOT"):
        shutil.copyfile(shot, Path(target))

    outside = [url for url in _requested_urls(browser)
               if urlparse(url).scheme in ("http", "https", "ws", "wss") and urlparse(url).hostname != "127.0.0.1"]
    assert outside == [], f"the page reached beyond this machine: {outside}"
