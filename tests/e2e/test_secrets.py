"""No secret leaks: a realistic run of ``inferd serve`` (keys, replicas with credentials and a
token in the URL, jobs with signed webhooks, requests that fail), then its whole log, the
``/tables`` and admin answers, ``/metrics``, ``/openapi.json``, the UI and the database files
are searched for every secret the run made. Then the secret key is rotated with
``inferd secrets rotate`` and the server comes back with the new key only.

The upstream replica and the webhook receiver are aiohttp servers on loopback; the client is
httpx and the official openai SDK.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web

from inferd.jobs.webhooks import verify
from inferd.secretbox import new_key
from tests.helpers import ROOT, InferdProcess, serving, wait_for_async

ADMIN_KEY = "sk-admin-flow-secret-51c0a7e2"
UPSTREAM_KEY = "sk-upstream-credential-d41f9b"
WRONG_UPSTREAM_KEY = "sk-upstream-wrong-credential-77ae01"
URL_TOKEN = "url-token-0e8c3b5d"
ECHO = json.dumps([{"name": "echo", "kind": "echo"}])


def server_env(data: Path, secret_key: str) -> dict[str, str]:
    return {"INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_MODELS": ECHO, "INFERD_SECRET_KEY": secret_key,
            "INFERD_LOG_REQUESTS": "true", "INFERD_LOG_LEVEL": "debug",
            "INFERD_KEY_REFRESH_SECONDS": "0.3", "INFERD_HEALTH_CHECK_INTERVAL": "0.5",
            "INFERD_JOB_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1/32"]',
            "INFERD_JOB_WEBHOOK_BACKOFF_SECONDS": "0.1", "INFERD_DATA_DIR": str(data)}


def upstream_app() -> web.Application:
    """An OpenAI-compatible upstream that takes only ``UPSTREAM_KEY`` and ``URL_TOKEN``."""

    async def chat(request: web.Request) -> web.Response:
        if (request.headers.get("Authorization") != f"Bearer {UPSTREAM_KEY}"
                or request.query.get("token") != URL_TOKEN):
            return web.json_response({"error": {"message": "invalid credential",
                                                "type": "authentication_error"}}, status=401)
        body = await request.json()
        return web.json_response({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "from upstream"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    return app


async def _chat(client: httpx.AsyncClient, key: str, model: str) -> httpx.Response:
    return await client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                             json={"model": model, "messages": [{"role": "user", "content": "hi"}],
                                   "max_tokens": 4})


async def _run_flow(server: InferdProcess, upstream: str, hook_url: str,
                    received: list[tuple[dict[str, str], bytes]]) -> tuple[list[str], str]:
    """Everything a user and an admin do; returns the secrets made and the user's key."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        created = (await http.post("/admin/v1/keys", headers=admin, json={"name": "flow"})).json()
        user_key, hook_secret = created["key"], created["webhook_secret"]
        replica = {"kind": "http", "url": f"{upstream}/v1?token={URL_TOKEN}",
                   "api_key": UPSTREAM_KEY, "options": {"health_url": upstream + "/health"}}
        made = await http.post("/admin/v1/models", headers=admin,
                               json={"name": "remote", "replicas": [replica]})
        assert made.status_code in (200, 201), made.text
        broken = {**replica, "api_key": WRONG_UPSTREAM_KEY}
        made = await http.post("/admin/v1/models", headers=admin,
                               json={"name": "broken", "replicas": [broken]})
        assert made.status_code in (200, 201), made.text

        ok = await _chat(http, user_key, "remote")
        assert ok.status_code == 200, ok.text
        assert ok.json()["choices"][0]["message"]["content"] == "from upstream"
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=user_key, max_retries=0)
        answer = await client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "hello"}])
        assert answer.choices[0].message.content
        # failures: the upstream refuses its credential; keys that are wrong in small ways
        failed = await _chat(http, user_key, "broken")
        assert failed.status_code == 502 and failed.json()["error"]["message"]
        for wrong in (user_key + "x", user_key[:-1], ADMIN_KEY + "0", UPSTREAM_KEY):
            assert (await _chat(http, wrong, "echo")).status_code == 401
        assert (await http.get("/admin/v1/keys", headers={
            "Authorization": f"Bearer {user_key}"})).status_code == 403
        refused = await http.post("/v1/jobs", headers={"Authorization": f"Bearer {user_key}"},
                                  json={"endpoint": "/v1/chat/completions",
                                        "webhook_url": "http://169.254.169.254/latest",
                                        "body": {"model": "echo", "messages": [
                                            {"role": "user", "content": "x"}]}})
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "webhook_url_not_allowed"

        job = (await http.post("/v1/jobs", headers={"Authorization": f"Bearer {user_key}"},
                               json={"endpoint": "/v1/chat/completions", "webhook_url": hook_url,
                                     "body": {"model": "remote", "messages": [
                                         {"role": "user", "content": "job"}]}})).json()

        async def delivered() -> dict[str, Any] | None:
            found: dict[str, Any] = (await http.get(
                f"/v1/jobs/{job['id']}", headers={"Authorization": f"Bearer {user_key}"})).json()
            return found if found["webhook_status"] == "delivered" else None

        await wait_for_async(delivered, within=120, what="the webhook delivery")
        assert verify(hook_secret, *received[-1])
        installation = (await http.get("/v1/webhooks/secret", headers=admin)).json()["secret"]
    secrets = [ADMIN_KEY, user_key, UPSTREAM_KEY, WRONG_UPSTREAM_KEY, URL_TOKEN, hook_secret,
               hook_secret.removeprefix("whsec_"), installation,
               installation.removeprefix("whsec_")]
    return secrets, user_key


