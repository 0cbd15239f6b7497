"""Image requests under a money budget through ``Inference``, on the tiny random-weight
diffusers pipeline and a real SQLite: each reserves its pictures at the highest price per
image of the model and its replicas, in the same step as its other limits, and settles to the
pictures really made at the price of the replica that made them; a price per step charges the
steps each picture ran (those asked for when the replica does not say)."""

from __future__ import annotations

import asyncio
import json
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from inferd.auth.limits import NANOS, LocalLimiter
from inferd.auth.principal import Principal
from inferd.engines.diffusers import DiffusersEngine
from inferd.engines.http import HttpEngine
from inferd.engines.remote import RemoteSpec
from inferd.errors import RateLimited
from inferd.inference import Inference
from inferd.metering import Metering
from inferd.prices import Price
from inferd.routing.router import Replica, Router
from inferd.schemas.images import ImageGenerationRequest
from inferd.settings import ModelSpec, load_settings
from inferd.store.db import Database


async def test_a_budget_for_two_pictures_refuses_a_third_concurrent_request(
        tmp_path: Path, tiny_pipeline: Path) -> None:
    spec = ModelSpec(name="tiny-sd", kind="diffusers", path=str(tiny_pipeline), steps=1,
                     size="64x64")
    engine = DiffusersEngine(spec)
    await engine.start()
    router = Router()
    router.add(Replica(id="local:tiny-sd", model="tiny-sd", engine=engine))
    settings = load_settings(data_dir=tmp_path, bundled_models=False)
    db = Database(settings.storage.resolved_database_url())
    await db.migrate()
    metering = await Metering.start(settings.usage, db, data_dir=settings.storage.data_dir,
                                      requests=settings.requests)
    # the local replica makes pictures at 0.25; another replica of the model, at 0.5: a
    # request reserves 0.5 a picture, whichever replica will make it
    metering.prices.replace({"tiny-sd": Price(image=Decimal("0.25"))},
                            {"remote:tiny-sd": Price(image=Decimal("0.5"))},
                            {"local:tiny-sd": "tiny-sd", "remote:tiny-sd": "tiny-sd"})
    limiter = LocalLimiter()
    inference = Inference(router, metering, limiter=limiter)
    key = Principal(key_id="7", scope="user", max_budget=1.0)
    request = ImageGenerationRequest.model_validate({"model": "tiny-sd", "prompt": "a cube"})

    async def draw() -> dict[str, Any] | RateLimited:
        try:
            return (await inference.images(request, key)).wire()
        except RateLimited as refused:
            return refused

    try:
        results = await asyncio.gather(*(draw() for _ in range(3)))
        refused = [r for r in results if isinstance(r, RateLimited)]
        assert len(refused) == 1 and len(results) - len(refused) == 2
        assert refused[0].status == 429 and refused[0].code == "insufficient_quota"
        assert "this API key" in refused[0].message
        # settled to the two pictures made at the local replica's price
        assert limiter.money_spent(key.limit_key) == NANOS // 2
        with_room = await inference.images(request, key)  # 0.5 + a worst case of 0.5 fits
        assert len(with_room.data) == 1
        assert limiter.money_spent(key.limit_key) == 3 * NANOS // 4
        with_two = ImageGenerationRequest.model_validate(
            {"model": "tiny-sd", "prompt": "a cube", "n": 2})
        with pytest.raises(RateLimited) as past:  # 0.75 + 2 x 0.5 > 1: refused before it runs
            await inference.images(with_two, key)
        assert past.value.code == "insufficient_quota"
        assert limiter.money_spent(key.limit_key) == 3 * NANOS // 4
    finally:
        await inference.close()
        await metering.close()
        await db.close()
        await engine.close()


class _OpenAIStyleImages(BaseHTTPRequestHandler):
    """An images server that, like OpenAI's, does not say how many steps it ran (OpenAI's API
    cannot run here): ``n`` one-byte pictures, ``usage`` without ``steps``."""

    def do_POST(self) -> None:
        asked = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        n = int(asked.get("n") or 1)
        body = json.dumps({"created": 1, "data": [{"b64_json": "AA=="}] * n,
                           "usage": {"images": n, "input_tokens": 0, "output_tokens": 0,
                                     "total_tokens": 0}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


async def test_a_replica_that_does_not_count_steps_is_charged_the_steps_asked(
        tmp_path: Path) -> None:
    """Pictures of a replica whose answer has no ``usage.steps`` are charged the steps the
    request asked for, else the default a model of unknown defaults is reckoned with (30)."""
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _OpenAIStyleImages)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    engine = HttpEngine("remote-sd", RemoteSpec(
        url=f"http://127.0.0.1:{upstream.server_address[1]}/v1"))
    await engine.start()
    router = Router()
    router.add(Replica(id="remote:remote-sd", model="remote-sd", engine=engine))
    settings = load_settings(data_dir=tmp_path, bundled_models=False)
    db = Database(settings.storage.resolved_database_url())
    await db.migrate()
    metering = await Metering.start(settings.usage, db, data_dir=settings.storage.data_dir,
                                      requests=settings.requests)
    metering.prices.replace({"remote-sd": Price(image=Decimal("0.5"), step=Decimal("0.25"))},
                            {}, {"remote:remote-sd": "remote-sd"})
    limiter = LocalLimiter()
    inference = Inference(router, metering, limiter=limiter)
    key = Principal(key_id="8", scope="user", max_budget=20.0)
    try:
        four = ImageGenerationRequest.model_validate(
            {"model": "remote-sd", "prompt": "a cube", "n": 2, "steps": 4})
        assert len((await inference.images(four, key)).data) == 2
        assert limiter.money_spent(key.limit_key) == 3 * NANOS  # 2 x (0.5 + 4 x 0.25)
        default = ImageGenerationRequest.model_validate({"model": "remote-sd", "prompt": "a"})
        assert len((await inference.images(default, key)).data) == 1
        assert limiter.money_spent(key.limit_key) == 11 * NANOS  # + 0.5 + 30 x 0.25
        # 9 left: 40 steps (0.5 + 40 x 0.25 = 10.5) are refused before they run
        forty = ImageGenerationRequest.model_validate(
            {"model": "remote-sd", "prompt": "a cube", "steps": 40})
        with pytest.raises(RateLimited) as refused:
            await inference.images(forty, key)
        assert refused.value.code == "insufficient_quota"
        assert limiter.money_spent(key.limit_key) == 11 * NANOS
    finally:
        await inference.close()
        await metering.close()
        await db.close()
        await engine.close()
        upstream.shutdown()
        upstream.server_close()
