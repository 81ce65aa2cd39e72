"""What differs between one Redis, a Redis Cluster and a Sentinel-managed master.

A Sentinel master (``Sentinel(...).master_for(name)``) is a plain ``Redis`` whose connections
find the current master by themselves, so only a cluster needs care:

- the keys of one script must share a slot (``keys.py`` tags them), and the namespace's event
  stream has a slot of its own, so the scripts cannot append to it;
- channels are classic pub/sub. A ``PUBLISH`` on any node reaches the subscribers of every
  node (over the cluster bus), so one connection to any node hears the whole namespace, and a
  script can publish in the same step as its write, whatever its slot. Sharded pub/sub would
  spare the bus, but a script may only ``SPUBLISH`` to a channel of its own slot: the
  subscribers would need one channel per slot (16384 subscriptions each), or the event would
  leave the script and could be lost between the write and the publish.
"""

from __future__ import annotations

import random
from typing import Any

from redis.asyncio.cluster import RedisCluster

__all__ = ["first_attempt", "is_cluster", "masters", "open_subscriber", "slot_map", "slot_owner"]


def is_cluster(redis: Any) -> bool:
    return isinstance(redis, RedisCluster)


def slot_owner(redis: Any, key: str) -> str | None:
    """The name (``host:port``) of the master that serves ``key``'s slot, as the cluster
    client's map of the slots says now (the node its next command for ``key`` goes to); None
    while the client has no map yet (before its first command) or the slot has no master in it.
    """
    nodes = redis.nodes_manager.slots_cache.get(redis.keyslot(key))
    return nodes[0].name if nodes else None


def slot_map(redis: Any) -> object:
    """The cluster client's map of the slots: redis-py builds a new one each time it learns
    the cluster's layout again (after a connection error, or a failover), and patches it in
    place on a MOVED reply."""
    return redis.nodes_manager.slots_cache


def masters(redis: Any) -> set[str]:
    """The names of the masters the cluster client knows of."""
    return {node.name for node in redis.get_primaries()}


async def open_subscriber(redis: Any, attempt: int) -> Any:
    """A pub/sub object for classic channels, for a listener's ``attempt``-th connection.

    On a cluster it talks to one node: the next one at each attempt, so that a listener whose
    node died moves on even before the client has noticed. Listeners start their count at
    random (:func:`first_attempt`), which spreads them over the nodes.
    """
    if not is_cluster(redis):
        return redis.pubsub()
    await redis.initialize()  # a no-op once the client knows the cluster's nodes
    nodes = sorted(redis.get_nodes(), key=lambda node: node.name)
    return redis.pubsub(node=nodes[attempt % len(nodes)])


def first_attempt() -> int:
    return random.randrange(1 << 16)
