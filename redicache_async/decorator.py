"""``@cache.cached(ttl=..., key=...)``: a coroutine function whose results are kept in a
:class:`~redicache_async.CacheClient`, with ``get_or_init``'s guarantees (one call of the
function across every process for a missing key, coherent local copies).

The default key is the call, not its spelling: the arguments are bound to the function's
signature with its defaults applied, so ``report("d1")``, ``report(day="d1")`` and
``report("d1", "eu")`` (``"eu"`` being the default) are one entry. The key is the function's
module and qualified name followed by every parameter in the signature's order, as
``name=repr(value)``; a ``*args`` parameter as a tuple, a ``**kwargs`` parameter as its items
sorted by name::

    myapp.reports.report(day='d1', region='eu')

Only ``str``, ``int``, ``float``, ``bool`` and ``None`` arguments are accepted: their ``repr``
tells any two values apart, where an object's default ``repr`` carries its address (and so
would miss, or worse, hit another object's entry once the address is reused). A parameter left
at a default of another type (a sentinel object, say) is written ``<default>``. Anything else
needs ``key=``, a function of the same arguments that returns the key. A key longer than the
client's limit is replaced by its prefix and a SHA-256 digest. A call whose arguments do not
fit the signature raises the ``TypeError`` the function itself raises, before any I/O.

The default key names everything a module-level function's result depends on (its globals
aside), and names it alike in every process, which is how processes share entries. It cannot
name what a function holds besides its arguments, so it is refused at decoration time, with
:class:`~redicache_async.InvalidArgumentError`, for a function that reads variables of the
function that defines it (a closure: ``make(1)`` and ``make(2)`` of one factory would share
entries, in one process or across processes, and no check in one process can see what another
process's closure holds), a ``functools.partial`` and a bound method. Those pass ``key=``. A
nested function that reads nothing from its enclosing scope is keyed like a module-level one.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Generic, ParamSpec, Protocol, Self, TypeVar, cast, overload

from .call_keys import CallKeys, check_default_keyable, function_name
from .errors import InvalidArgumentTypeError
from .keys import validate_key
from .soft_timeout import check_soft_timeout
from .tags import check_tags
from .validation import check_callable, check_fraction, ttl_to_ms

__all__ = ["BoundCachedFunction", "CacheSource", "CachedFunction", "Decorates"]

P = ParamSpec("P")
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class CacheSource(Protocol):
    """What a cached function calls: a :class:`~redicache_async.CacheClient`, or a
    :class:`~redicache_async.CacheHandle` that finds its client at each call. Public
    operations only, so that the decorator sits below the client and imports nothing of it.
    ``get_or_init`` is called as the client's ``get_or_init(key, fetch, ttl, **options)``."""

    @property
    def get_or_init(self) -> Callable[..., Awaitable[Any]]: ...

    def delete(self, key: str) -> Awaitable[None]: ...

    def local_value(self, key: str) -> Any: ...


class BoundCachedFunction(Protocol[T_co]):
    """``instance.method`` for a cached method: the call, key and invalidation with the
    instance as the first argument, as ``key=`` receives it."""

    __self__: object
    __name__: str
    __qualname__: str

    def __call__(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, T_co]: ...

    def key(self, *args: Any, **kwargs: Any) -> str:
        """The cache key of a call with these arguments."""
        ...

    async def invalidate(self, *args: Any, **kwargs: Any) -> None:
        """Remove the entry of a call with these arguments, everywhere."""
        ...


class CachedFunction(Protocol, Generic[P, T_co]):
    """What ``@cache.cached(...)`` returns: the function, plus its key and invalidation."""

    __name__: str
    __qualname__: str

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(
        self, instance: object, owner: type[Any] | None = None
    ) -> BoundCachedFunction[T_co]: ...

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, T_co]: ...

    def key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The cache key of a call with these arguments (any spelling of one call gives one
        key)."""
        ...

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Remove the entry of a call with these arguments, everywhere."""
        ...


