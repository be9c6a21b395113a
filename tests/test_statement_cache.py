"""The service's own SQL constructs keep statements cacheable in SQLAlchemy's compiled cache,
with keys that tell apart what compiles differently."""

from __future__ import annotations

import pytest

from service.query.columns import build_page_select
from service.query.cursor import CursorCodec
from service.query.memo import plan_list
from service.query.plan import Limits
from service.settings import Settings
from tests.conftest import AUTH

LIMITS = Limits.from_settings(Settings())
CODEC = CursorCodec(b"statement-cache-test")


def page_key(resource: str, query_string: str) -> object:
    query = plan_list(
        AUTH[resource],
        query_string.encode(),
        private_ok=True,
        limits=LIMITS,
        scope=None,
        codec=CODEC,
    )
    key = build_page_select(query)._generate_cache_key()
    assert key is not None, f"{resource}?{query_string} is compiled anew on every execution"
    return key


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # case-folded filters (FoldCase) on two columns
        ("filter[name][contains]=an", "filter[display_name][contains]=an"),
        ("filter[name][startswith]=a", "filter[email_address][startswith]=a"),
        # ascending nullable sorts (AscendingNullsLast) on two columns
        ("sort=display_name", "sort=created"),
    ],
)
def test_different_columns_get_different_keys(first: str, second: str) -> None:
    assert page_key("users", first) != page_key("users", second)


def test_different_values_share_a_key() -> None:
    assert page_key("users", "filter[name][contains]=an") == page_key(
        "users", "filter[name][contains]=bo"
    )
