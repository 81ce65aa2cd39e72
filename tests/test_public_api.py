"""The public API, pinned: the names each public module exports and the signatures users call.

A failure here means a change users would see (a renamed option, a new default, a method that
stopped being a coroutine). If it is meant, update the tables below and say it in
CHANGELOG.md; if not, it is the bug this test exists to catch.

Signatures are compared as text without annotations: parameter names, their kinds (positional,
``*`` keyword-only, ``*args``, ``**kwargs``) and their defaults, prefixed with ``async`` for a
coroutine function. Annotations are mypy's to check (the suite is type-checked strictly).
"""

from __future__ import annotations

import importlib
import inspect
import typing
from typing import Any

import pytest

#: ``__all__`` of each public module, exactly (in any order; each name once).
EXPORTS: dict[str, list[str]] = {
    "redicache_async": [
        "BuildError",
        "BuildStatus",
        "BuilderStats",
        "CacheBuilder",
        "CacheClient",
        "CacheHandle",
        "CacheStats",
        "ClientClosedError",
        "Entry",
        "FetchTimeout",
        "InvalidArgumentError",
        "InvalidArgumentTypeError",
        "InvalidResultError",
        "JsonSerializer",
        "MsgpackSerializer",
        "PickleSerializer",
        "PoolExhaustedError",
        "RedicacheError",
        "RedisConfigurationError",
        "RedisPermissionError",
        "RedisUnavailableError",
        "RegenerationInProgress",
        "SerializationError",
        "Serializer",
        "Target",
        "TargetType",
        "UnknownRegistrationError",
    ],
    "redicache_async.integrations": ["CacheOptions"],
    "redicache_async.integrations.fastapi": [
        "BuilderDep",
        "CacheDep",
        "cache_lifespan",
        "get_builder",
        "get_cache",
    ],
    "redicache_async.integrations.aiohttp": [
        "BUILDER_KEY",
        "CACHE_KEY",
        "cache_context",
        "get_builder",
        "get_cache",
    ],
    "redicache_async.integrations.opentelemetry": ["METER_NAME", "CacheMetrics"],
    "redicache_async.testing": [
        "ENV_SERVER_BINARY",
        "ClusterServers",
        "Failover",
        "RedisServer",
        "SentinelServers",
        "ServerNotFoundError",
        "ServerStartError",
        "ServerTLS",
        "find_cli_binary",
        "find_server_binary",
        "free_port",
        "server_version",
    ],
}

