"""Async reads and writes on one session; the only place that runs SQL for requests."""

from service.repository.database import Database, translate_error
from service.repository.reads import Page, exists, list_page

__all__ = ["Database", "Page", "exists", "list_page", "translate_error"]
