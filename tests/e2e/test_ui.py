"""The web UI in a real browser (Debian's headless Chromium driven by Selenium) against a
running ``inferd serve``, with the official ``openai`` SDK as the other client."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.e2e.ui_browser import HAVE_BROWSER, chromium, console_errors, login, page, wait
from tests.helpers import InferdProcess

ADMIN_KEY = "sk-admin-ui-test-0123456789abcdef"
CHAT = "smollm2-135m-instruct"

# In CI (INFERD_REQUIRE_SERVICES=1) a missing browser fails the test instead of skipping it.
pytestmark = pytest.mark.skipif(
    not HAVE_BROWSER and os.environ.get("INFERD_REQUIRE_SERVICES") != "1",
    reason="Debian's chromium and chromium-driver are not installed (make test installs them)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    env = {"INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_HEALTH_CHECK_INTERVAL": "0.5",
           "INFERD_REPLICA_COOLDOWN_BASE": "0.5", "INFERD_REPLICA_COOLDOWN_MAX": "1"}
    with InferdProcess(tmp_path_factory.mktemp("ui"), env=env) as process:
        yield process


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    driver = chromium(tmp_path_factory.mktemp("chromium"), 1280, 900)
    yield driver
    errors = console_errors(driver)
    driver.quit()
    # Refused requests show in the console as failed loads; a script error is a bug.
    assert not [e for e in errors if "Failed to load resource" not in e], errors


@pytest.fixture
def admin(server: InferdProcess, browser: Any) -> Any:
    stored = browser.execute_script("return sessionStorage.getItem('inferd.key')")
    if stored not in (None, ADMIN_KEY):
        _logout(browser)
    login(browser, server.url, ADMIN_KEY)
    return browser


def _by(kind: str = "css") -> Any:
    from selenium.webdriver.common.by import By

    return {"css": By.CSS_SELECTOR, "id": By.ID}[kind]


def find(d: Any, css: str) -> Any:
    return d.find_element(_by(), css)


def fill(d: Any, css: str, value: str) -> None:
    field = find(d, css)
    field.clear()
    field.send_keys(value)


def select(d: Any, css: str, value: str) -> None:
    """Chooses ``value`` in the ``<select>`` at ``css``. Pages redraw their option lists as data
    arrives (keeping the chosen value), so an option can go stale between finding and clicking
    it: the choice is made again until the select shows it."""
    from selenium.webdriver.support.ui import Select

    def attempt(d: Any) -> bool:
        element = find(d, css)
        values = [o.get_attribute("value") for o in element.find_elements(_by(), "option")]
        if value not in values:
            return False
        Select(element).select_by_index(values.index(value))
        return bool(find(d, css).get_attribute("value") == value)

    wait(d, attempt)


def click_in_row(d: Any, table: str, text: str, label: str) -> None:
    """Clicks the button ``label`` in the row of ``table`` holding ``text`` (tables are
    redrawn as data arrives, so a stale row is looked up again)."""
    def attempt(d: Any) -> bool:
        for row in d.find_elements(_by(), f"{table} tbody tr"):
            if text in row.text:
                for b in row.find_elements(_by(), "button"):
                    if b.text == label:
                        b.click()
                        return True
        return False
    wait(d, attempt)


def shot(d: Any, tmp_path: Path, name: str) -> None:
    """Every test leaves a screenshot of its page (and copies it where a reviewer asked)."""
    path = tmp_path / f"{name}.png"
    d.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    folder = os.environ.get("INFERD_UI_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        d.save_screenshot(str(Path(folder) / f"{name}.png"))


def _logout(d: Any) -> None:
    find(d, "#logout").click()
    wait(d, lambda d: find(d, "#login").is_displayed())


def sdk(server: InferdProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=120)


def test_login_refuses_bad_keys_and_logs_out(server: InferdProcess, browser: Any,
                                             tmp_path: Path) -> None:
    d = browser
    page(d, server.url, "keys")
    wait(d, lambda d: find(d, "#login").is_displayed())
    assert not find(d, "#page-keys").is_displayed()
    fill(d, "#login-key", "sk-not-a-key-at-all-000000")
    find(d, "#login-form button").click()
    wait(d, lambda d: "refused" in find(d, "#login-say").text)

    login(d, server.url, ADMIN_KEY)
    page(d, server.url, "keys")
    wait(d, lambda d: "INFERD_ADMIN_KEY" in find(d, "#keys-table").text)
    assert d.execute_script("return sessionStorage.getItem('inferd.key')") == ADMIN_KEY
    shot(d, tmp_path, "keys")

    _logout(d)
    assert d.execute_script("return sessionStorage.getItem('inferd.key')") is None
    page(d, server.url, "monitoring")
    wait(d, lambda d: find(d, "#login").is_displayed())
    assert not find(d, "#page-monitoring").is_displayed()


def test_key_made_in_the_ui_works_in_the_sdk_with_its_limits(
        server: InferdProcess, admin: Any, tmp_path: Path) -> None:
    d = admin
    page(d, server.url, "keys")
    wait(d, lambda d: "INFERD_ADMIN_KEY" in find(d, "#keys-table").text)
    fill(d, "#key-form [name=name]", "ui-made")
    fill(d, "#key-form [name=owner]", "alice")
    fill(d, "#key-form [name=team]", "research")
    find(d, "#key-all-models").click()  # the allow-list: picked from the models served
    find(d, f"#key-model-list [data-model='{CHAT}']").click()
    fill(d, "#key-form [name=tpm]", "100000")
    fill(d, "#key-form [name=token_budget]", "50000")
    select(d, "#key-form [name=budget_period]", "month")
    find(d, "#key-form button[type=submit]").click()
    wait(d, lambda d: find(d, "#key-secret").text.startswith("sk-"))
    secret = find(d, "#key-secret").text
    find(d, "#key-close").click()
    # The row's text is read in the wait: the table is redrawn as data arrives.
    row = wait(d, lambda d: next((r.text for r in d.find_elements(_by(), "#keys-table tbody tr")
                                  if "ui-made" in r.text), None))
    assert "alice / research" in row and "0 / 50,000 per month" in row

    answer = sdk(server, secret).chat.completions.create(
        model=CHAT, max_tokens=4, messages=[{"role": "user", "content": "Hi"}])
    assert answer.usage is not None
    with pytest.raises(openai.PermissionDeniedError):  # the key's model allow-list
        sdk(server, secret).embeddings.create(model="all-minilm-l6-v2", input="x")

    # Spend against budget shows the tokens just used; edit the key down to 1 request/min.
    page(d, server.url, "home")
    page(d, server.url, "keys")
    spent = f"{answer.usage.total_tokens} / 50,000 per month"
    wait(d, lambda d: any("ui-made" in r.text and spent in r.text
                          for r in d.find_elements(_by(), "#keys-table tbody tr")))
    click_in_row(d, "#keys-table", "ui-made", "Edit")
    wait(d, lambda d: find(d, "#key-form [name=name]").get_attribute("value") == "ui-made")
    fill(d, "#key-form [name=rpm]", "1")
    find(d, "#key-form button[type=submit]").click()
    wait(d, lambda d: "Saved" in find(d, "#key-say").text)
    with pytest.raises(openai.RateLimitError):
        for _ in range(3):
            sdk(server, secret).chat.completions.create(
                model=CHAT, max_tokens=1, messages=[{"role": "user", "content": "Hi"}])

    # A user key sees the Playground, its jobs and its own usage, not the admin pages.
    _logout(d)
    login(d, server.url, secret)
    wait(d, lambda d: find(d, "#who").text == "signed in as ui-made · user key")
    assert not find(d, "nav a[data-page=keys]").is_displayed()
    assert not find(d, "nav a[data-page=models]").is_displayed()
    page(d, server.url, "monitoring")
    wait(d, lambda d: find(d, "#mon-charts figure"))
    requests = find(d, "#mon-charts").get_attribute("data-requests")
    assert int(requests) >= 2  # its own requests only (the admin made others)
    shot(d, tmp_path, "monitoring-user")
    _logout(d)
    login(d, server.url, ADMIN_KEY)

    # Disable, then delete (two steps)
    page(d, server.url, "keys")
    click_in_row(d, "#keys-table", "ui-made", "Disable")
    wait(d, lambda d: any("ui-made" in r.text and "disabled" in r.text
                          for r in d.find_elements(_by(), "#keys-table tbody tr")))
    with pytest.raises(openai.AuthenticationError):
        sdk(server, secret).models.list()
    click_in_row(d, "#keys-table", "ui-made", "Delete")
    click_in_row(d, "#keys-table", "ui-made", "Confirm delete")
    wait(d, lambda d: "ui-made" not in find(d, "#keys-table").text)


def test_the_keys_page_loads_more_and_searches(server: InferdProcess, admin: Any) -> None:
    d = admin
    with httpx.Client(base_url=server.url, timeout=30,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
        for i in range(105):  # more than a page (100)
            assert client.post("/admin/v1/keys", json={"name": f"paged-{i}"}).status_code == 201

    def rows(d: Any) -> list[str]:
        return [r.text for r in d.find_elements(_by(), "#keys-table tbody tr")]

    page(d, server.url, "keys")
    wait(d, lambda d: len(rows(d)) == 100 and find(d, "#keys-more").is_displayed())
    assert not any("paged-104" in r for r in rows(d))
    find(d, "#keys-more").click()
    wait(d, lambda d: any("paged-104" in r for r in rows(d)))
    wait(d, lambda d: not find(d, "#keys-more").is_displayed())
    fill(d, "#key-search [name=search]", "paged-10")
    find(d, "#key-search button[type=submit]").click()
    wait(d, lambda d: sorted(r.split()[0] for r in rows(d)) == sorted(
        ["paged-10"] + [f"paged-{i}" for i in range(100, 105)]))
    fill(d, "#key-search [name=search]", "")
    find(d, "#key-search button[type=submit]").click()
    wait(d, lambda d: len(rows(d)) == 100)


def test_prompt_made_in_the_ui_is_used_by_the_sdk(server: InferdProcess, admin: Any,
                                                   tmp_path: Path) -> None:
    d = admin
    page(d, server.url, "prompts")
    wait(d, lambda d: find(d, "#page-prompts").is_displayed())
    fill(d, "#prompt-form [name=name]", "ui-prompt")
    fill(d, "#prompt-form [name=instructions]", "Answer as a {{role}}.")
    fill(d, "#prompt-form [name=input]", "Name a {{thing}}.")
    find(d, "#prompt-form button[type=submit]").click()
    wait(d, lambda d: "Created pmpt_" in find(d, "#prompt-say").text)
    prompt_id = find(d, "#prompt-say").text.split()[1].rstrip(".")
    row = wait(d, lambda d: next((r.text for r in d.find_elements(
        _by(), "#prompts-table tbody tr") if "ui-prompt" in r.text), None))
    assert "role, thing" in row and prompt_id in row
    client = sdk(server, ADMIN_KEY)  # the prompt is the admin key's (no key id given)
    counted = client.responses.input_tokens.count(model=CHAT, extra_body={"prompt": {
        "id": prompt_id, "variables": {"role": "poet", "thing": "colour"}}})
    # a new version from the page: the latest from then on, with its own variables
    click_in_row(d, "#prompts-table", "ui-prompt", "New version")
    wait(d, lambda d: find(d, "#prompt-form [name=name]").get_attribute("disabled"))
    fill(d, "#prompt-form [name=input]", "Name a {{thing}} and a {{place}} for a long list.")
    find(d, "#prompt-form button[type=submit]").click()
    wait(d, lambda d: "Version 2 of ui-prompt" in find(d, "#prompt-say").text)
    wait(d, lambda d: any("ui-prompt" in r.text and "role, thing, place" in r.text
                          for r in d.find_elements(_by(), "#prompts-table tbody tr")))
    shot(d, tmp_path, "prompts")
    longer = client.responses.input_tokens.count(model=CHAT, extra_body={"prompt": {
        "id": prompt_id, "variables": {"role": "poet", "thing": "colour", "place": "sea"}}})
    assert longer.input_tokens > counted.input_tokens
    with pytest.raises(openai.BadRequestError):  # version 2 uses {{place}}
        client.responses.input_tokens.count(model=CHAT, extra_body={"prompt": {
            "id": prompt_id, "variables": {"role": "poet", "thing": "colour"}}})
    click_in_row(d, "#prompts-table", "ui-prompt", "Delete")
    click_in_row(d, "#prompts-table", "ui-prompt", "Confirm delete")
    wait(d, lambda d: "ui-prompt" not in find(d, "#prompts-table").text)


def _upstream(tmp: Path) -> InferdProcess:
    config = tmp / "upstream.yaml"
    config.write_text(yaml.safe_dump({"bundled_models": False, "models": [
        {"name": "echo", "kind": "echo", "echo_delay": 0.02}]}))
    return InferdProcess(tmp / "upstream", "--config", str(config), "--no-bundled",
                         env={"INFERD_AUTH": "off"})


def _replica_row(d: Any, url: str) -> Any:
    return next((r for r in d.find_elements(_by(), "#replicas-table tbody tr") if url in r.text),
                None)


def test_http_replica_added_in_the_ui_turns_unhealthy_when_its_server_stops(
        server: InferdProcess, admin: Any, tmp_path: Path) -> None:
    d = admin
    upstream = _upstream(tmp_path).start()
    try:
        page(d, server.url, "models")
        wait(d, lambda d: CHAT in find(d, "#models-table").text)
        find(d, "#model-box summary").click()
        fill(d, "#model-form [name=name]", "remote-echo")
        fill(d, "#model-form [name=aliases]", "echo-alias")
        select(d, "#model-form [name=routing]", "weighted")
        fill(d, "#model-form [name=price_input]", "1.5")
        fill(d, "#model-form [name=price_output]", "3")
        find(d, "#model-form button[type=submit]").click()
        wait(d, lambda d: "remote-echo" in find(d, "#models-table").text)
        # its routing, set in the form (the other models show the default's, "prefix")
        wait(d, lambda d: "weighted" in find(d, "#models-table").text)
        # and its price per million tokens, input and output
        wait(d, lambda d: "1.5 · 3" in find(d, "#models-table").text)

        find(d, "#replica-box summary").click()
        select(d, "#replica-model", "remote-echo")
        fill(d, "#replica-form [name=url]", upstream.url + "/v1")
        fill(d, "#replica-form [name=upstream_model]", "echo")
        find(d, "#replica-form button[type=submit]").click()
        wait(d, lambda d: "Saved" in find(d, "#replica-say").text)
        # The page refreshes replica state by itself; no reload needed.
        wait(d, lambda d: (row := _replica_row(d, upstream.url))
             and row.find_elements(_by(), ".badge.ok"))
        # the load the upstream (an inferd) publishes on /metrics, read by the gateway
        wait(d, lambda d: (row := _replica_row(d, upstream.url))
             and "0 running · 0 waiting" in row.text)

        click_in_row(d, "#models-table", "remote-echo", "Test")  # a one-token request
        wait(d, lambda d: "ok," in find(d, ".result[data-model=remote-echo]").text)
        click_in_row(d, "#models-table", "all-minilm-l6-v2", "Test")  # an embedding
        wait(d, lambda d: "ok," in find(d, ".result[data-model='all-minilm-l6-v2']").text)

        # Side-by-side: the bundled model and the new remote one answer the same prompt.
        page(d, server.url, "playground")
        select(d, "#chat-model", CHAT)
        select(d, "#chat-compare", "remote-echo")
        fill(d, "#chat-max-tokens", "8")
        fill(d, "#chat-input", "compare these two")
        find(d, "#chat-send").click()
        wait(d, lambda d: len(d.find_elements(_by(), ".chat-col .usage")) == 2, timeout=120)
        echo = find(d, ".chat-col[data-model=remote-echo] .msg.assistant").text
        assert echo == "compare these two"
        shot(d, tmp_path, "playground-compare")
    finally:
        upstream.stop()

    page(d, server.url, "models")
    # The error is read in the wait: the replicas table is redrawn every few seconds.
    wait(d, lambda d: (row := _replica_row(d, upstream.url))
         and row.find_elements(_by(), ".badge.bad") and row.find_elements(_by(), ".error-text")
         and row.find_element(_by(), ".error-text").text.strip())
    shot(d, tmp_path, "models-unhealthy")


def test_local_model_is_unloaded_and_loaded_from_the_models_page(
        server: InferdProcess, admin: Any, tmp_path: Path) -> None:
    d = admin
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}

    def state() -> str:
        engines = httpx.get(server.url + "/admin/v1/engines", headers=headers, timeout=60).json()
        return next(e["state"] for e in engines["data"] if e["id"] == CHAT)

    page(d, server.url, "models")
    badge = f"[data-engine='{CHAT}']"
    wait(d, lambda d: d.find_elements(_by(), badge) and find(d, badge).text == "loaded")
    click_in_row(d, "#models-table", CHAT, "Unload")
    wait(d, lambda d: find(d, badge).text == "unloaded")
    assert state() == "unloaded"
    shot(d, tmp_path, "models-unloaded")
    click_in_row(d, "#models-table", CHAT, "Load")
    wait(d, lambda d: find(d, badge).text == "loaded", timeout=120)
    assert state() == "loaded"
    answer = sdk(server, ADMIN_KEY).chat.completions.create(
        model=CHAT, max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
    assert answer.usage is not None and answer.usage.completion_tokens > 0


def test_playground_streams_tokens_one_by_one(server: InferdProcess, admin: Any,
                                              tmp_path: Path) -> None:
    d = admin
    page(d, server.url, "playground")
    find(d, "#chat-clear").click()
    select(d, "#chat-model", CHAT)
    select(d, "#chat-compare", "")
    fill(d, "#chat-max-tokens", "24")
    fill(d, "#chat-system", "You are a poet.")
    fill(d, "#chat-input", "Write about the sea.")
    # Record how many token spans the answer holds at every change the page makes.
    d.execute_script("""
        window.seen = [];
        new MutationObserver(() => {
          const answer = document.querySelector('.msg.assistant');
          if (answer) window.seen.push(answer.querySelectorAll('.tok').length);
        }).observe(document.querySelector('#chat-columns'), {childList: true, subtree: true});
    """)
    find(d, "#chat-send").click()
    usage = wait(d, lambda d: [u.text for u in d.find_elements(_by(), ".chat-col .usage")
                               if u.text], timeout=120)[0]
    assert "TTFT" in usage and "tokens/s" in usage and "completion" in usage
    seen = [n for n in d.execute_script("return window.seen") if n]
    # The answer grew in several steps, one chunk at a time, not all at once.
    assert len(set(seen)) >= 3 and seen == sorted(seen), seen
    assert find(d, ".msg.assistant").text.strip()
    shot(d, tmp_path, "playground")


def test_job_from_the_playground_runs_and_its_events_show(server: InferdProcess, admin: Any,
                                                          tmp_path: Path) -> None:
    d = admin
    page(d, server.url, "playground")
    find(d, "#chat-clear").click()
    select(d, "#chat-model", CHAT)
    select(d, "#chat-compare", "")
    fill(d, "#chat-max-tokens", "8")
    find(d, "#chat-job").click()
    fill(d, "#chat-input", "Name a fruit.")
    find(d, "#chat-send").click()
    wait(d, lambda d: find(d, ".job-box .badge").text == "completed", timeout=120)
    assert "completed" in find(d, ".job-box .events").text
    find(d, "#chat-job").click()  # back to plain chat for the other tests
    job_link = find(d, ".job-box a")
    job_id = job_link.text
    job_link.click()
    wait(d, lambda d: job_id in find(d, "#job-detail").text)
    wait(d, lambda d: "completed" in find(d, "#job-events").text)
    assert job_id in find(d, "#jobs-table").text
    assert "This job has no webhook." in find(d, "#webhook-table").text
    shot(d, tmp_path, "job")

    select(d, "#jobs-filter [name=status]", "failed")
    find(d, "#jobs-filter button").click()
    wait(d, lambda d: "No jobs match." in find(d, "#jobs-table").text)


def _chart_total(d: Any, metric: str) -> int | None:
    """The chart's total, read in one script call (charts are redrawn while we look)."""
    value = d.execute_script(
        "const f = document.querySelector(arguments[0]); return f ? f.dataset.total : null;",
        f"#mon-charts figure[data-metric='{metric}']")
    return None if value in (None, "") else int(value)


