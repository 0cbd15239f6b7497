"""The ``inferd`` command: ``serve``, ``models``, ``migrate`` (and the other roles)."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import orjson

from inferd.cli_options import config_option
from inferd.lifecycle import Drain
from inferd.settings import (
    AccessSettings,
    ClusterSettings,
    EngineSettings,
    HttpSettings,
    ModelSpec,
    Settings,
    StorageSettings,
    load_settings,
)


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except ValueError as exc:
        raise click.ClickException(f"invalid settings: {exc}") from exc


def _model_specs(values: tuple[str, ...]) -> list[ModelSpec] | None:
    if not values:
        return None
    try:
        return [ModelSpec.parse_cli(v) for v in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from exc


def _configure_logging(level: str, fmt: str = "json") -> None:
    from inferd.logs import configure

    configure(level, fmt)


def server_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options every role that listens shares: config file, address, state, log level."""
    for option in reversed((
        config_option,
        click.option("--host", default=None, help="Address to bind (default 127.0.0.1)."),
        click.option("--port", type=int, default=None, help="Port (default 8000)."),
        click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                     help="Where the SQLite file and other state live (default ./data)."),
        click.option("--log-level", default=None),
    )):
        command = option(command)
    return command


def local_model_options(command: Callable[..., None]) -> Callable[..., None]:
    """``--model`` and ``--no-bundled``, for the roles that host GGUF files in-process."""
    command = click.option("--no-bundled", is_flag=True,
                           help="Do not serve the bundled models.")(command)
    return click.option("--model", "models", multiple=True,
                        metavar="NAME=PATH[,n_ctx=N,threads=N]",
                        help="Serve a local GGUF file as NAME (repeatable).")(command)


def _with_local_models(settings: Settings, models: tuple[str, ...]) -> Settings:
    """``settings`` with the ``--model`` files added to the configured models."""
    specs = _model_specs(models)
    if specs is None:
        return settings
    return settings.with_values(models=[*settings.engines.models, *specs])


def _keys() -> click.Command:
    from inferd.auth.cli import keys

    return keys


def _teams() -> click.Command:
    from inferd.auth.teams_cli import teams

    return teams


def _users() -> click.Command:
    from inferd.auth.teams_cli import users

    return users


def _images() -> click.Command:
    from inferd.images_cli import images

    return images


def _secrets() -> click.Command:
    from inferd.secrets_cli import secrets

    return secrets


def _audit() -> click.Command:
    from inferd.audit_cli import audit

    return audit


def _requests() -> click.Command:
    from inferd.requests_cli import requests

    return requests


class LazyGroup(click.Group):
    """``main``: the command groups of other modules are imported when chosen (or listed by
    ``--help``). ``keys``, ``teams`` and ``users`` import the store and the auth services,
    which a role imports later with its app and ``inferd bench`` or ``inferd models`` never."""

    lazy: dict[str, Callable[[], click.Command]] = {
        "keys": _keys, "teams": _teams, "users": _users, "images": _images,
        "secrets": _secrets, "audit": _audit, "requests": _requests}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            self.add_command(self.lazy[cmd_name](), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup)
@click.version_option(package_name="inferd")
def main() -> None:
    """inferd: OpenAI-compatible gateway, durable job queue and control plane for LLMs."""


@main.command()
@server_options
@local_model_options
@click.option("--threads", type=int, default=None, help="llama.cpp threads per model.")
def serve(config: Path | None, host: str | None, port: int | None, data_dir: Path | None,
          models: tuple[str, ...], no_bundled: bool, threads: int | None,
          log_level: str | None) -> None:
    """Run everything in one process: gateway, workers, local engines."""
    _run(_with_local_models(
        _settings(config, host=host, port=port, data_dir=data_dir, threads=threads,
                  log_level=log_level, bundled_models=False if no_bundled else None), models))


