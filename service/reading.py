"""The read pipeline after planning: load through the repository, render to bytes."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from service.errors import NotFound
from service.query.canonical import binding, list_params, to_query_string
from service.query.cursor import CursorCodec
from service.query.plan import Condition, ListQuery, Plan, default_sort
from service.render import render_items, render_list
from service.repository import Database, Page, exists, list_page
from service.repository.loaders import LoaderMemo
from service.repository.replicas import PRIMARY_ONLY
from service.schema import Resource
from service.timing import stage


class Reader:
    """Turns validated queries into response bodies; the cache wraps these calls."""

    def __init__(
        self, db: Database, codec: CursorCodec, *, max_embedded_rows: int, loader: str = "columns"
    ) -> None:
        self.db = db
        self.codec = codec
        self.max_embedded_rows = max_embedded_rows
        self.loader = loader
        self.memo = LoaderMemo()  # this app's statements and row shapes

    async def load(
        self, connection: AsyncConnection, query: ListQuery, *, remember: bool = True
    ) -> Page:
        """The page and its includes, within the embedded-rows bound; `remember=False` for
        a query that will not be asked again (its statement is not kept)."""
        return await list_page(
            connection,
            query,
            remember=remember,
            dialect=self.db.dialect,
            loader=self.loader,
            max_embedded=self.max_embedded_rows,
            memo=self.memo,
        )

    async def list_body(
        self, query: ListQuery, *, base_path: str, required: int = PRIMARY_ONLY
    ) -> bytes:
        """A page of a list or sub-collection; a missing parent is a 404. `required`: the WAL
        position a replica must have replayed to serve it (else the primary does)."""

        async def work(connection: AsyncConnection) -> Page:
            if query.scope is not None and not await exists(
                connection, query.scope.parent, query.scope.parent_id
            ):
                raise not_found(query.scope.parent, query.scope.parent_id)
            with stage("query"):
                return await self.load(connection, query)

        page = await self.db.read(work, required=required)
        with stage("render"):
            next_cursor = next_link = None
            if page.has_more and page.last_sort_values is not None:
                next_cursor = self.codec.encode(
                    page.last_sort_values, binding=binding(query), attributes=query.sort_attributes
                )
                params = [*list_params(query), ("cursor", next_cursor)]
                next_link = f"{base_path}?{to_query_string(params)}"
            return render_list(page, query, next_cursor=next_cursor, next_link=next_link)

    async def item_body(
        self, plan: Plan, identifier: Any, *, required: int = PRIMARY_ONLY
    ) -> bytes:
        resource = plan.resource
        by_id = Condition((), resource.key, "eq", identifier)
        query = ListQuery(plan=plan, sort=default_sort(resource), filters=(by_id,), limit=1)

        async def work(connection: AsyncConnection) -> Page:
            with stage("query"):
                return await self.load(connection, query)

        page = await self.db.read(work, required=required)
        if not page.items:
            raise not_found(plan.resource, identifier)
        with stage("render"):
            return render_items(page.items, single=True)


def not_found(resource: Resource, identifier: Any) -> NotFound:
    shown = resource.key.codec.format(identifier)
    return NotFound(f"no {resource.name} with {resource.key.name} {shown}")
