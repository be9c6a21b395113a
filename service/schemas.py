"""Request bodies: pydantic models derived from the registry, strict and closed to extra keys."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    create_model,
)

from service.errors import ErrorItem, InvalidBody, suggest
from service.schema import Resource

MAX_IDS = 1000  # per relationship list in one object
MAX_SECRET_LENGTH = 1024  # a write-only value as given, before it is hashed
Secret = Annotated[str, StringConstraints(min_length=1, max_length=MAX_SECRET_LENGTH)]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    return value


def writable_fields(resource: Resource) -> list[str]:
    """Every key a body may hold, in declaration order."""
    names = [a.name for a in (*resource.attributes, *resource.secrets) if a.writable]
    return names + [str(j.ids_field) for j in resource.id_lists]


@cache
def body_model(resource: Resource, *, partial: bool) -> type[BaseModel]:
    """`UserCreate` (required fields required) or `UserUpdate` (everything optional)."""
    fields: dict[str, Any] = {}
    for attribute in (*resource.attributes, *resource.secrets):
        if not attribute.writable or (partial and attribute is resource.key):
            continue  # a row keeps its key, and so its one URL
        secret = attribute in resource.secrets
        annotation: Any = (
            Annotated[Secret, AfterValidator(_no_nul)]
            if secret
            else attribute.codec.annotation(required=attribute.required)
        )
        if attribute.nullable:
            annotation = annotation | None
        required = attribute.required and not partial
        extra: dict[str, Any] | None = {"writeOnly": True} if secret else None
        default: Any = ... if required else None
        fields[attribute.name] = (annotation, Field(default, json_schema_extra=extra))
    for join in resource.id_lists:
        # Absent means "leave as is"; an explicit null is refused (send [] to clear).
        key: Any = join.target.key.codec.annotation()
        ids = Annotated[list[key], Field(max_length=MAX_IDS)]
        fields[str(join.ids_field)] = (ids, None)
    suffix = "Update" if partial else "Create"
    name = resource.schema_name + suffix
    config = ConfigDict(extra="forbid", strict=True, title=name)
    model: type[BaseModel] = create_model(name, __config__=config, **fields)
    return model


def parse_create_body(
    resource: Resource, payload: object, *, max_batch: int
) -> tuple[list[BaseModel], bool]:
    """One object or a non-empty array of at most `max_batch`; returns (items, was_single)."""
    model = body_model(resource, partial=False)
    if isinstance(payload, dict):
        return [_validate(model, payload, prefix="")], True
    if not isinstance(payload, list):
        raise InvalidBody(
            "the body must be a JSON object or an array of objects",
            (ErrorItem("expected an object or an array", pointer=""),),
        )
    if not payload or len(payload) > max_batch:
        detail = f"a batch holds 1 to {max_batch} objects, not {len(payload)}"
        raise InvalidBody(detail, (ErrorItem(detail, pointer=""),))
    items: list[BaseModel] = []
    problems: list[ErrorItem] = []
    for index, item in enumerate(payload):
        try:
            items.append(_validate(model, item, prefix=f"/{index}"))
        except InvalidBody as exc:
            problems.extend(exc.errors)
        if len(problems) >= MAX_REPORTED:
            break
    if problems:
        raise InvalidBody(_summary(problems), tuple(problems[:MAX_REPORTED]))
    return items, False


def parse_update_body(resource: Resource, payload: object) -> BaseModel:
    if not isinstance(payload, dict):
        raise InvalidBody(
            "the body must be a JSON object", (ErrorItem("expected an object", pointer=""),)
        )
    model = body_model(resource, partial=True)
    return _validate(model, payload, prefix="", key=resource.key.name)


MAX_REPORTED = 20


def _validate(
    model: type[BaseModel], item: object, *, prefix: str, key: str | None = None
) -> BaseModel:
    if not isinstance(item, dict):
        raise InvalidBody(
            "each item must be a JSON object", (ErrorItem("expected an object", pointer=prefix),)
        )
    try:
        return model.model_validate(item)
    except ValidationError as exc:
        problems = tuple(
            _problem(model, error, prefix, key) for error in exc.errors(include_input=False)
        )
        raise InvalidBody(_summary(problems), problems) from None


def _problem(model: type[BaseModel], error: Any, prefix: str, key: str | None) -> ErrorItem:
    location = [str(part) for part in error["loc"]]
    pointer = prefix + "".join(f"/{_escape_pointer(part)}" for part in location)
    if error["type"] == "extra_forbidden":
        name = location[-1] if location else ""
        if name == key:
            return ErrorItem(f"{name!r} is the key and cannot be changed", pointer=pointer)
        hint = suggest(name, list(model.model_fields))
        return ErrorItem(f"unknown field {name[:64]!r}{hint}", pointer=pointer)
    if error["type"] == "missing":
        return ErrorItem("this field is required", pointer=pointer)
    return ErrorItem(str(error["msg"]), pointer=pointer)


def _escape_pointer(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def _summary(problems: tuple[ErrorItem, ...] | list[ErrorItem]) -> str:
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{first.pointer or '/'}: {first.detail}{more}"
