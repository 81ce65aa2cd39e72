"""Secured servers, each started by these tests: a password (``requirepass``), an ACL user
restricted to the namespace by the README's minimal rule, and TLS.

Every set-up runs the same flow: two ``CacheClient`` on two connections (get_or_init, set, get,
attempt_regeneration, delete, a failing fetch, cross-client invalidation) and two
``CacheBuilder`` instances sharing one registration (build, refresh on the leader and through a
follower, unregister and takeover), read back with ``CacheClient.get_target``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, NoPermissionError

from redicache_async import (
    BuildError,
    CacheBuilder,
    CacheClient,
    RedicacheError,
    RedisConfigurationError,
    RedisPermissionError,
    Target,
)
from redicache_async.testing import (
    RedisServer,
    ServerNotFoundError,
    ServerStartError,
    ServerTLS,
    find_server_binary,
)
from tests.helpers import Fetch, wait_until

from .proxy import FaultProxy

ADMIN_PASSWORD = "admin-secret"
APP_PASSWORD = "app-secret"

#: What the library runs (``-@all`` then exactly these), found by starting from ``-@all`` and
#: adding what the server's ACL LOG reported as denied until the whole flow ran clean. Commands
#: run inside the Lua scripts are checked against the user's ACL too. AUTH and HELLO need no
#: permission. ``unlink`` only runs when a build's copy could not be written (clean-up); ``ping``
#: when the listener's channel has been quiet for a while.
ACL_COMMANDS = (
    # connection: the listener's keep-alive on its subscribed connection
    "ping",
    # scripting: redis-py runs scripts with EVALSHA and loads them on NOSCRIPT (never EVAL)
    "evalsha",
    "script|load",
    # pub/sub: invalidations and builders' events (also published from scripts)
    "subscribe",
    "publish",
    # stream: the capped event stream, written by scripts, read back after a reconnect
    "xadd",
    "xinfo|stream",
    "xrange",
    # keyspace and strings: locks and leases (SET NX PX), versions, expiry, the target swap
    "set",
    "get",
    "mget",
    "getrange",
    "del",
    "unlink",
    "exists",
    "type",
    "rename",
    "pttl",
    "pexpire",
    "persist",
    "time",
    "role",
    # hashes: values, builder state and target metadata, hash targets
    "hset",
    "hget",
    "hmget",
    "hgetall",
    "hincrby",
    "hlen",
    # list, set and sorted-set targets: written, counted before the swap, read back
    "rpush",
    "llen",
    "lrange",
    "sadd",
    "scard",
    "smembers",
    "zadd",
    "zcard",
    "zrange",
)


def minimal_acl(user: str, password: str, namespace: str, target_pattern: str) -> str:
    """The README's rule: ``ACL SETUSER`` for a user that may run the library under
    ``namespace`` and build targets matching ``target_pattern``, and nothing else."""
    return (
        f"ACL SETUSER {user} on >{password} resetkeys ~{namespace}:* ~{target_pattern} "
        f"resetchannels &{namespace}:* -@all " + " ".join(f"+{c}" for c in ACL_COMMANDS)
    )


# -- the flow every set-up runs ------------------------------------------------------------


async def has_value(cache: CacheClient, key: str, expected: Any) -> bool:
    return bool(await cache.get(key) == expected)


async def must_not_fetch() -> Any:
    raise AssertionError("the value was in Redis: nothing should have fetched it")


async def check_cache(a: aioredis.Redis, b: aioredis.Redis, namespace: str) -> None:
    """Two clients on two connections: reads, writes and invalidation between them."""
    async with (
        CacheClient(a, namespace=namespace) as cache_a,
        CacheClient(b, namespace=namespace) as cache_b,
    ):

        async def page_v1() -> dict[str, int]:
            return {"v": 1}

        assert await cache_a.get_or_init("page", page_v1, ttl=60.0) == {"v": 1}
        assert await cache_b.get_or_init("page", must_not_fetch, ttl=60.0) == {"v": 1}
        assert await cache_b.get("page") == {"v": 1}  # kept locally by now

        received = cache_b.stats().invalidations_received
        await cache_a.set("page", {"v": 2}, ttl=60.0)
        await wait_until(lambda: has_value(cache_b, "page", {"v": 2}), what="b to see the set")
        assert cache_b.stats().invalidations_received > received

        async def page_v3() -> dict[str, int]:
            return {"v": 3}

        assert await cache_b.attempt_regeneration("page", page_v3, ttl=None) == {"v": 3}
        await wait_until(lambda: has_value(cache_a, "page", {"v": 3}), what="a to see it")

        await cache_a.delete("page")
        await wait_until(lambda: has_value(cache_b, "page", None), what="b to see the delete")

        async def broken() -> Any:
            raise LookupError("backend down")

        with pytest.raises(LookupError):
            await cache_a.get_or_init("broken", broken)  # the lock is released and announced
        assert await cache_b.get_or_init("broken", page_v1) == {"v": 1}


class Report:
    """A builder's fetch function: two items tagged with the number of the build."""

    def __init__(self) -> None:
        self.builds = 0

    def __call__(self) -> list[dict[str, Any]]:
        self.builds += 1
        return [
            {"id": "a", "score": 1, "build": self.builds},
            {"id": "b", "score": 2, "build": self.builds},
        ]


