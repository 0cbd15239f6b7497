"""The request log end to end: ``inferd serve`` as a subprocess, chat requests (plain and
streamed) made with the official ``openai`` SDK, read back through ``/v1/requests`` (a key's
own) and ``/admin/v1/requests`` (admin and auditor keys), and with ``inferd requests list``
on the database once the server stopped cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.helpers import ROOT, InferdProcess, spooled_usage, wait_for

ADMIN_KEY = "sk-test-admin-requests-0123456789abcdef"
MODELS = json.dumps([{"name": "echo", "kind": "echo"}, {"name": "echo2", "kind": "echo"}])
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
MESSAGES: Any = [{"role": "user", "content": "hello there"}]


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (response.status_code, response.text)
    return response.json()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("requests")


@pytest.fixture(scope="module")
def server(data_dir: Path) -> Iterator[InferdProcess]:
    env = {"INFERD_MODELS": MODELS, "INFERD_ADMIN_KEY": ADMIN_KEY}
    with InferdProcess(data_dir, "--no-bundled", env=env) as process:
        yield process


@pytest.fixture(scope="module")
def admin(server: InferdProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
        yield client


def new_key(admin: httpx.Client, **spec: Any) -> dict[str, Any]:
    key: dict[str, Any] = ok(admin.post("/admin/v1/keys", json=spec), 201)
    return key


def requests_of(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every request the route lists with ``params``, page after page by cursor."""
    rows: list[dict[str, Any]] = []
    params = {"limit": 2, **params}
    while True:
        page = ok(client.get(path, params=params))
        rows.extend(page["data"])
        if not page["has_more"]:
            assert page["next_cursor"] is None
            return rows
        params["cursor"] = page["next_cursor"]


def test_chat_requests_are_logged_and_read_back(server: InferdProcess,
                                                admin: httpx.Client) -> None:
    user = new_key(admin, name="app", models=["echo"])
    other = new_key(admin, name="other")
    sdk = openai.OpenAI(base_url=server.url + "/v1", api_key=user["key"], max_retries=0,
                        default_headers={"User-Agent": "reqlog-test/1.0"})
    answer = sdk.chat.completions.create(
        model="echo", messages=MESSAGES, max_tokens=8,
        extra_headers={"X-Request-ID": "rl-sync", "traceparent":
                       f"00-{TRACE}-00f067aa0ba902b7-01"})
    assert answer.usage is not None
    chunks = list(sdk.chat.completions.create(
        model="echo", messages=MESSAGES, max_tokens=8, stream=True,
        stream_options={"include_usage": True}, extra_headers={"X-Request-ID": "rl-stream"}))
    assert chunks
    with pytest.raises(openai.PermissionDeniedError):  # not on the key's allow-list
        sdk.chat.completions.create(model="echo2", messages=MESSAGES,
                                    extra_headers={"X-Request-ID": "rl-denied"})
    theirs = openai.OpenAI(base_url=server.url + "/v1", api_key=other["key"], max_retries=0)
    theirs.chat.completions.create(model="echo2", messages=MESSAGES, max_tokens=4,
                                   extra_headers={"X-Request-ID": "rl-other"})

    with httpx.Client(base_url=server.url, timeout=60,
                      headers={"Authorization": f"Bearer {user['key']}"}) as client:
        mine = requests_of(client, "/v1/requests")
        assert [r["request_id"] for r in mine] == ["rl-denied", "rl-stream", "rl-sync"]
        sync, streamed = mine[2], mine[1]
        assert sync["key_id"] == str(user["id"]) and sync["key_name"] == "app"
        assert sync["model"] == "echo" and sync["endpoint"] == "chat"
        assert sync["status"] == 200 and sync["error"] is None and not sync["stream"]
        assert sync["prompt_tokens"] == answer.usage.prompt_tokens
        assert sync["completion_tokens"] == answer.usage.completion_tokens
        assert sync["trace_id"] == TRACE and sync["user_agent"] == "reqlog-test/1.0"
        assert sync["client_address"] == "127.0.0.1" and sync["attempts"] == 1
        assert sync["replica"] == "local:echo" and sync["latency_ms"] > 0
        assert streamed["stream"] and streamed["ttft_ms"] is not None
        assert streamed["completion_tokens"] > 0 and streamed["trace_id"] is None
        denied = mine[0]
        assert denied["status"] == 403 and denied["error"] == "model_not_allowed"
        assert denied["attempts"] == 0
        # filters
        assert [r["request_id"] for r in requests_of(client, "/v1/requests",
                                                     status="4xx")] == ["rl-denied"]
        assert [r["request_id"] for r in requests_of(client, "/v1/requests",
                                                     request_id="rl-stream")] == ["rl-stream"]
        assert requests_of(client, "/v1/requests", model="echo2") == [
            r for r in mine if r["model"] == "echo2"]
        # a user key never sees another key's, even when it asks for them
        assert requests_of(client, "/v1/requests", key_id=str(other["id"])) == []
        assert requests_of(client, "/v1/requests", key_id=str(user["id"])) == mine
        refused = client.get("/admin/v1/requests")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "admin_scope_required"

    every = requests_of(admin, "/admin/v1/requests", since=0)
    ids = [r["request_id"] for r in every]
    assert {"rl-sync", "rl-stream", "rl-denied", "rl-other"} <= set(ids)
    assert [r["request_id"] for r in requests_of(admin, "/admin/v1/requests",
                                                 key_id=str(other["id"]))] == ["rl-other"]
    newest = every[0]["created_at"]
    assert requests_of(admin, "/admin/v1/requests", **{"from": newest + 1}) == []
    metrics = admin.get("/metrics").text  # every record written (the reads flushed them)
    assert "inferd_request_log_pending 0.0" in metrics
    assert "inferd_request_log_dropped 0.0" in metrics
    auditor = new_key(admin, name="auditor", scope="auditor")
    with httpx.Client(base_url=server.url, timeout=60,
                      headers={"Authorization": f"Bearer {auditor['key']}"}) as client:
        assert [r["request_id"] for r in requests_of(
            client, "/admin/v1/requests", request_id="rl-other")] == ["rl-other"]


