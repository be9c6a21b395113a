"""Reading a JSON request body within its size limit."""

from __future__ import annotations

import orjson
from fastapi import Request
from starlette.requests import ClientDisconnect

from service.api.headers import header, read_headers
from service.errors import (
    ClientClosedRequest,
    ErrorItem,
    InvalidBody,
    PayloadTooLarge,
    UnsupportedMediaType,
)


async def read_json(request: Request, *, max_bytes: int) -> object:
    """The parsed body; 415 for a non-JSON type, 413 past `max_bytes`, 422 for bad JSON, 499
    when the client hangs up before the end of it."""
    headers = read_headers(request.scope["headers"])
    content_type = header(headers, b"content-type") or "application/json"
    media_type = content_type.split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType("send the body as application/json")
    declared = header(headers, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large(max_bytes)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                raise too_large(max_bytes)
    except ClientDisconnect:
        # Not a server error: the log and the metrics count a 499, not a 500 (the response
        # reaches nobody), and nothing has been written yet.
        raise ClientClosedRequest(
            "the client closed the connection before the body was read"
        ) from None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        detail = f"the body is not valid JSON: {exc.msg}"
        raise InvalidBody(detail, (ErrorItem(detail, pointer=""),)) from None


def too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