async def build_shown(reader: CacheClient, key: str, at_least: int) -> bool:
    items = await reader.get_target(key)
    return bool(items) and min(item["build"] for item in items) >= at_least


async def check_builder(
    a: aioredis.Redis, b: aioredis.Redis, namespace: str, target_prefix: str
) -> None:
    """Two builder instances share a registration: one builds, the other takes over."""
    report = Report()
    targets = [
        Target(f"{target_prefix}list", "list"),
        Target(f"{target_prefix}hash", "hash", id_field="id"),
        Target(f"{target_prefix}set", "set"),
        Target(f"{target_prefix}zset", "zset", score_field="score"),
        Target(f"{target_prefix}string", "string"),
    ]
    listed = f"{target_prefix}list"
    async with (
        CacheBuilder(a, namespace=namespace) as first,
        CacheBuilder(b, namespace=namespace) as second,
        CacheClient(b, namespace=namespace) as reader,
    ):
        name = await first.register(report, targets=targets, refresh_interval=3600.0, name="rep")
        await first.wait_built(name, timeout=10.0)
        assert first.status(name).is_leader
        items = await reader.get_target(listed)
        assert [item["id"] for item in items] == ["a", "b"]
        assert set(await reader.get_target(f"{target_prefix}hash")) == {"a", "b"}
        assert (await reader.get_target(f"{target_prefix}hash", "b"))["score"] == 2
        assert len(await reader.get_target(f"{target_prefix}set")) == 2
        zset = await reader.get_target(f"{target_prefix}zset")
        assert [item["id"] for item in zset] == ["a", "b"]
        assert len(await reader.get_target(f"{target_prefix}string")) == 2

        await second.register(report, targets=targets, refresh_interval=3600.0, name="rep")
        await second.wait_built(name, timeout=10.0)  # learnt from Redis: built by the leader
        assert not second.status(name).is_leader

        await first.refresh(name)  # on the leader: returns once swapped in
        await wait_until(lambda: build_shown(reader, listed, 2), what="the refreshed build")
        await second.refresh(name)  # on a follower: asks the leader over pub/sub
        await wait_until(lambda: build_shown(reader, listed, 3), what="the requested build")

        await first.unregister(name)  # releases the lease and says so: the follower takes over
        await wait_until(lambda: second.status(name).is_leader, what="the takeover")
        done = report.builds
        await second.refresh(name)
        await wait_until(lambda: build_shown(reader, listed, done + 1), what="the new leader")
        await second.unregister(name)


