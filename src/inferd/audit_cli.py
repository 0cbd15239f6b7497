"""``inferd audit ...``: read the audit log straight from the database (as an auditor would)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import orjson

from inferd.cli_options import config_option, echo_json, run_on_database

if TYPE_CHECKING:
    from inferd.audit import AuditLog, AuditQuery

T = TypeVar("T")


def filter_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--since", type=float, default=None, help="Epoch seconds (inclusive)."),
        click.option("--until", type=float, default=None, help="Epoch seconds (exclusive)."),
        click.option("--actor", default=None, help="The acting key's id."),
        click.option(
            "--action",
            default=None,
            help="An action (key.create), or a prefix ending in '.' (key.).",
        ),
        click.option("--object-type", default=None, help="api_key, model, replica, ..."),
        click.option("--object-id", default=None),
        click.option("--request-id", default=None),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run(config: Path | None, work: Callable[[AuditLog], Awaitable[T]]) -> T:
    from inferd.audit import AuditLog
    from inferd.store.audit import AuditStore

    return run_on_database(config, lambda db: work(AuditLog(AuditStore(db))))


def _query(
    *,
    since: float | None,
    until: float | None,
    actor: str | None,
    action: str | None,
    object_type: str | None,
    object_id: str | None,
    request_id: str | None,
) -> AuditQuery:
    """The events the options (``filter_options``) ask for."""
    from inferd.audit import AuditQuery

    return AuditQuery(
        since=since,
        until=until,
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=object_id,
        request_id=request_id,
    )


@click.group("audit")
def audit() -> None:
    """Read the audit log: every change of the control plane."""


@audit.command("list")
@config_option
@filter_options
@click.option("--limit", type=click.IntRange(1, 1000), default=100)
@click.option(
    "--after", type=click.IntRange(1), default=None, help="The last id of the previous page."
)
def list_command(config: Path | None, limit: int, after: int | None, **values: Any) -> None:
    """A page of events, newest first, as JSON (``has_more``, ``last_id`` for the next)."""
    page = _run(config, lambda log: log.page(_query(**values), after=after, limit=limit))
    echo_json(page)


@audit.command("export")
@config_option
@filter_options
def export_command(config: Path | None, **values: Any) -> None:
    """Every matching event as JSON lines, newest first."""

    async def work(log: AuditLog) -> int:
        count = 0
        async for event in log.export(_query(**values)):
            click.echo(orjson.dumps(event).decode())
            count += 1
        return count

    _run(config, work)
