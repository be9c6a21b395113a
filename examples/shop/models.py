"""The shop's ORM models, on a base of their own; no relationship ever loads lazily."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Named constraints and indexes, so a later migration tool can refer to them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """The shop's own base: the service serves every class mapped on it."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    """Naive UTC: the columns are `timestamp` without a zone, stored and compared as UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


class ProductStatus(enum.Enum):
    # Upper-case names, lower-case values: the database and the API hold the values.
    DRAFT = "draft"
    ACTIVE = "active"
    RETIRED = "retired"


def _enum_values(members: type[enum.Enum]) -> list[str]:
    return [str(member.value) for member in members]


# A plain junction table, not a class: the many-to-many link between products and tags.
product_tags = Table(
    "product_tags",
    Base.metadata,
    Column(
        "product_sku",
        String(16),
        ForeignKey("products.sku", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("tag_id", Integer, ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True),
    # The primary key serves product -> tags; this serves tag -> products.
    Index("ix_product_tags_tag_id", "tag_id"),
)


class Customer(Base):
    __tablename__ = "customers"
    __resource__ = "customers"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    handle: Mapped[str] = mapped_column(String(32), unique=True)
    email: Mapped[str] = mapped_column(String(255), unique=True, info={"private": True})
    password: Mapped[str | None] = mapped_column(String(128), info={"write_only": True})
    display_name: Mapped[str | None] = mapped_column(String(100))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created: Mapped[datetime] = mapped_column(
        DateTime, default=utcnow, index=True, info={"read_only": True}
    )
    internal_score: Mapped[int | None] = mapped_column(Integer, info={"hidden": True})

    # passive_deletes: the database's ON DELETE CASCADE removes the orders; without it the
    # ORM would load them first to delete them one by one (and lazy="raise" forbids that).
    orders: Mapped[list[Order]] = relationship(
        back_populates="customer", lazy="raise", passive_deletes=True
    )


class Category(Base):
    __tablename__ = "categories"
    __resource__ = "categories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)

    # The database's ON DELETE SET NULL detaches the products (see Customer.orders).
    products: Mapped[list[Product]] = relationship(
        back_populates="category", lazy="raise", passive_deletes=True
    )


class Product(Base):
    __tablename__ = "products"
    __resource__ = "products"

    # Client-given (the merchant's stock-keeping unit), never generated.
    sku: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2), index=True)
    weight_kg: Mapped[float | None] = mapped_column(Float)
    status: Mapped[ProductStatus] = mapped_column(
        Enum(ProductStatus, name="product_status", values_callable=_enum_values)
    )
    # none_as_null: a Python None is SQL NULL, not the JSON text 'null'.
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    released: Mapped[date | None] = mapped_column(Date)
    category_id: Mapped[int | None] = mapped_column(
        ForeignKey("categories.id", ondelete="SET NULL"), index=True
    )

    category: Mapped[Category | None] = relationship(back_populates="products", lazy="raise")
    # tag_ids is also the default name; spelled out so the rule's explicit form is in use.
    tags: Mapped[list[Tag]] = relationship(
        secondary=product_tags,
        back_populates="products",
        lazy="raise",
        passive_deletes=True,
        info={"ids_field": "tag_ids"},
    )


class Tag(Base):
    # No __resource__: the table name is the resource name.
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    label: Mapped[str] = mapped_column(String(30), unique=True)

    # The default would be product_ids; the keys are SKUs, so the body field says so.
    products: Mapped[list[Product]] = relationship(
        secondary=product_tags,
        back_populates="tags",
        lazy="raise",
        passive_deletes=True,
        info={"ids_field": "product_skus"},
    )


class Order(Base):
    __tablename__ = "orders"
    __resource__ = "orders"

    # SQLite autoincrements only an `INTEGER PRIMARY KEY` (a rowid alias), not BIGINT.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    customer_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    placed_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    total: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    paid: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[str | None] = mapped_column(Text)

    customer: Mapped[Customer] = relationship(back_populates="orders", lazy="raise")


class AuditEntry(Base):
    """Left out by the service with a start-up warning: its primary key is three columns.

    It sets no `__resource__`, so that is a warning and not a start-up failure.
    """

    __tablename__ = "audit_log"

    table_name: Mapped[str] = mapped_column(String(40), primary_key=True)
    row_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    action: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(DateTime, index=True)
    actor: Mapped[str | None] = mapped_column(String(32))
