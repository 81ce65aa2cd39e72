"""The metrics reported, as ``metrics.toml`` beside this module lists them: names, units,
descriptions, and which ``stats()`` field each figure comes from under which attributes.

The list is data, kept as data: one table a metric, read once at import and checked here, so
that a mistake in it fails the import rather than an exporter.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Final

__all__ = ["BUILDER", "BUILDER_METRICS", "CLIENT", "CLIENT_METRICS", "NAMESPACE", "Kind", "Metric"]

#: The attribute every figure carries.
NAMESPACE: Final = "redicache.namespace"

_INSTRUMENTS = {"counter": True, "gauge": False}


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    unit: str
    description: str
    #: ``stats()`` field -> the attributes (beside the namespace) its figure is reported under
    fields: Mapping[str, Mapping[str, str]]
    #: a count (``ObservableCounter``); else a current value (``ObservableUpDownCounter``)
    counter: bool = True


class Kind:
    """Clients or builders: their metrics, and which of their fields are counts."""

    def __init__(self, metrics: tuple[Metric, ...]) -> None:
        self.metrics = metrics
        self.counters = tuple(f for m in metrics if m.counter for f in m.fields)
        self.gauges = tuple(f for m in metrics if not m.counter for f in m.fields)


def _text(table: Mapping[str, object], key: str) -> str:
    value = table.get(key)
    if not isinstance(value, str):
        raise TypeError(f"metrics.toml: {key!r} of {table.get('name')!r} is not a string")
    return value


def _fields(table: Mapping[str, object]) -> dict[str, dict[str, str]]:
    fields = table.get("fields")
    if not isinstance(fields, dict) or not fields:
        raise TypeError(f"metrics.toml: {table.get('name')!r} reports no fields")
    checked: dict[str, dict[str, str]] = {}
    for field, attributes in fields.items():
        if not isinstance(attributes, dict) or not all(
            isinstance(value, str) for value in attributes.values()
        ):
            raise TypeError(f"metrics.toml: attributes of {field!r} are not names to strings")
        checked[field] = attributes
    return checked


def _metric(table: Mapping[str, object]) -> Metric:
    instrument = _text(table, "instrument")
    if instrument not in _INSTRUMENTS:
        raise ValueError(f"metrics.toml: instrument {instrument!r} is not one of {_INSTRUMENTS}")
    return Metric(
        name=_text(table, "name"),
        unit=_text(table, "unit"),
        description=_text(table, "description"),
        fields=_fields(table),
        counter=_INSTRUMENTS[instrument],
    )


def _load() -> dict[str, tuple[Metric, ...]]:
    text = (
        resources.files(__name__.rpartition(".")[0])
        .joinpath("metrics.toml")
        .read_text(encoding="utf-8")
    )
    kinds = tomllib.loads(text)
    return {kind: tuple(_metric(table) for table in tables) for kind, tables in kinds.items()}


_TABLES = _load()
CLIENT_METRICS = _TABLES["client"]
BUILDER_METRICS = _TABLES["builder"]
CLIENT = Kind(CLIENT_METRICS)
BUILDER = Kind(BUILDER_METRICS)
