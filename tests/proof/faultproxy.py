"""A loopback TCP proxy for fault injection: pass traffic, cut every connection, or stall it.

`FaultProxy(host, port)` listens on 127.0.0.1 on an ephemeral port and forwards each
connection to the target. Three faults, switched at any time:

- `cut()`: every open connection is aborted and every new one is closed as soon as it is
  accepted (the peer sees a reset or an immediate EOF, as when a server or a link dies);
- `blackhole()`: connections are accepted but nothing is forwarded either way, so reads
  hang until the caller's own timeout (a stalled network or a frozen server); bytes already
  read are held, not dropped, as TCP would deliver them once the link heals;
- `restore()`: forwarding resumes, held bytes included; new connections reach the target.

Pure asyncio streams; every task it starts is cancelled and awaited on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from types import TracebackType

CHUNK = 65_536
CONNECT_TIMEOUT = 5.0
CLOSE_TIMEOUT = 5.0


class Mode(enum.Enum):
    PASS = "pass"
    CUT = "cut"
    BLACKHOLE = "blackhole"


class _Link:
    """One client connection and, once made, its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.closed = False

    def abort(self) -> None:
        """Drop both sides at once, without flushing (what a dead peer looks like)."""
        self.closed = True
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


class FaultProxy:
    """An async context manager: `async with FaultProxy(host, port) as proxy: proxy.port`."""

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self.port = 0
        self.mode = Mode.PASS
        self.accepted = 0  # connections accepted while passing or stalling
        self.refused = 0  # connections closed on arrival while cut
        self.upstream_failures = 0  # connections whose target did not answer
        self.stalls = 0  # times a connection or a chunk of bytes was held by the blackhole
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def active(self) -> int:
        """Connections open right now."""
        return len(self._links)

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        self._abort_all()
        self._flowing.set()
        # Aborted links end their tasks by themselves; cancel only what is left after that.
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=CLOSE_TIMEOUT)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=CLOSE_TIMEOUT)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._server.wait_closed()

    def cut(self) -> None:
        """Abort every connection now; close every new one on arrival."""
        self.mode = Mode.CUT
        self._abort_all()
        self._flowing.set()  # held pumps wake up, see their link closed and leave

    def blackhole(self) -> None:
        """Accept, but forward nothing either way until `restore()`."""
        self.mode = Mode.BLACKHOLE
        self._flowing.clear()

    def restore(self) -> None:
        """Forward again: held bytes first, then whatever comes."""
        self.mode = Mode.PASS
        self._flowing.set()

    def _abort_all(self) -> None:
        for link in list(self._links):
            link.abort()

    async def _wait_for_flow(self) -> None:
        if not self._flowing.is_set():
            self.stalls += 1
            await self._flowing.wait()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # Only __aexit__ cancels these; ending quietly keeps asyncio's stream callback
            # (which asks a finished handler task for its exception) from logging an error.
            return
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode is Mode.CUT:
            self.refused += 1
            writer.transport.abort()
            return
        self.accepted += 1
        link = _Link(writer)
        self._links.add(link)
        try:
            await self._wait_for_flow()  # a stalled link does not even reach the target
            if link.closed:
                return
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    up_reader, up_writer = await asyncio.open_connection(
                        self.target_host, self.target_port
                    )
            except (OSError, TimeoutError):
                self.upstream_failures += 1
                return
            link.upstream = up_writer
            if link.closed:  # cut while connecting
                up_writer.transport.abort()
                return
            await asyncio.gather(
                self._pump(reader, up_writer, link), self._pump(up_reader, writer, link)
            )
        finally:
            link.abort()
            self._links.discard(link)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, link: _Link
    ) -> None:
        """Copy one direction until EOF or a fault; any end of it ends the whole link."""
        try:
            while not link.closed:
                data = await source.read(CHUNK)
                if not data:
                    return
                await self._wait_for_flow()
                if link.closed:
                    return
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            return
        finally:
            link.abort()
