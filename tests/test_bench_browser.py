"""The HTML report in a real headless browser (Debian's chromium, driven by selenium).

Skipped only when chromium (or selenium) is absent AND the environment variable CI is unset;
under CI=true a missing browser fails the test (.ci/apt-packages lists what CI installs).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from bench_helpers import run_tiny

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
pytestmark = pytest.mark.slow  # a bench run, then its report in a headless browser


def _missing() -> str | None:
    if CHROMIUM is None or CHROMEDRIVER is None:
        return ("chromium and chromium-driver are not installed "
                "(apt-get install chromium chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    return None


def _driver(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1400,2400"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Our own chromedriver: selenium never downloads a browser or a driver.
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def test_report_opens_in_a_headless_browser(tmp_path):
    reason = _missing()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI is set but the browser check cannot run: {reason}")
        pytest.skip(reason)
    out = tmp_path / "report"
    assert run_tiny(out) == 0
    pictures = sorted(p.name for p in out.glob("*.png"))
    driver = _driver(tmp_path / "profile")
    try:
        driver.get((out / "report.html").as_uri())
        assert driver.execute_script("return document.readyState") == "complete"
        assert driver.title == "optimkit bench report"
        rows = driver.execute_script(
            "return [...document.querySelectorAll('#leaderboard tbody tr')]"
            ".map(r => r.cells[0].innerText)")
        assert sorted(rows) == ["adagrad", "adam", "sgd"]
        # The page fits a 1,400 px window: no horizontal scrolling.
        assert driver.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth")
        images = driver.execute_script(
            "return [...document.images].map(i => [i.alt, i.complete, i.naturalWidth])")
        assert len(images) == len(pictures) >= 3
        assert all(done and width > 100 for _, done, width in images), images
        assert driver.execute_script(
            "return document.querySelector('#leaderboard').getBoundingClientRect().height") > 40
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        shot = out / "report-screenshot.png"
        assert driver.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    finally:
        driver.quit()
