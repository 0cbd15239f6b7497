"""End to end: jobs, SSE events, webhooks and idempotency on ``inferd serve`` with the real
bundled models."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web
from openai import OpenAI

from inferd.jobs.webhooks import verify
from tests.helpers import InferdProcess, serving, wait_for, wait_for_async

CHAT_MODEL = "smollm2-135m-instruct"
EMBED_MODEL = "all-minilm-l6-v2"


def chat_job(content: str = "Say hello.", max_tokens: int = 8, **extra: Any) -> dict[str, Any]:
    return {"endpoint": "/v1/chat/completions",
            "body": {"model": CHAT_MODEL, "max_tokens": max_tokens, "temperature": 0,
                     "messages": [{"role": "user", "content": content}]}, **extra}


def wait_done(http: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in ("completed", "failed", "cancelled") else None

    return wait_for(finished, within=timeout, what=f"job {job_id} finishing")


def sse(http: httpx.Client, job_id: str, headers: dict[str, str] | None = None,
        stop_after_tokens: int | None = None) -> list[tuple[str | None, str, str]]:
    """The events of a job's stream as (id, event, data); optionally hang up early."""
    events: list[tuple[str | None, str, str]] = []
    with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers or {}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            if "event" in fields:
                events.append((fields.get("id"), fields["event"], fields["data"]))
                tokens = sum(1 for e in events if e[1] == "token")
                if stop_after_tokens is not None and tokens >= stop_after_tokens:
                    break
            fields = {}
    return events


def test_job_lifecycle_list_filters_and_cursor(http: httpx.Client) -> None:
    response = http.post("/v1/jobs", json=chat_job(metadata={"who": "test"}))
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["object"] == "job" and job["status"] == "pending"
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    done = wait_done(http, job["id"])
    assert done["status"] == "completed" and done["attempts"] == 1
    assert done["result"]["choices"][0]["message"]["content"]
    assert done["usage"]["completion_tokens"] >= 1
    assert done["started_at"] >= done["created_at"] and done["finished_at"] >= done["started_at"]
    assert done["metadata"] == {"who": "test"}

    ids = [http.post("/v1/jobs", json=chat_job(max_tokens=2)).json()["id"] for _ in range(3)]
    for job_id in ids:
        wait_done(http, job_id)
    seen: list[str] = []
    after = None
    for _ in range(3):
        params: dict[str, Any] = {"limit": 1, "model": CHAT_MODEL, "status": "completed"}
        if after:
            params["after"] = after
        page = http.get("/v1/jobs", params=params).json()
        assert page["object"] == "list" and len(page["data"]) == 1 and page["has_more"]
        seen.append(page["data"][0]["id"])
        after = page["last_id"]
    assert seen == list(reversed(ids))  # newest first, no repeats across pages
    assert http.get("/v1/jobs", params={"status": "running", "model": "nope"}).json()["data"] == []

    assert http.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409
    deleted = http.delete(f"/v1/jobs/{job['id']}")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert http.get(f"/v1/jobs/{job['id']}").status_code == 404


