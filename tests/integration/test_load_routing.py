"""Load-aware routing: the catalogue reads each replica's load from its engine's ``/metrics``
and the router sends requests to the least loaded one.

The engines are fakes (real aiohttp servers on loopback) that publish their load in vLLM's,
SGLang's, llama.cpp server's and inferd's exposition formats and answer chats with their name;
the store is real (SQLite, PostgreSQL, MariaDB).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from inferd.outbound import HostAllowList
from inferd.routing.catalog import ReplicaCatalog
from inferd.routing.router import Router
from inferd.schemas.openai import ChatCompletionRequest
from inferd.settings import ReplicaSpec
from inferd.store.db import Database
from inferd.store.replicas import ReplicaStore
from tests.helpers import serving

LOOPBACK = HostAllowList(["127.0.0.0/8"])


def vllm(running: int, waiting: int) -> str:
    return (
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        f'vllm:num_requests_running{{engine="0",model_name="up"}} {running}.0\n'
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
        "# TYPE vllm:num_requests_waiting gauge\n"
        f'vllm:num_requests_waiting{{engine="0",model_name="up"}} {waiting}.0\n'
        "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n"
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        'vllm:kv_cache_usage_perc{engine="0",model_name="up"} 0.5\n'
    )


def sglang(running: int, waiting: int) -> str:
    return (
        "# HELP sglang:num_running_reqs The number of running requests.\n"
        "# TYPE sglang:num_running_reqs gauge\n"
        f'sglang:num_running_reqs{{model_name="up"}} {running}.0\n'
        "# HELP sglang:num_queue_reqs The number of requests in the waiting queue.\n"
        "# TYPE sglang:num_queue_reqs gauge\n"
        f'sglang:num_queue_reqs{{model_name="up"}} {waiting}.0\n'
        "# HELP sglang:token_usage The token usage.\n"
        "# TYPE sglang:token_usage gauge\n"
        'sglang:token_usage{model_name="up"} 0.25\n'
    )


def llamacpp(running: int, waiting: int) -> str:
    return (
        "# HELP llamacpp:requests_processing Number of requests processing.\n"
        "# TYPE llamacpp:requests_processing gauge\n"
        f"llamacpp:requests_processing {running}\n"
        "# HELP llamacpp:requests_deferred Number of requests deferred.\n"
        "# TYPE llamacpp:requests_deferred gauge\n"
        f"llamacpp:requests_deferred {waiting}\n"
    )


def inferd(running: int, waiting: int) -> str:
    return (
        "# HELP inferd_replica_in_flight Requests in flight on a replica\n"
        "# TYPE inferd_replica_in_flight gauge\n"
        f'inferd_replica_in_flight{{model="up",replica="local"}} {running + waiting}.0\n'
    )


@dataclass
class Fake:
    """An engine that publishes a settable load and answers chats with its name."""

    name: str
    render: Callable[[int, int], str] | None  # None: no /metrics (404)
    running: int = 0
    waiting: int = 0
    chats: list[str] = field(default_factory=list)
    scrapes: int = 0

    def app(self) -> web.Application:
        async def metrics(_request: web.Request) -> web.Response:
            self.scrapes += 1
            if self.render is None:
                raise web.HTTPNotFound()
            return web.Response(
                text=self.render(self.running, self.waiting), content_type="text/plain"
            )

        async def health(_request: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        async def chat(request: web.Request) -> web.Response:
            self.chats.append((await request.json())["model"])
            return web.json_response(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": "up",
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": self.name},
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            )

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/health", health)
        app.router.add_post("/v1/chat/completions", chat)
        return app


@pytest.fixture
async def catalog(database: Database) -> AsyncIterator[ReplicaCatalog]:
    catalog = ReplicaCatalog(
        Router(),
        ReplicaStore(database),
        LOOPBACK,
        interval=3600,
        cooldown_base=1.0,
        cooldown_max=60.0,
        load_interval=3600,
        load_ttl=3600,
    )
    yield catalog
    await catalog.close()


async def answered_by(router: Router, model: str) -> str:
    request = ChatCompletionRequest.model_validate(
        {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    )
    answer = (await router.chat(request)).wire()
    return str(answer["choices"][0]["message"]["content"])


async def start(
    catalog: ReplicaCatalog,
    fakes: list[Fake],
    routing: str,
    stack: AsyncExitStack,
    options: dict[str, dict[str, str]] | None = None,
) -> dict[str, str]:
    """The fakes as replicas of model "m" (upstream "up"); returns replica id -> fake name."""
    store = catalog.store
    model = await store.create_model("m", [], [], routing=routing)
    ids = {}
    for fake in fakes:
        url = await stack.enter_async_context(serving(fake.app()))
        record = await store.create_replica(
            model.id,
            ReplicaSpec(
                url=url + "/v1", upstream_model="up", options=(options or {}).get(fake.name, {})
            ),
        )
        ids[str(record.id)] = fake.name
    await catalog.sync()
    return ids


async def test_least_busy_sends_requests_to_the_engine_that_reports_the_least_load(
    catalog: ReplicaCatalog,
) -> None:
    fakes = [
        Fake("vllm", vllm, 9, 4),
        Fake("sglang", sglang, 6, 0),
        Fake("llamacpp", llamacpp, 1, 1),
        Fake("inferd", inferd, 5, 0),
    ]
    async with AsyncExitStack() as stack:
        ids = await start(catalog, fakes, "least_busy", stack)
        await catalog.poll_loads()
        loads = {
            ids[r.id]: (r.running, r.waiting, r.kv_cache_usage) for r in catalog.router.replicas()
        }
        assert loads == {
            "vllm": (9, 4, 0.5),
            "sglang": (6, 0, 0.25),
            "llamacpp": (1, 1, None),
            "inferd": (5, 0, None),
        }
        # without a read every replica has 0 in flight here and they would take turns
        assert [await answered_by(catalog.router, "m") for _ in range(4)] == ["llamacpp"] * 4

        fakes[2].running, fakes[2].waiting = 20, 10  # llama.cpp now busy, SGLang idle
        fakes[1].running = 0
        await catalog.poll_loads()
        assert [await answered_by(catalog.router, "m") for _ in range(3)] == ["sglang"] * 3
        assert fakes[1].chats == ["up"] * 3

        state = catalog.router.replicas()[0].state()
        assert state["load_read_at"] is not None


async def test_the_prefix_bound_spills_from_an_engine_loaded_by_other_gateways(
    catalog: ReplicaCatalog,
) -> None:
    fakes = [Fake("a", vllm), Fake("b", vllm)]
    async with AsyncExitStack() as stack:
        await start(catalog, fakes, "prefix", stack)
        await catalog.poll_loads()
        first = await answered_by(catalog.router, "m")
        again = await answered_by(catalog.router, "m")
        assert first == again  # the same conversation sticks to its replica
        loaded = next(f for f in fakes if f.name == first)
        loaded.running, loaded.waiting = 30, 10  # other gateways' requests
        await catalog.poll_loads()
        assert await answered_by(catalog.router, "m") != first


def by_name_read(catalog: ReplicaCatalog, ids: dict[str, str]) -> dict[str, float | None]:
    return {ids[r.id]: r.running for r in catalog.router.replicas()}


async def test_a_replica_without_metrics_or_set_to_none_falls_back_to_in_flight_counts(
    catalog: ReplicaCatalog,
) -> None:
    fakes = [Fake("bare", None), Fake("quiet", vllm, 50, 50), Fake("sg", sglang, 2, 0)]
    async with AsyncExitStack() as stack:
        ids = await start(
            catalog,
            fakes,
            "least_busy",
            stack,
            options={"quiet": {"metrics": "none"}, "sg": {"metrics": "sglang"}},
        )
        await catalog.poll_loads()
        await catalog.poll_loads()
        assert by_name_read(catalog, ids) == {"bare": None, "quiet": None, "sg": 2}
        # 404: not read, and not asked again before LOAD_RETRY seconds
        assert fakes[0].scrapes == 1
        assert fakes[1].scrapes == 0  # options.metrics: none: never asked
        assert fakes[2].scrapes == 2
        # bare and quiet count 0 in flight here, sg reports 2: they take turns
        answers = {await answered_by(catalog.router, "m") for _ in range(4)}
        assert answers == {"bare", "quiet"}