@contextlib.asynccontextmanager
async def clients(*urls: str, **kwargs: Any) -> AsyncIterator[list[aioredis.Redis]]:
    made = [aioredis.Redis.from_url(url, **kwargs) for url in urls]
    try:
        yield made
    finally:
        for client in made:
            await client.aclose()


# -- servers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def binary() -> str:
    try:
        return find_server_binary()
    except ServerNotFoundError as error:
        pytest.skip(f"no server binary to start secured servers with: {error}")


@pytest.fixture(scope="module")
def password_server(binary: str) -> Iterator[RedisServer]:
    with RedisServer(binary=binary, password=APP_PASSWORD) as server:
        yield server


@pytest.fixture(scope="module")
def acl_server(binary: str) -> Iterator[RedisServer]:
    """A server whose default user needs a password; each test adds its own ACL user."""
    with RedisServer(binary=binary, password=ADMIN_PASSWORD) as server:
        yield server


@pytest.fixture
async def admin(acl_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    async with clients(acl_server.url) as (client,):
        yield client


async def denials(admin: aioredis.Redis, user: str) -> list[dict[str, Any]]:
    """The server's ACL LOG entries for ``user``, minus ``CLIENT SETINFO``: redis-py sends it
    on connect and ignores a refusal (add ``+client|setinfo`` to silence those entries)."""
    found = []
    for raw in await admin.acl_log(count=1000):
        entry = {_text(k): _text(v) for k, v in raw.items()}
        if entry.get("username") == user and entry.get("object") != "client|setinfo":
            found.append(entry)
    return found


async def run(r: aioredis.Redis, command_line: str) -> Any:
    """Send a command written as one line, as ``redis-cli`` would."""
    return await r.execute_command(*shlex.split(command_line))  # type: ignore[no-untyped-call]


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


# -- requirepass -----------------------------------------------------------------------------


async def test_password_protected_server(password_server: RedisServer, namespace: str) -> None:
    url = f"redis://:{APP_PASSWORD}@127.0.0.1:{password_server.port}/0"
    async with clients(url, url) as (a, b):
        await check_cache(a, b, namespace)
        await check_builder(a, b, namespace, f"report-{namespace}:")
    async with clients(f"redis://127.0.0.1:{password_server.port}/0") as (anonymous,):
        # A missing password is a configuration error, not an outage: it shows at start-up
        # (redis-py's AuthenticationError is a ConnectionError, which would otherwise hide it).
        for make in (CacheClient, CacheBuilder):
            with pytest.raises(RedisPermissionError) as refused:
                async with make(anonymous, namespace=namespace, redis_timeout=5.0):
                    pass
            assert isinstance(refused.value.__cause__, AuthenticationError)


# -- ACL -------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [3, 2])
async def test_acl_user_limited_to_the_namespace_runs_everything(
    acl_server: RedisServer, admin: aioredis.Redis, namespace: str, protocol: int
) -> None:
    user = f"app-{uuid.uuid4().hex[:8]}"
    targets = f"report-{namespace}:"
    rule = minimal_acl(user, APP_PASSWORD, namespace, f"{targets}*")
    assert await run(admin, rule) in (b"OK", "OK", True)
    url = f"redis://{user}:{APP_PASSWORD}@127.0.0.1:{acl_server.port}/0"
    with FaultProxy("127.0.0.1", acl_server.port) as proxy:
        proxied = f"redis://{user}:{APP_PASSWORD}@127.0.0.1:{proxy.port}/0"
        async with clients(url, proxied, protocol=protocol) as (a, b):
            await check_cache(a, b, namespace)
            await check_builder(a, b, namespace, targets)
            await check_catch_up(a, b, namespace, proxy)
    assert await denials(admin, user) == []  # nothing the flow ran was refused


async def check_catch_up(
    a: aioredis.Redis, b: aioredis.Redis, namespace: str, proxy: FaultProxy
) -> None:
    """``b``'s connections drop, a write happens meanwhile, ``b`` comes back and catches up
    (reading the event stream, under the same ACL)."""
    async with (
        CacheClient(a, namespace=namespace) as cache_a,
        CacheClient(b, namespace=namespace) as cache_b,
    ):
        await cache_a.set("config", {"v": 1})
        assert await cache_b.get("config") == {"v": 1}
        proxy.refuse(True)
        proxy.cut()
        await cache_a.set("config", {"v": 2})
        proxy.refuse(False)
        await wait_until(lambda: has_value(cache_b, "config", {"v": 2}), what="b to catch up")


async def test_acl_user_is_refused_outside_its_namespace_and_targets(
    acl_server: RedisServer, admin: aioredis.Redis, namespace: str
) -> None:
    user = f"app-{uuid.uuid4().hex[:8]}"
    rule = minimal_acl(user, APP_PASSWORD, namespace, f"report-{namespace}:*")
    await run(admin, rule)
    url = f"redis://{user}:{APP_PASSWORD}@127.0.0.1:{acl_server.port}/0"
    async with clients(url) as (r,):
        # Another namespace: the listener cannot subscribe, and start-up says so at once
        # (well before redis_timeout) instead of answering without Redis.
        with pytest.raises(RedisPermissionError, match="check the password and the ACL"):
            async with CacheClient(r, namespace=f"{namespace}-other", redis_timeout=5.0):
                pass
    # A user that may listen on another namespace (its stream, and its clear time, which a
    # listener reads at each subscription) but touch none of its values: every operation fails
    # with the server's NOPERM, as a RedisPermissionError, never as an outage.
    listener_only = f"{user}-l"
    other = f"{namespace}-other"
    await run(
        admin,
        f"ACL SETUSER {listener_only} on >{APP_PASSWORD} resetkeys ~{other}:stream "
        f"~{other}:cleared:* resetchannels &{other}:* -@all +ping +subscribe +xinfo|stream "
        "+xrange +evalsha +script|load +get +mget +type",
    )
    url = f"redis://{listener_only}:{APP_PASSWORD}@127.0.0.1:{acl_server.port}/0"
    async with clients(url) as (r,), CacheClient(r, namespace=other, redis_timeout=0.3) as cache:
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "get_or_init": lambda: cache.get_or_init("k", must_not_fetch),
            "attempt_regeneration": lambda: cache.attempt_regeneration("k", must_not_fetch),
            "get": lambda: cache.get("k"),
            "set": lambda: cache.set("k", 1),
            "delete": lambda: cache.delete("k"),
            "get_target": lambda: cache.get_target(f"report-{namespace}:list"),
        }
        for what, call in calls.items():
            with pytest.raises(RedisPermissionError) as caught:
                await call()
            assert isinstance(caught.value.__cause__, NoPermissionError), what
        assert cache.stats().circuit_opens == 0  # refusals are not outages
    url = f"redis://{user}:{APP_PASSWORD}@127.0.0.1:{acl_server.port}/0"
    # Its own namespace, but a target outside its key patterns: the build is refused.
    async with (
        clients(url) as (r,),
        CacheBuilder(r, namespace=namespace, redis_timeout=0.3) as builder,
    ):
        name = await builder.register(
            Report(), targets=[Target(f"elsewhere-{namespace}", "list")], refresh_interval=60
        )
        await wait_until(lambda: builder.status(name).failures >= 1, what="a failed build")
        assert (builder.status(name).last_error or "").startswith("NoPermissionError")
        with pytest.raises(BuildError) as failed:
            await builder.refresh(name)
        assert isinstance(failed.value.__cause__, NoPermissionError)
    reasons = {(entry["reason"], entry["object"]) for entry in await denials(admin, user)}
    assert ("channel", f"{namespace}-other:events") in reasons
    assert any(reason == "key" for reason, _ in reasons)
    assert await admin.exists(f"elsewhere-{namespace}") == 0


