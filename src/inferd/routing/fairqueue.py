"""Fair queueing between keys at the gateway, when a model's replicas are at capacity.

A replica may say how many requests it runs at once (its capacity: ``options.capacity``, the
settings' ``replica_capacity``, or ``"auto"``: learned from the load its engine reports). While
every replica of a model runs that many, a request for the model waits here, in the model's
queue, instead of piling onto an engine that serves its own queue first come, first served.
When a replica has room again (a request ends, a load read shows room, a replica comes back),
the waiting requests are admitted in this order:

- by priority class: every waiting ``interactive`` request (a client waiting for the answer,
  plain or streamed) before any ``batch`` one (a job, a batch line);
- within a class, by start-time fair queueing across keys: each key's requests keep their
  order; the first one waiting of each key carries a virtual start tag, the later of the
  class's virtual time and the key's previous finish tag (its previous start plus
  ``1 / weight``), and the smallest tag goes first (ties: the earlier arrival). The virtual
  time is the tag of the request admitted last. A key that starts waiting afresh is tagged
  with the virtual time plus its requests already running on the model (each ``1 / weight``:
  those admitted while nothing waited count too). So a key with 30 requests waiting holds
  tags up to ``30 / weight`` ahead, and a key that sends one request now, with none running,
  is tagged with the current virtual time: it goes next. Over a busy period each key gets
  turns in proportion to its weight.
- hierarchically: the turns are shared so between groups first, then between the keys of
  the group whose turn it is. A group is a team (its keys together, with the team's
  ``queue_weight``, 1 by default) or a key of no team (alone, with its own weight). A key's
  weight is its ``queue_weight``, else the settings' ``queue_weights`` by key id or key name,
  else 1. So two teams of equal weight get half the turns each however many keys each has
  waiting, and within a team its keys share the team's turns by their weights.

A replica may keep a **reserve** (``options.reserve``, 0 by default): slots beyond its
capacity for a request whose group (its team, or the key alone) has nothing running on the
model. Such a request is let through while the requests in flight are below capacity plus
reserve; any other only below capacity. So a tenant that just arrived starts at once, even
while another keeps every slot of the capacity busy, and the busy tenant keeps its capacity.
When the reserve has room for fewer than wait for it, the interactive requests of groups with
nothing running take it in the class's fair order (their start tags); ``batch`` requests never
use it. A request counts as running from the moment it is admitted.

The queue of a model holds at most ``max_depth`` requests: past it a request is refused at
once (``Overloaded``, code ``queue_full``); a request that waited its class's timeout leaves
with ``queue_timeout``; both with ``Retry-After``. A request whose caller goes away (its task
is cancelled) leaves the queue. Nothing waits when queueing is off, when a replica of the
model has no capacity (no bound), or when no replica is available (the router answers that).

All of it runs on the event loop: state changes are plain writes, no locks. Admission is
counted in this process: ``admit`` returns to a caller that starts its request on a replica
before it next awaits (``Router``), so a replica's load already counts it when the next
request asks; requests admitted but not yet resumed are held in ``granted``. ``admit`` returns
an ``Admission`` that the caller closes when the request ends (a stream: when it ends).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from inferd.errors import Overloaded
from inferd.metrics import Metrics
from inferd.settings import QueueSettings

__all__ = ["PRIORITIES", "Admission", "FairQueue", "Priority", "Queueing"]

Priority = Literal["interactive", "batch"]
PRIORITIES: tuple[Priority, ...] = ("interactive", "batch")
# Weight of the newest wait in the moving average that ``Retry-After`` is taken from.
WAIT_ALPHA = 0.2


@dataclass(frozen=True)
class Queueing:
    """How the gateway queues requests for a model at capacity (the settings' ``fair_queue``,
    ``queue_max``, ``queue_timeout``, ``queue_batch_timeout``, ``queue_weights``)."""

    enabled: bool = True
    max_depth: int = 1000
    timeout: float = 30.0
    batch_timeout: float = 300.0
    weights: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, settings: QueueSettings) -> Queueing:
        return cls(enabled=settings.fair_queue, max_depth=settings.queue_max,
                   timeout=settings.queue_timeout, batch_timeout=settings.queue_batch_timeout,
                   weights=dict(settings.queue_weights))


class _Waiter:
    """One request waiting: its key (flow) and the key's group (its team, or the key alone),
    arrival order and time, and what it waits on."""

    __slots__ = ("enqueued", "flow", "future", "group", "seq")

    def __init__(self, flow: str, seq: int, enqueued: float,
                 future: asyncio.Future[None], group: str = "") -> None:
        self.flow = flow
        self.group = group or flow
        self.seq = seq
        self.enqueued = enqueued
        self.future = future


class _Flow:
    """One key's requests waiting in one class, and the finish tag of its last one admitted."""

    __slots__ = ("finish", "waiters", "weight")

    def __init__(self, weight: float, finish: float) -> None:
        self.weight = weight
        self.finish = finish
        self.waiters: deque[_Waiter] = deque()


