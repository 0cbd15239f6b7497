"""The UI's Requests page in a real browser (Debian's headless Chromium driven by Selenium)
against a running ``inferd serve``: an admin lists every key's requests, filters them and opens
one's details, by the team of the keys too; a user key sees its own requests only, without
the key, team and user filters."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.ui_browser import HAVE_BROWSER, chromium, console_errors, login, page, wait
from tests.helpers import InferdProcess

ADMIN_KEY = "sk-admin-ui-requests-0123456789abcdef"
CHAT = {"model": "echo", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}

pytestmark = pytest.mark.skipif(
    not HAVE_BROWSER and os.environ.get("INFERD_REQUIRE_SERVICES") != "1",
    reason="Debian's chromium and chromium-driver are not installed (make test installs them)",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    env = {"INFERD_ADMIN_KEY": ADMIN_KEY,
           "INFERD_MODELS": json.dumps([{"name": "echo", "kind": "echo"}])}
    with InferdProcess(tmp_path_factory.mktemp("ui-requests"), "--no-bundled",
                       env=env) as process:
        yield process


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


def rows(d: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [r.text for r in d.find_elements(By.CSS_SELECTOR, "#requests-table tbody tr")]


def chat(url: str, key: str, request_id: str, **body: Any) -> int:
    response = httpx.post(url + "/v1/chat/completions", json={**CHAT, **body}, timeout=60,
                          headers={"Authorization": f"Bearer {key}", "X-Request-ID": request_id,
                                   "User-Agent": "ui-requests-test"})
    return response.status_code


def test_admin_and_user_read_the_request_log(server: InferdProcess, browser: Any) -> None:
    admin = httpx.post(server.url + "/admin/v1/keys", json={"name": "ui-user"}, timeout=60,
                       headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert admin.status_code == 201, admin.text
    user = admin.json()
    assert chat(server.url, user["key"], "ui-user-ok") == 200
    assert chat(server.url, user["key"], "ui-user-bad", max_tokens=-1) == 400
    assert chat(server.url, ADMIN_KEY, "ui-admin-ok") == 200

    d = browser
    login(d, server.url, ADMIN_KEY)
    page(d, server.url, "requests")
    wait(d, lambda d: len(rows(d)) >= 2 and "ui-user" in " ".join(rows(d)))
    shown = rows(d)
    assert any("ui-user" in r and "200" in r for r in shown)
    assert any("INFERD_ADMIN_KEY" in r for r in shown)
    assert find(d, "#requests-filter [name=key_id]").is_displayed()
    # the admin's own requests only, by the key filter
    find(d, "#requests-filter [name=key_id]").send_keys(str(user["id"]))
    find(d, "#requests-filter button[type=submit]").click()
    wait(d, lambda d: rows(d) and all("ui-user" in r for r in rows(d)))
    find(d, "#requests-table tbody tr button").click()
    wait(d, lambda d: find(d, "#requests-detail").is_displayed())
    detail = find(d, "#requests-detail").text
    assert "ui-user-ok" in detail and "ui-requests-test" in detail
    assert "127.0.0.1" in detail and "local:echo" in detail
    find(d, "#logout").click()
    wait(d, lambda d: find(d, "#login").is_displayed())

    login(d, server.url, user["key"])
    page(d, server.url, "requests")
    wait(d, lambda d: len(rows(d)) >= 1 and "ui-user" in rows(d)[0])
    assert find(d, "nav a[data-page=requests]").is_displayed()
    assert not find(d, "#requests-filter [name=key_id]").is_displayed()
    assert all("INFERD_ADMIN_KEY" not in r for r in rows(d))
    find(d, "#requests-filter [name=status]").send_keys("200")
    find(d, "#requests-filter button[type=submit]").click()
    wait(d, lambda d: rows(d) and all("200" in r for r in rows(d)))
    find(d, "#logout").click()
    wait(d, lambda d: find(d, "#login").is_displayed())


def click_in_row(d: Any, table: str, text: str, label: str) -> None:
    """Clicks the button ``label`` in the row of ``table`` holding ``text`` (looked up again
    while the table is redrawn)."""
    from selenium.webdriver.common.by import By

    def attempt(d: Any) -> bool:
        for row in d.find_elements(By.CSS_SELECTOR, f"{table} tbody tr"):
            if text in row.text:
                for b in row.find_elements(By.CSS_SELECTOR, "button"):
                    if b.text == label:
                        b.click()
                        return True
        return False
    wait(d, attempt)


def test_a_key_made_to_keep_bodies_shows_them_in_the_details(server: InferdProcess,
                                                             browser: Any) -> None:
    d = browser
    login(d, server.url, ADMIN_KEY)
    page(d, server.url, "keys")
    wait(d, lambda d: "INFERD_ADMIN_KEY" in find(d, "#keys-table").text)
    find(d, "#key-form [name=name]").send_keys("ui-bodies")
    find(d, "#key-log-bodies").click()
    find(d, "#key-form button[type=submit]").click()
    wait(d, lambda d: find(d, "#key-secret").text.startswith("sk-"))
    secret = find(d, "#key-secret").text
    find(d, "#key-close").click()
    content = "hello from ui, mail me at ann@example.org"
    assert chat(server.url, secret, "ui-bodies-1",
                messages=[{"role": "user", "content": content}]) == 200

    page(d, server.url, "requests")
    d.execute_script("document.querySelector('#requests-filter').reset()")
    find(d, "#requests-filter [name=request_id]").send_keys("ui-bodies-1")
    find(d, "#requests-filter button[type=submit]").click()
    wait(d, lambda d: len(rows(d)) == 1 and "ui-bodies" in rows(d)[0])
    click_in_row(d, "#requests-table", "ui-bodies", "Details")
    wait(d, lambda d: find(d, "#requests-detail").is_displayed())
    asked = json.loads(find(d, "#requests-detail-request-body").text)
    assert asked["messages"] == [{"role": "user",
                                  "content": "hello from ui, mail me at [email]"}]
    answered = json.loads(find(d, "#requests-detail-response-body").text)
    assert answered["object"] == "chat.completion"
    assert "ann@example.org" not in find(d, "#requests-detail").text

    # the key's form shows the setting; turned off there, the next request keeps no body
    page(d, server.url, "keys")
    click_in_row(d, "#keys-table", "ui-bodies", "Edit")
    wait(d, lambda d: find(d, "#key-form [name=name]").get_attribute("value") == "ui-bodies")
    assert find(d, "#key-log-bodies").is_selected()
    find(d, "#key-log-bodies").click()
    find(d, "#key-form button[type=submit]").click()
    wait(d, lambda d: "Saved" in find(d, "#key-say").text)
    listed = httpx.get(server.url + "/admin/v1/keys", params={"name": "ui-bodies"},
                       headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60).json()
    assert [k["log_bodies"] for k in listed["data"]] == [False]
    assert chat(server.url, secret, "ui-bodies-2") == 200
    page(d, server.url, "requests")
    find(d, "#requests-filter [name=request_id]").clear()
    find(d, "#requests-filter [name=request_id]").send_keys("ui-bodies-2")
    find(d, "#requests-filter button[type=submit]").click()
    wait(d, lambda d: len(rows(d)) == 1 and "ui-bodies" in rows(d)[0])
    click_in_row(d, "#requests-table", "ui-bodies", "Details")
    wait(d, lambda d: find(d, "#requests-detail").is_displayed())
    assert not d.find_elements("css selector", "#requests-detail-request-body")
    find(d, "#logout").click()
    wait(d, lambda d: find(d, "#login").is_displayed())


def test_the_team_filter_lists_teams_by_name_and_the_details_show_the_team(
        server: InferdProcess, browser: Any) -> None:
    from selenium.webdriver.support.ui import Select

    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    team = httpx.post(server.url + "/admin/v1/teams", json={"name": "ui-team"}, headers=admin,
                      timeout=60)
    assert team.status_code == 201, team.text
    team_id = team.json()["id"]
    made = httpx.post(server.url + "/admin/v1/keys", json={"name": "ui-teamed",
                                                           "team_id": team_id},
                      headers=admin, timeout=60)
    assert made.status_code == 201, made.text
    teamed = made.json()
    assert chat(server.url, teamed["key"], "ui-team-1") == 200
    assert chat(server.url, ADMIN_KEY, "ui-no-team") == 200

    d = browser
    login(d, server.url, ADMIN_KEY)
    page(d, server.url, "requests")
    wait(d, lambda d: "ui-team" in find(d, "#requests-filter [name=team]").text)
    assert find(d, "#requests-filter [name=team]").tag_name == "select"
    d.execute_script("document.querySelector('#requests-filter').reset()")
    assert find(d, "#requests-filter [name=user]").is_displayed()
    Select(find(d, "#requests-filter [name=team]")).select_by_value(str(team_id))
    find(d, "#requests-filter button[type=submit]").click()
    wait(d, lambda d: rows(d) and all("ui-teamed" in r for r in rows(d)))
    click_in_row(d, "#requests-table", "ui-teamed", "Details")
    wait(d, lambda d: find(d, "#requests-detail").is_displayed())
    assert f"ui-team #{team_id}" in find(d, "#requests-detail").text
    find(d, "#logout").click()
    wait(d, lambda d: find(d, "#login").is_displayed())

    login(d, server.url, teamed["key"])
    page(d, server.url, "requests")
    wait(d, lambda d: len(rows(d)) >= 1 and "ui-teamed" in rows(d)[0])
    assert not find(d, "#requests-filter [name=team]").is_displayed()
    assert not find(d, "#requests-filter [name=user]").is_displayed()
    find(d, "#logout").click()
    wait(d, lambda d: find(d, "#login").is_displayed())
