"""Accessibility of the web UI, measured: axe-core (pinned in ``tests/e2e/axe``, installed by
``scripts/axe.sh``) run in Debian's headless Chromium on every page and dialog, logged in as
admin and as a user key, in light and dark: no serious or critical violation. Plus what axe does
not check: the contrast of form field borders (3:1), an ``h1`` per page, the charts' text
alternative, row buttons named with their row, and admin-only fields hidden from a user."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_ui import ADMIN_KEY, CHAT, _by, click_in_row, find
from tests.e2e.ui_browser import HAVE_BROWSER, chromium, console_errors, login, page, wait
from tests.helpers import ROOT, InferdProcess

AXE = ROOT / ".cache" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
REQUIRED = os.environ.get("INFERD_REQUIRE_SERVICES") == "1"
pytestmark = pytest.mark.skipif(
    not REQUIRED and not (HAVE_BROWSER and AXE.exists()),
    reason="needs Debian's chromium and axe-core (make test installs both: scripts/browser.sh, "
    "scripts/axe.sh)",
)

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
# Each page, what shows it is drawn, and what opens its dialogs (run before a second check).
ADMIN_PAGES = ["home", "models", "playground", "keys", "teams", "prompts", "jobs", "monitoring",
               "requests"]
USER_PAGES = ["home", "playground", "jobs", "monitoring", "requests"]
READY = {
    "home": "#home-models .tile",
    "models": "#replicas-table tbody tr[data-key]",
    "playground": "#chat-model option",
    "keys": "#keys-table tbody tr",
    "teams": "#teams-table tbody tr",
    "prompts": "#prompts-table tbody tr",
    "jobs": "#jobs-table tbody tr",
    "monitoring": "#mon-charts figure",
    "requests": "#requests-table tbody tr button",
}

# Contrast of two computed colours (WCAG's relative luminance), in the page.
CONTRAST_JS = """
const rgb = (c) => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
const lum = (c) => { const [r, g, b] = rgb(c).map((v) => { v /= 255;
  return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
  return (x + 0.05) / (y + 0.05); };
const background = (node) => { for (let n = node; n; n = n.parentElement) {
  const c = getComputedStyle(n).backgroundColor;
  if (!/rgba\\(.*, 0\\)$/.test(c) && c !== 'transparent') return c; }
  return 'rgb(255, 255, 255)'; };
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    with InferdProcess(
        tmp_path_factory.mktemp("ui-a11y"), env={"INFERD_ADMIN_KEY": ADMIN_KEY}
    ) as process:
        with httpx.Client(base_url=process.url, headers=ADMIN, timeout=120) as http:
            # something in every table: a remote model, a prompt, a team and a user, a job with
            # its events
            assert (
                http.post(
                    "/admin/v1/models",
                    json={
                        "name": "elsewhere",
                        "replicas": [{"kind": "http", "url": "http://127.0.0.1:9/v1"}],
                    },
                ).status_code
                == 201
            )
            assert (
                http.post(
                    "/admin/v1/prompts", json={"name": "greeting", "instructions": "Hi {{name}}"}
                ).status_code
                == 201
            )
            team = {"name": "research", "rpm": 60}
            assert http.post("/admin/v1/teams", json=team).status_code == 201
            assert http.post("/admin/v1/users", json={"name": "erin"}).status_code == 201
            http.post(
                "/v1/chat/completions",
                json={
                    "model": CHAT,
                    "max_tokens": 2,
                    "messages": [{"role": "user", "content": "Hi"}],
                },
            )
        yield process


@pytest.fixture(scope="module")
def user_key(server: InferdProcess) -> str:
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=60) as http:
        return str(http.post("/admin/v1/keys", json={"name": "a11y-user"}).json()["key"])


@pytest.fixture(scope="module")
def job_id(server: InferdProcess, user_key: str) -> str:
    """A finished job of the user key (the admin sees it too)."""
    with httpx.Client(
        base_url=server.url, timeout=120, headers={"Authorization": f"Bearer {user_key}"}
    ) as http:
        job = http.post(
            "/v1/jobs",
            json={
                "endpoint": "/v1/chat/completions",
                "body": {
                    "model": CHAT,
                    "max_tokens": 2,
                    "messages": [{"role": "user", "content": "Hi"}],
                },
            },
        )
        assert job.status_code in (200, 201, 202), job.text
        return str(job.json()["id"])


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    driver = chromium(tmp_path_factory.mktemp("chromium-a11y"), 1280, 900)
    yield driver
    errors = console_errors(driver)
    driver.quit()
    assert not [e for e in errors if "Failed to load resource" not in e], errors


def scheme(d: Any, value: str) -> None:
    d.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"media": "", "features": [{"name": "prefers-color-scheme", "value": value}]},
    )


def axe(d: Any, where: str) -> list[str]:
    """The serious and critical violations axe finds in the page as it is now."""
    if not d.execute_script("return typeof window.axe === 'object'"):
        d.execute_script(AXE.read_text())
    result = d.execute_async_script("""
        const done = arguments[arguments.length - 1];
        axe.run(document, {resultTypes: ['violations']})
          .then((r) => done(r.violations.filter((v) => ['serious', 'critical'].includes(v.impact))
            .map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' '))
              .join(' | ')}`)))
          .catch((e) => done(['axe failed: ' + e]));""")
    return [f"{where}: {v}" for v in result]


def show(d: Any, url: str, name: str) -> None:
    page(d, url, name)
    wait(d, lambda d: find(d, f"#page-{name.split('/')[0]}").is_displayed())
    wait(d, lambda d: d.find_elements(_by(), READY[name.split("/")[0]]))