#: Dotted name -> signature. A class's entry is its constructor; ``<unset>`` is a sentinel
#: default meaning "leave as it is".
SIGNATURES: dict[str, str] = {
    # -- CacheClient -------------------------------------------------------------------------
    "redicache_async.CacheClient": (
        "(redis, *, namespace='redicache', local_max_entries=10000, local_max_bytes=67108864,"
        " lock_ttl=10.0, fetch_timeout=30.0, wait_timeout=45.0, stale_ttl=0.0,"
        " redis_timeout=1.0, serializer=None, fetch_threads=32)"
    ),
    "redicache_async.CacheClient.start": "async (self)",
    "redicache_async.CacheClient.aclose": "async (self)",
    "redicache_async.CacheClient.get_or_init": (
        "async (self, key, fetch, ttl=None, *, tags=(), eager_refresh=None, soft_timeout=None)"
    ),
    "redicache_async.CacheClient.attempt_regeneration": (
        "async (self, key, fetch, ttl=None, *, tags=())"
    ),
    "redicache_async.CacheClient.get": "async (self, key)",
    "redicache_async.CacheClient.get_target": "async (self, key, field=None)",
    "redicache_async.CacheClient.set": "async (self, key, value, ttl=None, *, tags=())",
    "redicache_async.CacheClient.delete": "async (self, key)",
    "redicache_async.CacheClient.get_many": "async (self, keys)",
    "redicache_async.CacheClient.set_many": "async (self, mapping, *, ttl=None, tags=())",
    "redicache_async.CacheClient.delete_many": "async (self, keys)",
    "redicache_async.CacheClient.get_or_init_many": (
        "async (self, keys, fetch_many, *, ttl=None, tags=())"
    ),
    "redicache_async.CacheClient.clear": "async (self)",
    "redicache_async.CacheClient.invalidate_tags": "async (self, *tags)",
    "redicache_async.CacheClient.cached": (
        "(self, ttl=None, *, key=None, tags=(), eager_refresh=None, soft_timeout=None)"
    ),
    "redicache_async.CacheHandle": "(name='cache')",
    "redicache_async.CacheHandle.bind": "(self, client)",
    "redicache_async.CacheHandle.unbind": "(self)",
    "redicache_async.CacheHandle.cached": (
        "(self, ttl=None, *, key=None, tags=(), eager_refresh=None, soft_timeout=None)"
    ),
    "redicache_async.Entry": "(value, *, ttl=<unset>, tags=<unset>)",
    "redicache_async.CacheClient.stats": "(self)",
    # -- CacheBuilder ------------------------------------------------------------------------
    "redicache_async.CacheBuilder": (
        "(redis, *, namespace='redicache', lease_ttl=10.0, serializer=None, redis_timeout=1.0,"
        " fetch_timeout=300.0, fetch_threads=32)"
    ),
    "redicache_async.CacheBuilder.start": "async (self)",
    "redicache_async.CacheBuilder.aclose": "async (self)",
    "redicache_async.CacheBuilder.register": (
        "async (self, fetch, *, targets, refresh_interval, name=None, args=(), kwargs=None,"
        " allow_empty=True)"
    ),
    "redicache_async.CacheBuilder.update": (
        "async (self, name, *, fetch=<unset>, targets=<unset>, refresh_interval=<unset>,"
        " args=<unset>, kwargs=<unset>, allow_empty=<unset>)"
    ),
    "redicache_async.CacheBuilder.unregister": "async (self, name)",
    "redicache_async.CacheBuilder.refresh": "async (self, name)",
    "redicache_async.CacheBuilder.status": "(self, name)",
    "redicache_async.CacheBuilder.stats": "(self)",
    "redicache_async.CacheBuilder.wait_built": "async (self, name, timeout=None)",
    "redicache_async.CacheBuilder.names": "(self)",
    # -- values users build or read ----------------------------------------------------------
    "redicache_async.Target": "(key, type, id_field=None, score_field=None)",
    "redicache_async.BuildStatus": (
        "(name, is_leader, refresh_interval, targets, builds, failures, last_built_at,"
        " last_duration, last_error, next_build_at, epoch)"
    ),
    "redicache_async.CacheStats": (
        "(local_hits=0, redis_hits=0, misses=0, fetches=0, fetch_errors=0, lock_waits=0,"
        " lock_wait_timeouts=0, lock_takeovers=0, fenced_writes=0, writes=0, deletes=0,"
        " invalidations_sent=0, invalidations_received=0, invalidations_ignored=0,"
        " local_evictions=0, local_flushes=0, replays=0, circuit_opens=0, circuit_skips=0,"
        " decode_errors=0, foreign_values=0, redis_errors=0, eager_refreshes=0,"
        " eager_refresh_errors=0, stale_served=0, local_entries=0, local_bytes=0)"
    ),
    "redicache_async.BuilderStats": (
        "(registrations, leading, terms, builds, failures, ignored_messages)"
    ),
    "redicache_async.JsonSerializer": "(*, default=None, object_hook=None)",
    "redicache_async.MsgpackSerializer": "(*, type=typing.Any, enc_hook=None, dec_hook=None)",
    "redicache_async.PickleSerializer": "(protocol=5)",
    # -- integrations ------------------------------------------------------------------------
    "redicache_async.integrations.fastapi.cache_lifespan": ("(redis, **options)"),
    "redicache_async.integrations.fastapi.get_cache": "async (connection)",
    "redicache_async.integrations.fastapi.get_builder": "async (connection)",
    "redicache_async.integrations.aiohttp.cache_context": ("(redis, **options)"),
    "redicache_async.integrations.aiohttp.get_cache": "(where)",
    "redicache_async.integrations.aiohttp.get_builder": "(where)",
    "redicache_async.integrations.opentelemetry.CacheMetrics": "(meter_provider=None)",
    # -- testing: servers for users' own tests -----------------------------------------------
    "redicache_async.testing.RedisServer": (
        "(*, binary=None, port=None, extra_args=(), password=None, config=None, tls=None)"
    ),
    "redicache_async.testing.RedisServer.start": "(self)",
    "redicache_async.testing.RedisServer.stop": "(self)",
    "redicache_async.testing.RedisServer.kill": "(self)",
    "redicache_async.testing.RedisServer.restart": "(self, *, graceful=False)",
    "redicache_async.testing.RedisServer.pause": "(self)",
    "redicache_async.testing.RedisServer.resume": "(self)",
    "redicache_async.testing.ClusterServers": (
        "(masters=3, replicas=1, *, binary=None, node_timeout_ms=1000)"
    ),
    "redicache_async.testing.ClusterServers.start": "(self)",
    "redicache_async.testing.ClusterServers.stop": "(self)",
    "redicache_async.testing.SentinelServers": (
        "(replicas=1, sentinels=3, *, master_name='mymaster', binary=None, down_after_ms=1000,"
        " failover_timeout_ms=3000)"
    ),
    "redicache_async.testing.SentinelServers.start": "(self)",
    "redicache_async.testing.SentinelServers.stop": "(self)",
    "redicache_async.testing.ServerTLS": "(cert_file, key_file, ca_file)",
    "redicache_async.testing.find_server_binary": "()",
    "redicache_async.testing.find_cli_binary": "(server_binary=None)",
    "redicache_async.testing.free_port": "()",
    "redicache_async.testing.server_version": "(binary=None)",
}