def _stored_requests(server: InferdProcess) -> int:
    """The requests of the last hour in the store, as the usage series the chart draws."""
    series = httpx.get(f"{server.url}/admin/v1/usage/series?bucket=minute&split_by=none",
                       headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60).json()
    return sum(b["requests"] for b in series["series"][0]["data"])


def test_a_request_appears_in_the_monitoring_chart(server: InferdProcess, admin: Any,
                                                   tmp_path: Path) -> None:
    d = admin
    page(d, server.url, "monitoring")
    wait(d, lambda d: _chart_total(d, "Requests") is not None)
    before = _chart_total(d, "Requests")
    assert before is not None
    sdk(server, ADMIN_KEY).chat.completions.create(
        model=CHAT, max_tokens=2, messages=[{"role": "user", "content": "One more"}])

    # The chart counts this request: it shows what the store holds for the same hour (the
    # usage series), one more than before at least. Not exactly one more: a request an earlier
    # test left running (a playground stream, a job) may end and be counted meanwhile.
    def counted(d: Any) -> bool:
        stored = _stored_requests(server)
        if stored < before + 1:
            return False
        if _chart_total(d, "Requests") == stored:
            return True
        find(d, "#mon-form button").click()  # draw it again from the store
        return False

    wait(d, counted)
    assert d.find_elements(_by(), "#mon-charts figure[data-metric='Requests'] canvas")
    find(d, "#records-form button").click()  # the records list refreshes on its own button
    wait(d, lambda d: d.find_elements(_by(), "#records-table tbody tr:not(.empty)"))
    wait(d, lambda d: d.find_elements(_by(), "#table-name option"))
    shot(d, tmp_path, "monitoring")


