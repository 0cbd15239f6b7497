"""Who is calling: the principal a request is made on behalf of, with its key's limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from inferd.store.storage import Quota

# ``auditor``: reads everything an admin reads (the ``audit`` routes), changes nothing.
# ``scim``: an identity provider's key: it may call only the SCIM routes (``/scim/v2/``).
Scope = Literal["admin", "user", "auditor", "scim"]
BudgetPeriod = Literal["day", "week", "month"]
# The percentage of a money budget at which a warning is logged (when not set).
DEFAULT_BUDGET_ALERT = 80
# The highest weight of a key or a team in the gateway's fair queueing (as ``queue_weights``).
MAX_QUEUE_WEIGHT = 1_000_000.0


@dataclass(frozen=True, slots=True)
class LimitLevel:
    """Limits a key shares with every other key of its user or its team: the counters are
    the user's or the team's (``limit_id``), not the key's."""

    kind: Literal["user", "team"]
    row_id: int  # the user's or team's id
    limit_id: str
    name: str
    rpm: int | None = None
    tpm: int | None = None
    token_budget: int | None = None
    budget_period: BudgetPeriod | None = None
    max_budget: float | None = None  # money, per ``budget_period``
    budget_alert: int = DEFAULT_BUDGET_ALERT

    @property
    def limited(self) -> bool:
        return (self.rpm is not None or self.tpm is not None or self.token_budget is not None
                or self.max_budget is not None)


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of a request, resolved from its API key (or ``OPEN_MODE`` while keys are
    not required).

    Principals are built once per key when the key cache loads and shared by every request
    made with that key, so the hot path allocates nothing for them.
    """

    key_id: str | None
    scope: Scope
    allowed_models: frozenset[str] | None = None  # None: every model
    # Secret for signing this key's webhooks (Standard Webhooks, HMAC-SHA256).
    webhook_secret: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    name: str = ""
    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens per minute
    ipm: int | None = None  # images per minute
    # image cost units (steps x megapixels x pictures) per minute, and per ``budget_period``
    upm: int | None = None
    image_budget: int | None = None
    token_budget: int | None = None  # tokens in total, or per ``budget_period``
    budget_period: BudgetPeriod | None = None
    # a budget in money (the price book's currency units) per ``budget_period``, and the
    # percentage of it at which a warning is logged once per period
    max_budget: float | None = None
    budget_alert: int = DEFAULT_BUDGET_ALERT
    expires_at: float | None = None  # epoch seconds
    # Storage quota of the key's stored objects (its own, else the settings'): 0 = no limit.
    storage_bytes: int = 0
    storage_objects: int = 0
    # Names this key's limit counters: unique per key, even across installations sharing a
    # Redis or a reused id (a prefix of the key's hash, which reveals nothing of the key).
    limit_id: str | None = None
    # False on an engine for a request a gateway forwarded with the engine credential: the
    # gateway (or worker) that received it records its usage, so the engine does not count
    # it a second time.
    metered: bool = True
    # The engines' key on a gateway (``INFERD_ENGINE_API_KEY``): it may only call the engine
    # registration routes (``/internal/v1/engines``), nothing else.
    engine: bool = False
    # The limits of the key's user and team that set any (each counted across all their keys).
    levels: tuple[LimitLevel, ...] = ()
    # True only for ``OPEN_MODE``: the caller while keys are not required, set on purpose by
    # the auth middleware (never a fallback for a request or a job without a caller).
    open_mode: bool = False
    # The request log keeps this key's request and answer bodies (``inferd.reqlog``).
    log_bodies: bool = False
    # The key's user and team (their ids; None: the key has none), whether or not they set
    # limits: the request log records them.
    user_id: int | None = None
    team_id: int | None = None
    # Fair queueing at a model at capacity (``inferd.routing.fairqueue``): the key's weight
    # among its team's keys, and its team's among teams (None: the settings'
    # ``queue_weights``, else 1).
    queue_weight: float | None = None
    team_queue_weight: float | None = None

    @property
    def limit_key(self) -> str:
        return self.limit_id or self.key_id or ""

    @property
    def spends(self) -> bool:
        """True when a money budget applies (the key's, its user's or its team's)."""
        return self.max_budget is not None or any(
            level.max_budget is not None for level in self.levels)

    @property
    def storage_quota(self) -> Quota:
        return Quota(self.storage_bytes, self.storage_objects)

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"

    @property
    def is_auditor(self) -> bool:
        return self.scope == "auditor"

    @property
    def is_scim(self) -> bool:
        return self.scope == "scim"

    @property
    def limited(self) -> bool:
        """True when any limit applies (the limiter is skipped otherwise)."""
        return (self.rpm is not None or self.tpm is not None or self.token_budget is not None
                or self.ipm is not None or self.upm is not None
                or self.image_budget is not None or self.max_budget is not None
                or bool(self.levels))

    def may_use(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models


# The caller while keys are not required (loopback with no admin key yet, or ``auth = off``):
# an admin without a key. Only the auth middleware hands it to a request (through
# ``Auth.principal``), and a job made by such a request runs as it; a request or job without a
# caller is refused, never given this principal. No parameter of type ``Principal`` has a
# default (``tests/unit/test_no_default_principal.py``).
OPEN_MODE = Principal(key_id=None, scope="admin", open_mode=True)

# An engine registering with a gateway, with the engines' key (see ``Principal.engine``).
ENGINE = Principal(key_id=None, scope="user", name="INFERD_ENGINE_API_KEY", engine=True)
