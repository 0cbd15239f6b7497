"""What the control-plane routes answer, as pydantic models: the OpenAPI document's response
schemas (see ``inferd.schemas.answers``, which holds the data plane's, and
``inferd.schemas.compat``, the replaced systems' APIs'). They describe the dicts the
routes build; nothing builds answers from them."""

from __future__ import annotations

from typing import Literal

from inferd.jsontypes import JsonObject
from inferd.schemas.answers import Answer


# -- health -------------------------------------------------------------------------------------
class Health(Answer):
    status: Literal["ok"]
    uptime_seconds: float


class Readiness(Answer):
    status: Literal["ready", "not_ready", "draining"]
    store: bool | None  # None: a shared database, not checked without ?deep=true
    store_writes: bool | None
    models: dict[str, bool]


# -- keys ---------------------------------------------------------------------------------------
class ApiKey(Answer):
    """A key as the admin API shows it: never the hash; ``key`` only in the creation answer,
    ``webhook_secret`` in that one and in a single key's view."""

    id: int | str
    object: Literal["api_key"]
    name: str | None
    prefix: str
    scope: Literal["admin", "user", "auditor", "scim"]
    owner: str | None
    team: str | None
    team_id: int | None
    user_id: int | None = None
    models: list[str] | None
    rpm: int | None
    tpm: int | None
    token_budget: int | None
    budget_period: str | None
    max_budget: float | None = None
    budget_alert: int | None = None
    expires_at: float | None
    enabled: bool
    user_disabled: bool = False
    metadata: JsonObject
    log_bodies: bool = False
    queue_weight: float | None = None
    key: str | None = None
    webhook_secret: str | None = None


class ApiKeyList(Answer):
    """A page of keys by id: the next one starts ``after`` this one's ``last_id``."""

    object: Literal["list"]
    data: list[ApiKey]
    first_id: int | str | None
    last_id: int | str | None
    has_more: bool


# -- teams and users ----------------------------------------------------------------------------
class Team(Answer):
    """A team: its models and limits apply to each of its keys besides their own."""

    id: int
    object: Literal["team"]
    name: str
    models: list[str] | None
    rpm: int | None
    tpm: int | None
    token_budget: int | None
    budget_period: str | None
    max_budget: float | None = None
    budget_alert: int | None = None
    metadata: JsonObject
    queue_weight: float | None = None
    created_at: float
    updated_at: float
    # the identity provider's id of a team it provisions over SCIM
    external_id: str | None = None


class TeamList(Answer):
    object: Literal["list"]
    data: list[Team]
    first_id: int | None
    last_id: int | None
    has_more: bool


class User(Answer):
    """A user: keys belong to them; a disabled user's keys do not work."""

    id: int
    object: Literal["user"]
    name: str
    email: str | None
    role: Literal["admin", "auditor"] | None
    disabled: bool
    rpm: int | None
    tpm: int | None
    token_budget: int | None
    budget_period: str | None
    max_budget: float | None = None
    budget_alert: int | None = None
    created_at: float
    updated_at: float
    # the identity provider's id of a user it provisions over SCIM, and when a SCIM DELETE
    # took out the user while they held keys (disabled, no longer seen by SCIM)
    external_id: str | None = None
    deprovisioned_at: float | None = None


class UserList(Answer):
    object: Literal["list"]
    data: list[User]
    first_id: int | None
    last_id: int | None
    has_more: bool


class Member(Answer):
    """A user's role in a team."""

    object: Literal["team.member"]
    team_id: int
    user_id: int
    name: str
    email: str | None
    role: Literal["owner", "member", "viewer"]
    created_at: float


class MemberList(Answer):
    """Members by user id: the next page starts ``after`` this one's ``last_id``."""

    object: Literal["list"]
    data: list[Member]
    first_id: int | None
    last_id: int | None
    has_more: bool


# -- models, replicas, engines -----------------------------------------------------------------
class Replica(Answer):
    id: str
    model: str
    kind: str
    healthy: bool
    available: bool
    in_flight: int
    # The load its engine reports (docs/serving/routing.md); null: none read
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None
    load_read_at: float | None = None
    enabled: bool
    has_api_key: bool
    source: str


class ReplicaTest(Answer):
    """A connection test of a replica not saved yet."""

    object: Literal["replica.test"]
    ok: bool
    error: str | None
    warning: str | None
    models: list[str]
    latency_ms: float


class ManagedModel(Answer):
    id: int | str | None
    name: str
    object: Literal["model"]
    aliases: list[str]
    fallbacks: list[str]
    # How its replicas are chosen: prefix | least_busy | weighted
    routing: str
    routing_default: bool  # true: the server's default, not set on the model
    active: bool
    # input, output, cached_input (per million tokens), image (each), step (per step of each
    # image); null: none
    price: dict[str, float | None] | None = None
    healthy: bool
    # requests waiting in this gateway's fair queue for the model (all replicas at capacity)
    queued: int = 0
    replicas: list[Replica]


