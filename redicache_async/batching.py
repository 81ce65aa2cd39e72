"""Auto-batching of reads: the reads that concurrent callers issue while another is in flight
go to Redis together, as one command.

A read when nothing else is in flight is sent at once, in the caller's own task: a lone call
pays no extra loop iteration and creates no task. A read that arrives while a batch is in
flight starts a new batch and yields to the loop once, so that every read issued in that loop
iteration joins it; its caller then sends the batch. Callers of a key that is already being
read join that read (single-flight).

Nothing here runs in the background: each batch is sent by one of its callers. Should that
caller be cancelled, the batch's other callers are not failed with its cancellation: they
retry, in a batch of their own.

A batch of several keys whose send raises is not blamed on all of them: each of its keys is
read again alone, so that a failure that belongs to one key (a value that cannot be read back,
say) reaches only that key's callers. A failure that belongs to none (a refused command) costs
one send per key, as unbatched reads would.

A write of a key makes its read in flight out of date: :meth:`ReadBatcher.forget` lets later
callers send a read of their own instead of joining it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable, Sequence
from typing import Any, Final, Generic, TypeVar

__all__ = ["ReadBatcher"]

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")

#: Told to the other callers of a batch whose sender was cancelled: read again.
_RETRY: Final = object()
#: Told to every caller of a batch of several keys whose send raised: read again, alone.
_ALONE: Final = object()


#: One key's read: the futures of its callers other than the batch's sender.
_Flight = list[asyncio.Future[Any]]


class ReadBatcher(Generic[K, R]):
    """Runs ``send(keys)`` (one result per key, in order) for reads of ``keys`` that were
    issued together; see the module's docstring. ``max_batch`` caps the keys of one send;
    ``send_one(key)``, when given, sends a batch of one key instead of ``send``."""

    __slots__ = (
        "_flights",
        "_forming",
        "_in_flight",
        "_max_batch",
        "_send",
        "_send_one",
        "_waking",
    )

    def __init__(
        self,
        send: Callable[[list[K]], Coroutine[Any, Any, Sequence[R]]],
        *,
        send_one: Callable[[K], Coroutine[Any, Any, R]] | None = None,
        max_batch: int = 256,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._send = send
        #: Sends a batch of one key, when it has a cheaper command than a batch's.
        self._send_one = send_one
        self._max_batch = max_batch
        self._flights: dict[K, _Flight] = {}
        #: The reads of the batch that is gathering callers this loop iteration.
        self._forming: list[tuple[K, _Flight]] | None = None
        #: Sends awaiting their reply.
        self._in_flight = 0
        #: Callers of a batch were just given their results and run in the next loop
        #: iteration: most of them read again at once.
        self._waking = False

    @property
    def in_flight(self) -> int:
        """Reads (keys) being read or waiting to be sent."""
        return len(self._flights)

    async def read(self, key: K) -> R:
        """``key``'s result, from a send of its own or of a batch it joined."""
        alone = False
        while True:
            flight = self._flights.get(key)
            if flight is None:
                forming = self._forming
                if alone or forming is None or len(forming) >= self._max_batch:
                    result = await self._lead(key, alone=alone)
                else:  # join the batch that this loop iteration is gathering
                    waiter = asyncio.get_running_loop().create_future()
                    self._flights[key] = flight = [waiter]
                    forming.append((key, flight))
                    result = await waiter
            else:  # join the read of this key
                waiter = asyncio.get_running_loop().create_future()
                flight.append(waiter)
                result = await waiter
            if result is _ALONE:
                alone = True
            elif result is not _RETRY:
                return result  # type: ignore[no-any-return]

    def forget_all(self) -> None:
        """:meth:`forget` every key."""
        self._flights.clear()

    def forget(self, key: K) -> None:
        """Later reads of ``key`` do not join the one in flight (its callers still get it)."""
        self._flights.pop(key, None)

    async def _lead(self, key: K, *, alone: bool = False) -> Any:
        flight: _Flight = []
        self._flights[key] = flight
        batch = [(key, flight)]
        try:
            if (
                not alone
                and self._max_batch > 1
                and (self._in_flight or self._forming is not None or self._waking)
            ):
                # Others are reading, or about to: let this iteration's readers join, then
                # send them all. (Without waiting for a batch's woken callers, the next read
                # of the one that sent it, which runs first, would go alone: a round trip for
                # one key each time.)
                self._forming = batch
                try:
                    await asyncio.sleep(0)
                finally:
                    if self._forming is batch:
                        self._forming = None
            self._in_flight += 1
            try:
                if len(batch) == 1 and self._send_one is not None:
                    results: Sequence[Any] = (await self._send_one(key),)
                else:
                    results = await self._send([key for key, _ in batch])
            finally:
                self._in_flight -= 1
        except asyncio.CancelledError:
            self._settle(batch, [_RETRY] * len(batch))
            raise
        except Exception as exc:
            if len(batch) == 1:
                self._fail(batch, exc)
                raise
            self._settle(batch, [_ALONE] * len(batch))
            return _ALONE
        except BaseException as exc:
            self._fail(batch, exc)
            raise
        if len(results) != len(batch):
            error = RuntimeError(f"a batch of {len(batch)} reads got {len(results)} results")
            self._fail(batch, error)
            raise error
        if self._settle(batch, results) and not self._waking:
            self._waking = True
            asyncio.get_running_loop().call_soon(self._woken)
        return results[0]

    def _woken(self) -> None:
        self._waking = False

    def _fail(self, batch: list[tuple[K, _Flight]], error: BaseException) -> None:
        self._settle(batch, [None] * len(batch), error)

    def _settle(
        self,
        batch: list[tuple[K, _Flight]],
        results: Sequence[Any],
        error: BaseException | None = None,
    ) -> bool:
        """End the flights of ``batch``: their waiters get their key's result in ``results``,
        or ``error``. Whether any was waiting."""
        flights = self._flights
        woke = False
        for (key, flight), result in zip(batch, results, strict=True):
            if flights.get(key) is flight:  # not forgotten, nor replaced by a newer read
                del flights[key]
            for waiter in flight:
                if waiter.done():  # its caller was cancelled
                    continue
                woke = True
                if error is None:
                    waiter.set_result(result)
                else:
                    waiter.set_exception(error)
        return woke
