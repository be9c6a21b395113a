"""The read pipeline after planning: load through the repository, render to bytes."""

from __future__ import annotations

from service.errors import NotFound
from service.query.canonical import binding, list_params, to_query_string
from service.query.cursor import CursorCodec
from service.query.plan import Condition, ListQuery, Plan
from service.render import render_items, render_list, sort_values
from service.repository import Database, exists, list_page
from service.timing import stage


class Reader:
    """Turns validated queries into response bodies; the cache wraps these calls."""

    def __init__(self, db: Database, codec: CursorCodec, *, max_embedded_rows: int) -> None:
        self.db = db
        self.codec = codec
        self.max_embedded_rows = max_embedded_rows

    async def list_body(self, query: ListQuery, *, base_path: str) -> bytes:
        """A page of a list or sub-collection; a missing parent is a 404."""
        async with self.db.session() as session:
            if query.scope is not None and not await exists(
                session, query.scope.parent, query.scope.parent_id
            ):
                raise not_found(query.scope.parent, query.scope.parent_id)
            with stage("query"):
                page = await list_page(session, query, dialect=self.db.dialect)
        with stage("render"):
            next_cursor = next_link = None
            if page.has_more and page.rows:
                next_cursor = self.codec.encode(
                    sort_values(page.rows[-1], query), binding=binding(query)
                )
                params = [*list_params(query), ("cursor", next_cursor)]
                next_link = f"{base_path}?{to_query_string(params)}"
            return render_list(
                page,
                query,
                next_cursor=next_cursor,
                next_link=next_link,
                max_embedded=self.max_embedded_rows,
            )

    async def item_body(self, plan: Plan, identifier: int) -> bytes:
        by_id = Condition(plan.resource, (), "id", "eq", identifier)
        query = ListQuery(plan=plan, filters=(by_id,), limit=1)
        async with self.db.session() as session:
            with stage("query"):
                page = await list_page(session, query, dialect=self.db.dialect)
        if not page.rows:
            raise not_found(plan.resource, identifier)
        with stage("render"):
            return render_items(page.rows, plan, single=True, max_embedded=self.max_embedded_rows)


def not_found(resource: str, identifier: int) -> NotFound:
    return NotFound(f"no {resource} with id {identifier}")
