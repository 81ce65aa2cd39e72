"""The operator view: ``read_status`` and ``python -m redicache_async status``, over a namespace
that real clients and a real builder filled, on every topology."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis

from redicache_async import (
    CacheBuilder,
    CacheClient,
    InvalidArgumentError,
    MsgpackSerializer,
    Target,
)
from redicache_async.keys import KeySpace
from redicache_async.status import NamespaceStatus, read_status
from redicache_async.status_report import render
from redicache_async.testing import ClusterServers, SentinelServers

from .helpers import wait_until

pytestmark = pytest.mark.topologies


class Report:
    """A builder's fetch whose next call fails when ``fail`` is set; the calls after that one
    (the builder's retries of the failed build, within a second) wait until the test ends, so
    that the builds a report shows stay one success and one failure however slow the machine."""

    def __init__(self) -> None:
        self.fail = False
        self._failed = False

    async def __call__(self) -> list[dict[str, Any]]:
        if self._failed:
            await asyncio.Event().wait()  # cancelled when the builder closes
        if self.fail:
            self._failed = True
            raise ValueError("the report database is down")
        return [{"id": "a", "n": 1}, {"id": "b", "n": 2}, {"id": "c", "n": 3}]


@dataclass
class Filled:
    cache: CacheClient
    builder: CacheBuilder
    name: str
    list_key: str
    hash_key: str
    release: asyncio.Event
    holder: asyncio.Task[Any]


@pytest.fixture
async def filled(redis: aioredis.Redis, namespace: str) -> AsyncIterator[Filled]:
    """A namespace with three cached keys, a write lock held by a running fetch, and a
    registration whose first build succeeded and second failed."""
    async with (
        CacheClient(redis, namespace=namespace) as cache,
        CacheBuilder(redis, namespace=namespace) as builder,
    ):
        await cache.set("cms::home", {"title": "Home"}, ttl=60.0)
        await cache.set("config", [1, 2, 3], ttl=None)
        await cache.set("odd{key}", "x", ttl=None)

        release, started = asyncio.Event(), asyncio.Event()

        async def slow_fetch() -> str:
            started.set()
            await release.wait()
            return "done"

        holder = asyncio.create_task(cache.get_or_init("slow", slow_fetch, ttl=30.0))
        await started.wait()

        report = Report()
        list_key, hash_key = f"{namespace}-report-list", f"{namespace}-report-hash"
        name = await builder.register(
            report,
            targets=[Target(list_key, "list"), Target(hash_key, "hash", id_field="id")],
            refresh_interval=600.0,
            name="reports",
        )
        await wait_until(lambda: builder.status(name).builds >= 1, what="the first build")
        report.fail = True
        with pytest.raises(Exception, match="report database is down"):
            await builder.refresh(name)
        try:
            yield Filled(cache, builder, name, list_key, hash_key, release, holder)
        finally:
            release.set()
            await holder
            await redis.delete(list_key, hash_key)


async def test_read_status_sees_keys_locks_and_builders(
    filled: Filled, redis: aioredis.Redis, namespace: str, topology: str
) -> None:
    before = time.time()
    status = await read_status(redis, namespace)

    assert status.namespace == namespace
    assert [k.key for k in status.keys] == ["cms::home", "config", "odd{key}"]
    home, config, odd = status.keys
    assert home.ttl is not None
    assert 55.0 < home.ttl <= 60.0
    assert config.ttl is None
    assert odd.ttl is None
    assert home.size == len(b'{"title":"Home"}')
    assert home.written_at is not None
    assert before - 30 < home.written_at <= time.time() + 1

    assert [lock.key for lock in status.locks] == ["slow"]
    assert status.locks[0].ttl is not None
    assert status.locks[0].ttl > 0

    [record] = status.registrations
    local = filled.builder.status(filled.name)
    assert record.name == "reports"
    assert record.leader == filled.builder.instance_id
    assert record.lease_ttl is not None
    assert record.lease_ttl > 0
    assert record.epoch == local.epoch
    assert record.refresh_interval == 600.0
    assert record.targets == (filled.list_key, filled.hash_key)
    assert (record.builds, record.failures) == (1, 1)
    assert record.last_error == "ValueError: the report database is down"
    assert record.last_built_at is not None
    assert local.last_built_at is not None
    assert abs(record.last_built_at - local.last_built_at) < 1.0
    assert record.last_duration is not None
    assert record.last_duration >= 0

    assert [(t.key, t.type, t.size, t.registration) for t in status.targets] == [
        (filled.hash_key, "hash", 3, "reports"),
        (filled.list_key, "list", 3, "reports"),
    ]
    if topology == "cluster":  # scripts could not write a stream in a slot of its own
        assert status.events is None
    else:
        assert status.events is not None
        assert status.events >= 4  # three sets and a build
    assert not status.truncated


async def test_a_released_lease_shows_no_leader_and_keeps_the_record(
    filled: Filled, redis: aioredis.Redis, namespace: str
) -> None:
    filled.release.set()
    assert await filled.holder == "done"
    await filled.builder.aclose()  # a graceful close releases the lease

    status = await read_status(redis, namespace)

    assert status.locks == ()
    assert "slow" in [k.key for k in status.keys]
    [record] = status.registrations
    assert record.leader is None
    assert record.lease_ttl is None
    assert (record.builds, record.failures) == (1, 1)
    assert record.last_error is not None


async def test_limit_cuts_each_section_and_says_so(
    make_cache: Any, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    for i in range(5):
        await cache.set(f"k{i}", i, ttl=None)

    status = await read_status(redis, namespace, limit=2)

    assert [k.key for k in status.keys] == ["k0", "k1"]
    assert status.truncated
    assert not (await read_status(redis, namespace, limit=5)).truncated


async def test_binary_values_through_a_decoding_client(
    make_redis: Any, make_cache: Any, namespace: str
) -> None:
    cache = await make_cache(serializer=MsgpackSerializer())
    await cache.set("blob", {"b": b"\xff\xfe"}, ttl=None)
    payload = MsgpackSerializer().dumps({"b": b"\xff\xfe"})

    status = await read_status(make_redis(decode_responses=True), namespace)

    assert [(k.key, k.size) for k in status.keys] == [("blob", len(payload))]


async def test_an_empty_namespace_and_foreign_keys(redis: aioredis.Redis, namespace: str) -> None:
    keys = KeySpace(namespace)
    # Keys under the namespace's patterns that the library did not write are left out.
    await redis.set(f"{namespace}:v:no-tag", "x")
    await redis.set(f"{namespace}:builder:{{x}}:other", "x")
    try:
        status = await read_status(redis, namespace)
    finally:
        await redis.delete(f"{namespace}:v:no-tag", f"{namespace}:builder:{{x}}:other")
    assert status == NamespaceStatus(namespace, (), (), (), (), None, truncated=False)
    assert keys.cached_key(f"{namespace}:v:no-tag") is None


@pytest.mark.single_node
async def test_bad_arguments(redis: aioredis.Redis) -> None:
    with pytest.raises(InvalidArgumentError, match="namespace"):
        await read_status(redis, "bad namespace")
    with pytest.raises(InvalidArgumentError, match="limit must be at least 1"):
        await read_status(redis, "ok", limit=0)


# -- the command -----------------------------------------------------------------------------


async def _run(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "redicache_async",
        "status",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _connection_args(request: pytest.FixtureRequest, topology: str) -> list[str]:
    if topology == "cluster":
        cluster: ClusterServers = request.getfixturevalue("cluster_servers")
        return ["--cluster", "--url", cluster.url]
    if topology == "sentinel":
        sentinels: SentinelServers = request.getfixturevalue("sentinel_servers")
        args = ["--service", sentinels.master_name]
        for host, port in sentinels.sentinel_addresses:
            args += ["--sentinel", f"{host}:{port}"]
        return args
    url: str = request.getfixturevalue("redis_url")
    return ["--url", url]


async def test_the_command_prints_the_report(
    filled: Filled, namespace: str, request: pytest.FixtureRequest, topology: str
) -> None:
    code, out, err = await _run(*_connection_args(request, topology), "--namespace", namespace)

    assert (code, err) == (0, "")
    assert f"namespace {namespace!r} on " in out
    assert "cached keys: 3" in out
    assert "cms::home" in out
    assert "never expires" in out
    assert "write locks held (a fetch is running): 1" in out
    assert f"leader      {filled.builder.instance_id}, since " in out
    assert "    lease       " in out
    assert "refresh     every 10.0 min" in out
    assert f"targets {filled.list_key}, {filled.hash_key}" in out
    assert "builds      1 ok, 1 failed" in out
    assert "ago): ValueError: the report database is down" in out
    assert "builder targets: 2" in out


async def test_the_command_prints_json(
    filled: Filled, namespace: str, request: pytest.FixtureRequest, topology: str
) -> None:
    code, out, _ = await _run(
        *_connection_args(request, topology), "--namespace", namespace, "--json"
    )

    assert code == 0
    data = json.loads(out)
    assert [k["key"] for k in data["keys"]] == ["cms::home", "config", "odd{key}"]
    assert data["registrations"][0]["leader"] == filled.builder.instance_id
    assert data["registrations"][0]["failures"] == 1


@pytest.mark.single_node
async def test_the_command_reports_an_unreachable_server_without_its_password(
    unused_tcp_port: int,
) -> None:
    code, out, err = await _run(
        "--url",
        f"redis://user:s3cret@127.0.0.1:{unused_tcp_port}",
        "--namespace",
        "app",
        "--timeout",
        "0.5",
    )

    assert code == 1
    assert out == ""
    assert err.startswith(f"status: could not read redis://user:***@127.0.0.1:{unused_tcp_port}")
    assert "s3cret" not in err


@pytest.mark.single_node
async def test_the_command_refuses_sentinel_without_a_service() -> None:
    code, _, err = await _run("--sentinel", "127.0.0.1:26379", "--namespace", "app")

    assert code == 2
    assert "--sentinel needs --service" in err


def test_render_an_empty_namespace() -> None:
    status = NamespaceStatus("app", (), (), (), (), None, truncated=False)

    text = render(status, where="redis://h:1/0", now=0.0)

    assert text.splitlines()[0] == "namespace 'app' on redis://h:1/0, at 1970-01-01 00:00:00 UTC"
    assert "cached keys: none" in text
    assert "builder registrations: none" in text


@pytest.mark.parametrize("key", ["a", "cms::home", "x{y}z", "}odd", "#abc", "{a}", "é:ü"])
def test_key_names_lead_back_to_the_user_key(key: str) -> None:
    keys = KeySpace("ns")

    assert keys.cached_key(keys.value(key)) == key
    assert keys.locked_key(keys.lock(key)) == key
    assert keys.target_of_meta(keys.target_meta(key)) == key
    assert keys.cached_key(keys.lock(key)) is None
    assert KeySpace("other").cached_key(keys.value(key)) is None


def test_builder_key_names_lead_back_to_the_registration() -> None:
    keys = KeySpace("ns")

    assert keys.registration_name(keys.lease("reports")) == "reports"
    assert keys.registration_name(keys.state("re-ports_2")) == "re-ports_2"
    assert keys.registration_name("ns:builder:{reports}:other") is None
    assert keys.registration_name("ns:builder:reports:lease") is None