def checks(d: Any, where: str) -> list[str]:
    """What axe does not measure: one h1, field borders of 3:1, every button named."""
    problems = d.execute_script(
        CONTRAST_JS
        + """
        const out = [];
        const visible = (n) => n.offsetParent !== null || getComputedStyle(n).position === 'fixed';
        const h1 = [...document.querySelectorAll('h1')].filter(visible);
        if (h1.length !== 1) out.push(`${h1.length} visible h1`);
        for (const f of document.querySelectorAll('input:not([type=checkbox]), select, textarea')) {
          if (!visible(f)) continue;
          const r = ratio(getComputedStyle(f).borderTopColor, background(f.parentElement));
          if (r < 3) out.push(`border of ${f.name || f.id} ${r.toFixed(2)}:1`);
        }
        for (const h of document.querySelectorAll('.hint, label, legend')) {
          if (!visible(h) || !h.textContent.trim()) continue;
          const r = ratio(getComputedStyle(h).color, background(h));
          if (r < 4.5) out.push(`text "${h.textContent.trim().slice(0, 30)}" ${r.toFixed(2)}:1`);
        }
        for (const b of document.querySelectorAll('tbody button')) {
          if (visible(b) && b.dataset.action && !(b.getAttribute('aria-label') || '')
              .startsWith(b.dataset.action + ' ')) out.push(`row button ${b.textContent} unnamed`);
        }
        return out;"""
    )
    return [f"{where}: {p}" for p in problems]


def open_dialogs(d: Any, name: str) -> None:
    """Opens what the page hides until asked: the model forms, the new key's dialog, the team
    and user forms and a team's members."""
    if name == "teams":
        d.execute_script(
            "for (const b of document.querySelectorAll('#page-teams details')) b.open = true;"
        )
        click_in_row(d, "#teams-table", "research", "Members")
        wait(d, lambda d: find(d, "#members-box").is_displayed()
             and "No members yet." in find(d, "#members-table").text)
    if name == "models":
        d.execute_script(
            "for (const b of document.querySelectorAll('#page-models details')) b.open = true;"
        )
    if name == "keys":
        d.execute_script(
            "document.querySelector('#key-secret').textContent = 'sk-shown-once';"
            "document.querySelector('#key-created').showModal();"
        )


@pytest.mark.parametrize("colors", ["light", "dark"])
def test_axe_finds_no_serious_violation_on_any_page(
    server: InferdProcess, user_key: str, job_id: str, d: Any, colors: str
) -> None:
    scheme(d, colors)
    found: list[str] = []
    d.get(server.url + "/ui/#keys")  # logged out: the log-in form
    wait(d, lambda d: find(d, "#login").is_displayed())
    found += axe(d, f"{colors} login") + checks(d, f"{colors} login")
    for role, key, names in (("admin", ADMIN_KEY, ADMIN_PAGES), ("user", user_key, USER_PAGES)):
        login(d, server.url, key)
        for name in names:
            where = f"{colors} {role} {name}"
            show(d, server.url, name)
            found += axe(d, where) + checks(d, where)
            if name == "requests":  # a request's details
                find(d, "#requests-table tbody tr button").click()
                wait(d, lambda d: find(d, "#requests-detail").is_displayed())
                found += axe(d, f"{where} details") + checks(d, f"{where} details")
            if name in ("models", "keys", "teams"):
                open_dialogs(d, name)
                found += axe(d, f"{where} dialog") + checks(d, f"{where} dialog")
                page(d, server.url, "home")  # closes the dialog
        page(d, server.url, f"jobs/{job_id}")
        wait(d, lambda d: job_id in find(d, "#job-detail").text)
        wait(d, lambda d: "completed" in find(d, "#job-events").text)
        found += axe(d, f"{colors} {role} job") + checks(d, f"{colors} {role} job")
        find(d, "#logout").click()
        wait(d, lambda d: find(d, "#login").is_displayed())
    scheme(d, "light")
    assert not found, "\n".join(found)


def test_user_sees_no_admin_field_and_charts_have_text(
    server: InferdProcess, user_key: str, d: Any, tmp_path: Path
) -> None:
    login(d, server.url, user_key)
    show(d, server.url, "monitoring")
    # "Key id" filters are the admin's: a `display` rule must not show them to a user.
    assert not find(d, "#mon-form [name=key]").is_displayed()
    wait(d, lambda d: d.find_elements(_by(), "#mon-charts figure[data-metric=Requests] .sr-only"))
    summary = d.execute_script(
        "return document.querySelector('#mon-charts figure[data-metric=Requests] .sr-only')"
        ".textContent"
    )
    assert summary.startswith("Requests over") and "total" in summary
    assert (
        d.execute_script(
            "return document.querySelector('#mon-charts figure[data-metric=Requests] .uplot')"
            ".getAttribute('aria-hidden')"
        )
        == "true"
    )
    find(d, "#logout").click()
    wait(d, lambda d: find(d, "#login").is_displayed())


def test_every_action_is_reachable_by_keyboard(server: InferdProcess, d: Any) -> None:
    """Tab walks the Models page and reaches every row button (none needs a mouse)."""
    from selenium.webdriver.common.keys import Keys

    login(d, server.url, ADMIN_KEY)
    show(d, server.url, "models")
    wanted = set(
        d.execute_script(
            "return [...document.querySelectorAll('#page-models tbody button')]"
            ".map((b) => b.getAttribute('aria-label'))"
        )
    )
    assert "Remove model elsewhere" in wanted and "Test model " + CHAT in wanted
    d.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
    reached: set[str] = set()
    body = find(d, "body")
    body.send_keys(Keys.TAB)
    for _ in range(200):
        label = d.switch_to.active_element.get_attribute("aria-label")
        if label:
            reached.add(label)
        if wanted <= reached:
            break
        d.switch_to.active_element.send_keys(Keys.TAB)
    assert wanted <= reached, wanted - reached
