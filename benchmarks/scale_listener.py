"""How many events a second one client's invalidation listener keeps up with.

A publisher process sends ``set`` events on a namespace's channel at a fixed rate (one ``EVAL``
every 5 ms publishes that tick's share, each event the exact bytes a write publishes, for a
distinct key and version), for a few seconds per rate. The listener is a real
:class:`~redicache_async.CacheClient` in this process (its events go through the client's
coherence callbacks, with an empty local layer). At each rate the figure is the listener's lag
when the publisher stops: how long after the last event was sent the client had received them
all (``stats().invalidations_received``). A listener that keeps up is a few milliseconds behind;
one that does not is behind by its backlog, which grows with every second of the run. A rate is
*sustained* when the lag is at most ``SUSTAINED_LAG`` and the listener never had to reconnect.

The same ladder runs twice in one run, rate by rate: with the listener as it is, and with the
listener reading one message per ``get_message`` call and decoding with ``json.loads`` (the 0.x
listener; issue 16 measured it at 40k events/s), by switching off the batch read and the fast
decoder in ``redicache_async.listener``. Target: the listener sustains at least twice the rate
the one-call-per-message listener sustains. The listener's CPU (this process's, per second of
the run) is reported beside the lag. The machine is shared: compare the two columns of one
run, not figures across runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from redicache_async import CacheClient
from redicache_async import listener as listener_module
from redicache_async.invalidation import _decode_json

from .cli import on_server, part_parser
from .results import Result

__all__ = ["main", "run"]

RATES = (20_000, 40_000, 60_000, 80_000, 100_000, 120_000, 160_000, 200_000, 250_000, 300_000)
SMOKE_RATES = (5_000, 20_000)
SECONDS = 3.0
SMOKE_SECONDS = 1.0
#: The most a listener may be behind when the publisher stops, for the rate to count as kept up.
SUSTAINED_LAG = 0.1
#: How long to wait for a listener to catch up before calling it lost.
CATCH_UP_LIMIT = 5.0
TARGET = 2.0
TICK = 0.005
ORIGIN = "0123456789abcdef"

# KEYS[1]: channel. ARGV[1]: first sequence number, ARGV[2]: how many, ARGV[3]: origin.
# The events are those of ``event_prefix("set", "k<n>", origin) + "<n>}"``.
_PUBLISH = """
local first = tonumber(ARGV[1])
for n = first, first + tonumber(ARGV[2]) - 1 do
  redis.call('PUBLISH', KEYS[1],
    '{"op":"set","key":"k' .. n .. '","origin":"' .. ARGV[3] .. '","version":' .. n .. '}')
end
return 0
"""

_PUBLISHER = """
import sys, time
import redis
url, channel, rate, seconds, tick, origin, script = sys.argv[1:8]
rate, seconds, tick = int(rate), float(seconds), float(tick)
r = redis.Redis.from_url(url)
publish = r.register_script(script)
sent = 0
start = time.monotonic()
while True:
    elapsed = time.monotonic() - start
    if elapsed >= seconds:
        break
    due = min(int(rate * elapsed) + int(rate * tick), int(rate * seconds)) - sent
    if due > 0:
        publish(keys=[channel], args=[sent + 1, due, origin])
        sent += due
    time.sleep(max(0.0, tick - (time.monotonic() - start - elapsed)))