def test_usage_series_api(server: InferdProcess) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=server.url, timeout=60) as http:
        records = http.get("/admin/v1/usage/records?limit=1000", headers=admin).json()["data"]
        series = http.get("/admin/v1/usage/series?bucket=minute&split_by=none",
                          headers=admin).json()
        assert series["object"] == "usage.series" and len(series["series"]) == 1
        buckets = series["series"][0]["data"]
        assert len(buckets) in (60, 61)  # every minute of the last hour, empty ones too
        assert sum(b["requests"] for b in buckets) == len(records) > 0
        busy = [b for b in buckets if b["requests"]]
        assert all(b["p50_latency_ms"] <= b["p95_latency_ms"] for b in busy)

        bad = http.get("/admin/v1/usage/series?from=100&to=50", headers=admin)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "from"
        too_many = http.get("/admin/v1/usage/series?bucket=minute&from=0&to=1e9",
                            headers=admin)
        assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "bucket"
        key = http.post("/admin/v1/keys", headers=admin, json={"name": "series"}).json()
        user = {"Authorization": f"Bearer {key['key']}"}
        assert http.get("/admin/v1/usage/series", headers=user).status_code == 403
        sent = http.post("/v1/embeddings", headers=user,
                         json={"model": "all-minilm-l6-v2", "input": "count me"})
        assert sent.status_code == 200
        own = http.get("/v1/usage/series?split_by=none", headers=user).json()
        mine = [r for r in http.get("/admin/v1/usage/records?limit=1000", headers=admin)
                .json()["data"] if str(r["key_id"]) == str(key["id"])]
        own_requests = sum(b["requests"] for b in own["series"][0]["data"])
        assert own_requests == len(mine) >= 1
        assert own_requests < sum(b["requests"] for b in buckets)  # not everyone's


