"""Reading a pub/sub subscription in batches.

redis-py hands out one message per ``get_message`` call, and each call costs a timeout object, a
health check, a message dict and (since redis-py 8) a metrics hook: at tens of thousands of
events a second that, not the events, was what held a listener back (issue 16's profile: 51% of
its time). But one read from the socket brings many messages at once, and hiredis has parsed
them all by then. The listener takes every complete reply already in the connection's buffer
(:func:`buffered_reader`), without those per-call costs, and when the buffer is empty waits for
the next bytes on the socket (:func:`socket_reader`), not for ``get_message``.

This reads redis-py's parser state (``connection._parser._reader``, a ``hiredis.Reader``): it is
not public API. Where it is not there (no hiredis, or a redis-py that keeps it elsewhere),
both functions say so and the listener reads one message per ``get_message`` call.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any, Final

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError


def _hiredis_parsers() -> Any:
    try:
        return importlib.import_module("redis._parsers.hiredis")
    except ImportError:  # a redis-py without the module: no batches
        return None


_PARSERS = _hiredis_parsers()
#: The parser class whose reader holds the parsed replies, and what its reader returns when
#: the buffer holds no complete reply.
_PARSER: Final[type | None] = getattr(_PARSERS, "_AsyncHiredisParser", None)
_NOT_ENOUGH_DATA: Final = getattr(_PARSERS, "NOT_ENOUGH_DATA", None)

__all__ = ["BufferedReplies", "SocketRead", "buffered_reader", "socket_reader"]

#: The message types whose payload is an event (``smessage``: sharded pub/sub).
_MESSAGES: Final = frozenset({b"message", "message", b"smessage", "smessage"})

BufferedReplies = Callable[[], Any]
"""The next complete reply already received, or ``None`` when there is none left."""


def buffered_reader(pubsub: Any) -> BufferedReplies | None:
    """A function returning the replies already parsed on ``pubsub``'s connection, or None
    when this redis-py does not expose them the way this module reads them."""
    connection = getattr(pubsub, "connection", None)
    parser = getattr(connection, "_parser", None)
    if _PARSER is None or _NOT_ENOUGH_DATA is None or not isinstance(parser, _PARSER):
        return None
    reader = getattr(parser, "_reader", None)
    gets = getattr(reader, "gets", None)
    if gets is None:
        return None
    sentinel = _NOT_ENOUGH_DATA

    def next_reply() -> Any:
        reply = gets()
        return None if reply is sentinel else reply

    return next_reply


SocketRead = Callable[[], Awaitable[Any]]
"""Wait for the next bytes on the connection and hand them to its parser (raises redis-py's
ConnectionError when the server closed it)."""


def socket_reader(pubsub: Any) -> SocketRead | None:
    """A function that waits for data on ``pubsub``'s connection and feeds it to the parser, so
    that :func:`buffered_reader` then finds the replies; None where this redis-py does not
    expose it. It lets a listener skip ``get_message`` even for the first reply of a read: its
    timeout object, health check, retry wrapper and message dict cost as much as the rest of an
    event's handling (issue 16's trace: about 10 µs of an invalidation's latency)."""
    if buffered_reader(pubsub) is None:
        return None
    read: SocketRead | None = getattr(pubsub.connection._parser, "read_from_socket", None)
    return read


def event_payload(reply: Any) -> Any:
    """The payload of a reply that is a published message, or None for any other reply."""
    if isinstance(reply, list) and len(reply) == 3 and reply[0] in _MESSAGES:
        return reply[2]
    return None


async def settle(pubsub: Any, reply: Any) -> Any:
    """What ``get_message`` would have made of a buffered reply that is not a published
    message (a pong, a subscription, a push notification): errors raised as redis-py raises
    them, push notifications through the parser's handlers, and the rest as a message dict
    (or None where redis-py returns none)."""
    if isinstance(reply, (RedisConnectionError, ResponseError)):
        raise reply
    if isinstance(reply, list) and reply and isinstance(reply[0], RedisConnectionError):
        raise reply[0]
    parser = pubsub.connection._parser
    push_type = getattr(parser, "_hiredis_PushNotificationType", None)
    if push_type is not None and isinstance(reply, push_type):
        reply = await parser.handle_push_response(reply)
    connection = pubsub.connection
    if connection.health_check_interval and reply in pubsub.health_check_response:
        return None
    return await pubsub.handle_message(reply, ignore_subscribe_messages=False)
