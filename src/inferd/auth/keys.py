"""API keys: generation, hashing, and ``KeyRing``, the in-memory cache that authenticates.

A key is ``sk-inferd-`` plus 32 random bytes (URL-safe base64). Only its SHA-256 hash is
stored (a fast hash is right for a high-entropy random secret: there is nothing to guess) and
a short prefix for display: the ``sk-inferd-`` mark, if any, and at most ``SHOWN_CHARS`` more
characters, so that a display prefix never reveals a key (an admin may choose a key of only
``MIN_KEY_CHARS`` characters).

``KeyRing`` authenticates. It keeps the principals of the keys in use in a bounded cache by
hash (least recently used out first), so authenticating a request costs a hash and a dict
lookup; a key not in the cache is read by its hash (a unique index) once, the concurrent
requests presenting it sharing that read. Unknown keys are remembered too (a bounded cache,
for ``MISS_TTL_SECONDS``), and at most ``MAX_LOOKUPS`` reads run at once, so a flood of random
keys costs neither memory nor more than that many queries at a time (and ``auth.throttle``
refuses an address after a few failures without looking at its keys). Nothing iterates every
key: a million keys cost the database's index, not this process's memory.

Every key change appends to a feed (``inferd.store.keys``); every ``refresh_seconds`` the ring
reads the changes after the last one it saw, reloads the changed keys it holds and forgets the
unknown ones, so a change made anywhere (another gateway, the CLI) takes effect within that
time. With Redis the changing process also announces the key's id and every process applies it
at once (``apply_announcement``). A load that raced with a change of its key is not kept
(``_fresh``), so a change never loses to an older read.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Literal

from inferd.auth.principal import DEFAULT_BUDGET_ALERT, LimitLevel, Principal, Scope
from inferd.errors import AuthenticationFailed
from inferd.store.keys import CHANGE_RETENTION_SECONDS, BudgetPeriod, KeyRow, KeyStore

log = logging.getLogger("inferd.auth")

KEY_PREFIX = "sk-inferd-"
SHOWN_CHARS = 4
# A key an admin chooses (``INFERD_ADMIN_KEY``) has at least this many characters.
MIN_KEY_CHARS = 24
# Keys whose principals a process keeps (a setting: ``key_cache_size``), and unknown keys it
# remembers, for how long.
CACHE_SIZE = 100_000
MISS_CACHE_SIZE = 10_000
MISS_TTL_SECONDS = 60.0
# Database reads of keys not in the cache at once (the others wait for a slot).
MAX_LOOKUPS = 4
# Changes remembered to tell a load that raced with one (see ``KeyRing._fresh``).
TOUCHED_SIZE = 4096
# A ring that could not read the change feed for this long starts its cache over (the feed
# keeps ``CHANGE_RETENTION_SECONDS``).
STALE_SECONDS = CHANGE_RETENTION_SECONDS / 2
# An id the feed skipped (its transaction had not committed yet, or was rolled back) is looked
# for again on each read for this long; at most this many at once, and only after a jump of at
# most ``MAX_GAP`` ids.
GAP_SECONDS = 30.0
MAX_GAPS = 10_000
MAX_GAP = 1_000
# Changes this process made itself, remembered to be skipped in the feed (at most).
OWN_SIZE = 100_000


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    """What lists show of a key: ``sk-inferd-AbCd`` (or ``AbCd`` for a key without the mark)."""
    mark = KEY_PREFIX if key.startswith(KEY_PREFIX) else ""
    return key[:len(mark) + SHOWN_CHARS]


def principal_from_row(row: KeyRow,
                       storage: tuple[int, int] = (0, 0)) -> Principal:
    """The principal of a key row (read with its team's and user's columns,
    ``inferd.store.keys.KEYS``); ``storage``: the default quota (bytes, objects) of keys
    without their own.

    The key may use the models of its own allow-list and its team's (both, when both set one);
    its user's and team's limits apply besides its own (``levels``); a key of a user may not
    act above the user's installation role (an admin key of a user who is no admin is a user
    key)."""
    models = row.get("models")
    team_models = row.get("team_models") if row.get("team_id") is not None else None
    if team_models is not None:
        models = team_models if models is None else [m for m in models if m in team_models]
    extra = {str(k): str(v) for k, v in (row.get("extra") or {}).items()}
    owner, team = row.get("owner"), row.get("team")
    if owner:
        extra["owner"] = str(owner)
    if team:
        extra["team"] = str(team)
    return Principal(
        key_id=str(row["id"]), scope=_scope(row),
        allowed_models=None if models is None else frozenset(models),
        webhook_secret=row.get("webhook_secret"), metadata=extra, name=row.get("name") or "",
        rpm=row.get("rpm"), tpm=row.get("tpm"), ipm=row.get("ipm"), upm=row.get("upm"),
        image_budget=row.get("image_budget"), token_budget=row.get("token_budget"),
        storage_bytes=_or(row.get("storage_bytes"), storage[0]),
        storage_objects=_or(row.get("storage_objects"), storage[1]),
        budget_period=row.get("budget_period"), expires_at=row.get("expires_at"),
        max_budget=_money(row.get("max_budget")), budget_alert=_alert(row.get("budget_alert")),
        limit_id=f"{row['id']}-{row['key_hash'][:16]}", levels=_levels(row),
        log_bodies=bool(row.get("log_bodies")), user_id=_id(row.get("user_id")),
        team_id=_id(row.get("team_id")), queue_weight=_weight(row.get("queue_weight")),
        team_queue_weight=_weight(row.get("team_queue_weight"))
        if row.get("team_id") is not None else None)


def _scope(row: KeyRow) -> Scope:
    scope: Scope = row["scope"]
    if row.get("user_id") is None or scope == "user":
        return scope
    role = row.get("user_role")
    if role == "admin" or (role == "auditor" and scope == "auditor"):
        return scope
    return "user"


def _levels(row: KeyRow) -> tuple[LimitLevel, ...]:
    """The user's and the team's limits (those that set any), counted under ids unique to the
    row (its id and creation time: a reused id on a shared Redis counts apart)."""
    levels = (
        _level("user", row.get("user_id"), row.get("user_name"), row.get("user_created_at"),
               row.get("user_rpm"), row.get("user_tpm"), row.get("user_token_budget"),
               row.get("user_budget_period"), row.get("user_max_budget"),
               row.get("user_budget_alert")),
        _level("team", row.get("team_id"), row.get("team_name"), row.get("team_created_at"),
               row.get("team_rpm"), row.get("team_tpm"), row.get("team_token_budget"),
               row.get("team_budget_period"), row.get("team_max_budget"),
               row.get("team_budget_alert")))
    return tuple(level for level in levels if level is not None and level.limited)


def _level(kind: Literal["user", "team"], level_id: int | None, name: str | None,
           created_at: float | None, rpm: int | None, tpm: int | None,
           token_budget: int | None, budget_period: BudgetPeriod | None,
           max_budget: float | None, budget_alert: int | None) -> LimitLevel | None:
    """The limits of the key's user or team (``None``: the key has none)."""
    if level_id is None or name is None:
        return None
    made = int((created_at or 0) * 1000)
    return LimitLevel(kind, int(level_id), f"{kind}-{level_id}-{made}", str(name),
                      rpm=rpm, tpm=tpm, token_budget=token_budget, budget_period=budget_period,
                      max_budget=_money(max_budget), budget_alert=_alert(budget_alert))