def test_first_run_without_an_admin_key_says_how_to_make_one(
        tmp_path: Path, browser: Any) -> None:
    # On loopback with no admin key yet, keys are not enforced: everyone is the admin.
    open_server = _upstream(tmp_path)
    open_server.env.pop("INFERD_AUTH")
    open_server.env.pop("INFERD_ADMIN_KEY", None)
    d = browser
    with open_server:
        d.get(open_server.url + "/ui/#home")
        wait(d, lambda d: find(d, "#first-run").is_displayed())
        assert "inferd keys create --scope admin" in find(d, "#first-run").text
        assert find(d, "#who").text.startswith("keys off")
        page(d, open_server.url, "models")
        wait(d, lambda d: "echo" in find(d, "#replicas-table").text)
        shot(d, tmp_path, "first-run")
    d.execute_script("sessionStorage.clear()")


def test_image_tab_shows_only_with_an_image_model_and_draws(
        tmp_path: Path, browser: Any, tiny_pipeline: Path) -> None:
    config = tmp_path / "images.yaml"
    config.write_text(yaml.safe_dump({"models": [
        {"name": "tiny-sd", "kind": "diffusers", "path": str(tiny_pipeline), "steps": 2,
         "size": "64x64", "max_steps": 500}, {"name": "echo", "kind": "echo"}]}))
    d = browser
    with InferdProcess(tmp_path / "images", "--config", str(config), "--no-bundled",
                       env={"INFERD_AUTH": "off"}) as images:
        page(d, images.url, "playground")
        wait(d, lambda d: find(d, "#image-tab").is_displayed())
        # One tab looks chosen, the other not (both looked chosen before the first click).
        assert find(d, "#chat-tab").get_attribute("aria-selected") == "true"
        assert find(d, "#image-tab").get_attribute("aria-selected") == "false"
        assert (find(d, "#chat-tab").value_of_css_property("background-color")
                != find(d, "#image-tab").value_of_css_property("background-color"))
        find(d, "#image-tab").click()
        fill(d, "#image-form [name=prompt]", "a lighthouse at dusk")
        find(d, "#image-form button").click()
        wait(d, lambda d: find(d, "#image-out").is_displayed(), timeout=120)
        width = d.execute_script("return document.querySelector('#image-out img').naturalWidth")
        assert width == 64
        assert "2 steps" in find(d, "#image-out figcaption").text
        shot(d, tmp_path, "playground-image")

        # A long image job: its progress shows live in the Jobs page, and Cancel stops it.
        job = httpx.post(images.url + "/v1/jobs", timeout=30, json={
            "endpoint": "/v1/images/generations", "body": {
                "model": "tiny-sd", "prompt": "slow", "n": 8, "size": "512x512",
                "steps": 500}}).json()
        page(d, images.url, f"jobs/{job['id']}")
        wait(d, lambda d: "progress: step" in find(d, "#job-events").text, timeout=120)
        find(d, "#job-detail button.danger").click()
        wait(d, lambda d: "cancelled" in find(d, "#job-detail h2").text)
        assert httpx.get(f"{images.url}/v1/jobs/{job['id']}").json()["status"] == "cancelled"
        shot(d, tmp_path, "job-cancelled")
    d.execute_script("sessionStorage.clear()")


def test_no_image_tab_without_an_image_model(server: InferdProcess, admin: Any) -> None:
    page(admin, server.url, "playground")
    wait(admin, lambda d: d.find_elements(_by(), "#chat-model option"))
    assert not find(admin, "#image-tab").is_displayed()