async def test_a_read_the_acl_refuses_inside_a_script_is_an_error_not_a_miss(
    acl_server: RedisServer, admin: aioredis.Redis, namespace: str
) -> None:
    """The value read skips keys of another type (their WRONGTYPE reads as "no value"); any
    other error, here the ACL's refusal of GET and MGET, must reach the caller: from a lone
    read's plain GET, and from inside the script that reads a batch (or where a replica may
    answer) with MGET."""
    user = f"app-{uuid.uuid4().hex[:8]}"
    allowed = " ".join(f"+{command}" for command in ACL_COMMANDS if command not in ("get", "mget"))
    await run(
        admin,
        f"ACL SETUSER {user} on >{APP_PASSWORD} resetkeys ~{namespace}:* "
        f"resetchannels &{namespace}:* -@all {allowed}",
    )
    async with CacheClient(admin, namespace=namespace) as writer:
        await writer.set("k", {"v": 1})
    url = f"redis://{user}:{APP_PASSWORD}@127.0.0.1:{acl_server.port}/0"
    async with clients(url) as (r,), CacheClient(r, namespace=namespace) as cache:
        # Its listener cannot read the namespace's clear time either, so it never subscribes,
        # and each read reads the clear time first, as a lone value is read: by a plain GET
        # where no replica may answer (set here, as a subscription would have), else a script.
        cache._plain_reads = True
        with pytest.raises(RedisPermissionError):
            await cache.get("k")
        # Inside a script the server words it its own way ("ACL failure in script", "The user
        # executing the script can't run this command"), which redis-py does not map to
        # NoPermissionError: the library reports the server's refusal as it is.
        cache._plain_reads = False
        with pytest.raises(RedicacheError, match="script"):
            await cache.get("k")


