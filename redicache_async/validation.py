"""Checks of caller input, shared by the client and the builder: each raises at the call with a
message that names the argument and what is wrong with it."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

from .errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = [
    "check_callable",
    "check_count",
    "check_optional_seconds",
    "check_seconds",
    "is_async_callable",
    "ttl_to_ms",
]


def check_optional_seconds(name: str, value: object) -> float | None:
    """None, or a finite number of seconds greater than zero."""
    return None if value is None else check_seconds(name, value)


def check_seconds(name: str, value: object, *, allow_zero: bool = False) -> float:
    """A finite number of seconds greater than zero (or equal to it, with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentTypeError(
            f"{name} must be a number of seconds, not {type(value).__name__}"
        )
    if math.isnan(value) or math.isinf(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "greater than zero"
        raise InvalidArgumentError(f"{name} must be finite and {bound}, got {value!r}")
    return float(value)


def check_count(name: str, value: object, *, minimum: int = 0) -> int:
    """An int of at least ``minimum`` (bools are refused: ``True`` is no count)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentTypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        bound = "zero or more" if minimum == 0 else f"at least {minimum}"
        raise InvalidArgumentError(f"{name} must be {bound}, got {value}")
    return value


def ttl_to_ms(ttl: object) -> int:
    """A ttl in seconds (None: no expiry) as whole milliseconds for Redis (0: no expiry)."""
    seconds = check_optional_seconds("ttl", ttl)
    if seconds is None:
        return 0
    if seconds < 0.001:
        raise InvalidArgumentError(f"ttl must be at least 0.001 s (one millisecond), got {ttl!r}")
    return round(seconds * 1000)


def check_callable(name: str, value: object) -> Callable[..., Any]:
    if not callable(value):
        raise InvalidArgumentTypeError(f"{name} must be callable, not {type(value).__name__}")
    return value


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """True for coroutine functions, partials of them and objects with an async ``__call__``."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004
    )