def _weight(value: float | None) -> float | None:
    return None if value is None else float(value)


def _id(value: int | None) -> int | None:
    return None if value is None else int(value)


def _money(value: float | None) -> float | None:
    return None if value is None else float(value)


def _alert(value: int | None) -> int:
    return DEFAULT_BUDGET_ALERT if value is None else int(value)


def _or(value: int | None, default: int) -> int:
    return default if value is None else int(value)


class _Entry:
    __slots__ = ("enabled", "key_hash", "principal", "user_disabled")

    def __init__(self, key_hash: str, principal: Principal, enabled: bool,
                 user_disabled: bool = False) -> None:
        self.key_hash = key_hash
        self.principal = principal
        self.enabled = enabled and not user_disabled
        self.user_disabled = user_disabled


LoadHook = Callable[[list[Principal]], Awaitable[None]]


def _incorrect(key: str) -> AuthenticationFailed:
    return AuthenticationFailed(
        f"Incorrect API key provided: {display_prefix(key)}... You can find your API "
        "key in your inferd admin or ask your administrator.")


def _revoked() -> AuthenticationFailed:
    return AuthenticationFailed("The API key that submitted this job is no longer valid.",
                                code="key_revoked")


def _valid(entry: _Entry) -> Principal:
    """The entry's principal; raises when it is disabled or expired."""
    if entry.user_disabled:
        raise AuthenticationFailed("The user this API key belongs to has been disabled.",
                                   code="user_disabled")
    if not entry.enabled:
        raise AuthenticationFailed("This API key has been disabled.", code="key_disabled")
    principal = entry.principal
    if principal.expires_at is not None and principal.expires_at <= time.time():
        raise AuthenticationFailed("This API key has expired.", code="key_expired")
    return principal


