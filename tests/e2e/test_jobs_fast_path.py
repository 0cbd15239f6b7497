"""Job submissions are answered by a pure-ASGI fast path (``http.jobs.answer``); the
framework's routes for the same operations are kept (the documented ones) and answer through
the same function: both ways must answer every request alike.

Two apps on their own SQLite files get the same requests: one as ``create_app`` builds it and
``inferd serve`` runs it (``HotPathApp``: submissions take the fast path), one entered through
the framework's own stack (its routing, dependencies and exception middleware: the routes
answer). Status, headers and body must match, ids and times aside; a submission that is
accepted is stored the same way by both.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from inferd.app import create_app, hot_answer
from inferd.http.jobs import answer as submit_job
from inferd.settings import load_settings

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hello there"}]}
JOB = {"endpoint": "/v1/chat/completions", "body": CHAT}
MAX_BODY = 4096
ASYNC = {"Prefer": "respond-async"}


def raw(text: str) -> bytes:
    return text.encode()


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


# (path, headers, body): every way a submission can be accepted or refused
CASES: list[tuple[str, dict[str, str], bytes]] = [
    ("/v1/jobs", {}, body(JOB)),
    ("/v1/jobs", {"X-Request-ID": "my-request-1"}, body({**JOB, "priority": 7,
                                                         "metadata": {"a": "b"},
                                                         "deadline_seconds": 600})),
    ("/v1/jobs", {}, raw('{"endpoint": "/v1/chat/completions", "endpoint": "/v1/embeddings",'
                         ' "body": {}}')),  # a key twice
    ("/v1/jobs", {}, raw("{")),
    ("/v1/jobs", {}, raw("")),
    ("/v1/jobs", {}, raw('{"endpoint": "/v1/chat/completions", "body": {"x": NaN}}')),
    ("/v1/jobs", {}, raw('{"endpoint": "/v1/chat/completions", "body": {"x": "a\\u0000b"}}')),
    ("/v1/jobs", {}, body({**JOB, "body": {"deep": json.loads("[" * 80 + "]" * 80)}})),
    ("/v1/jobs", {}, body([JOB])),
    ("/v1/jobs", {}, body({**JOB, "unknown": 1})),
    ("/v1/jobs", {}, body({"endpoint": "/v1/nothing", "body": CHAT})),
    ("/v1/jobs", {}, body({"endpoint": "/v1/chat/completions",
                           "body": {**CHAT, "model": "no-such-model"}})),
    ("/v1/jobs", {}, body({"endpoint": "/v1/chat/completions", "body": {"model": "echo"}})),
    ("/v1/jobs", {}, body({**JOB, "priority": 10**30})),
    ("/v1/jobs", {}, body({**JOB, "deadline_seconds": 0})),
    ("/v1/jobs", {}, body({**JOB, "webhook_url": "http://10.0.0.1/hook"})),
    ("/v1/jobs", {}, body({**JOB, "webhook_url": "ftp://example.com/hook"})),
    ("/v1/jobs", {"Idempotency-Key": ""}, body(JOB)),
    ("/v1/jobs", {"Idempotency-Key": "k" * 256}, body(JOB)),
    ("/v1/jobs", {"Idempotency-Key": "k" * 256}, raw("{")),  # the body is checked first
    ("/v1/jobs", {"Idempotency-Key": "key-1"}, body(JOB)),
    ("/v1/jobs", {"Idempotency-Key": "key-1"}, body(JOB)),  # the same job again: 200
    ("/v1/jobs", {"Idempotency-Key": "key-1"}, body({**JOB, "body": {**CHAT, "n": 1}})),  # 409
    ("/v1/jobs", {}, body({**JOB, "body": {**CHAT, "pad": "x" * MAX_BODY}})),  # 413
    ("/v1/jobs", {"Content-Type": "text/plain"}, body(JOB)),
    ("/v1/chat/completions", ASYNC, body(CHAT)),
    ("/chat/completions", {"Prefer": "wait=10, respond-async"}, body(CHAT)),
    ("/v1/completions", ASYNC, body({"model": "echo", "prompt": "One, two,"})),
    ("/v1/chat/completions", ASYNC, body([CHAT])),
    ("/v1/chat/completions", ASYNC, raw('{"model": "echo", "model": "echo"}')),
    ("/v1/chat/completions", ASYNC, body({"model": "echo"})),
    ("/v1/embeddings", {**ASYNC, "Idempotency-Key": "k" * 256}, raw("{")),  # the key first
    ("/v1/completions", {**ASYNC, "Idempotency-Key": "key-2"}, body({"model": "echo",
                                                                       "prompt": "a"})),
    ("/v1/completions", {**ASYNC, "Idempotency-Key": "key-2"}, body({"model": "echo",
                                                                       "prompt": "a"})),
]


def through_the_framework(app: FastAPI) -> Any:
    """``app`` entered past its fast paths: every request goes through the framework."""

    async def framework(scope: Scope, receive: Receive, send: Send) -> None:
        await FastAPI.__call__(app, scope, receive, send)

    return framework


def settings(directory: Path) -> Any:
    return load_settings(data_dir=directory, bundled_models=False,
                         models=[{"name": "echo", "kind": "echo"}], max_body_bytes=MAX_BODY)


@pytest.fixture
async def clients(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    fast = create_app(settings(tmp_path / "fast"))
    framework = create_app(settings(tmp_path / "framework"))
    async with AsyncExitStack() as stack:
        for app in (fast, framework):
            await stack.enter_async_context(app.router.lifespan_context(app))
        yield (httpx.AsyncClient(transport=httpx.ASGITransport(fast), base_url="http://test"),
               httpx.AsyncClient(transport=httpx.ASGITransport(through_the_framework(framework)),
                                 base_url="http://test"))


_ID = re.compile(r"job_[0-9A-Za-z]+")
_VARYING = {"id", "created_at", "started_at", "finished_at", "deadline_at", "status",
            "attempts", "result", "usage"}  # the job may run meanwhile


def answer(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    """What must be the same whichever path answered: status, headers (request id and job id
    normalised) and body (ids, times and the running job's progress aside)."""
    headers = {name: _ID.sub("job_X", value) for name, value in response.headers.items()
               if name not in ("x-request-id", "content-length")}
    headers["x-request-id"] = ("client's" if response.headers["x-request-id"] == "my-request-1"
                               else "set")
    content = response.json()
    if isinstance(content, dict) and content.get("object") == "job":
        content = {k: v for k, v in content.items() if k not in _VARYING}
    return response.status_code, headers, content


async def test_the_fast_path_answers_every_submission_as_the_framework_route_does(
        clients: tuple[httpx.AsyncClient, httpx.AsyncClient]) -> None:
    fast, framework = clients
    statuses = set()
    for path, headers, content in CASES:
        scope = {"type": "http", "method": "POST", "path": path,
                 "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
        assert hot_answer(scope) is submit_job  # the first app answers it on the fast path
        got = [await client.post(path, headers=headers, content=content)
               for client in (fast, framework)]
        expected = answer(got[1])
        assert answer(got[0]) == expected, (path, headers, content[:80])
        statuses.add(expected[0])
        if expected[2].get("object") == "job":
            jobs = [(await client.get(f"/v1/jobs/{r.json()['id']}")).json()
                    for client, r in zip((fast, framework), got, strict=True)]
            stored = [{k: v for k, v in j.items() if k not in _VARYING} for j in jobs]
            assert stored[0] == stored[1]
    assert statuses == {200, 202, 400, 404, 409, 413}  # every kind of answer was compared


async def test_both_paths_refuse_a_key_past_its_unfinished_jobs_with_a_429(
        tmp_path: Path) -> None:
    """``max_pending_per_key``: the fast path and the framework's route answer the same 429,
    in the OpenAI error shape, for ``POST /v1/jobs`` and ``Prefer: respond-async`` alike."""
    slow = {"name": "slow", "kind": "echo", "echo_delay": 5.0}  # its jobs stay unfinished
    apps = []
    for name in ("fast", "framework"):
        apps.append(create_app(load_settings(
            data_dir=tmp_path / name, bundled_models=False, models=[slow],
            max_body_bytes=MAX_BODY, jobs={"max_pending_per_key": 2})))
    job = {"endpoint": "/v1/chat/completions",
           "body": {"model": "slow", "messages": [{"role": "user", "content": "a b c"}]}}
    async with AsyncExitStack() as stack:
        for app in apps:
            await stack.enter_async_context(app.router.lifespan_context(app))
        fast = httpx.AsyncClient(transport=httpx.ASGITransport(apps[0]), base_url="http://test")
        framework = httpx.AsyncClient(
            transport=httpx.ASGITransport(through_the_framework(apps[1])),
            base_url="http://test")
        answers = []
        for client in (fast, framework):
            accepted = [await client.post("/v1/jobs", json=job) for _ in range(2)]
            assert [r.status_code for r in accepted] == [202, 202]
            refused = [await client.post("/v1/jobs", json=job),
                       await client.post("/v1/chat/completions", json=job["body"],
                                         headers=ASYNC)]
            for response in refused:
                assert response.status_code == 429, response.text
                error = response.json()["error"]
                assert set(error) == {"message", "type", "param", "code"}
                assert (error["type"], error["code"]) == ("rate_limit_error",
                                                          "too_many_pending_jobs")
                assert int(response.headers["retry-after"]) >= 1
            answers.append([answer(r) for r in refused])
            listed = (await client.get("/v1/jobs", params={"limit": 100})).json()["data"]
            assert len(listed) == 2  # nothing stored for the refused ones
        assert answers[0] == answers[1]
