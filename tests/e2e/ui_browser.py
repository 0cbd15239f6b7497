"""Headless Debian Chromium driven by Selenium, for the web UI tests and screenshots."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
HAVE_BROWSER = os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)


def chromium(profile: Path, width: int = 1400, height: int = 900) -> Any:
    """A new headless Chromium; the caller quits it."""
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium fetch a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                 f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    return driver


def wait(driver: Any, condition: Callable[[Any], Any], timeout: float = 60) -> Any:
    """Polls ``condition(driver)`` until it is truthy (a Selenium wait with a deadline)."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,)
                             ).until(condition)
    except TimeoutException:
        # Say what the page showed: its messages and the visible page's text.
        shown = driver.execute_script(
            "return [location.hash, ...[...document.querySelectorAll('.say:not([hidden])')]"
            ".map(e => e.id + ': ' + e.textContent),"
            " (document.querySelector('.page:not([hidden])') || document.body).innerText"
            ".slice(0, 3000)]")
        raise AssertionError(f"condition not reached in {timeout} s; page: {shown}") from None


def login(driver: Any, url: str, key: str) -> None:
    """Opens the UI and logs in with ``key`` through the log-in form."""
    from selenium.webdriver.common.by import By

    driver.get(url + "/ui/#home")
    wait(driver, lambda d: d.find_element(By.ID, "login").is_displayed()
         or d.find_element(By.ID, "logout").is_displayed())
    if driver.find_element(By.ID, "logout").is_displayed():
        return
    field = driver.find_element(By.ID, "login-key")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait(driver, lambda d: d.find_element(By.ID, "logout").is_displayed())


def page(driver: Any, url: str, name: str) -> None:
    """Shows a page through its hash (as a click on the navigation does)."""
    driver.get(f"{url}/ui/#{name}")


def console_errors(driver: Any) -> list[str]:
    """Errors the page logged (uncaught exceptions, failed module loads)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"
            and "favicon" not in e["message"]]
