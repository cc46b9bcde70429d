"""`saa ui` in a real headless Chromium: upload an image, run, get the result picture.

Needs the `ui` extra (gradio), selenium and the Debian packages chromium + chromium-driver. In CI
(CI=true) a missing piece is a failure; locally the test is skipped.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import pytest

from saa.testing import tiny_config_overrides

REPO = Path(__file__).resolve().parents[1]
BOTTLE = REPO.parent / "shared" / "realdata" / "mvtec_ad__doanthai161_Bottle-Anomaly-Detection" / "bottle"
IN_CI = os.environ.get("CI", "").lower() == "true"

pytestmark = pytest.mark.allow_localhost


def _need(ok: bool, what: str) -> None:
    if not ok:
        if IN_CI:
            pytest.fail(f"UI test cannot run in CI: {what}")
        pytest.skip(what)


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _browser_paths() -> tuple[str | None, str | None]:
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    return chrome, shutil.which("chromedriver")


def test_ui_upload_and_run_in_chromium(tmp_path, tiny_models):
    try:
        import gradio  # noqa: F401
        import selenium  # noqa: F401
    except ImportError as e:
        _need(False, f"missing Python package ({e}); pip install -e '.[test,ui]'")
    chrome, driver_bin = _browser_paths()
    _need(bool(chrome and driver_bin), "chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    _need(BOTTLE.is_dir(), f"real images not found: {BOTTLE}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    img = tmp_path / "bottle_test.png"
    cv2.imwrite(str(img), cv2.resize(cv2.imread(str(BOTTLE / "test" / "broken_large" / "000.png")), (128, 128)))
    port = _free_port()
    sets = tiny_config_overrides(tiny_models) + ["general_prompts=[]"]
    cmd = [sys.executable, "-m", "saa.cli", "ui", "--config", str(REPO / "configs" / "mvtec.yaml"),
           "--port", str(port)] + [a for s in sets for a in ("--set", s)]
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    log_path = tmp_path / "ui.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
    driver = None
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while True:
            assert server.poll() is None, "saa ui exited:\n" + log_path.read_text(errors="replace")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "saa ui did not start:\n" + log_path.read_text(errors="replace")
            time.sleep(0.5)

        opts = webdriver.ChromeOptions()
        opts.binary_location = chrome
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     f"--user-data-dir={tmp_path / 'chrome-profile'}", "--window-size=1400,1100"):
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=driver_bin), options=opts)
        driver.set_page_load_timeout(60)
        driver.get(url)
        wait = WebDriverWait(driver, 60)
        upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#input-image input[type=file]"))
        upload.send_keys(str(img))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#input-image img"))
        driver.find_element(By.CSS_SELECTOR, "#run").click()

        def result_loaded(d):
            for el in d.find_elements(By.CSS_SELECTOR, "#result-image img"):
                if el.get_attribute("src") and d.execute_script(
                        "return arguments[0].complete && arguments[0].naturalWidth", el):
                    return el
            return False

        result = WebDriverWait(driver, 240).until(result_loaded)
        time.sleep(1.0)  # let the table and the downloads render for the screenshot
        driver.save_screenshot(str(tmp_path / "ui_screenshot.png"))
        if os.environ.get("SAA_WRITE_SCREENSHOTS") == "1":
            driver.save_screenshot(str(REPO / "assets" / "ui_screenshot.png"))
        w = driver.execute_script("return arguments[0].naturalWidth", result)
        h = driver.execute_script("return arguments[0].naturalHeight", result)
        assert w > 0 and h > 0
        assert (tmp_path / "ui_screenshot.png").stat().st_size > 1000
        message = driver.find_element(By.CSS_SELECTOR, "#message").text
        assert "Full SAA+" in message, message
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
