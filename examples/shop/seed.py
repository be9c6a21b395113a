"""Deterministic demo data for the shop: every table, every type, NULLs and non-ASCII text.

The same sizes and seed give the same rows on every backend. Row 1 of each table fills
every nullable column and row 2 leaves every one NULL, so even a tiny seed holds both;
the rest are drawn from a fixed `random.Random(seed)`. argon2id is deliberately slow,
so only a few customers get a password hash (salted from the same generator, so the
hashes repeat too); the others have none.
"""

from __future__ import annotations

import asyncio
import random
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from argon2 import PasswordHasher, Type
from sqlalchemy import Table, exists, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from examples.shop.models import (
    AuditEntry,
    Category,
    Customer,
    Order,
    Product,
    ProductStatus,
    Tag,
    product_tags,
)

DEFAULT_SEED = 2024
DEMO_PASSWORD = "correct horse battery staple"
NULL_SHARE = 0.15
CENT = Decimal("0.01")

START = datetime(2019, 1, 1)
END = datetime(2026, 1, 1)

# (name, SKU prefix); categories beyond these are generated.
CATEGORIES = (
    ("Coffee", "COF"),
    ("Tea & Infusions", "TEA"),
    ("Kitchen", "KIT"),
    ("Books", "BOK"),
    ("Épicerie fine", "EPI"),
    ("Spielwaren", "SPW"),
    ("Garden", "GRD"),
    ("日用品", "NIC"),
    ("Stationery", "STA"),
    ("Home & Living", "HOM"),
)
TAGS = (
    "organic", "fair-trade", "gift idea", "bestseller", "new", "vegan", "handmade", "local",
    "sale", "für Kinder", "édition spéciale", "gluten-free", "award-winning", "seasonal",
    "refurbished", "limited edition", "bio-zertifiziert", "eco",
)  # fmt: skip
ADJECTIVES = (
    "Classic", "Organic", "Handmade", "Large", "Mini", "Premium", "Rustic", "Smoky",
    "Hand-painted", "Nordic", "Große", "Petit",
)  # fmt: skip
NOUNS = (
    "Espresso Blend", "Teapot", "Chef's Knife", "Notebook", "Watering Can", "Puzzle",
    "Olive Oil", "Mug", "Cutting Board", "Fountain Pen", "Candle", "Herb Planter",
)  # fmt: skip
SPECIAL_NAMES = (
    "Crème brûlée torch", "Jalapeño hot sauce", "Smørrebrød board", "Matcha 抹茶 powder",
    "Zürich muesli", "Café au lait bowl", "Piñata kit", "Ærø sea salt", "Ψ-mug (ceramic)",
    'The "Ultimate" 100% cotton apron',
)  # fmt: skip
FIRST_NAMES = (
    "Anna", "José", "Zoë", "Jürgen", "Øyvind", "Renée", "Chloé", "Ingrid", "Mateo", "Priya",
    "Kenji", "Amara", "Liam", "Emma", "Yusuf", "Siobhán", "Łukasz", "Ana-María",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Strauß", "Müller", "Öztürk", "Dupré", "García", "O'Brien", "Nakamura",
    "Kowalski", "Ng", "de la Cruz", "van Dijk", "Íñiguez", "Lee", "Søndergaard",
)  # fmt: skip
DOMAINS = ("example.com", "example.org", "mail.example.net")
NOTES = (
    "Please leave at the door.",
    "Bitte beim Nachbarn abgeben.",
    "Cadeau — merci d'emballer 🎁",
    "配達前に電話してください",
    "Ring twice.\nThe bell on the left is broken.",
    "",  # an empty note is not a missing one
)
_UNDECOMPOSED = str.maketrans({"ł": "l", "ø": "o", "ß": "ss", "æ": "ae"})
COUNTRIES = ("Kenya", "Colombia", "Ethiopia", "Japan", "Italia", "España", "Österreich")


@dataclass(frozen=True, slots=True)
class ShopRows:
    """Every row to insert, as plain dicts keyed by column name."""

    categories: list[dict[str, Any]]
    tags: list[dict[str, Any]]
    products: list[dict[str, Any]]
    product_tags: list[dict[str, Any]]
    customers: list[dict[str, Any]]
    orders: list[dict[str, Any]]
    audit: list[dict[str, Any]]


async def is_empty(engine: AsyncEngine) -> bool:
    """True when none of the shop's entity tables holds a row (the tables must exist)."""
    async with engine.connect() as connection:
        for model in (Customer, Category, Product, Tag, Order):
            if await connection.scalar(select(exists().select_from(model))):
                return False
    return True


