"""A loopback TCP proxy that puts network faults between a client and a real server.

``FaultProxy(host, port)`` listens on 127.0.0.1 (a free port, :attr:`FaultProxy.port`) and
forwards every connection to ``host:port``. It runs its own asyncio loop on a thread of its own,
so it keeps forwarding while an async test awaits on its loop, and every control is a plain
method that is safe to call from any thread or coroutine (it returns once the change is in
effect; it blocks the caller for a loop iteration of the proxy, microseconds)::

    with FaultProxy("127.0.0.1", server.port) as proxy:
        r = redis.asyncio.Redis.from_url(proxy.url)
        proxy.set_latency(0.05)   # each chunk, each direction, arrives 50 ms late, in order
        proxy.cut()               # every open connection is closed, both sides; new ones work
        proxy.blackhole(True)     # a partition: nothing gets through, sockets stay open
        proxy.blackhole(False)    # ...healed: connections made before or during it are cut
        proxy.refuse(True)        # nothing listens: new connections are refused (RST)
        proxy.refuse(False)       # listening again, on the same port

Fault semantics, precisely:

- :meth:`set_latency` delays every chunk read from either side by ``seconds`` before it is
  written to the other, preserving the order of the chunks (a chunk never overtakes an earlier
  one, even when the latency was lowered in between). It applies to chunks read from then on.
- :meth:`cut` aborts every connection open now, on both sides (the client reads EOF or a
  reset); chunks still held back by the latency are dropped. New connections are accepted.
- :meth:`blackhole` ``(True)``: bytes read from either side are discarded, and so are chunks
  held back by the latency; sockets stay open; a side that closes is not told to the other;
  new connections are accepted but not forwarded (no connection to the server is made). A
  client with a read timeout sees it expire; one without waits forever. ``blackhole(False)``
  cuts every connection that exists at that moment (those it swallowed bytes of would be out
  of step with the protocol), so the client's next attempt reconnects and works.
- :meth:`refuse` ``(True)`` closes the listening socket, keeping the port bound so that nobody
  else takes it: new connections get ``ECONNREFUSED``. Existing connections are untouched
  (add :meth:`cut` to simulate a server that went away). ``refuse(False)`` listens again on the
  same port.
- When the server side closes (outside a blackhole), what it sent is delivered first, then the
  client side is closed; when the client closes, the server side is closed likewise. When the
  server cannot be reached, the accepted connection is closed at once.

:meth:`stop` (or leaving the ``with`` block) closes every socket and stops the thread; it is
idempotent. :attr:`connections_accepted` counts accepted connections since the start and
:attr:`active_connections` those not yet fully closed.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Final, Self, TypeVar

from redicache_async.testing._lifecycle import Startable

__all__ = ["FaultProxy"]

T = TypeVar("T")

_HOST: Final = "127.0.0.1"
#: Bound on how long a control call waits for the proxy's loop (it takes microseconds).
_CONTROL_TIMEOUT: Final = 10.0
#: Bound on how long closing waits for the sockets to be released by the loop.
_CLOSE_TIMEOUT: Final = 5.0


def _reusable_socket() -> socket.socket:
    """A TCP socket that may share its port with the others made here (SO_REUSEPORT), so
    that the port can be held while nothing listens on it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except BaseException:
        sock.close()
        raise
    return sock


