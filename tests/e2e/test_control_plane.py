"""Keys, limits, usage, /tables and /metrics through a real ``inferd serve`` and the openai SDK."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.helpers import ROOT, InferdProcess, wait_for

ADMIN_KEY = "sk-test-admin-0123456789abcdef"
ECHO_MODELS = json.dumps([{"name": "echo", "kind": "echo"}, {"name": "echo2", "kind": "echo"}])


def echo_env(**extra: str) -> dict[str, str]:
    return {"INFERD_MODELS": ECHO_MODELS, "INFERD_KEY_REFRESH_SECONDS": "0.3", **extra}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    env = echo_env(INFERD_ADMIN_KEY=ADMIN_KEY, INFERD_LOG_REQUESTS="true")
    with InferdProcess(tmp_path_factory.mktemp("control"), "--no-bundled", env=env) as proc:
        yield proc


def admin(server: InferdProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"})


def new_key(server: InferdProcess, **spec: Any) -> dict[str, Any]:
    with admin(server) as client:
        response = client.post("/admin/v1/keys", json=spec)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def sdk(server: InferdProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def chat(client: openai.OpenAI, model: str = "echo", text: str = "hello there") -> str:
    answer = client.chat.completions.create(model=model,
                                            messages=[{"role": "user", "content": text}])
    return answer.choices[0].message.content or ""


def test_missing_and_invalid_keys_get_401(server: InferdProcess) -> None:
    response = httpx.post(server.url + "/v1/chat/completions",
                          json={"model": "echo", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert response.headers["x-request-id"]
    with pytest.raises(openai.AuthenticationError) as info:
        chat(sdk(server, "sk-inferd-not-a-real-key"))
    assert info.value.body["code"] == "invalid_api_key"  # type: ignore[index]


def test_user_key_chats_and_lists_only_its_models(server: InferdProcess) -> None:
    key = new_key(server, name="alice", owner="alice", models=["echo"])
    assert key["key"].startswith("sk-inferd-") and key["prefix"] == key["key"][:14]
    client = sdk(server, key["key"])
    assert chat(client) == "hello there"
    assert [m.id for m in client.models.list()] == ["echo"]
    with pytest.raises(openai.PermissionDeniedError) as info:
        chat(client, model="echo2")
    assert info.value.body["code"] == "model_not_allowed"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("echo2")
    assert {m.id for m in sdk(server, ADMIN_KEY).models.list()} == {"echo", "echo2"}


def test_user_scope_cannot_use_the_control_plane(server: InferdProcess) -> None:
    key = new_key(server)["key"]
    headers = {"Authorization": f"Bearer {key}"}
    for path in ("/admin/v1/keys", "/tables", "/admin/v1/usage"):
        response = httpx.get(server.url + path, headers=headers)
        assert response.status_code == 403, path
        assert response.json()["error"]["type"] == "permission_error"
    response = httpx.post(server.url + "/generate_api_key", headers=headers,
                          json={"user_id": "u"})
    assert response.status_code == 403


def test_revoked_and_expired_keys_get_401(server: InferdProcess) -> None:
    key = new_key(server)
    client = sdk(server, key["key"])
    assert chat(client)
    with admin(server) as http:
        assert http.post(f"/admin/v1/keys/{key['id']}/disable").json()["enabled"] is False
    with pytest.raises(openai.AuthenticationError) as info:
        chat(client)
    assert info.value.body["code"] == "key_disabled"  # type: ignore[index]
    short = new_key(server, expires_in=1)
    assert chat(sdk(server, short["key"]))

    def refusal() -> str | None:
        try:
            chat(sdk(server, short["key"]))
        except openai.AuthenticationError as exc:
            return str(exc.body["code"])  # type: ignore[index]
        return None

    assert wait_for(refusal, what="the key's expiry") == "key_expired"


def test_admin_api_get_update_delete(server: InferdProcess) -> None:
    key = new_key(server, name="b", team="red", rpm=100, metadata={"env": "dev"})
    with admin(server) as http:
        got = http.get(f"/admin/v1/keys/{key['id']}").json()
        assert got["team"] == "red" and got["metadata"] == {"env": "dev"}
        assert "key" not in got and "key_hash" not in got
        changed = http.patch(f"/admin/v1/keys/{key['id']}", json={"rpm": 5, "tpm": 1000})
        assert changed.json()["rpm"] == 5 and changed.json()["team"] == "red"
        bad = http.patch(f"/admin/v1/keys/{key['id']}", json={"rpm": 0})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "rpm"
        unknown = http.patch(f"/admin/v1/keys/{key['id']}", json={"colour": "blue"})
        assert unknown.status_code == 400
        assert key["id"] in [k["id"] for k in http.get("/admin/v1/keys").json()["data"]]
        assert http.delete(f"/admin/v1/keys/{key['id']}").json()["deleted"] is True
        assert http.get(f"/admin/v1/keys/{key['id']}").status_code == 404
        assert http.get("/admin/v1/keys/abc").status_code == 400


async def test_100_parallel_requests_against_10_rpm_let_exactly_10_through(
        server: InferdProcess) -> None:
    key = new_key(server, rpm=10)["key"]
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=body)
                                           for _ in range(100)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 10 and statuses.count(429) == 90
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(refused.headers["retry-after"]) <= 6


def test_token_budget_refuses_with_insufficient_quota(server: InferdProcess) -> None:
    key = new_key(server, token_budget=30)["key"]
    client = sdk(server, key)
    # echo: 4 prompt + 4 completion tokens; the reservation is the estimate with max_tokens
    for _ in range(3):
        client.chat.completions.create(model="echo", max_tokens=4,
                                       messages=[{"role": "user", "content": "a b c d"}])
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="echo", max_tokens=4,
                                       messages=[{"role": "user", "content": "a b c d"}])
    assert info.value.body["code"] == "insufficient_quota"  # type: ignore[index]


def test_every_request_is_in_usage_with_status_and_ttft(server: InferdProcess) -> None:
    key = new_key(server, models=["echo"])
    client = sdk(server, key["key"])
    for _ in range(5):
        chat(client)
    stream = client.chat.completions.create(model="echo", stream=True,
                                            messages=[{"role": "user", "content": "a b c"}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "a b c"
    with pytest.raises(openai.PermissionDeniedError):
        chat(client, model="echo2")
    with admin(server) as http:
        usage = http.get("/admin/v1/usage", params={"key_id": str(key["id"]),
                                                    "group_by": "key,model"}).json()
        records = http.get("/admin/v1/usage/records",
                           params={"key_id": str(key["id"])}).json()["data"]
    totals = {row["model"]: row for row in usage["data"]}
    assert totals["echo"]["requests"] == 6 and totals["echo"]["errors"] == 0
    assert totals["echo"]["completion_tokens"] == 5 * 2 + 3
    assert totals["echo2"]["requests"] == 1 and totals["echo2"]["errors"] == 1
    streamed = [r for r in records if r["stream"]]
    assert len(streamed) == 1 and streamed[0]["ttft_ms"] is not None
    assert streamed[0]["replica"] == "local:echo"
    assert {r["status"] for r in records} == {200, 403}
    assert all(r["request_id"] for r in records)


def test_tables_are_admin_only_and_redacted(server: InferdProcess) -> None:
    key = new_key(server, owner="carol")
    with admin(server) as http:
        tables = http.get("/tables").json()["tables"]
        assert {"api_keys", "metrics"} <= set(tables)
        rows = http.get("/tables/api_keys").json()["data"]
        assert http.get("/tables/kv").status_code == 404
        assert http.get("/tables/alembic_version").status_code == 404
    assert len(rows) <= 100
    mine = next(r for r in rows if r["id"] == key["id"])
    assert mine["key_hash"] == "[redacted]" and mine["webhook_secret"] == "[redacted]"
    text = json.dumps(rows)
    assert key["key"] not in text and ADMIN_KEY not in text


def test_proxy_toolkit_generate_and_delete_api_key(server: InferdProcess) -> None:
    with admin(server) as http:
        made = http.post("/generate_api_key", json={"user_id": "dave", "allowed_rpm": 20})
        assert made.status_code == 200
        data = made.json()
        assert set(data) == {"api_key", "id", "enabled"} and data["enabled"] is True
        assert chat(sdk(server, data["api_key"]))  # used: so it is disabled, not deleted
        gone = http.post("/delete_api_key", json={"user_id": "dave", "api_key_id": data["id"]})
        assert gone.json() == {"message": "API key disabled successfully"}
        again = http.post("/delete_api_key", json={"user_id": "dave", "api_key_id": data["id"]})
        assert again.status_code == 409
        other = http.post("/delete_api_key", json={"user_id": "eve", "api_key_id": data["id"]})
        assert other.status_code == 404
        unused = http.post("/generate_api_key", json={"user_id": "dave"}).json()
        gone = http.post("/delete_api_key", json={"user_id": "dave", "api_key_id": unused["id"]})
        assert gone.json() == {"message": "API key deleted successfully"}
        assert http.post("/generate_api_key", json={}).status_code == 400


def test_proxy_toolkit_chat_completions_without_the_v1_prefix(server: InferdProcess) -> None:
    key = new_key(server)["key"]
    # an OpenAI client pointed at the proxy toolkit's root, as its users have it
    toolkit = openai.OpenAI(base_url=server.url, api_key=key, max_retries=0)
    answer = toolkit.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "no prefix"}])
    assert answer.choices[0].message.content == "no prefix"
    stream = toolkit.chat.completions.create(
        model="echo", stream=True, messages=[{"role": "user", "content": "a b c"}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "a b c"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url, api_key="sk-wrong-key", max_retries=0) \
            .chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}])
    queued = httpx.post(server.url + "/chat/completions", headers={
        "Authorization": f"Bearer {key}", "Prefer": "respond-async"}, json={
        "model": "echo", "messages": [{"role": "user", "content": "later"}]})
    assert queued.status_code == 202, queued.text
    assert queued.json()["endpoint"] == "/v1/chat/completions"


def test_metrics_in_prometheus_format(server: InferdProcess) -> None:
    key = new_key(server)["key"]
    chat(sdk(server, key))
    text = httpx.get(server.url + "/metrics").text
    for name in ("inferd_requests_total{", "inferd_request_duration_seconds_bucket{",
                 "inferd_tokens_total{", "inferd_requests_in_flight{",
                 "inferd_replica_healthy{", "inferd_usage_records_pending",
                 "inferd_rate_limited_total", "inferd_auth_failures_total"):
        assert name in text, name
    assert 'inferd_requests_total{endpoint="chat",model="echo",status="200"}' in text
    assert 'inferd_replica_healthy{model="echo",replica="local:echo"} 1.0' in text


def test_json_logs_carry_the_request_id(server: InferdProcess) -> None:
    key = new_key(server)["key"]
    response = httpx.post(server.url + "/v1/chat/completions",
                          headers={"Authorization": f"Bearer {key}", "X-Request-ID": "trace-42"},
                          json={"model": "echo", "messages": [{"role": "user", "content": "x"}]})
    assert response.headers["x-request-id"] == "trace-42"

    def logged() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("request_id") == "trace-42"]

    mine = wait_for(logged, what="the request's log line")
    assert mine[0]["logger"] == "inferd.requests" and mine[0]["status"] == 200
    assert key not in server.log()


def test_cli_revocation_reaches_the_running_server(server: InferdProcess) -> None:
    env = {**server.env, "INFERD_DATA_DIR": str(server.data_dir)}

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "inferd", "keys", *args], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    created = json.loads(cli("create", "--name", "cli", "--model", "echo", "--rpm", "50"))
    client = sdk(server, created["key"])
    assert chat(client)  # made by another process: found on first use
    assert str(created["id"]) in cli("list")
    revoked = json.loads(cli("revoke", str(created["id"])))
    assert revoked["enabled"] is False

    def refused() -> bool:
        try:
            chat(client)
        except openai.AuthenticationError:
            return True
        return False

    wait_for(refused, within=60, what="the CLI's revocation reaching the server")


