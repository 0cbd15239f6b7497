"""The budget webhook: a money budget's events POSTed, signed, to ``budget_webhook_url``.

The limiters give a ``BudgetEvent`` once per budget and period (in this process, or among every
gateway sharing Redis): ``budget.alert`` when the spend reaches ``budget_alert`` percent,
``budget.exhausted`` when the budget first refuses a request. ``send`` only puts the event in
a bounded queue (full: the event is dropped and counted), so a request never waits for the
webhook nor fails because of it; one task of this process delivers the queue in order, each
event retried with exponential backoff (the job webhooks' ``jobs.webhook_*`` settings).

Signed as job webhooks are (``inferd.webhook_signing``), with ``budget_webhook_secret``. The
``webhook-id`` is made of the event (type, level, owner, period), so a receiver can drop a
repeat (a process restarted with ``local`` limits gives an alert of the period again). The URL
must be inside ``jobs.webhook_allowed_hosts``, checked before each attempt and at connect time
(``inferd.outbound``); redirects are never followed and the receiver's answer body is never
read.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypedDict

import orjson

from inferd.auth.limits import NANOS, BudgetEvent, BudgetEventType
from inferd.auth.principal import BudgetPeriod
from inferd.errors import InvalidRequest
from inferd.metrics import Metrics
from inferd.outbound import AddressRefused, HostAllowList, Purpose
from inferd.settings import JobSettings
from inferd.webhook_signing import signed_headers

# aiohttp is imported with the first webhook sent: most processes send none.
if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("inferd.limits")

BUDGET_WEBHOOK = Purpose("budget_webhook_url", "budget_webhook_url", "webhook_url_not_allowed",
                         "jobs.webhook_allowed_hosts")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


class BudgetPayload(TypedDict):
    """The webhook's body: the event, and the budget it is about (``id``, ``name``: its
    key's, user's or team's, as ``level`` says)."""

    type: BudgetEventType
    timestamp: str
    level: str
    id: str | int | None
    name: str
    spend: float
    max_budget: float | None
    percent: float | None
    period: BudgetPeriod | None
    period_start: str | None


def payload(event: BudgetEvent) -> BudgetPayload:
    """What the webhook's body holds (JSON)."""
    gate = event.gate
    spend = event.spend / NANOS
    budget = gate.max_budget or 0.0
    return {"type": event.type, "timestamp": _iso(event.at), "level": gate.level,
            "id": gate.owner_id, "name": gate.owner_name, "spend": spend,
            "max_budget": gate.max_budget,
            "percent": round(spend * 100 / budget, 2) if budget else None,
            "period": gate.period,
            "period_start": _iso(event.period_start) if gate.period is not None else None}


def message_id(event: BudgetEvent) -> str:
    """The ``webhook-id`` of an event: the same for every attempt, and for the same event of
    the same budget and period given again."""
    gate = event.gate
    made = f"{event.type}|{gate.level}|{gate.owner_id}|{gate.key}|{int(event.period_start)}"
    return "msg_budget_" + hashlib.sha256(made.encode()).hexdigest()[:32]


class BudgetWebhook:
    """Delivers budget events to one URL, signed with ``secret`` (``whsec_...``), off the
    request path, in order."""

    def __init__(self, url: str, secret: str, settings: JobSettings, metrics: Metrics,
                 queue_size: int) -> None:
        self.url = url
        self.secret = secret
        self.settings = settings
        self.metrics = metrics
        self.allow = HostAllowList(settings.webhook_allowed_hosts, BUDGET_WEBHOOK)
        self._queue: asyncio.Queue[BudgetEvent] = asyncio.Queue(queue_size)
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    def send(self, event: BudgetEvent) -> None:
        """Queue ``event`` (an ``OnBudget``); never waits, never raises."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.metrics.child("budget_webhooks", event.type, "dropped").inc()
            log.warning("budget webhook queue is full (%d events): %s of %s dropped",
                        self._queue.maxsize, event.type, event.gate.holder)

    def pending(self) -> int:
        """Events queued and not yet taken up."""
        return self._queue.qsize()

    def start(self) -> None:
        """Start delivering (on the running event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(),
                                                                name="budget-webhook")

    async def check(self) -> None:
        """Log an error when the URL is not allowed now (every attempt would be refused)."""
        try:
            await self.allow.check(self.url)
        except InvalidRequest as exc:
            log.error("budget webhook events will not be delivered: %s", exc.message)

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                delivered = await self.deliver(event)
            except Exception:  # the loop must go on with the next event
                log.exception("budget webhook: %s of %s failed", event.type, event.gate.holder)
                delivered = False
            finally:
                self._queue.task_done()
            outcome = "delivered" if delivered else "failed"
            self.metrics.child("budget_webhooks", event.type, outcome).inc()

    async def deliver(self, event: BudgetEvent) -> bool:
        """POST ``event``, retried with backoff; True once the receiver answered 2xx."""
        body, msg_id = orjson.dumps(payload(event)), message_id(event)
        attempts = self.settings.webhook_attempts
        for attempt in range(1, attempts + 1):
            status, error = await self._post(body, msg_id)
            if status is not None and 200 <= status < 300:
                return True
            if error is not None and error.startswith("refused"):
                log.warning("budget webhook: %s (%s)", error, event.type)
                return False  # the same URL would be refused again
            if attempt < attempts:
                await asyncio.sleep(self.settings.webhook_backoff_seconds * 2 ** (attempt - 1))
        log.warning("budget webhook: %s of %s failed after %d attempts (last: %s)",
                    event.type, event.gate.holder, attempts, error or f"status {status}")
        return False

    async def _post(self, body: bytes, msg_id: str) -> tuple[int | None, str | None]:
        import aiohttp

        from inferd.guarded_resolver import connector_options

        try:
            await self.allow.check(self.url)
        except InvalidRequest as exc:
            return None, f"refused: {exc.message}"
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(**connector_options(self.allow)),
                timeout=aiohttp.ClientTimeout(total=self.settings.webhook_timeout_seconds))
        try:
            async with self._session.post(self.url, data=body,
                                          headers=signed_headers(self.secret, msg_id, body),
                                          allow_redirects=False) as response:
                return response.status, None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, AddressRefused):
                return None, f"refused: {exc.os_error}"
            return None, f"{type(exc).__name__}: {exc}"[:500]
        except (aiohttp.ClientError, TimeoutError) as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]

    async def close(self, grace: float | None = None) -> None:
        """Give the queued events up to ``grace`` seconds (the webhook timeout when None) to
        be delivered, then stop."""
        if self._task is not None:
            wait = self.settings.webhook_timeout_seconds if grace is None else grace
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), wait)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()
