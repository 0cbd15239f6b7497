"""``inferd teams ...`` and ``inferd users ...``: manage teams, users and membership straight
in the database.

Running gateways apply a change to the affected keys within their key refresh interval (the
key feed). Every change is recorded in the audit log as the command's (``via: cli``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from inferd.audit import AuditLog
from inferd.auth.teams import (
    MemberSpec,
    Page,
    TeamAdmin,
    TeamSpec,
    TeamUpdate,
    UserSpec,
    UserUpdate,
    View,
)
from inferd.cli_options import config_option, echo_json, given_fields, run_on_database
from inferd.store.audit import AuditStore
from inferd.store.teams import TeamStore

T = TypeVar("T")
PAGE = 1000  # rows read at a time by the list commands


def _run(config: Path | None, work: Callable[[TeamAdmin], Awaitable[T]]) -> T:
    return run_on_database(
        config, lambda db: work(TeamAdmin(TeamStore(db), audit=AuditLog(AuditStore(db)))))


def _limit_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--rpm", type=int, default=None,
                     help="Requests per minute, across all the keys."),
        click.option("--tpm", type=int, default=None, help="Tokens per minute, likewise."),
        click.option("--budget", "token_budget", type=int, default=None,
                     help="Token budget (in total, or per --budget-period), likewise."),
        click.option("--budget-period", type=click.Choice(["day", "week", "month"]),
                     default=None),
        click.option("--max-budget", type=float, default=None,
                     help="Money budget in the price book's currency (in total, or per "
                          "--budget-period), likewise."),
        click.option("--budget-alert", type=int, default=None,
                     help="Percentage of the money budget at which a warning is logged "
                          "(default 80)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _list(config: Path | None, after: int | None, limit: int | None,
          read: Callable[[TeamAdmin, int | None, int], Awaitable[Page[View]]]) -> None:
    async def pages(admin: TeamAdmin) -> None:
        cursor, left = after, limit
        while left is None or left > 0:
            page = await read(admin, cursor, min(PAGE, left or PAGE))
            for row in page["data"]:
                click.echo(orjson.dumps(row).decode())
            if left is not None:
                left -= len(page["data"])
            if not page["has_more"]:
                break
            cursor = page["last_id"]

    _run(config, pages)


def _page_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--limit", type=click.IntRange(min=1), default=None,
                        help="At most this many (default: all, a page at a time).")(func)
    return click.option("--after", type=int, default=None, help="After this id.")(func)


# -- teams ----------------------------------------------------------------------------------------
@click.group("teams")
def teams() -> None:
    """Create, list, change and delete teams and their members."""


@teams.command("create")
@config_option
@click.argument("name")
@click.option("--model", "models", multiple=True,
              help="A model the team's keys may use (repeatable; default: every model).")
@_limit_options
@click.option("--queue-weight", type=float, default=None,
              help="Weight among teams in the gateway's fair queueing (default 1).")
def create_team(config: Path | None, name: str, **values: Any) -> None:
    """Create a team."""
    spec = TeamSpec.model_validate({"name": name, **given_fields(values)})
    echo_json(_run(config, lambda admin: admin.create_team(spec)))


@teams.command("list")
@config_option
@click.option("--search", default=None, help="In the name.")
@_page_options
def list_teams(config: Path | None, after: int | None, limit: int | None,
               search: str | None) -> None:
    """List teams by id, one JSON line each."""
    _list(config, after, limit,
          lambda admin, cursor, size: admin.team_page(after=cursor, limit=size, search=search))


@teams.command("get")
@config_option
@click.argument("team_id", type=int)
def get_team(config: Path | None, team_id: int) -> None:
    """Show a team."""
    echo_json(_run(config, lambda admin: admin.get_team(team_id)))


@teams.command("update")
@config_option
@click.argument("team_id", type=int)
@click.option("--name", default=None)
@click.option("--model", "models", multiple=True, help="A model the team's keys may use.")
@click.option("--all-models", is_flag=True, help="Lift the team's model allow-list.")
@_limit_options
@click.option("--queue-weight", type=float, default=None,
              help="Weight among teams in the gateway's fair queueing (default 1).")
def update_team(config: Path | None, team_id: int, all_models: bool, **values: Any) -> None:
    """Change a team's name, models or limits (options given only)."""
    fields = given_fields(values)
    if all_models:
        fields["models"] = None
    change = TeamUpdate.model_validate(fields)
    echo_json(_run(config, lambda admin: admin.update_team(team_id, change)))


