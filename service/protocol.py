"""uvicorn's HTTP protocols, answering a request their parser refuses with a problem document."""

from __future__ import annotations

import importlib.util

import h11
import orjson

# uvicorn reads h11's default limit from the same private name.
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

from service.errors import MalformedRequest, ServiceError, UriTooLong

HTTPTOOLS = importlib.util.find_spec("httptools") is not None
# httptools.parse_url keeps offsets in 16 bits: a longer URL is refused, however much the
# app would take (llhttp itself has no limit on a URL or a header).
HTTPTOOLS_MAX_URL_BYTES = 65535
_PROBLEM = b"application/problem+json"


def problem_message(error: ServiceError) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers and body of the server's own answer; it always closes the connection,
    since after a parse error the parser cannot tell where the next request would start."""
    body = orjson.dumps(error.to_problem())
    headers = [
        (b"content-type", _PROBLEM),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    return headers, body


class ProblemH11Protocol(H11Protocol):
    """h11, uvicorn's pure-Python parser (used when httptools is not installed)."""

    def send_400_response(self, msg: str) -> None:
        if self.conn.our_state not in {h11.IDLE, h11.SEND_RESPONSE}:
            # The app answered before reading the whole body, and the rest of the body is
            # broken. A second response would be taken for the answer to the client's next
            # request (and h11 refuses to send one: uvicorn's own version dies logging a
            # traceback), so the connection just closes.
            self.transport.close()
            return
        error = self._error()
        headers, body = problem_message(error)
        start = h11.Response(
            status_code=error.status,
            headers=[*self.server_state.default_headers, *headers],
            reason=STATUS_PHRASES[error.status],
        )
        for event in (start, h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()

    def _error(self) -> ServiceError:
        limit = self.config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
        buffered, _closed = self.conn.trailing_data
        if self.conn.our_state is h11.IDLE and len(buffered) > limit:
            # h11 stopped waiting for the end of the request head (it only counts a head that
            # arrives in pieces: one that arrives whole reaches the app, whose limit applies).
            line_end = buffered.find(b"\r\n")
            if line_end < 0 or line_end > limit:
                return UriTooLong(f"the request line is longer than {limit} bytes")
            return MalformedRequest(f"the request head is longer than {limit} bytes")
        return MalformedRequest("the request is not valid HTTP/1.1")


if HTTPTOOLS:
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

    class ProblemHttpToolsProtocol(HttpToolsProtocol):
        """httptools (llhttp), uvicorn's parser of choice when it is installed."""

        def send_400_response(self, msg: str) -> None:
            cycle = self.cycle
            if cycle is not None and cycle.response_started and cycle.more_body:
                # The app answered before reading the whole body, and the rest of the body
                # is broken: a second response would be taken for the answer to the
                # client's next request, so the connection just closes.
                self.transport.close()
                return
            error = self._error()
            headers, body = problem_message(error)
            lines = [STATUS_LINE[error.status]]
            for name, value in [*self.server_state.default_headers, *headers]:
                lines.append(name + b": " + value + b"\r\n")
            self.transport.write(b"".join([*lines, b"\r\n", body]))
            self.transport.close()

        def _error(self) -> ServiceError:
            # `url` is set when the parser starts a message; a URL over parse_url's limit is
            # the one error that comes with the whole URL read.
            if len(getattr(self, "url", b"")) > HTTPTOOLS_MAX_URL_BYTES:
                return UriTooLong(f"the URL is longer than {HTTPTOOLS_MAX_URL_BYTES} bytes")
            return MalformedRequest("the request is not valid HTTP/1.1")
