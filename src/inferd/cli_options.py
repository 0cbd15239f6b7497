"""Command-line options and plumbing shared by ``inferd``'s command groups."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import orjson

if TYPE_CHECKING:
    from inferd.store.db import Database

T = TypeVar("T")

config_option = click.option("--config", "config", type=click.Path(path_type=Path),
                             default=None, help="YAML config file (also INFERD_CONFIG).")


def run_on_database(config: Path | None, work: Callable[[Database], Awaitable[T]]) -> T:
    """``work`` on the configured database, migrated first and closed after, acting as the
    command's user (``via: cli`` in the audit log). A bad setting or a refusal (an
    ``InferdError``) ends the command with its message, not a traceback."""
    from inferd.audit import acting_as, cli_actor
    from inferd.errors import InferdError
    from inferd.settings import load_settings
    from inferd.store.db import open_database

    try:
        settings = load_settings(config).storage
    except ValueError as exc:
        raise click.ClickException(f"invalid settings: {exc}") from exc

    async def main() -> T:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = open_database(settings)
        try:
            await db.migrate()
            with acting_as(cli_actor()):
                return await work(db)
        finally:
            await db.close()

    try:
        return asyncio.run(main())
    except InferdError as exc:
        raise click.ClickException(exc.message) from exc


def echo_json(data: Any) -> None:
    """``data`` as indented JSON on standard output."""
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def given_fields(values: dict[str, Any]) -> dict[str, Any]:
    """The options a command was given (None: not given); repeated ``--model`` options as
    the list ``models`` (left out when none was given)."""
    fields = {k: v for k, v in values.items() if v is not None and k != "models"}
    if values.get("models"):
        fields["models"] = list(values["models"])
    return fields
