"""Real redis-py clients for ``tests/test_model.py``, with two deterministic faults a test can
switch on, and the connections of a topology (a single server, a cluster, Sentinel).

- A **delayed listener**: while a client's :class:`Hooks` ``listening`` gate is closed, the
  pub/sub objects it hands out deliver nothing. ``get_message`` waits for the gate until its
  own timeout and answers "no message", as a network that holds the packets back would; what
  the server sent waits in the socket and is delivered, in order, once the gate opens.
- A **held reply**: :meth:`Hooks.hold_next_script` holds back the reply of the next script
  call (``EVALSHA``) that names a given Redis key, :meth:`Hooks.hold_command` that of the n-th
  command that names one of some keys. The server has run it; only its delivery to the caller
  waits: the window in which a racing write can land, or a cancellation finds a claim's reply
  still on the wire. On one server and behind Sentinel the hooks live in the client's
  connections, where the library's hot commands go without ``execute_command``
  (``direct.py``); on a cluster, in ``execute_command``.

And what the listener was handed: the test's own marker messages (:data:`MARKER`, to know
that it has caught up), and whether its connection failed under it (``Hooks.deaf``).

Nothing here reaches into the library: it only sees an ordinary client.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection

__all__ = ["MARKER", "Connections", "GatedPubSub", "Hooks", "ReplyHold", "Topology"]

#: How a test's own messages on a namespace's channel begin (the library ignores them).
MARKER = b"model-marker:"


class ReplyHold:
    """The reply of one command, held until :meth:`release`: the first command, after the
    hold was made, for which ``wanted(args)`` is true."""

    def __init__(self, wanted: Callable[[tuple[Any, ...]], bool]) -> None:
        self.wanted = wanted
        self.held = asyncio.Event()
        self._released = asyncio.Event()

    def release(self) -> None:
        self._released.set()

    async def hold(self) -> None:
        self.held.set()
        await self._released.wait()


class Hooks:
    """The switches of one hooked client."""

    def __init__(self) -> None:
        self.listening = asyncio.Event()
        self.listening.set()
        #: Every :data:`MARKER` message handed to the listener: the listener had taken in
        #: every message that came before it on its connection.
        self.markers: set[bytes] = set()
        #: Commands sent so far.
        self.sent = 0
        #: Commands answered so far, by each Redis key they named.
        self.answered: collections.Counter[str] = collections.Counter()
        #: Set when the pub/sub connection failed under the listener (an error came out of
        #: ``get_message``: the listener knows); cleared once it has subscribed again and taken
        #: that in (it asks for the next message). Meanwhile it hears nothing.
        self.deaf = False
        self.losses = 0
        self.subscriptions = 0
        self._catching_up = False
        self._hold: ReplyHold | None = None

    def hold_next_script(self, key: str) -> ReplyHold:
        """Hold the reply of the next script call (or plain GET: a lone read) that names
        ``key``."""

        def wanted(args: tuple[Any, ...]) -> bool:
            return bool(args) and str(args[0]).upper() in ("EVALSHA", "GET") and key in args

        self._hold = ReplyHold(wanted)
        return self._hold

    def hold_command(self, n: int, keys: tuple[str, ...]) -> ReplyHold:
        """Hold the reply of the ``n``-th command sent from now on that names one of ``keys``
        (1: the next one): a call's own, not the listener's."""
        sent = 0

        def wanted(args: tuple[Any, ...]) -> bool:
            nonlocal sent
            if any(key in args for key in keys):
                sent += 1
            return sent == n

        self._hold = ReplyHold(wanted)
        return self._hold

    def disarm(self) -> None:
        self._hold = None

    def new_listener(self) -> None:
        """The client was replaced: its listener is neither delayed nor lost."""
        self.listening.set()
        self.deaf = self._catching_up = False

    def before_command(self) -> None:
        self.sent += 1

    async def after_command(self, args: tuple[Any, ...]) -> None:
        self.answered.update(arg for arg in set(args) if isinstance(arg, str))
        hold = self._hold
        if hold is not None and hold.wanted(args):
            self._hold = None
            await hold.hold()


class GatedPubSub:
    """A redis-py pub/sub object whose messages wait while the client's listener is delayed.

    A message that arrives while the gate is closed (a call may have been waiting since before
    it closed) is kept, and delivered first once the gate opens."""

    #: Hides the inner connection from the listener, which then reads every message through
    #: :meth:`get_message`, where the gate is (it would otherwise take the replies from the
    #: connection's parser: ``subscriber.py``). That reading path is the fault suites' to test.
    connection = None

    def __init__(self, inner: Any, hooks: Hooks) -> None:
        self._inner = inner
        self._hooks = hooks
        self._kept: collections.deque[Any] = collections.deque()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def get_message(
        self, ignore_subscribe_messages: bool = False, timeout: float | None = 0.0
    ) -> Any:
        hooks = self._hooks
        if hooks._catching_up:  # it asks for more: it has taken in its new subscription
            hooks._catching_up = hooks.deaf = False
        try:
            message = await self._gated_message(ignore_subscribe_messages, timeout)
        except asyncio.CancelledError:
            raise
        except Exception:
            hooks.deaf = True
            hooks.losses += 1
            raise
        if message is not None and message.get("type") == "subscribe":
            hooks.subscriptions += 1
            hooks._catching_up = hooks.deaf
        return message

    async def _gated_message(self, ignore_subscribe_messages: bool, timeout: float | None) -> Any:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        listening = self._hooks.listening
        while True:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            if listening.is_set():
                if self._kept:
                    return self._delivered(self._kept.popleft())
                message = await self._inner.get_message(
                    ignore_subscribe_messages=ignore_subscribe_messages, timeout=remaining
                )
                if message is None or listening.is_set():
                    return self._delivered(message)
                self._kept.append(message)
                continue
            if remaining == 0.0:
                return None
            try:
                async with asyncio.timeout(remaining):
                    await listening.wait()
            except TimeoutError:
                return None

    def _delivered(self, message: Any) -> Any:
        if message is not None and message.get("type") == "message":
            data = message.get("data")
            if isinstance(data, str):
                data = data.encode()
            if isinstance(data, bytes) and data.startswith(MARKER):
                self._hooks.markers.add(data)
        return message


class ModelRedis(aioredis.Redis):
    """A ``Redis`` (or, through ``master_for(redis_class=...)``, a Sentinel master) with
    :class:`Hooks`, in its connections (:func:`hooked_connection`): its ``execute_command`` is
    redis-py's own, so the library sends its hot commands as it does in production, straight
    to a pooled connection (``direct.py``), and the hooks see them there."""

    hooks: Hooks

    @classmethod
    def hooked(cls, url: str, **options: Any) -> ModelRedis:
        """A client of the server at ``url``, with hooks of its own."""
        hooks = Hooks()
        connection_class = hooked_connection(aioredis.Connection, hooks)
        client = cls.from_url(url, connection_class=connection_class, **options)
        assert isinstance(client, ModelRedis)
        client.hooks = hooks
        return client

    def pubsub(self, **kwargs: Any) -> Any:
        return GatedPubSub(super().pubsub(**kwargs), self.hooks)


#: Commands of a pub/sub connection: their replies come through ``get_message``, out of step
#: with the commands (one per channel, messages between them).
_PUBSUB_COMMANDS = frozenset({"SUBSCRIBE", "UNSUBSCRIBE", "SSUBSCRIBE", "SUNSUBSCRIBE", "PING"})


def hooked_connection(base: type[Any], hooks: Hooks) -> type[Any]:
    """A subclass of the connection class ``base`` whose commands go through ``hooks``: each
    command sent counts, and each reply read is handed to :meth:`Hooks.after_command` (which
    may hold it) with the arguments of the command it answers.

    Commands are seen where their bytes are handed to the connection's stream writer: redis-py
    sends there, and so does the library's direct path (``direct.py``), without
    ``send_packed_command``."""

    class HookedConnection(base):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._awaiting: collections.deque[tuple[str, ...]] = collections.deque()

        async def _connect(self) -> None:
            await super()._connect()
            writer = self._writer
            write, writelines = writer.write, writer.writelines

            def hooked_write(data: Any) -> None:
                self._sending(data)
                write(data)

            def hooked_writelines(chunks: Any) -> None:
                chunks = list(chunks)
                self._sending(chunks)
                writelines(chunks)

            writer.write, writer.writelines = hooked_write, hooked_writelines

        def _sending(self, packed: Any) -> None:
            commands = _unpacked(packed)
            for _ in commands:
                hooks.before_command()
            self._awaiting.extend(c for c in commands if c[0].upper() not in _PUBSUB_COMMANDS)

        async def read_response(self, *args: Any, **kwargs: Any) -> Any:
            # The command a reply answers is taken off first: an error reply answers it too.
            answers = self._awaiting.popleft() if self._awaiting else None
            reply = await super().read_response(*args, **kwargs)
            if answers is not None:
                await hooks.after_command(answers)
            return reply

        async def disconnect(self, *args: Any, **kwargs: Any) -> None:
            self._awaiting.clear()  # replies still on the way are lost with the connection
            await super().disconnect(*args, **kwargs)

    return HookedConnection


def _unpacked(command: Any) -> list[tuple[str, ...]]:
    """The commands in a packed buffer (RESP arrays of bulk strings, as redis-py and hiredis
    pack them), each as its arguments."""
    if isinstance(command, bytes | bytearray | memoryview):
        data = bytes(command)
    else:
        data = b"".join(bytes(chunk) for chunk in command)
    commands = []
    position = 0
    while position < len(data):
        end = data.index(b"\r\n", position)
        count = int(data[position + 1 : end])
        position = end + 2
        arguments = []
        for _ in range(count):
            end = data.index(b"\r\n", position)
            length = int(data[position + 1 : end])
            start = end + 2
            arguments.append(data[start : start + length].decode("utf-8", "surrogateescape"))
            position = start + length + 2
        commands.append(tuple(arguments))
    return commands


class ModelCluster(RedisCluster):
    """A ``RedisCluster`` with :class:`Hooks`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hooks = Hooks()

    def pubsub(self, *args: Any, **kwargs: Any) -> Any:
        return GatedPubSub(super().pubsub(*args, **kwargs), self.hooks)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        self.hooks.before_command()
        result = await super().execute_command(*args, **kwargs)
        await self.hooks.after_command(args)
        return result


