"""The Monitoring and Home charts as an operator reads them after a spike, in Debian's
headless Chromium against ``inferd serve`` with two echo models: keys by name (legends,
records, the key picker, the Jobs list), stacked bars, values on hover, a colour per series
that stays, cancelled requests apart from errors, the same counts on Home and Monitoring,
the Models page's Test probes not counted, and the signed-in key in the header."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.test_ui import _by, find, select
from tests.e2e.test_ui_a11y import AXE, REQUIRED, axe
from tests.e2e.ui_browser import HAVE_BROWSER, chromium, console_errors, login, page, wait
from tests.helpers import InferdProcess

pytestmark = pytest.mark.skipif(
    not HAVE_BROWSER and os.environ.get("INFERD_REQUIRE_SERVICES") != "1",
    reason="Debian's chromium and chromium-driver are not installed (make test installs them)",
)

ROOT_KEY = "sk-admin-charts-test-0123456789abcdef"
ROOT = {"Authorization": f"Bearer {ROOT_KEY}"}
A, B = "echo-a", "echo-b"


def _chat(client: httpx.Client, key: str, model: str) -> int:
    return client.post(
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
    ).status_code


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    tmp = tmp_path_factory.mktemp("ui-charts")
    config = tmp / "models.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "bundled_models": False,
                "models": [
                    {"name": A, "kind": "echo", "echo_delay": 0.05},
                    {"name": B, "kind": "echo", "echo_delay": 0.05},
                ],
            }
        )
    )
    with InferdProcess(
        tmp / "data", "--config", str(config), "--no-bundled", env={"INFERD_ADMIN_KEY": ROOT_KEY}
    ) as process:
        yield process


@pytest.fixture(scope="module")
def traffic(server: InferdProcess) -> dict[str, str]:
    """The spike: alice 3 requests to A and 2 to B, bob 1 to A and 1 refused (429), one
    stream alice's client breaks off (cancelled), and an admin probe (not traffic)."""
    with httpx.Client(base_url=server.url, headers=ROOT, timeout=60) as client:
        keys = {}
        for name, spec in (("ops-carol", {"scope": "admin"}), ("alice", {}), ("bob", {"rpm": 1})):
            made = client.post("/admin/v1/keys", json={"name": name, **spec})
            assert made.status_code == 201, made.text
            keys[name] = made.json()["key"]
            keys[f"{name}-id"] = str(made.json()["id"])
        assert [_chat(client, keys["alice"], A) for _ in range(3)] == [200] * 3
        assert [_chat(client, keys["alice"], B) for _ in range(2)] == [200] * 2
        assert [_chat(client, keys["bob"], A) for _ in range(2)] == [200, 429]
        long = " ".join(["word"] * 400)  # 20 s of echo: broken off after its first chunk
        with client.stream(
            "POST",
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {keys['alice']}"},
            json={"model": A, "stream": True, "messages": [{"role": "user", "content": long}]},
        ) as stream:
            next(stream.iter_lines())
        probe = client.post(
            "/v1/chat/completions",
            headers={"X-Inferd-Probe": "1"},
            json={"model": B, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert probe.status_code == 200

        def totals() -> dict[str, int]:
            data = client.get("/admin/v1/usage/series?split_by=none").json()["series"]
            return {
                m: sum(b[m] for s in data for b in s["data"])
                for m in ("requests", "errors", "cancelled")
            }

        deadline = time.monotonic() + 60  # the broken-off stream is recorded when noticed
        while totals()["cancelled"] != 1:
            assert time.monotonic() < deadline, totals()
            time.sleep(0.1)
        assert totals() == {"requests": 8, "errors": 1, "cancelled": 1}  # the probe is not one
    return keys


@pytest.fixture(scope="module")
def d(
    server: InferdProcess, traffic: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    driver = chromium(tmp_path_factory.mktemp("chromium"), 1440, 1000)
    login(driver, server.url, traffic["ops-carol"])
    yield driver
    errors = console_errors(driver)
    driver.quit()
    assert not [e for e in errors if "Failed to load resource" not in e], errors


def chart(d: Any, title: str) -> Any:
    """What the figure ``title`` of the visible page draws (``figure.chart``), or None."""
    return d.execute_script(
        """
        const f = document.querySelector(
          `.page:not([hidden]) figure[data-metric="${arguments[0]}"]`);
        if (!f) return null;
        const c = f.chart || {};
        return {total: Number(f.dataset.total), names: c.names || [], values: c.values || [],
                tops: c.tops || [], drawn: c.plot ? c.plot.data.slice(1) : [],
                colours: c.colours || {},
                legend: [...f.querySelectorAll('.chart-legend li')].map((e) => e.textContent)};
        """,
        title,
    )


def monitoring(d: Any, server: InferdProcess, split: str = "model") -> None:
    page(d, server.url, "monitoring")
    wait(d, lambda d: chart(d, "Requests") is not None)
    select(d, "#mon-split", split)
    find(d, "#mon-form button").click()
    wait(
        d,
        lambda d: (
            find(d, "#mon-charts").get_attribute("aria-busy") == "false"  # every drawing done
            and (c := chart(d, "Requests")) is not None
            and c["total"] == 8
            and len(c["names"]) == (1 if split == "none" else 2)
        ),
    )


def test_the_header_names_the_signed_in_key(d: Any) -> None:
    wait(d, lambda d: "ops-carol" in find(d, "#who").text)
    assert find(d, "#who").text == "signed in as ops-carol · admin key"


def test_legends_name_keys_not_ids(d: Any, server: InferdProcess) -> None:
    monitoring(d, server, "key")
    requests = chart(d, "Requests")
    assert requests["names"] == ["alice", "bob"] and requests["legend"] == ["alice", "bob"]
    # alice: 3 + 2 + 1 cancelled; bob: 1 + 1 refused
    assert [sum(v) for v in requests["values"]] == [6, 2]


def test_bars_are_stacked_and_values_show_on_hover(d: Any, server: InferdProcess) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    monitoring(d, server)
    c = chart(d, "Requests")
    assert c["names"] == [A, B] and c["legend"] == [A, B]
    a, b = c["values"]
    # stacked: B is drawn from A's top to A + B, and the tallest is the sum
    assert c["tops"][0] == a and c["tops"][1] == [x + y for x, y in zip(a, b, strict=True)]
    assert c["drawn"] == [c["tops"][1], c["tops"][0]]
    assert sum(a) == 6 and sum(b) == 2  # A: alice 3 + 1 cancelled, bob 2; B: alice 2
    busiest = max(range(len(a)), key=lambda i: a[i] + b[i])
    offset = d.execute_script(
        """
        const f = document.querySelector('#mon-charts figure[data-metric="Requests"]');
        const u = f.chart.plot;
        return [u.valToPos(u.data[0][arguments[0]], 'x') - u.over.clientWidth / 2,
                u.over.clientHeight / 2 - 2];
        """,
        busiest,
    )
    over = find(d, "#mon-charts figure[data-metric='Requests'] .u-over")
    ActionChains(d).move_to_element_with_offset(over, int(offset[0]), 0).perform()
    tip = "#mon-charts figure[data-metric='Requests'] .chart-tip"
    wait(d, lambda d: find(d, tip).is_displayed())
    text = find(d, tip).text
    assert f"{A}: {a[busiest]}" in text and f"{B}: {b[busiest]}" in text
    assert f"total: {a[busiest] + b[busiest]}" in text


def _click_bar(d: Any, title: str, series: int, bucket: int) -> None:
    """Clicks the middle of series ``series``'s part of the stacked bar ``bucket``."""
    from selenium.webdriver.common.action_chains import ActionChains

    figure = f'#mon-charts figure[data-metric="{title}"]'
    x, y = d.execute_script(
        """
        const f = document.querySelector(arguments[0]);
        const u = f.chart.plot, tops = f.chart.tops, i = arguments[1], j = arguments[2];
        const below = i ? tops[i - 1][j] : 0;
        // within the plot: the last bucket's bar is centred on its right edge
        const x = Math.min(u.valToPos(u.data[0][j], 'x'), u.over.clientWidth - 1);
        return [x - u.over.clientWidth / 2,
                u.valToPos((below + tops[i][j]) / 2, 'y') - u.over.clientHeight / 2];
        """,
        figure, series, bucket,
    )
    over = find(d, f"{figure} .u-over")
    ActionChains(d).move_to_element_with_offset(over, int(x), int(y)).click().perform()


def _requests_rows(d: Any) -> list[str]:
    return [r.text for r in d.find_elements(_by(), "#requests-table tbody tr")
            if r.find_elements(_by(), "button")]


def test_a_bar_opens_its_requests(d: Any, server: InferdProcess) -> None:
    monitoring(d, server)
    c = chart(d, "Requests")
    a = c["values"][c["names"].index(A)]
    bucket = next(i for i in range(len(a)) if a[i])
    _click_bar(d, "Requests", c["names"].index(A), bucket)
    wait(d, lambda d: find(d, "#page-requests").is_displayed())
    wait(d, lambda d: len(_requests_rows(d)) == a[bucket])
    shown = _requests_rows(d)
    assert all(A in r and B not in r for r in shown)
    form = "#requests-filter"
    assert find(d, f"{form} [name=model]").get_attribute("value") == A
    assert find(d, f"{form} [name=status]").get_attribute("value") == ""
    window = d.execute_script(
        "const f = document.querySelector(arguments[0]).elements;"
        "return [new Date(f.from.value).getTime() / 1000, new Date(f.to.value).getTime() / 1000]",
        form)
    assert window[1] - window[0] == 60  # the last hour's charts: a bucket a minute
    assert d.execute_script("return location.hash") == "#requests"

    # the Errors chart's bar: that window's failed requests of the model (the 429)
    monitoring(d, server)
    errors = chart(d, "Errors")
    names = errors["names"]
    series = names.index(A)
    bucket = next(i for i, n in enumerate(errors["values"][series]) if n)
    _click_bar(d, "Errors", series, bucket)
    wait(d, lambda d: find(d, "#page-requests").is_displayed()
         and find(d, "#requests-filter [name=status]").get_attribute("value") == "error")
    wait(d, lambda d: any("429" in r for r in _requests_rows(d)))
    shown = _requests_rows(d)
    assert all(A in r for r in shown)
    assert not any(" 200 " in f" {r} " for r in shown)
    # errors are 4xx and 5xx answers; the filter keeps a cancelled request (499) too
    assert len([r for r in shown if "499" not in r]) == errors["values"][series][bucket]


def _chosen(d: Any) -> dict[str, Any] | None:
    """The bar and series the keyboard chose on the Requests chart (None: none yet)."""
    found = d.execute_script(
        "const f = document.querySelector('#mon-charts figure[data-metric=\"Requests\"]');"
        "return f && f.dataset.chosen ? JSON.parse(f.dataset.chosen) : null;")
    return found if isinstance(found, dict) else None


def _press(d: Any, *keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(d).send_keys(*keys).perform()


def test_a_bar_opens_its_requests_from_the_keyboard(d: Any, server: InferdProcess) -> None:
    """Tab reaches the Requests chart (its outline shows the focus), the arrow keys choose a
    bar and a series' part of it (the tooltip shows its values, an aria-live line tells
    them), and Enter opens that bar's requests, as a click on it does."""
    from selenium.webdriver.common.keys import Keys

    monitoring(d, server)
    c = chart(d, "Requests")
    a, b = c["values"][c["names"].index(A)], c["values"][c["names"].index(B)]
    bars = [j for j in range(len(a)) if (a[j] or 0) + (b[j] or 0)]
    figure = "#mon-charts figure[data-metric='Requests']"
    find(d, "#mon-form button").send_keys(Keys.TAB)
    assert d.execute_script("return document.activeElement.dataset.metric") == "Requests"
    outline = d.execute_script(
        "return getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"  # a visible focus
    assert _chosen(d) is None
    _press(d, Keys.END)
    assert _chosen(d) == {"bucket": bars[-1], "series": A if a[bars[-1]] else B}
    _press(d, Keys.HOME)
    assert _chosen(d)["bucket"] == bars[0]  # type: ignore[index]
    target = next(j for j in bars if a[j])  # a bar with requests of A (drawn at the bottom)
    for _ in bars:
        if _chosen(d)["bucket"] == target:  # type: ignore[index]
            break
        _press(d, Keys.ARROW_RIGHT)
    assert _chosen(d) == {"bucket": target, "series": A}
    assert find(d, f"{figure} .chart-tip").is_displayed()
    told = d.execute_script(  # read by screen readers, not shown
        "return document.querySelector(arguments[0]).textContent", f"{figure} .chart-choice")
    assert f"{A} {a[target]} of {a[target] + (b[target] or 0)} in this bar" in told
    assert find(d, f"{figure} .chart-choice").get_attribute("aria-live") == "polite"
    if b[target]:  # up: B's part of the same bar, down: A's again
        _press(d, Keys.ARROW_UP)
        assert _chosen(d) == {"bucket": target, "series": B}
        _press(d, Keys.ARROW_DOWN)
        assert _chosen(d) == {"bucket": target, "series": A}
    _press(d, Keys.ENTER)
    wait(d, lambda d: find(d, "#page-requests").is_displayed())
    wait(d, lambda d: len(_requests_rows(d)) == a[target])
    assert all(A in r and B not in r for r in _requests_rows(d))
    assert find(d, "#requests-filter [name=model]").get_attribute("value") == A
    assert find(d, "#requests-filter [name=status]").get_attribute("value") == ""


@pytest.mark.skipif(not REQUIRED and not AXE.exists(), reason="needs axe-core (scripts/axe.sh)")
def test_a_chart_chosen_from_the_keyboard_passes_axe(d: Any, server: InferdProcess) -> None:
    from selenium.webdriver.common.keys import Keys

    monitoring(d, server)
    find(d, "#mon-form button").send_keys(Keys.TAB)
    _press(d, Keys.END)
    wait(d, lambda d: _chosen(d) is not None)
    found = axe(d, "monitoring (a bar chosen from the keyboard)")
    assert not found, "\n".join(found)


@pytest.mark.skipif(not REQUIRED and not AXE.exists(), reason="needs axe-core (scripts/axe.sh)")
def test_charts_legends_tooltip_and_pickers_pass_axe(d: Any, server: InferdProcess) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    monitoring(d, server)

    def hovered(d: Any) -> bool:
        """The pointer over the chart (again, when a refresh has drawn it anew meanwhile)."""
        over = find(d, "#mon-charts figure[data-metric='Requests'] .u-over")
        ActionChains(d).move_to_element(over).perform()
        return bool(
            find(d, "#mon-charts figure[data-metric='Requests'] .chart-tip").is_displayed()
        )

    wait(d, hovered)  # the tooltip shown, in light and dark
    found = axe(d, "monitoring (light)")
    d.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
    )
    try:
        found += axe(d, "monitoring (dark)")
    finally:
        d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    assert not found, "\n".join(found)


def test_colours_are_fixed_per_series(d: Any, server: InferdProcess) -> None:
    monitoring(d, server)
    first = {t: chart(d, t)["colours"] for t in ("Requests", "Tokens")}
    assert first["Requests"] == first["Tokens"] and first["Requests"][A] != first["Requests"][B]
    d.refresh()
    monitoring(d, server)
    assert chart(d, "Requests")["colours"] == first["Requests"]
    page(d, server.url, "home")
    wait(d, lambda d: chart(d, "requests, last hour") is not None)
    monitoring(d, server, "none")
    only = chart(d, "Requests")["colours"]["all"]
    page(d, server.url, "home")
    wait(d, lambda d: (c := chart(d, "requests, last hour")) is not None and c["colours"])
    assert chart(d, "requests, last hour")["colours"]["all"] == only


def test_cancelled_apart_and_the_same_counts_on_home_and_monitoring(
    d: Any, server: InferdProcess
) -> None:
    monitoring(d, server)
    on_monitoring = {t: chart(d, t)["total"] for t in ("Requests", "Errors", "Cancelled")}
    assert on_monitoring == {"Requests": 8, "Errors": 1, "Cancelled": 1}
    page(d, server.url, "home")
    wait(d, lambda d: chart(d, "cancelled, last hour") is not None)
    on_home = {
        t: chart(d, f"{t.lower()}, last hour")["total"] for t in ("Requests", "Errors", "Cancelled")
    }
    assert on_home == on_monitoring


def test_records_name_keys_and_filter_by_a_picked_key(
    d: Any, server: InferdProcess, traffic: dict[str, str]
) -> None:
    monitoring(d, server)
    field = find(d, "#records-key")
    field.clear()
    field.send_keys("bo")
    option = f"bob · #{traffic['bob-id']}"
    wait(
        d,
        lambda d: (
            d.execute_script(
                "return [...document.querySelectorAll('#records-key-keys option')]"
                ".map(o => o.value)"
            )
            == [option]
        ),
    )
    field.clear()
    field.send_keys(option)
    find(d, "#records-form button").click()
    wait(d, lambda d: len(d.find_elements(_by(), "#records-table tbody tr:not(.empty)")) == 2)
    keys = d.execute_script(
        "return [...document.querySelectorAll("
        "'#records-table td[data-label=\"key\"]')].map(e => e.textContent)"
    )
    assert keys == ["bob", "bob"]


def test_test_probes_are_not_traffic(d: Any, server: InferdProcess) -> None:
    page(d, server.url, "models")
    wait(
        d,
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('button')].some(b => b.textContent === 'Test'"
            " && b.closest('tr') && b.closest('tr').textContent.includes(arguments[0]))",
            A,
        ),
    )
    d.execute_script(
        "[...document.querySelectorAll('button')].find(b => b.textContent === 'Test'"
        " && b.closest('tr').textContent.includes(arguments[0])).click()",
        A,
    )
    wait(
        d,
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('.result')].some(e => e.dataset.model === "
            "arguments[0] && e.textContent.startsWith('ok'))",
            A,
        ),
    )
    monitoring(d, server)  # still 8: the probe left no usage record
    assert chart(d, "Requests")["total"] == 8


def test_jobs_list_names_the_owner_and_shows_the_error(
    d: Any, server: InferdProcess, traffic: dict[str, str]
) -> None:
    with httpx.Client(
        base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {traffic['alice']}"}
    ) as client:
        job = client.post(
            "/v1/jobs",
            json={
                "endpoint": "/v1/chat/completions",
                # the echo engine refuses an argument it does not know: the job fails
                "body": {
                    "model": A,
                    "frobnicate": 1,
                    "messages": [{"role": "user", "content": "hi"}],
                },
            },
        )
        assert job.status_code in (200, 201, 202), job.text
        job_id = job.json()["id"]
    page(d, server.url, "jobs")

    def owner_and_error(d: Any) -> Any:
        find(d, "#jobs-filter button").click()
        return d.execute_script(
            """
            for (const tr of document.querySelectorAll('#jobs-table tbody tr')) {
              if (!tr.textContent.includes(arguments[0])) continue;
              const cell = (l) => tr.querySelector(`td[data-label="${l}"]`)?.textContent;
              if (cell('status') !== 'failed') return null;
              return [cell('owner'), cell('error')];
            }
            return null;""",
            job_id,
        )

    found = wait(d, owner_and_error)
    assert found[0] == "alice" and found[1]


def test_a_user_key_cannot_mark_its_requests_as_probes(
    server: InferdProcess, traffic: dict[str, str]
) -> None:
    """Only an admin's probe goes unmetered: a user key's header is ignored (kept last: it
    adds one request to the counts the tests above read)."""
    with httpx.Client(base_url=server.url, timeout=60) as client:

        def requests() -> int:
            data = client.get("/admin/v1/usage/series?split_by=none", headers=ROOT).json()
            return sum(b["requests"] for s in data["series"] for b in s["data"])

        before = requests()
        sent = client.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {traffic['alice']}", "X-Inferd-Probe": "1"},
            json={"model": A, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert sent.status_code == 200
        assert requests() == before + 1