class _Pipe:
    """One direction of a connection: chunks wait here until due, then go out in order."""

    __slots__ = ("_loop", "_on_end", "_queue", "_timer", "dest")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_end: Callable[[], None]) -> None:
        self._loop = loop
        self._on_end = on_end
        #: ``(due, chunk)``; a ``None`` chunk is the end: the source side closed.
        self._queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        #: Where the chunks go; ``None`` until the server side is connected.
        self.dest: asyncio.Transport | None = None

    def push(self, chunk: bytes | None, latency: float) -> None:
        due = self._loop.time() + latency
        if self._queue:
            due = max(due, self._queue[-1][0])  # never overtake an earlier chunk
        self._queue.append((due, chunk))
        self.flush()

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.dest is None:
            return
        now = self._loop.time()
        while self._queue:
            due, chunk = self._queue[0]
            if due > now:
                self._timer = self._loop.call_at(due, self.flush)
                return
            self._queue.popleft()
            if chunk is None:
                self._on_end()
                return
            if not self.dest.is_closing():
                self.dest.write(chunk)

    def clear(self) -> None:
        self._queue.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _Side(asyncio.Protocol):
    """One socket of a proxied connection: the client's or the server's."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._connection.side_made(self)

    def data_received(self, data: bytes) -> None:
        self._connection.received(self, data)

    def eof_received(self) -> bool:
        return False  # close this side; connection_lost reports it

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._connection.side_lost(self)

    # Flow control: a side that cannot take more stops the reading of the other.
    def pause_writing(self) -> None:
        self._connection.other(self).pause_reading()

    def resume_writing(self) -> None:
        self._connection.other(self).resume_reading()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self, *, graceful: bool) -> None:
        if self.transport is not None and not self.lost:
            if graceful:
                self.transport.close()  # writes what is buffered first
            else:
                self.transport.abort()


class _Connection:
    """An accepted client connection and, unless it was accepted into a blackhole, its
    connection to the server. Lives on the proxy's loop."""

    def __init__(self, proxy: FaultProxy, loop: asyncio.AbstractEventLoop) -> None:
        self._proxy = proxy
        self._loop = loop
        self.client = _Side(self)
        self.server = _Side(self)
        self.to_server = _Pipe(loop, self._end)
        self.to_client = _Pipe(loop, self._end)
        self._connecting: asyncio.Task[None] | None = None
        self._closing = False
        self.finished: asyncio.Future[None] = loop.create_future()

    def other(self, side: _Side) -> _Side:
        return self.server if side is self.client else self.client

    # -- events ------------------------------------------------------------------------------

    def side_made(self, side: _Side) -> None:
        if side is self.client:
            self.to_client.dest = side.transport
            self._proxy._accepted(self)
            if not self._proxy._blackholed:
                self._connecting = self._loop.create_task(self._connect())
                self._connecting.add_done_callback(lambda _: self._check_finished())
        else:
            self.to_server.dest = side.transport
            self.to_server.flush()

    def received(self, side: _Side, data: bytes) -> None:
        if self._closing or self._proxy._blackholed:
            return  # the packets vanish
        pipe = self.to_server if side is self.client else self.to_client
        pipe.push(data, self._proxy._latency)

    def side_lost(self, side: _Side) -> None:
        if not self._closing:
            if side is self.client:
                # What the client sent before closing still reaches the server, then it closes.
                self.to_server.push(None, 0.0 if self._proxy._blackholed else self._proxy._latency)
                if self._proxy._blackholed or self._connecting is None:
                    self.close(graceful=False)
            elif not self._proxy._blackholed:
                self.to_client.push(None, self._proxy._latency)
        self._check_finished()

    def _end(self) -> None:
        self.close(graceful=True)

    async def _connect(self) -> None:
        try:
            await self._loop.create_connection(
                lambda: self.server, self._proxy.target_host, self._proxy.target_port
            )
        except OSError:
            self.close(graceful=False)  # the server cannot be reached: so the client learns
            return
        if self._closing:
            self.server.close(graceful=False)

    # -- closing -----------------------------------------------------------------------------

    def close(self, *, graceful: bool) -> None:
        """Close both sides (``graceful``: after writing what their transports buffered)."""
        self._closing = True
        self.to_server.clear()
        self.to_client.clear()
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        self.client.close(graceful=graceful)
        self.server.close(graceful=graceful)
        self._check_finished()

    def drop_queued(self) -> None:
        self.to_server.clear()
        self.to_client.clear()

    def _check_finished(self) -> None:
        if self.finished.done():
            return
        connecting_done = self._connecting is None or self._connecting.done()
        server_done = self.server.transport is None or self.server.lost
        if self.client.lost and connecting_done and server_done:
            self._closing = True
            self.finished.set_result(None)
            self._proxy._finished(self)