class Decorates:
    """``cached``, for a class whose instances are a :class:`CacheSource` (a client, or a
    handle that finds its client at each call)."""

    __slots__ = ()

    def _fetch_timeout_now(self) -> float | None:
        """The ``fetch_timeout`` that ``soft_timeout`` must stay under, when it is known at
        decoration time (a handle's client is known at calls only)."""
        return None

    def cached(
        self,
        ttl: float | None = None,
        *,
        key: Callable[..., str] | None = None,
        tags: Iterable[str] | Callable[..., Iterable[str]] = (),
        eager_refresh: float | None = None,
        soft_timeout: float | None = None,
    ) -> Callable[[Callable[P, Awaitable[T]]], CachedFunction[P, T]]:
        """Decorate a coroutine function so that its results are cached under ``key`` (by
        default its module, qualified name and arguments) for ``ttl`` seconds, each missing
        one computed once across all processes, as
        :meth:`~redicache_async.CacheClient.get_or_init` does::

            @cache.cached(ttl=60)
            async def report(day: str) -> dict: ...

            await report("2026-11-23")
            await report.invalidate("2026-11-23")

        The default key is the call, not its spelling (``report("d1")`` and
        ``report(day="d1")`` are one entry) and takes ``str``, ``int``, ``float``, ``bool`` and
        ``None`` arguments only; for others (a method's ``self``, say) pass ``key=``, a
        function of the same arguments that returns the key. A closure that reads variables of
        its enclosing function needs ``key=`` too. ``eager_refresh`` is
        :meth:`~redicache_async.CacheClient.get_or_init`'s. How keys are made:
        https://redicache-async.readthedocs.io/how-to/decorator/

        ``soft_timeout`` is :meth:`~redicache_async.CacheClient.get_or_init`'s, for every call
        of the function. ``tags`` are the tags of every value it stores, or a function of its
        arguments that returns them (``tags=lambda user_id: [f"user:{user_id}"]``).

        Arguments are checked now; through a :class:`~redicache_async.CacheHandle`,
        ``soft_timeout`` is checked against the client's ``fetch_timeout`` only at a call
        that misses, since the client is not known before.
        """
        ttl_to_ms(ttl)  # rejects a bad ttl now rather than at the first call
        if key is not None:
            check_callable("key", key)
        call_tags = _call_tags(tags)
        if eager_refresh is not None:
            check_fraction("eager_refresh", eager_refresh)
        check_soft_timeout(soft_timeout, self._fetch_timeout_now())
        source = cast(CacheSource, self)

        def decorate(function: Callable[P, Awaitable[T]]) -> CachedFunction[P, T]:
            if not inspect.iscoroutinefunction(function):
                raise InvalidArgumentTypeError(
                    f"cached() wraps coroutine functions (async def), not {function!r}"
                )
            if key is None:
                check_default_keyable(function)
            return cast(
                CachedFunction[P, T],
                _Cached(source, function, ttl, key, eager_refresh, soft_timeout, call_tags),
            )

        return decorate


def _call_tags(
    tags: Iterable[str] | Callable[..., Iterable[str]],
) -> Callable[[tuple[Any, ...], dict[str, Any]], tuple[str, ...]] | None:
    """The tags of a call, from its arguments: ``tags`` itself (checked now), or what the
    function ``tags`` returns for them (checked at each call that misses); None for none."""
    if callable(tags):
        function = tags
        return lambda args, kwargs: check_tags(function(*args, **kwargs), "cached()'s tags")
    fixed = check_tags(tags, "cached()'s tags")
    return (lambda args, kwargs: fixed) if fixed else None


