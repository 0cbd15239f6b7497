"""The web UI in a real browser (Debian's headless Chromium driven by Selenium)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import InferdProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ADMIN_KEY = "sk-admin-ui-test-0123456789abcdef"

HAVE_BROWSER = os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)
# In CI (INFERD_REQUIRE_SERVICES=1) a missing browser fails the test instead of skipping it.
pytestmark = pytest.mark.skipif(
    not HAVE_BROWSER and os.environ.get("INFERD_REQUIRE_SERVICES") != "1",
    reason="Debian's chromium and chromium-driver are not installed (make test installs them)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    with InferdProcess(tmp_path_factory.mktemp("ui"),
                       env={"INFERD_ADMIN_KEY": ADMIN_KEY}) as process:
        yield process


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium fetch a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def _wait(driver: object, condition: object, timeout: float = 60) -> object:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)  # type: ignore[arg-type]


def test_pages_playground_and_keys(server: InferdProcess, browser: object,
                                   tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    d = browser
    d.get(server.url + "/")  # type: ignore[attr-defined]
    _wait(d, lambda d: "ready" in d.find_element(By.ID, "status").text)

    # Without a key the admin pages say so, in the page
    d.get(server.url + "/ui/#keys")  # type: ignore[attr-defined]
    _wait(d, lambda d: d.find_element(By.ID, "notice").is_displayed())
    assert "admin API key" in d.find_element(By.ID, "notice").text  # type: ignore[attr-defined]

    key = d.find_element(By.ID, "api-key")  # type: ignore[attr-defined]
    key.send_keys(ADMIN_KEY)
    d.execute_script("arguments[0].dispatchEvent(new Event('change'))", key)  # type: ignore[attr-defined]

    # Models page lists the bundled models and the local replicas
    d.get(server.url + "/ui/#models")  # type: ignore[attr-defined]
    _wait(d, lambda d: "smollm2-135m-instruct" in d.find_element(By.ID, "models-table").text)
    _wait(d, lambda d: "local" in d.find_element(By.ID, "replicas-table").text)

    # Playground: a real streamed answer from the bundled model, with usage
    d.get(server.url + "/ui/#playground")  # type: ignore[attr-defined]
    _wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#chat-model option"))
    d.find_element(By.ID, "chat-max-tokens").clear()  # type: ignore[attr-defined]
    d.find_element(By.ID, "chat-max-tokens").send_keys("12")  # type: ignore[attr-defined]
    d.find_element(By.ID, "chat-input").send_keys("Say hello to the sea.")  # type: ignore[attr-defined]
    d.find_element(By.ID, "chat-send").click()  # type: ignore[attr-defined]
    _wait(d, lambda d: "completion" in d.find_element(By.ID, "chat-usage").text)
    answer = d.find_element(By.CSS_SELECTOR, ".msg.assistant").text  # type: ignore[attr-defined]
    assert answer and answer != "…"

    # API keys: create one (shown once), see it listed, revoke it
    d.get(server.url + "/ui/#keys")  # type: ignore[attr-defined]
    d.find_element(By.ID, "key-name").send_keys("ui-made")  # type: ignore[attr-defined]
    d.find_element(By.ID, "key-rpm").send_keys("30")  # type: ignore[attr-defined]
    d.find_element(By.CSS_SELECTOR, "#key-form button").click()  # type: ignore[attr-defined]
    _wait(d, lambda d: d.find_element(By.ID, "key-secret").text.startswith("sk-"))
    _wait(d, lambda d: "ui-made" in d.find_element(By.ID, "keys-table").text)
    row = next(r for r in d.find_elements(By.CSS_SELECTOR, "#keys-table tbody tr")  # type: ignore[attr-defined]
               if "ui-made" in r.text)
    assert "30" in row.text
    row.find_element(By.TAG_NAME, "button").click()
    _wait(d, lambda d: "ui-made" not in d.find_element(By.ID, "keys-table").text
          or "disabled" in d.find_element(By.ID, "keys-table").text)

    # Monitoring: usage aggregates include the playground request; tables are browsable
    d.get(server.url + "/ui/#monitoring")  # type: ignore[attr-defined]
    _wait(d, lambda d: "smollm2-135m-instruct" in d.find_element(By.ID, "usage-table").text,
          timeout=30)
    _wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#table-name option"))
    d.save_screenshot(str(tmp_path / "monitoring.png"))  # type: ignore[attr-defined]
    if os.environ.get("INFERD_UI_SCREENSHOTS"):
        d.save_screenshot(os.environ["INFERD_UI_SCREENSHOTS"])  # type: ignore[attr-defined]
    assert (tmp_path / "monitoring.png").stat().st_size > 10_000
