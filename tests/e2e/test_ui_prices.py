"""A model's price on the UI's Models page (its per image and per step fields beside the
token prices), in a real browser (Debian's headless Chromium driven by Selenium) against a
running ``inferd serve``: set in the form, stored through the admin API, shown again when the
model is edited."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.ui_browser import HAVE_BROWSER, chromium, console_errors, login, page, wait
from tests.helpers import InferdProcess

ADMIN_KEY = "sk-admin-ui-prices-0123456789abcdef"

pytestmark = pytest.mark.skipif(
    not HAVE_BROWSER and os.environ.get("INFERD_REQUIRE_SERVICES") != "1",
    reason="Debian's chromium and chromium-driver are not installed (make test installs them)",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    with InferdProcess(tmp_path_factory.mktemp("ui-prices"), "--no-bundled",
                       env={"INFERD_ADMIN_KEY": ADMIN_KEY}) as process:
        yield process


@pytest.fixture(scope="module")
def d(server: InferdProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    driver = chromium(tmp_path_factory.mktemp("chromium"), 1440, 900)
    login(driver, server.url, ADMIN_KEY)
    yield driver
    errors = console_errors(driver)
    driver.quit()
    assert not [e for e in errors if "Failed to load resource" not in e], errors


def _find(d: Any, css: str) -> Any:
    from selenium.webdriver.common.by import By

    return d.find_element(By.CSS_SELECTOR, css)


def _fill(d: Any, css: str, value: str) -> None:
    field = _find(d, css)
    field.clear()
    field.send_keys(value)


def _edit(d: Any, model: str) -> bool:
    """Clicks Edit in the row of ``model`` (rows are redrawn as data arrives)."""
    from selenium.webdriver.common.by import By

    for row in d.find_elements(By.CSS_SELECTOR, "#models-table tbody tr"):
        if model in row.text:
            for button in row.find_elements(By.CSS_SELECTOR, "button"):
                if button.text == "Edit":
                    button.click()
                    return True
    return False


def _price(server: InferdProcess, model: str) -> Any:
    answer = httpx.get(f"{server.url}/admin/v1/models/{model}", timeout=60,
                       headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert answer.status_code == 200, answer.text
    return answer.json()["price"]


def test_a_price_per_image_and_per_step_is_set_and_edited_in_the_model_form(
        server: InferdProcess, d: Any, tmp_path: Path) -> None:
    page(d, server.url, "models")
    _find(d, "#model-box summary").click()
    _fill(d, "#model-form [name=name]", "priced-sd")
    _fill(d, "#model-form [name=price_image]", "0.5")
    _fill(d, "#model-form [name=price_step]", "0.25")
    _find(d, "#model-form button[type=submit]").click()
    wait(d, lambda d: "Saved" in _find(d, "#model-say").text)
    assert _price(server, "priced-sd") == {"input": 0.0, "output": 0.0, "cached_input": None,
                                           "image": 0.5, "step": 0.25}

    # Edit shows the price as stored; a new price per step replaces the old one
    wait(d, lambda d: _edit(d, "priced-sd"))
    wait(d, lambda d: _find(d, "#model-form [name=price_step]").get_attribute("value") == "0.25")
    assert _find(d, "#model-form [name=price_image]").get_attribute("value") == "0.5"
    _fill(d, "#model-form [name=price_step]", "0.125")
    d.save_screenshot(str(tmp_path / "models-price.png"))
    _find(d, "#model-form button[type=submit]").click()
    wait(d, lambda d: "Saved" in _find(d, "#model-say").text)
    assert _price(server, "priced-sd")["step"] == 0.125
