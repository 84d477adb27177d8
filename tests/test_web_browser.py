"""The page in a real headless Chromium (Debian's package, driven by Selenium and chromedriver).

With the sample jobs.yaml and a ledger holding sent, failed, missed, cancelled
and pending deliveries: the timeline shows the live event and each status, the
browser logs no console error, axe-core finds no violation on any page, print
hides the navigation, and a screenshot is written to docs/timeline.png (the
README shows it). Nothing is downloaded: the browser and its driver are
Debian's, axe-core comes inside the `axe-core-python` wheel, and the browser
can resolve no host but 127.0.0.1.

Without Chromium (a developer's machine) these tests skip and say how to install
it; under CI=true they fail instead.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from test_web import Site
from webdata import ANNOUNCE

CHROMIUM = "/usr/bin/chromium"
DRIVER = "/usr/bin/chromedriver"
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "timeline.png"
# axe-core 4.4 knows WCAG 2.0 and 2.1 A/AA by these tags; best practices on top
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    missing = [path for path in (CHROMIUM, DRIVER) if not os.path.exists(path)]
    if missing:
        message = (f"{' and '.join(missing)} not found: install Debian's browser with "
                   "`apt-get install -y chromium chromium-driver` (.ci/run does)")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--disable-default-apps", "--force-device-scale-factor=1",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",  # loopback only
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}", "--window-size=1100,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _open(browser: Any, url: str) -> None:
    browser.get(url)
    assert browser.execute_script("return document.readyState") == "complete"


def _console_errors(browser: Any) -> list[str]:
    return [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def _axe(browser: Any) -> list[dict[str, Any]]:
    """axe-core's violations on the open page (injected by WebDriver, so the page's CSP stays)."""
    browser.execute_script(files("axe_core_python").joinpath("axe.min.js").read_text())
    result = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {runOnly: {type: 'tag', values: arguments[0]}})"
        ".then(r => done({passed: r.passes.map(p => p.id), violations: r.violations.map(v => ("
        "{id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}))}))",
        AXE_TAGS)
    assert {"color-contrast", "html-has-lang", "document-title", "landmark-one-main"} <= set(
        result["passed"])  # it really ran
    return list(result["violations"])


# WCAG 2.2's 2.5.8 (target size, minimum), which axe-core 4.4 predates: a target smaller than
# 24x24 px passes if a 24 px circle centred on it touches no other target and no other such circle
TARGET_SIZE = """
const targets = [...document.querySelectorAll('a[href], button, input, select, textarea')]
  .filter(e => e.getClientRects().length).map(e => [e, e.getBoundingClientRect()]);
const small = ([, r]) => r.width < 24 || r.height < 24;
const centre = r => [r.left + r.width / 2, r.top + r.height / 2];
const failing = [];
for (const [e, r] of targets.filter(small)) {
  const [x, y] = centre(r);
  for (const [f, q] of targets) {
    if (f === e) continue;
    const [fx, fy] = centre(q);
    const gap = Math.hypot(Math.max(q.left - x, 0, x - q.right), Math.max(q.top - y, 0, y - q.bottom));
    if (gap < 12 || (small([f, q]) && Math.hypot(fx - x, fy - y) < 24)) {
      failing.push(e.outerHTML.slice(0, 80) + ' near ' + f.outerHTML.slice(0, 80));
      break;
    }
  }
}
return failing;
"""


def test_timeline_in_a_browser_shows_every_status_passes_axe_and_prints(
        browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    site = Site(tmp_path)
    try:
        url = site.serve()
        _open(browser, url + "/?from=2027-01-11&days=5")
        block = browser.find_element(By.ID, "event-hate-crime-live-chat")
        assert "Facebook live chat on hate crime" in block.text
        assert "18:00 to 19:00 GMT" in block.text
        badges = {b.text for b in browser.find_elements(By.CSS_SELECTOR, ".badge")}
        assert {"✓ sent", "✗ failed", "! missed", "○ pending", "⊘ cancelled"} <= badges
        # the stylesheet loaded under the CSP, and status has a colour as well as its word
        sent = browser.find_element(By.CSS_SELECTOR, ".badge.ok")
        assert sent.value_of_css_property("background-color") == "rgba(227, 244, 230, 1)"
        assert _console_errors(browser) == []
        assert _axe(browser) == []
        assert browser.execute_script(TARGET_SIZE) == []
        assert _console_errors(browser) == []

        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
        assert not browser.find_element(By.CSS_SELECTOR, "header.site").is_displayed()
        assert not browser.find_element(By.CSS_SELECTOR, "form.window").is_displayed()
        assert block.is_displayed()
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})

        for path in ("/status", f"/delivery/{site.id_of(ANNOUNCE)}", "/nope", "/?days=0"):
            _open(browser, url + path)
            assert _axe(browser) == [], path
            assert browser.execute_script(TARGET_SIZE) == [], path
            assert [e for e in _console_errors(browser) if "404" not in e and "400" not in e] == []

        _open(browser, url + "/?from=2027-01-11&days=4")  # every status is in view
        size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        shot = browser.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
        SCREENSHOT.parent.mkdir(exist_ok=True)
        SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
    finally:
        site.close()