@pytest.mark.parametrize(("body", "status", "param"), [
    (chat_job(webhook_url="ftp://example.com/hook"), 400, "webhook_url"),
    (chat_job(webhook_url="javascript:alert(1)"), 400, "webhook_url"),
    # outside the webhook allow-list (public addresses and 127.0.0.1 here)
    (chat_job(webhook_url="http://169.254.169.254/latest/meta-data"), 400, "webhook_url"),
    (chat_job(webhook_url="http://2852039166/"), 400, "webhook_url"),
    (chat_job(webhook_url="http://[::ffff:169.254.169.254]/"), 400, "webhook_url"),
    (chat_job(webhook_url="http://127.0.0.2:8000/hook"), 400, "webhook_url"),
    (chat_job(webhook_url="http://10.0.0.1/hook"), 400, "webhook_url"),
    ({"endpoint": "/v1/images", "body": {"model": CHAT_MODEL}}, 400, "endpoint"),
    ({"endpoint": "/v1/chat/completions", "body": {"model": "no-such-model",
                                                   "messages": [{"role": "user",
                                                                 "content": "x"}]}},
     404, "model"),
    ({"endpoint": "/v1/chat/completions", "body": {"model": CHAT_MODEL}}, 400, "messages"),
    ({**chat_job(), "priority": "high"}, 400, "priority"),
])
def test_bad_job_requests_get_openai_errors(http: httpx.Client, body: dict[str, Any],
                                            status: int, param: str) -> None:
    response = http.post("/v1/jobs", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"]


def test_unknown_job_is_404_everywhere(http: httpx.Client) -> None:
    for method, path in (("GET", "/v1/jobs/job_nope"), ("POST", "/v1/jobs/job_nope/cancel"),
                         ("DELETE", "/v1/jobs/job_nope"), ("GET", "/v1/jobs/job_nope/events")):
        response = http.request(method, path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "job_not_found"


def test_prefer_respond_async_on_the_openai_endpoints(inferd_server: InferdProcess,
                                                      http: httpx.Client) -> None:
    with OpenAI(base_url=inferd_server.url + "/v1", api_key="unused", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=CHAT_MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
            extra_headers={"Prefer": "respond-async"})
        assert raw.status_code == 202
        chat = orjson.loads(raw.content)
        raw = client.completions.with_raw_response.create(
            model=CHAT_MODEL, prompt="One, two,", max_tokens=4,
            extra_headers={"Prefer": "respond-async"})
        assert raw.status_code == 202
        completion = orjson.loads(raw.content)
        raw = client.embeddings.with_raw_response.create(
            model=EMBED_MODEL, input=["a cat", "a dog"], extra_headers={"Prefer": "respond-async"})
        assert raw.status_code == 202
        embedding = orjson.loads(raw.content)
    assert wait_done(http, chat["id"])["result"]["object"] == "chat.completion"
    assert wait_done(http, completion["id"])["result"]["choices"][0]["text"]
    vectors = wait_done(http, embedding["id"])["result"]["data"]
    # the SDK asks for base64 (float32 little-endian), and the job keeps that choice
    assert len(vectors) == 2 and len(base64.b64decode(vectors[0]["embedding"])) == 384 * 4


def test_idempotency_key_returns_the_same_job_and_409_on_another_body(
        http: httpx.Client) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = http.post("/v1/jobs", json=chat_job(), headers=key)
    again = http.post("/v1/jobs", json=chat_job(), headers=key)
    assert first.status_code == 202 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    other = http.post("/v1/jobs", json=chat_job("Say bye."), headers=key)
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict"
    wait_done(http, first.json()["id"])


def test_sse_resume_with_last_event_id_loses_and_repeats_no_token(http: httpx.Client) -> None:
    job = http.post("/v1/jobs", json=chat_job("Write a short poem about rivers.",
                                              max_tokens=60)).json()
    first = sse(http, job["id"], stop_after_tokens=2)
    tokens = [e for e in first if e[1] == "token"]
    assert len(tokens) == 2
    last_id = tokens[-1][0]
    assert last_id is not None
    rest = sse(http, job["id"], headers={"Last-Event-ID": last_id})
    assert rest[-1][1] == "completed"
    final = orjson.loads(rest[-1][2])
    ids = [int(e[0]) for e in first + rest if e[0] is not None]
    assert ids == sorted(set(ids)), "an event was repeated or came out of order"
    text = "".join(orjson.loads(e[2])["text"] for e in first + rest if e[1] == "token")
    assert text == final["result"]["choices"][0]["message"]["content"]

    late = sse(http, job["id"])  # after the job finished: the whole result
    assert late[0][1] == "status" and late[-1][1] == "completed"
    assert "".join(orjson.loads(e[2])["text"] for e in late if e[1] == "token") == text


def test_cancel_a_pending_job_and_a_deadline_that_passes(http: httpx.Client) -> None:
    # The shared server runs one job of a model at a time. ``busy`` cannot end before it has
    # written 1,000 tokens (its end-of-text tokens are banned), so the jobs queued behind it
    # are still pending when ``late``'s deadline passes; ``busy`` is cancelled after that.
    long_run = chat_job("Count from one to fifty.", max_tokens=1000, priority=10)
    long_run["body"]["logit_bias"] = {"0": -100, "1": -100, "2": -100}
    busy = http.post("/v1/jobs", json=long_run).json()
    wait_for(lambda: http.get(f"/v1/jobs/{busy['id']}").json()["status"] == "running",
             within=120, what="the long job running")
    waiting = http.post("/v1/jobs", json=chat_job(priority=-5)).json()
    late = http.post("/v1/jobs", json=chat_job(priority=-5, deadline_seconds=0.2)).json()
    cancelled = http.post(f"/v1/jobs/{waiting['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert http.post(f"/v1/jobs/{waiting['id']}/cancel").status_code == 409
    failed = wait_done(http, late["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "deadline_exceeded"
    http.post(f"/v1/jobs/{busy['id']}/cancel")  # not needed any longer (409 if it has ended)
    assert wait_done(http, busy["id"])["status"] in ("cancelled", "completed")
    assert wait_done(http, waiting["id"])["result"] is None


async def test_webhook_is_signed_retried_and_recorded(inferd_server: InferdProcess) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(({k.lower(): v for k, v in request.headers.items()},
                         await request.read()))
        return web.Response(status=500 if len(received) == 1 else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with serving(app) as hook_url, \
            httpx.AsyncClient(base_url=inferd_server.url, timeout=60) as http:
        job = (await http.post("/v1/jobs", json=chat_job(webhook_url=hook_url + "/hook"))).json()

        async def delivered() -> dict[str, Any] | None:
            # inferd records an attempt after the hook answered: wait on what it stored
            final: dict[str, Any] = (await http.get(f"/v1/jobs/{job['id']}")).json()
            return final if final["webhook_status"] == "delivered" else None

        final = await wait_for_async(delivered, within=120, what="the webhook delivery")
        secret = (await http.get("/v1/webhooks/secret")).json()["secret"]
        attempts = (await http.get(f"/v1/jobs/{job['id']}/webhook_attempts")).json()["data"]
    assert len(received) == 2
    for headers, body in received:
        assert verify(secret, headers, body)
        assert headers["webhook-id"] == f"msg_{job['id']}"
    payload = orjson.loads(received[-1][1])
    assert payload["type"] == "job.completed" and payload["data"]["id"] == job["id"]
    assert [a["status_code"] for a in attempts] == [500, 200]
    assert final["webhook_status"] == "delivered"


def _same_answer(body: dict[str, Any]) -> dict[str, Any]:
    """What must match between a job's result and a sync answer: all but ids, times, the
    spacing of a call's arguments (streamed as the model wrote them, parsed when not) and how
    much of the prompt the engine's cache held (the state the earlier requests left)."""
    choices = []
    for choice in body["choices"]:
        message = dict(choice["message"])
        message["tool_calls"] = [
            {**call, "id": None, "function": {**call["function"], "arguments": orjson.loads(
                call["function"]["arguments"])}} for call in message.get("tool_calls") or []]
        choices.append({**choice, "message": message})
    usage = dict(body["usage"])
    cached = usage.pop("prompt_tokens_details")["cached_tokens"]
    assert 0 <= cached <= usage["prompt_tokens"]
    return {"object": body["object"], "model": body["model"], "choices": choices,
            "usage": usage}


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


@pytest.mark.parametrize("extra", [
    {"n": 2, "logprobs": True, "top_logprobs": 1},
    {"tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False,
     "max_tokens": 120},
], ids=["two-choices", "tool-call"])
def test_job_result_is_the_body_a_sync_request_answers(http: httpx.Client,
                                                       extra: dict[str, Any]) -> None:
    job = chat_job("What is the weather in Paris?", max_tokens=24)
    job["body"].update(extra)
    sync = http.post("/v1/chat/completions", json=job["body"])
    assert sync.status_code == 200, sync.text
    done = wait_done(http, http.post("/v1/jobs", json=job).json()["id"])
    assert done["status"] == "completed", done
    assert _same_answer(done["result"]) == _same_answer(sync.json())
    choices = done["result"]["choices"]
    assert len(choices) == extra.get("n", 1)
    if "tools" in extra:
        assert choices[0]["finish_reason"] == "tool_calls"
        call = choices[0]["message"]["tool_calls"][0]
        assert call["function"]["name"] == "get_weather" and call["id"].startswith("call_")
        assert "city" in orjson.loads(call["function"]["arguments"])
    else:
        assert all(c["logprobs"]["content"] for c in choices)
