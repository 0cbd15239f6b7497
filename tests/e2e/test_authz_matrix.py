"""The authorization matrix: every route of the app by every kind of caller, against the policy
``inferd.http.access.POLICY`` (printed in the documentation: docs/security/authorization.md).

Callers: no key, user key A, user key B, an auditor key (reads what an admin reads, changes
nothing), the admin key, the engines' key (``INFERD_ENGINE_API_KEY``: the engine registration
routes only), and a disabled, an expired and a deleted key. One ``inferd serve`` (echo
engines, an on-demand llama.cpp model that is never loaded by a user, and an ``http`` replica
standing in for an image, audio and moderation server), objects created once: A and B each
own a job, a file, a batch, a context and a contexts-and-results result; A also owns stored
responses, conversations and a picture. Each route has a probe (a request that succeeds for a
caller the policy allows); a cell is the status and error code one caller gets.
A route the app serves without a policy entry, or without a probe here, fails the test; so does
an admin operation that changes state without recording an event in the audit log.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiohttp import web

from inferd.app import create_app
from inferd.http.access import POLICY, Access, policy_table
from inferd.http.routes import declared
from inferd.settings import bundled_gguf_path, load_settings
from tests.fake_audio import FakeAudio, silent_wav
from tests.helpers import ROOT, InferdProcess, wait_for

ADMIN_KEY = "sk-test-admin-authz-0123456789abcdef"
ENGINE_KEY = "sk-test-engines-authz-0123456789abcdef"
SLOW_TEXT = " ".join(f"w{i}" for i in range(600))  # 600 words at 0.5 s: running for minutes
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA"
                       "60e6kgAAAABJRU5ErkJggg==")
SCIM_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
SCIM_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
SCIM_PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hello there"}]}
INVALID = ("none", "disabled", "expired", "deleted")
# B and the auditor first: their 404s are seen before A or an admin deletes anything
VALID = ("auditor", "B", "A", "admin", "engine", "scim")
OPERATIONS = declared().operations
REFUSED_CODES = {"none": "missing_api_key", "disabled": "key_disabled",
                 "expired": "key_expired", "deleted": "invalid_api_key"}


# -- the upstream standing in for image, audio and moderation servers --------------------------
class FakeUpstream:
    """FakeAudio plus OpenAI's ``/v1/images/generations`` (a 1x1 PNG), served from a thread of
    their own so that the synchronous tests can use them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.audio = FakeAudio()
        self.runner: web.AppRunner | None = None

    def start(self) -> tuple[str, str]:
        self.thread.start()
        return asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)

    async def _start(self) -> tuple[str, str]:
        audio = await self.audio.__aenter__()
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/images/generations", self._images)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        return audio, f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def _models(self, _request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "painter"}]})

    async def _images(self, request: web.Request) -> web.Response:
        body = await request.json()
        data = [{"b64_json": base64.b64encode(PNG).decode()}] * int(body.get("n") or 1)
        return web.json_response({"created": int(time.time()), "data": data})

    def stop(self) -> None:
        async def close() -> None:
            await self.audio.__aexit__()
            if self.runner is not None:
                await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    tmp = tmp_path_factory.mktemp("authz")
    upstream = FakeUpstream()
    audio_url, images_url = upstream.start()
    config = tmp / "inferd.yaml"
    config.write_text(yaml.safe_dump({"remote_models": [
        {"name": "pics", "replicas": [{"kind": "http", "url": images_url,
                                       "options": {"capabilities": ["images"]}}]},
        {"name": "ears", "replicas": [{"kind": "http", "url": audio_url, "options": {
            "capabilities": ["audio.transcriptions", "audio.speech", "moderations"]}}]},
        # a model that cannot chat (never called: the model host refuses it first)
        {"name": "vectors", "replicas": [{"kind": "http", "url": images_url,
                                          "options": {"capabilities": ["embeddings"]}}]}]}))
    models = [{"name": "echo", "kind": "echo"},
              {"name": "slow", "kind": "echo", "echo_delay": 0.5},
              {"name": "tiny", "kind": "llamacpp", "path": bundled_gguf_path(),
               "load": "on_demand", "n_ctx": 256, "parallel": 1}]
    env = {"INFERD_MODELS": json.dumps(models), "INFERD_ADMIN_KEY": ADMIN_KEY,
           "INFERD_ENGINE_API_KEY": ENGINE_KEY,
           "INFERD_KEY_REFRESH_SECONDS": "0.3",
           # the matrix fails to authenticate hundreds of times from one address on purpose
           "INFERD_AUTH_FAILURE_LIMIT": "0",
           # single sign-on's routes, with a provider that does not answer (port 9: discard;
           # tests/e2e/test_sso.py signs in through a real one)
           "INFERD_OIDC_ISSUER": "http://127.0.0.1:9", "INFERD_OIDC_CLIENT_ID": "inferd"}
    proc = InferdProcess(tmp / "data", "--no-bundled", "--config", str(config), env=env)
    try:
        with proc:
            yield proc
    finally:
        upstream.stop()


# -- the objects every cell works on ----------------------------------------------------------
@dataclass
class World:
    """The keys (callers) and the ids of the objects A and B own."""

    url: str
    keys: dict[str, str | None] = field(default_factory=dict)
    key_ids: dict[str, int] = field(default_factory=dict)
    ids: dict[str, Any] = field(default_factory=dict)
    sessions: dict[str, httpx.Client] = field(default_factory=dict)  # kept-alive, per caller

    def client(self, caller: str) -> httpx.Client:
        key = self.keys[caller]
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120,
                            follow_redirects=False)

    def targets(self, caller: str) -> dict[str, Any]:
        """The ids a caller's request names: ``name@caller`` when the caller has its own
        target (an object a destructive route consumes), else ``name`` (A's)."""
        mine = {k.split("@")[0]: v for k, v in self.ids.items() if k.endswith(f"@{caller}")}
        return {**self.ids, **mine}


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (response.status_code, response.text)
    return response.json() if "json" in response.headers.get("content-type", "") else None