class _Group:
    """The keys of one group (a team, or a key of none) waiting in one class: start-time fair
    queueing between them by their weights, the first waiter of each key in a heap by start
    tag (entries of a waiter no longer first are skipped when popped). As one flow of the
    lane, the group has a weight and a finish tag of its own, and ``entry``: its tag in the
    lane's heap while it has waiters."""

    __slots__ = ("depth", "entry", "finish", "flows", "heads", "vtime", "weight")

    def __init__(self, weight: float, finish: float) -> None:
        self.weight = weight
        self.finish = finish
        self.entry: tuple[float, int] | None = None
        self.vtime = 0.0
        self.flows: dict[str, _Flow] = {}
        self.heads: list[tuple[float, int, str]] = []
        self.depth = 0

    def push(self, waiter: _Waiter, weight: float, running: int) -> None:
        """Queue ``waiter`` of a key of ``weight`` that has ``running`` requests running."""
        flow = self.flows.get(waiter.flow)
        if flow is None:
            flow = self.flows[waiter.flow] = _Flow(weight, self.vtime)
        flow.weight = weight
        if not flow.waiters and flow.finish <= self.vtime:
            # waiting afresh: its requests running (admitted while nothing waited) count
            flow.finish = self.vtime + running / weight
        flow.waiters.append(waiter)
        self.depth += 1
        if len(flow.waiters) == 1:
            self._tag(waiter.flow, flow)

    def _tag(self, key: str, flow: _Flow) -> None:
        head = flow.waiters[0]
        heapq.heappush(self.heads, (max(self.vtime, flow.finish), head.seq, key))

    def pop(self) -> _Waiter:
        """The waiter with the smallest start tag, taken out; the group's virtual time moves
        to its tag and its key's finish tag past it by ``1 / weight``."""
        while True:
            start, seq, key = heapq.heappop(self.heads)
            flow = self.flows.get(key)
            if flow is None or not flow.waiters or flow.waiters[0].seq != seq:
                continue  # that waiter left, or was admitted
            waiter = flow.waiters.popleft()
            self.depth -= 1
            self.vtime = start
            flow.finish = start + 1.0 / flow.weight
            if flow.waiters:
                self._tag(key, flow)
            self._forget()
            return waiter

    def remove(self, waiter: _Waiter) -> bool:
        """Take out a waiter that leaves (timed out, or its caller gone); False: not here."""
        flow = self.flows.get(waiter.flow)
        if flow is None:
            return False
        try:
            first = flow.waiters[0] is waiter
            flow.waiters.remove(waiter)
        except (IndexError, ValueError):
            return False
        self.depth -= 1
        if first and flow.waiters:
            self._tag(waiter.flow, flow)
        self._forget()
        return True

    def _forget(self) -> None:
        """Drop idle keys whose finish tag the virtual time has passed (a new request of
        theirs is tagged the same without them), so that the flows stay bounded."""
        if len(self.flows) <= 2 * self.depth + 64:
            return
        for key in [k for k, f in self.flows.items()
                    if not f.waiters and f.finish <= self.vtime]:
            del self.flows[key]
        if not self.depth:
            self.heads.clear()


