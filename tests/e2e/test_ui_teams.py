"""The Teams & users page in Chromium: create a team (with a money budget) and a user, make the
user a member, give them a key from the API Keys page (picking the team and user), see the
team's usage in the monitoring page's totals, disable the user; the ``openai`` SDK sees the
key work and then stop."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.test_ui import click_in_row, fill, find, select, shot
from tests.e2e.ui_browser import HAVE_BROWSER, chromium, console_errors, login, page, wait
from tests.helpers import InferdProcess

ADMIN_KEY = "sk-admin-ui-teams-0123456789abcdef"

pytestmark = pytest.mark.skipif(
    not HAVE_BROWSER and os.environ.get("INFERD_REQUIRE_SERVICES") != "1",
    reason="Debian's chromium and chromium-driver are not installed (make test installs them)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    env = {"INFERD_ADMIN_KEY": ADMIN_KEY,
           "INFERD_MODELS": json.dumps([{"name": "echo", "kind": "echo"}])}
    with InferdProcess(tmp_path_factory.mktemp("ui-teams"), "--no-bundled",
                       env=env) as process:
        yield process


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    driver = chromium(tmp_path_factory.mktemp("chromium"), 1280, 1000)
    yield driver
    errors = console_errors(driver)
    driver.quit()
    assert not [e for e in errors if "Failed to load resource" not in e], errors


def _chat(server: InferdProcess, key: str) -> str:
    with openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0,
                       timeout=60) as client:
        answer = client.chat.completions.create(
            model="echo", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        return answer.choices[0].message.content or ""


def _option(d: Any, css: str, text: str) -> str:
    """The value of the option of the select at ``css`` that shows ``text``."""
    return str(next(o.get_attribute("value") for o in
                    d.find_elements("css selector", f"{css} option") if o.text == text))


def test_a_team_a_user_and_their_key_from_the_ui(server: InferdProcess, browser: Any,
                                                 tmp_path: Path) -> None:
    d = browser
    login(d, server.url, ADMIN_KEY)
    page(d, server.url, "teams")
    wait(d, lambda d: find(d, "#page-teams").is_displayed())
    d.execute_script("document.querySelector('#team-box').open = true;"
                     "document.querySelector('#user-box').open = true;")
    fill(d, "#team-form [name=name]", "research")
    fill(d, "#team-form [name=models]", "echo")
    fill(d, "#team-form [name=rpm]", "50")
    find(d, "#team-form button[type=submit]").click()
    wait(d, lambda d: "research" in find(d, "#teams-table").text)
    assert "50 req/min" in find(d, "#teams-table").text
    click_in_row(d, "#teams-table", "research", "Edit")
    wait(d, lambda d: find(d, "#team-form [name=rpm]").get_attribute("value") == "50")
    fill(d, "#team-form [name=rpm]", "70")
    find(d, "#team-form button[type=submit]").click()
    wait(d, lambda d: "70 req/min" in find(d, "#teams-table").text)
    click_in_row(d, "#teams-table", "research", "Edit")
    wait(d, lambda d: find(d, "#team-form [name=rpm]").get_attribute("value") == "70")
    fill(d, "#team-form [name=max_budget]", "5")
    fill(d, "#team-form [name=budget_alert]", "90")
    fill(d, "#team-form [name=queue_weight]", "3")
    find(d, "#team-form button[type=submit]").click()
    wait(d, lambda d: "budget 5 per total (alert at 90%)" in find(d, "#teams-table").text)
    assert "queue weight 3" in find(d, "#teams-table").text
    assert find(d, "#team-form-title").text == "Create a team"
    fill(d, "#user-form [name=name]", "erin")
    fill(d, "#user-form [name=email]", "erin@example.org")
    find(d, "#user-form button[type=submit]").click()
    wait(d, lambda d: "erin@example.org" in find(d, "#users-table").text)
    click_in_row(d, "#teams-table", "research", "Members")
    wait(d, lambda d: find(d, "#members-box").is_displayed())
    select(d, "#member-user", find(d, "#member-user option").get_attribute("value"))
    select(d, "#member-form [name=role]", "owner")
    find(d, "#member-form button[type=submit]").click()
    wait(d, lambda d: "owner" in find(d, "#members-table").text
         and "erin" in find(d, "#members-table").text)
    shot(d, tmp_path, "teams")

    page(d, server.url, "keys")
    wait(d, lambda d: find(d, "#page-keys").is_displayed())
    fill(d, "#key-name", "erin-key")
    wait(d, lambda d: len(d.find_elements("css selector", "#key-team option")) > 1)
    select(d, "#key-team", _option(d, "#key-team", "research"))
    select(d, "#key-user", _option(d, "#key-user", "erin"))
    assert find(d, "#key-form [name=team]").get_attribute("value") == "research"
    fill(d, "#key-form [name=max_budget]", "2")
    fill(d, "#key-form [name=queue_weight]", "2.5")
    find(d, "#key-form button[type=submit]").click()
    wait(d, lambda d: find(d, "#key-created").is_displayed())
    secret = find(d, "#key-secret").text
    find(d, "#key-close").click()
    wait(d, lambda d: "erin / research" in find(d, "#keys-table").text)
    assert "spent 0 / 2 per total" in find(d, "#keys-table").text
    made = httpx.get(server.url + "/admin/v1/keys", params={"name": "erin-key"}, timeout=30,
                     headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()["data"]
    assert [k["queue_weight"] for k in made] == [2.5]
    assert _chat(server, secret)
    # the usage totals of the monitoring page, per team
    page(d, server.url, "monitoring")
    wait(d, lambda d: find(d, "#page-monitoring").is_displayed())
    select(d, "#totals-group", "team")
    wait(d, lambda d: "research" in find(d, "#totals-table").text)

    page(d, server.url, "teams")
    wait(d, lambda d: "erin" in find(d, "#users-table").text)
    click_in_row(d, "#users-table", "erin@example.org", "Disable")
    wait(d, lambda d: "disabled" in find(d, "#users-table").text)
    with pytest.raises(openai.AuthenticationError):
        _chat(server, secret)
    page(d, server.url, "keys")
    wait(d, lambda d: any("erin-key" in r.text and "user disabled" in r.text
                          for r in d.find_elements("css selector", "#keys-table tbody tr")))
    page(d, server.url, "teams")
    wait(d, lambda d: "research" in find(d, "#teams-table").text)
    # a team with keys is not deleted: the row says why
    click_in_row(d, "#teams-table", "research", "Delete")
    click_in_row(d, "#teams-table", "research", "Confirm delete")
    wait(d, lambda d: "still has 1 API key" in find(d, "#teams-table").text)