def finished_job(http: httpx.Client, job_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job: dict[str, Any] = ok(http.get(f"/v1/jobs/{job_id}"))
        return job if job["status"] in {"completed", "failed", "cancelled"} else None

    return wait_for(done, what=f"job {job_id} finishing")


def upload(http: httpx.Client, model: str, text: str = "hi") -> str:
    line = json.dumps({"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": model,
                                "messages": [{"role": "user", "content": text}]}})
    created = ok(http.post("/v1/files", data={"purpose": "batch"},
                           files={"file": ("in.jsonl", line.encode() + b"\n")}))
    return str(created["id"])


def own_objects(http: httpx.Client, ids: dict[str, Any], suffix: str) -> None:
    """A job, a file, a batch, a context and a contexts-and-results result of the caller
    (named ``*suffix``)."""
    job = ok(http.post("/v1/jobs", json={"endpoint": "/v1/chat/completions", "body": CHAT}), 202)
    ids["job" + suffix] = job["id"]
    ids["file" + suffix] = upload(http, "echo")
    batch = ok(http.post("/v1/batches", json={"input_file_id": ids["file" + suffix],
                                              "endpoint": "/v1/chat/completions"}))
    ids["batch" + suffix] = batch["id"]
    ids["ctx" + suffix] = ok(http.post("/contexts/", json={"content": "hello"}))["id"]
    result = ok(http.post(f"/models/send/echo/{ids['ctx' + suffix]}"), 202)
    ids["result" + suffix] = result["id"]
    finished_job(http, job["id"])


def make_key(admin: httpx.Client, name: str, **spec: Any) -> dict[str, Any]:
    created: dict[str, Any] = ok(admin.post("/admin/v1/keys", json={"name": name, **spec}), 201)
    return created


@pytest.fixture(scope="module")
def world(server: InferdProcess) -> Iterator[World]:
    w = World(server.url, keys={"none": None, "admin": ADMIN_KEY, "engine": ENGINE_KEY})
    ids = w.ids
    # engine instances: the admin and the engines' key each register, beat for and remove
    # their own (a user's is refused before it is looked up)
    ids.update({"inst": "matrix-user", "inst@admin": "matrix-admin",
                "inst@engine": "matrix-engine"})
    with w.client("admin") as admin:
        for name in ("A", "B"):
            created = make_key(admin, name)
            w.keys[name], w.key_ids[name] = created["key"], created["id"]
        auditor = make_key(admin, "auditor", scope="auditor")
        w.keys["auditor"], w.key_ids["auditor"] = auditor["key"], auditor["id"]
        scim = make_key(admin, "scim", scope="scim")
        w.keys["scim"], w.key_ids["scim"] = scim["key"], scim["id"]
        disabled = make_key(admin, "disabled")
        ok(admin.post(f"/admin/v1/keys/{disabled['id']}/disable"))
        w.keys["disabled"] = disabled["key"]
        w.keys["expired"] = make_key(admin, "expired", expires_at=1000)["key"]
        for name in ("t-disable", "t-delete"):
            ids[name] = make_key(admin, name)["id"]
        ids["toolkit-key"] = ok(admin.post("/generate_api_key",
                                           json={"user_id": "toolkit-user"}))["id"]
        replica = {"kind": "http", "url": "http://127.0.0.1:9/v1"}
        for name in ("spare", "spare-del", "toolkit-del"):
            model = ok(admin.post("/admin/v1/models", json={"name": name,
                                                            "replicas": [replica]}), 201)
            ids[f"{name}-id"] = model["id"]
            ids[f"{name}-replica"] = model["replicas"][0]["id"]
        for name in ("r-patch", "r-delete", "r-put", "r-toolkit-delete"):
            ids[name] = ok(admin.post("/admin/v1/replicas", json={"model": "spare", **replica}),
                           201)["id"]
        for name in ("prompt", "prompt-del"):
            ids[name] = ok(admin.post("/admin/v1/prompts", json={"name": name}), 201)["id"]
        for name in ("team", "team-del", "scim-team", "scim-team-del", "scim-team-del@admin",
                     "scim-team-del@scim"):
            ids[name] = ok(admin.post("/admin/v1/teams", json={"name": name}), 201)["id"]
        for name in ("user", "user-out", "user-del", "scim-user-del", "scim-user-del@admin",
                     "scim-user-del@scim"):
            ids[name] = ok(admin.post("/admin/v1/users", json={"name": name}), 201)["id"]
        # the names the SCIM routes create, one per caller allowed to
        ids.update({"scim-new": "scim-new", "scim-new@admin": "scim-new-admin",
                    "scim-new@scim": "scim-new-scim"})
        for name in ("user", "user-out"):
            ok(admin.put(f"/admin/v1/teams/{ids['team']}/members/{ids[name]}", json={}))
        deleted = make_key(admin, "deleted")
        ok(admin.delete(f"/admin/v1/keys/{deleted['id']}"))
        w.keys["deleted"] = deleted["key"]
    with w.client("A") as a:
        own_objects(a, ids, "")
        for owner in ("", "@admin"):
            job = ok(a.post("/v1/jobs", json={"endpoint": "/v1/chat/completions",
                                              "body": CHAT}), 202)
            ids["job-del" + owner] = finished_job(a, job["id"])["id"]
            slow = {"model": "slow", "messages": [{"role": "user", "content": SLOW_TEXT}]}
            ids["job-cancel" + owner] = ok(a.post("/v1/jobs", json={
                "endpoint": "/v1/chat/completions", "body": slow}), 202)["id"]
            ids["file-del" + owner] = upload(a, "echo")
            ids["batch-cancel" + owner] = ok(a.post("/v1/batches", json={
                "input_file_id": upload(a, "slow", SLOW_TEXT),
                "endpoint": "/v1/chat/completions"}))["id"]
        ids["resp"] = ok(a.post("/v1/responses", json={"model": "echo", "input": "hi"}))["id"]
        ids["resp-del"] = ok(a.post("/v1/responses", json={"model": "echo",
                                                           "input": "bye"}))["id"]
        ids["resp-bg"] = ok(a.post("/v1/responses", json={
            "model": "slow", "input": SLOW_TEXT, "background": True}))["id"]
        ids["conv"] = ok(a.post("/v1/conversations", json={
            "items": [{"role": "user", "content": "hi"}]}))["id"]
        ids["conv-del"] = ok(a.post("/v1/conversations", json={}))["id"]
        ids["conv-item"] = ok(a.get(f"/v1/conversations/{ids['conv']}/items"))["data"][0]["id"]
        added = ok(a.post(f"/v1/conversations/{ids['conv']}/items", json={
            "items": [{"role": "user", "content": "to delete"}]}))
        ids["conv-item-del"] = added["data"][0]["id"]
        picture = ok(a.post("/v1/images/generations", json={
            "model": "pics", "prompt": "a fox", "response_format": "url"}))
        ids["img"] = picture["data"][0]["url"].rsplit("/", 2)[-2]
    with w.client("B") as b:
        own_objects(b, ids, "-B")
    w.sessions = {caller: w.client(caller) for caller in w.keys}
    yield w
    for session in w.sessions.values():
        session.close()


