"""Binary (code point) collation for text on PostgreSQL, and the indexes the queries need.

Sorting, keyset cursors and range filters compare text by code point on both backends;
on PostgreSQL that is COLLATE "C" on the columns, so plain btree indexes serve the
ORDER BY. The indexes: `created` and `display_name` (sort keys), and the reverse keys
of both junction tables (group -> users, permission -> groups; the primary keys
already serve the forward direction).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 08:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TEXT_COLUMNS = (
    ("auth_user", "name", 16, False),
    ("auth_user", "email_address", 255, False),
    ("auth_user", "display_name", 255, True),
    ("auth_group", "name", 16, False),
    ("auth_group", "display_name", 255, True),
    ("auth_permission", "name", 63, False),
    ("auth_permission", "description", 255, True),
)
INDEXES = (
    ("ix_auth_user_created", "auth_user", "created"),
    ("ix_auth_user_display_name", "auth_user", "display_name"),
    ("ix_auth_group_created", "auth_group", "created"),
    ("ix_auth_group_display_name", "auth_group", "display_name"),
    ("ix_auth_user_group_group_id", "auth_user_group", "group_id"),
    ("ix_auth_group_permission_permission_id", "auth_group_permission", "permission_id"),
)


def _set_collation(collation: str | None) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite already compares text as BINARY
    for table, column, length, nullable in TEXT_COLUMNS:
        op.alter_column(
            table,
            column,
            type_=sa.String(length, collation=collation),
            existing_type=sa.String(length),
            existing_nullable=nullable,
        )


def upgrade() -> None:
    _set_collation("C")
    for name, table, column in INDEXES:
        op.create_index(name, table, [column])


def downgrade() -> None:
    for name, table, _column in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    _set_collation("default")
