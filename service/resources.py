"""The resource registry: one declaration per resource, from which everything else derives."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from sqlalchemy import Table

from service.db import Base
from service.models import Group, Permission, User, group_permission, user_group


class AttrType(Enum):
    INTEGER = "integer"
    STRING = "string"
    DATETIME = "datetime"


@dataclass(frozen=True, slots=True)
class Attribute:
    name: str
    type: AttrType
    nullable: bool = False
    private: bool = False
    max_length: int | None = None
    writable: bool = True  # False: set by the server (id, created)
    email: bool = False  # must look like an email address
    unique: bool = False

    @property
    def required(self) -> bool:
        """Required on create: a writable attribute that cannot be NULL."""
        return self.writable and not self.nullable


@dataclass(frozen=True, slots=True)
class Relationship:
    """A many-to-many link through a junction table."""

    name: str
    target: str
    junction: Table
    local_key: str  # the junction column pointing at this resource
    remote_key: str  # the junction column pointing at the target
    inverse: str  # the target's relationship that points back here

    @property
    def ids_field(self) -> str:
        """The body field that sets this relationship: groups -> group_ids."""
        return self.name.removesuffix("s") + "_ids"


@dataclass(frozen=True, slots=True)
class Resource:
    name: str
    model: type[Base]
    attributes: tuple[Attribute, ...]
    relationships: tuple[Relationship, ...]
    # Write-only attributes, stored as an argon2id hash and never read back.
    secrets: tuple[Attribute, ...] = ()

    @property
    def table(self) -> str:
        return str(self.model.__tablename__)

    def attribute(self, name: str) -> Attribute | None:
        return next((a for a in self.attributes if a.name == name), None)

    def relationship(self, name: str) -> Relationship | None:
        return next((r for r in self.relationships if r.name == name), None)

    def visible_attributes(self, *, private: bool) -> tuple[str, ...]:
        """What a caller may name: private attributes only with a token."""
        return tuple(a.name for a in self.attributes if private or not a.private)


_ID = Attribute("id", AttrType.INTEGER, writable=False)
_CREATED = Attribute("created", AttrType.DATETIME, nullable=True, writable=False)

RESOURCES: dict[str, Resource] = {
    resource.name: resource
    for resource in (
        Resource(
            name="users",
            model=User,
            attributes=(
                _ID,
                Attribute("name", AttrType.STRING, max_length=16, unique=True),
                Attribute("display_name", AttrType.STRING, nullable=True, max_length=255),
                _CREATED,
                Attribute(
                    "email_address",
                    AttrType.STRING,
                    private=True,
                    max_length=255,
                    email=True,
                    unique=True,
                ),
            ),
            relationships=(
                Relationship("groups", "groups", user_group, "user_id", "group_id", "users"),
            ),
            secrets=(Attribute("password", AttrType.STRING, nullable=True, max_length=1024),),
        ),
        Resource(
            name="groups",
            model=Group,
            attributes=(
                _ID,
                Attribute("name", AttrType.STRING, max_length=16, unique=True),
                Attribute("display_name", AttrType.STRING, nullable=True, max_length=255),
                _CREATED,
            ),
            relationships=(
                Relationship("users", "users", user_group, "group_id", "user_id", "groups"),
                Relationship(
                    "permissions",
                    "permissions",
                    group_permission,
                    "group_id",
                    "permission_id",
                    "groups",
                ),
            ),
        ),
        Resource(
            name="permissions",
            model=Permission,
            attributes=(
                _ID,
                Attribute("name", AttrType.STRING, max_length=63, unique=True),
                Attribute("description", AttrType.STRING, nullable=True, max_length=255),
            ),
            relationships=(
                Relationship(
                    "groups",
                    "groups",
                    group_permission,
                    "permission_id",
                    "group_id",
                    "permissions",
                ),
            ),
        ),
    )
}
