"""The reader that checks the builders' targets the whole time the demo's second part runs.

:class:`TargetReader` reads both targets in a loop from the parent process, raw (one MULTI:
LLEN, LRANGE, HLEN, HVALS) and through ``CacheClient.get_target``, and counts every read that
was not one whole build (empty, partial, or items of two builds) or was older than the read
before it; it also notes when each new build first showed, so the parent can time takeovers.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import redis.asyncio as aioredis

from redicache_async.client import CacheClient

from .builder_worker import BUILDER_ITEMS, BuilderKeys
from .processes import POLL_SECONDS

__all__ = ["TargetReader"]


def _json_items(raws: list[bytes]) -> Any:
    """The items of a raw LRANGE or HVALS reply (decoded in one go: it is faster)."""
    try:
        return json.loads(b"[" + b",".join(raws) + b"]")
    except ValueError:
        return None


def _check_build(items: Any, ordered: bool) -> tuple[int, int] | str:
    """``(build, pid)`` when ``items`` is one whole build, else what is wrong with it."""
    if items is None:
        return "not JSON"
    if not items:
        return "empty"
    if len(items) != BUILDER_ITEMS:
        return f"partial ({len(items)} of {BUILDER_ITEMS} items)"
    ids = [item["id"] for item in items]
    if (ids if ordered else sorted(ids)) != list(range(BUILDER_ITEMS)):
        return "wrong ids"
    builds = {(item["build"], item["by"]) for item in items}
    if len(builds) != 1:
        return f"items of {len(builds)} builds"
    return builds.pop()


class TargetReader:
    """Reads both targets in a loop, raw (one MULTI: LLEN, LRANGE, HLEN, HVALS) and through
    ``CacheClient.get_target``, and counts every read that was not one whole, newer-or-same
    build."""

    def __init__(self, r: aioredis.Redis, cache: CacheClient, keys: BuilderKeys) -> None:
        self._r = r
        self._cache = cache
        self._keys = keys
        self.raw_reads = 0
        self.client_reads = 0
        self.bad = 0
        self.problems: list[str] = []
        #: ``(monotonic time, build, pid)`` each time the raw reader saw a new build.
        self.builds: list[tuple[float, int, int]] = []
        self._stop = asyncio.Event()

    def _bad(self, what: str) -> None:
        self.bad += 1
        if len(self.problems) < 5:
            self.problems.append(what)

    async def _raw(self) -> None:
        last = 0
        keys = self._keys
        while not self._stop.is_set():
            try:
                async with self._r.pipeline(transaction=True) as pipe:
                    pipe.llen(keys.list_target)
                    pipe.lrange(keys.list_target, 0, -1)
                    pipe.hlen(keys.hash_target)
                    pipe.hvals(keys.hash_target)
                    llen, lrange, hlen, hvals = await pipe.execute()
            except Exception as exc:  # reported, not raised: the count is the result
                self._bad(f"raw read failed: {exc!r}")
                await asyncio.sleep(0.01)
                continue
            self.raw_reads += 1
            as_list = _check_build(_json_items(lrange), ordered=True)
            as_hash = _check_build(_json_items(hvals), ordered=False)
            if llen != BUILDER_ITEMS or hlen != BUILDER_ITEMS:
                self._bad(f"raw read: LLEN {llen}, HLEN {hlen}")
            elif isinstance(as_list, str) or isinstance(as_hash, str):
                self._bad(f"raw read: list {as_list}, hash {as_hash}")
            elif as_list != as_hash:
                self._bad(f"raw read: list of build {as_list[0]}, hash of build {as_hash[0]}")
            elif as_list[0] < last:
                self._bad(f"raw read: build {as_list[0]} after build {last}")
            elif as_list[0] > last:
                last = as_list[0]
                self.builds.append((time.monotonic(), *as_list))

    async def _client(self) -> None:
        last = {self._keys.list_target: 0, self._keys.hash_target: 0}
        while not self._stop.is_set():
            for key, last_build in last.items():
                try:
                    value = await self._cache.get_target(key)
                except Exception as exc:
                    self._bad(f"get_target({key!r}) failed: {exc!r}")
                    continue
                self.client_reads += 1
                if isinstance(value, dict):
                    value = list(value.values())
                found = (
                    "missing"
                    if value is None
                    else _check_build(value, ordered=key == self._keys.list_target)
                )
                if isinstance(found, str):
                    self._bad(f"get_target({key!r}): {found}")
                elif found[0] < last_build:
                    self._bad(f"get_target({key!r}): build {found[0]} after {last_build}")
                else:
                    last[key] = found[0]
            # Local hits do not yield to the loop: give the other tasks their turn.
            await asyncio.sleep(POLL_SECONDS)

    async def run(self) -> None:
        await asyncio.gather(self._raw(), self._client())

    def stop(self) -> None:
        self._stop.set()

    def first_build_after(self, since: float, pid: int) -> float | None:
        """When the raw reader first saw a build by ``pid`` made after ``since``."""
        return next((at for at, _, by in self.builds if at >= since and by == pid), None)
