"""Keeps the router in step with the stored models and replicas, and probes replica health.

The database is the source of truth for remote replicas (the config file's are written into it
at start-up, the admin API writes there too). ``ReplicaCatalog.sync`` reconciles the router with
it: new replicas get an engine (one pooled HTTP session each), changed ones are rebuilt, removed
ones are retired once their requests finish. ``run`` repeats a sync and a health probe of every
replica each ``interval`` seconds, so every gateway sees another's changes within one interval
and a cooled-down replica comes back as soon as it answers its health check.

``poll_loads`` reads, every ``load_interval`` seconds, the load each HTTP replica's engine
publishes on ``/metrics`` (``inferd.routing.load``; the format is ``options.metrics``, or
detected); the router prefers it to its own in-flight counts. Every gateway polls the same
engines, so all see the same load without sharing anything. A replica whose metrics cannot be
read, or hold no known gauge, is asked again only after ``LOAD_RETRY`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import urlsplit

from inferd.engines.base import Engine
from inferd.engines.remote import RemoteEngine, RemoteSpec
from inferd.errors import Conflict, InvalidRequest
from inferd.jsontypes import JsonValue
from inferd.outbound import HostAllowList
from inferd.prices import Price, PriceBook, parse_price
from inferd.redact import redact_url
from inferd.routing.load import FORMATS, Load, parse
from inferd.routing.replica import LOAD_TTL, Replica
from inferd.routing.router import Router
from inferd.routing.standby import STANDBY
from inferd.settings import ModelSpec, ReplicaSpec, RouterSettings
from inferd.store.replicas import ModelRecord, ReplicaRecord, ReplicaStore

log = logging.getLogger("inferd.routing")

RETIRE_GRACE = 60.0  # seconds a replaced engine may finish its requests before it is closed
LOAD_RETRY = 60.0  # seconds before a replica whose load could not be read is asked again


def build_remote_engine(name: str, spec: ReplicaSpec,
                        allow: HostAllowList | None = None) -> RemoteEngine:
    """The engine of a remote replica kind (not started); with ``allow``, every connection
    it makes is checked against that list when it is made."""
    remote = RemoteSpec(url=spec.url, upstream_model=spec.upstream_model, api_key=spec.api_key,
                        timeout=spec.timeout, options=dict(spec.options), allow=allow)
    if spec.kind == "queued_generate":
        from inferd.engines.queued_generate import QueuedGenerateEngine

        return QueuedGenerateEngine(name, remote)
    if spec.kind == "triton":
        from inferd.engines.triton import TritonEngine

        return TritonEngine(name, remote)
    from inferd.engines.http import HttpEngine

    return HttpEngine(name, remote)


async def probe(engine: Engine) -> str | None:
    """None when ``engine`` is healthy, else why not."""
    if not isinstance(engine, RemoteEngine):
        return None if engine.ready() else "not ready"
    try:
        await engine.probe()
    except Exception as exc:  # any failure of a probe only means "unhealthy"
        return str(exc) or type(exc).__name__
    return None


def metrics_format(engine: Engine) -> str | None:
    """The metrics format of ``engine``'s replica: ``options.metrics``, "" to detect it, None
    for one whose load is not read (``none``, or not an HTTP server)."""
    root = getattr(engine, "root", None)
    if not isinstance(engine, RemoteEngine) or not isinstance(root, str):
        return None
    fmt = str(engine.spec.options.get("metrics") or "")
    if fmt == "none":
        return None
    return fmt if fmt in FORMATS else ""


async def read_load(engine: Engine, within: float) -> Load | None:
    """The load ``engine``'s server reports on ``/metrics`` (None: no known gauge there);
    raises on a server that does not answer it."""
    fmt = metrics_format(engine)
    if fmt is None:
        return None
    assert isinstance(engine, RemoteEngine)
    import aiohttp  # there is a remote replica: RemoteEngine.start imported it

    url = str(getattr(engine, "root", "")) + "/metrics"
    async with engine.session.get(url, allow_redirects=False,
                                  timeout=aiohttp.ClientTimeout(total=within)) as response:
        if response.status != 200:
            raise ValueError(f"/metrics answered {response.status}")
        text = await response.text()
    return parse(text, fmt or None, engine.upstream_model)


class ReplicaCatalog:
    """Builds the router's remote replicas from the store and watches their health."""

    def __init__(self, router: Router, store: ReplicaStore, allow: HostAllowList, *,
                 interval: float, cooldown_base: float, cooldown_max: float,
                 announce: Callable[[str], Awaitable[None]] | None = None,
                 queue_engine: Callable[[str, ReplicaSpec], Engine] | None = None,
                 prices: PriceBook | None = None, load_interval: float = 0.0,
                 load_ttl: float = LOAD_TTL, remote: bool = True) -> None:
        """``announce`` tells the other processes of a change (Redis pub/sub, when
        configured); ``queue_engine`` builds the engine of a ``queue`` replica (a process
        with a broker has one); ``prices`` is filled with the stored prices on each sync;
        ``remote`` False: the stored replicas are not routed to (an ``inferd engine``
        answers with its own engines only: routing a gateway's request on to other engines,
        itself among them, would send it round between them)."""
        self.remote = remote
        self.router = router
        self.store = store
        self.allow = allow
        self.interval = interval
        self.cooldown_base = cooldown_base
        self.cooldown_max = cooldown_max
        self._built: dict[str, float] = {}  # replica id -> updated_at it was built from
        self._stored_models: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self.announce = announce
        self.queue_engine = queue_engine
        self.prices = prices
        self.load_interval = load_interval
        self.load_ttl = load_ttl
        self._load_task: asyncio.Task[None] | None = None
        self._load_retry: dict[str, float] = {}  # replica id -> when to try its metrics again

    async def sync(self) -> None:
        """Make the router's remote replicas match the database."""
        async with self._lock:
            models, records = await self.store.catalogue()
            active = {m.name for m in models if m.active}
            for model in models:
                self.router.set_model(model.name, model.aliases, model.fallbacks,
                                      model.routing)
            wanted = {str(r.id): r for r in records
                      if self.remote and r.enabled and r.model in active}
            for replica_id, updated in list(self._built.items()):
                record = wanted.get(replica_id)
                if record is None or record.updated_at != updated:
                    self._retire(replica_id)
            for replica_id, record in wanted.items():
                if replica_id not in self._built:
                    await self._add(record)
            if self.prices is not None:
                self._set_prices(models, records)
            names = {m.name for m in models}
            for gone in self._stored_models - names:
                entry = next((e for e in self.router.entries() if e.name == gone), None)
                if entry is not None and not entry.replicas:
                    self.router.remove_model(gone)
            self._stored_models = names

    def _set_prices(self, models: list[ModelRecord], records: list[ReplicaRecord]) -> None:
        """The price book from the stored prices (a price that no longer validates, say
        after a change of bounds, is left out and logged)."""
        assert self.prices is not None
        by_model: dict[str, Price] = {}
        for model in models:
            try:
                price = parse_price(model.price)
            except ValueError as exc:
                log.warning("price of model %s not used: %s", model.name, exc)
                continue
            if price is not None:
                by_model.update({name: price for name in (*model.aliases, model.name)})
        overrides: dict[str, Price] = {}
        for record in records:
            try:
                price = parse_price(record.options.get("price"), "options.price")
            except ValueError as exc:
                log.warning("price of replica %s not used: %s", record.id, exc)
                continue
            if price is not None:
                overrides[str(record.id)] = price
        self.prices.replace(by_model, overrides, {str(r.id): r.model for r in records})

    async def check(self, url: str, options: Mapping[str, JsonValue] | None = None,
                    kind: str = "http") -> None:
        """Raise ``InvalidRequest`` unless the replica URL, and every other URL its options
        name (``health_url``; ``redis_url`` of a ``queued_generate`` replica), are inside the
        allow-list."""
        if kind == "queued_generate":
            await self._check_hosts(url, options or {})
            return
        await self.allow.check(url)
        health_url = (options or {}).get("health_url")
        if health_url:
            try:
                await self.allow.check(str(health_url))
            except InvalidRequest as exc:
                raise InvalidRequest(f"options.health_url: {exc.message}",
                                     param="options.health_url", code=exc.code) from exc

    async def _check_hosts(self, url: str, options: Mapping[str, JsonValue]) -> None:
        """The broker's and Redis's hosts of a ``queued_generate`` replica, checked as the
        allow-list checks an HTTP replica's (credentials go in ``api_key``, never a URL)."""
        for param, value, schemes in (("url", url, ("amqp", "amqps")),
                                      ("options.redis_url",
                                       str(options.get("redis_url") or "redis://localhost:6379"),
                                       ("redis", "rediss"))):
            try:
                parts = urlsplit(value)
                valid = parts.scheme in schemes and bool(parts.hostname)
            except ValueError:
                valid = False
            if not valid:
                raise InvalidRequest(f"{param} must be a {schemes[0]}:// URL with a host.",
                                     param=param)
            try:
                await self.allow.check(f"http://{parts.netloc}/")
            except InvalidRequest as exc:
                raise InvalidRequest(f"{param}: {exc.message}", param=param,
                                     code=exc.code) from exc

    async def changed(self) -> None:
        """After a change made here: sync, and tell the other processes (``announce``)."""
        await self.sync()
        if self.announce is not None:
            await self.announce("")

    async def _add(self, record: ReplicaRecord) -> None:
        engine: Engine
        if record.kind == "queue":  # workers over the broker: only where one is configured
            if self.queue_engine is None:
                return
            engine = self.queue_engine(record.model, record.spec())
        else:
            try:
                await self.check(record.url, record.options, record.kind)
            except InvalidRequest as exc:
                log.warning("replica %s of %s not used: %s", record.id, record.model,
                            exc.message)
                return
            engine = build_remote_engine(record.model, record.spec(), self.allow)
        await engine.start()
        capacity = record.options.get("capacity")
        reserve = record.options.get("reserve")
        self.router.add(Replica(id=str(record.id), model=record.model, engine=engine,
                                weight=record.weight, kind=record.kind,
                                standby=record.source == STANDBY,
                                cooldown_base=self.cooldown_base,
                                cooldown_max=self.cooldown_max, load_ttl=self.load_ttl,
                                capacity=capacity if isinstance(capacity, int) else None,
                                learn_capacity=capacity == "auto",
                                reserve=reserve if isinstance(reserve, int) else 0))
        self._built[str(record.id)] = record.updated_at
        log.info("replica %s of %s: %s %s", record.id, record.model, record.kind,
                 redact_url(record.url))

    def _retire(self, replica_id: str) -> None:
        self._built.pop(replica_id, None)
        replica = self.router.remove_replica(replica_id)
        if replica is not None:
            task = asyncio.create_task(_close_when_idle(replica))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def probe_all(self) -> None:
        """Probe every replica at once and record the outcomes."""
        replicas = self.router.replicas()
        results = await asyncio.gather(*(probe(r.engine) for r in replicas))
        for replica, error in zip(replicas, results, strict=True):
            replica.record_probe(error is None, error)
        self.router.wake()  # a replica back may have room for what waits

    async def poll_loads(self) -> None:
        """Read the load of every replica that publishes one (see the module docstring)."""
        now = time.time()
        replicas = [r for r in self.router.replicas()
                    if metrics_format(r.engine) is not None
                    and self._load_retry.get(r.id, 0.0) <= now]
        timeout = max(1.0, min(5.0, 2 * self.load_interval))
        results = await asyncio.gather(*(read_load(r.engine, timeout) for r in replicas),
                                       return_exceptions=True)
        now = time.time()
        for replica, result in zip(replicas, results, strict=True):
            if isinstance(result, Load):
                replica.record_load(result.running, result.waiting, result.kv_cache_usage, now)
                self._load_retry.pop(replica.id, None)
                continue
            if isinstance(result, asyncio.CancelledError):
                raise result
            if replica.id not in self._load_retry:
                log.info("replica %s of %s: load not read (%s); in-flight counts used",
                         replica.id, replica.model, result or "no known gauge")
            self._load_retry[replica.id] = now + LOAD_RETRY
        live = {r.id for r in self.router.replicas()}
        for gone in [k for k in self._load_retry if k not in live]:
            del self._load_retry[gone]
        self.router.wake()  # the loads read may leave room for what waits

    async def run_loads(self) -> None:
        while True:
            try:
                await self.poll_loads()
            except Exception:  # the loop must outlive anything a replica answers
                log.exception("replica load poll failed")
            await asyncio.sleep(self.load_interval)

    async def run(self) -> None:
        while True:
            try:
                await self.sync()
                await self.probe_all()
            except Exception:  # the loop must outlive a database or network hiccup
                log.exception("replica sync or health check failed")
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run())
        if self.load_interval > 0:
            self._load_task = asyncio.create_task(self.run_loads())

    async def close(self) -> None:
        for task in (self._task, self._load_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        retiring = list(self._retiring)
        for task in retiring:
            task.cancel()
        await asyncio.gather(*retiring, return_exceptions=True)
        for replica_id in list(self._built):
            replica = self.router.remove_replica(replica_id)
            if replica is not None:
                await replica.engine.close()
        self._built.clear()


async def _close_when_idle(replica: Replica) -> None:
    deadline = time.monotonic() + RETIRE_GRACE
    try:
        while replica.in_flight and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    finally:
        await replica.engine.close()


async def start_catalog(router: Router, store: ReplicaStore, settings: RouterSettings, *,
                        models: list[ModelSpec],
                        announce: Callable[[str], Awaitable[None]] | None = None,
                        queue_engine: Callable[[str, ReplicaSpec], Engine] | None = None,
                        prices: PriceBook | None = None,
                        remote: bool = True) -> ReplicaCatalog:
    """Record the local ``models`` and the configured remote ones in the store, load every
    stored replica into the router and start the periodic sync and health checks
    (``announce``, ``queue_engine``: see ``ReplicaCatalog``)."""
    for spec in models:
        record = await store.find_model(spec.name)
        price = None if spec.price is None else spec.price.view()
        if record is None:
            with contextlib.suppress(Conflict):
                await store.create_model(spec.name, spec.aliases, [], source="local",
                                         routing=spec.routing, price=price)
        elif record.source == "local" and (record.aliases != spec.aliases
                                           or record.routing != spec.routing
                                           or (price is not None and record.price != price)):
            await store.update_model(record.id, aliases=spec.aliases,
                                     routing=spec.routing or "default", price=price)
    await store.apply_config(settings.remote_models)
    catalog = ReplicaCatalog(router, store, HostAllowList(settings.replica_allowed_hosts),
                             interval=settings.health_check_interval,
                             cooldown_base=settings.replica_cooldown_base,
                             cooldown_max=settings.replica_cooldown_max,
                             announce=announce, queue_engine=queue_engine, prices=prices,
                             load_interval=settings.load_poll_interval,
                             load_ttl=settings.load_stale_after, remote=remote)
    await catalog.sync()
    catalog.start()
    return catalog
