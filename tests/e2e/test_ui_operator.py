"""The web UI as an operator walks it (models in one form, rows that keep focus, feedback by
the row, keys, jobs, playground), in Debian's headless Chromium against ``inferd serve``."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_ui import (
    ADMIN_KEY,
    CHAT,
    _by,
    _upstream,
    click_in_row,
    fill,
    find,
    sdk,
    select,
    shot,
)
from tests.e2e.ui_browser import HAVE_BROWSER, chromium, console_errors, login, page, wait
from tests.helpers import InferdProcess

pytestmark = pytest.mark.skipif(
    not HAVE_BROWSER and os.environ.get("INFERD_REQUIRE_SERVICES") != "1",
    reason="Debian's chromium and chromium-driver are not installed (make test installs them)",
)

DEAD = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    env = {
        "INFERD_ADMIN_KEY": ADMIN_KEY,
        "INFERD_HEALTH_CHECK_INTERVAL": "0.5",
        "INFERD_REPLICA_COOLDOWN_BASE": "0.5",
        "INFERD_REPLICA_COOLDOWN_MAX": "1",
    }
    with InferdProcess(tmp_path_factory.mktemp("ui-operator"), env=env) as process:
        yield process


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    with _upstream(tmp_path_factory.mktemp("ui-upstream")) as process:
        yield process


@pytest.fixture(scope="module")
def d(server: InferdProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    driver = chromium(tmp_path_factory.mktemp("chromium"), 1440, 900)
    login(driver, server.url, ADMIN_KEY)
    yield driver
    errors = console_errors(driver)
    driver.quit()
    assert not [e for e in errors if "Failed to load resource" not in e], errors


def http(server: InferdProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=ADMIN, timeout=60)


def row(d: Any, table: str, text: str) -> Any:
    return next((r for r in d.find_elements(_by(), f"{table} tbody tr") if text in r.text), None)


def cell(d: Any, table: str, text: str, label: str) -> str | None:
    """The text of the cell ``label`` in the row of ``table`` holding ``text`` (one script
    call: rows are redrawn while we look)."""
    value = d.execute_script(
        """
        const [table, text, label] = arguments;
        for (const tr of document.querySelectorAll(table + ' tbody tr')) {
          if (!tr.textContent.includes(text)) continue;
          const td = tr.querySelector(`td[data-label="${label}"]`);
          return td ? td.textContent : null;
        }
        return null;""",
        table,
        text,
        label,
    )
    return None if value is None else str(value)


def test_model_and_replica_are_added_in_one_form_tested_before_saving(
    server: InferdProcess, upstream: InferdProcess, d: Any, tmp_path: Path
) -> None:
    page(d, server.url, "models")
    wait(d, lambda d: CHAT in find(d, "#models-table").text)
    find(d, "#model-box summary").click()
    fill(d, "#model-form [name=name]", "one-step")
    # A URL nothing answers: the test says so, and Save becomes "Save anyway".
    fill(d, "#model-form [name=url]", DEAD)
    find(d, "#model-form [data-test]").click()
    wait(d, lambda d: "Connection failed" in find(d, "#model-test").text)
    find(d, "#model-form button[type=submit]").click()
    wait(d, lambda d: find(d, "#model-form button[type=submit]").text == "Save anyway")
    assert "one-step" not in find(d, "#models-table").text

    # The real upstream: Test lists its models, one is picked, options are set, then saved.
    fill(d, "#model-form [name=url]", upstream.url + "/v1")
    assert find(d, "#model-form button[type=submit]").text == "Save model"
    find(d, "#model-form [data-test]").click()
    wait(d, lambda d: "Connected" in find(d, "#model-test").text)
    select(d, "#model-form [name=upstream_pick]", "echo")
    assert find(d, "#model-form [name=upstream_model]").get_attribute("value") == "echo"
    find(d, "#model-form [data-cap=chat]").click()
    fill(d, "#model-form [name=health_url]", upstream.url + "/health")
    fill(d, "#model-form [name=weight]", "2")
    shot(d, tmp_path, "models-add")
    find(d, "#model-form button[type=submit]").click()
    wait(d, lambda d: "Saved" in find(d, "#model-say").text)
    wait(
        d,
        lambda d: (
            (r := row(d, "#replicas-table", upstream.url)) and r.find_elements(_by(), ".badge.ok")
        ),
    )
    with http(server) as client:
        stored = client.get("/admin/v1/models/one-step").json()
    replica = stored["replicas"][0]
    assert replica["upstream_model"] == "echo" and replica["weight"] == 2
    assert replica["options"]["capabilities"] == ["chat"]
    assert replica["options"]["health_url"].startswith(upstream.url)

    # Its requests, errors and latency show in its row.
    answer = sdk(server, ADMIN_KEY).chat.completions.create(
        model="one-step", max_tokens=4, messages=[{"role": "user", "content": "count me"}]
    )
    assert answer.choices[0].message.content == "count me"
    wait(d, lambda d: cell(d, "#replicas-table", upstream.url, "requests") == "1")
    assert cell(d, "#replicas-table", upstream.url, "errors") == "0"
    assert (cell(d, "#replicas-table", upstream.url, "latency ms") or "—") != "—"

    # A model of this process is not offered for removal; a remote one is, with a confirmation.
    local = row(d, "#models-table", CHAT)
    assert "Remove" not in [b.text for b in local.find_elements(_by(), "button")]
    click_in_row(d, "#models-table", "one-step", "Remove")
    wait(
        d,
        lambda d: (
            find(d, "[aria-label='Confirm remove model one-step']") == d.switch_to.active_element
        ),
    )
    click_in_row(d, "#models-table", "one-step", "Keep")
    wait(
        d,
        lambda d: (
            (r := row(d, "#models-table", "one-step"))
            and "Remove" in [b.text for b in r.find_elements(_by(), "button")]
        ),
    )
    click_in_row(d, "#models-table", "one-step", "Remove")
    click_in_row(d, "#models-table", "one-step", "Confirm remove")
    wait(d, lambda d: "one-step" not in find(d, "#models-table").text)


def test_a_dead_replica_enabled_again_is_checking_then_unhealthy_and_focus_stays(
    server: InferdProcess, d: Any
) -> None:
    with http(server) as client:
        created = client.post(
            "/admin/v1/models",
            json={"name": "dead-end", "replicas": [{"kind": "http", "url": DEAD}]},
        )
        assert created.status_code == 201, created.text
    page(d, server.url, "models")
    wait(
        d,
        lambda d: (
            (r := row(d, "#replicas-table", "dead-end")) and r.find_elements(_by(), ".badge.bad")
        ),
    )

    # The page refreshes every 2 s and this row changes at every probe (its last error's
    # time): a focused button of it stays focused across refreshes.
    label = "Edit replica"
    button = wait(
        d,
        lambda d: next(
            (
                b
                for b in d.find_elements(_by(), "#replicas-table button[data-action=Edit]")
                if "dead-end" in (b.get_attribute("aria-label") or "")
            ),
            None,
        ),
    )
    name = button.get_attribute("aria-label")
    assert name.startswith(label)
    d.execute_script("arguments[0].focus()", button)
    loads = int(find(d, "#replicas-table").get_attribute("data-loads"))
    wait(d, lambda d: int(find(d, "#replicas-table").get_attribute("data-loads")) >= loads + 2)
    assert d.switch_to.active_element.get_attribute("aria-label") == name

    # Disabled, then enabled: "checking" until the first probe answers, never "healthy".
    click_in_row(d, "#replicas-table", "dead-end", "Disable")
    wait(d, lambda d: cell(d, "#replicas-table", "dead-end", "health") == "disabled")
    d.execute_script("""
        window.healthSeen = [];
        new MutationObserver(() => {
          for (const tr of document.querySelectorAll('#replicas-table tbody tr')) {
            if (!tr.textContent.includes('dead-end')) continue;
            const td = tr.querySelector('td[data-label=health] .badge');
            if (td) window.healthSeen.push(td.textContent);
          }
        }).observe(document.querySelector('#replicas-table tbody'),
                   {childList: true, subtree: true, characterData: true});""")
    click_in_row(d, "#replicas-table", "dead-end", "Enable")
    wait(d, lambda d: "unhealthy" in d.execute_script("return window.healthSeen"))
    seen = d.execute_script("return window.healthSeen")
    assert "healthy" not in seen and set(seen) <= {"checking", "unhealthy", "disabled"}, seen
    with http(server) as client:
        view = client.get("/admin/v1/models/dead-end").json()["replicas"][0]
    assert view["checking"] is False and view["healthy"] is False


def test_a_refused_row_action_is_said_in_its_row(server: InferdProcess, d: Any) -> None:
    page(d, server.url, "models")
    wait(d, lambda d: CHAT in find(d, "#models-table").text)
    started = threading.Event()
    done = threading.Event()

    def hold() -> None:  # a stream left unread keeps the model busy
        with (
            httpx.Client(timeout=120) as client,
            client.stream(
                "POST",
                server.url + "/v1/chat/completions",
                headers=ADMIN,
                json={
                    "model": CHAT,
                    "stream": True,
                    "max_tokens": 2000,
                    # the end-of-text tokens banned: it runs until it is closed
                    "logit_bias": {"0": -100, "1": -100, "2": -100},
                    "messages": [{"role": "user", "content": "Tell a long story."}],
                },
            ) as r,
        ):
            assert r.status_code == 200
            lines = r.iter_lines()  # kept: a dropped iterator closes the stream
            for line in lines:  # until it generates (the first chunk names the role)
                if '"content"' in line:
                    break
            started.set()
            done.wait(120)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert started.wait(120)
        with http(server) as client:  # the model is busy: unloading it is refused
            engines = client.get("/admin/v1/engines").json()["data"]
        assert next(e for e in engines if e["id"] == CHAT)["active_requests"] == 1, engines
        click_in_row(d, "#models-table", CHAT, "Unload")
        wait(d, lambda d: "requests running" in (cell(d, "#models-table", CHAT, "") or ""))
        assert not find(d, "#notice").is_displayed()
    finally:
        done.set()
        holder.join()
    # The next action on the row clears the message.
    click_in_row(d, "#models-table", CHAT, "Test")
    wait(d, lambda d: "ok," in find(d, f".result[data-model='{CHAT}']").text)
    assert "requests running" not in (cell(d, "#models-table", CHAT, "") or "")


def test_key_allow_list_is_picked_and_the_secret_leaves_with_its_dialog(
    server: InferdProcess, d: Any, tmp_path: Path
) -> None:
    page(d, server.url, "keys")
    wait(d, lambda d: d.find_elements(_by(), f"#key-model-list [data-model='{CHAT}']"))
    assert not find(d, "#key-model-list").is_displayed()  # "All models" is ticked
    fill(d, "#key-form [name=name]", "picked")
    find(d, "#key-all-models").click()
    find(d, f"#key-model-list [data-model='{CHAT}']").click()
    find(d, "#key-form button[type=submit]").click()
    wait(d, lambda d: find(d, "#key-created").is_displayed())
    secret = find(d, "#key-secret").text
    assert secret.startswith("sk-")
    shot(d, tmp_path, "keys-created")
    with http(server) as client:
        keys = client.get("/admin/v1/keys?limit=1000").json()["data"]
    assert next(k for k in keys if k["name"] == "picked")["models"] == [CHAT]
    find(d, "#key-close").click()
    wait(d, lambda d: not find(d, "#key-created").is_displayed())
    assert d.execute_script("return document.querySelector('#key-secret').textContent") == ""
    assert d.execute_script("return document.body.innerText").count(secret) == 0
    # "Saved." is said by the form, and goes away by itself.
    click_in_row(d, "#keys-table", "picked", "Edit")
    wait(d, lambda d: find(d, "#key-form [name=name]").get_attribute("value") == "picked")
    fill(d, "#key-form [name=rpm]", "30")
    find(d, "#key-form button[type=submit]").click()
    wait(d, lambda d: "Saved" in find(d, "#key-say").text)
    wait(d, lambda d: not find(d, "#key-say").is_displayed())
    # Row buttons say which key they act on.
    assert d.find_elements(_by(), "#keys-table button[aria-label='Edit key picked']")


def test_jobs_cancel_filter_and_wide_batches(server: InferdProcess, d: Any) -> None:
    with http(server) as client:
        job = client.post(
            "/v1/jobs",
            json={
                "endpoint": "/v1/chat/completions",
                "body": {
                    "model": CHAT,
                    "max_tokens": 2000,
                    "messages": [{"role": "user", "content": "Count to a thousand."}],
                    # its end-of-generation tokens banned: still running when the page offers
                    # Cancel, whatever the model would answer
                    "logit_bias": {"0": -100, "2": -100, "4": -100},
                },
            },
        ).json()
    client_sdk = sdk(server, ADMIN_KEY)
    lines = "\n".join(
        json.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "all-minilm-l6-v2", "input": "x"},
            }
        )
        for i in range(2)
    )
    upload = client_sdk.files.create(file=("in.jsonl", lines.encode()), purpose="batch")
    client_sdk.batches.create(
        input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    page(d, server.url, f"jobs/{job['id']}")
    wait(d, lambda d: job["id"] in find(d, "#job-detail").text)
    wait(d, lambda d: "Cancel job" in find(d, "#job-detail").text)
    find(d, "#job-detail button.danger").click()
    wait(d, lambda d: "cancelled" in find(d, "#job-detail h2").text)
    # The result box wraps its JSON: nothing is cut off sideways.
    assert d.execute_script(
        "return [...document.querySelectorAll('#job-detail pre')]"
        ".every((p) => p.scrollWidth <= p.clientWidth)"
    )
    # The list says so too, without a reload.
    wait(d, lambda d: cell(d, "#jobs-table", job["id"], "status") == "cancelled")

    # A part of a model's name filters.
    fill(d, "#jobs-filter [name=model]", "smollm2")
    find(d, "#jobs-filter button").click()
    wait(d, lambda d: f"Jobs of {CHAT}" in find(d, "#jobs-say").text)
    wait(d, lambda d: job["id"] in find(d, "#jobs-table").text)
    fill(d, "#jobs-filter [name=model]", "no-such-thing")
    find(d, "#jobs-filter button").click()
    wait(d, lambda d: "No model name holds" in find(d, "#jobs-say").text)

    # The batches table scrolls inside the page: the page is no wider than the window.
    wait(d, lambda d: "batch_" in find(d, "#batches-table").text)
    assert d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")


def test_playground_tabs_ctrl_enter_and_stop(server: InferdProcess, d: Any) -> None:
    from selenium.webdriver.common.keys import Keys

    page(d, server.url, "playground")
    wait(d, lambda d: d.find_elements(_by(), "#chat-model option"))
    assert len(d.find_elements(_by(), "[role=tab][aria-selected=true]")) == 1
    find(d, "#chat-clear").click()
    select(d, "#chat-model", CHAT)
    select(d, "#chat-compare", "")
    fill(d, "#chat-max-tokens", "4")
    field = find(d, "#chat-input")
    field.send_keys("Say hi.")
    field.send_keys(Keys.CONTROL, Keys.ENTER)
    wait(
        d, lambda d: [u for u in d.find_elements(_by(), ".chat-col .usage") if u.text], timeout=120
    )
    assert find(d, ".msg.user").text == "Say hi."

    # Stop ends a running stream: the answer so far stays, marked stopped.
    # Greedy, and a prompt the bundled model answers at length (past 600 tokens): the stream
    # is still running when Stop is clicked, on every run.
    find(d, "#chat-clear").click()
    fill(d, "#chat-max-tokens", "2000")
    fill(d, "#chat-temperature", "0")
    fill(d, "#chat-input", "Write a very long story about a dragon and a knight.")
    find(d, "#chat-send").click()
    wait(
        d,
        lambda d: (
            find(d, "#chat-stop").is_displayed() and d.find_elements(_by(), ".msg.assistant .tok")
        ),
        timeout=120,
    )
    find(d, "#chat-stop").click()
    wait(
        d,
        lambda d: (
            (u := d.find_elements(_by(), ".chat-col .usage")) and u[0].text.startswith("stopped")
        ),
    )
    assert not find(d, "#chat-stop").is_displayed()
    assert find(d, "#chat-send").is_enabled()


def test_the_old_script_is_not_served(server: InferdProcess) -> None:
    assert httpx.get(server.url + "/ui/static/app.js").status_code == 404
    assert httpx.get(server.url + "/ui/static/js/main.js").status_code == 200