class KeyRing:
    """The principals of the keys in use by hash, read on demand and kept fresh by the feed of
    key changes (see the module)."""

    def __init__(self, store: KeyStore, *, refresh_seconds: float = 0.5,
                 on_load: LoadHook | None = None,
                 storage: tuple[int, int] = (0, 0), cache_size: int = CACHE_SIZE,
                 miss_cache_size: int = MISS_CACHE_SIZE,
                 miss_ttl: float = MISS_TTL_SECONDS, max_lookups: int = MAX_LOOKUPS,
                 announce: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.store = store
        self.storage = storage  # the default storage quota: (bytes, objects)
        self.refresh_seconds = refresh_seconds
        self.on_load = on_load  # sees each enabled key when it is loaded
        self.cache_size = cache_size
        self.miss_cache_size = miss_cache_size
        self.miss_ttl = miss_ttl
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # by hash, oldest use first
        self._ids: dict[str, str] = {}  # key id -> hash, of the cached entries
        self._misses: OrderedDict[str, float] = OrderedDict()  # hash -> forget at (monotonic)
        self._loading: dict[str, asyncio.Future[_Entry | None]] = {}
        self._slots = asyncio.Semaphore(max_lookups)
        # Invalidations: a counter, the last value per key ("h:hash", "i:id") and the highest
        # value dropped from that bounded record (see ``_fresh``).
        self._epoch = 0
        self._touched: OrderedDict[str, int] = OrderedDict()
        self._forgotten = 0
        self._since = 0  # the last change of the feed applied
        self._gaps: OrderedDict[int, float] = OrderedDict()  # skipped id -> seen at
        self._own: OrderedDict[int, None] = OrderedDict()  # changes made (and applied) here
        self._polled_at = 0.0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.has_admin = False
        # Tells the other processes that a key changed (its id; Redis pub/sub), when given.
        self.announce = announce

    async def start(self) -> None:
        await self.reload()
        self._task = asyncio.get_running_loop().create_task(self._poll())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def reload(self) -> None:
        """Start over: forget every cached key, read from the end of the change feed."""
        started = time.monotonic()
        since = await self.store.last_change()
        self._reset()
        self._since = since
        self._gaps.clear()
        self._polled_at = started
        self.has_admin = await self.store.has_usable_admin()

    def _reset(self) -> None:
        self._entries.clear()
        self._ids.clear()
        self._misses.clear()
        self._touched.clear()
        self._epoch += 1
        self._forgotten = self._epoch  # loads begun before now are not kept

    async def refresh(self) -> bool:
        """Apply the changes of the feed since the last one seen; True when there were any."""
        async with self._lock:
            started = time.monotonic()
            if started - self._polled_at > STALE_SECONDS:
                await self.reload()  # the feed may have been pruned past what was applied
                return True
            changed = False
            while True:
                rows = await self.store.changes_since(self._since)
                if not rows:
                    break
                changed = True
                self._note_gaps(rows, started)
                await self._apply_feed(rows)
                self._since = rows[-1][0]
            if self._gaps:
                late = await self.store.changes_in(list(self._gaps))
                for change_id, _, _ in late:
                    self._gaps.pop(change_id, None)
                if late:
                    changed = True
                    await self._apply_feed(late)
                while self._gaps and next(iter(self._gaps.values())) < started - GAP_SECONDS:
                    self._gaps.popitem(last=False)
            self._polled_at = started
            if changed:
                self.has_admin = await self.store.has_usable_admin()
            return changed

    def _note_gaps(self, rows: list[tuple[int, int, str]], now: float) -> None:
        """Remember the ids between the changes read that were not there (yet)."""
        last = self._since
        for change_id, _, _ in rows:
            if change_id - last - 1 <= MAX_GAP:
                for skipped in range(last + 1, change_id):
                    self._gaps[skipped] = now
            last = change_id
        while len(self._gaps) > MAX_GAPS:
            self._gaps.popitem(last=False)

    async def _apply_feed(self, rows: list[tuple[int, int, str]]) -> None:
        """Apply changes read from the feed but those made here."""
        changes: list[tuple[int, str | None]] = []
        for change_id, key_id, key_hash in rows:
            if change_id in self._own:
                del self._own[change_id]
            else:
                changes.append((key_id, key_hash))
        if changes:
            await self._apply(changes)

    async def _apply(self, changes: list[tuple[int, str | None]]) -> None:
        """Forget the changed keys, then reload those this process held."""
        held = []
        for key_id, key_hash in changes:
            if self.forget(str(key_id), key_hash):
                held.append(key_id)
        if held:
            epoch = self._epoch
            async with self._slots:
                rows = await self.store.by_id(held)
            for row in rows:
                await self._install(row, epoch)

    async def apply_announcement(self, payload: str) -> None:
        """Another process changed the key with id ``payload`` (empty: some key; read the
        feed now)."""
        if payload.isdigit() and len(payload) <= 19 and payload in self._ids:
            await self._apply([(int(payload), None)])  # held here: reload it
        elif self._misses or not self.has_admin or not payload.isdigit():
            # It may be a key remembered as unknown here, or the first admin key (which turns
            # enforcement on): the feed names its hash.
            await self.refresh()

    async def changed(self, row: KeyRow | None, *, key_id: str,
                      key_hash: str | None, change_id: int | None = None) -> None:
        """This process changed a key: ``row`` is it now (``None``: deleted); ``change_id``,
        the change's id in the feed, is skipped when the feed is read (applied here now)."""
        if change_id:
            self._own[change_id] = None
            while len(self._own) > OWN_SIZE:
                self._own.popitem(last=False)
        self.forget(key_id, key_hash)
        if row is not None:
            await self._install(row, self._epoch)
            if row["scope"] == "admin" or not self.has_admin:
                self.has_admin = await self.store.has_usable_admin()
        if self.announce is not None:
            await self.announce(key_id)

    async def changed_many(self, changes: list[tuple[int, str]]) -> None:
        """This process changed a team or user: ``changes`` are its keys (id, hash), whose
        changes are in the feed; those held here are reloaded now (and again when the feed is
        read: the changes of a team are written in one statement, without their ids), and the
        other processes are told to read the feed."""
        await self._apply([(key_id, key_hash) for key_id, key_hash in changes])
        self.has_admin = await self.store.has_usable_admin()
        if self.announce is not None:
            await self.announce("")

    def forget(self, key_id: str, key_hash: str | None) -> bool:
        """Drop what this process knows of a key (a change is coming); True when it was
        cached. Loads begun before are not kept."""
        self._epoch += 1
        tags = [f"i:{key_id}"] if key_hash is None else [f"i:{key_id}", f"h:{key_hash}"]
        for tag in tags:
            self._touched[tag] = self._epoch
            self._touched.move_to_end(tag)
        while len(self._touched) > TOUCHED_SIZE:
            self._forgotten = self._touched.popitem(last=False)[1]
        held = False
        cached = self._ids.pop(key_id, None)
        if cached is not None:
            held = self._entries.pop(cached, None) is not None
        if key_hash is not None:
            self._misses.pop(key_hash, None)
            entry = self._entries.pop(key_hash, None)
            if entry is not None:
                held = True
                self._ids.pop(str(entry.principal.key_id), None)
        return held

    def _fresh(self, epoch: int, key_id: str, key_hash: str) -> bool:
        """Whether no change of this key was applied since ``epoch`` (a load's start)."""
        touched = self._touched
        return (epoch >= self._forgotten and touched.get(f"h:{key_hash}", 0) <= epoch
                and touched.get(f"i:{key_id}", 0) <= epoch)

    async def _install(self, row: KeyRow, epoch: int) -> _Entry:
        entry = _Entry(row["key_hash"], principal_from_row(row, self.storage),
                       bool(row["enabled"]), bool(row.get("user_disabled")))
        key_id = str(row["id"])
        if self._fresh(epoch, key_id, entry.key_hash):
            previous = self._ids.get(key_id)
            if previous is not None and previous != entry.key_hash:
                self._entries.pop(previous, None)
            self._entries[entry.key_hash] = entry
            self._entries.move_to_end(entry.key_hash)
            self._ids[key_id] = entry.key_hash
            self._misses.pop(entry.key_hash, None)
            while len(self._entries) > self.cache_size:
                _, old = self._entries.popitem(last=False)
                self._ids.pop(str(old.principal.key_id), None)
        if self.on_load is not None and entry.enabled:
            await self.on_load([entry.principal])
        return entry

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                await self.refresh()
            except Exception as exc:  # the store may be down for a while; keep the cache
                log.warning("could not refresh API keys: %s", exc)

    @property
    def count(self) -> int:
        """Keys cached in this process."""
        return len(self._entries)

    @property
    def unknown_count(self) -> int:
        """Unknown keys remembered in this process."""
        return len(self._misses)

    def principals(self) -> list[Principal]:
        """The principals cached in this process (the keys in use, not every key)."""
        return [e.principal for e in self._entries.values()]

    def authenticate(self, key: str) -> Principal:
        """The key's principal from the cache; raises ``AuthenticationFailed`` (401) when it
        is not valid or not loaded here (``authenticate_fresh`` reads it)."""
        digest = hash_key(key)
        entry = self._entries.get(digest)
        if entry is None or not secrets.compare_digest(entry.key_hash, digest):
            raise _incorrect(key)
        return _valid(entry)

    async def authenticate_fresh(self, key: str) -> Principal:
        """The key's principal, read by its hash when not cached; raises
        ``AuthenticationFailed`` (401) when it is unknown, disabled or expired."""
        digest = hash_key(key)
        entry = self._entries.get(digest)
        if entry is None:
            entry = await self._find(digest)
            if entry is None:
                raise _incorrect(key)
        else:
            self._entries.move_to_end(digest)
        if not secrets.compare_digest(entry.key_hash, digest):
            raise _incorrect(key)
        return _valid(entry)

    async def find(self, key: str) -> Principal | None:
        """The key's principal, or None when it is unknown (not checking enabled/expiry)."""
        digest = hash_key(key)
        entry = self._entries.get(digest) or await self._find(digest)
        return None if entry is None else entry.principal

    async def _find(self, digest: str) -> _Entry | None:
        """The entry of a hash not in the cache: remembered as unknown, or read (once for all
        the requests presenting it at the same time)."""
        expires = self._misses.get(digest)
        if expires is not None:
            if expires > time.monotonic():
                return None
            del self._misses[digest]
        loading = self._loading.get(digest)
        if loading is None:
            loading = self._loading[digest] = asyncio.ensure_future(self._load(digest))
            loading.add_done_callback(lambda _: self._loading.pop(digest, None))
        return await asyncio.shield(loading)

    async def _load(self, digest: str) -> _Entry | None:
        async with self._slots:
            epoch = self._epoch
            rows = await self.store.by_hash([digest])
        if rows:
            return await self._install(rows[0], epoch)
        if epoch >= self._forgotten and self._touched.get(f"h:{digest}", 0) <= epoch:
            self._misses[digest] = time.monotonic() + self.miss_ttl
            while len(self._misses) > self.miss_cache_size:
                self._misses.popitem(last=False)
        return None

    def owner(self, key_id: str) -> Principal:
        """The principal of the cached key with this id, for work it submitted earlier (a
        job); raises ``AuthenticationFailed`` when it is disabled, expired or not cached."""
        digest = self._ids.get(key_id)
        entry = None if digest is None else self._entries.get(digest)
        if entry is None:
            raise _revoked()
        try:
            return _valid(entry)
        except AuthenticationFailed:
            raise _revoked() from None

    async def owner_fresh(self, key_id: str) -> Principal:
        """The principal of the key with this id, for work it submitted earlier (a job), read
        when not cached. Raises ``AuthenticationFailed`` when that key was deleted, disabled
        or has expired, so queued work of a revoked key does not run."""
        digest = self._ids.get(key_id)
        entry = None if digest is None else self._entries.get(digest)
        if entry is None:
            if not key_id.isdigit() or len(key_id) > 19:
                raise _revoked()
            async with self._slots:
                epoch = self._epoch
                rows = await self.store.by_id([int(key_id)])
            if not rows:
                raise _revoked()
            entry = await self._install(rows[0], epoch)
        try:
            return _valid(entry)
        except AuthenticationFailed:
            raise _revoked() from None
