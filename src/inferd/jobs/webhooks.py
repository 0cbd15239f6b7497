"""Job webhooks, signed the Standard Webhooks way.

Headers and signature: ``inferd.webhook_signing`` (``verify`` is what a receiver does). The
secret is the job owner's key secret when it has one, else the installation secret (generated
once, shown to admins). Each attempt is recorded; failures are retried with exponential backoff.

The URL is checked against ``jobs.webhook_allowed_hosts`` when the job is submitted and again
before each attempt, and every connection goes only to addresses that list allows (resolved
at connect time: see ``inferd.outbound``); redirects are never followed. A refused URL fails
the delivery at once, and its attempt records only why (nothing of a refused host is read).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson

from inferd.errors import InvalidRequest
from inferd.ids import new_webhook_secret
from inferd.jobs.requests import job_object
from inferd.outbound import WEBHOOK, AddressRefused, HostAllowList
from inferd.settings import JobSettings
from inferd.store.jobs import JobRecord, JobStore, WebhookAttempt
from inferd.store.repo import WEBHOOK_SECRET, KeyValueStore

# aiohttp is imported with the first webhook sent: most processes send none.
if TYPE_CHECKING:
    import aiohttp
from inferd.webhook_signing import sign as sign
from inferd.webhook_signing import signed_headers
from inferd.webhook_signing import verify as verify

log = logging.getLogger("inferd.jobs.webhooks")

REFUSED = "refused: "  # the start of an attempt's error when the allow-list refused the URL


class WebhookSender:
    """Delivers a finished job's notice to its webhook URL."""

    def __init__(self, store: JobStore, kv: KeyValueStore, settings: JobSettings) -> None:
        self.store = store
        self.kv = kv
        self.settings = settings
        self.allow = HostAllowList(settings.webhook_allowed_hosts, WEBHOOK)
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[bool]] = set()
        self._installation_secret: str | None = None

    async def installation_secret(self) -> str:
        if self._installation_secret is None:
            self._installation_secret = await self.kv.setdefault_secret(WEBHOOK_SECRET,
                                                                        new_webhook_secret())
        return self._installation_secret

    def in_flight(self, job_id: str) -> bool:
        return any(t.get_name() == job_id for t in self._tasks)

    def schedule(self, job: JobRecord, secret: str | None) -> None:
        """Deliver in the background (the worker moves on at once)."""
        task = asyncio.create_task(self.deliver(job, secret), name=job.id)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def payload(self, job: JobRecord) -> bytes:
        stamp = datetime.fromtimestamp(job.finished_at or time.time(), UTC)
        return orjson.dumps({"type": f"job.{job.status}",
                             "timestamp": stamp.isoformat().replace("+00:00", "Z"),
                             "data": job_object(job)})

    async def deliver(self, job: JobRecord, secret: str | None) -> bool:
        assert job.webhook_url is not None
        key = secret or await self.installation_secret()
        body, msg_id = self.payload(job), f"msg_{job.id}"
        for attempt in range(1, self.settings.webhook_attempts + 1):
            status, error = await self._post(job.webhook_url, key, msg_id, body)
            await self.store.record_attempt(job.id, msg_id, attempt, job.webhook_url, status,
                                            error)
            if status is not None and 200 <= status < 300:
                await self.store.set_webhook_state(job.id, "delivered")
                return True
            if error is not None and error.startswith(REFUSED):
                break  # the same URL would be refused again
            if attempt < self.settings.webhook_attempts:
                await asyncio.sleep(self.settings.webhook_backoff_seconds * 2 ** (attempt - 1))
        log.warning("webhook for job %s failed after %d attempts", job.id, attempt)
        await self.store.set_webhook_state(job.id, "failed")
        return False

    async def _post(self, url: str, key: str, msg_id: str,
                    body: bytes) -> tuple[int | None, str | None]:
        import aiohttp

        from inferd.guarded_resolver import connector_options

        headers = signed_headers(key, msg_id, body)
        try:
            await self.allow.check(url)  # the setting may have changed since submission
        except InvalidRequest as exc:
            return None, f"{REFUSED}{exc.message}"
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(**connector_options(self.allow)),
                timeout=aiohttp.ClientTimeout(total=self.settings.webhook_timeout_seconds))
        try:
            async with self._session.post(url, data=body, headers=headers,
                                          allow_redirects=False) as response:
                return response.status, None  # the receiver's answer body is never read
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, AddressRefused):
                return None, f"{REFUSED}{exc.os_error}"
            return None, f"{type(exc).__name__}: {exc}"[:500]
        except (aiohttp.ClientError, TimeoutError) as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def describe(self, attempts: list[WebhookAttempt]) -> list[WebhookAttempt]:
        return [{**a, "created_at": int(a["created_at"])} for a in attempts]