class ManagedModelList(Answer):
    object: Literal["list"]
    data: list[ManagedModel]


class ReplicaList(Answer):
    object: Literal["list"]
    data: list[Replica]


class Engine(Answer):
    """An in-process model and its memory state."""

    id: str
    object: Literal["model"]
    state: str
    active_requests: int


class EngineList(Answer):
    object: Literal["list"]
    data: list[Engine]


class EngineReplica(Answer):
    id: str
    model: str


class EngineRegistered(Answer):
    """An engine instance registered with a gateway: its replica of each model."""

    object: Literal["engine"]
    instance: str
    heartbeat_seconds: float
    replicas: list[EngineReplica]


class EngineBeat(Answer):
    object: Literal["engine"]
    instance: str
    heartbeat_seconds: float
    replicas: int


class EngineLeft(Answer):
    object: Literal["engine"]
    instance: str
    deleted: bool
    replicas: int


# -- usage and monitoring -----------------------------------------------------------------------
class UsageGroups(Answer):
    object: Literal["list"]
    group_by: list[str]
    bucket: str
    since: float | None
    until: float | None
    generated_at: float
    data: list[JsonObject]


class UsageRecords(Answer):
    object: Literal["list"]
    data: list[JsonObject]


class TableNames(Answer):
    tables: list[str]


class TableRows(Answer):
    table: str
    data: list[JsonObject]


class PromptVersion(Answer):
    version: str
    created_at: int
    instructions: str | None = None
    input: list[JsonObject] | None = None
    variables: list[str]


class Prompt(Answer):
    id: str
    object: Literal["prompt"]
    name: str
    key_id: str | None
    created_at: int
    version: str
    variables: list[str]
    versions: list[PromptVersion]


class PromptList(Answer):
    object: Literal["list"]
    data: list[Prompt]


# -- audit log ----------------------------------------------------------------------------------
class AuditActor(Answer):
    """Who made a change: a key (id, name, scope), a user (later: SSO), how (``via``)."""

    key_id: str | None
    name: str
    scope: str | None
    user: str | None
    via: Literal["api", "cli", "system"]


class AuditEvent(Answer):
    """One change of the control plane; ``before`` and ``after`` with secrets masked."""

    id: str
    object: Literal["audit_event"]
    created_at: float
    actor: AuditActor
    action: str
    object_type: str
    object_id: str | None
    before: JsonObject | None
    after: JsonObject | None
    client_address: str | None
    request_id: str | None


class AuditEventList(Answer):
    object: Literal["list"]
    data: list[AuditEvent]
    has_more: bool
    first_id: str | None
    last_id: str | None


class Session(Answer):
    """The caller of the UI, after its log-in (``user``: the key's user, if any; ``sso``: a
    single sign-on session's key)."""

    object: Literal["session"]
    key_id: str | None
    name: str
    scope: Literal["admin", "user", "auditor", "scim", "open"]
    user: str | None = None
    sso: bool = False


# -- single sign-on -----------------------------------------------------------------------------
class SsoConfig(Answer):
    """Whether single sign-on is configured (the UI shows its button then)."""

    object: Literal["sso.config"]
    enabled: bool
    issuer: str | None


class SsoHandoff(Answer):
    """The key of the browser's single sign-on session, handed over once after the login."""

    object: Literal["sso.session"]
    key: str
    user: str


class SsoLogout(Answer):
    object: Literal["sso.logout"]
    deleted: bool


class SsoRule(Answer):
    group: str
    team: str | None = None
    role: Literal["owner", "member", "viewer"] | None = None
    installation_role: Literal["admin", "auditor"] | None = None


class SsoRules(Answer):
    """The group rules of single sign-on, applied in order at each login."""

    object: Literal["sso.rules"]
    rules: list[SsoRule]


# -- request log --------------------------------------------------------------------------------
class RequestEntry(Answer):
    """One request of the request log (``docs/operating/requests.md``); its bodies only when
    its key keeps them (``log_bodies``), capped and redacted."""

    id: str
    object: Literal["request"]
    created_at: float
    request_id: str | None
    key_id: str | None
    key_name: str | None
    user_id: int | None  # the key's user and team when the request was made
    team_id: int | None
    model: str
    replica: str | None
    endpoint: str
    stream: bool
    status: int
    error: str | None
    latency_ms: float
    ttft_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int | None
    cost: float
    attempts: int
    client_address: str | None
    user_agent: str | None
    trace_id: str | None
    request_body: str | None = None
    response_body: str | None = None


class RequestList(Answer):
    object: Literal["list"]
    data: list[RequestEntry]
    has_more: bool
    next_cursor: str | None