def test_a_team_keys_requests_are_listed_under_its_team_and_user(
        server: InferdProcess, admin: httpx.Client) -> None:
    """A team and a user that set no limits: their keys' requests still carry their ids, and
    the ``team`` and ``user`` filters keep them."""
    team = ok(admin.post("/admin/v1/teams", json={"name": "reqlog-team"}), 201)
    other_team = ok(admin.post("/admin/v1/teams", json={"name": "reqlog-other"}), 201)
    user = ok(admin.post("/admin/v1/users", json={"name": "reqlog-user"}), 201)
    ok(admin.put(f"/admin/v1/teams/{team['id']}/members/{user['id']}",
                 json={"role": "member"}))
    teamed = new_key(admin, name="teamed", team_id=team["id"], user_id=user["id"])
    own = new_key(admin, name="users-own", user_id=user["id"])
    apart = new_key(admin, name="apart", team_id=other_team["id"])
    for key, request_id in ((teamed, "rl-team-1"), (own, "rl-user-own"), (apart, "rl-apart"),
                            (teamed, "rl-team-2")):
        sdk = openai.OpenAI(base_url=server.url + "/v1", api_key=key["key"], max_retries=0)
        sdk.chat.completions.create(model="echo", messages=MESSAGES, max_tokens=2,
                                    extra_headers={"X-Request-ID": request_id})

    def listed(**params: Any) -> list[str]:
        return [r["request_id"] for r in requests_of(admin, "/admin/v1/requests", **params)]

    assert listed(team=team["id"]) == ["rl-team-2", "rl-team-1"]
    assert listed(team=other_team["id"]) == ["rl-apart"]
    assert listed(user=user["id"]) == ["rl-team-2", "rl-user-own", "rl-team-1"]
    assert listed(user=user["id"], team=team["id"]) == ["rl-team-2", "rl-team-1"]
    [first] = requests_of(admin, "/admin/v1/requests", request_id="rl-team-1")
    assert (first["team_id"], first["user_id"]) == (team["id"], user["id"])
    assert first["key_id"] == str(teamed["id"])
    [alone] = requests_of(admin, "/admin/v1/requests", request_id="rl-apart")
    assert (alone["team_id"], alone["user_id"]) == (other_team["id"], None)
    # the key's own read takes the filters too: its team's requests are its own here
    with httpx.Client(base_url=server.url, timeout=60,
                      headers={"Authorization": f"Bearer {teamed['key']}"}) as client:
        assert [r["request_id"] for r in requests_of(
            client, "/v1/requests", team=team["id"])] == ["rl-team-2", "rl-team-1"]
        assert requests_of(client, "/v1/requests", team=other_team["id"]) == []
    # moved to the other team (this process applies the change before it answers): its next
    # request is listed there, its earlier ones stay under the first
    ok(admin.put(f"/admin/v1/teams/{other_team['id']}/members/{user['id']}",
                 json={"role": "member"}))
    ok(admin.patch(f"/admin/v1/keys/{teamed['id']}", json={"team_id": other_team["id"]}))
    sdk = openai.OpenAI(base_url=server.url + "/v1", api_key=teamed["key"], max_retries=0)
    sdk.chat.completions.create(model="echo", messages=MESSAGES, max_tokens=2,
                                extra_headers={"X-Request-ID": "rl-team-moved"})
    assert listed(team=other_team["id"]) == ["rl-team-moved", "rl-apart"]
    assert listed(team=team["id"]) == ["rl-team-2", "rl-team-1"]


def test_bad_filters_are_400s_in_the_error_shape(admin: httpx.Client) -> None:
    for params, param in (({"status": "abc"}, "status"), ({"cursor": "nope"}, "cursor"),
                          ({"limit": 0}, "limit"), ({"from": "x"}, "from"),
                          ({"min_latency_ms": -1}, "min_latency_ms"), ({"team": "x"}, "team"),
                          ({"user": 0}, "user")):
        response = admin.get("/admin/v1/requests", params=params)
        assert response.status_code == 400, (params, response.text)
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert param in (error.get("param") or "") + error["message"], error