async def test_acl_rule_is_accepted_and_read_back(admin: aioredis.Redis, namespace: str) -> None:
    """The rule's syntax (``+xinfo|stream``, ``+script|load``) holds on this engine."""
    user = f"app-{uuid.uuid4().hex[:8]}"
    await run(admin, minimal_acl(user, APP_PASSWORD, namespace, "report:*"))
    described: Any = await admin.acl_getuser(user)
    keys = [_text(pattern) for pattern in described["keys"]]
    assert keys == [f"~{namespace}:*", "~report:*"] or keys == [f"~{namespace}:* ~report:*"]
    commands = " ".join(_text(c) for c in described["commands"] + described["categories"])
    for command in ("xinfo|stream", "script|load", "evalsha", "xadd", "xrange"):
        assert f"+{command}" in commands
    assert "-@all" in commands


# -- TLS -------------------------------------------------------------------------------------

#: What a server binary built without TLS says when asked for a TLS port.
_NO_TLS = ("Failed finding TLS support", "Missing implement of connection type tls")


def _tls_candidates() -> list[str]:
    """The configured binary first, then any ``redis-server``/``valkey-server`` on PATH."""
    found: list[str] = []
    with contextlib.suppress(ServerNotFoundError):
        found.append(find_server_binary())
    for name in ("redis-server", "valkey-server"):
        path = shutil.which(name)
        if path is not None:
            found.append(path)
    unique: dict[str, str] = {}
    for path in found:
        unique.setdefault(os.path.realpath(path), path)
    return list(unique.values())


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> ServerTLS:
    """A CA and a certificate for 127.0.0.1 it signed, as PEM files."""
    trustme = pytest.importorskip("trustme")
    directory: Path = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    files = ServerTLS(directory / "server.pem", directory / "server.key", directory / "ca.pem")
    ca.cert_pem.write_to_path(files.ca_file)
    leaf.private_key_pem.write_to_path(files.key_file)
    for position, pem in enumerate(leaf.cert_chain_pems):
        pem.write_to_path(files.cert_file, append=position > 0)
    return files


@pytest.fixture(scope="module")
def tls_server(tls_files: ServerTLS) -> Iterator[RedisServer]:
    """A TLS-only server, from the first candidate binary built with TLS."""
    refusals = []
    for candidate in _tls_candidates():
        server = RedisServer(binary=candidate, tls=tls_files)
        try:
            server.start()
        except ServerStartError as error:
            if not any(marker in str(error) for marker in _NO_TLS):
                raise
            refusals.append(f"{candidate} ({server.version()}): no TLS support")
            continue
        try:
            yield server
        finally:
            server.stop()
        return
    pytest.skip(
        "no server binary built with TLS: "
        + ("; ".join(refusals) or "none found")
        + " (set REDICACHE_REDIS_SERVER to one, e.g. Debian's /usr/bin/redis-server)"
    )


