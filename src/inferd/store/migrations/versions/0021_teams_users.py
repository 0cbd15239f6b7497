"""teams and users: keys belong to a team, a user or both; their limits span their keys

Revision ID: 0021
Revises: 0018

``teams`` (allowed models, requests and tokens per minute, a token budget, metadata),
``users`` (name, email, installation role, disabled flag, the same limits) and
``team_members`` (a user's role in a team: owner, member or viewer). ``api_keys`` gets
``team_id`` and ``user_id``. Existing keys keep working unchanged: each distinct ``team``
text becomes a team and each distinct ``owner`` text a user, the keys are linked to them,
the owner of a key with a team becomes a member of that team, and the owner of an admin
(auditor) key gets the admin (auditor) role, so every key keeps its scope. The downgrade drops the
links and the tables; the keys' ``owner`` and ``team`` texts stay as they were.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0019"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _limits() -> list[sa.Column[object]]:
    return [sa.Column("rpm", sa.Integer, nullable=True),
            sa.Column("tpm", sa.Integer, nullable=True),
            sa.Column("token_budget", sa.BigInteger, nullable=True),
            sa.Column("budget_period", sa.String(16), nullable=True)]


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(191), nullable=False),
        sa.Column("models", sa.JSON, nullable=True),
        *_limits(),
        sa.Column("extra", sa.JSON, nullable=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.UniqueConstraint("name", name="uq_teams_name"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "users",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(191), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("role", sa.String(16), nullable=True),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
        *_limits(),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.UniqueConstraint("name", name="uq_users_name"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "team_members",
        sa.Column("team_id", BigId, sa.ForeignKey("teams.id", ondelete="CASCADE",
                                                  name="fk_team_members_team_id_teams"),
                  primary_key=True),
        sa.Column("user_id", BigId, sa.ForeignKey("users.id", ondelete="CASCADE",
                                                  name="fk_team_members_user_id_users"),
                  primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("team_id", "user_id", name="pk_team_members"),
    )
    op.create_index("ix_team_members_user_id", "team_members", ["user_id"])
    op.add_column("api_keys", sa.Column("team_id", sa.BigInteger, nullable=True))
    op.add_column("api_keys", sa.Column("user_id", sa.BigInteger, nullable=True))
    op.create_index("ix_api_keys_team_id", "api_keys", ["team_id"])
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])
    _adopt_texts()


def _adopt_texts() -> None:
    """Each distinct ``team`` / ``owner`` text of the keys becomes a team / user (grouped by
    the database's own comparison, so the links below find exactly one row each)."""
    now = time.time()
    keys = sa.table("api_keys", sa.column("team"), sa.column("owner"), sa.column("scope"),
                    sa.column("team_id"), sa.column("user_id"))
    teams = sa.table("teams", sa.column("id"), sa.column("name"), sa.column("created_at"),
                     sa.column("updated_at"))
    users = sa.table("users", sa.column("id"), sa.column("name"), sa.column("disabled"),
                     sa.column("role"),
                     sa.column("created_at"), sa.column("updated_at"))
    members = sa.table("team_members", sa.column("team_id"), sa.column("user_id"),
                       sa.column("role"), sa.column("created_at"))
    stamp = sa.literal(now, sa.Double)
    op.execute(teams.insert().from_select(
        ["name", "created_at", "updated_at"],
        sa.select(sa.func.min(keys.c.team), stamp, stamp)
        .where(keys.c.team.is_not(None)).group_by(keys.c.team)))
    op.execute(users.insert().from_select(
        ["name", "disabled", "created_at", "updated_at"],
        sa.select(sa.func.min(keys.c.owner), sa.false(), stamp, stamp)
        .where(keys.c.owner.is_not(None)).group_by(keys.c.owner)))
    op.execute(keys.update().where(keys.c.team.is_not(None)).values(
        team_id=sa.select(teams.c.id).where(teams.c.name == keys.c.team)
        .scalar_subquery()))
    op.execute(keys.update().where(keys.c.owner.is_not(None)).values(
        user_id=sa.select(users.c.id).where(users.c.name == keys.c.owner)
        .scalar_subquery()))
    # A user's keys may not act above the user's role: the owner of an admin (auditor) key
    # gets that role, so that every key keeps its scope.
    for scope in ("auditor", "admin"):
        op.execute(users.update().where(users.c.id.in_(
            sa.select(keys.c.user_id).where(keys.c.scope == scope,
                                            keys.c.user_id.is_not(None))))
            .values(role=scope))
    op.execute(members.insert().from_select(
        ["team_id", "user_id", "role", "created_at"],
        sa.select(keys.c.team_id, keys.c.user_id, sa.literal("member"), stamp)
        .where(keys.c.team_id.is_not(None), keys.c.user_id.is_not(None))
        .group_by(keys.c.team_id, keys.c.user_id)))


def downgrade() -> None:
    op.drop_index("ix_api_keys_user_id", table_name="api_keys")
    op.drop_index("ix_api_keys_team_id", table_name="api_keys")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("user_id")
        batch.drop_column("team_id")
    op.drop_table("team_members")
    op.drop_table("users")
    op.drop_table("teams")
