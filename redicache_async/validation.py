"""Checks of caller input, shared by the client and the builder: each raises at the call with a
message that names the argument and what is wrong with it."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any, Final

from .errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = [
    "MAX_SECONDS",
    "MIN_TTL",
    "check_callable",
    "check_count",
    "check_optional_seconds",
    "check_seconds",
    "is_async_callable",
    "ttl_to_ms",
]

#: The longest duration any option or ``ttl`` takes: 100 years, in seconds. Far beyond what a
#: cache needs, and small enough that its milliseconds (about 3.2e12) stay exact everywhere
#: they go: in a Lua number (a double, which Lua 5.1 prints with 14 significant digits) and in
#: Redis's ``PX`` / ``PEXPIRE``, which refuse a deadline beyond 2^63 - 1 ms (about 9.2e15 s).
MAX_SECONDS: Final = 100 * 365.25 * 24 * 3600

#: The shortest ``ttl``: one millisecond, Redis's unit.
MIN_TTL: Final = 0.001

_MAX_SHOWN_BITS: Final = 128


def _shown(value: object) -> str:
    """``repr(value)``, except for an int too large to print (Python refuses 4,300 digits)."""
    if isinstance(value, int) and value.bit_length() > _MAX_SHOWN_BITS:
        return f"an int of {value.bit_length()} bits"
    return repr(value)


def check_optional_seconds(name: str, value: object) -> float | None:
    """None, or a finite number of seconds greater than zero, at most :data:`MAX_SECONDS`."""
    return None if value is None else check_seconds(name, value)


def check_seconds(name: str, value: object, *, allow_zero: bool = False) -> float:
    """A number of seconds greater than zero (or equal to it, with ``allow_zero``) and at most
    :data:`MAX_SECONDS`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentTypeError(
            f"{name} must be a number of seconds, not {type(value).__name__}"
        )
    # Comparisons only: math.isnan() overflows on a large int. NaN fails both of the first two.
    if not (value > 0 or (allow_zero and value == 0)) or value == math.inf:
        bound = "zero or more" if allow_zero else "greater than zero"
        raise InvalidArgumentError(f"{name} must be finite and {bound}, got {_shown(value)}")
    if value > MAX_SECONDS:
        raise InvalidArgumentError(
            f"{name} must be at most {MAX_SECONDS:.0f} s (100 years), got {_shown(value)}"
        )
    return float(value)


def check_count(name: str, value: object, *, minimum: int = 0) -> int:
    """An int of at least ``minimum`` (bools are refused: ``True`` is no count)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentTypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        bound = "zero or more" if minimum == 0 else f"at least {minimum}"
        raise InvalidArgumentError(f"{name} must be {bound}, got {_shown(value)}")
    return value


def ttl_to_ms(ttl: object) -> int:
    """A ttl in seconds (None: no expiry) as whole milliseconds for Redis (0: no expiry)."""
    seconds = check_optional_seconds("ttl", ttl)
    if seconds is None:
        return 0
    if seconds < MIN_TTL:
        raise InvalidArgumentError(f"ttl must be at least 0.001 s (one millisecond), got {ttl!r}")
    return round(seconds * 1000)


def check_callable(name: str, value: object) -> Callable[..., Any]:
    if not callable(value):
        raise InvalidArgumentTypeError(f"{name} must be callable, not {type(value).__name__}")
    return value


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """True for coroutine functions, objects with an async ``__call__`` (a ``@cache.cached``
    function), and partials of either."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004
    )