print(sent, flush=True)
"""


@dataclass
class Step:
    rate: int
    #: Seconds from the publisher's end until every event was received (None: never).
    lag: float | None
    #: CPU seconds of this process per second of the run.
    cores: float
    flushes: int

    @property
    def sustained(self) -> bool:
        return self.lag is not None and self.lag <= SUSTAINED_LAG and self.flushes == 0


@contextlib.contextmanager
def one_call_per_message() -> Iterator[None]:
    """The listener as it was: one ``get_message`` per event, events decoded by ``json``."""
    names = vars(listener_module)
    saved = {name: names[name] for name in ("buffered_reader", "socket_reader", "decode_event")}
    names["buffered_reader"] = lambda pubsub: None
    names["socket_reader"] = lambda pubsub: None
    names["decode_event"] = _decode_json
    try:
        yield
    finally:
        names.update(saved)


async def _step(url: str, rate: int, seconds: float) -> Step:
    namespace = f"bench-listener-{uuid.uuid4().hex[:8]}"
    r = aioredis.Redis.from_url(url)
    try:
        async with CacheClient(r, namespace=namespace) as cache:
            channel = f"{namespace}:events"
            base = cache.stats()
            cpu0, wall0 = time.process_time(), time.monotonic()
            publisher = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _PUBLISHER,
                url,
                channel,
                str(rate),
                str(seconds),
                str(TICK),
                ORIGIN,
                _PUBLISH,
                stdout=subprocess.PIPE,
            )
            output, _ = await publisher.communicate()
            ended = time.monotonic()
            total = int(output.decode().strip() or 0)
            lag: float | None = None
            while time.monotonic() - ended < CATCH_UP_LIMIT:
                received = cache.stats().invalidations_received - base.invalidations_received
                if received >= total:
                    lag = time.monotonic() - ended
                    break
                await asyncio.sleep(0.002)
            cpu = time.process_time() - cpu0
            wall = time.monotonic() - wall0
            stats = cache.stats()
            flushes = stats.local_flushes - base.local_flushes
    finally:
        await r.aclose()
    return Step(rate, lag, cpu / wall, flushes)


async def _measure(
    url: str, rates: Sequence[int], seconds: float, out: Callable[[str], None]
) -> tuple[list[Step], list[Step]]:
    ours: list[Step] = []
    before: list[Step] = []
    out(
        f"{'events/s':>9}  {'batched: lag':>13} {'cores':>6}   "
        f"{'one call/message: lag':>22} {'cores':>6}"
    )
    ours_done = before_done = False
    for rate in rates:
        if ours_done and before_done:
            break
        row = f"{rate:>9,}  "
        if not ours_done:
            step = await _step(url, rate, seconds)
            ours.append(step)
            ours_done = not step.sustained and step.lag is None
            row += f"{_lag_text(step):>13} {step.cores:>6.2f}   "
        else:
            row += f"{'(lost)':>13} {'':>6}   "
        if not before_done:
            with one_call_per_message():
                step = await _step(url, rate, seconds)
            before.append(step)
            before_done = not step.sustained and step.lag is None
            row += f"{_lag_text(step):>22} {step.cores:>6.2f}"
        else:
            row += f"{'(lost)':>22}"
        out(row)
    return ours, before


def _lag_text(step: Step) -> str:
    if step.lag is None:
        return f"> {CATCH_UP_LIMIT:g} s"
    mark = "" if step.sustained else " *"
    return f"{step.lag * 1000:.0f} ms{mark}"


def _sustained(steps: Sequence[Step]) -> int:
    best = 0
    for step in steps:
        if not step.sustained:
            break
        best = step.rate
    return best


def run(url: str, *, smoke: bool = False, out: Callable[[str], None] = print) -> list[Result]:
    rates = SMOKE_RATES if smoke else RATES
    seconds = SMOKE_SECONDS if smoke else SECONDS
    out(
        f"redicache_async invalidation listener: lag when a {seconds:g} s burst at a fixed "
        f"rate ends, batched read + fast decoder against one get_message per event + json "
        f"(* : more than {SUSTAINED_LAG * 1000:.0f} ms behind, not kept up)"
    )
    ours, before = asyncio.run(_measure(url, rates, seconds, out))
    ours_rate, before_rate = _sustained(ours), _sustained(before)
    if before_rate:
        ratio, floor = ours_rate / before_rate, ""
    else:
        # The baseline kept up with none of the rates tried: it sustains less than the lowest,
        # so the ratio is at least ours over that rate (a bound, not an infinite figure).
        ratio = ours_rate / rates[0]
        floor = f"; the baseline kept up with no rate tried (under {rates[0]:,}): at least this"
    # Both kept up with every rate tried (a smoke run): the ratio says nothing yet.
    decided = not (before and before[-1].sustained)
    out("")
    out(
        f"sustained: {ours_rate:,} events/s batched, {before_rate:,} events/s one call per "
        f"message: {ratio:.2f}x{floor} (target >= {TARGET:g}x"
        f"{'' if decided else '; both kept up with every rate tried, no verdict'})"
    )
    if ours and ours[-1].sustained and ours_rate == rates[-1]:
        out("(the batched listener kept up with the highest rate tried: its ceiling is higher)")
    return [
        Result(
            part="scale",
            name="events/s one listener sustains / one get_message per event",
            figure=ratio,
            unit="x",
            bound=TARGET if decided else None,
            compare="at_least",
            detail=f"{ours_rate:,} events/s against {before_rate:,} events/s{floor}",
        ),
        Result(
            part="scale",
            name="events/s one listener sustains",
            figure=float(ours_rate),
            unit="events/s",
            bound=None,
            detail=f"lag at most {SUSTAINED_LAG * 1000:.0f} ms when a {seconds:g} s burst ends",
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = part_parser(
        "scale_listener",
        "The event rate one invalidation listener keeps up with, before and after batching.",
        smoke="two low rates, 1 s each (CI)",
    )
    args = parser.parse_args(argv)
    on_server(args.url, lambda url: run(url, smoke=args.smoke))
    return 0


if __name__ == "__main__":
    sys.exit(main())
