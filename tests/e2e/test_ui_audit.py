"""The UI's Audit page, and the admin pages as an auditor key sees them, in a real browser
(Debian's headless Chromium driven by Selenium) against a running ``inferd serve``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.ui_browser import HAVE_BROWSER, chromium, console_errors, login, page, wait
from tests.helpers import InferdProcess, wait_for

ADMIN_KEY = "sk-admin-ui-audit-0123456789abcdef"

pytestmark = pytest.mark.skipif(
    not HAVE_BROWSER and os.environ.get("INFERD_REQUIRE_SERVICES") != "1",
    reason="Debian's chromium and chromium-driver are not installed (make test installs them)",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    env = {
        "INFERD_ADMIN_KEY": ADMIN_KEY,
        "INFERD_AUDIT_FAILURE_WINDOW_SECONDS": "0.2",
        "INFERD_MODELS": json.dumps([{"name": "echo", "kind": "echo"}]),
    }
    with InferdProcess(tmp_path_factory.mktemp("ui-audit"), "--no-bundled", env=env) as process:
        yield process


@pytest.fixture(scope="module")
def api(server: InferdProcess) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    ) as client:
        yield client


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    driver = chromium(tmp_path_factory.mktemp("chromium"), 1280, 900)
    yield driver
    errors = console_errors(driver)
    driver.quit()
    assert not [e for e in errors if "Failed to load resource" not in e], errors


def find(d: Any, css: str) -> Any:
    from selenium.webdriver.common.by import By

    return d.find_element(By.CSS_SELECTOR, css)


def rows(d: Any, table: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [r.text for r in d.find_elements(By.CSS_SELECTOR, f"{table} tbody tr")]


def log_out(d: Any) -> None:
    if find(d, "#logout").is_displayed():
        find(d, "#logout").click()
        wait(d, lambda d: find(d, "#login").is_displayed())


def test_the_audit_page_lists_filters_and_details_events(
    server: InferdProcess, api: httpx.Client, browser: Any
) -> None:
    d = browser
    login(d, server.url, ADMIN_KEY)
    created = api.post("/admin/v1/models", json={"name": "audited-model"})
    assert created.status_code == 201, created.text
    key = api.post("/admin/v1/keys", json={"name": "audited-key"}).json()
    page(d, server.url, "audit")
    wait(d, lambda d: any("key.create" in r for r in rows(d, "#audit-table")))
    shown = rows(d, "#audit-table")
    assert any("model.create" in r and "audited-model" not in r for r in shown)
    assert any("ui.login" in r for r in shown)  # this browser's log-in
    assert all(key["key"] not in r for r in shown)
    find(d, "#audit-filter input[name=action]").send_keys("model.create")
    find(d, "#audit-filter button[type=submit]").click()
    wait(
        d,
        lambda d: (
            rows(d, "#audit-table") and all("model.create" in r for r in rows(d, "#audit-table"))
        ),
    )
    [row] = rows(d, "#audit-table")
    assert "127.0.0.1" in row
    find(d, "#audit-table tbody tr button").click()
    wait(d, lambda d: find(d, "#audit-detail").is_displayed())
    detail = find(d, "#audit-detail").text
    assert "model.create" in detail and "audited-model" in detail


def test_an_auditor_sees_the_admin_pages_without_their_forms(
    server: InferdProcess, api: httpx.Client, browser: Any
) -> None:
    d = browser
    auditor = api.post("/admin/v1/keys", json={"name": "ui-auditor", "scope": "auditor"})
    assert auditor.status_code == 201, auditor.text
    page(d, server.url, "home")
    log_out(d)
    login(d, server.url, auditor.json()["key"])
    wait(d, lambda d: "auditor" in find(d, "#who").text)
    assert find(d, "nav a[data-page=audit]").is_displayed()
    page(d, server.url, "keys")
    wait(d, lambda d: any("ui-auditor" in r for r in rows(d, "#keys-table")))
    assert not find(d, "#key-box").is_displayed()  # no form to create a key
    assert not any(
        b.is_displayed() for b in d.find_elements("css selector", "#keys-table .actions")
    )
    page(d, server.url, "audit")  # the admin's changes (the filter kept: model.create)
    wait(d, lambda d: any("model.create" in r for r in rows(d, "#audit-table")))
    page(d, server.url, "models")
    wait(d, lambda d: any("echo" in r for r in rows(d, "#models-table")))
    assert not find(d, "#model-box").is_displayed()
    log_out(d)


def test_a_refused_log_in_is_counted_and_a_user_sees_no_audit_page(
    server: InferdProcess, api: httpx.Client, browser: Any
) -> None:
    d = browser
    page(d, server.url, "home")
    log_out(d)
    find(d, "#login-key").send_keys("sk-not-a-key-for-the-audit-ui-0000")
    find(d, "#login-form button").click()
    wait(d, lambda d: "refused" in find(d, "#login-say").text)

    def counted() -> bool:
        found = api.get("/admin/v1/audit", params={"action": "auth.failed"}).json()["data"]
        return any(e["after"]["path"] == "/ui/session" for e in found)

    wait_for(counted, what="the refused log-in in the audit log")
    user = api.post("/admin/v1/keys", json={"name": "ui-user"}).json()
    login(d, server.url, user["key"])
    wait(d, lambda d: "user key" in find(d, "#who").text)
    assert not find(d, "nav a[data-page=audit]").is_displayed()
    page(d, server.url, "audit")
    wait(d, lambda d: "needs an admin key" in find(d, "#login-say").text)
    log_out(d)


def test_screens(browser: Any, tmp_path: Path) -> None:
    path = tmp_path / "audit.png"
    browser.save_screenshot(str(path))
    assert path.stat().st_size > 1000
