"""Commands sent on a pooled connection of redis-py's, packed by hiredis.

On one server (or behind Sentinel), a hot command (a read's ``GET``, a write's ``EVALSHA``)
skips ``Redis.execute_command``: its retry wrapper, its metrics recorder and its argument
packing in Python cost about 9 µs a call here, more than the margin between a cached read and a
raw ``GET`` + ``json.loads`` (issue 16). The connection comes from the client's own pool and goes
back to it, so its limits, its health checks and its Sentinel master discovery still apply. A
connection the server dropped fails the direct call with a ``ConnectionError``; the caller then
sends the command through ``execute_command``, whose retry policy reconnects as it always did.

Not where ``execute_command`` must see every command (see :func:`direct_pool`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from hiredis import pack_command
from redis.asyncio import Redis
from redis.observability.providers import get_observability_instance

__all__ = ["borrowed", "call", "direct_pool"]


def direct_pool(redis: Any) -> Any:
    """The pool that :func:`call` may borrow ``redis``'s connections from, or None where
    commands must go through ``execute_command``: a cluster, a client in single-connection
    mode, an ``execute_command`` overridden by a subclass or wrapped in place (as tracing
    instrumentations do), and redis-py's own metrics turned on (they count commands there).
    Decided when a client is created."""
    if not isinstance(redis, Redis) or redis.single_connection_client:
        return None
    method = type(redis).execute_command
    if method.__qualname__ != "Redis.execute_command" or hasattr(method, "__wrapped__"):
        return None
    if _redis_py_metrics_on():
        return None
    return redis.connection_pool


def _redis_py_metrics_on() -> bool:
    manager = get_observability_instance().get_provider_manager()
    return manager is not None and bool(manager.config.enabled_telemetry)


async def call(pool: Any, args: tuple[Any, ...]) -> Any:
    """The reply to the command ``args``, sent on a connection of ``pool``; an error reply is
    raised as redis-py raises it. The connection goes back in step or closed: redis-py's
    ``send_packed_command`` and ``read_response`` close it on any failure but an error reply,
    a cancellation included (its rule since redis-py#1128, which every command/reply pair of
    its own relies on; ``tests/faults/test_direct_commands.py`` holds it to that)."""
    connection = await pool.get_connection()
    try:
        # redis-py's StreamWriter; None where the connection has none (or this redis-py
        # names it otherwise), and then redis-py sends.
        writer = getattr(connection, "_writer", None)
        if writer is None or connection.health_check_interval:
            await connection.send_packed_command(pack_command(args))
        else:
            # redis-py sends under ``asyncio.wait_for`` (its ``socket_timeout``, 5 s by
            # default), which on Python 3.11 runs the send in a task of its own: two turns of
            # the event loop before and after the bytes leave, about 15 µs of a write's
            # invalidation here. The caller's deadline bounds the whole command instead. A
            # write to a connection that failed is dropped by its transport, and the read
            # below then raises the failure (closing the connection) as it would have.
            writer.write(pack_command(args))
        return await connection.read_response()
    finally:
        await pool.release(connection)


@asynccontextmanager
async def borrowed(pool: Any) -> AsyncIterator[Any]:
    """A connection of ``pool`` for a series of packed commands, closed if the series fails
    (replies may still be on their way, so the connection cannot serve another command)."""
    connection = await pool.get_connection()
    try:
        yield connection
    except BaseException:
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)
