"""ORM models for the TurboGears auth tables; every relationship raises instead of lazy-loading.

They are the service's default schema, served by the same rules as anyone's own models
(SPEC, "Your own models"): `__resource__` names each resource, column `info` marks what is
private, write-only or set by the server, and the attribute order is the response order.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, ForeignKey, Index, Integer, String, Table
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.db import Base


def text_column(length: int) -> String:
    """varchar(n) compared by code point: COLLATE "C" on PostgreSQL, SQLite's default BINARY.

    Sorts, keyset cursors and range filters then agree on both backends, and plain
    indexes serve `ORDER BY` on PostgreSQL with no per-query COLLATE.
    """
    return String(length).with_variant(String(length, collation="C"), "postgresql")


def utcnow() -> datetime:
    """Naive UTC: the columns are `timestamp` without a zone, stored and compared as UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


user_group = Table(
    "auth_user_group",
    Base.metadata,
    Column("user_id", Integer, ForeignKey("auth_user.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", Integer, ForeignKey("auth_group.id", ondelete="CASCADE"), primary_key=True),
    # The primary key serves user -> groups; this serves group -> users.
    Index("ix_auth_user_group_group_id", "group_id"),
)

group_permission = Table(
    "auth_group_permission",
    Base.metadata,
    Column("group_id", Integer, ForeignKey("auth_group.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "permission_id",
        Integer,
        ForeignKey("auth_permission.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Index("ix_auth_group_permission_permission_id", "permission_id"),
)


SERVER_SET = {"read_only": True}


class User(Base):
    __tablename__ = "auth_user"
    __resource__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(text_column(16), unique=True)
    display_name: Mapped[str | None] = mapped_column(text_column(255), index=True)
    created: Mapped[datetime | None] = mapped_column(
        DateTime, default=utcnow, index=True, info=SERVER_SET
    )
    email_address: Mapped[str] = mapped_column(
        text_column(255), unique=True, info={"private": True, "format": "email"}
    )
    password: Mapped[str | None] = mapped_column(String(128), info={"write_only": True})

    groups: Mapped[list[Group]] = relationship(
        secondary=user_group,
        back_populates="users",
        order_by="Group.id",
        lazy="raise",
        passive_deletes=True,
    )


class Group(Base):
    __tablename__ = "auth_group"
    __resource__ = "groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(text_column(16), unique=True)
    display_name: Mapped[str | None] = mapped_column(text_column(255), index=True)
    created: Mapped[datetime | None] = mapped_column(
        DateTime, default=utcnow, index=True, info=SERVER_SET
    )

    users: Mapped[list[User]] = relationship(
        secondary=user_group,
        back_populates="groups",
        order_by="User.id",
        lazy="raise",
        passive_deletes=True,
    )
    permissions: Mapped[list[Permission]] = relationship(
        secondary=group_permission,
        back_populates="groups",
        order_by="Permission.id",
        lazy="raise",
        passive_deletes=True,
    )


class Permission(Base):
    __tablename__ = "auth_permission"
    __resource__ = "permissions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(text_column(63), unique=True)
    description: Mapped[str | None] = mapped_column(text_column(255))

    groups: Mapped[list[Group]] = relationship(
        secondary=group_permission,
        back_populates="permissions",
        order_by="Group.id",
        lazy="raise",
        passive_deletes=True,
    )


# In the order of an ascending sort on a nullable column (NULLs last), so a keyset cursor
# enters them at its row (service/query/options.py; migration 0003).
for _model, _column in (
    (User, User.display_name),
    (User, User.created),
    (Group, Group.display_name),
    (Group, Group.created),
    (Permission, Permission.description),
):
    Index(
        f"ix_{_model.__tablename__}_{_column.key}_nulls_last",
        _column.is_(None),
        _column,
        _model.id,
    )
