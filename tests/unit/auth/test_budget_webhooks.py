"""The budget webhook's queue and deliveries, against a real HTTP receiver on loopback: a full
queue drops (and counts) what does not fit without ever waiting, events go out in order,
signed, retried with backoff, and a refused or failing receiver is counted as failed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from inferd.auth.budget_webhooks import BudgetWebhook, message_id, payload
from inferd.auth.limits import ALERT, EXHAUSTED, BudgetEvent, Gate, nanos, period_bounds
from inferd.ids import new_webhook_secret
from inferd.metrics import Metrics
from inferd.settings import JobSettings, Settings
from inferd.webhook_signing import valid_secret, verify
from tests.helpers import serving, wait_for_async

SECRET = new_webhook_secret()
LOOPBACK = JobSettings(webhook_allowed_hosts=["127.0.0.1/32"], webhook_attempts=3,
                       webhook_backoff_seconds=0.01)
DAY = period_bounds("day", 1_796_000_000.0)[0]  # 2026-11-30 UTC


def _gate(level: str = "team", owner: str | int = 7, name: str = "search") -> Gate:
    return Gate(f"{level}-{owner}", f"the {level} '{name}'", None, None, None, "day",
                nanos(10.0), nanos(8.0), 10.0, level, owner_id=owner, owner_name=name)


def _event(kind: Any = ALERT, spend: float = 8.25, **gate: Any) -> BudgetEvent:
    return BudgetEvent(kind, _gate(**gate), nanos(spend), DAY)


class Receiver:
    """What a receiver got: (headers, body) of every POST; answers ``statuses`` in turn,
    then 200."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.statuses = list(statuses or [])

    async def hook(self, request: web.Request) -> web.Response:
        self.got.append(({k.lower(): v for k, v in request.headers.items()},
                         await request.read()))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    def bodies(self) -> list[dict[str, Any]]:
        return [orjson.loads(body) for _, body in self.got]


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    seen = Receiver()
    app = web.Application()
    app.router.add_post("/hook", seen.hook)
    async with serving(app) as url:
        yield seen, url + "/hook"


def _count(metrics: Metrics, kind: str, outcome: str) -> float:
    value: float = metrics.child("budget_webhooks", kind, outcome)._value.get()
    return value


async def _counted(metrics: Metrics, kind: str, outcome: str, expected: float) -> None:
    async def reached() -> bool:
        return _count(metrics, kind, outcome) == expected

    await wait_for_async(reached, what=f"{expected} {kind} {outcome}")


async def test_a_full_queue_drops_and_counts_then_the_queued_go_out_in_order(
        receiver: tuple[Receiver, str]) -> None:
    seen, url = receiver
    metrics = Metrics()
    webhook = BudgetWebhook(url, SECRET, LOOPBACK, metrics, queue_size=2)
    first, second = _event(owner=1), _event(EXHAUSTED, spend=9.5, owner=2)
    for event in (first, second, _event(owner=3), _event(EXHAUSTED, owner=4)):
        webhook.send(event)  # not started yet: the queue holds 2, the others are dropped
    assert webhook.pending() == 2
    assert _count(metrics, "budget.alert", "dropped") == 1
    assert _count(metrics, "budget.exhausted", "dropped") == 1
    webhook.start()
    try:
        await _counted(metrics, "budget.exhausted", "delivered", 1)
        assert _count(metrics, "budget.alert", "delivered") == 1
    finally:
        await webhook.close()
    assert [body["id"] for body in seen.bodies()] == [1, 2]  # in order; 3 and 4 dropped
    for headers, body in seen.got:
        assert verify(SECRET, headers, body)
        assert headers["content-type"] == "application/json"
    assert [headers["webhook-id"] for headers, _ in seen.got] == [message_id(first),
                                                                   message_id(second)]
    assert seen.bodies()[1] == {
        "type": "budget.exhausted", "timestamp": seen.bodies()[1]["timestamp"],
        "level": "team", "id": 2, "name": "search", "spend": 9.5, "max_budget": 10.0,
        "percent": 95.0, "period": "day", "period_start": "2026-11-30T00:00:00Z"}


