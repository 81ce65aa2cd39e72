"""The OpenTelemetry integration against the session's real server: what an SDK meter provider
collects (through an in-memory reader) is what ``stats()`` counted."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Sum

from redicache_async import (
    BuilderStats,
    CacheBuilder,
    CacheClient,
    CacheStats,
    ClientClosedError,
    InvalidArgumentTypeError,
    Target,
    __version__,
)
from redicache_async.integrations.opentelemetry import METER_NAME, CacheMetrics
from redicache_async.integrations.opentelemetry.table import BUILDER_METRICS, CLIENT_METRICS, Metric
from redicache_async.keys import KeySpace

from .conftest import MakeCache
from .helpers import Figures, figures, key, wait_until


def of(found: Figures, namespace: str) -> Figures:
    """The figures of ``namespace``."""
    return {k: v for k, v in found.items() if ("redicache.namespace", namespace) in k[1]}


def expected(
    metrics: Iterable[Metric], namespace: str, *stats: CacheStats | BuilderStats
) -> Figures:
    """What the table promises for these snapshots of one namespace: each field's sum."""
    return {
        key(metric.name, namespace, dict(attributes)): sum(getattr(s, field) for s in stats)
        for metric in metrics
        for field, attributes in metric.fields.items()
    }


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()


@pytest.fixture
def metrics(provider: MeterProvider) -> Iterator[CacheMetrics]:
    with CacheMetrics(provider) as metrics:
        yield metrics


@pytest.fixture
async def observed(make_cache: MakeCache, metrics: CacheMetrics) -> tuple[CacheClient, CacheClient]:
    """Two started clients of the test's namespace, both observed by ``metrics``."""
    a, b = await make_cache(), await make_cache()
    metrics.observe(a)
    metrics.observe(b)
    return a, b


async def fetch() -> dict[str, int]:
    return {"v": 1}


def items() -> list[dict[str, int]]:
    return [{"id": 1}, {"id": 2}]


# -- the figures ----------------------------------------------------------------------------


async def test_reads_are_reported_as_counted(
    make_cache: MakeCache, metrics: CacheMetrics, reader: InMemoryMetricReader, namespace: str
) -> None:
    a = await make_cache()
    metrics.observe(a)
    assert await a.get_or_init("k", fetch, ttl=60) == {"v": 1}  # a miss, a fetch, a write
    assert await a.get("k") == {"v": 1}  # a local hit
    b = await make_cache()  # subscribed after the write: receives no event
    metrics.observe(b)
    assert await b.get("k") == {"v": 1}  # a Redis hit
    await wait_until(lambda: a.stats().invalidations_received == 1, what="a's own event")

    found = figures(reader)
    # one client's figures per namespace would be those of its stats(); two are summed
    assert of(found, namespace) == expected(CLIENT_METRICS, namespace, a.stats(), b.stats())
    assert found[key("redicache.client.fetches", namespace)] == 1
    assert found[key("redicache.client.hits", namespace, {"redicache.layer": "local"})] == 1
    assert found[key("redicache.client.hits", namespace, {"redicache.layer": "redis"})] == 1
    assert found[key("redicache.client.misses", namespace)] == a.stats().misses >= 1
    assert found[key("redicache.client.writes", namespace, {"redicache.outcome": "success"})] == 1
    assert found[key("redicache.client.writes", namespace, {"redicache.outcome": "fenced"})] == 0
    assert found[key("redicache.client.local.entry.count", namespace)] == 2
    local_bytes = a.stats().local_bytes + b.stats().local_bytes
    assert found[key("redicache.client.local.size", namespace)] == local_bytes > 0

    data = reader.get_metrics_data()
    assert data is not None
    scopes = [s.scope for r in data.resource_metrics for s in r.scope_metrics]
    assert [(s.name, s.version) for s in scopes] == [(METER_NAME, __version__)]


async def test_invalidations_are_reported_by_direction(
    observed: tuple[CacheClient, CacheClient],
    reader: InMemoryMetricReader,
    redis: aioredis.Redis,
    namespace: str,
) -> None:
    a, b = observed
    await a.set("k", 1)
    await redis.publish(KeySpace(namespace).channel, b"not an event")
    await wait_until(
        lambda: all(
            c.stats().invalidations_received == 1 and c.stats().invalidations_ignored == 1
            for c in (a, b)
        ),
        what="both clients saw the event and the foreign message",
    )

    found = figures(reader)
    name = "redicache.client.invalidations"
    assert found[key(name, namespace, {"redicache.direction": "sent"})] == 1
    assert found[key(name, namespace, {"redicache.direction": "received"})] == 2
    assert found[key(name, namespace, {"redicache.direction": "ignored"})] == 2
    assert of(found, namespace) == expected(CLIENT_METRICS, namespace, a.stats(), b.stats())


