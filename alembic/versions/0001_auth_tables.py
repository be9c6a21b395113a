"""The TurboGears auth tables: users, groups, permissions and their two link tables.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # `created` has no server default on purpose: the models fill it with naive UTC in
    # Python, whereas a database `now()` would follow the server's time zone.
    op.create_table(
        "auth_user",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=16), nullable=False),
        sa.Column("email_address", sa.String(length=255), nullable=False),
        sa.Column("display_name", sa.String(length=255), nullable=True),
        sa.Column("password", sa.String(length=128), nullable=True),
        sa.Column("created", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_user")),
        sa.UniqueConstraint("email_address", name=op.f("uq_auth_user_email_address")),
        sa.UniqueConstraint("name", name=op.f("uq_auth_user_name")),
    )
    op.create_table(
        "auth_group",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=16), nullable=False),
        sa.Column("display_name", sa.String(length=255), nullable=True),
        sa.Column("created", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_group")),
        sa.UniqueConstraint("name", name=op.f("uq_auth_group_name")),
    )
    op.create_table(
        "auth_permission",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_permission")),
        sa.UniqueConstraint("name", name=op.f("uq_auth_permission_name")),
    )
    op.create_table(
        "auth_user_group",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["auth_user.id"],
            name=op.f("fk_auth_user_group_user_id_auth_user"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["auth_group.id"],
            name=op.f("fk_auth_user_group_group_id_auth_group"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "group_id", name=op.f("pk_auth_user_group")),
    )
    op.create_table(
        "auth_group_permission",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("permission_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["auth_group.id"],
            name=op.f("fk_auth_group_permission_group_id_auth_group"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["permission_id"],
            ["auth_permission.id"],
            name=op.f("fk_auth_group_permission_permission_id_auth_permission"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_id", "permission_id", name=op.f("pk_auth_group_permission")),
    )


def downgrade() -> None:
    op.drop_table("auth_group_permission")
    op.drop_table("auth_user_group")
    op.drop_table("auth_permission")
    op.drop_table("auth_group")
    op.drop_table("auth_user")
