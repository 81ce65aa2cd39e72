"""Classic against sharded pub/sub on a Redis Cluster: what each event costs as the cluster grows.

The library publishes its events with classic ``PUBLISH`` from inside its scripts (see
``redicache_async/topology.py``). This part measures that choice against sharded pub/sub on
clusters of growing size, each started for the run (every master with one replica):

- latency: one message at a time, publish → receive, p50 and p99 (subscriber and publisher in
  one process, so both variants pay the same client costs). Classic: the subscriber on one
  node, the publisher on a master of another shard. Sharded: both on the master that owns the
  channel's slot.
- cluster CPU per message: ``used_cpu_user + used_cpu_sys`` summed over every node, before and
  after, divided by the messages (the idle nodes' own ticks are in it too, alike for both).
- bus copies per message: ``cluster_stats_messages_publish_sent`` (classic) and
  ``..._publishshard_sent`` (sharded) summed over the nodes: how many nodes each message
  crosses the cluster bus to.

No target: these are the figures behind the choice. Nothing asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.crc import key_slot

from redicache_async.testing import ClusterServers, RedisServer

from .cold_key import percentile
from .results import Result

__all__ = ["main", "run"]

PART = "cluster pub/sub"
CHANNEL = "bench:events"
PAYLOAD = b'{"k":"cms::homepage","v":1795443566954516,"o":"a1b2c3d4"}'


@dataclass(frozen=True)
class Figures:
    variant: str
    nodes: int
    p50_us: float
    p99_us: float
    cpu_us: float
    bus_copies: float


def _client(node: RedisServer) -> aioredis.Redis:
    return aioredis.Redis(host=node.host, port=node.port)


async def _totals(nodes: Sequence[RedisServer], field: str) -> tuple[float, int]:
    """Cluster CPU seconds and the sum of one ``CLUSTER INFO`` counter, over every node."""
    cpu, count = 0.0, 0
    for node in nodes:
        r = _client(node)
        try:
            info = await r.info("cpu")
            cpu += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
            counters = await r.cluster("INFO")  # parsed into a dict by redis-py
            count += int(counters.get(field, 0))
        finally:
            await r.aclose()
    return cpu, count


async def _one_at_a_time(
    publish: Callable[[], Any], receive: Callable[[], Any], messages: int
) -> list[float]:
    latencies: list[float] = []
    for _ in range(messages):
        started = time.perf_counter()
        await publish()
        message = await receive()
        if message is None:
            raise RuntimeError("a message was not received within 1 s")
        latencies.append((time.perf_counter() - started) * 1e6)
    return latencies


async def _classic(cluster: ClusterServers, messages: int) -> Figures:
    masters = cluster.masters()
    owner = cluster.master_for_key(CHANNEL)
    publisher_node = next(m for m in masters if m is not owner)
    subscriber_node = owner  # any node hears every classic message; this one is not the sender
    publisher, subscriber = _client(publisher_node), _client(subscriber_node)
    pubsub: Any = subscriber.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe(CHANNEL)
        await pubsub.get_message(timeout=1.0)  # the confirmation
        await _one_at_a_time(
            lambda: publisher.publish(CHANNEL, PAYLOAD),
            lambda: pubsub.get_message(timeout=1.0),
            min(100, messages),
        )
        field = "cluster_stats_messages_publish_sent"
        cpu_before, sent_before = await _totals(cluster.nodes, field)
        latencies = await _one_at_a_time(
            lambda: publisher.publish(CHANNEL, PAYLOAD),
            lambda: pubsub.get_message(timeout=1.0),
            messages,
        )
        cpu_after, sent_after = await _totals(cluster.nodes, field)
    finally:
        await pubsub.aclose()
        await publisher.aclose()
        await subscriber.aclose()
    return _figures(
        "classic PUBLISH", cluster, latencies, cpu_after - cpu_before, sent_after - sent_before
    )


async def _sharded(cluster: ClusterServers, messages: int) -> Figures:
    owner = cluster.master_of_slot(key_slot(CHANNEL.encode()))
    publisher, subscriber = _client(owner), _client(owner)
    pubsub: Any = subscriber.pubsub(ignore_subscribe_messages=True)

    async def receive() -> Any:  # a node's PubSub hands "smessage"s out of get_message
        return await pubsub.get_message(timeout=1.0)

    try:
        await pubsub.ssubscribe(CHANNEL)
        await pubsub.get_message(timeout=1.0)  # the confirmation
        await _one_at_a_time(
            lambda: publisher.spublish(CHANNEL, PAYLOAD), receive, min(100, messages)
        )
        field = "cluster_stats_messages_publishshard_sent"
        cpu_before, sent_before = await _totals(cluster.nodes, field)
        latencies = await _one_at_a_time(
            lambda: publisher.spublish(CHANNEL, PAYLOAD), receive, messages
        )
        cpu_after, sent_after = await _totals(cluster.nodes, field)
    finally:
        await pubsub.aclose()
        await publisher.aclose()
        await subscriber.aclose()
    return _figures(
        "sharded SPUBLISH", cluster, latencies, cpu_after - cpu_before, sent_after - sent_before
    )


def _figures(
    variant: str, cluster: ClusterServers, latencies: list[float], cpu: float, sent: int
) -> Figures:
    messages = len(latencies)
    return Figures(
        variant=variant,
        nodes=len(cluster.nodes),
        p50_us=statistics.median(latencies),
        p99_us=percentile(latencies, 99),
        cpu_us=cpu * 1e6 / messages,
        bus_copies=sent / messages,
    )


async def _measure(cluster: ClusterServers, messages: int) -> list[Figures]:
    # Interleaved halves, so that drift on a shared machine hits both alike.
    half = max(1, messages // 2)
    first = [await _classic(cluster, half), await _sharded(cluster, half)]
    second = [await _sharded(cluster, half), await _classic(cluster, half)]
    return [_merge(first[0], second[1]), _merge(first[1], second[0])]


def _merge(a: Figures, b: Figures) -> Figures:
    return Figures(
        variant=a.variant,
        nodes=a.nodes,
        p50_us=(a.p50_us + b.p50_us) / 2,
        p99_us=max(a.p99_us, b.p99_us),
        cpu_us=(a.cpu_us + b.cpu_us) / 2,
        bus_copies=(a.bus_copies + b.bus_copies) / 2,
    )


def run(*, smoke: bool = False, out: Callable[[str], None] = print) -> list[Result]:
    """Start each cluster, measure, print the table through ``out``, stop the cluster."""
    sizes = (3,) if smoke else (3, 6)
    messages = 200 if smoke else 2000
    rows: list[Figures] = []
    for masters in sizes:
        with ClusterServers(masters=masters, replicas=1) as cluster:
            rows += asyncio.run(_measure(cluster, messages))
    out(f"== cluster pub/sub: classic against sharded, {messages} messages one at a time ==")
    heads = f"{'p50 µs':>8} {'p99 µs':>8} {'CPU µs/msg':>11} {'bus copies':>10}"
    out(f"{'variant':18} {'nodes':>5} {heads}")
    for row in rows:
        out(
            f"{row.variant:18} {row.nodes:5d} {row.p50_us:8.1f} {row.p99_us:8.1f} "
            f"{row.cpu_us:11.1f} {row.bus_copies:10.2f}"
        )
    out("CPU: every node's user+sys time over the run / messages; bus copies: messages sent")
    out("over the cluster bus per message. Figures, not assertions.")
    results: list[Result] = []
    for row in rows:
        detail = (
            f"p99 {row.p99_us:.0f} µs; cluster CPU {row.cpu_us:.1f} µs/message; "
            f"{row.bus_copies:.2f} bus copies/message"
        )
        results.append(
            Result(
                PART,
                f"{row.variant}, {row.nodes} nodes: publish → receive p50",
                row.p50_us,
                "µs",
                None,
                detail=detail,
            )
        )
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cluster_pubsub",
        description="Classic against sharded pub/sub on clusters of 6 and 12 nodes.",
    )
    parser.add_argument("--smoke", action="store_true", help="one 6-node cluster, 200 messages")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    run(smoke=parse_args(argv).smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
