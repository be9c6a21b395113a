"""Bearer tokens: kept as digests, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from service.errors import Unauthorized


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: anonymous, or the holder of a valid token."""

    authenticated: bool

    @property
    def access_class(self) -> str:
        return "token" if self.authenticated else "anonymous"


ANONYMOUS = Caller(authenticated=False)
AUTHENTICATED = Caller(authenticated=True)


class TokenVerifier:
    """Checks `Authorization` headers against the configured tokens' SHA-256 digests."""

    __slots__ = ("_digests",)

    def __init__(self, tokens: tuple[str, ...]) -> None:
        self._digests = tuple(_digest(token) for token in tokens)

    @property
    def configured(self) -> bool:
        return bool(self._digests)

    def caller(self, authorization: str | None) -> Caller:
        """Anonymous without a header; a header holding no valid token is a 401, not anonymous."""
        if authorization is None:
            return ANONYMOUS
        if self.verify(authorization):
            return AUTHENTICATED
        raise invalid_token()

    def verify(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        digest = _digest(token.strip())
        # Compare against every digest so the time taken does not say which one matched.
        matched = False
        for candidate in self._digests:
            matched |= hmac.compare_digest(candidate, digest)
        return matched and scheme.lower() == "bearer"


def invalid_token() -> Unauthorized:
    """The same problem whether the token is missing, malformed or wrong."""
    return Unauthorized(
        "a valid bearer token is required", headers={"WWW-Authenticate": 'Bearer realm="service"'}
    )


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
