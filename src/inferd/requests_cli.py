"""``inferd requests ...``: read the request log straight from the database."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from inferd.cli_options import config_option
from inferd.settings import load_settings

if TYPE_CHECKING:
    from inferd.reqlog import RequestPage


def _status(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    from inferd.reqlog import status_range

    if value is None:
        return None
    statuses = status_range(value)
    if statuses is None:
        raise click.BadParameter("a status (429), a class (5xx) or 'error'")
    return statuses


def _cursor(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    from inferd.reqlog import parse_cursor

    if value is None:
        return None
    cursor = parse_cursor(value)
    if cursor is None:
        raise click.BadParameter("not a cursor a page gave (next_cursor)")
    return cursor


def filter_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--from", "since", type=float, default=None,
                     help="Epoch seconds (inclusive)."),
        click.option("--to", "until", type=float, default=None,
                     help="Epoch seconds (exclusive)."),
        click.option("--key", "key_id", default=None, help="The key's id."),
        click.option("--model", default=None),
        click.option("--status", default=None, callback=_status,
                     help="A status (429), a class (4xx, 5xx) or 'error' (from 400)."),
        click.option("--error", default=None, help="An error code (rate_limit_exceeded)."),
        click.option("--request-id", default=None),
        click.option("--min-latency-ms", type=click.FloatRange(0), default=None),
        click.option("--user", "user_id", type=click.IntRange(1), default=None,
                     help="A user's id: the requests of its keys."),
        click.option("--team", "team_id", type=click.IntRange(1), default=None,
                     help="A team's id: the requests of its keys."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group("requests")
def requests() -> None:
    """Read the request log: one record per request (docs/operating/requests.md)."""


@requests.command("list")
@config_option
@filter_options
@click.option("--limit", type=click.IntRange(1, 1000), default=50)
@click.option("--cursor", default=None, callback=_cursor,
              help="The next_cursor of the previous page.")
def list_command(config: Path | None, limit: int, cursor: Any, status: Any,
                 **values: Any) -> None:
    """A page of requests, newest first, as JSON (``has_more``, ``next_cursor`` for the
    next)."""
    from inferd.reqlog import RequestLog, RequestQuery
    from inferd.store.db import open_database
    from inferd.store.request_log import RequestLogStore

    try:
        settings = load_settings(config).storage
    except ValueError as exc:
        raise click.ClickException(f"invalid settings: {exc}") from exc
    status_from, status_to = status or (None, None)
    query = RequestQuery(status_from=status_from, status_to=status_to, **values)

    async def main() -> RequestPage:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = open_database(settings)
        try:
            await db.migrate()
            log = RequestLog(RequestLogStore(db), None)
            return await log.page(query, cursor=cursor, limit=limit)
        finally:
            await db.close()

    page = asyncio.run(main())
    click.echo(orjson.dumps(page, option=orjson.OPT_INDENT_2).decode())
