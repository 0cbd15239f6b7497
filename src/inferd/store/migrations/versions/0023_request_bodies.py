"""request bodies: a key's ``log_bodies`` and the bodies a request log record holds

Revision ID: 0023
Revises: 0022

``api_keys.log_bodies`` (off unless set): the request log keeps the request's and the answer's
bodies of that key's requests, in ``request_log.request_body`` and ``response_body`` (null for
every other request; on PostgreSQL added to the partitioned table, so to every partition).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

LongText = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("log_bodies", sa.Boolean, nullable=False,
                                        server_default=sa.false()))
    op.add_column("request_log", sa.Column("request_body", LongText, nullable=True))
    op.add_column("request_log", sa.Column("response_body", LongText, nullable=True))


def downgrade() -> None:
    op.drop_column("request_log", "response_body")
    op.drop_column("request_log", "request_body")
    op.drop_column("api_keys", "log_bodies")
