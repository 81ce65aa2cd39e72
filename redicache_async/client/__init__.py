"""The cache client engine (see ``cache.py``)."""

from __future__ import annotations

from .cache import CacheClient

__all__ = ["CacheClient"]
