"""The shop example: its tables, seed, relationships and cascades, on both backends."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import Table, delete, event, func, inspect, select, text
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import RelationshipDirection, selectinload

from examples.shop.__main__ import prepare
from examples.shop.models import (
    AuditEntry,
    Base,
    Category,
    Customer,
    Order,
    Product,
    ProductStatus,
    Tag,
    product_tags,
)
from examples.shop.seed import DEMO_PASSWORD, seed
from tests.conftest import DatabaseFactory

SMALL = {"customers": 8, "categories": 3, "products": 12, "tags": 5, "orders": 20, "passwords": 0}


@asynccontextmanager
async def open_engine(url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on `url` that enforces foreign keys on SQLite too, disposed on exit."""
    engine = create_async_engine(url)
    if engine.dialect.name == "sqlite":
        # SQLite ignores REFERENCES ... ON DELETE unless each connection turns it on.
        @event.listens_for(engine.sync_engine, "connect")
        def _foreign_keys(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("PRAGMA foreign_keys=ON")

    try:
        yield engine
    finally:
        await engine.dispose()


async def create_shop(url: str, **sizes: int) -> None:
    async with open_engine(url) as engine:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        await seed(engine, **sizes)


@pytest.fixture(scope="module")
async def shop_url(databases: DatabaseFactory) -> str:
    """One shop seeded with the default sizes per backend, shared by tests that only read."""
    url = await databases.empty()
    await create_shop(url)
    return url


@pytest.fixture
async def small_shop(databases: DatabaseFactory) -> AsyncIterator[AsyncEngine]:
    """A fresh small shop for one test that deletes."""
    url = await databases.empty()
    await create_shop(url, **SMALL)
    async with open_engine(url) as engine:
        yield engine


async def count(engine: AsyncEngine, table: Any, *where: Any) -> int:
    """How many rows of `table` match `where`."""
    async with engine.connect() as connection:
        rows = await connection.scalar(select(func.count()).select_from(table).where(*where))
    assert rows is not None
    return rows


def test_the_mappers_say_what_the_readme_says() -> None:
    """The SPEC rules the schema exercises, as the service will read them off the mappers."""
    kinds = {
        (Customer, "orders"): RelationshipDirection.ONETOMANY,
        (Order, "customer"): RelationshipDirection.MANYTOONE,
        (Category, "products"): RelationshipDirection.ONETOMANY,
        (Product, "category"): RelationshipDirection.MANYTOONE,
        (Product, "tags"): RelationshipDirection.MANYTOMANY,
        (Tag, "products"): RelationshipDirection.MANYTOMANY,
    }
    for (model, name), direction in kinds.items():
        relationship = inspect(model).relationships[name]
        assert relationship.direction is direction, (model, name)
        assert relationship.lazy == "raise", (model, name)
    assert inspect(Product).relationships["tags"].secondary is product_tags
    assert inspect(Product).relationships["tags"].info == {"ids_field": "tag_ids"}
    assert inspect(Tag).relationships["products"].info == {"ids_field": "product_skus"}
    markers = {column.key: column.info for column in Customer.__table__.columns if column.info}
    assert markers == {
        "email": {"private": True},
        "password": {"write_only": True},
        "created": {"read_only": True},
        "internal_score": {"hidden": True},
    }
    assert [c.key for c in inspect(AuditEntry).primary_key] == ["table_name", "row_key", "version"]
    assert "__resource__" not in vars(Tag)
    assert "__resource__" not in vars(AuditEntry)


async def test_the_seed_fills_every_table(shop_url: str) -> None:
    async with open_engine(shop_url) as engine:
        sizes = {Customer: 50, Category: 8, Tag: 15, Product: 120, Order: 300}
        for model, expected in sizes.items():
            assert await count(engine, model) == expected, model
        assert await count(engine, product_tags) > 100
        # One entry per customer and per order, and one more per paid order.
        paid = await count(engine, Order, Order.paid)
        assert await count(engine, AuditEntry) == 50 + 300 + paid
        assert await count(engine, Product, Product.category_id.is_(None)) > 0
        untagged = ~select(product_tags).where(product_tags.c.product_sku == Product.sku).exists()
        assert await count(engine, Product, untagged) > 0
        assert await count(engine, Customer, ~Customer.orders.any()) > 0
        async with engine.connect() as connection:
            statuses = set(await connection.scalars(select(Product.status).distinct()))
            largest = await connection.scalar(select(func.max(Order.total)))
            names = list(await connection.scalars(select(Customer.display_name)))
        assert statuses == set(ProductStatus)
        assert largest == Decimal("1234567890.12")  # every stored digit comes back
        assert any(name and not name.isascii() for name in names)


async def test_every_nullable_column_holds_both_null_and_a_value(shop_url: str) -> None:
    async with open_engine(shop_url) as engine:
        for table in Base.metadata.sorted_tables:
            for column in table.columns:
                if not column.nullable:
                    continue
                where = f"{table.name}.{column.name}"
                assert await count(engine, table, column.is_(None)) > 0, where
                assert await count(engine, table, column.is_not(None)) > 0, where


async def test_passwords_are_argon2id_hashes_or_null(shop_url: str) -> None:
    async with open_engine(shop_url) as engine, engine.connect() as connection:
        stored = list(await connection.scalars(select(Customer.password)))
    hashes = [value for value in stored if value is not None]
    assert len(hashes) == 3
    assert all(h.startswith("$argon2id$") for h in hashes)
    assert PasswordHasher().verify(hashes[0], DEMO_PASSWORD)


async def test_enum_columns_store_the_values(shop_url: str) -> None:
    async with open_engine(shop_url) as engine, engine.connect() as connection:
        stored = set(await connection.scalars(text("SELECT DISTINCT status FROM products")))
    assert stored == {"draft", "active", "retired"}


async def test_relationships_load_with_selectinload_and_never_lazily(shop_url: str) -> None:
    async with open_engine(shop_url) as engine, AsyncSession(engine) as session:
        customers = (
            await session.scalars(select(Customer).options(selectinload(Customer.orders)))
        ).all()
        assert sum(len(c.orders) for c in customers) == 300
        assert all(o.customer_id == c.id for c in customers for o in c.orders)

        products = (
            await session.scalars(
                select(Product).options(selectinload(Product.category), selectinload(Product.tags))
            )
        ).all()
        links = await count(engine, product_tags)
        assert sum(len(p.tags) for p in products) == links
        assert all((p.category is None) == (p.category_id is None) for p in products)

        tags = (await session.scalars(select(Tag).options(selectinload(Tag.products)))).all()
        assert sum(len(t.products) for t in tags) == links
        categories = (
            await session.scalars(select(Category).options(selectinload(Category.products)))
        ).all()
        assert sum(len(c.products) for c in categories) == await count(
            engine, Product, Product.category_id.is_not(None)
        )
        order = await session.scalar(
            select(Order).options(selectinload(Order.customer)).where(Order.id == 1)
        )
        assert order is not None
        assert isinstance(order.customer.id, uuid.UUID)
    # What was not loaded raises instead of running a query behind the caller's back. (A new
    # session: the one above holds every relationship loaded in its identity map.)
    async with open_engine(shop_url) as engine, AsyncSession(engine) as session:
        order = await session.get_one(Order, 1)
        product = await session.scalar(select(Product).limit(1))
        assert product is not None
        owners: tuple[tuple[object, str], ...] = (
            (order, "customer"),
            (product, "tags"),
            (product, "category"),
        )
        for owner, name in owners:
            with pytest.raises(InvalidRequestError, match="lazy='raise'"):
                getattr(owner, name)


async def test_deleting_a_customer_deletes_its_orders(small_shop: AsyncEngine) -> None:
    buyers = select(Order.customer_id).distinct().order_by(Order.customer_id).limit(2)
    async with small_shop.connect() as connection:
        first, second = list(await connection.scalars(buyers))
    assert await count(small_shop, Order, Order.customer_id == first) > 0
    # Through the ORM: passive_deletes leaves the unloaded orders to the database.
    async with AsyncSession(small_shop) as session:
        await session.delete(await session.get_one(Customer, first))
        await session.commit()
    async with small_shop.begin() as connection:
        await connection.execute(delete(Customer).where(Customer.id == second))
    assert await count(small_shop, Order, Order.customer_id.in_([first, second])) == 0
    assert await count(small_shop, Order) > 0


async def test_deleting_a_category_detaches_its_products(small_shop: AsyncEngine) -> None:
    in_use = select(Category.id).where(Category.products.any()).order_by(Category.id)
    async with small_shop.connect() as connection:
        used = list(await connection.scalars(in_use))
    assert len(used) >= 2
    before = await count(small_shop, Product)
    async with AsyncSession(small_shop) as session:
        await session.delete(await session.get_one(Category, used[0]))
        await session.commit()
    async with small_shop.begin() as connection:
        await connection.execute(delete(Category).where(Category.id == used[1]))
    assert await count(small_shop, Product, Product.category_id.in_(used[:2])) == 0
    assert await count(small_shop, Product) == before  # detached, not deleted


async def test_deleting_a_product_deletes_its_tag_links(small_shop: AsyncEngine) -> None:
    tagged = select(product_tags.c.product_sku).distinct().order_by(product_tags.c.product_sku)
    async with small_shop.connect() as connection:
        first, second = list(await connection.scalars(tagged.limit(2)))
    tags_before = await count(small_shop, Tag)
    async with AsyncSession(small_shop) as session:
        await session.delete(await session.get_one(Product, first))
        await session.commit()
    async with small_shop.begin() as connection:
        await connection.execute(delete(Product).where(Product.sku == second))
    assert (
        await count(small_shop, product_tags, product_tags.c.product_sku.in_([first, second])) == 0
    )
    assert await count(small_shop, Tag) == tags_before


async def all_rows(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    rows: dict[str, list[tuple[Any, ...]]] = {}
    async with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            assert isinstance(table, Table)
            ordered = select(table).order_by(*table.primary_key.columns)
            rows[table.name] = [tuple(row) for row in await connection.execute(ordered)]
    return rows


async def test_main_seeds_once_and_the_seed_is_deterministic(
    databases: DatabaseFactory, shop_url: str
) -> None:
    url = await databases.empty()
    assert await prepare(url) is True
    assert await prepare(url) is False  # tables exist and hold rows: left alone
    async with open_engine(url) as fresh, open_engine(shop_url) as shared:
        assert await all_rows(fresh) == await all_rows(shared)


async def test_new_rows_get_fresh_keys_after_the_seed(small_shop: AsyncEngine) -> None:
    """The seed writes explicit ids; the sequences (PostgreSQL) must have moved past them."""
    async with AsyncSession(small_shop, expire_on_commit=False) as session:
        customer = Customer(handle="newcomer", email="newcomer@example.com")
        category, tag = Category(name="Neu im Sortiment"), Tag(label="brand-new")
        session.add_all([customer, category, tag])
        await session.flush()
        order = Order(customer_id=customer.id, placed_at=customer.created, total=Decimal("9.90"))
        session.add(order)
        await session.commit()
    assert isinstance(customer.id, uuid.UUID)
    assert (category.id, tag.id, order.id) == (
        SMALL["categories"] + 1,
        SMALL["tags"] + 1,
        SMALL["orders"] + 1,
    )
    assert customer.is_active is True
    assert order.paid is False