async def test_a_builders_builds_are_reported_from_any_thread(
    metrics: CacheMetrics, reader: InMemoryMetricReader, redis: aioredis.Redis, namespace: str
) -> None:
    async with CacheBuilder(redis, namespace=namespace) as builder:
        metrics.observe(builder)
        await builder.register(
            items, targets=[Target(f"{namespace}-l", "list")], refresh_interval=100, name="items"
        )
        await wait_until(lambda: builder.stats().builds == 1, what="the first build")

        stats = builder.stats()
        assert stats.leading == 1
        # as a periodic reader collects: in a thread of its own
        found = await asyncio.to_thread(figures, reader)
        assert of(found, namespace) == expected(BUILDER_METRICS, namespace, stats)
        builds = "redicache.builder.builds"
        assert found[key(builds, namespace, {"redicache.outcome": "success"})] == 1
        assert found[key(builds, namespace, {"redicache.outcome": "failure"})] == 0
        assert found[key("redicache.builder.registration.count", namespace)] == 1
        assert found[key("redicache.builder.registration.leading", namespace)] == 1
        assert found[key("redicache.builder.terms", namespace)] == 1
        assert figures(reader) == found  # and from the builder's loop

    assert of(figures(reader), namespace) == {}  # closed: no longer reported


async def test_counts_never_go_back_when_a_registration_goes(
    metrics: CacheMetrics, reader: InMemoryMetricReader, redis: aioredis.Redis, namespace: str
) -> None:
    builds = key("redicache.builder.builds", namespace, {"redicache.outcome": "success"})
    async with CacheBuilder(redis, namespace=namespace) as builder:
        metrics.observe(builder)
        for name in ("one", "two"):
            await builder.register(
                items,
                targets=[Target(f"{namespace}-{name}", "list")],
                refresh_interval=100,
                name=name,
            )
        await wait_until(lambda: builder.stats().builds == 2, what="both built")
        assert figures(reader)[builds] == 2
        await builder.unregister("one")
        assert builder.stats().builds == 1  # BuilderStats sums the registrations there are
        found = figures(reader)
        assert found[builds] == 2
        assert found[key("redicache.builder.registration.count", namespace)] == 1


async def test_closed_forgotten_or_collected_sources_stop_being_reported(
    observed: tuple[CacheClient, CacheClient],
    metrics: CacheMetrics,
    reader: InMemoryMetricReader,
    redis: aioredis.Redis,
    namespace: str,
) -> None:
    writes = key("redicache.client.writes", namespace, {"redicache.outcome": "success"})
    entries = key("redicache.client.local.entry.count", namespace)
    a, b = observed
    await a.set("x", 1)
    assert figures(reader)[writes] == 1
    assert figures(reader)[entries] == 1

    metrics.forget(a)
    metrics.forget(a)  # unknown now: nothing happens
    await a.set("y", 2)
    assert a.stats().writes == 2
    found = figures(reader)
    assert found[writes] == 1  # what a counted while observed stays in the namespace's count
    assert found[entries] == 0  # a's local values no longer are

    await b.aclose()
    assert of(figures(reader), namespace) == {}

    other = f"{namespace}-gc"
    unused = CacheClient(redis, namespace=other)  # never started: nothing to close
    metrics.observe(unused)
    assert figures(reader)[key("redicache.client.local.entry.count", other)] == 0
    del unused
    gc.collect()
    assert of(figures(reader), other) == {}


