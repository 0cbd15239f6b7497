"""A fallback never widens a key's model allow-list: when every replica of the model asked for
fails, the router falls back only to models the request's key may use.

The replicas are real engines (the echo engine, and the ``http`` engine aimed at a loopback
port where nothing listens); the requests go through ``Inference`` with a key's principal, as
HTTP routes and job workers send them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inferd.auth.principal import Principal
from inferd.engines.echo import EchoEngine
from inferd.engines.http import HttpEngine
from inferd.engines.remote import RemoteSpec, UpstreamUnavailable
from inferd.inference import Inference
from inferd.metering import Metering
from inferd.routing.replica import Replica
from inferd.routing.router import Router
from inferd.schemas.openai import ChatCompletionRequest
from inferd.schemas.rerank import RerankRequest
from inferd.settings import ModelSpec, load_settings
from inferd.store.db import Database
from tests.helpers import free_port


def user(*models: str) -> Principal:
    return Principal(key_id="7", scope="user", allowed_models=frozenset(models))


@pytest.fixture
async def inference(tmp_path: Path) -> AsyncIterator[Inference]:
    """``primary`` (its only replica refuses connections) falls back to ``secret`` (echo)."""
    settings = load_settings(data_dir=tmp_path, bundled_models=False)
    db = Database(settings.storage.resolved_database_url())
    await db.migrate()
    dead = HttpEngine("primary", RemoteSpec(url=f"http://127.0.0.1:{free_port()}",
                                            connect_timeout=2.0))
    await dead.start()
    router = Router()
    router.add(Replica(id="dead", model="primary", engine=dead, kind="http"))
    router.add(Replica(id="local:secret", model="secret",
                       engine=EchoEngine(ModelSpec(name="secret", kind="echo"))),
               aliases=["hidden"])
    router.set_model("primary", fallbacks=["hidden"])
    metering = await Metering.start(settings.usage, db, data_dir=settings.storage.data_dir,
                                      requests=settings.requests)
    inference = Inference(router, metering)
    try:
        yield inference
    finally:
        await inference.close()
        await metering.close()
        await dead.close()
        await db.close()


def chat(stream: bool = False) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "primary", "messages": [{"role": "user", "content": "hello world"}],
         "stream": stream})


def revive(inference: Inference) -> None:
    """Let the next request try the dead replica again (its cooldown is over)."""
    for replica in inference.router.replicas():
        replica.cooldown_until = 0


async def test_a_fallback_outside_the_allow_list_is_skipped(inference: Inference) -> None:
    with pytest.raises(UpstreamUnavailable):
        await inference.chat(chat(), user("primary"))
    revive(inference)
    with pytest.raises(UpstreamUnavailable):
        await inference.chat_stream(chat(stream=True), user("primary"))
    revive(inference)
    rerank = RerankRequest.model_validate({"model": "primary", "query": "a",
                                           "documents": ["a", "b"]})
    with pytest.raises(UpstreamUnavailable):
        await inference.rerank(rerank, user("primary"))


async def test_an_allowed_fallback_still_answers(inference: Inference) -> None:
    # allowed by its canonical name, by the alias the fallback names, or with no list at all
    for principal in (user("primary", "secret"), user("primary", "hidden"),
                      Principal(key_id="8", scope="user")):
        revive(inference)
        answer = await inference.chat(chat(), principal)
        assert answer.model == "secret"
        assert answer.choices[0].message.content == "hello world"