@main.command()
@server_options
def gateway(config: Path | None, host: str | None, port: int | None, data_dir: Path | None,
            log_level: str | None) -> None:
    """Run the HTTP front door only: remote replicas (http, triton), no local models.

    Keys, limits, routing and usage metering are the same as in ``serve``; models come from
    ``remote_models`` in the config file and from the admin API.
    """
    _run(_settings(config, host=host, port=port, data_dir=data_dir, log_level=log_level,
                   bundled_models=False).with_values(models=[], role="gateway"))


@main.command()
@server_options
@click.option("--model", "models", multiple=True, metavar="NAME | NAME=PATH[,...]",
              help="Host this model in-process and consume only its queue (repeatable): a "
                   "bundled or configured model's name, or a GGUF file as for serve.")
def worker(config: Path | None, host: str | None, port: int | None, data_dir: Path | None,
           models: tuple[str, ...], log_level: str | None) -> None:
    """Consume job ids from RabbitMQ, run them, commit the result, then acknowledge.

    Without ``--model`` it runs jobs of every model known to the cluster on their remote
    replicas. Its HTTP port serves the same API (for probes and metrics).
    """
    settings = _settings(config, host=host, port=port, data_dir=data_dir, log_level=log_level)
    known = {spec.name: spec for spec in settings.engines.all_models()}
    specs: list[ModelSpec] = []
    for value in models:
        if "=" in value:
            specs += _model_specs((value,)) or []
        elif value in known:
            specs.append(known[value])
        else:
            raise click.BadParameter(f"unknown model {value!r} (known: "
                                     f"{', '.join(sorted(known)) or 'none'})",
                                     param_hint="--model")
    settings = settings.with_values(role="worker", models=specs, bundled_models=False,
                                    worker_models=[s.name for s in specs])
    if not settings.broker.broker_url:
        raise click.ClickException("inferd worker needs a broker: set INFERD_BROKER_URL "
                                   "(or RABBIT_MQ_HOST)")
    _run(settings)


@main.command()
@server_options
@local_model_options
@click.option("--url", "engine_url", default=None,
              help="OpenAI base URL gateways reach this engine at (INFERD_ENGINE_URL).")
def engine(config: Path | None, host: str | None, port: int | None, data_dir: Path | None,
           models: tuple[str, ...], no_bundled: bool, engine_url: str | None,
           log_level: str | None) -> None:
    """Host local models, serve the OpenAI API for them, and register as their replica.

    Gateways of the same database route to it while its heartbeat lasts.
    """
    settings = _with_local_models(
        _settings(config, host=host, port=port, data_dir=data_dir, log_level=log_level,
                  engine_url=engine_url, bundled_models=False if no_bundled else None), models)
    if not settings.cluster.engine_url:
        settings = settings.with_values(
            engine_url=advertised_url(settings.http, settings.cluster.engine_host))
    _run(settings.with_values(role="engine"))


def advertised_url(settings: HttpSettings, engine_host: str = "") -> str:
    """The URL gateways reach this engine at: ``engine_host`` (e.g. the pod IP), else the bound
    address, else (bound to every address) the host's name; an IPv6 address in brackets."""
    import ipaddress
    import socket

    host = engine_host or (
        settings.host if settings.host not in ("0.0.0.0", "::", "") else socket.getfqdn())
    host = host.strip("[]")
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:  # a name
        pass
    return f"http://{host}:{settings.port}/v1"


def _check_schema(settings: StorageSettings, role: str) -> None:
    """A cluster role on a shared database stops here when ``inferd migrate`` has not run."""
    from inferd.services import SchemaNotMigrated, prepare_schema
    from inferd.store.db import open_database

    if role == "serve":
        return

    async def check() -> None:
        db = open_database(settings)
        if db.dialect == "sqlite":
            await db.close()
            return
        await prepare_schema(db, role)
        await db.close()

    try:
        asyncio.run(check())
    except SchemaNotMigrated as exc:
        raise click.ClickException(exc.message) from exc