@dataclass(frozen=True)
class Topology:
    """Where the servers are: ``kind`` is ``single``, ``cluster`` or ``sentinel``."""

    kind: str
    #: The server's or a cluster node's URL (unused for Sentinel).
    url: str = ""
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str = ""
    #: Every server that holds data (where a listener may be connected).
    nodes: tuple[tuple[str, int], ...] = ()


class Connections:
    """Clients of one topology, all closed by :meth:`aclose`. Make them on the loop that will
    use them."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def client(self, *, protocol: int = 3, name: str | None = None, hooked: bool = False) -> Any:
        """A client of the topology; ``hooked``: a :class:`ModelRedis` or :class:`ModelCluster`
        (its ``hooks`` switch the faults). ``name``: its connections' ``CLIENT SETNAME``."""
        topology = self.topology
        options: dict[str, Any] = {"protocol": protocol}
        if name is not None:
            options["client_name"] = name
        client: Any
        if topology.kind == "cluster":
            cluster_class = ModelCluster if hooked else RedisCluster
            client = cluster_class.from_url(topology.url, **options)
        elif topology.kind == "sentinel":
            # redis-py's Sentinel.__init__ has no annotations
            sentinel = Sentinel(list(topology.sentinels), protocol=protocol)  # type: ignore[no-untyped-call, unused-ignore]
            self._closers.extend(node.aclose for node in sentinel.sentinels)
            hooks = Hooks()
            if hooked:
                options["connection_class"] = hooked_connection(SentinelManagedConnection, hooks)
            redis_class = ModelRedis if hooked else aioredis.Redis
            client = sentinel.master_for(topology.master_name, redis_class=redis_class, **options)
            if hooked:
                client.hooks = hooks
        elif hooked:
            client = ModelRedis.hooked(topology.url, **options)
        else:
            client = aioredis.Redis.from_url(topology.url, **options)
        self._closers.insert(0, client.aclose)
        return client

    async def publish_everywhere(self, client: Any, channel: str, marker: bytes) -> list[bytes]:
        """Publish a message that begins with ``marker`` from every master (each its own: the
        ``i``-th master's ends with ``:i``); returns them. A listener that has received the
        ``i``-th has received everything that master published before (a cluster forwards one
        master's messages to the other nodes in order, but those of two masters in no order
        between them)."""
        if self.topology.kind != "cluster":
            await client.publish(channel, marker + b":0")
            return [marker + b":0"]
        await client.initialize()  # a no-op once it knows the nodes
        sent = []
        for i, node in enumerate(sorted(client.get_primaries(), key=lambda node: node.name)):
            message = marker + b":%d" % i
            await client.execute_command("PUBLISH", channel, message, target_nodes=node)
            sent.append(message)
        return sent

    async def kill_listeners(self, name: str) -> int:
        """``CLIENT KILL`` every pub/sub connection named ``name``, on every data node; returns
        how many there were."""
        killed = 0
        for host, port in self.topology.nodes:
            node = aioredis.Redis(host=host, port=port, protocol=3)
            try:
                for entry in await node.client_list(_type="pubsub"):
                    if entry.get("name") == name:
                        killed += await node.client_kill_filter(_id=entry["id"])
            finally:
                await node.aclose()
        return killed

    async def aclose(self) -> None:
        closers, self._closers = self._closers, []
        for close in closers:
            await close()
