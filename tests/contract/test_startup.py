"""What cannot be served is left out with a warning naming it; a named class that cannot be
served, or nothing servable at all, stops start-up with the reason (SPEC: Your own models
"What it cannot serve")."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import Integer, LargeBinary, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from service.schema import SchemaError, load_base, registry_of
from service.schema.registry import build_registry
from tests.contract.schemas import SHOP
from tests.ops.servers import free_port, serve_env

ROOT = Path(__file__).resolve().parents[2]


def test_the_shop_leaves_out_its_composite_key_class_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="service.schema")
    base = load_base(SHOP.models)
    registry = build_registry(base)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("AuditEntry" in m and "primary key" in m for m in warnings), warnings
    assert registry.by_table("audit_log") is None
    assert set(registry) == set(registry_of(base))
    assert any("AuditEntry" in reason for reason in registry_of(base).left_out)


# Throwaway bases of this module's own: their mappers never meet anyone else's.


class CompositeBase(DeclarativeBase):
    pass


class Fine(CompositeBase):
    __tablename__ = "fine"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)


class Entry(CompositeBase):
    __tablename__ = "entries"
    __resource__ = "entries"

    book: Mapped[str] = mapped_column(String(10), primary_key=True)
    line: Mapped[int] = mapped_column(Integer, primary_key=True)


class BlobKeyBase(DeclarativeBase):
    pass


class Blob(BlobKeyBase):
    __tablename__ = "blobs"
    __resource__ = "blobs"

    digest: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)


class ReservedBase(DeclarativeBase):
    pass


class Health(ReservedBase):
    __tablename__ = "health"
    __resource__ = "healthz"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)


class NothingBase(DeclarativeBase):
    pass


class Link(NothingBase):
    __tablename__ = "links"

    a: Mapped[int] = mapped_column(Integer, primary_key=True)
    b: Mapped[int] = mapped_column(Integer, primary_key=True)


@pytest.mark.parametrize(
    ("base", "named"),
    [(CompositeBase, "Entry"), (BlobKeyBase, "Blob"), (ReservedBase, "Health")],
    ids=["composite-key", "unserved-key-type", "reserved-path"],
)
def test_a_named_class_that_cannot_be_served_is_a_schema_error_naming_it(
    base: type[DeclarativeBase], named: str
) -> None:
    with pytest.raises(SchemaError, match=named):
        build_registry(base)


def test_a_base_with_nothing_servable_is_a_schema_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="service.schema")
    with pytest.raises(SchemaError, match="NothingBase"):
        build_registry(NothingBase)


@pytest.mark.parametrize(
    ("models", "reasons"),
    [
        ("tests.contract.unservable_models:Base", ("Ledger", "primary key")),
        ("tests.contract.unservable_models:EmptyBase", ("EmptyBase", "can be served")),
        ("tests.contract.no_such_module:Base", ("no_such_module", "import")),
    ],
    ids=["named-unservable", "nothing-servable", "not-importable"],
)
def test_serve_exits_non_zero_at_once_naming_the_reason(
    tmp_path: Path, models: str, reasons: tuple[str, ...]
) -> None:
    settings = {"MODELS": models, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"}
    env = serve_env(settings) | {"PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1"]
    argv += ["--port", str(free_port())]
    started = time.monotonic()
    finished = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30, check=False
    )
    output = finished.stdout + finished.stderr
    assert finished.returncode != 0, output
    assert all(reason in output for reason in reasons), output
    assert time.monotonic() - started < 15, "start-up failures are immediate"
    assert not (tmp_path / "x.db").exists(), "nothing was migrated or seeded"


# Class names that would take the OpenAPI document's own schema names, or each other's.


class ClashBase(DeclarativeBase):
    pass


class Problem(ClashBase):
    __tablename__ = "problems"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(50))


class Explain(ClashBase):
    __tablename__ = "explanations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)


class Order(ClashBase):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)


class OrderList(ClashBase):
    __tablename__ = "order_lists"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)


def test_schema_names_never_clash_in_the_document(tmp_path: Path) -> None:
    """A model named `Problem` does not replace the problem schema, and `Order` beside
    `OrderList` does not share `OrderList`: every resource keeps schemas of its own."""
    from openapi_spec_validator import OpenAPIV31SpecValidator

    from service.app import create_app
    from tests.conftest import make_test_settings

    registry = registry_of(ClashBase)
    names = {resource.name: resource.schema_name for resource in registry.values()}
    assert names == {
        "problems": "ProblemsResource",
        "explanations": "ExplanationsResource",
        "orders": "Order",
        "order_lists": "OrderListsResource",
    }
    settings = make_test_settings(
        f"sqlite+aiosqlite:///{tmp_path / 'clash.db'}",
        models=f"{__name__}:ClashBase",
    )
    document = create_app(settings).openapi()
    assert list(OpenAPIV31SpecValidator(document).iter_errors()) == []
    schemas = document["components"]["schemas"]
    assert schemas["Problem"]["required"] == ["type", "title", "status", "detail"]
    assert "statements" in schemas["Explain"]["properties"]
    assert set(schemas["ProblemsResource"]["properties"]) == {"id", "title"}
    assert schemas["OrderList"]["properties"]["data"]["items"]["$ref"].endswith("/Order")
    assert set(schemas["OrderListsResource"]["properties"]) == {"id"}
    problems = document["paths"]["/problems"]["get"]["responses"]["200"]
    assert problems["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ProblemsResourceList"
    )