def _check_engines(settings: EngineSettings) -> None:
    """Refuse to start when a model this process would host needs an extra not installed
    (``pip install 'inferd[llamacpp]'``): one line saying what to install, no traceback."""
    from inferd.engines import missing_runtime

    for spec in settings.all_models():
        missing = missing_runtime(spec)
        if missing is not None:
            raise click.ClickException(missing.message)


def _check_cluster_safety(cluster: ClusterSettings, access: AccessSettings, *, host: str,
                          secret_key: str) -> None:
    """A cluster role reachable from other hosts stops here on unsafe secrets."""
    from inferd.auth.bootstrap import StartupRefused, unsafe_cluster_settings

    try:
        unsafe_cluster_settings(cluster, access, host=host, secret_key=secret_key)
    except StartupRefused as exc:
        raise click.ClickException(str(exc)) from exc


def _check_tracing() -> None:
    """Traces asked for (an OTLP endpoint in the environment) that cannot be sent stop the
    process here: the SDK not installed, or a transport other than OTLP/HTTP."""
    from inferd.tracing import refusal

    why = refusal()
    if why is not None:
        raise click.ClickException(why)


def _run(settings: Settings) -> None:
    # Starting builds what lives as long as the process (modules, schemas, routes) and
    # little garbage: the cyclic collector, which would walk the growing heap a few hundred
    # times meanwhile (a fifth of the start's CPU), waits and runs once at the end.
    gc.disable()
    try:
        server = _server(settings)
    finally:
        gc.enable()
    server.run()


def _server(settings: Settings) -> Any:
    """The server of ``settings``, its app built; the checks at start done."""
    import uvicorn

    from inferd.app import create_app
    from inferd.http.server import guarded_protocol

    http, logs = settings.http, settings.logging
    _configure_logging(logs.log_level, logs.log_format)
    _check_engines(settings.engines)
    _check_tracing()
    _check_cluster_safety(settings.cluster, settings.access, host=http.host,
                          secret_key=settings.storage.secret_key)
    _check_schema(settings.storage, settings.cluster.role)
    # uvloop + httptools (with bounds on each request head: inferd.http.server); no access
    # log (usage records and metrics cover every request); no proxy-header rewriting (nothing
    # reads the client address) and no Server header.
    drain = Drain()  # the stop signal's: the server begins it, the services obey it
    app = create_app(settings, drain)
    # What is alive now (modules, schemas, routes) lives as long as the process: the cyclic
    # collector need not walk it again, and young collections may run less often.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    protocol = guarded_protocol(http.max_header_bytes, http.header_timeout_seconds,
                                http.body_timeout_seconds, http.body_min_rate)
    config = uvicorn.Config(app, host=http.host, port=http.port,
                            log_level=logs.log_level, loop="uvloop", http=protocol,
                            h11_max_incomplete_event_size=http.max_header_bytes,
                            timeout_keep_alive=http.keep_alive_seconds,
                            access_log=False, proxy_headers=False, server_header=False,
                            backlog=4096,
                            timeout_graceful_shutdown=int(http.shutdown_grace_seconds),
                            log_config={"version": 1, "disable_existing_loggers": False})
    return draining_server(config, http.shutdown_grace_seconds, drain)


