"""The budget webhook through a real ``inferd serve``: a key with a money budget and an alert
percentage, requests (the official ``openai`` SDK, the echo engine with a price) that cross the
alert and then use the budget up; a real HTTP receiver on loopback (allowed by
``INFERD_JOB_WEBHOOK_ALLOWED_HOSTS``) gets exactly one ``budget.alert`` and one
``budget.exhausted``, signed with ``INFERD_BUDGET_WEBHOOK_SECRET``, the first attempt refused by
the receiver and retried."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from inferd.auth.limits import period_bounds
from inferd.ids import new_webhook_secret
from inferd.webhook_signing import verify
from tests.helpers import InferdProcess, require_service, wait_for

ADMIN_KEY = "sk-test-admin-budget-webhook-0123456789"
SECRET = new_webhook_secret()
# 0.01 an input token, 0.02 an output token: a request of CHAT costs about a quarter
PRICE = {"input": 10_000, "output": 20_000}
CHAT: dict[str, Any] = {"model": "echo", "max_tokens": 8, "messages": [
    {"role": "user", "content": "one two three four five six seven eight"}]}


class Receiver:
    """A webhook receiver in a thread of its own: keeps (headers, body) of every POST, and
    answers the first one 503 (inferd retries it), the others 204."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    receiver.got.append(({k.lower(): v for k, v in self.headers.items()},
                                         body))
                    first = len(receiver.got) == 1
                self.send_response(503 if first else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/budget"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def clear(self) -> None:
        with self.lock:
            self.got.clear()

    def events(self) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return list(self.got)

    def distinct(self) -> dict[str, dict[str, Any]]:
        """The events by ``webhook-id``, in the order they first came."""
        return {headers["webhook-id"]: json.loads(body) for headers, body in self.events()}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    made.thread.start()
    yield made
    made.server.shutdown()
    made.server.server_close()


@pytest.fixture(scope="module", params=["local", "redis"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           receiver: Receiver) -> Iterator[InferdProcess]:
    """``inferd serve`` with its limits in the process, then in Redis (the events' marks in
    Redis, as among several gateways)."""
    tmp = tmp_path_factory.mktemp("budget-webhook")
    config = tmp / "inferd.yaml"
    config.write_text(yaml.safe_dump({"models": [{"name": "echo", "kind": "echo",
                                                  "price": PRICE}]}))
    env = {"INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_KEY_REFRESH_SECONDS": "0.3",
           "INFERD_USAGE_FLUSH_SECONDS": "0.2",
           "INFERD_BUDGET_WEBHOOK_URL": receiver.url, "INFERD_BUDGET_WEBHOOK_SECRET": SECRET,
           "INFERD_JOB_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1/32"]',
           "INFERD_JOB_WEBHOOK_BACKOFF_SECONDS": "0.2"}
    if request.param == "redis":
        require_service("redis")
        env.update({"INFERD_REDIS_URL": "redis://127.0.0.1:6379/0",
                    "INFERD_LIMITS_BACKEND": "redis",
                    "INFERD_REDIS_PREFIX": f"inferd-test-{uuid.uuid4().hex[:8]}"})
    receiver.clear()
    with InferdProcess(tmp, "--config", str(config), "--no-bundled", env=env) as proc:
        yield proc


def _key(server: InferdProcess, admin: httpx.Client, **spec: Any) -> dict[str, Any]:
    created = admin.post("/admin/v1/keys", json=spec)
    assert created.status_code == 201, created.text
    key: dict[str, Any] = created.json()
    wait_for(lambda: httpx.get(server.url + "/v1/models", timeout=30, headers={
        "Authorization": f"Bearer {key['key']}"}).status_code == 200, what="the key accepted")
    return key


def _delivered(server: InferdProcess, kind: str) -> float:
    for family in text_string_to_metric_families(httpx.get(server.url + "/metrics").text):
        for sample in family.samples:
            if (sample.name == "inferd_budget_webhooks_total"
                    and sample.labels == {"type": kind, "outcome": "delivered"}):
                return float(sample.value)
    raise AssertionError("inferd_budget_webhooks_total is missing")


def test_a_budget_crossing_its_alert_and_used_up_gives_one_signed_event_each(
        server: InferdProcess, receiver: Receiver, request: pytest.FixtureRequest) -> None:
    with httpx.Client(base_url=server.url, timeout=60,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
        key = _key(server, admin, name="nightly-evals", max_budget=1.0, budget_period="day",
                   budget_alert=50)
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=key["key"], max_retries=0)
        before = period_bounds("day", time.time())[0]
        served = 0
        with pytest.raises(openai.RateLimitError) as refused:
            for _ in range(20):  # about a quarter each: used up after a few
                client.chat.completions.create(**CHAT)
                served += 1
        assert isinstance(refused.value.body, dict)
        assert refused.value.body["code"] == "insufficient_quota"
        assert served >= 2
        with pytest.raises(openai.RateLimitError):  # refused again: given once per period
            client.chat.completions.create(**CHAT)
        after = period_bounds("day", time.time())[0]

        def both() -> dict[str, dict[str, Any]] | None:
            got = receiver.distinct()
            return got if len(got) >= 2 else None

        wait_for(both, what="the alert and the exhausted events")
        # Events go out one at a time, in order: once a later event (another key's alert)
        # has come, every event of the first key has.
        other = _key(server, admin, name="sentinel", max_budget=10.0, budget_alert=1)
        sentinel = openai.OpenAI(base_url=server.url + "/v1", api_key=other["key"],
                                 max_retries=0)
        sentinel.chat.completions.create(**CHAT)
        wait_for(lambda: len(receiver.distinct()) >= 3, what="the sentinel's alert")
        wait_for(lambda: _delivered(server, "budget.alert") == 2,
                 what="both alerts counted as delivered")
        assert _delivered(server, "budget.exhausted") == 1
        events = list(receiver.distinct().values())

        def usage() -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = admin.get("/admin/v1/usage", params={
                "group_by": "key", "key_id": key["id"]}).json()["data"]
            return rows if rows and rows[0]["requests"] == served + 2 else []

        cost = wait_for(usage, what="the key's usage records (2 refused)")[0]["cost"]

    assert [(e["type"], e["id"]) for e in events] == [
        ("budget.alert", key["id"]), ("budget.exhausted", key["id"]),
        ("budget.alert", other["id"])]
    for headers, body in receiver.events():
        assert verify(SECRET, headers, body)
    attempts = [headers["webhook-id"] for headers, _ in receiver.events()]
    assert attempts[0] == attempts[1] and len(attempts) == 4  # the 503 was retried
    alert, exhausted = events[0], events[1]
    starts = {datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")
              for t in (before, after)}
    for event in (alert, exhausted):
        assert (event["level"], event["name"], event["max_budget"], event["period"]) == (
            "key", "nightly-evals", 1.0, "day")
        assert event["period_start"] in starts
        assert event["percent"] == round(event["spend"] * 100, 2)
    assert 0.5 <= alert["spend"] <= 1.0  # reached the alert, never past the budget
    # every request had ended when the budget refused: the spend was what they cost, and
    # with Redis perhaps the last one's reservation still (its real cost is settled in the
    # background, a few milliseconds later)
    if request.node.callspec.params["server"] == "local":
        assert exhausted["spend"] == pytest.approx(cost)
    assert 0.5 <= cost <= exhausted["spend"] <= 1.0
    assert events[2]["period"] is None and events[2]["period_start"] is None
    assert events[2]["name"] == "sentinel" and events[2]["spend"] >= 0.1
