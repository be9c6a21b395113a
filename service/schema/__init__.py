"""The served schema: resources, attributes and join specs derived from declarative models."""

from __future__ import annotations

import importlib
import os
import sys
from functools import cache

from sqlalchemy.orm import DeclarativeBase

from service.schema.joins import Join, Kind
from service.schema.registry import Attribute, Registry, Resource, SchemaError, build_registry

__all__ = [
    "Attribute",
    "Join",
    "Kind",
    "Registry",
    "Resource",
    "SchemaError",
    "load_base",
    "registry_of",
]


@cache
def registry_of(base: type[DeclarativeBase]) -> Registry:
    """The registry of a base, derived once: its mappers are fixed once the classes exist,
    so every app (and test) serving the same base shares the same immutable registry."""
    return build_registry(base)


def load_base(spec: str) -> type[DeclarativeBase]:
    """`package.module:Base` -> the declarative base class, or SchemaError saying why not."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise SchemaError(f"MODELS must be 'package.module:Base', not {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # the console script does not put it there as -m does
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SchemaError(f"MODELS: cannot import {module_name!r}: {exc}") from exc
    base = getattr(module, attribute, None)
    if not (isinstance(base, type) and issubclass(base, DeclarativeBase)):
        raise SchemaError(f"MODELS: {spec!r} is not a SQLAlchemy declarative base class")
    return base