# -- the probes: one request per route that succeeds for a caller the policy allows -----------
Body = Callable[[Mapping[str, Any]], Any]
Listed = Callable[[Any], set[Any]]


@dataclass(frozen=True)
class Probe:
    """A request for one route: the URL (``{name}`` filled from the world's ids), its body,
    the status it gets when allowed, and for lists the ids to look for (A's, B's)."""

    url: str
    ok: int = 200
    json: Body | None = None
    form: Mapping[str, str] | None = None
    files: Mapping[str, tuple[str, bytes]] | None = None
    listed: Listed | None = None
    own: tuple[str, str] = ("", "")


def data_ids(body: Any) -> set[Any]:
    return {item["id"] for item in body["data"]}


def plain_ids(body: Any) -> set[Any]:
    return {item["id"] for item in body}


def const(value: Any) -> Body:
    return lambda _ids: value


REPLICA = {"kind": "http", "url": "http://127.0.0.1:9/v1"}
WAV = {"file": ("a.wav", silent_wav())}
MESSAGES = {"messages": [{"role": "user", "content": "hi"}]}

PROBES: dict[tuple[str, str], Probe] = {
    ("GET", "/health"): Probe("/health"),
    ("GET", "/ready"): Probe("/ready"),
    ("GET", "/metrics"): Probe("/metrics"),
    ("GET", "/openapi.json"): Probe("/openapi.json"),
    ("GET", "/docs"): Probe("/docs"),
    ("GET", "/redoc"): Probe("/redoc"),
    ("GET", "/docs/static/{name}"): Probe("/docs/static/swagger-ui.css"),
    ("GET", "/"): Probe("/", ok=307),
    ("GET", "/ui"): Probe("/ui"),
    ("GET", "/ui/"): Probe("/ui/"),
    ("GET", "/ui/static/{name:path}"): Probe("/ui/static/style.css"),
    ("POST", "/ui/session"): Probe("/ui/session"),
    ("GET", "/ui/sso/config"): Probe("/ui/sso/config"),
    # the provider does not answer here: 503 in the OpenAI shape
    ("GET", "/ui/sso/login"): Probe("/ui/sso/login", ok=503),
    # no login in progress (no login cookie): refused and audited
    ("GET", "/ui/sso/callback"): Probe("/ui/sso/callback?code=c&state=s", ok=401),
    ("POST", "/ui/sso/session"): Probe("/ui/sso/session", ok=401),
    ("POST", "/ui/sso/logout"): Probe("/ui/sso/logout"),
    ("GET", "/admin/v1/sso/rules"): Probe("/admin/v1/sso/rules"),
    ("PUT", "/admin/v1/sso/rules"): Probe("/admin/v1/sso/rules", json=const({"rules": []})),
    ("GET", "/admin/v1/audit"): Probe("/admin/v1/audit?limit=5"),
    ("GET", "/admin/v1/audit/export"): Probe("/admin/v1/audit/export?action=key.create"),
    ("GET", "/admin/v1/requests"): Probe("/admin/v1/requests?limit=5&status=error"),
    ("GET", "/v1/requests"): Probe("/v1/requests?limit=5"),
    ("POST", "/v1/chat/completions"): Probe("/v1/chat/completions", json=const(CHAT)),
    ("POST", "/chat/completions"): Probe("/chat/completions", json=const(CHAT)),
    ("POST", "/v1/completions"): Probe("/v1/completions",
                                       json=const({"model": "echo", "prompt": "hi"})),
    ("POST", "/v1/embeddings"): Probe("/v1/embeddings",
                                      json=const({"model": "echo", "input": "hi"})),
    ("POST", "/v1/rerank"): Probe("/v1/rerank", json=const(
        {"model": "echo", "query": "a", "documents": ["a", "b"]})),
    ("POST", "/v2/rerank"): Probe("/v2/rerank", json=const(
        {"model": "echo", "query": "a", "documents": ["a", "b"]})),
    ("POST", "/v1/score"): Probe("/v1/score", json=const(
        {"model": "echo", "text_1": "a", "text_2": "b"})),
    ("POST", "/v1/moderations"): Probe("/v1/moderations",
                                       json=const({"model": "ears", "input": "hi"})),
    ("POST", "/v1/audio/speech"): Probe("/v1/audio/speech", json=const(
        {"model": "ears", "input": "hi", "voice": "alloy"})),
    ("POST", "/v1/audio/transcriptions"): Probe("/v1/audio/transcriptions",
                                                form={"model": "ears"}, files=WAV),
    ("POST", "/v1/messages"): Probe("/v1/messages", json=const(
        {"model": "echo", "max_tokens": 5, **MESSAGES})),
    ("POST", "/v1/messages/count_tokens"): Probe("/v1/messages/count_tokens",
                                                 json=const({"model": "echo", **MESSAGES})),
    ("POST", "/v1/images/generations"): Probe("/v1/images/generations",
                                              json=const({"model": "pics", "prompt": "x"})),
    ("POST", "/model/generate"): Probe("/model/generate",
                                       json=const({"text": "x", "model": "pics"})),
    ("GET", "/v1/models"): Probe("/v1/models"),
    ("GET", "/v1/models/{model_id:path}"): Probe("/v1/models/echo"),
    ("GET", "/v1/usage/series"): Probe("/v1/usage/series"),
    ("GET", "/v1/webhooks/secret"): Probe("/v1/webhooks/secret"),
    ("POST", "/old/initialize"): Probe("/old/initialize", json=const({"model": "echo"})),
    ("POST", "/old/generate"): Probe("/old/generate", json=const(MESSAGES)),
    ("POST", "/old/stream"): Probe("/old/stream", json=const(MESSAGES)),
    ("GET", "/old/status"): Probe("/old/status"),
    ("POST", "/generate"): Probe("/generate", json=const(
        {"job_id": "queued-generate", "content": "hi", "meta": {"model": "echo"}})),
    ("POST", "/chat_completion"): Probe("/chat_completion", json=const(
        {"job_id": "queued-chat", "meta": {"model": "echo"}, **MESSAGES})),
    ("POST", "/v1/jobs"): Probe("/v1/jobs", ok=202, json=const(
        {"endpoint": "/v1/chat/completions", "body": CHAT})),
    ("GET", "/v1/jobs"): Probe("/v1/jobs?limit=100", listed=data_ids, own=("job", "job-B")),
    ("GET", "/v1/jobs/{job_id}"): Probe("/v1/jobs/{job}"),
    ("POST", "/v1/jobs/{job_id}/cancel"): Probe("/v1/jobs/{job-cancel}/cancel"),
    ("DELETE", "/v1/jobs/{job_id}"): Probe("/v1/jobs/{job-del}"),
    ("GET", "/v1/jobs/{job_id}/webhook_attempts"): Probe("/v1/jobs/{job}/webhook_attempts"),
    ("GET", "/v1/jobs/{job_id}/events"): Probe("/v1/jobs/{job}/events"),
    ("POST", "/v1/files"): Probe("/v1/files", form={"purpose": "batch"}, files={
        "file": ("x.jsonl", json.dumps({"custom_id": "x", "method": "POST",
                                        "url": "/v1/chat/completions",
                                        "body": CHAT}).encode())}),
    ("GET", "/v1/files"): Probe("/v1/files", listed=data_ids, own=("file", "file-B")),
    ("GET", "/v1/files/{file_id}"): Probe("/v1/files/{file}"),
    ("GET", "/v1/files/{file_id}/content"): Probe("/v1/files/{file}/content"),
    ("DELETE", "/v1/files/{file_id}"): Probe("/v1/files/{file-del}"),
    ("POST", "/v1/batches"): Probe("/v1/batches", json=lambda ids: {
        "input_file_id": ids["file"], "endpoint": "/v1/chat/completions"}),
    ("GET", "/v1/batches"): Probe("/v1/batches?limit=100", listed=data_ids,
                                  own=("batch", "batch-B")),
    ("GET", "/v1/batches/{batch_id}"): Probe("/v1/batches/{batch}"),
    ("POST", "/v1/batches/{batch_id}/cancel"): Probe("/v1/batches/{batch-cancel}/cancel"),
    ("POST", "/contexts/"): Probe("/contexts/", json=const({"content": "more"})),
    ("GET", "/contexts/"): Probe("/contexts/", listed=plain_ids, own=("ctx", "ctx-B")),
    ("GET", "/contexts/{context_id}"): Probe("/contexts/{ctx}"),
    ("GET", "/results/"): Probe("/results/", listed=plain_ids, own=("result", "result-B")),
    ("GET", "/results/{result_id}"): Probe("/results/{result}"),
    ("GET", "/models/"): Probe("/models/"),
    ("POST", "/models/send/{model_name}/{context_id}"): Probe("/models/send/echo/{ctx}",
                                                              ok=202),
    ("POST", "/v1/responses"): Probe("/v1/responses", json=lambda ids: {
        "model": "echo", "input": "again", "previous_response_id": ids["resp"]}),
    ("GET", "/v1/responses/{response_id}"): Probe("/v1/responses/{resp}"),
    ("POST", "/v1/responses/{response_id}/cancel"): Probe("/v1/responses/{resp-bg}/cancel"),
    ("DELETE", "/v1/responses/{response_id}"): Probe("/v1/responses/{resp-del}"),
    ("GET", "/v1/responses/{response_id}/input_items"): Probe(
        "/v1/responses/{resp}/input_items"),
    ("GET", "/v1/images/{image_id}/content"): Probe("/v1/images/{img}/content"),
    ("POST", "/v1/responses/input_tokens"): Probe("/v1/responses/input_tokens", json=lambda ids: {
        "model": "echo", "input": "again", "previous_response_id": ids["resp"]}),
    ("POST", "/v1/conversations"): Probe("/v1/conversations", json=const({})),
    ("GET", "/v1/conversations/{conversation_id}"): Probe("/v1/conversations/{conv}"),
    ("POST", "/v1/conversations/{conversation_id}"): Probe(
        "/v1/conversations/{conv}", json=const({"metadata": {"k": "v"}})),
    ("DELETE", "/v1/conversations/{conversation_id}"): Probe("/v1/conversations/{conv-del}"),
    ("POST", "/v1/conversations/{conversation_id}/items"): Probe(
        "/v1/conversations/{conv}/items", json=const({"items": [
            {"role": "user", "content": "more"}]})),
    ("GET", "/v1/conversations/{conversation_id}/items"): Probe(
        "/v1/conversations/{conv}/items"),
    ("GET", "/v1/conversations/{conversation_id}/items/{item_id}"): Probe(
        "/v1/conversations/{conv}/items/{conv-item}"),
    ("DELETE", "/v1/conversations/{conversation_id}/items/{item_id}"): Probe(
        "/v1/conversations/{conv}/items/{conv-item-del}"),
    ("POST", "/admin/v1/keys"): Probe("/admin/v1/keys", ok=201, json=const({"name": "new"})),
    ("GET", "/admin/v1/keys"): Probe("/admin/v1/keys"),
    ("GET", "/admin/v1/keys/{key_id}"): Probe("/admin/v1/keys/{t-disable}"),
    ("PATCH", "/admin/v1/keys/{key_id}"): Probe("/admin/v1/keys/{t-disable}",
                                                json=const({"team": "x"})),
    ("POST", "/admin/v1/keys/{key_id}/disable"): Probe("/admin/v1/keys/{t-disable}/disable"),
    ("POST", "/admin/v1/keys/{key_id}/enable"): Probe("/admin/v1/keys/{t-disable}/enable"),
    ("DELETE", "/admin/v1/keys/{key_id}"): Probe("/admin/v1/keys/{t-delete}"),
    ("POST", "/admin/v1/teams"): Probe("/admin/v1/teams", ok=201,
                                       json=const({"name": "new-team"})),
    ("GET", "/admin/v1/teams"): Probe("/admin/v1/teams"),
    ("GET", "/admin/v1/teams/{team_id}"): Probe("/admin/v1/teams/{team}"),
    ("PATCH", "/admin/v1/teams/{team_id}"): Probe("/admin/v1/teams/{team}",
                                                  json=const({"rpm": 500})),
    ("DELETE", "/admin/v1/teams/{team_id}"): Probe("/admin/v1/teams/{team-del}"),
    ("GET", "/admin/v1/teams/{team_id}/members"): Probe("/admin/v1/teams/{team}/members"),
    ("PUT", "/admin/v1/teams/{team_id}/members/{user_id}"): Probe(
        "/admin/v1/teams/{team}/members/{user}", json=const({"role": "owner"})),
    ("DELETE", "/admin/v1/teams/{team_id}/members/{user_id}"): Probe(
        "/admin/v1/teams/{team}/members/{user-out}"),
    ("POST", "/admin/v1/users"): Probe("/admin/v1/users", ok=201,
                                       json=const({"name": "new-user"})),
    ("GET", "/admin/v1/users"): Probe("/admin/v1/users"),
    ("GET", "/admin/v1/users/{user_id}"): Probe("/admin/v1/users/{user}"),
    ("PATCH", "/admin/v1/users/{user_id}"): Probe("/admin/v1/users/{user}",
                                                  json=const({"email": "u@example.org"})),
    ("DELETE", "/admin/v1/users/{user_id}"): Probe("/admin/v1/users/{user-del}"),
    ("GET", "/scim/v2/ServiceProviderConfig"): Probe("/scim/v2/ServiceProviderConfig"),
    ("GET", "/scim/v2/ResourceTypes"): Probe("/scim/v2/ResourceTypes"),
    ("GET", "/scim/v2/ResourceTypes/{name}"): Probe("/scim/v2/ResourceTypes/User"),
    ("GET", "/scim/v2/Schemas"): Probe("/scim/v2/Schemas"),
    ("GET", "/scim/v2/Schemas/{schema_id}"): Probe(
        "/scim/v2/Schemas/urn:ietf:params:scim:schemas:core:2.0:Group"),
    ("POST", "/scim/v2/.search"): Probe("/scim/v2/.search", ok=501, json=const(
        {"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]})),
    ("GET", "/scim/v2/Users"): Probe("/scim/v2/Users?filter=userName%20eq%20%22user%22"),
    ("POST", "/scim/v2/Users"): Probe("/scim/v2/Users", ok=201, json=lambda ids: {
        "schemas": [SCIM_USER], "userName": ids["scim-new"]}),
    ("GET", "/scim/v2/Users/{user_id}"): Probe("/scim/v2/Users/{user}"),
    # (each caller's change its own, so that each is a change and audited)
    ("PUT", "/scim/v2/Users/{user_id}"): Probe("/scim/v2/Users/{user}", json=lambda ids: {
        "schemas": [SCIM_USER], "userName": "user", "displayName": ids["scim-new"]}),
    ("PATCH", "/scim/v2/Users/{user_id}"): Probe("/scim/v2/Users/{user}", json=lambda ids: {
        "schemas": [SCIM_PATCH], "Operations": [
            {"op": "replace", "path": "externalId", "value": ids["scim-new"]}]}),
    ("DELETE", "/scim/v2/Users/{user_id}"): Probe("/scim/v2/Users/{scim-user-del}", ok=204),
    ("GET", "/scim/v2/Groups"): Probe("/scim/v2/Groups"),
    ("POST", "/scim/v2/Groups"): Probe("/scim/v2/Groups", ok=201, json=lambda ids: {
        "schemas": [SCIM_GROUP], "displayName": ids["scim-new"]}),
    ("GET", "/scim/v2/Groups/{group_id}"): Probe("/scim/v2/Groups/{team}"),
    ("PUT", "/scim/v2/Groups/{group_id}"): Probe("/scim/v2/Groups/{scim-team}", json=lambda ids: {
        "schemas": [SCIM_GROUP], "displayName": ids["scim-new"] + "-renamed"}),
    ("PATCH", "/scim/v2/Groups/{group_id}"): Probe("/scim/v2/Groups/{scim-team}", json=lambda ids: {
        "schemas": [SCIM_PATCH], "Operations": [
            {"op": "replace", "path": "externalId", "value": ids["scim-new"]}]}),
    ("DELETE", "/scim/v2/Groups/{group_id}"): Probe("/scim/v2/Groups/{scim-team-del}", ok=204),
    ("GET", "/admin/v1/models"): Probe("/admin/v1/models"),
    ("POST", "/admin/v1/models"): Probe("/admin/v1/models", ok=201,
                                        json=const({"name": "created"})),
    ("GET", "/admin/v1/models/{model:path}"): Probe("/admin/v1/models/echo"),
    ("PATCH", "/admin/v1/models/{model:path}"): Probe("/admin/v1/models/spare",
                                                      json=const({"aliases": ["sp"]})),
    ("DELETE", "/admin/v1/models/{model:path}"): Probe("/admin/v1/models/spare-del"),
    ("GET", "/admin/v1/replicas"): Probe("/admin/v1/replicas"),
    ("POST", "/admin/v1/replicas"): Probe("/admin/v1/replicas", ok=201,
                                          json=const({"model": "spare", **REPLICA})),
    ("POST", "/admin/v1/replicas/test"): Probe("/admin/v1/replicas/test", json=const(REPLICA)),
    ("GET", "/admin/v1/replicas/{replica_id}"): Probe("/admin/v1/replicas/local:echo"),
    ("PATCH", "/admin/v1/replicas/{replica_id}"): Probe("/admin/v1/replicas/{r-patch}",
                                                        json=const({"weight": 2})),
    ("DELETE", "/admin/v1/replicas/{replica_id}"): Probe("/admin/v1/replicas/{r-delete}"),
    ("GET", "/admin/v1/engines"): Probe("/admin/v1/engines"),
    ("POST", "/admin/v1/engines/{model:path}/load"): Probe("/admin/v1/engines/tiny/load"),
    ("POST", "/admin/v1/engines/{model:path}/unload"): Probe("/admin/v1/engines/tiny/unload"),
    ("GET", "/admin/v1/usage"): Probe("/admin/v1/usage"),
    ("GET", "/admin/v1/usage/records"): Probe("/admin/v1/usage/records"),
    ("GET", "/admin/v1/usage/series"): Probe("/admin/v1/usage/series"),
    ("GET", "/admin/v1/tables"): Probe("/admin/v1/tables"),
    ("GET", "/admin/v1/tables/{name}"): Probe("/admin/v1/tables/api_keys"),
    ("POST", "/admin/v1/prompts"): Probe("/admin/v1/prompts", ok=201, json=const(
        {"name": "p", "instructions": "Be brief."})),
    ("GET", "/admin/v1/prompts"): Probe("/admin/v1/prompts"),
    ("GET", "/admin/v1/prompts/{prompt_id}"): Probe("/admin/v1/prompts/{prompt}"),
    ("POST", "/admin/v1/prompts/{prompt_id}/versions"): Probe(
        "/admin/v1/prompts/{prompt}/versions", ok=201, json=const({"instructions": "Be kind."})),
    ("DELETE", "/admin/v1/prompts/{prompt_id}"): Probe("/admin/v1/prompts/{prompt-del}"),
    ("GET", "/tables"): Probe("/tables"),
    ("GET", "/tables/{name}"): Probe("/tables/metrics"),
    ("POST", "/generate_api_key"): Probe("/generate_api_key", json=const({"user_id": "u"})),
    ("POST", "/delete_api_key"): Probe("/delete_api_key", json=lambda ids: {
        "user_id": "toolkit-user", "api_key_id": ids["toolkit-key"]}),
    ("GET", "/models"): Probe("/models"),
    ("POST", "/models"): Probe("/models", ok=201, json=const({"name": "toolkit-created"})),
    ("GET", "/models/{name}"): Probe("/models/echo"),
    ("DELETE", "/models/{model_id:int}"): Probe("/models/{toolkit-del-id}"),
    ("GET", "/models/{model_id:int}/replicas"): Probe("/models/{spare-id}/replicas"),
    ("POST", "/models/{model_id:int}/replicas"): Probe("/models/{spare-id}/replicas", ok=201,
                                                       json=const(REPLICA)),
    ("PUT", "/models/replicas/{replica_id:int}"): Probe("/models/replicas/{r-put}",
                                                        json=const({"weight": 3})),
    ("DELETE", "/replicas/{replica_id:int}"): Probe("/replicas/{r-toolkit-delete}"),
    ("PUT", "/internal/v1/engines/{instance}"): Probe("/internal/v1/engines/{inst}", json=const(
        {"url": "http://127.0.0.1:9/v1", "models": ["enrolled"]})),
    ("POST", "/internal/v1/engines/{instance}/heartbeat"): Probe(
        "/internal/v1/engines/{inst}/heartbeat", json=const({"heartbeat_seconds": 60})),
    ("DELETE", "/internal/v1/engines/{instance}"): Probe("/internal/v1/engines/{inst}"),
}


# -- cells -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    status: int
    code: str | None


def expected(access: Access, probe: Probe, caller: str, route: tuple[str, str]) -> Cell:
    """What the policy says ``caller`` gets from a route with ``access``."""
    if access == "public":
        return Cell(probe.ok, None)
    if caller in INVALID:
        return Cell(401, REFUSED_CODES[caller])
    if caller == "engine":
        return Cell(probe.ok, None) if access == "engine" else Cell(403, "engine_key_not_allowed")
    if caller == "scim":
        return Cell(probe.ok, None) if access == "scim" else Cell(403, "scim_key_not_allowed")
    if access == "scim" and caller != "admin":
        return Cell(403, "scim_scope_required")
    if access == "engine" and caller != "admin":
        return Cell(403, "engine_scope_required")
    if access == "admin" and caller != "admin":
        return Cell(403, "admin_scope_required")
    if access == "audit" and caller not in ("admin", "auditor"):
        return Cell(403, "admin_scope_required")
    if caller == "auditor" and access != "audit" and OPERATIONS[route].changes:
        return Cell(403, "auditor_read_only")
    others = {"owner": ("B", "auditor"), "private": ("B", "admin", "auditor")}.get(access, ())
    if caller in others and probe.listed is None:
        return Cell(404, None)
    return Cell(probe.ok, None)


def observed(response: httpx.Response) -> Cell:
    """The status, and the error's code (Anthropic's shape has none: its error type; SCIM's
    its ``scimType``, if any)."""
    if response.status_code < 400:
        return Cell(response.status_code, None)
    if response.url.path.startswith("/scim/"):
        return Cell(response.status_code, response.json().get("scimType"))
    error = response.json()["error"]
    return Cell(response.status_code, error.get("code") or error["type"])


def call(world: World, caller: str, route: tuple[str, str]) -> httpx.Response:
    probe = PROBES[route]
    targets = world.targets(caller)
    return world.sessions[caller].request(route[0], probe.url.format_map(targets),
                                          json=probe.json(targets) if probe.json else None,
                                          data=probe.form, files=probe.files)


def check(world: World, caller: str, route: tuple[str, str],
          response: httpx.Response) -> str | None:
    """A description of how the cell differs from the policy, or None."""
    access, probe = POLICY[route], PROBES[route]
    want = expected(access, probe, caller, route)
    if route[1].startswith("/v1/messages") and want.status in (401, 403):
        # Anthropic's clients expect its shape
        want = Cell(want.status, {401: "authentication_error",
                                  403: "permission_error"}[want.status])
    if route[1].startswith("/scim/"):  # SCIM's shape: its status, and no scimType here
        want = Cell(want.status, None)
    got = observed(response)
    if got.status != want.status or (want.code is not None and got.code != want.code):
        return (f"{route[0]} {route[1]} as {caller}: expected {want.status} {want.code or ''}"
                f", got {got.status} {got.code or ''} {response.text[:200]}")
    if probe.listed is None or caller not in VALID or response.status_code != probe.ok:
        return None
    listed = probe.listed(response.json())
    mine, theirs = (world.ids[probe.own[0]], world.ids[probe.own[1]])
    want_in = {"A": {mine}, "B": {theirs}, "admin": {mine, theirs}, "auditor": set()}[caller]
    want_out = {"A": {theirs}, "B": {mine}, "admin": set(), "auditor": {mine, theirs}}[caller]
    if not want_in <= listed or want_out & listed:
        return f"{route[0]} {route[1]} as {caller}: lists {sorted(listed)}"
    return None


def app_routes(tmp_path: Path) -> set[tuple[str, str]]:
    """Every (method, path) the app serves, from its route table (FastAPI keeps an included
    router as one entry that lists its routes, prefixes applied)."""
    app = create_app(load_settings(data_dir=tmp_path, bundled_models=False))
    found: set[tuple[str, str]] = set()
    for entry in app.routes:
        included = getattr(entry, "effective_route_contexts", None)
        for route in included() if included is not None else [entry]:
            found |= {(method, route.path) for method in getattr(route, "methods", None) or ()
                      if method != "HEAD"}
    return found


def test_every_route_has_a_policy_and_a_probe(tmp_path: Path) -> None:
    routes = app_routes(tmp_path)
    assert routes - set(POLICY) == set(), "routes without an access policy"
    assert set(POLICY) - routes == set(), "policy entries for routes the app does not serve"
    assert set(PROBES) == set(POLICY)


def test_the_docs_print_the_policy() -> None:
    assert policy_table() in (ROOT / "docs" / "security" / "authorization.md").read_text()


def test_every_cell_of_the_matrix_follows_the_policy(world: World) -> None:
    routes = list(POLICY)
    # Refused keys first, all at once: an unknown (deleted) key waits for one shared check
    # for new keys before its 401, so these go concurrently.
    cells = [(caller, route) for route in routes for caller in INVALID]
    with ThreadPoolExecutor(16) as pool:
        refused = list(pool.map(lambda cell: call(world, *cell), cells))
    problems = [check(world, caller, route, response)
                for (caller, route), response in zip(cells, refused, strict=True)]
    answers: dict[tuple[str, str, str], httpx.Response] = {}
    for route in routes:
        for caller in VALID:
            response = call(world, caller, route)
            problems.append(check(world, caller, route, response))
            if caller == "admin" or (caller == "scim" and POLICY[route] == "scim"):
                answers[(caller, *route)] = response
    found = [p for p in problems if p]
    assert not found, f"{len(found)} of {len(routes) * 10} cells differ:\n" + "\n".join(found)
    # every admin operation that changes state recorded its change, on its request
    changes = [r for r in routes if POLICY[r] == "admin" and OPERATIONS[r].changes]
    assert len(changes) >= 20
    # and the engines' registrations (their heartbeats are not changes worth an event)
    changes += [("PUT", "/internal/v1/engines/{instance}"),
                ("DELETE", "/internal/v1/engines/{instance}")]
    admin = world.sessions["admin"]
    # and every SCIM change, by the admin's key and by the SCIM key
    scim = [r for r in routes if POLICY[r] == "scim" and OPERATIONS[r].changes]
    assert len(scim) == 8
    for caller, route in [("admin", r) for r in changes + scim] + [("scim", r) for r in scim]:
        request_id = answers[(caller, *route)].headers["x-request-id"]
        events = admin.get("/admin/v1/audit", params={"request_id": request_id}).json()["data"]
        assert events, f"{route[0]} {route[1]} by {caller} wrote no audit event"
        assert {e["actor"]["scope"] for e in events} == {caller}, events


ID_FORMATS = {"job": r"job_[0-9a-f]{48}", "file": r"file_[0-9a-f]{48}",
              "batch": r"batch_[0-9a-f]{48}", "img": r"img_[0-9a-f]{48}",
              "resp": r"resp_[0-9a-f]{32}"}


def test_object_ids_are_unguessable(world: World) -> None:
    """Ids carry 128 random bits (after a 64-bit clock that keeps them in creation order):
    their random parts never repeat, and all their hex digits vary."""
    for kind, pattern in ID_FORMATS.items():
        same = [v for k, v in world.ids.items()
                if k.split("@")[0].split("-")[0] == kind and isinstance(v, str)]
        assert same, kind
        for value in same:
            assert re.fullmatch(pattern, value), value
    with world.client("A") as a:
        jobs = [ok(a.post("/v1/jobs", json={"endpoint": "/v1/embeddings", "body": {
            "model": "echo", "input": f"x{i}"}}), 202)["id"] for i in range(32)]
    random_parts = [job[-32:] for job in jobs]
    assert len(set(random_parts)) == len(jobs)
    for position in range(32):  # every digit position takes several values
        assert len({part[position] for part in random_parts}) > 3, position


def test_usage_is_seen_by_its_own_key_only(world: World) -> None:
    with world.client("admin") as admin:
        c, d = make_key(admin, "usage-c"), make_key(admin, "usage-d")
    with httpx.Client(base_url=world.url, timeout=60) as http:
        for key, count in ((c["key"], 3), (d["key"], 1)):
            for _ in range(count):
                ok(http.post("/v1/chat/completions", json=CHAT,
                             headers={"Authorization": f"Bearer {key}"}))

        def requests(key: str) -> int:
            body = ok(http.get("/v1/usage/series", params={"split_by": "none"},
                               headers={"Authorization": f"Bearer {key}"}))
            return sum(point["requests"] for series in body["series"]
                       for point in series["data"])

        wait_for(lambda: requests(c["key"]) == 3, what="C's three requests in its usage")
        assert requests(d["key"]) == 1


def test_the_model_hosts_current_model_is_the_keys_own_and_allowed(world: World) -> None:
    with world.client("admin") as admin:
        x = make_key(admin, "host-x", models=["echo", "slow"])["key"]
        y = make_key(admin, "host-y", models=["echo"])["key"]
    with httpx.Client(base_url=world.url, timeout=60,
                      headers={"Authorization": f"Bearer {x}"}) as host_x, \
            httpx.Client(base_url=world.url, timeout=60,
                         headers={"Authorization": f"Bearer {y}"}) as host_y:
        assert ok(host_x.post("/old/initialize", json={"model": "slow"}))["model"] == "slow"
        # X's choice is X's: Y still chats with its own default, a model it may use
        status = ok(host_y.get("/old/status"))
        assert status["status"] == "not_initialized" and status["models"] == ["echo"]
        answer = ok(host_y.post("/old/generate", json=MESSAGES))
        assert answer["model"] == "echo" and answer["response"] == "hi"
        refused = host_y.post("/old/initialize", json={"model": "slow"})
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "model_not_allowed"
        assert host_y.post("/old/initialize", json={"model": "nope"}).status_code == 404
        assert ok(host_y.post("/old/initialize", json={"model": "echo"}))["model"] == "echo"
        assert ok(host_x.get("/old/status"))["model"] == "slow"
        # the contexts-and-results API's model list shows a key its own models, as /v1/models does
        assert [m["name"] for m in ok(host_y.get("/models/"))] == ["echo"]
    with world.client("admin") as admin:
        unfit = admin.post("/old/initialize", json={"model": "vectors"})
        assert unfit.status_code == 400, unfit.text
        assert unfit.json()["error"]["param"] == "model"


def test_idempotency_keys_and_queued_job_ids_belong_to_their_key(world: World) -> None:
    """The same ``Idempotency-Key`` (or queued generate ``job_id``) from two keys names two
    jobs: B never gets A's job back, nor a conflict with it."""
    headers = {"Idempotency-Key": "shared-idempotency-key"}
    with world.client("A") as a, world.client("B") as b:
        first = ok(a.post("/v1/jobs", headers=headers, json={
            "endpoint": "/v1/chat/completions", "body": CHAT}), 202)
        other = ok(b.post("/v1/jobs", headers=headers, json={
            "endpoint": "/v1/embeddings", "body": {"model": "echo", "input": "b's"}}), 202)
        assert other["id"] != first["id"]
        again = ok(a.post("/v1/jobs", headers=headers, json={
            "endpoint": "/v1/chat/completions", "body": CHAT}))
        assert again["id"] == first["id"]
        queued = {"job_id": "shared-queued-job", "meta": {"model": "echo"}}
        assert ok(a.post("/generate", json={**queued, "content": "from a"}))["content"] == "from a"
        assert ok(b.post("/generate", json={**queued, "content": "from b"}))["content"] == "from b"