#: The keyword options of ``cache_lifespan`` and ``cache_context`` (one TypedDict for both):
#: required and optional keys.
CACHE_OPTIONS = (
    ["namespace"],
    ["bind", "builder_options", "client_options", "setup_builder"],
)

#: Properties users read, by class.
PROPERTIES: dict[str, list[str]] = {
    "redicache_async.CacheClient": ["namespace"],
    "redicache_async.CacheHandle": ["client", "is_bound"],
    "redicache_async.Entry": ["tags", "ttl"],
    "redicache_async.CacheBuilder": ["ignored_messages", "instance_id", "namespace"],
    "redicache_async.testing.RedisServer": ["url"],
    "redicache_async.testing.ClusterServers": ["startup_nodes", "url"],
}


def _resolve(dotted: str) -> Any:
    """The object at ``dotted``: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            # Statically from a class, so that a property is itself, not its getter's result.
            if inspect.isclass(obj):
                obj = inspect.getattr_static(obj, attribute)
            else:
                obj = getattr(obj, attribute)
        return obj
    raise AssertionError(f"nothing importable in {dotted}")


def _default(value: Any) -> str:
    # A bare object() sentinel prints its address, which changes every run.
    return "<unset>" if type(value) is object else repr(value)


def _render(obj: Any) -> str:
    """The signature as text, without annotations."""
    function = obj.__func__ if isinstance(obj, staticmethod | classmethod) else obj
    signature = inspect.signature(function)
    parts: list[str] = []
    keyword_only_marked = False
    for parameter in signature.parameters.values():
        text = parameter.name
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            text, keyword_only_marked = f"*{text}", True
        elif parameter.kind is inspect.Parameter.VAR_KEYWORD:
            text = f"**{text}"
        elif parameter.kind is inspect.Parameter.KEYWORD_ONLY and not keyword_only_marked:
            parts.append("*")
            keyword_only_marked = True
        if parameter.default is not inspect.Parameter.empty:
            text += f"={_default(parameter.default)}"
        parts.append(text)
        if (
            parameter.kind is inspect.Parameter.POSITIONAL_ONLY
            and _next_kind(signature, parameter) is not inspect.Parameter.POSITIONAL_ONLY
        ):
            parts.append("/")
    prefix = "async " if inspect.iscoroutinefunction(function) else ""
    return f"{prefix}({', '.join(parts)})"


def _next_kind(signature: inspect.Signature, parameter: inspect.Parameter) -> Any:
    parameters = list(signature.parameters.values())
    index = parameters.index(parameter)
    return parameters[index + 1].kind if index + 1 < len(parameters) else None


@pytest.mark.parametrize("module", sorted(EXPORTS))
def test_exports(module: str) -> None:
    namespace = importlib.import_module(module)
    exported = namespace.__all__
    assert sorted(exported) == sorted(EXPORTS[module])
    assert len(set(exported)) == len(exported), f"{module}.__all__ names something twice"
    missing = [name for name in exported if not hasattr(namespace, name)]
    assert not missing, f"{module}.__all__ names what it does not define: {missing}"


@pytest.mark.parametrize("dotted", sorted(SIGNATURES))
def test_signature(dotted: str) -> None:
    assert _render(_resolve(dotted)) == SIGNATURES[dotted]


@pytest.mark.parametrize("dotted", sorted(PROPERTIES))
def test_properties(dotted: str) -> None:
    cls = _resolve(dotted)
    for name in PROPERTIES[dotted]:
        assert isinstance(inspect.getattr_static(cls, name), property), f"{dotted}.{name}"


def test_context_managers() -> None:
    """``async with`` opens and closes the engines; ``with`` the test servers."""
    from redicache_async import CacheBuilder, CacheClient
    from redicache_async.testing import ClusterServers, RedisServer, SentinelServers

    for engine in (CacheClient, CacheBuilder):
        assert inspect.iscoroutinefunction(engine.__aenter__)
        assert inspect.iscoroutinefunction(engine.__aexit__)
    for server in (RedisServer, ClusterServers, SentinelServers):
        assert callable(server.__enter__)
        assert callable(server.__exit__)


def test_target_types() -> None:
    from redicache_async import TargetType

    assert typing.get_args(TargetType) == ("string", "list", "hash", "set", "zset")


def test_fastapi_dependencies() -> None:
    """``CacheDep``/``BuilderDep`` are ``Annotated`` aliases a handler's parameter names."""
    from fastapi.params import Depends

    from redicache_async import CacheBuilder, CacheClient
    from redicache_async.integrations import fastapi as integration

    for alias, cls, provider in (
        (integration.CacheDep, CacheClient, integration.get_cache),
        (integration.BuilderDep, CacheBuilder, integration.get_builder),
    ):
        origin, marker = typing.get_args(alias)
        assert origin is cls
        assert isinstance(marker, Depends)
        assert marker.dependency is provider


def test_render_shows_every_kind() -> None:
    """The renderer itself: each parameter kind, a sentinel default, async, so that a change of
    kind (say, an option that stops being keyword-only) shows in the tables above."""

    sentinel = object()

    async def sample(a, b=1, /, c=None, *args, d, e=sentinel, **kwargs):  # type: ignore[no-untyped-def]
        """Parameters of every kind."""

    def keyword_only(*, x: int = 2) -> None:
        """A bare ``*``."""

    assert _render(sample) == "async (a, b=1, /, c=None, *args, d, e=<unset>, **kwargs)"
    assert _render(keyword_only) == "(*, x=2)"


def test_integration_options() -> None:
    from redicache_async.integrations import CacheOptions

    required, optional = CACHE_OPTIONS
    assert sorted(CacheOptions.__required_keys__) == required
    assert sorted(CacheOptions.__optional_keys__) == optional
