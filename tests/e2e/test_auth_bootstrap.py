"""The auth rule at start-up, the first admin key, Redis-shared limits, usage flushed on stop."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.test_control_plane import ECHO_MODELS, echo_env
from tests.helpers import InferdProcess, free_port, require_service

BODY = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


def test_loopback_runs_without_keys_until_an_admin_key_exists(tmp_path: Path) -> None:
    with InferdProcess(tmp_path, "--no-bundled", env=echo_env()) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        assert client.chat.completions.create(model="echo", messages=MESSAGES).choices[0]\
            .message.content == "hi"
        made = httpx.post(server.url + "/admin/v1/keys", json={"scope": "admin"})
        assert made.status_code == 201
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="echo", messages=MESSAGES)
        admin = openai.OpenAI(base_url=server.url + "/v1", api_key=made.json()["key"])
        assert admin.chat.completions.create(model="echo", messages=MESSAGES).choices


def test_other_address_refuses_to_start_without_an_admin_key(tmp_path: Path) -> None:
    server = InferdProcess(tmp_path, "--no-bundled", "--host", "0.0.0.0", env=echo_env())
    with pytest.raises(RuntimeError, match="not a loopback address"):
        server.start(timeout=60)
    off = InferdProcess(tmp_path / "off", "--no-bundled", "--host", "0.0.0.0",
                        env=echo_env(INFERD_AUTH="off"))
    with pytest.raises(RuntimeError, match="only allowed on a loopback"):
        off.start(timeout=60)


def test_other_address_with_admin_key_requires_keys(tmp_path: Path) -> None:
    env = echo_env(INFERD_ADMIN_KEY="sk-test-admin-key-for-bootstrap")
    with InferdProcess(tmp_path, "--no-bundled", "--host", "0.0.0.0", env=env) as server:
        assert httpx.post(server.url + "/v1/chat/completions", json=BODY).status_code == 401
        ok = httpx.post(server.url + "/v1/chat/completions", json=BODY,
                        headers={"Authorization": "Bearer sk-test-admin-key-for-bootstrap"})
        assert ok.status_code == 200


def test_auth_on_generates_the_first_admin_key_once(tmp_path: Path) -> None:
    env = echo_env(INFERD_AUTH="on")
    with InferdProcess(tmp_path, "--no-bundled", env=env) as server:
        found = re.findall(r"sk-inferd-[A-Za-z0-9_-]{43}", server.log())
        assert len(found) == 1
        assert httpx.post(server.url + "/v1/chat/completions", json=BODY).status_code == 401
        ok = httpx.post(server.url + "/v1/chat/completions", json=BODY,
                        headers={"Authorization": f"Bearer {found[0]}"})
        assert ok.status_code == 200
    with InferdProcess(tmp_path, "--no-bundled", port=server.port, env=env) as again:
        assert re.findall(r"sk-inferd-[A-Za-z0-9_-]{43}", again.log()) == found  # not again


def test_usage_buffer_is_written_on_shutdown(tmp_path: Path) -> None:
    env = echo_env(INFERD_USAGE_FLUSH_SECONDS="3600")
    server = InferdProcess(tmp_path, "--no-bundled", env=env).start()
    try:
        with httpx.Client(base_url=server.url) as client:
            for _ in range(50):
                assert client.post("/v1/chat/completions", json=BODY).status_code == 200
        with sqlite3.connect(tmp_path / "inferd.db") as db:
            assert db.execute("select count(*) from metrics").fetchone()[0] == 0
    finally:
        server.stop()
    with sqlite3.connect(tmp_path / "inferd.db") as db:
        assert db.execute("select count(*) from metrics").fetchone()[0] == 50


async def test_limits_shared_by_two_gateways_through_redis(tmp_path: Path) -> None:
    require_service("redis")
    admin_key = "sk-test-admin-redis-0123456789"
    # keys of this test's own (a fresh database numbers its keys as every other test's does)
    env = echo_env(INFERD_REDIS_URL="redis://127.0.0.1:6379/0", INFERD_ADMIN_KEY=admin_key,
                   INFERD_REDIS_PREFIX=f"test-{uuid.uuid4().hex[:10]}", INFERD_MODELS=ECHO_MODELS)
    with InferdProcess(tmp_path, "--no-bundled", env=env) as one, \
            InferdProcess(tmp_path, "--no-bundled", port=free_port(), env=env) as two:
        async with httpx.AsyncClient() as http:
            made = (await http.post(one.url + "/admin/v1/keys", json={"rpm": 10},
                                    headers={"Authorization": f"Bearer {admin_key}"})).json()
        headers = {"Authorization": f"Bearer {made['key']}"}
        async with httpx.AsyncClient(timeout=30, headers=headers,
                                     limits=httpx.Limits(max_connections=100)) as client:
            responses = await asyncio.gather(*(
                client.post((one if i % 2 else two).url + "/v1/chat/completions", json=BODY)
                for i in range(100)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 10 and statuses.count(429) == 90
