"""Renders every page of the web UI at laptop (1400x900) and phone (390x844) sizes, and
at laptop size in the dark theme.

    PYTHONPATH=src python scripts/screenshots.py OUT_DIR

Starts its own ``inferd serve`` with an admin key, sends a few requests (chat, a job, a new
key) so the pages have something to show, then saves ``OUT_DIR/<page>-<width>[-dark].png``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.ui_browser import chromium, console_errors, login, page, wait  # noqa: E402
from tests.helpers import InferdProcess  # noqa: E402

ADMIN = "sk-admin-screenshots-0123456789"
PAGES = ["home", "models", "playground", "keys", "jobs", "monitoring"]
SIZES = [(1400, 900, "light"), (390, 844, "light"), (1400, 900, "dark")]
# True once the page drew its data (a table row, a stat, a chart or a model to pick).
FILLED = "return document.querySelectorAll('tbody tr, .stat, .chart, option').length"


def traffic(url: str) -> None:
    client = openai.OpenAI(base_url=url + "/v1", api_key=ADMIN)
    for prompt in ("Name a colour.", "Say hi.", "Count to three."):
        client.chat.completions.create(model="smollm2-135m-instruct", max_tokens=12,
                                       messages=[{"role": "user", "content": prompt}])
    client.post("/jobs", cast_to=object, body={"endpoint": "/v1/chat/completions", "body": {
        "model": "smollm2-135m-instruct", "max_tokens": 8,
        "messages": [{"role": "user", "content": "Hello"}]}})
    client.post("/../admin/v1/keys", cast_to=object, body={
        "name": "research", "owner": "alice", "team": "ml", "rpm": 60, "tpm": 20000,
        "token_budget": 100000, "budget_period": "month"})


def main(out: Path) -> None:
    from selenium.webdriver.common.by import By

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, \
            InferdProcess(Path(tmp) / "data", env={"INFERD_ADMIN_KEY": ADMIN}) as server:
        traffic(server.url)
        for width, height, scheme in SIZES:
            driver = chromium(Path(tmp) / f"profile-{width}-{scheme}", width, height)
            suffix = f"{width}" if scheme == "light" else f"{width}-{scheme}"
            try:
                # The page follows the system theme: emulate a dark one.
                driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [
                    {"name": "prefers-color-scheme", "value": scheme}]})
                login(driver, server.url, ADMIN)
                for name in PAGES:
                    page(driver, server.url, name)
                    wait(driver, lambda d, n=name: d.find_element(By.ID, f"page-{n}")
                         .is_displayed())
                    wait(driver, lambda d: d.execute_script(FILLED))
                    driver.execute_script("window.scrollTo(0, 0)")
                    full = driver.execute_script("return document.body.scrollHeight")
                    driver.set_window_size(width, max(height, min(int(full) + 40, 4000)))
                    driver.save_screenshot(str(out / f"{name}-{suffix}.png"))
                    driver.set_window_size(width, height)
                for error in console_errors(driver):
                    print("console:", error)
            finally:
                driver.quit()
    print(f"saved {len(PAGES) * len(SIZES)} screenshots in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "screenshots"))
