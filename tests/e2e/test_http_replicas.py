"""``http`` replicas against real upstreams on loopback: other ``inferd serve`` processes and
llama-cpp-python's own OpenAI server; failover when an upstream dies; the admin API.

The openai SDK is the client (with its own retries off, so that every failure shows).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from inferd.settings import bundled_gguf_path
from tests.helpers import InferdProcess, free_port, wait_for

NO_AUTH = {"INFERD_AUTH": "off"}


def echo_upstream(tmp: Path, name: str, delay: float = 0.0) -> InferdProcess:
    config = tmp / f"{name}.yaml"
    config.write_text(yaml.safe_dump({"bundled_models": False, "models": [
        {"name": "echo", "kind": "echo", "echo_delay": delay}]}))
    return InferdProcess(tmp / name, "--config", str(config), "--no-bundled", env=NO_AUTH)


def gateway(tmp: Path, replicas: list[dict[str, Any]], **settings: Any) -> InferdProcess:
    config = tmp / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "bundled_models": False, "health_check_interval": 0.5, "replica_cooldown_base": 0.5,
        "replica_cooldown_max": 2.0, "log_format": "text", **settings,
        "remote_models": [{"name": "chat", "aliases": ["chat-alias"], "replicas": replicas}]}))
    return InferdProcess(tmp / "gw", "--config", str(config), "--no-bundled", env=NO_AUTH)


def client(server: InferdProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0,
                         timeout=60)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[InferdProcess, InferdProcess, InferdProcess]]:
    a = echo_upstream(tmp_path, "a", delay=0.05).start()
    b = echo_upstream(tmp_path, "b", delay=0.05).start()
    gw = gateway(tmp_path, [
        {"kind": "http", "url": a.url, "upstream_model": "echo", "api_key": "sk-up-SECRET-1"},
        {"kind": "http", "url": b.url + "/v1", "upstream_model": "echo"}])
    try:
        gw.start()
        yield a, b, gw
    finally:
        gw.stop()
        a.stop()
        b.stop()


def test_proxying_to_another_inferd(pair: tuple[InferdProcess, ...]) -> None:
    _, _, gw = pair
    api = client(gw)
    answer = api.chat.completions.create(
        model="chat-alias", messages=[{"role": "user", "content": "one two three"}])
    assert answer.choices[0].message.content == "one two three"
    assert answer.usage is not None and answer.usage.total_tokens == 6
    chunks = list(api.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "four five"}], stream=True,
        stream_options={"include_usage": True}))
    assert {c.model for c in chunks} == {"chat"}  # the upstream's name never shows
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "four five"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
    completion = api.completions.create(model="chat", prompt="six seven")
    assert completion.choices[0].text == "six seven"
    embedding = api.embeddings.create(model="chat", input=["x"])
    assert len(embedding.data[0].embedding) == 8
    with pytest.raises(openai.BadRequestError) as bad:
        api.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}],
                                    n=2)
    assert "n=1" in bad.value.message  # the upstream's verdict, passed through


def test_admin_api_shows_state_and_never_the_credential(
        pair: tuple[InferdProcess, ...]) -> None:
    a, _, gw = pair
    client(gw).chat.completions.create(model="chat",
                                       messages=[{"role": "user", "content": "hi"}])
    listing = httpx.get(gw.url + "/admin/v1/replicas").json()["data"]
    assert len(listing) == 2
    first = next(r for r in listing if r["url"] == a.url)
    assert first["has_api_key"] is True and first["healthy"] is True
    assert {"in_flight", "cooled_down_until", "last_error", "latency_ms"} <= set(first)
    one = httpx.get(f"{gw.url}/admin/v1/replicas/{first['id']}").json()
    assert one["id"] == first["id"]
    everything = [httpx.get(gw.url + p).text for p in
                  ("/admin/v1/replicas", "/admin/v1/models", "/models", "/models/chat")]
    assert all("sk-up-SECRET-1" not in body for body in everything)
    assert "sk-up-SECRET-1" not in gw.log()

    refused = httpx.post(gw.url + "/admin/v1/replicas", json={
        "model": "chat", "kind": "http", "url": "http://169.254.169.254/v1"})
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "replica_url_not_allowed"
    assert httpx.get(gw.url + "/admin/v1/replicas/999").status_code == 404
    assert httpx.post(gw.url + "/admin/v1/models", json={"name": ""}).status_code == 400


def test_proxy_toolkit_routes_manage_models_and_replicas(pair: tuple[InferdProcess, ...]) -> None:
    a, _, gw = pair
    created = httpx.post(gw.url + "/models", json={"name": "extra", "aliases": ["ex"]})
    assert created.status_code == 201, created.text
    model_id = created.json()["id"]
    assert httpx.post(gw.url + "/models", json={"name": "extra"}).status_code == 409
    replica = httpx.post(f"{gw.url}/models/{model_id}/replicas", json={
        "kind": "http", "url": a.url, "upstream_model": "echo", "api_key": "sk-2"})
    assert replica.status_code == 201, replica.text
    replica_id = replica.json()["id"]
    answer = client(gw).chat.completions.create(
        model="ex", messages=[{"role": "user", "content": "via the toolkit"}])
    assert answer.choices[0].message.content == "via the toolkit"
    assert [r["id"] for r in httpx.get(f"{gw.url}/models/{model_id}/replicas").json()] == [
        replica_id]
    updated = httpx.put(f"{gw.url}/models/replicas/{replica_id}", json={"weight": 3})
    assert updated.status_code == 200 and updated.json()["weight"] == 3.0
    assert "sk-2" not in updated.text
    assert httpx.get(gw.url + "/models/extra").json()["replicas"][0]["weight"] == 3.0
    assert {m["name"] for m in httpx.get(gw.url + "/models").json()} == {"chat", "extra"}
    assert httpx.delete(f"{gw.url}/replicas/{replica_id}").status_code == 200
    assert httpx.delete(f"{gw.url}/models/{model_id}").status_code == 200
    gone = httpx.post(gw.url + "/v1/chat/completions", json={
        "model": "extra", "messages": [{"role": "user", "content": "x"}]})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"
    assert httpx.delete(f"{gw.url}/models/{model_id}").status_code == 404


def _replica_of(gw: InferdProcess, url: str) -> dict[str, Any]:
    replicas = httpx.get(gw.url + "/admin/v1/replicas").json()["data"]
    return next(r for r in replicas if r["url"].startswith(url))


def test_failover_when_an_upstream_is_killed(pair: tuple[InferdProcess, ...]) -> None:
    a, b, gw = pair
    api = client(gw)
    words = " ".join(f"w{i}" for i in range(60))  # 60 words at 50 ms: a 3 s stream
    stream = api.chat.completions.create(model="chat", stream=True,
                                         messages=[{"role": "user", "content": words}])
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    busy = [r for r in (_replica_of(gw, a.url), _replica_of(gw, b.url)) if r["in_flight"]]
    assert len(busy) == 1
    victim = a if busy[0]["url"] == a.url else b

    def ask(i: int) -> str:
        answer = api.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": f"request {i}"}])
        return answer.choices[0].message.content or ""

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(ask, i) for i in range(40)]
        time.sleep(0.5)
        victim.kill()
        results = [f.result() for f in futures]
    assert results == [f"request {i}" for i in range(40)]

    with pytest.raises(openai.APIError) as broken:
        for _ in stream:
            pass
    assert "stream" in broken.value.message

    down = _replica_of(gw, victim.url)
    assert down["healthy"] is False and down["last_error"]
    victim.start()
    wait_for(lambda: _replica_of(gw, victim.url)["healthy"] is True)
    assert ask(99) == "request 99"


def _port_listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def llama_server(tmp_path: Path) -> Iterator[str]:
    gguf = bundled_gguf_path()
    if not gguf or not Path(gguf).exists():
        pytest.skip("the bundled GGUF is not installed")
    port = free_port()
    log = (tmp_path / "llama_server.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", gguf,
                             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024",
                             "--model_alias", "smollm2",
                             # by default it cuts a running stream short whenever another
                             # request arrives -- the gateway's health probes included
                             "--interrupt_requests", "False"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _port_listening(port) or proc.poll() is not None, within=120)
        assert proc.poll() is None, (tmp_path / "llama_server.log").read_text()[-3000:]
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(15)


def test_llama_cpp_python_server_as_upstream(tmp_path: Path, llama_server: str) -> None:
    with gateway(tmp_path, [{"kind": "http", "url": llama_server + "/v1",
                             "upstream_model": "smollm2"}]) as gw:
        api = client(gw)
        answer = api.chat.completions.create(
            model="chat", max_tokens=12, temperature=0,
            messages=[{"role": "user", "content": "Name a colour."}])
        assert answer.model == "chat"
        assert answer.choices[0].message.content
        assert answer.usage is not None and answer.usage.completion_tokens > 0
        chunks = list(api.chat.completions.create(
            model="chat", max_tokens=12, temperature=0, stream=True,
            messages=[{"role": "user", "content": "Name a colour."}]))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.strip()
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        state = httpx.get(gw.url + "/admin/v1/replicas").json()["data"][0]
        assert state["healthy"] is True and state["requests"] >= 2


def test_upstream_credentials_and_admin_scope_with_keys_on(tmp_path: Path) -> None:
    upstream_key = "sk-upstream-only-0123456789abcdef"
    admin_key = "sk-gateway-admin-0123456789abcdef"
    up = echo_upstream(tmp_path, "secured")
    up.env.update(INFERD_ADMIN_KEY=upstream_key)
    up.env.pop("INFERD_AUTH")
    # A minute of cooldown after a failure: the health probe (which needs no credential) must
    # not bring the replica back before its state is read below, however slow that read is.
    gw = gateway(tmp_path, [{"kind": "http", "url": f"http://127.0.0.1:{up.port}",
                             "upstream_model": "echo", "api_key": upstream_key}],
                 replica_cooldown_base=60, replica_cooldown_max=60)
    gw.env.update(INFERD_ADMIN_KEY=admin_key)
    gw.env.pop("INFERD_AUTH")
    with up, gw:
        admin = {"Authorization": f"Bearer {admin_key}"}
        sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=admin_key, max_retries=0)
        answer = sdk.chat.completions.create(model="chat",
                                             messages=[{"role": "user", "content": "let in"}])
        assert answer.choices[0].message.content == "let in"  # the Bearer reached upstream

        made = httpx.post(gw.url + "/admin/v1/keys", json={"scope": "user"}, headers=admin)
        assert made.status_code == 201, made.text
        user = {"Authorization": f"Bearer {made.json()['key']}"}
        for method, path in (("GET", "/admin/v1/models"), ("GET", "/admin/v1/replicas"),
                             ("GET", "/admin/v1/replicas/1"), ("POST", "/admin/v1/replicas"),
                             ("GET", "/models"), ("POST", "/models"),
                             ("DELETE", "/replicas/1")):
            response = httpx.request(method, gw.url + path, headers=user, json={})
            assert response.status_code == 403, (method, path, response.text)
            assert response.json()["error"]["type"] == "permission_error"

        # a wrong upstream credential: the upstream says 401, the replica cools down, 502
        replica_id = httpx.get(gw.url + "/admin/v1/replicas", headers=admin).json()["data"][0][
            "id"]
        changed = httpx.patch(f"{gw.url}/admin/v1/replicas/{replica_id}", headers=admin,
                              json={"api_key": "sk-wrong"})
        assert changed.status_code == 200 and "sk-wrong" not in changed.text
        with pytest.raises(openai.APIStatusError) as failed:
            sdk.chat.completions.create(model="chat",
                                        messages=[{"role": "user", "content": "x"}])
        assert failed.value.status_code == 502
        state = httpx.get(f"{gw.url}/admin/v1/replicas/{replica_id}", headers=admin).json()
        assert state["healthy"] is False and "401" in state["last_error"]
        assert upstream_key not in gw.log() and "sk-wrong" not in gw.log()
