"""A money budget holds on every endpoint that spends, through a real ``inferd serve``.

Budgets that only some endpoints honour are what users of other gateways report (the
Responses and Messages APIs, batches and passthrough going around them). Here one key whose
budget cannot pay for any request's worst case is refused with ``insufficient_quota`` on chat,
completions, embeddings, the Responses API, the Anthropic Messages API (in its own shape), a
job and a batch line; and a key with room spends on each of them, each request's cost
counted in its usage record, the key's usage summing to what the endpoints cost. The official
``openai`` and ``anthropic`` SDKs are the clients; the echo engine is the model.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
import yaml

from tests.helpers import InferdProcess, wait_for

ADMIN_KEY = "sk-test-admin-budget-endpoints-0123456789"
# 0.25 an input token, 0.5 an output token: every cost is a binary fraction, exact in JSON.
PRICE = {"input": 250_000, "output": 500_000}
TEXT = "one two three four five six seven eight"
CHAT = {"model": "echo", "max_tokens": 8, "messages": [{"role": "user", "content": TEXT}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    tmp = tmp_path_factory.mktemp("budget-endpoints")
    config = tmp / "inferd.yaml"
    config.write_text(yaml.safe_dump({"models": [{"name": "echo", "kind": "echo",
                                                  "price": PRICE}]}))
    env = {"INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_KEY_REFRESH_SECONDS": "0.3",
           "INFERD_USAGE_FLUSH_SECONDS": "0.2"}
    with InferdProcess(tmp, "--config", str(config), "--no-bundled", env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def admin(server: InferdProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
        yield client


def budgeted_key(server: InferdProcess, admin: httpx.Client, name: str,
                 budget: float) -> tuple[str, str]:
    created = admin.post("/admin/v1/keys", json={"name": name, "max_budget": budget})
    assert created.status_code == 201, created.text
    key: dict[str, Any] = created.json()
    wait_for(lambda: httpx.get(server.url + "/v1/models", timeout=30, headers={
        "Authorization": f"Bearer {key['key']}"}).status_code == 200, what="the key accepted")
    return str(key["id"]), str(key["key"])


def job_outcome(http: httpx.Client, body: dict[str, Any],
                endpoint: str = "/v1/chat/completions") -> dict[str, Any]:
    submitted = http.post("/v1/jobs", json={"endpoint": endpoint, "body": body})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]

    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in ("completed", "failed", "cancelled") else None

    return wait_for(finished, what=f"job {job_id} finishing")


def batch_lines(client: openai.OpenAI) -> tuple[dict[str, Any], dict[str, Any]]:
    """A batch of one chat line: its output and error files' lines, by custom id."""
    text = json.dumps({"custom_id": "line-1", "method": "POST", "url": "/v1/chat/completions",
                       "body": CHAT}) + "\n"
    uploaded = client.files.create(file=("input.jsonl", io.BytesIO(text.encode())),
                                   purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")

    def ended() -> openai.types.Batch | None:
        now = client.batches.retrieve(batch.id)
        return now if now.status in ("completed", "failed", "cancelled", "expired") else None

    done = wait_for(ended, what=f"batch {batch.id} ending")

    def lines(file_id: str | None) -> dict[str, Any]:
        if not file_id:
            return {}
        rows = [json.loads(x) for x in client.files.content(file_id).text.splitlines() if x]
        return {row["custom_id"]: row for row in rows}

    return lines(done.output_file_id), lines(done.error_file_id)


def test_a_budget_too_small_for_any_request_refuses_every_endpoint(
        server: InferdProcess, admin: httpx.Client) -> None:
    # 8 output tokens at 0.5 is a worst case of 4 or more; 8 input tokens to embed cost 2.
    _, key = budgeted_key(server, admin, "small budget", 1.0)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    calls = {
        "chat": lambda: client.chat.completions.create(**CHAT),
        "completions": lambda: client.completions.create(model="echo", prompt=TEXT,
                                                         max_tokens=8),
        "embeddings": lambda: client.embeddings.create(model="echo", input=TEXT),
        "responses": lambda: client.responses.create(model="echo", input=TEXT,
                                                     max_output_tokens=16),
    }
    for name, call in calls.items():
        with pytest.raises(openai.RateLimitError) as refused:
            call()
            pytest.fail(f"{name}: not refused")
        error = refused.value.body
        assert isinstance(error, dict) and error["code"] == "insufficient_quota", (name, error)
        assert refused.value.response.headers.get("retry-after"), name

    # a background response is accepted, then runs as a job does: it fails, refused
    background = client.responses.create(model="echo", input=TEXT, max_output_tokens=16,
                                         background=True)
    ended = wait_for(lambda: (now if (now := client.responses.retrieve(background.id)).status
                              in ("completed", "failed", "incomplete", "cancelled") else None),
                     what="the background response ending")
    assert ended.status == "failed" and ended.error is not None
    # OpenAI's codes of a response's error are an enum: the limit's own code is in the message
    assert ended.error.code == "rate_limit_exceeded", ended.error
    assert "(insufficient_quota)" in ended.error.message

    messages = anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as refused_messages:
        messages.messages.create(model="echo", max_tokens=8,
                                 messages=[{"role": "user", "content": TEXT}])
    assert refused_messages.value.response.json()["error"]["type"] == "rate_limit_error"

    with httpx.Client(base_url=server.url, timeout=60,
                      headers={"Authorization": f"Bearer {key}"}) as http:
        job = job_outcome(http, CHAT)
    assert job["status"] == "failed" and job["error"]["code"] == "insufficient_quota", job

    output, errors = batch_lines(client)
    assert "line-1" not in output
    assert errors["line-1"]["response"]["status_code"] == 429
    assert errors["line-1"]["response"]["body"]["error"]["code"] == "insufficient_quota"

    # nothing was spent: every refusal came before the request was sent
    spent = admin.get("/admin/v1/usage", params={"group_by": "key"}).json()["data"]
    assert all(row.get("cost", 0) in (0, None) for row in spent
               if str(row.get("key_id")) == key)


def test_every_endpoint_spends_from_the_budget(server: InferdProcess,
                                               admin: httpx.Client) -> None:
    key_id, key = budgeted_key(server, admin, "roomy budget", 1000.0)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    client.chat.completions.create(**CHAT)
    client.completions.create(model="echo", prompt=TEXT, max_tokens=8)
    client.embeddings.create(model="echo", input=TEXT)
    client.responses.create(model="echo", input=TEXT, max_output_tokens=16)
    anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0).messages.create(
        model="echo", max_tokens=8, messages=[{"role": "user", "content": TEXT}])
    with httpx.Client(base_url=server.url, timeout=60,
                      headers={"Authorization": f"Bearer {key}"}) as http:
        assert job_outcome(http, CHAT)["status"] == "completed"
    output, errors = batch_lines(client)
    assert errors == {} and output["line-1"]["response"]["status_code"] == 200
    endpoints = 7  # chat, completions, embeddings, responses, messages, job, batch line

    def records() -> list[dict[str, Any]]:
        with httpx.Client(base_url=server.url, timeout=60,
                          headers={"Authorization": f"Bearer {key}"}) as http:
            data: list[dict[str, Any]] = http.get("/v1/requests",
                                                  params={"limit": 100}).json()["data"]
        return data if len(data) == endpoints else []

    logged = wait_for(records, what="every request in the request log")
    # each request's record carries its cost: prompt tokens at 0.25, completion tokens at 0.5
    for record in logged:
        expected = record["prompt_tokens"] * 0.25 + record["completion_tokens"] * 0.5
        assert record["status"] == 200 and record["cost"] > 0, record
        assert record["cost"] == pytest.approx(expected), record
    total = sum(record["cost"] for record in logged)

    # and the key's spend against its budget (what the keys page shows) is their sum
    def spend() -> list[float]:
        rows = admin.get("/admin/v1/usage", params={"group_by": "key",
                                                    "key_id": key_id}).json()["data"]
        return [row["cost"] for row in rows if row["requests"] == endpoints]

    assert wait_for(spend, what="every usage record") == [pytest.approx(total)]
