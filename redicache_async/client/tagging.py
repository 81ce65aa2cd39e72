"""Invalidating by tag in O(1): ``invalidate_tags()`` records when each tag was invalidated,
and every value that carries one of them and is not newer is gone (``tags.py``).

As with ``clear()``, a value's version is when its fetch claimed the key's lock (or when
``set`` wrote it), so a fetch that started before the invalidation cannot store a value that
anyone takes: the write script refuses it where it can read the tag times (one node, Sentinel);
on a cluster its writer reads them before writing (``_overtaken``) and after, taking back a
value that an invalidation during the write overtook (``_outlives_invalidations``); readers skip
it anyway. One ``tags`` event, the same as a delete's in cost whatever the number of values,
makes every process drop its local copies that carry the tags.
"""

from __future__ import annotations

from redicache_async.invalidation import OP_TAGS, event_prefix, tags_event_key
from redicache_async.replies import text
from redicache_async.tags import check_tags

from .coherence import Coherence

__all__ = ["Tagging"]


class Tagging(Coherence):
    """``invalidate_tags()``."""

    async def invalidate_tags(self, *tags: str) -> None:
        """Remove every value stored with any of ``tags``, in Redis and in every process's
        local layer, in one round trip whatever their number. A fetch that started before it
        stores nothing that any reader takes. Without tags, nothing happens."""
        checked = check_tags(tags, "invalidate_tags()'s tags")
        self._check_open()
        if not checked:
            return
        key = self._keys.tag_times
        at = await self._gateway.call(
            self._scripts.invalidate_tags(
                keys=[key, *self._stream_keys],
                args=[
                    self._keys.channel,
                    event_prefix(OP_TAGS, tags_event_key(checked), self._origin),
                    *checked,
                ],
            ),
            key,
        )
        self._on_tags_invalidated(checked, int(text(at)))
        self._stats.invalidations_sent += 1
