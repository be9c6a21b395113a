"""One error tree with stable codes; every error becomes an RFC 9457 problem document."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

PROBLEM_BASE = "https://service.invalid/problems/"


@dataclass(frozen=True, slots=True)
class ErrorItem:
    """One entry of the problem's `errors` list: where (a parameter or a JSON pointer), what."""

    detail: str
    parameter: str | None = None
    pointer: str | None = None

    def to_json(self) -> dict[str, str]:
        item = {"detail": self.detail}
        if self.parameter is not None:
            item["parameter"] = self.parameter
        if self.pointer is not None:
            item["pointer"] = self.pointer
        return item


@dataclass(eq=False)
class ServiceError(Exception):
    """Base of every error the service raises below the API layer."""

    detail: str
    errors: tuple[ErrorItem, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"

    def __str__(self) -> str:
        return self.detail

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        problem: dict[str, Any] = {
            "type": PROBLEM_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance is not None:
            problem["instance"] = instance
        if self.errors:
            problem["errors"] = [item.to_json() for item in self.errors]
        return problem


class InvalidParameter(ServiceError):
    status = 400
    code = "invalid-parameter"
    title = "Invalid parameter"

    def __init__(self, parameter: str, detail: str) -> None:
        # A client's parameter name is echoed, but never at more than 100 characters.
        shown = parameter if len(parameter) <= 100 else parameter[:100] + "…"
        super().__init__(detail, (ErrorItem(detail, parameter=shown),))


class MalformedRequest(ServiceError):
    """A request the HTTP parser refused before the app saw it (service/protocol.py)."""

    status = 400
    code = "malformed-request"
    title = "Malformed request"


class InvalidHeader(ServiceError):
    """A request header the service cannot read one way only (e.g. two `Authorization`s)."""

    status = 400
    code = "invalid-header"
    title = "Invalid header"

    def __init__(self, header: str, detail: str) -> None:
        super().__init__(detail, (ErrorItem(detail, parameter=header),))


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"
    title = "Unauthorized"


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class PrivateAttribute(Forbidden):
    code = "private-attribute"
    title = "Private attribute"

    def __init__(self, parameter: str, detail: str) -> None:
        super().__init__(detail, (ErrorItem(detail, parameter=parameter),))


class NotFound(ServiceError):
    status = 404
    code = "not-found"
    title = "Not found"


class MethodNotAllowed(ServiceError):
    status = 405
    code = "method-not-allowed"
    title = "Method not allowed"


class RequestTimeout(ServiceError):
    """The client did not finish sending its request within the deadline: its fault, not ours."""

    status = 408
    code = "request-timeout"
    title = "Request timeout"


class Conflict(ServiceError):
    status = 409
    code = "conflict"
    title = "Conflict"


class PayloadTooLarge(ServiceError):
    status = 413
    code = "payload-too-large"
    title = "Payload too large"


class UriTooLong(ServiceError):
    status = 414
    code = "uri-too-long"
    title = "URI too long"


class UnsupportedMediaType(ServiceError):
    status = 415
    code = "unsupported-media-type"
    title = "Unsupported media type"


class InvalidBody(ServiceError):
    status = 422
    code = "invalid-body"
    title = "Invalid body"


class Unavailable(ServiceError):
    status = 503
    code = "unavailable"
    title = "Service unavailable"

    def __init__(self, detail: str, *, retry_after: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class ClientClosedRequest(ServiceError):
    """The client went away before its request was read: not a server error (nginx's 499).

    Nobody is left to read the problem; the status is what the log and the metrics record."""

    status = 499
    code = "client-closed-request"
    title = "Client closed request"


class HttpError(ServiceError):
    """A status raised by the framework itself (rare: most become one of the classes above)."""

    code = "http-error"

    def __init__(self, status: int, detail: str, *, headers: dict[str, str]) -> None:
        super().__init__(detail, headers=headers)
        self.status = status  # type: ignore[misc]
        self.title = detail  # type: ignore[misc]


def suggest(name: str, candidates: Iterable[str]) -> str:
    """`; did you mean 'x'?` for the closest visible candidate, or nothing."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {matches[0]!r}?" if matches else ""