async def seed(
    engine: AsyncEngine,
    *,
    customers: int = 50,
    categories: int = 8,
    products: int = 120,
    tags: int = 15,
    orders: int = 300,
    passwords: int = 3,
    seed: int = DEFAULT_SEED,
) -> None:
    """Fill the shop's empty tables in one transaction."""
    # Hashing is CPU work: off the event loop.
    rows = await asyncio.to_thread(
        build_rows,
        customers=customers,
        categories=categories,
        products=products,
        tags=tags,
        orders=orders,
        passwords=passwords,
        seed=seed,
    )
    async with engine.begin() as connection:
        for table, batch in (
            (Category.__table__, rows.categories),
            (Tag.__table__, rows.tags),
            (Product.__table__, rows.products),
            (product_tags, rows.product_tags),
            (Customer.__table__, rows.customers),
            (Order.__table__, rows.orders),
            (AuditEntry.__table__, rows.audit),
        ):
            assert isinstance(table, Table)
            if batch:
                await connection.execute(insert(table), batch)
        if connection.dialect.name == "postgresql":
            await _advance_sequences(connection)


def build_rows(
    *,
    customers: int,
    categories: int,
    products: int,
    tags: int,
    orders: int,
    passwords: int,
    seed: int,
) -> ShopRows:
    """Every row of a seed; pure (no database), so determinism is testable on its own."""
    if min(customers, categories, products, tags, orders, passwords) < 0:
        raise ValueError("sizes must not be negative")
    rng = random.Random(seed)
    category_rows = _categories(categories)
    tag_rows = _tags(tags)
    product_rows, links = _products(rng, products, category_rows, tag_rows)
    customer_rows = _customers(rng, customers, passwords)
    order_rows = _orders(rng, orders, customer_rows)
    audit_rows = _audit(customer_rows, order_rows)
    return ShopRows(
        category_rows, tag_rows, product_rows, links, customer_rows, order_rows, audit_rows
    )


def _categories(count: int) -> list[dict[str, Any]]:
    names = [name for name, _ in CATEGORIES[:count]]
    names += [f"Category {i:02d}" for i in range(len(names) + 1, count + 1)]
    return [{"id": i, "name": name} for i, name in enumerate(names, start=1)]


def _sku_prefix(category_id: int | None) -> str:
    if category_id is None:
        return "GEN"
    if category_id <= len(CATEGORIES):
        return CATEGORIES[category_id - 1][1]
    return f"C{category_id:02d}"


def _tags(count: int) -> list[dict[str, Any]]:
    labels = list(TAGS[:count]) + [f"tag-{i:03d}" for i in range(len(TAGS) + 1, count + 1)]
    return [{"id": i, "label": label} for i, label in enumerate(labels, start=1)]