async def _everything_shown(server: InferdProcess) -> dict[str, str]:
    """What the running server shows to an admin after the fact."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    shown: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=server.url, timeout=60, headers=admin,
                                 follow_redirects=True) as http:
        tables = (await http.get("/tables")).json()["tables"]
        assert "replicas" in tables and "replica_security_rules" in tables
        paths = [f"/tables/{t}" for t in tables]
        paths += ["/admin/v1/keys", "/admin/v1/models", "/admin/v1/replicas", "/admin/v1/usage",
                  "/admin/v1/usage/records", "/metrics", "/openapi.json", "/", "/models",
                  "/health", "/ready"]
        paths += [f"/ui/static/{name}" for name in ("js/main.js", "index.html")]
        for path in paths:
            response = await http.get(path)
            assert response.status_code == 200, (path, response.text)
            shown[path] = response.text
        stored = [r for r in json.loads(shown["/admin/v1/replicas"])["data"]
                  if r["source"] == "api"]
        assert len(stored) == 2 and all(r["url"].endswith("/v1?token=***") for r in stored)
        assert all(r["has_api_key"] for r in stored)
    return shown


def _database_files(data: Path) -> dict[str, str]:
    """Every byte of the SQLite database (main file, WAL), decoded loosely for searching."""
    return {path.name: path.read_bytes().decode("latin-1") for path in data.glob("inferd.db*")}


def _rotate(data: Path, keys: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "INFERD_SECRET_KEY": keys,
           "INFERD_DATA_DIR": str(data)}
    return subprocess.run([sys.executable, "-m", "inferd", "secrets", "rotate"], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


async def test_no_secret_appears_anywhere_and_the_key_rotates(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old_key, new_secret_key = new_key(), new_key()
    received: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(({k.lower(): v for k, v in request.headers.items()},
                         await request.read()))
        return web.Response(status=200)

    hooks = web.Application()
    hooks.router.add_post("/hook", hook)
    async with serving(upstream_app()) as upstream, serving(hooks) as hook_base:
        server = InferdProcess(data, "--no-bundled", env=server_env(data, old_key))
        await asyncio.to_thread(server.start)
        try:
            secrets, user_key = await _run_flow(server, upstream, hook_base + "/hook", received)
            shown = await _everything_shown(server)
        finally:
            await asyncio.to_thread(server.stop)
        shown["server log"] = server.log_path.read_text(errors="replace")
        shown.update(_database_files(data))
        shown["webhook bodies"] = "\n".join(body.decode() for _h, body in received)
        secrets.append(old_key)
        assert "replica" in shown["server log"]  # the log has the run in it
        for secret in secrets:
            for where, text in shown.items():
                assert secret not in text, f"a secret appears in {where}"

        rotated = _rotate(data, f"{new_secret_key},{old_key}")
        assert rotated.returncode == 0, rotated.stderr
        count = int(rotated.stdout.split("re-encrypted ", 1)[1].split()[0])
        assert count >= 3  # the two credentials and the user's webhook secret at least
        again = InferdProcess(data, "--no-bundled", env=server_env(data, new_secret_key))
        await asyncio.to_thread(again.start)
        try:
            async with httpx.AsyncClient(base_url=again.url, timeout=60) as http:
                async def answered() -> httpx.Response | None:
                    response = await _chat(http, user_key, "remote")
                    return response if response.status_code == 200 else None

                response = await wait_for_async(answered, within=60,
                                                what="the replica with its credential")
                assert response.json()["choices"][0]["message"]["content"] == "from upstream"
                mine = (await http.get("/v1/webhooks/secret",
                                       headers={"Authorization": f"Bearer {user_key}"})).json()
                assert mine["secret"] == secrets[5]
        finally:
            await asyncio.to_thread(again.stop)
        assert all(old_key not in text for text in _database_files(data).values())

        stale = InferdProcess(data, "--no-bundled", env=server_env(data, old_key))
        with pytest.raises(RuntimeError, match="INFERD_SECRET_KEY"):
            await asyncio.to_thread(stale.start)
        await asyncio.to_thread(stale.stop)


def test_rotate_needs_a_key(tmp_path: Path) -> None:
    result = _rotate(tmp_path, "")
    assert result.returncode != 0 and "INFERD_SECRET_KEY is not set" in result.stderr
