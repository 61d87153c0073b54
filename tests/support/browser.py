"""Headless Chromium for tests, driven by Selenium: Debian's `chromium` and
`chromium-driver` (`scripts/browser_env.sh` installs them), nothing downloaded.

    with chromium(artifacts=Path("test-artifacts/console")) as browser:
        browser.viewport(1280, 800)
        browser.driver.get(url)
        browser.screenshot("page")                 # artifacts/page.png

Chromium starts headless, without sandbox or GPU, with its background networking
(updates, sync, safe browsing, metrics) off and a throw-away profile.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

INSTALL_HINT = (
    "the console tests need Debian's chromium and chromium-driver: "
    "`apt-get install -y chromium chromium-driver` (or `bash scripts/browser_env.sh`)"
)
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-client-side-phishing-detection",
    "--disable-domain-reliability",
    "--safebrowsing-disable-auto-update",
    "--metrics-recording-only",
    "--no-pings",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
    "--window-size=1280,800",
)
WAIT_S = 30.0
T = TypeVar("T")


class BrowserUnavailable(RuntimeError):
    pass


def binaries() -> tuple[Path, Path]:
    """(chromium, chromedriver) from PATH, or BrowserUnavailable naming the fix."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        raise BrowserUnavailable(INSTALL_HINT)
    return Path(browser), Path(driver)


class Browser:
    def __init__(self, driver: WebDriver, artifacts: Path) -> None:
        self.driver = driver
        self.artifacts = artifacts

    def viewport(self, width: int, height: int, *, mobile: bool = False) -> None:
        """Exactly this CSS viewport (a phone's: `mobile`, touch, the page's meta viewport)."""
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
        )
        self.driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": mobile})

    def screenshot(self, name: str) -> Path:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        path = self.artifacts / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def wait(self, condition: Callable[[WebDriver], T | None], timeout: float = WAIT_S) -> T:
        """`condition`'s first truthy value; elements the page replaced meanwhile (it
        re-renders tables as answers come in) just mean another try."""
        waiting = WebDriverWait(
            self.driver, timeout, ignored_exceptions=(StaleElementReferenceException,)
        )
        found = waiting.until(condition)
        assert found is not None  # `until` returns only a truthy value
        return found

    def act(self, action: Callable[[WebDriver], T], timeout: float = WAIT_S) -> T:
        """Run `action` until it neither meets a replaced element nor misses one that is
        still to come (then its value)."""

        def attempt(driver: WebDriver) -> tuple[T]:
            return (action(driver),)

        retried = (StaleElementReferenceException, NoSuchElementException)
        return WebDriverWait(self.driver, timeout, ignored_exceptions=retried).until(attempt)[0]

    def script_errors(self) -> list[str]:
        """The page's console errors since the last call, except failed loads (an API call
        answering 4xx is logged as one): script errors and CSP violations remain."""
        entries = self.driver.get_log("browser")  # type: ignore[attr-defined]
        return [
            str(entry["message"])
            for entry in entries
            if entry.get("level") == "SEVERE" and "Failed to load resource" not in entry["message"]
        ]


@contextmanager
def chromium(artifacts: Path) -> Iterator[Browser]:
    browser_path, driver_path = binaries()
    profile = Path(tempfile.mkdtemp(prefix="taskgate-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = str(browser_path)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(str(driver_path)), options=options)
    except WebDriverException as exc:
        shutil.rmtree(profile, ignore_errors=True)
        raise BrowserUnavailable(f"chromium did not start: {exc.msg}") from exc
    try:
        yield Browser(driver, artifacts)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