def _products(
    rng: random.Random,
    count: int,
    categories: list[dict[str, Any]],
    tags: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    statuses = list(ProductStatus)
    products: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    for i in range(1, count + 1):
        filled = i == 1 or (i != 2 and rng.random() >= NULL_SHARE)
        category_id = rng.choice(categories)["id"] if categories and filled else None
        sku = f"{_sku_prefix(category_id)}-{i:05d}"
        if i <= len(statuses):  # every member appears, whatever the size
            status = statuses[i - 1]
        else:
            status = rng.choices(statuses, weights=(15, 70, 15))[0]
        products.append(
            {
                "sku": sku,
                "name": _product_name(rng),
                "price": _money(rng, 0.5, 2_500),
                "weight_kg": _maybe(rng, i, round(rng.uniform(0.02, 25), 3)),
                "status": status,
                "details": _maybe(rng, i, _details(rng)),
                "released": _maybe(rng, i, _day(rng, date(2015, 1, 1), date(2025, 12, 31))),
                "category_id": category_id,
            }
        )
        # Row 2 and about one product in six carry no tag at all.
        most = 0 if i == 2 else min(len(tags), rng.choice((0, 1, 1, 2, 3, 4)))
        for tag in rng.sample(tags, most):
            links.append({"product_sku": sku, "tag_id": tag["id"]})
    return products, links


def _product_name(rng: random.Random) -> str:
    if rng.random() < 0.25:
        return rng.choice(SPECIAL_NAMES)
    return f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"


def _details(rng: random.Random) -> dict[str, Any]:
    """A JSON object whose shape depends on the kind of product (or an empty one)."""
    shape = rng.randrange(6)
    if shape == 0:
        return {"color": rng.choice(("red", "sage", "anthracite")), "sizes": ["S", "M", "L"]}
    if shape == 1:
        return {
            "origin": rng.choice(COUNTRIES),
            "roast": rng.choice(("light", "medium", "dark")),
            "organic": rng.random() < 0.5,
        }
    if shape == 2:
        return {
            "dimensions": {"w": rng.randint(5, 90), "h": rng.randint(5, 90), "unit": "cm"},
            "fragile": rng.random() < 0.3,
        }
    if shape == 3:
        isbn = f"978-3-{rng.randint(10000, 99999)}-{rng.randint(100, 999)}-{rng.randint(0, 9)}"
        return {
            "isbn": isbn,
            "authors": rng.sample(LAST_NAMES, rng.randint(1, 3)),
            "pages": rng.randint(48, 960),
            "rating": None,  # a JSON null inside the object, unlike a NULL column
        }
    if shape == 4:
        return {"care": "Nicht in den Trockner — lavage à 30 °C", "warranty_years": 2}
    return {}


def _customers(rng: random.Random, count: int, passwords: int) -> list[dict[str, Any]]:
    hasher = PasswordHasher(type=Type.ID)
    hashed = [i for i in range(1, count + 1) if i != 2][:passwords]
    rows: list[dict[str, Any]] = []
    for i in range(1, count + 1):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        handle = f"{_ascii(first)}.{_ascii(last)}{i}"[:32]
        password = None
        if i in hashed:
            # A salt from the generator keeps the seed deterministic; argon2id all the same.
            password = hasher.hash(DEMO_PASSWORD, salt=rng.randbytes(16))
        rows.append(
            {
                "id": uuid.UUID(int=rng.getrandbits(128), version=4),
                "handle": handle,
                "email": f"{handle}@{rng.choice(DOMAINS)}",
                "password": password,
                "display_name": _maybe(rng, i, f"{first} {last}"),
                "is_active": i == 1 or rng.random() < 0.85,
                "created": _instant(rng, START, END - timedelta(days=30)),
                "internal_score": _maybe(rng, i, rng.randint(0, 1000)),
            }
        )
    return rows


def _ascii(name: str) -> str:
    """'Łukasz' -> 'lukasz', 'O'Brien' -> 'obrien': handles stay plain ASCII."""
    # NFKD splits accents off their letters; these letters have no decomposition.
    folded = unicodedata.normalize("NFKD", name.lower().translate(_UNDECOMPOSED))
    return "".join(c for c in folded if c.isascii() and c.isalnum())


def _orders(
    rng: random.Random, count: int, customers: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    if not customers:
        return []
    # The last tenth of the customers never order; the first always has.
    buyers = customers[: max(1, len(customers) * 9 // 10)]
    drafts: list[dict[str, Any]] = []
    for i in range(1, count + 1):
        buyer = customers[0] if i == 1 else rng.choice(buyers)
        # One very large total checks that every stored digit comes back.
        total = Decimal("1234567890.12") if i == count else _money(rng, 2, 4_000)
        drafts.append(
            {
                "customer_id": buyer["id"],
                "placed_at": _instant(rng, buyer["created"], END),
                "total": total,
                "paid": rng.random() < 0.7,
                "note": _maybe(rng, i, rng.choice(NOTES), share=0.6),
            }
        )
    # Ids grow with time, as they would have in production.
    drafts.sort(key=lambda row: (row["placed_at"], str(row["customer_id"])))
    return [{"id": i, **row} for i, row in enumerate(drafts, start=1)]


def _audit(customers: list[dict[str, Any]], orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    handles = {row["id"]: row["handle"] for row in customers}
    rows = [
        # Self sign-ups have no actor.
        _entry("customers", str(c["id"]), 1, "create", c["created"], None)
        for c in customers
    ]
    for order in orders:
        key, actor = str(order["id"]), handles[order["customer_id"]]
        rows.append(_entry("orders", key, 1, "create", order["placed_at"], actor))
        if order["paid"]:
            paid_at = order["placed_at"] + timedelta(hours=2)
            rows.append(_entry("orders", key, 2, "update", paid_at, "payments"))
    return rows


def _entry(
    table: str, key: str, version: int, action: str, at: datetime, actor: str | None
) -> dict[str, Any]:
    return {
        "table_name": table,
        "row_key": key,
        "version": version,
        "action": action,
        "at": at,
        "actor": actor,
    }


def _maybe(rng: random.Random, row: int, value: Any, *, share: float = NULL_SHARE) -> Any:
    """`value`, or None: always on row 2, never on row 1, else about `share` of the time."""
    draw = rng.random()  # drawn on every row, so a row's NULLs do not shift the next rows
    if row == 1:
        return value
    if row == 2 or draw < share:
        return None
    return value


def _money(rng: random.Random, low: float, high: float) -> Decimal:
    cents = rng.randint(int(low * 100), int(high * 100))
    return (Decimal(cents) / 100).quantize(CENT)


def _instant(rng: random.Random, low: datetime, high: datetime) -> datetime:
    seconds = int((high - low).total_seconds())
    return low + timedelta(seconds=rng.randint(0, max(seconds, 0)))


def _day(rng: random.Random, low: date, high: date) -> date:
    return low + timedelta(days=rng.randint(0, (high - low).days))


async def _advance_sequences(connection: AsyncConnection) -> None:
    """Rows went in with explicit ids; move PostgreSQL's sequences past them."""
    for table in ("categories", "tags", "orders"):
        await connection.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"coalesce(max(id), 1), max(id) IS NOT NULL) FROM {table}"
            )
        )