class _Lane:
    """One priority class of one model's queue: start-time fair queueing between groups
    (teams, and keys of none) by their weights, each group's next waiter chosen between its
    keys by theirs (``_Group``)."""

    __slots__ = ("depth", "groups", "heads", "vtime")

    def __init__(self) -> None:
        self.vtime = 0.0
        self.groups: dict[str, _Group] = {}
        self.heads: list[tuple[float, int, str]] = []  # (start tag, order, group)
        self.depth = 0

    def push(self, waiter: _Waiter, weight: float, running: int, group_weight: float,
             group_running: int) -> None:
        """Queue ``waiter`` of a key of ``weight`` with ``running`` requests running, in a
        group of ``group_weight`` with ``group_running``."""
        group = self.groups.get(waiter.group)
        if group is None:
            group = self.groups[waiter.group] = _Group(group_weight, self.vtime)
        group.weight = group_weight
        if not group.depth and group.finish <= self.vtime:
            # waiting afresh: the group's requests running count
            group.finish = self.vtime + group_running / group_weight
        group.push(waiter, weight, running)
        self.depth += 1
        if group.entry is None:
            self._tag(waiter.group, group, waiter.seq)

    def _tag(self, key: str, group: _Group, seq: int) -> None:
        group.entry = (max(self.vtime, group.finish), seq)
        heapq.heappush(self.heads, (*group.entry, key))

    def pop(self) -> _Waiter:
        """The next waiter of the group with the smallest start tag, taken out; the class's
        virtual time moves to that tag and the group's finish tag past it by
        ``1 / its weight``."""
        while True:
            start, seq, key = heapq.heappop(self.heads)
            group = self.groups.get(key)
            if group is None or group.entry != (start, seq):
                continue  # the group's waiters left, or it was tagged anew
            return self._take(key, group, start)

    def pop_idle(self, running: Mapping[str, int]) -> _Waiter | None:
        """Like ``pop``, among the groups with nothing ``running`` (by group) only: the
        reserve's next request (None: no such group waits). Its entry left in the heap is
        skipped when popped (the group is tagged anew, or has no entry)."""
        best: tuple[tuple[float, int], str] | None = None
        for key, group in self.groups.items():
            if group.entry is not None and not running.get(key) and (
                    best is None or group.entry < best[0]):
                best = (group.entry, key)
        if best is None:
            return None
        (start, _), key = best
        return self._take(key, self.groups[key], start)

    def _take(self, key: str, group: _Group, start: float) -> _Waiter:
        """The next waiter of ``group``, whose start tag is ``start``, taken out."""
        waiter = group.pop()
        self.depth -= 1
        # a tag ahead of the order (the reserve's) never moves the virtual time back
        self.vtime = max(self.vtime, start)
        group.finish = start + 1.0 / group.weight
        group.entry = None
        if group.depth:
            self._tag(key, group, waiter.seq)
        self._forget()
        return waiter

    def remove(self, waiter: _Waiter) -> bool:
        """Take out a waiter that leaves (timed out, or its caller gone); False: not here."""
        group = self.groups.get(waiter.group)
        if group is None or not group.remove(waiter):
            return False
        self.depth -= 1
        if not group.depth:
            group.entry = None
        self._forget()
        return True

    def _forget(self) -> None:
        """Drop idle groups whose finish tag the virtual time has passed."""
        if len(self.groups) <= 2 * self.depth + 64:
            return
        for key in [k for k, g in self.groups.items()
                    if not g.depth and g.finish <= self.vtime]:
            del self.groups[key]
        if not self.depth:
            self.heads.clear()


class _ModelQueue:
    """The queue of one model: a lane per priority class."""

    __slots__ = ("batch", "granted", "group_running", "interactive", "lanes", "running",
                 "wait")

    def __init__(self) -> None:
        self.interactive, self.batch = _Lane(), _Lane()
        self.lanes: dict[Priority, _Lane] = {"interactive": self.interactive,
                                             "batch": self.batch}
        self.granted = 0  # admitted, not yet started on a replica
        self.running: dict[str, int] = {}  # admitted (started or not) and not ended, by key
        self.group_running: dict[str, int] = {}  # the same, by group
        self.wait = 0.0  # moving average of the waits, seconds

    @property
    def depth(self) -> int:
        return self.interactive.depth + self.batch.depth

    def pop(self) -> tuple[_Waiter, Priority]:
        for priority in PRIORITIES:
            lane = self.lanes[priority]
            if lane.depth:
                return lane.pop(), priority
        raise IndexError("empty queue")


class Admission:
    """A request let through (``FairQueue.admit``): ``close()`` it when the request ends.
    A stream takes it over (``handed``): it closes it when it ends instead."""

    __slots__ = ("_queue", "flow", "group", "handed", "model")

    def __init__(self, queue: FairQueue | None, model: str, flow: str, group: str = "") -> None:
        self._queue = queue
        self.model = model
        self.flow = flow
        self.group = group or flow
        self.handed = False

    def close(self) -> None:
        """The request ended (once; again is a no-op)."""
        queue, self._queue = self._queue, None
        if queue is not None:
            queue.release(self.model, self.flow, self.group)


