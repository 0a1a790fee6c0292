"""Headless Chromium from the OS packages, driven by selenium (the dashboard's tests
and scripts/dashboard_demo.py). Never downloads a browser or a driver: the paths
are Debian's (`apt-get install chromium chromium-driver`), found on PATH."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

#: As root in a container: no sandbox; and nothing that calls out to the network.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def browser_paths() -> tuple[str, str] | None:
    """(chromium, chromedriver) when both are installed, else None."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def new_chrome(profile: Path, width: int = 1400, height: int = 1000) -> WebDriver:
    """A fresh headless Chromium with its own profile dir, its console log kept."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = browser_paths()
    if paths is None:
        raise RuntimeError("chromium and chromedriver are not installed")
    chromium, driver = paths
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Selenium Manager is never asked for anything: both paths are given.
    os.environ.setdefault("SE_AVOID_STATS", "true")
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def console_errors(driver: WebDriver) -> list[str]:
    """The browser console's errors since the last call (read, then cleared by Chrome)."""
    entries = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [str(entry["message"]) for entry in entries if entry.get("level") == "SEVERE"]