class FaultProxy(Startable):
    """A TCP proxy from 127.0.0.1:``port`` to ``target_host:target_port`` that injects
    latency, cuts, partitions (blackhole) and refused connections. See the module docstring."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Owned by the proxy's loop (written there only).
        self._server: asyncio.Server | None = None
        self._placeholder: socket.socket | None = None
        self._connections: set[_Connection] = set()
        self._latency = 0.0
        self._blackholed = False
        self._refusing = False
        self._accepted_count = 0

    # -- introspection -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the proxy has no port until it is started")
        return self._port

    @property
    def host(self) -> str:
        return _HOST

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://{_HOST}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def connections_accepted(self) -> int:
        """Client connections accepted since the start."""
        return self._accepted_count

    @property
    def active_connections(self) -> int:
        """Accepted connections whose sockets are not all closed yet."""
        return len(self._connections)

    @property
    def latency(self) -> float:
        return self._latency

    @property
    def blackholed(self) -> bool:
        return self._blackholed

    @property
    def refusing(self) -> bool:
        return self._refusing

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the thread and listen; returns once connections are accepted."""
        if self._thread is not None:
            raise RuntimeError("the proxy is already running")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._main, args=(loop,), name="fault-proxy", daemon=True)
        self._loop, self._thread = loop, thread
        thread.start()
        try:
            self._call(self._open)
        except BaseException:
            self._stop_thread()
            raise
        thread.name = f"fault-proxy:{self._port}"
        return self

    def stop(self) -> None:
        """Close every socket (listening, placeholder, both sides of each connection) and stop
        the thread. Idempotent."""
        if self._thread is None:
            return
        try:
            self._call(self._shutdown)
        finally:
            self._stop_thread()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<FaultProxy {_HOST}:{self._port} -> {self.target_host}:{self.target_port} {state}>"

    # -- faults ------------------------------------------------------------------------------

    def set_latency(self, seconds: float) -> None:
        """Delay each chunk, in each direction, by ``seconds`` (0 to stop), keeping order."""
        if not seconds >= 0:
            raise ValueError(f"latency must be zero or more seconds, got {seconds!r}")

        async def apply() -> None:
            self._latency = float(seconds)

        self._call(apply)

    def cut(self) -> int:
        """Abort every current connection, both sides; returns how many there were. New
        connections are accepted as usual."""
        return self._call(self._cut_all)

    def blackhole(self, on: bool) -> None:
        """Start (``True``) or end a partition: see the module docstring. Ending one cuts every
        connection that exists at that moment."""

        async def apply() -> None:
            if on:
                self._blackholed = True
                for connection in self._connections:
                    connection.drop_queued()
            elif self._blackholed:
                self._blackholed = False
                await self._cut_all()

        self._call(apply)

    def refuse(self, on: bool) -> None:
        """Stop listening (``True``: new connections are refused, the port stays reserved) or
        listen again (``False``). Existing connections are untouched."""

        async def apply() -> None:
            if on and not self._refusing:
                placeholder = _reusable_socket()
                try:
                    placeholder.bind((_HOST, self.port))  # holds the port; does not listen
                except BaseException:
                    placeholder.close()
                    raise
                self._placeholder = placeholder
                self._close_listener()
                self._refusing = True
            elif not on and self._refusing:
                await self._listen()
                self._close_placeholder()
                self._refusing = False

        self._call(apply)

    # -- on the proxy's loop -----------------------------------------------------------------

    def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                leftovers = asyncio.all_tasks(loop)
                for task in leftovers:
                    task.cancel()
                if leftovers:
                    loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    async def _open(self) -> None:
        await self._listen()

    async def _listen(self) -> None:
        assert self._loop is not None
        sock = _reusable_socket()
        try:
            sock.bind((_HOST, self._port or 0))
            sock.listen(128)
            sock.setblocking(False)
            self._port = int(sock.getsockname()[1])
            server = await self._loop.create_server(self._new_connection, sock=sock)
        except BaseException:
            sock.close()
            raise
        self._server = server

    def _new_connection(self) -> _Side:
        assert self._loop is not None
        return _Connection(self, self._loop).client

    def _accepted(self, connection: _Connection) -> None:
        self._accepted_count += 1
        self._connections.add(connection)

    def _finished(self, connection: _Connection) -> None:
        self._connections.discard(connection)

    def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()  # closes the listening socket now; connections are ours to close

    def _close_placeholder(self) -> None:
        placeholder, self._placeholder = self._placeholder, None
        if placeholder is not None:
            placeholder.close()

    async def _cut_all(self) -> int:
        connections = list(self._connections)
        for connection in connections:
            connection.close(graceful=False)
        await self._wait_finished(connections)
        return len(connections)

    async def _wait_finished(self, connections: list[_Connection]) -> None:
        pending = [c.finished for c in connections if not c.finished.done()]
        if pending:
            await asyncio.wait(pending, timeout=_CLOSE_TIMEOUT)

    async def _shutdown(self) -> None:
        self._close_listener()
        self._close_placeholder()
        await self._cut_all()

    # -- plumbing ----------------------------------------------------------------------------

    def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make()`` on the proxy's loop and return its result (from any other thread)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            raise RuntimeError("the proxy is not running")
        if threading.current_thread() is thread:
            raise RuntimeError("FaultProxy controls cannot be called from the proxy's own loop")

        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=_CONTROL_TIMEOUT)

    def _stop_thread(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=_CLOSE_TIMEOUT)
            if thread.is_alive():
                raise RuntimeError(f"the proxy's thread {thread.name} did not stop")
        self._loop = self._thread = None
        self._server = None
        self._connections.clear()