class FairQueue:
    """The gateway's queues, one per model; ``room(model)`` says how many more requests the
    model's replicas take now (None: no bound), ``spare(model)`` how many more within their
    capacity and reserve (for groups with nothing running; None: no reserve anywhere). A
    model's queue is made the first time a request is counted against its capacity and kept
    (model names are the router's, a bounded set) until ``forget``."""

    def __init__(self, config: Queueing, room: Callable[[str], float | None],
                 metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 spare: Callable[[str], float | None] | None = None) -> None:
        self.config = config
        self._room = room
        self._spare = spare
        self._metrics = metrics
        self._clock = clock
        self._queues: dict[str, _ModelQueue] = {}
        self._known: set[str] = set()  # the models served (``track``): their series exported
        self._seq = itertools.count()
        if metrics is not None:
            metrics.register_family(
                "inferd_gateway_queue_depth",
                "Requests waiting at the gateway for a replica of the model to have room",
                ["model", "priority"], self.depths)

    # -- what the metrics and the admin read ---------------------------------------------
    def depth(self, model: str, priority: Priority | None = None) -> int:
        queue = self._queues.get(model)
        if queue is None:
            return 0
        return queue.depth if priority is None else queue.lanes[priority].depth

    def depths(self) -> Iterable[tuple[Sequence[str], float]]:
        """Each model's depth per priority class (``inferd_gateway_queue_depth``): every model
        served, 0 while nothing waits for it."""
        return [((model, p), float(self.depth(model, p)))
                for model in sorted(self._known.union(self._queues)) for p in PRIORITIES]

    def track(self, model: str) -> None:
        """A model the router serves: its depth and wait series are exported from now on
        (zero until a request waits), so dashboards and alerts find them before the first
        wait, and an autoscaler reads 0 rather than nothing."""
        if model in self._known:
            return
        self._known.add(model)
        if self._metrics is not None:
            for priority in PRIORITIES:
                self._metrics.child("queue_wait", model, priority)
            self._metrics.child("queue_reserve", model)

    def weight(self, flow: str, name: str = "", own: float | None = None) -> float:
        """A key's weight: its own (the key's ``queue_weight``), else ``weights`` by its id,
        else by its name, else 1."""
        if own is not None:
            return own
        weights = self.config.weights
        if flow and flow in weights:
            return weights[flow]
        if name and name in weights:
            return weights[name]
        return 1.0

    # -- admission -------------------------------------------------------------------------
    async def admit(self, model: str, flow: str = "", name: str = "",
                    priority: Priority = "interactive", weight: float | None = None,
                    group: str = "", group_weight: float | None = None) -> Admission:
        """Return when a replica of ``model`` has room for this request and its turn has come
        (at once when queueing does not apply); raises ``Overloaded`` when the queue is full
        or the wait runs past the class's timeout. The caller must start its request on a
        replica before it next awaits, and close the admission when the request ends.

        ``flow``, ``name``: the key's id and name; ``weight``: its own weight (None: by
        ``weight``); ``group``: its team (``""``: none, the key is a group of its own, with
        the key's weight); ``group_weight``: the team's weight (None: 1)."""
        if not self.config.enabled:
            return Admission(None, model, flow)
        room = self._room(model)
        if room is None:
            return Admission(None, model, flow)
        queue = self._queues.get(model)
        if queue is None:
            queue = self._queues[model] = _ModelQueue()
        own = self.weight(flow, name, weight)
        if group:
            group, shared = f"team:{group}", 1.0 if group_weight is None else group_weight
        else:
            group, shared = f"key:{flow}", own
        if not queue.depth and (math.floor(room) - queue.granted >= 1 or (
                self._reserved(model, queue, priority, group))):
            self._observe(model, priority, 0.0, None)
            self._running(queue, flow, group)
            return Admission(self, model, flow, group)
        if queue.depth >= self.config.max_depth:
            self._refuse(model, priority, "queue_full")
            raise Overloaded(
                f"Model '{model}' is at capacity and {queue.depth} requests are waiting for "
                "it already (the most the queue holds); please retry later.",
                retry_after=self._retry_after(queue), code="queue_full")
        loop = asyncio.get_running_loop()
        waiter = _Waiter(flow, next(self._seq), self._clock(), loop.create_future(), group)
        queue.lanes[priority].push(waiter, own, queue.running.get(flow, 0), shared,
                                   queue.group_running.get(group, 0))
        timeout = self.config.timeout if priority == "interactive" else self.config.batch_timeout
        timer = loop.call_later(timeout, self._expire, model, queue, priority, waiter)
        self._dispatch(model, queue)
        try:
            await waiter.future
        except asyncio.CancelledError:
            # the caller went away: out of the queue, or its admission handed back
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                queue.granted -= 1
                self.release(model, flow, group)
            else:
                queue.lanes[priority].remove(waiter)
            raise
        finally:
            timer.cancel()
        queue.granted -= 1
        return Admission(self, model, flow, group)

    def _reserved(self, model: str, queue: _ModelQueue, priority: Priority,
                  group: str) -> bool:
        """Whether a request of ``group`` may go now into a replica's reserve: interactive,
        its group with nothing running on the model, and a reserve with room (counted in
        ``inferd_gateway_queue_reserve_total`` when it may)."""
        if priority != "interactive" or queue.group_running.get(group) or self._spare is None:
            return False
        spare = self._spare(model)
        if spare is None or math.floor(spare) - queue.granted < 1:
            return False
        if self._metrics is not None:
            self._metrics.child("queue_reserve", model).inc()
        return True

    @staticmethod
    def _running(queue: _ModelQueue, flow: str, group: str) -> None:
        queue.running[flow] = queue.running.get(flow, 0) + 1
        queue.group_running[group] = queue.group_running.get(group, 0) + 1

    def release(self, model: str, flow: str, group: str = "") -> None:
        """A request admitted for ``model`` ended (``Admission.close``): its room is free."""
        queue = self._queues.get(model)
        if queue is None:
            return
        for counts, key in ((queue.running, flow), (queue.group_running, group or flow)):
            left = counts.get(key, 0) - 1
            if left > 0:
                counts[key] = left
            else:
                counts.pop(key, None)
        if queue.depth:
            self._dispatch(model, queue)

    def forget(self, model: str) -> None:
        """The model is gone: drop its queue, unless requests still wait or run there."""
        self._known.discard(model)
        queue = self._queues.get(model)
        if queue is not None and not (queue.depth or queue.granted or queue.running
                                      or queue.group_running):
            del self._queues[model]

    def wake(self, model: str | None = None) -> None:
        """A replica may have room now (a request ended, a load was read, a replica came
        back): admit what fits of ``model``'s queue (of every model's: None)."""
        if model is not None:
            queue = self._queues.get(model)
            if queue is not None and queue.depth:
                self._dispatch(model, queue)
            return
        for name, queue in list(self._queues.items()):
            if queue.depth:
                self._dispatch(name, queue)

    def _dispatch(self, model: str, queue: _ModelQueue) -> None:
        if not queue.depth:
            return
        room = self._room(model)
        # no bound any more (a replica's capacity was lifted, or none is available): all go
        free = queue.depth if room is None else math.floor(room) - queue.granted
        now = self._clock()
        while free > 0 and queue.depth:
            waiter, priority = queue.pop()
            if self._grant(model, queue, waiter, priority, now):
                free -= 1
        # the reserve: interactive requests of groups with nothing running, in fair order
        if room is None or self._spare is None or not queue.interactive.depth:
            return
        spare = self._spare(model)
        free = 0 if spare is None else math.floor(spare) - queue.granted
        while free > 0:
            taken = queue.interactive.pop_idle(queue.group_running)
            if taken is None:
                return
            if self._grant(model, queue, taken, "interactive", now):
                free -= 1
                if self._metrics is not None:
                    self._metrics.child("queue_reserve", model).inc()

    def _grant(self, model: str, queue: _ModelQueue, waiter: _Waiter, priority: Priority,
               now: float) -> bool:
        """Let ``waiter`` through (False: its caller is leaving); it runs from now on."""
        if waiter.future.done():  # cancelled: its caller is leaving
            return False
        waiter.future.set_result(None)
        queue.granted += 1
        self._running(queue, waiter.flow, waiter.group)
        self._observe(model, priority, now - waiter.enqueued, queue)
        return True

    def _expire(self, model: str, queue: _ModelQueue, priority: Priority,
                waiter: _Waiter) -> None:
        if waiter.future.done() or not queue.lanes[priority].remove(waiter):
            return
        waited = self._clock() - waiter.enqueued
        self._refuse(model, priority, "queue_timeout")
        waiter.future.set_exception(Overloaded(
            f"Model '{model}' stayed at capacity for the {waited:.0f} s this request could "
            "wait for it; please retry later.",
            retry_after=self._retry_after(queue), code="queue_timeout"))

    def _retry_after(self, queue: _ModelQueue) -> float:
        """Seconds to wait before retrying: what a request waited lately (at least 1)."""
        return max(1.0, min(queue.wait, self.config.timeout))

    def _observe(self, model: str, priority: Priority, waited: float,
                 queue: _ModelQueue | None) -> None:
        if queue is not None:
            queue.wait = waited if not queue.wait else (
                WAIT_ALPHA * waited + (1 - WAIT_ALPHA) * queue.wait)
        if self._metrics is not None:
            self._metrics.child("queue_wait", model, priority).observe(waited)

    def _refuse(self, model: str, priority: Priority, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.child("queue_refused", model, priority, reason).inc()