@teams.command("delete")
@config_option
@click.argument("team_id", type=int)
def delete_team(config: Path | None, team_id: int) -> None:
    """Delete a team that has no keys."""
    _run(config, lambda admin: admin.delete_team(team_id))
    click.echo(f"deleted team {team_id}")


@teams.command("members")
@config_option
@click.argument("team_id", type=int)
@_page_options
def members(config: Path | None, team_id: int, after: int | None, limit: int | None) -> None:
    """List a team's members by user id, one JSON line each."""
    _list(config, after, limit,
          lambda admin, cursor, size: admin.members(team_id, after=cursor, limit=size))


@teams.command("add-member")
@config_option
@click.argument("team_id", type=int)
@click.argument("user_id", type=int)
@click.option("--role", type=click.Choice(["owner", "member", "viewer"]), default="member")
def add_member(config: Path | None, team_id: int, user_id: int, role: str) -> None:
    """Add a user to a team, or change their role in it."""
    spec = MemberSpec.model_validate({"role": role})
    echo_json(_run(config, lambda admin: admin.set_member(team_id, user_id, spec)))


@teams.command("remove-member")
@config_option
@click.argument("team_id", type=int)
@click.argument("user_id", type=int)
def remove_member(config: Path | None, team_id: int, user_id: int) -> None:
    """Take a user out of a team (refused while they hold its keys)."""
    _run(config, lambda admin: admin.remove_member(team_id, user_id))
    click.echo(f"removed user {user_id} from team {team_id}")


# -- users ----------------------------------------------------------------------------------------
@click.group("users")
def users() -> None:
    """Create, list, change, disable and delete users."""


@users.command("create")
@config_option
@click.argument("name")
@click.option("--email", default=None)
@click.option("--role", type=click.Choice(["admin", "auditor"]), default=None,
              help="The installation role (caps the scope of the user's keys).")
@_limit_options
def create_user(config: Path | None, name: str, **values: Any) -> None:
    """Create a user."""
    spec = UserSpec.model_validate({"name": name, **given_fields(values)})
    echo_json(_run(config, lambda admin: admin.create_user(spec)))


@users.command("list")
@config_option
@click.option("--search", default=None, help="In the name or email.")
@_page_options
def list_users(config: Path | None, after: int | None, limit: int | None,
               search: str | None) -> None:
    """List users by id, one JSON line each."""
    _list(config, after, limit,
          lambda admin, cursor, size: admin.user_page(after=cursor, limit=size, search=search))


@users.command("get")
@config_option
@click.argument("user_id", type=int)
def get_user(config: Path | None, user_id: int) -> None:
    """Show a user."""
    echo_json(_run(config, lambda admin: admin.get_user(user_id)))


@users.command("update")
@config_option
@click.argument("user_id", type=int)
@click.option("--name", default=None)
@click.option("--email", default=None)
@click.option("--role", type=click.Choice(["admin", "auditor", "none"]), default=None,
              help="The installation role (none: no role).")
@click.option("--enable/--disable", "enabled", default=None,
              help="A disabled user's keys stop working.")
@_limit_options
def update_user(config: Path | None, user_id: int, role: str | None, enabled: bool | None,
                **values: Any) -> None:
    """Change a user (options given only)."""
    fields = given_fields(values)
    if role is not None:
        fields["role"] = None if role == "none" else role
    if enabled is not None:
        fields["disabled"] = not enabled
    change = UserUpdate.model_validate(fields)
    echo_json(_run(config, lambda admin: admin.update_user(user_id, change)))


@users.command("delete")
@config_option
@click.argument("user_id", type=int)
def delete_user(config: Path | None, user_id: int) -> None:
    """Delete a user who has no keys."""
    _run(config, lambda admin: admin.delete_user(user_id))
    click.echo(f"deleted user {user_id}")
