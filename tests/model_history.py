"""The reference model of ``tests/test_model.py``: what each key held, write by write, and what
each client may still answer for it.

Every write in the model has a unique value (a counter), so an answer names the write it came
from. A client may answer with the write that was current at its *floor* or any later one: its
floor for a key rises to its own completed writes (read-your-writes), to whatever it answered
before (a client never goes back in time), and to the last write once every listener has caught
up (convergence). A value fetched by a fetch that a write or delete overtook was never a
completed write: nobody but that fetch's own callers may ever see it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["History", "ModelViolation", "Write"]


class ModelViolation(AssertionError):
    """An answer or a state that the contract (DESIGN.md) forbids."""


@dataclass(frozen=True, slots=True)
class Write:
    seq: int
    #: None for a delete (and for the key's initial absence).
    value: int | None
    what: str

    def __str__(self) -> str:
        shown = "absent" if self.value is None else repr(self.value)
        return f"#{self.seq} {self.what} -> {shown}"


class History:
    """The writes of every key, in the order they completed, and each client's floor."""

    def __init__(self, keys: tuple[str, ...], clients: int) -> None:
        self._writes: dict[str, list[Write]] = {k: [Write(0, None, "initially")] for k in keys}
        self._forbidden: dict[str, dict[int, str]] = {k: {} for k in keys}
        #: Values one client must not answer any more (it removed them: ``invalidate_tags``).
        self._gone: dict[tuple[int, str], dict[int, tuple[int, str]]] = {}
        self._floors: dict[tuple[int, str], int] = {(c, k): 0 for c in range(clients) for k in keys}
        self._clients = clients
        self._seq = 0

    def current(self, key: str) -> Write:
        return self._writes[key][-1]

    def floor(self, client: int, key: str) -> int:
        return self._floors[(client, key)]

    def wrote(self, key: str, value: int | None, what: str, *, by: int | None) -> Write:
        """A write (or delete, ``value`` None) of ``key`` completed now. ``by``: the client
        whose call completed it, which must read it or newer from now on (None when no call
        of the client completed, e.g. a cancelled call whose work went on)."""
        self._seq += 1
        write = Write(self._seq, value, what)
        self._writes[key].append(write)
        if by is not None:
            self._floors[(by, key)] = write.seq
        return write

    def forbid(self, key: str, value: int, why: str) -> None:
        """``value`` was fetched but overtaken: it must never be stored nor answered."""
        self._forbidden[key][value] = why

    def gone_for(self, client: int, key: str, values: list[int], why: str) -> None:
        """``client`` removed ``values`` of ``key`` (``invalidate_tags`` of a tag they carry):
        it must not answer them from now on. (It cannot know which keys hold the tag beyond
        its own copies, so its floor does not rise: an older value without the tag that it
        has not heard was written over is still an answer it may give.)"""
        gone = self._gone.setdefault((client, key), {})
        for value in values:
            gone[value] = (self._seq, why)

    def values(self, key: str) -> list[int]:
        """Every value ever written for ``key``."""
        return [w.value for w in self._writes[key] if w.value is not None]

    def forbidden(self, key: str, value: object) -> str | None:
        """Why ``value`` must not be seen for ``key``, or None if it may be."""
        if not isinstance(value, int):
            return None
        return self._forbidden[key].get(value)

    def converged(self, key: str) -> None:
        """Every client has been seen to answer the current write: none may go back."""
        seq = self.current(key).seq
        for client in range(self._clients):
            self._floors[(client, key)] = max(self._floors[(client, key)], seq)

    def check_read(
        self,
        client: int,
        key: str,
        answer: object,
        what: str,
        *,
        floor: int | None = None,
    ) -> None:
        """``client`` answered ``answer`` for ``key`` (``what`` names the call). ``floor``: the
        client's floor when the call started, for a call that overlapped writes."""
        why = self.forbidden(key, answer)
        if why is None and isinstance(answer, int):
            gone = self._gone.get((client, key), {}).get(answer)
            # A call that overlapped the removal (``floor``: its client's floor when it
            # started) may have answered before it.
            if gone is not None and (floor is None or gone[0] <= floor):
                why = gone[1]
        if why is not None:
            raise ModelViolation(
                f"c{client} {what} answered {answer!r} for {key!r}: {why}. No write may be "
                f"undone (DESIGN 10).\n{self.describe(key)}"
            )
        low = self._floors[(client, key)] if floor is None else floor
        matches = [w for w in self._writes[key] if w.value == answer and w.seq >= low]
        if not matches:
            known = [w for w in self._writes[key] if w.value == answer]
            if known:
                problem = (
                    f"the write it came from, {known[-1]}, is older than #{low}, which c{client} "
                    "must see or newer (its own write, an answer it gave, a quiet point, or the "
                    "last write while its listener is known to be lost)"
                )
            else:
                problem = "no write ever stored that value"
            raise ModelViolation(
                f"c{client} {what} answered {answer!r} for {key!r}: {problem}.\n"
                f"{self.describe(key)}"
            )
        seq = min(w.seq for w in matches)
        self._floors[(client, key)] = max(self._floors[(client, key)], seq)

    def describe(self, key: str) -> str:
        lines = [f"writes of {key!r}, oldest first:"]
        lines += [f"  {w}" for w in self._writes[key][-8:]]
        floors = ", ".join(f"c{c}: #{self._floors[(c, key)]}" for c in range(self._clients))
        lines.append(f"  floors: {floors}")
        for value, why in self._forbidden[key].items():
            lines.append(f"  never to be seen: {value!r} ({why})")
        return "\n".join(lines)
