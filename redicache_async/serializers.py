"""Turning values into bytes and back. JSON by default: readable from any language and,
unlike pickle, safe to load from a Redis that others can write to."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from .errors import InvalidArgumentTypeError, SerializationError

_orjson_loads: Callable[[bytes], Any] | None
_orjson_dumps: Callable[..., bytes] | None
try:  # optional (``pip install "redicache-async[orjson]"``): decodes about 3x faster, encodes 2.5x
    from orjson import OPT_PASSTHROUGH_SUBCLASS
    from orjson import dumps as _orjson_dumps
    from orjson import loads as _orjson_loads
except ImportError:  # pragma: no cover - depends on the environment
    _orjson_loads = _orjson_dumps = None

# orjson reads an integer outside [-2^63, 2^64 - 1] as a float, silently; the standard library
# keeps it an int. Every integer of 18 digits or fewer is inside, and some of 19 are not
# (-(2^63) - 1), so a run of 19 digits marks a payload that may hold one (translating bytes and
# searching costs about 1 µs a kilobyte, a regular expression ten times that). A float never
# makes such a run: repr() writes at most 17 significant digits, and 16 before an exponent.
_DIGITS_ONLY = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))  # digit: "0"
_LONG_NUMBER = b"0" * 19

__all__ = [
    "JsonSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "Serializer",
    "check_serializer",
]


@runtime_checkable
class Serializer(Protocol):
    """What a client needs to store values: ``loads(dumps(v))`` must give back an equal value,
    and ``dumps`` raises :class:`SerializationError` for a value it cannot hold (whatever the
    reason: a type it does not know, a cycle, a value nested too deeply)."""

    def dumps(self, value: Any) -> bytes:
        """The bytes stored for ``value``; ``SerializationError`` when it cannot be held."""

    def loads(self, data: bytes) -> Any:
        """The value that ``dumps`` stored as ``data``."""


class JsonSerializer:
    """Compact, strict JSON (no NaN or Infinity, which other languages' parsers reject).

    Decoding uses orjson when it is installed, for the payloads on which it gives exactly what
    the standard library gives; the standard library decodes the others (integers beyond 64
    bits, NaN, lone surrogates), so a value reads the same with orjson or without. Encoding
    uses orjson too, for the values that it reads back equal to themselves (plain dicts, lists,
    text, numbers, booleans and None); the standard library encodes the others (tuples, NaN, a
    UUID or an enum, which orjson would change silently, and whatever needs ``default``).

    Types JSON does not know go through hooks, as with :func:`json.dumps` and
    :func:`json.loads`: ``default(obj)`` returns something JSON can hold (or raises
    ``TypeError``), and ``object_hook(dict)`` turns a decoded object back into yours. Mark the
    objects that ``default`` makes so that ``object_hook`` knows them (e.g. ``{"$date":
    "2026-11-23"}``). With an ``object_hook``, decoding always uses the standard library
    (orjson has no hooks).
    """

    __slots__ = ("_decoder", "_encoder", "_fast", "_fast_dumps")

    def __init__(
        self,
        *,
        default: Callable[[Any], Any] | None = None,
        object_hook: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self._encoder = json.JSONEncoder(
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
            check_circular=True,
            default=default,
        )
        self._decoder = json.JSONDecoder(object_hook=object_hook)
        self._fast = _orjson_loads if object_hook is None else None
        self._fast_dumps = _orjson_dumps

    def dumps(self, value: Any) -> bytes:
        fast = self._fast_dumps
        if fast is not None:
            try:
                # A subclass of a built-in goes to ``_refuse``: orjson reads a dict's own
                # storage, where the standard library calls the subclass's ``items()``.
                data = fast(value, _refuse, OPT_PASSTHROUGH_SUBCLASS)
                # What orjson encodes but the standard library would not (NaN and infinities
                # as null, a UUID as text, an enum as its value, a date) does not read back
                # equal to the value.
                if _orjson_loads(data) == value:  # type: ignore[misc]
                    return data
            except Exception:  # the standard library, below, decides and says why
                pass
        try:
            return self._encoder.encode(value).encode()
        except RecursionError as exc:
            raise SerializationError("value is nested too deeply to be stored as JSON") from exc
        except Exception as exc:  # a TypeError, a ValueError, or whatever ``default`` raised
            raise SerializationError(f"value cannot be stored as JSON: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        fast = self._fast
        if fast is not None and _LONG_NUMBER not in data.translate(_DIGITS_ONLY):
            try:
                return fast(data)
            except ValueError:  # orjson.JSONDecodeError: let the standard library decide
                pass
        return self._decoder.decode(data.decode())


def _refuse(obj: Any) -> Any:
    raise TypeError


class MsgpackSerializer:
    """MessagePack through msgspec (``pip install "redicache-async[msgpack]"``): smaller
    payloads and faster than JSON, still readable from other languages, and as safe to load
    (no code runs).

    Beyond what msgpack holds, msgspec encodes datetimes, dates, UUIDs, decimals, dataclasses,
    enums and ``msgspec.Struct`` classes. Decoding gives the built-in types back (a datetime as
    a timestamp, a dataclass as a dict) unless ``type`` says what to decode into (e.g.
    ``type=MyStruct`` or ``type=dict[str, datetime]``). Other types go through
    ``enc_hook(obj)`` and ``dec_hook(type, obj)``, as msgspec defines them.
    """

    __slots__ = ("_decode", "_encode")

    def __init__(
        self,
        *,
        type: Any = Any,
        enc_hook: Callable[[Any], Any] | None = None,
        dec_hook: Callable[[type, Any], Any] | None = None,
    ) -> None:
        try:
            import msgspec
        except ImportError as exc:
            raise ImportError(
                'MsgpackSerializer needs msgspec: pip install "redicache-async[msgpack]"'
            ) from exc
        self._encode = msgspec.msgpack.Encoder(enc_hook=enc_hook).encode
        self._decode = msgspec.msgpack.Decoder(type, dec_hook=dec_hook).decode

    def dumps(self, value: Any) -> bytes:
        try:
            return self._encode(value)
        except RecursionError as exc:
            raise SerializationError("value is nested too deeply to be stored as msgpack") from exc
        except Exception as exc:  # msgspec.EncodeError, or whatever ``enc_hook`` raised
            raise SerializationError(f"value cannot be stored as msgpack: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        return self._decode(data)


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
        except RecursionError as exc:
            raise SerializationError("value is nested too deeply to be pickled") from exc
        except Exception as exc:  # a class's own __reduce__ may raise anything
            raise SerializationError(f"value cannot be pickled: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)


def check_serializer(serializer: object) -> Serializer:
    """An engine's ``serializer`` option: JSON when None."""
    if serializer is None:
        return JsonSerializer()
    if not isinstance(serializer, Serializer):
        raise InvalidArgumentTypeError("serializer must have dumps(value) and loads(bytes)")
    return serializer
