"""Metering of a request whose client leaves early, through ``Inference`` on a real SQLite."""

from __future__ import annotations

import gc
from typing import Any

from inferd.auth.principal import OPEN_MODE
from inferd.engines.echo import EchoEngine
from inferd.inference import Inference
from inferd.metering import Metering
from inferd.routing.router import Replica, Router
from inferd.schemas.openai import ChatCompletionRequest
from inferd.settings import ModelSpec, load_settings
from inferd.store.db import Database
from tests.helpers import wait_for_async


async def test_a_stream_dropped_before_it_is_read_is_still_metered(tmp_path: Any) -> None:
    """A client that leaves before the response starts: the stream is never iterated, yet its
    usage record is written and the in-flight gauge goes back down."""
    settings = load_settings(data_dir=tmp_path, bundled_models=False)
    db = Database(settings.storage.resolved_database_url())
    await db.migrate()
    router = Router()
    router.add(Replica(id="local:echo", model="echo",
                       engine=EchoEngine(ModelSpec(name="echo", kind="echo"))))
    metering = await Metering.start(settings.usage, db, data_dir=settings.storage.data_dir,
                                      requests=settings.requests)
    inference = Inference(router, metering)
    in_flight = metering.metrics.child("in_flight", "echo")
    recorder = metering.recorder
    try:
        before = recorder.accepted
        stream = await inference.chat_stream(ChatCompletionRequest.model_validate(
            {"model": "echo", "messages": [{"role": "user", "content": "a b c"}]}), OPEN_MODE)
        assert in_flight._value.get() == 1
        del stream
        gc.collect()

        # Counted on acceptance: the writer thread may have stored it by the time we look.
        async def metered() -> bool:
            return recorder.accepted == before + 1

        await wait_for_async(metered, within=30, what="the dropped stream's usage record")
        assert in_flight._value.get() == 0
        rows = await (await metering.flushed_store()).recent(limit=10)
        assert [(r["model"], r["endpoint"]) for r in rows] == [("echo", "chat")]
    finally:
        await inference.close()
        await metering.close()
        await db.close()
