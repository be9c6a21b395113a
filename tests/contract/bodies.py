"""Valid request bodies for any resource, derived from the registry and the stored rows; and
how a value read back compares with the value written."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from service.schema import Attribute, Join, Kind, Resource
from tests.contract.reference import Reference, decimal_of, json_of

Body = dict[str, Any]
# One sequence for the whole run: no two generated values are ever equal, whichever test or
# step made them, so a unique column never clashes by accident.
_SERIAL = itertools.count(1)


def written_joins(resource: Resource) -> list[Join]:
    """The relationships a body writes as an id list (many-to-many, SPEC: Writes)."""
    return [j for j in resource.relationships if j.kind is Kind.MANY_TO_MANY and j.ids_field]


def writable(resource: Resource) -> list[Attribute]:
    return [a for a in (*resource.attributes, *resource.secrets) if a.writable]


class Bodies:
    """Fresh values per codec (every call a new one, so unique columns never clash), and
    foreign keys and id lists that point at stored rows."""

    def __init__(self, reference: Reference) -> None:
        self.reference = reference
        self.counter = _SERIAL

    def value(self, attribute: Attribute) -> Any:
        n = next(self.counter)
        codec: Any = attribute.codec
        kind = codec.name
        if kind == "integer":
            return 1000 + n
        if kind == "string":
            text = f"w{n}@example.org" if codec.email else f"w{n}-é ü"
            return text if codec.length is None else text[: codec.length]
        if kind == "boolean":
            return n % 2 == 1
        if kind == "number":
            return n + 0.25
        if kind == "decimal":
            return n + (0.5 if codec.scale else 0)
        if kind == "date":
            return (date(2024, 2, 29) + timedelta(days=n)).isoformat()
        if kind == "timestamp":
            moment = datetime(2024, 2, 29, 12, 0, 0, 123456) + timedelta(minutes=n)
            return moment.isoformat() + "Z"
        if kind == "uuid":
            return str(uuid.uuid4())
        if kind == "enum":
            return codec.values[n % len(codec.values)]
        if kind == "json":
            return {"n": n, "list": ["ü", None, True], "nested": {"k": [1, 2]}}
        raise AssertionError(f"no value for codec {kind}")

    def secret(self) -> str:
        return f"pw-{next(self.counter)}-correct horse"

    def stored_key(self, owner: str, *, avoid: Any = None) -> Any:
        """A key of a stored row of `owner` (rotating, never `avoid`), as JSON writes it."""
        keys = [
            k
            for k in self.reference.keys(owner)
            if json_of(self.reference.registry[owner].key, k) != avoid
        ]
        key = keys[next(self.counter) % len(keys)]
        return json_of(self.reference.registry[owner].key, key)

    def attribute_value(
        self, resource: Resource, attribute: Attribute, *, avoid: Any = None
    ) -> Any:
        if attribute in resource.secrets:
            return self.secret()
        if attribute.references is not None:
            return self.stored_key(attribute.references.owner, avoid=avoid)
        return self.value(attribute)

    def create(self, resource: Resource, *, everything: bool = True) -> Body:
        """Every required attribute; with `everything`, every writable one and id list too."""
        body: Body = {}
        for attribute in writable(resource):
            if attribute.required or everything:
                body[attribute.name] = self.attribute_value(resource, attribute)
        if everything:
            for join in written_joins(resource):
                keys = {self.stored_key(join.target.name) for _ in range(2)}
                body[str(join.ids_field)] = sorted(keys, key=str)
        return body


def dangling(attribute: Attribute) -> Any:
    """A key of the attribute's type that no row holds (the seeds never reach these)."""
    codec: Any = attribute.codec
    if codec.name == "integer":
        return codec.maximum
    if codec.name == "uuid":
        return str(uuid.UUID(int=0, version=4))
    if codec.name == "string":
        return "NO-SUCH-KEY"[: codec.length or None]
    raise AssertionError(f"no dangling value for {codec.name}")


def _moment(value: Any) -> datetime:
    moment = datetime.fromisoformat(str(value))
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def same(attribute: Attribute, written: Any, read: Any) -> bool:
    """Whether a value read back is the value written, as the attribute's type compares."""
    if written is None or read is None:
        return written is read
    kind = attribute.codec.name
    if kind == "decimal":
        return decimal_of(written) == decimal_of(read)
    if kind == "number":
        return float(written) == float(read)
    if kind == "timestamp":
        return _moment(written) == _moment(read)
    if kind == "uuid":
        return str(written).lower() == str(read)
    return bool(written == read)
