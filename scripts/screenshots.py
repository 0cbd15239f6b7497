"""Renders every page of the web UI at laptop (1400x900) and phone (390x844) sizes, and
at laptop size in the dark theme.

    PYTHONPATH=src python scripts/screenshots.py OUT_DIR
    PYTHONPATH=src python scripts/screenshots.py --docs

Starts its own ``inferd serve`` with an admin key, sends a few requests (chat, a job, a new
key, a prompt, a model served elsewhere) so the pages have something to show, then saves
``OUT_DIR/<page>-<width>[-dark].png``. ``--docs`` refreshes the documentation's pictures
instead: every page at 1280 px, light, as ``docs/operating/images/ui-<page>.png``.
"""

from __future__ import annotations

import base64
import sys
import tempfile
from pathlib import Path
from typing import Any

import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.ui_browser import chromium, console_errors, login, page, wait  # noqa: E402
from tests.helpers import InferdProcess  # noqa: E402

ADMIN = "sk-admin-screenshots-0123456789"
PAGES = ["home", "models", "playground", "keys", "prompts", "jobs", "monitoring"]
SIZES = [(1400, 900, "light"), (390, 844, "light"), (1400, 900, "dark")]
DOCS = ROOT / "docs" / "operating" / "images"
DOCS_SIZES = [(1280, 800, "light")]
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
    client.post("/../admin/v1/prompts", cast_to=object, body={
        "name": "support-reply", "instructions": "Answer {{customer}} politely."})
    # a model served by another server (not running here: its replica shows as unhealthy)
    client.post("/../admin/v1/models", cast_to=object, body={
        "name": "gpu-llama", "aliases": ["llama"], "fallbacks": ["smollm2-135m-instruct"],
        "replicas": [{"kind": "http", "url": "http://127.0.0.1:9/v1",
                      "upstream_model": "llama-3.1-8b", "options": {"capabilities": ["chat"]}}]})


def save(driver: Any, width: int, height: int, path: Path) -> None:
    """The whole page (up to 4000 px tall), not only the window."""
    driver.execute_script("window.scrollTo(0, 0)")
    full = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": max(height, min(full, 4000)), "deviceScaleFactor": 1,
        "mobile": width < 700})
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    path.write_bytes(base64.b64decode(shot["data"]))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def main(out: Path, sizes: list[tuple[int, int, str]], prefix: str = "") -> None:
    from selenium.webdriver.common.by import By

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, \
            InferdProcess(Path(tmp) / "data", env={"INFERD_ADMIN_KEY": ADMIN}) as server:
        traffic(server.url)
        for width, height, scheme in sizes:
            driver = chromium(Path(tmp) / f"profile-{width}-{scheme}", width, height)
            suffix = f"-{width}" if scheme == "light" else f"-{width}-{scheme}"
            if prefix:
                suffix = ""
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
                    save(driver, width, height, out / f"{prefix}{name}{suffix}.png")
                    if name == "models":  # and its form: a model with its replica
                        driver.execute_script(
                            "document.querySelector('#model-box').open = true")
                        save(driver, width, height, out / f"{prefix}models-add{suffix}.png")
                for error in console_errors(driver):
                    print("console:", error)
            finally:
                driver.quit()
    print(f"saved {(len(PAGES) + 1) * len(sizes)} screenshots in {out}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--docs"]:
        main(DOCS, DOCS_SIZES, prefix="ui-")
    else:
        main(Path(sys.argv[1] if len(sys.argv) > 1 else "screenshots"), SIZES)
