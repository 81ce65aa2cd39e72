"""Checks of caller input, shared by the client and the builder: each raises at the call with a
message that names the argument and what is wrong with it."""

from __future__ import annotations

import functools
import inspect
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

from .errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = [
    "MAX_SECONDS",
    "MIN_TTL",
    "check_args",
    "check_callable",
    "check_count",
    "check_flag",
    "check_fraction",
    "check_instances",
    "check_kwargs",
    "check_name",
    "check_optional_seconds",
    "check_seconds",
    "is_async_callable",
    "seconds_to_ms",
    "ttl_to_ms",
]

T = TypeVar("T")

#: The longest duration any option or ``ttl`` takes: 100 years, in seconds. Far beyond what a
#: cache needs, and small enough that its milliseconds (about 3.2e12) stay exact everywhere
#: they go: in a Lua number (a double, which Lua 5.1 prints with 14 significant digits) and in
#: Redis's ``PX`` / ``PEXPIRE``, which refuse a deadline beyond 2^63 - 1 ms (about 9.2e15 s).
MAX_SECONDS: Final = 100 * 365.25 * 24 * 3600

#: The shortest ``ttl``: one millisecond, Redis's unit.
MIN_TTL: Final = 0.001

_MAX_SHOWN_BITS: Final = 128

_NAME_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,200}")


def _shown(value: object) -> str:
    """``repr(value)``, except for an int too large to print (Python refuses 4,300 digits)."""
    if isinstance(value, int) and value.bit_length() > _MAX_SHOWN_BITS:
        return f"an int of {value.bit_length()} bits"
    return repr(value)


def check_optional_seconds(name: str, value: object) -> float | None:
    """None, or a finite number of seconds greater than zero, at most :data:`MAX_SECONDS`."""
    return None if value is None else check_seconds(name, value)


def check_seconds(
    name: str, value: object, *, allow_zero: bool = False, minimum: float = 0.0
) -> float:
    """A number of seconds greater than zero (or equal to it, with ``allow_zero``), at least
    ``minimum`` and at most :data:`MAX_SECONDS`."""
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
    if value < minimum:
        raise InvalidArgumentError(f"{name} must be at least {minimum:g} s, got {value!r}")
    return float(value)


def seconds_to_ms(seconds: float) -> int:
    """A duration for ``PX`` / ``PEXPIRE``: whole milliseconds, at least one."""
    return max(1, round(seconds * 1000))


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


def check_fraction(name: str, value: object) -> float:
    """A number strictly between 0 and 1 (a share of a ttl)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentTypeError(
            f"{name} must be a number between 0 and 1, not {type(value).__name__}"
        )
    if not 0 < value < 1:  # NaN fails it too
        raise InvalidArgumentError(
            f"{name} must be greater than 0 and less than 1, got {_shown(value)}"
        )
    return float(value)


def check_callable(name: str, value: object) -> Callable[..., Any]:
    if not callable(value):
        raise InvalidArgumentTypeError(f"{name} must be callable, not {type(value).__name__}")
    return value


def check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgumentTypeError(f"{name} must be a bool, not {type(value).__name__}")
    return value


def check_name(value: object) -> str:
    """A registration's name: 1 to 200 letters, digits, '_' or '-'."""
    if not isinstance(value, str):
        raise InvalidArgumentTypeError(f"name must be a str, not {type(value).__name__}")
    if not _NAME_RE.fullmatch(value):
        raise InvalidArgumentError(f"name {value!r} must be 1 to 200 letters, digits, '_' or '-'")
    return value


def check_args(args: object) -> tuple[Any, ...]:
    """Positional arguments for a fetch function: a tuple or a list."""
    if not isinstance(args, list | tuple):
        raise InvalidArgumentTypeError(f"args must be a tuple or list, not {type(args).__name__}")
    return tuple(args)


def check_kwargs(kwargs: object) -> Mapping[str, Any]:
    """Keyword arguments for a fetch function: None or a mapping with str keys (copied)."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise InvalidArgumentTypeError(f"kwargs must be a mapping, not {type(kwargs).__name__}")
    if not all(isinstance(key, str) for key in kwargs):
        raise InvalidArgumentTypeError("kwargs keys must be str")
    return dict(kwargs)


def check_instances(name: str, values: object, kind: type[T]) -> tuple[T, ...]:
    """A non-empty list (or tuple) of ``kind`` objects, as a tuple."""
    what = kind.__name__
    if isinstance(values, kind) or not isinstance(values, Sequence):
        raise InvalidArgumentTypeError(f"{name} must be a list of {what}")
    if not values:
        raise InvalidArgumentError(f"{name} must not be empty")
    for value in values:
        if not isinstance(value, kind):
            raise InvalidArgumentTypeError(
                f"{name} must hold {what} objects, not {type(value).__name__}"
            )
    return tuple(values)


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """True for coroutine functions, objects with an async ``__call__`` (a ``@cache.cached``
    function), and partials of either."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004
    )
