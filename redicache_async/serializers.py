"""Turning values into bytes and back. JSON by default: readable from any language and,
unlike pickle, safe to load from a Redis that others can write to."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from .errors import SerializationError

_orjson_loads: Callable[[bytes], Any] | None
try:  # optional (``pip install "redicache-async[orjson]"``): decodes about 3x faster
    from orjson import loads as _orjson_loads
except ImportError:  # pragma: no cover - depends on the environment
    _orjson_loads = None

# orjson reads an integer beyond 64 bits as a float, silently; the standard library keeps it an
# int. A run of 20 digits marks a payload that may hold one (translating bytes and searching
# costs about 1 µs a kilobyte, a regular expression ten times that).
_DIGITS_ONLY = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))  # digit: "0"
_LONG_NUMBER = b"0" * 20

__all__ = ["JsonSerializer", "PickleSerializer", "Serializer"]


@runtime_checkable
class Serializer(Protocol):
    """What a client needs to store values: ``loads(dumps(v))`` must give back an equal value."""

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class JsonSerializer:
    """Compact, strict JSON (no NaN or Infinity, which other languages' parsers reject).

    Decoding uses orjson when it is installed, for the payloads on which it gives exactly what
    the standard library gives; the standard library decodes the others (integers beyond 64
    bits, NaN, lone surrogates), so a value reads the same with orjson or without.
    """

    __slots__ = ("_decoder", "_encoder")

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(
            separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=True
        )
        self._decoder = json.JSONDecoder()

    def dumps(self, value: Any) -> bytes:
        try:
            return self._encoder.encode(value).encode()
        except (TypeError, ValueError) as exc:
            raise SerializationError(f"value cannot be stored as JSON: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        if _orjson_loads is not None and _LONG_NUMBER not in data.translate(_DIGITS_ONLY):
            try:
                return _orjson_loads(data)
            except ValueError:  # orjson.JSONDecodeError: let the standard library decide
                pass
        return self._decoder.decode(data.decode())


class PickleSerializer:
    """Python's pickle, for values JSON cannot hold (datetimes, sets, your own classes).

    **Unsafe unless only trusted code can write to your Redis**: loading a pickle runs code
    the pickle names, so anyone who can write to the namespace's keys can run code in every
    process that reads them. Opt in explicitly (``CacheClient(r, serializer=PickleSerializer())``)
    and protect the server (``requirepass`` or an ACL user, TLS, a private network).
    """

    __slots__ = ("_protocol",)

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        self._protocol = protocol

    def dumps(self, value: Any) -> bytes:
        try:
            return pickle.dumps(value, protocol=self._protocol)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise SerializationError(f"value cannot be pickled: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)
