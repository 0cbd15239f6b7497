"""The ``inferd`` command: ``serve``, ``models``, ``migrate`` (and the other roles)."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

import click
import orjson

from inferd.settings import ModelSpec, Settings, load_settings


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


config_option = click.option("--config", "config", type=click.Path(path_type=Path),
                             default=None, help="YAML config file (also INFERD_CONFIG).")


@click.group()
@click.version_option(package_name="inferd")
def main() -> None:
    """inferd: OpenAI-compatible gateway, durable job queue and control plane for LLMs."""


@main.command()
@config_option
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8000).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Where the SQLite file and other state live (default ./data).")
@click.option("--model", "models", multiple=True, metavar="NAME=PATH[,n_ctx=N,threads=N]",
              help="Serve a local GGUF file as NAME (repeatable).")
@click.option("--no-bundled", is_flag=True, help="Do not serve the bundled models.")
@click.option("--threads", type=int, default=None, help="llama.cpp threads per model.")
@click.option("--log-level", default=None)
def serve(config: Path | None, host: str | None, port: int | None, data_dir: Path | None,
          models: tuple[str, ...], no_bundled: bool, threads: int | None,
          log_level: str | None) -> None:
    """Run everything in one process: gateway, workers, local engines."""
    specs = _model_specs(models)
    settings = _settings(config, host=host, port=port, data_dir=data_dir, threads=threads,
                         log_level=log_level, bundled_models=False if no_bundled else None)
    if specs is not None:
        settings = settings.model_copy(update={"models": [*settings.models, *specs]})
    _run(settings)


@main.command()
@config_option
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8000).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Where the SQLite file and other state live (default ./data).")
@click.option("--log-level", default=None)
def gateway(config: Path | None, host: str | None, port: int | None, data_dir: Path | None,
            log_level: str | None) -> None:
    """Run the HTTP front door only: remote replicas (http, triton), no local models.

    Keys, limits, routing and usage metering are the same as in ``serve``; models come from
    ``remote_models`` in the config file and from the admin API.
    """
    _run(_settings(config, host=host, port=port, data_dir=data_dir, log_level=log_level,
                   bundled_models=False).model_copy(update={"models": []}))


def _run(settings: Settings) -> None:
    import uvicorn

    from inferd.app import create_app
    from inferd.http.middleware import HotPathFront
    from inferd.http.openai.chat import is_fast

    _configure_logging(settings.log_level, settings.log_format)
    # uvloop + httptools; no access log (usage records and metrics cover every request);
    # no proxy-header rewriting (nothing reads the client address) and no Server header.
    app = HotPathFront(create_app(settings), is_fast)
    # What is alive now (modules, schemas, routes) lives as long as the process: the cyclic
    # collector need not walk it again, and young collections may run less often.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    uvicorn.run(app, host=settings.host, port=settings.port,
                log_level=settings.log_level, loop="uvloop", http="httptools",
                access_log=False, proxy_headers=False, server_header=False,
                backlog=4096, timeout_graceful_shutdown=5,
                log_config={"version": 1, "disable_existing_loggers": False})


@main.command("models")
@config_option
@click.option("--model", "models", multiple=True, metavar="NAME=PATH[,...]")
def list_models(config: Path | None, models: tuple[str, ...]) -> None:
    """List the models ``inferd serve`` would serve with these settings."""
    settings = _settings(config)
    specs = [*settings.all_models(), *(_model_specs(models) or [])]
    for spec in specs:
        fields = {"name", "kind", "path", "n_ctx", "n_threads", "aliases"}
        if spec.kind == "diffusers":
            fields = {"name", "kind", "path", "aliases", "steps", "guidance_scale", "size"}
        click.echo(orjson.dumps(spec.model_dump(include=fields)).decode())


@main.command()
@config_option
def migrate(config: Path | None) -> None:
    """Bring the database schema to the newest version."""
    from inferd.store.db import Database

    settings = _settings(config)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url())
    asyncio.run(db.migrate())
    click.echo(f"migrated {db.dialect} database")


def _add_keys_group() -> None:
    from inferd.auth.cli import keys

    main.add_command(keys)


_add_keys_group()


def _add_images_group() -> None:
    from inferd.images_cli import images

    main.add_command(images)


_add_images_group()
