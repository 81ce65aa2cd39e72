"""``@cache.cached(ttl=..., key=...)``: a coroutine function whose results are kept in a
:class:`~redicache_async.CacheClient`, with ``get_or_init``'s guarantees (one call of the
function across every process for a missing key, coherent local copies).

The default key is the function's module and qualified name followed by the ``repr`` of its
arguments, accepted only when every argument is a ``str``, ``int``, ``float``, ``bool`` or
``None``: their ``repr`` tells any two values apart, where an object's default ``repr`` carries
its address (and so would miss, or worse, hit another object's entry once the address is
reused). Anything else needs ``key=``, a function of the same arguments that returns the key.
A key longer than the client's limit is replaced by its prefix and a SHA-256 digest.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, Self, TypeVar, cast, overload

from .errors import InvalidArgumentError, InvalidArgumentTypeError
from .keys import MAX_KEY_BYTES, validate_key
from .validation import check_callable, ttl_to_ms

if TYPE_CHECKING:
    from .client import CacheClient

__all__ = ["CachedFunction", "cached"]

P = ParamSpec("P")
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

_SCALARS = frozenset({str, int, float, bool, type(None)})


class CachedFunction(Protocol, Generic[P, T_co]):
    """What ``@cache.cached(...)`` returns: the function, plus its key and invalidation."""

    __name__: str
    __qualname__: str

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(
        self, instance: object, owner: type[Any] | None = None
    ) -> Callable[..., Coroutine[Any, Any, T_co]]: ...

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, T_co]: ...

    def key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The cache key of a call with these arguments."""
        ...

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Remove the entry of a call with these arguments, everywhere."""
        ...


def cached(
    client: CacheClient,
    ttl: float | None = None,
    *,
    key: Callable[..., str] | None = None,
) -> Callable[[Callable[P, Awaitable[T]]], CachedFunction[P, T]]:
    """See :meth:`CacheClient.cached`."""
    ttl_to_ms(ttl)  # rejects a bad ttl now rather than at the first call
    if key is not None:
        check_callable("key", key)

    def decorate(function: Callable[P, Awaitable[T]]) -> CachedFunction[P, T]:
        if not inspect.iscoroutinefunction(function):
            raise InvalidArgumentTypeError(
                f"cached() wraps coroutine functions (async def), not {function!r}"
            )
        make_key = key if key is not None else _default_key(function)
        get_or_init, local_value = client.get_or_init, client._local_value

        @functools.wraps(function)
        async def call(*args: P.args, **kwargs: P.kwargs) -> T:
            cache_key = make_key(*args, **kwargs)
            try:
                value = local_value(cache_key)
            except TypeError:  # an unhashable key: get_or_init says what is wrong with it
                value = None
            if value is not None:  # a local hit, without the fetch's partial or a coroutine
                return value  # type: ignore[no-any-return]
            return await get_or_init(  # type: ignore[no-any-return]
                cache_key, functools.partial(function, *args, **kwargs), ttl
            )

        def key_of(*args: P.args, **kwargs: P.kwargs) -> str:
            return validate_key(make_key(*args, **kwargs))

        async def invalidate(*args: P.args, **kwargs: P.kwargs) -> None:
            await client.delete(make_key(*args, **kwargs))

        wrapper = cast(Any, call)
        wrapper.key = key_of
        wrapper.invalidate = invalidate
        return cast(CachedFunction[P, T], wrapper)

    return decorate


def _default_key(function: Callable[..., Any]) -> Callable[..., str]:
    prefix = f"{function.__module__}.{function.__qualname__}"

    def make_key(*args: Any, **kwargs: Any) -> str:
        for value in args:
            if type(value) not in _SCALARS:
                raise _unkeyable(prefix, value)
        if kwargs:
            for value in kwargs.values():
                if type(value) not in _SCALARS:
                    raise _unkeyable(prefix, value)
            text = f"{prefix}{args!r}{sorted(kwargs.items())!r}"
        else:
            text = f"{prefix}{args!r}"
        if len(text) > MAX_KEY_BYTES // 4 and len(text.encode()) > MAX_KEY_BYTES:
            digest = hashlib.sha256(text.encode(), usedforsecurity=False).hexdigest()
            text = f"{prefix}#{digest}"
            if len(text.encode()) > MAX_KEY_BYTES:
                raise InvalidArgumentError(f"the name {prefix!r} is too long for a cache key")
        return text

    return make_key


def _unkeyable(prefix: str, value: object) -> InvalidArgumentTypeError:
    return InvalidArgumentTypeError(
        f"{prefix}: the default cache key takes str, int, float, bool and None arguments only, "
        f"not {type(value).__name__}; pass key=... (a function of the same arguments that "
        "returns the key)"
    )