async def test_every_field_is_exported(
    make_cache: MakeCache,
    metrics: CacheMetrics,
    reader: InMemoryMetricReader,
    redis: aioredis.Redis,
    namespace: str,
) -> None:
    tables: list[tuple[type[Any], tuple[Metric, ...], str]] = [
        (CacheStats, CLIENT_METRICS, "redicache.client."),
        (BuilderStats, BUILDER_METRICS, "redicache.builder."),
    ]
    for stats_type, table, prefix in tables:
        mapped = sorted(field for metric in table for field in metric.fields)
        assert mapped == sorted(f.name for f in dataclasses.fields(stats_type)), stats_type
        assert all(metric.name.startswith(prefix) for metric in table)
    keys = [
        (metric.name, frozenset(attributes.items()))
        for _, table, _ in tables
        for metric in table
        for attributes in metric.fields.values()
    ]
    assert len(set(keys)) == len(keys)

    cache = await make_cache()
    metrics.observe(cache)
    async with CacheBuilder(redis, namespace=namespace) as builder:
        metrics.observe(builder)
        found = figures(reader)
        client_stats, builder_stats = cache.stats(), builder.stats()
        for stats, table in ((client_stats, CLIENT_METRICS), (builder_stats, BUILDER_METRICS)):
            for metric in table:
                for field, attributes in metric.fields.items():
                    exported = found[key(metric.name, namespace, dict(attributes))]
                    assert exported == getattr(stats, field), field

        data = reader.get_metrics_data()
        assert data is not None
        exported_metrics = {
            m.name: m for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics
        }
        for metric in (*CLIENT_METRICS, *BUILDER_METRICS):
            exported_metric = exported_metrics[metric.name]
            assert exported_metric.unit == metric.unit
            assert exported_metric.description == metric.description
            assert isinstance(exported_metric.data, Sum)
            assert exported_metric.data.is_monotonic is metric.counter, metric.name
        assert exported_metrics["redicache.client.local.size"].unit == "By"


# -- the object -----------------------------------------------------------------------------


def test_the_sdk_drops_the_callbacks_of_an_instrument_created_twice(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """Why CacheMetrics makes its instruments once per meter provider."""
    meter = provider.get_meter("probe")
    called: list[str] = []

    def first(options: CallbackOptions) -> Iterable[Observation]:
        called.append("first")
        return [Observation(1)]

    def second(options: CallbackOptions) -> Iterable[Observation]:
        called.append("second")
        return [Observation(2)]

    assert meter.create_observable_counter("n", [first]) is meter.create_observable_counter(
        "n", [second]
    )
    assert figures(reader) == {("n", frozenset()): 1}
    assert called == ["first"]


async def test_cache_metrics_on_one_provider_share_its_instruments(
    make_cache: MakeCache, provider: MeterProvider, reader: InMemoryMetricReader, namespace: str
) -> None:
    a = await make_cache()
    b = await make_cache(namespace=f"{namespace}-b")
    entries = "redicache.client.local.entry.count"
    with CacheMetrics(provider) as first:
        first.observe(a)
        with CacheMetrics(provider) as second:
            second.observe(b)
            assert set(figures(reader)) >= {key(entries, namespace), key(entries, b.namespace)}
        assert second.closed
        assert of(figures(reader), b.namespace) == {}
        assert key(entries, namespace) in figures(reader)
    assert figures(reader) == {}
    with CacheMetrics(provider) as third:  # after every other closed
        third.observe(b)
        assert of(figures(reader), b.namespace) == expected(CLIENT_METRICS, b.namespace, b.stats())


async def test_observe_takes_live_clients_and_builders_only(
    make_cache: MakeCache, provider: MeterProvider, redis: aioredis.Redis, namespace: str
) -> None:
    metrics = CacheMetrics(provider)
    with pytest.raises(InvalidArgumentTypeError, match="CacheClient or a CacheBuilder"):
        metrics.observe(object())  # type: ignore[arg-type]
    closed = await make_cache()
    await closed.aclose()
    with pytest.raises(ClientClosedError, match="CacheClient is closed"):
        metrics.observe(closed)
    builder = CacheBuilder(redis, namespace=namespace)  # never started: nothing to close
    await asyncio.to_thread(metrics.observe, builder)  # from any thread
    cache = await make_cache()
    metrics.observe(cache)
    metrics.observe(cache)  # twice: the same
    metrics.close()
    metrics.close()
    assert metrics.closed
    with pytest.raises(ClientClosedError, match="CacheMetrics is closed"):
        metrics.observe(cache)
    metrics.forget(cache)  # harmless


async def test_closed_tells_whether_aclose_was_called(
    redis: aioredis.Redis, namespace: str
) -> None:
    for lifecycle in (
        CacheClient(redis, namespace=namespace),
        CacheBuilder(redis, namespace=namespace),
    ):
        assert not lifecycle.closed
        async with lifecycle:
            assert not lifecycle.closed
        assert lifecycle.closed
    never_started = CacheClient(redis, namespace=namespace)
    await never_started.aclose()
    assert never_started.closed