async def test_a_failed_attempt_is_retried_with_the_same_id(
        receiver: tuple[Receiver, str]) -> None:
    seen, url = receiver
    seen.statuses = [500, 503]
    metrics = Metrics()
    webhook = BudgetWebhook(url, SECRET, LOOPBACK, metrics, queue_size=10)
    webhook.start()
    try:
        webhook.send(_event(level="key", owner="key_abc", name="ci"))
        await _counted(metrics, "budget.alert", "delivered", 1)
    finally:
        await webhook.close()
    assert len(seen.got) == 3
    assert len({headers["webhook-id"] for headers, _ in seen.got}) == 1
    assert all(verify(SECRET, headers, body) for headers, body in seen.got)
    assert seen.bodies()[0]["level"] == "key" and seen.bodies()[0]["id"] == "key_abc"
    assert _count(metrics, "budget.alert", "failed") == 0


async def test_a_receiver_that_keeps_failing_is_counted_and_the_next_event_goes_out(
        receiver: tuple[Receiver, str]) -> None:
    seen, url = receiver
    seen.statuses = [500, 500, 500]  # every attempt of the first event
    metrics = Metrics()
    webhook = BudgetWebhook(url, SECRET, LOOPBACK, metrics, queue_size=10)
    webhook.start()
    try:
        webhook.send(_event(owner=1))
        webhook.send(_event(EXHAUSTED, owner=1))
        await _counted(metrics, "budget.exhausted", "delivered", 1)
        assert _count(metrics, "budget.alert", "failed") == 1
    finally:
        await webhook.close()
    assert [body["type"] for body in seen.bodies()] == ["budget.alert"] * 3 + [
        "budget.exhausted"]


async def test_a_url_outside_the_allowed_hosts_is_never_called(
        receiver: tuple[Receiver, str]) -> None:
    seen, url = receiver
    metrics = Metrics()
    public_only = JobSettings(webhook_attempts=3, webhook_backoff_seconds=0.01)
    webhook = BudgetWebhook(url, SECRET, public_only, metrics, queue_size=10)
    webhook.start()
    try:
        webhook.send(_event())
        await _counted(metrics, "budget.alert", "failed", 1)
    finally:
        await webhook.close()
    assert seen.got == []


def test_a_total_budget_has_no_period() -> None:
    gate = Gate("k", "this API key", None, None, None, None, nanos(4.0), nanos(3.2), 4.0,
                owner_id="key_1", owner_name="ci")
    body = payload(BudgetEvent(EXHAUSTED, gate, nanos(3.5), 0.0, at=1_796_000_000.0))
    assert body == {"type": "budget.exhausted", "timestamp": "2026-11-30T00:53:20Z",
                    "level": "key", "id": "key_1", "name": "ci", "spend": 3.5,
                    "max_budget": 4.0, "percent": 87.5, "period": None, "period_start": None}


def test_the_settings_refuse_a_bad_url_or_secret() -> None:
    assert valid_secret(SECRET)
    with pytest.raises(ValueError, match="budget_webhook_url"):
        Settings(budget_webhook_url="ftp://hooks.example.com/")
    with pytest.raises(ValueError, match="budget_webhook_secret"):
        Settings(budget_webhook_secret="whsec_not base64!")
    with pytest.raises(ValueError, match="budget_webhook_secret"):
        Settings(budget_webhook_secret="c2hvcnQ=")  # no whsec_ prefix
    with pytest.raises(ValueError, match="budget_webhook_secret is needed"):
        Settings(budget_webhook_url="https://hooks.example.com/budget")
    made = Settings(budget_webhook_url="https://hooks.example.com/budget",
                    budget_webhook_secret=SECRET)
    assert SECRET not in repr(made)