def test_a_clean_stop_writes_every_record_and_the_command_reads_them(
        server: InferdProcess, admin: httpx.Client, data_dir: Path) -> None:
    team = ok(admin.post("/admin/v1/teams", json={"name": "burst-team"}), 201)
    user = new_key(admin, name="burst", team_id=team["id"])
    sdk = openai.OpenAI(base_url=server.url + "/v1", api_key=user["key"], max_retries=0)
    for i in range(20):
        sdk.chat.completions.create(model="echo", messages=MESSAGES, max_tokens=2,
                                    extra_headers={"X-Request-ID": f"rl-burst-{i}"})
    server.stop()  # the writer's buffer is written before the process ends

    def command(*options: str) -> dict[str, Any]:
        listed = subprocess.run(
            [sys.executable, "-m", "inferd", "requests", "list", *options, "--limit", "1000"],
            capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src"),
                 "INFERD_DATA_DIR": str(data_dir)})
        assert listed.returncode == 0, listed.stderr
        page: dict[str, Any] = json.loads(listed.stdout)
        return page

    page = command("--key", str(user["id"]))
    assert [r["request_id"] for r in page["data"]] == [f"rl-burst-{i}" for i in
                                                       reversed(range(20))]
    assert page["has_more"] is False
    assert command("--team", str(team["id"]))["data"] == page["data"]
    assert not list((data_dir / "spool" / "requests").glob("*.spool"))


def test_the_log_can_be_turned_off(tmp_path: Path) -> None:
    env = {"INFERD_MODELS": MODELS, "INFERD_REQUEST_LOG": "false"}
    with InferdProcess(tmp_path, "--no-bundled", env=env) as process:
        sdk = openai.OpenAI(base_url=process.url + "/v1", api_key="unused", max_retries=0)
        sdk.chat.completions.create(model="echo", messages=MESSAGES, max_tokens=2)
        with httpx.Client(base_url=process.url, timeout=60) as client:
            assert ok(client.get("/v1/requests"))["data"] == []
            assert ok(client.get("/admin/v1/requests"))["data"] == []


def test_the_maintenance_sweep_removes_requests_past_the_retention(tmp_path: Path) -> None:
    """Requests 10 days old, a retention of one day: the running server's sweep removes them
    and keeps the recent ones."""
    from inferd.settings import load_settings
    from inferd.store.db import open_database
    from inferd.store.request_log import RequestLogStore, RequestRecord

    async def add(records: list[RequestRecord]) -> None:
        db = open_database(load_settings(data_dir=tmp_path).storage)
        try:
            await db.migrate()
            await RequestLogStore(db).insert_many(records)
        finally:
            await db.close()

    now = time.time()
    asyncio.run(add([RequestRecord(
        when, f"rl-{name}", None, None, "echo", None, "chat", False, 200, None, 1.0, None, 1,
        1, None, 0.0, 1, None, None, None) for when, name in
        ((now - 10 * 86400, "old"), (now - 10 * 86400 + 1, "old2"), (now - 60, "recent"))]))
    env = {"INFERD_MODELS": MODELS, "INFERD_REQUEST_LOG_RETENTION_DAYS": "1",
           "INFERD_JOB_SWEEP_SECONDS": "0.2"}
    with (InferdProcess(tmp_path, "--no-bundled", env=env) as process,
          httpx.Client(base_url=process.url, timeout=60) as http):
        wait_for(lambda: [r["request_id"] for r in requests_of(http, "/admin/v1/requests")]
                 == ["rl-recent"], what="the old requests removed")


def test_records_pending_at_a_kill_9_are_written_after_the_restart(tmp_path: Path) -> None:
    """Records accepted and not yet written (the writer would wait an hour) are in the spool:
    a kill -9 loses none, the next start writes each once."""
    env = {"INFERD_MODELS": MODELS, "INFERD_USAGE_FLUSH_SECONDS": "3600"}

    def listed(process: InferdProcess) -> list[str]:
        with httpx.Client(base_url=process.url, timeout=60) as http:
            return [r["request_id"] for r in requests_of(http, "/admin/v1/requests",
                                                          limit=1000)]

    server = InferdProcess(tmp_path, "--no-bundled", env=env)
    with server:
        sdk = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        for i in range(30):
            sdk.chat.completions.create(model="echo", messages=MESSAGES, max_tokens=2,
                                        extra_headers={"X-Request-ID": f"rl-kill-{i}"})
        wait_for(lambda: spooled_usage(tmp_path, "requests") == 30, what="30 records spooled")
        server.kill()
    wanted = [f"rl-kill-{i}" for i in reversed(range(30))]
    again = InferdProcess(tmp_path, "--no-bundled", env=env, port=server.port)
    with again:
        assert listed(again) == wanted  # read once the dead process's spool is replayed
        again.stop()  # a clean stop: its records are in, its spool is gone
    assert list((tmp_path / "spool" / "requests").glob("*.spool")) == []
    with InferdProcess(tmp_path, "--no-bundled", env=env, port=server.port) as third:
        assert listed(third) == wanted  # not one more: nothing replayed twice