async def test_tls_server(tls_server: RedisServer, tls_files: ServerTLS, namespace: str) -> None:
    assert tls_server.url.startswith("rediss://")
    url = f"rediss://127.0.0.1:{tls_server.port}/0"
    ca = os.fspath(tls_files.ca_file)
    async with clients(url, url, ssl_ca_certs=ca) as (a, b):
        assert await a.ping() is True
        await check_cache(a, b, namespace)
        await check_builder(a, b, namespace, f"report-{namespace}:")


async def test_tls_mistakes_are_configuration_errors_at_start(
    tls_server: RedisServer, tls_files: ServerTLS, tmp_path: Path, namespace: str
) -> None:
    """A wrong CA, or plain text to a TLS port, will never work: ``start()`` says so, for the
    client and the builder alike, instead of starting as if Redis were down."""
    other_ca = tmp_path / "other-ca.pem"
    pytest.importorskip("trustme").CA().cert_pem.write_to_path(other_ca)
    wrong_ca = (f"rediss://127.0.0.1:{tls_server.port}/0", {"ssl_ca_certs": os.fspath(other_ca)})
    plain: tuple[str, dict[str, str]] = (f"redis://127.0.0.1:{tls_server.port}/0", {})
    for (url, options), says in [(wrong_ca, "TLS handshake"), (plain, "speaks TLS")]:
        async with clients(url, socket_timeout=1.0, **options) as (r,):
            for kind in (CacheClient, CacheBuilder):
                with pytest.raises(RedisConfigurationError, match=says) as raised:
                    async with kind(r, namespace=namespace, redis_timeout=0.5):
                        pass
                assert not isinstance(raised.value, RedisPermissionError)


async def _refused(cache: CacheClient, fetch: Fetch, says: str) -> bool:
    try:
        await cache.get_or_init("k", fetch)
    except RedisConfigurationError as exc:
        return says in str(exc)
    return False


async def test_tls_mistakes_found_after_start_are_raised_by_each_call(
    tls_server: RedisServer, tls_files: ServerTLS, tmp_path: Path, namespace: str
) -> None:
    """The server was unreachable at start (the client started anyway, to answer without
    it); once it is there, each call raises the configuration error rather than answering as
    in an outage by fetching in-process."""
    other_ca = tmp_path / "other-ca.pem"
    pytest.importorskip("trustme").CA().cert_pem.write_to_path(other_ca)
    with FaultProxy("127.0.0.1", tls_server.port) as proxy:
        for scheme, options, says, at_once in [
            # the call's own handshake fails: it knows at once
            ("rediss", {"ssl_ca_certs": os.fspath(other_ca)}, "TLS handshake", True),
            # a reset: known once the listener has tried a TLS handshake
            ("redis", {}, "speaks TLS", False),
        ]:
            proxy.refuse(True)
            url = f"{scheme}://127.0.0.1:{proxy.port}/0"
            async with (
                clients(url, socket_timeout=1.0, **options) as (r,),
                CacheClient(r, namespace=namespace, redis_timeout=0.5) as cache,
            ):
                proxy.refuse(False)
                fetch = Fetch("fetched")
                if at_once:
                    assert await _refused(cache, fetch, says)
                await wait_until(
                    lambda: _refused(cache, fetch, says),  # noqa: B023 (awaited at once)
                    timeout=10.0,
                    what="a call to say what is wrong",
                )
                assert fetch.calls == 0 or not at_once
                for call in (cache.get("k"), cache.set("k", 1), cache.get_or_init("k", fetch)):
                    with pytest.raises(RedisConfigurationError, match=says):
                        await call
