"""TLS mistakes, told apart from outages.

A wrong CA, a certificate for another host, or ``rediss://`` pointed at a plain port fail the
handshake with an ``ssl.SSLError`` that redis-py chains under its ``ConnectionError``: retrying
will never help, so it is a configuration error, like a wrong password. A plain ``redis://``
URL pointed at a TLS port gives no such clue: the server just resets the connection, as a
dying server might. There, one TLS handshake with the same address tells the two apart: if the
server speaks TLS, the client was configured wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from redis.asyncio.connection import SSLConnection

from .errors import RedisConfigurationError

__all__ = ["diagnose_tls", "tls_error"]

#: SSL errors that a server going away causes as well: outages, not mistakes.
_TRANSIENT = (
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
    ssl.SSLSyscallError,
    ssl.SSLWantReadError,
    ssl.SSLWantWriteError,
)


def _chain(exc: BaseException | None) -> list[BaseException]:
    found: list[BaseException] = []
    while exc is not None and all(exc is not seen for seen in found):
        found.append(exc)
        exc = exc.__cause__ or exc.__context__
    return found


def tls_error(exc: BaseException) -> RedisConfigurationError | None:
    """The configuration error behind ``exc`` when a TLS handshake failed for good."""
    for cause in _chain(exc):
        if isinstance(cause, ssl.SSLError) and not isinstance(cause, _TRANSIENT):
            error = RedisConfigurationError(
                f"the TLS handshake with Redis failed ({cause.reason or cause}): check the CA "
                "(ssl_ca_certs), that the certificate names the host you connect to, and that "
                "the URL's scheme matches the server (rediss:// for TLS, redis:// without)"
            )
            error.__cause__ = exc
            return error
    return None


def _was_reset(exc: BaseException) -> bool:
    return any(
        isinstance(cause, ConnectionResetError) or "closed by server" in str(cause)
        for cause in _chain(exc)
    )


async def speaks_tls(host: str, port: int, timeout: float) -> bool:
    """True when a TLS handshake with ``host:port`` succeeds. The certificate is not checked:
    only the protocol is in question."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port, ssl=context)
    except (OSError, TimeoutError):  # ssl.SSLError is an OSError
        return False
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(timeout):
            await writer.wait_closed()
    return True


async def diagnose_tls(
    redis: Any, exc: BaseException, timeout: float
) -> RedisConfigurationError | None:
    """The configuration error behind ``exc``, a failure of ``redis`` (a single-node client),
    if it is a TLS mistake: a failed handshake, or a plain client whose connection was reset
    by a server that speaks TLS."""
    error = tls_error(exc)
    if error is not None or not _was_reset(exc):
        return error
    pool = getattr(redis, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", {})
    host, port = kwargs.get("host"), kwargs.get("port")
    if (
        pool is None
        or issubclass(pool.connection_class, SSLConnection)
        or not isinstance(host, str)
        or not isinstance(port, int)
        or not await speaks_tls(host, port, timeout)
    ):
        return None
    error = RedisConfigurationError(
        f"Redis at {host}:{port} speaks TLS, but this client connects in plain text: use a "
        "rediss:// URL (with ssl_ca_certs=...)"
    )
    error.__cause__ = exc
    return error