def draining_server(config: Any, grace: float, drain: Drain) -> Any:
    """uvicorn's server, whose stop signal also starts the process's drain
    (``inferd.lifecycle``): readiness turns 503 and the job workers stop taking jobs while the
    server finishes the requests in flight."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            drain.begin(grace)
            super().handle_exit(sig, frame)

    return DrainingServer(config)


@main.command("models")
@config_option
@click.option("--model", "models", multiple=True, metavar="NAME=PATH[,...]")
def list_models(config: Path | None, models: tuple[str, ...]) -> None:
    """List the models ``inferd serve`` would serve with these settings."""
    settings = _settings(config)
    specs = [*settings.engines.all_models(), *(_model_specs(models) or [])]
    for spec in specs:
        fields = {"name", "kind", "path", "n_ctx", "n_threads", "aliases"}
        if spec.kind == "diffusers":
            fields = {"name", "kind", "path", "aliases", "steps", "guidance_scale", "size"}
        click.echo(orjson.dumps(spec.model_dump(include=fields)).decode())


@main.command()
@config_option
def migrate(config: Path | None) -> None:
    """Bring the database schema to the newest version."""
    from inferd.store.db import open_database

    storage = _settings(config).storage
    storage.data_dir.mkdir(parents=True, exist_ok=True)
    db = open_database(storage)
    asyncio.run(db.migrate())
    click.echo(f"migrated {db.dialect} database")


@main.command("bench")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True,
              help="Base URL of the server (inferd or any OpenAI-compatible one).")
@click.option("--model", default="smollm2-135m-instruct", show_default=True)
@click.option("--embedding-model", default="all-minilm-l6-v2", show_default=True)
@click.option("--image-model", default="", help="Model of the images in the mix.")
@click.option("--api-key", envvar="INFERD_API_KEY", default="", help="Bearer key (or "
              "INFERD_API_KEY).")
@click.option("-c", "--concurrency", type=click.IntRange(1, 10_000), default=8,
              show_default=True, help="Requests in flight.")
@click.option("-n", "--requests", type=click.IntRange(1), default=None,
              help="Stop after this many requests.")
@click.option("-d", "--duration", type=click.FloatRange(min=0.1), default=None,
              help="Stop after this many seconds (default 30 without --requests).")
@click.option("--mix", default="chat", show_default=True,
              help="Weighted kinds: chat, stream, embeddings, images, health "
                   "(e.g. chat=3,stream=1,health=1).")
@click.option("--prompt-words", default="8-32", show_default=True,
              help="Prompt length in words, a range LOW-HIGH or one number.")
@click.option("--max-tokens", type=click.IntRange(1), default=32, show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=300.0, show_default=True,
              help="Seconds one request may take.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--quiet", is_flag=True, help="No progress line while it runs.")
def bench(url: str, model: str, embedding_model: str, image_model: str, api_key: str,
          concurrency: int, requests: int | None, duration: float | None, mix: str,
          prompt_words: str, max_tokens: int, timeout: float, as_json: bool,
          quiet: bool) -> None:
    """Load a server and print requests/s, tokens/s, latency and TTFT percentiles, errors.

    The image backend's `make stresstest` (hey against the backend) with tokens and streams in view:
    `inferd bench --url http://gateway:8000 -c 32 -d 120 --mix chat=3,stream=1,health=1`.
    """
    from inferd.loadtest import Plan, Runner, parse_mix, render, summary

    try:
        weights = parse_mix(mix)
        low, _, high = prompt_words.partition("-")
        words = (int(low), int(high or low))
        if not 1 <= words[0] <= words[1]:
            raise ValueError("--prompt-words needs 1 <= LOW <= HIGH")
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    plan = Plan(url=url, model=model, embedding_model=embedding_model,
                image_model=image_model, api_key=api_key, concurrency=concurrency,
                requests=requests, duration=duration if duration or requests else 30.0,
                mix=weights, prompt_words=words, max_tokens=max_tokens, timeout=timeout)

    def progress(samples: list[Any], elapsed: float) -> None:
        failed = sum(1 for s in samples if not 200 <= s.status < 300)
        click.echo(f"\r{elapsed:6.1f} s  {len(samples)} done  {failed} failed", err=True,
                   nl=False)

    started = time.monotonic()
    samples = asyncio.run(Runner(plan).run(None if quiet or as_json else progress))
    report = summary(samples, time.monotonic() - started)
    if not (quiet or as_json):
        click.echo("", err=True)
    click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() if as_json
               else render(report))
