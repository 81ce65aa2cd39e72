"""Values as the client stores them (``redicache_async/stored.py``), read and written behind
its back, and the commands that read them."""

from __future__ import annotations

import hashlib
from typing import Any

import redis.asyncio as aioredis

from redicache_async.stored import pack, unpack
from redicache_async.value_scripts import READ_MANY

__all__ = ["put_value", "reads_value", "stored_payload", "stored_version"]

_READ_MANY_SHA = hashlib.sha1(READ_MANY.encode()).hexdigest()


def reads_value(args: tuple[Any, ...]) -> bool:
    """A :attr:`GatedRedis.holds` that matches a read of a value: a lone read's GET, or the
    script that reads a batch (or reads where a replica must refuse)."""
    if not args:
        return False
    name = str(args[0]).upper()
    return name == "GET" or (name == "EVALSHA" and len(args) > 1 and args[1] == _READ_MANY_SHA)


async def stored_payload(r: aioredis.Redis, value_key: str) -> bytes | None:
    """The payload stored at ``value_key`` (None: no value in this layout)."""
    raw = await r.get(value_key)
    stored = None if raw is None else unpack(raw)
    return None if stored is None else stored[2]


async def stored_version(r: aioredis.Redis, value_key: str) -> int:
    """The version stored at ``value_key`` (0: no value in this layout)."""
    raw = await r.get(value_key)
    stored = None if raw is None else unpack(raw)
    return 0 if stored is None else stored[0]


async def put_value(
    r: aioredis.Redis, value_key: str, payload: bytes | str, *, version: int = 1
) -> None:
    """Write a value as the client would, without its event or version bump (behind its back)."""
    data = payload.encode() if isinstance(payload, str) else payload
    await r.set(value_key, pack(version, 0, data))