class _Cached(Generic[T]):
    """The object ``@cache.cached`` returns. A descriptor, so that ``obj.method`` binds
    ``obj`` for the call, ``key`` and ``invalidate`` alike (a plain function wrapper would
    bind it for the call only)."""

    def __init__(
        self,
        client: CacheSource,
        function: Callable[..., Awaitable[T]],
        ttl: float | None,
        key: Callable[..., str] | None,
        eager_refresh: float | None = None,
        soft_timeout: float | None = None,
        tags: Callable[[tuple[Any, ...], dict[str, Any]], tuple[str, ...]] | None = None,
    ) -> None:
        functools.update_wrapper(self, function)
        self._function = function
        self._ttl = ttl
        self._tags = tags
        calls = CallKeys(function, "" if key is not None else function_name(function))
        self._key: Callable[[tuple[Any, ...], dict[str, Any]], Any]
        if key is None:
            self._key = calls.default_key
        else:
            custom_key = key

            def custom(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                calls.template(args, kwargs)  # a call the function refuses is not answered
                return custom_key(*args, **kwargs)

            self._key = custom
        # Bound here, so that a call without options passes none: a miss pays nothing for them.
        self._get_or_init: Callable[..., Awaitable[Any]] = (
            client.get_or_init
            if soft_timeout is None
            else functools.partial(client.get_or_init, soft_timeout=soft_timeout)
        )
        self._local_value = client.local_value
        self._delete = client.delete
        if eager_refresh is not None:
            # A hit must judge its value's age, which get_or_init does: every call goes there
            # (the hit path of the calls below stays as it is for functions without the option).
            self._get_or_init = functools.partial(
                client.get_or_init, eager_refresh=eager_refresh, soft_timeout=soft_timeout
            )
            self._local_value = _no_local_answer

    async def __call__(self, *args: Any, **kwargs: Any) -> T:
        # _BoundCached.__call__ has these lines too: one coroutine per call, not two
        cache_key = self._key(args, kwargs)
        value = self._local_answer(cache_key)
        if value is not None:  # a local hit, without the fetch's partial or a coroutine
            return cast(T, value)
        return cast(T, await self._load(cache_key, args, kwargs))

    def _local_answer(self, cache_key: Any) -> Any:
        try:
            return self._local_value(cache_key)
        except TypeError:  # an unhashable key: get_or_init says what is wrong with it
            return None

    def _load(self, cache_key: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``get_or_init``'s awaitable for a call that missed locally."""
        fetch = functools.partial(self._function, *args, **kwargs)
        if self._tags is not None:
            tags = self._tags(args, kwargs)
            return self._get_or_init(cache_key, fetch, self._ttl, tags=tags)
        return self._get_or_init(cache_key, fetch, self._ttl)

    def key(self, *args: Any, **kwargs: Any) -> str:
        return validate_key(self._key(args, kwargs))

    async def invalidate(self, *args: Any, **kwargs: Any) -> None:
        await self._delete(self._key(args, kwargs))

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(self, instance: object, owner: type[Any] | None = None) -> _BoundCached[T]: ...
    def __get__(self, instance: object, owner: type[Any] | None = None) -> Any:
        if instance is None:
            return self
        return _BoundCached(self, instance)

    def __repr__(self) -> str:
        return f"<cached function {function_name(self._function)}>"


def _no_local_answer(key: str) -> None:
    """The local lookup of a function with ``eager_refresh``: none (get_or_init does it)."""
    return


class _BoundCached(Generic[T]):
    # ``instance.method`` of a cached method, as a bound method is for a function. No class
    # docstring: __doc__ is the method's.

    __slots__ = ("__func__", "__self__")

    def __init__(self, function: _Cached[T], instance: object) -> None:
        self.__func__ = function
        self.__self__ = instance

    async def __call__(self, *args: Any, **kwargs: Any) -> T:
        cached, args = self.__func__, (self.__self__, *args)
        cache_key = cached._key(args, kwargs)
        value = cached._local_answer(cache_key)
        if value is not None:
            return cast(T, value)
        return cast(T, await cached._load(cache_key, args, kwargs))

    def key(self, *args: Any, **kwargs: Any) -> str:
        return self.__func__.key(self.__self__, *args, **kwargs)

    async def invalidate(self, *args: Any, **kwargs: Any) -> None:
        await self.__func__.invalidate(self.__self__, *args, **kwargs)

    @property
    def __doc__(self) -> str | None:  # type: ignore[override]
        return self.__func__.__doc__

    def __getattr__(self, name: str) -> Any:  # __name__, __qualname__, __wrapped__, ...
        if name in _BoundCached.__slots__:  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.__func__, name)

    def __repr__(self) -> str:
        return (
            f"<bound cached method {function_name(self.__func__._function)} of {self.__self__!r}>"
        )
