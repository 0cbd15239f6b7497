"""``inferd keys ...``: manage API keys straight in the database.

Running gateways see a change within their key refresh interval (``INFERD_KEY_REFRESH_SECONDS``).
Every change is recorded in the audit log as the command's (``via: cli``, the OS user).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from inferd.audit import AuditLog
from inferd.auth.admin import KeyAdmin, KeySpec, KeyUpdate
from inferd.cli_options import config_option, echo_json, given_fields, run_on_database
from inferd.store.audit import AuditStore
from inferd.store.keys import KeyStore

T = TypeVar("T")
PAGE = 1000  # keys read at a time by ``inferd keys list``


def _run(config: Path | None, work: Callable[[KeyAdmin], Awaitable[T]]) -> T:
    return run_on_database(
        config, lambda db: work(KeyAdmin(KeyStore(db), audit=AuditLog(AuditStore(db)))))


def limit_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--name", default=None),
        click.option("--owner", default=None, help="Who the key belongs to."),
        click.option("--team", default=None),
        click.option("--team-id", type=int, default=None,
                     help="The team the key belongs to (see inferd teams)."),
        click.option("--user-id", type=int, default=None,
                     help="The user the key belongs to (see inferd users)."),
        click.option("--model", "models", multiple=True,
                     help="A model the key may use (repeatable; default: every model)."),
        click.option("--rpm", type=int, default=None, help="Requests per minute."),
        click.option("--tpm", type=int, default=None, help="Tokens per minute."),
        click.option("--ipm", type=int, default=None, help="Images per minute."),
        click.option("--upm", type=int, default=None,
                     help="Image units (steps x megapixels x images) per minute."),
        click.option("--image-budget", type=int, default=None,
                     help="Image units in total, or per --budget-period."),
        click.option("--storage-bytes", type=int, default=None,
                     help="Storage quota in bytes (default: INFERD_STORAGE_QUOTA_BYTES)."),
        click.option("--storage-objects", type=int, default=None,
                     help="Storage quota in objects (default: INFERD_STORAGE_QUOTA_OBJECTS)."),
        click.option("--budget", "token_budget", type=int, default=None,
                     help="Token budget (in total, or per --budget-period)."),
        click.option("--budget-period", type=click.Choice(["day", "week", "month"]),
                     default=None),
        click.option("--max-budget", type=float, default=None,
                     help="Money budget in the price book's currency (in total, or per "
                          "--budget-period)."),
        click.option("--budget-alert", type=int, default=None,
                     help="Percentage of the money budget at which a warning is logged "
                          "(default 80)."),
        click.option("--expires-at", type=float, default=None, help="Epoch seconds."),
        click.option("--log-bodies/--no-log-bodies", default=None,
                     help="Keep the request and answer bodies in the request log."),
        click.option("--queue-weight", type=float, default=None,
                     help="Weight among its team's keys (or alone, without a team) in the "
                          "gateway's fair queueing (default: queue_weights, else 1)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group("keys")
def keys() -> None:
    """Create, list, change and revoke API keys."""


@keys.command("create")
@config_option
@limit_options
@click.option("--scope", type=click.Choice(["user", "admin", "auditor", "scim"]), default="user")
@click.option("--expires-in", type=float, default=None, help="Seconds from now.")
def create(config: Path | None, **values: Any) -> None:
    """Create a key and print it (the key is shown only this once)."""
    spec = KeySpec.model_validate(given_fields(values))
    echo_json(_run(config, lambda admin: admin.create(spec)))


@keys.command("list")
@config_option
@click.option("--owner", default=None, help="Only this owner's keys.")
@click.option("--team", default=None, help="Only this team's keys.")
@click.option("--team-id", type=int, default=None, help="Only the keys of this team id.")
@click.option("--user-id", type=int, default=None, help="Only the keys of this user id.")
@click.option("--name", default=None, help="Names starting with this.")
@click.option("--prefix", default=None, help="Display prefixes starting with this.")
@click.option("--search", default=None, help="In the name, owner, team or prefix.")
@click.option("--after", type=int, default=None, help="Keys after this id.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="At most this many keys (default: all, read a page at a time).")
def list_keys(config: Path | None, after: int | None, limit: int | None,
              **search: Any) -> None:
    """List keys by id, one JSON line each (never the keys themselves)."""

    async def pages(admin: KeyAdmin) -> None:
        cursor, left = after, limit
        while left is None or left > 0:
            page = await admin.page(after=cursor, limit=min(PAGE, left or PAGE), **search)
            for row in page["data"]:
                click.echo(orjson.dumps(row).decode())
            if left is not None:
                left -= len(page["data"])
            if not page["has_more"]:
                break
            cursor = page["last_id"]

    _run(config, pages)


@keys.command("get")
@config_option
@click.argument("key_id", type=int)
def get(config: Path | None, key_id: int) -> None:
    echo_json(_run(config, lambda admin: admin.get(key_id)))


@keys.command("update")
@config_option
@limit_options
@click.option("--scope", type=click.Choice(["user", "admin", "auditor", "scim"]), default=None)
@click.option("--enable/--disable", "enabled", default=None)
@click.option("--all-models", is_flag=True, help="Lift the model allow-list.")
@click.argument("key_id", type=int)
def update(config: Path | None, key_id: int, all_models: bool, **values: Any) -> None:
    """Change a key's limits, models, scope or expiry (options given only)."""
    fields = given_fields(values)
    if all_models:
        fields["models"] = None
    change = KeyUpdate.model_validate(fields)
    echo_json(_run(config, lambda admin: admin.update(key_id, change)))


@keys.command("revoke")
@config_option
@click.argument("key_id", type=int)
def revoke(config: Path | None, key_id: int) -> None:
    """Disable a key (it stops working within seconds; its usage stays)."""
    echo_json(_run(config, lambda admin: admin.disable(key_id)))


@keys.command("delete")
@config_option
@click.argument("key_id", type=int)
def delete(config: Path | None, key_id: int) -> None:
    """Delete a key for good."""
    _run(config, lambda admin: admin.delete(key_id))
    click.echo(f"deleted key {key_id}")
