"""Indexes in the order of an ascending sort on a nullable column: `(col IS NULL, col, id)`.

An ascending sort puts NULLs last, so the rows after a keyset cursor are the larger values
and then every NULL: no range of a plain index on `col` holds them, and PostgreSQL used to
walk that index from its start, filtering, to reach a deep page. The service orders such a
sort by `col IS NULL, col, id` and compares `(col IS NULL, col, id) > (false, v, x)`, one
row comparison that these indexes answer as a range starting at the cursor.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 15:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NULLABLE_SORT_COLUMNS = (
    ("auth_user", "display_name"),
    ("auth_user", "created"),
    ("auth_group", "display_name"),
    ("auth_group", "created"),
    ("auth_permission", "description"),
)


def _name(table: str, column: str) -> str:
    return f"ix_{table}_{column}_nulls_last"


def upgrade() -> None:
    for table, column in NULLABLE_SORT_COLUMNS:
        op.create_index(_name(table, column), table, [sa.text(f"({column} IS NULL)"), column, "id"])


def downgrade() -> None:
    for table, column in reversed(NULLABLE_SORT_COLUMNS):
        op.drop_index(_name(table, column), table_name=table)
