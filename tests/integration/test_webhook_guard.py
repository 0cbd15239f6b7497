"""Webhooks are sent only where ``jobs.webhook_allowed_hosts`` allows, checked again at send
time: a name rebound to a refused address after submission gets nothing, redirects are not
followed, and a refused attempt records why without anything of the refused host.

The job store is real (SQLite); receivers are aiohttp servers on loopback; names resolve
through ``fake_dns``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from inferd.ids import new_id, new_webhook_secret
from inferd.jobs.webhooks import WebhookSender
from inferd.settings import JobSettings
from inferd.store.db import Database
from inferd.store.jobs import JobRecord, JobStore
from inferd.store.repo import KeyValueStore
from tests.helpers import free_port, serving

BODY_OF_REFUSED_HOST = "internal-answer-8d1f"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[JobStore]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'hooks.db'}")
    await db.migrate()
    yield JobStore(db)
    await db.close()


def sender(store: JobStore, allowed: list[str]) -> WebhookSender:
    settings = JobSettings(webhook_attempts=3, webhook_backoff_seconds=0,
                           webhook_allowed_hosts=allowed)
    return WebhookSender(store, KeyValueStore(store.db), settings)


async def finished_job(store: JobStore, url: str) -> JobRecord:
    job, _ = await store.insert(JobRecord(
        id=new_id("job"), endpoint="/v1/chat/completions", model="echo",
        request={"model": "echo"}, request_hash="h", webhook_url=url, status="completed"))
    return job


class Receiver:
    """Records the webhooks it gets and answers ``status`` with a body that must stay here."""

    def __init__(self, status: int = 200) -> None:
        self.received: list[str] = []
        self.status = status
        self.app = web.Application()
        self.app.router.add_post("/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(request.path)
        return web.Response(status=self.status, text=BODY_OF_REFUSED_HOST)


async def test_a_name_rebound_after_submission_gets_no_webhook(
        store: JobStore, fake_dns: dict[str, list[str]]) -> None:
    receiver = Receiver()
    port = free_port()
    runner = web.AppRunner(receiver.app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    hooks = sender(store, ["public"])
    try:
        fake_dns["hooks.test"] = ["93.184.216.34"]  # public when the job is submitted
        url = f"http://hooks.test:{port}/hook"
        await hooks.allow.check(url)
        job = await finished_job(store, url)
        fake_dns["hooks.test"] = ["127.0.0.1"]  # internal when the webhook is sent
        assert await hooks.deliver(job, new_webhook_secret()) is False
        attempts = await store.attempts(job.id)
    finally:
        await hooks.close()
        await runner.cleanup()
    assert receiver.received == []
    assert len(attempts) == 1  # refused: not retried
    assert attempts[0]["status_code"] is None
    assert attempts[0]["error"].startswith("refused: ")
    assert "webhook_allowed_hosts" in attempts[0]["error"]
    assert (await store.get(job.id)).webhook_state == "failed"  # type: ignore[union-attr]


async def test_an_address_refused_since_submission_gets_no_webhook(store: JobStore) -> None:
    receiver = Receiver()
    async with serving(receiver.app) as base:
        job = await finished_job(store, base + "/hook")  # accepted under another setting
        hooks = sender(store, ["public"])
        try:
            assert await hooks.deliver(job, new_webhook_secret()) is False
        finally:
            await hooks.close()
    assert receiver.received == []
    attempts = await store.attempts(job.id)
    assert [a["error"].startswith("refused: ") for a in attempts] == [True]


async def test_redirects_are_not_followed_and_answers_are_not_kept(store: JobStore) -> None:
    target = Receiver()
    async with serving(target.app) as elsewhere:
        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(elsewhere + "/stolen", text=BODY_OF_REFUSED_HOST)

        failing = Receiver(status=500)
        app = web.Application()
        app.router.add_post("/redirect", redirect)
        app.router.add_post("/fail", failing.handle)
        async with serving(app) as base:
            hooks = sender(store, ["127.0.0.1/32"])
            try:
                moved = await finished_job(store, base + "/redirect")
                broken = await finished_job(store, base + "/fail")
                assert await hooks.deliver(moved, new_webhook_secret()) is False
                assert await hooks.deliver(broken, new_webhook_secret()) is False
            finally:
                await hooks.close()
    assert target.received == []
    assert len(failing.received) == 3  # a real failure is retried
    for job, status in ((moved, 307), (broken, 500)):
        attempts = await store.attempts(job.id)
        assert [a["status_code"] for a in attempts] == [status] * 3
        assert all(BODY_OF_REFUSED_HOST not in repr(a) for a in attempts)
