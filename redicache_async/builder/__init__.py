"""The builder engine: registrations (``registry.py``) and their refresh loops
(``refresh.py``)."""

from __future__ import annotations

from .registry import CacheBuilder
from .spec import BuildStatus

__all__ = ["BuildStatus", "CacheBuilder"]
