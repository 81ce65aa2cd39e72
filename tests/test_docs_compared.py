"""The comparison page cannot claim what the suite does not show.

``docs/concepts/compared.md`` compares this library with its peers, one feature per row. Our
column names, for each feature it claims, the test that shows it (``tests/<file>.py::<test>``)
or says the feature is in progress. These tests read the table and fail when a named test no
longer exists (renamed or removed), when a row claims a feature without naming a test, and
when a note of the peers' columns has no source.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "concepts" / "compared.md"
COLUMNS = ["feature", "redicache_async", "FusionCache", "bentocache", "cashews", "aiocache"]
IN_PROGRESS = "in progress (issue 17)"

_TEST_REF = re.compile(r"`(?P<path>tests/[\w/]+\.py)::(?P<name>\w+(?:::\w+)?)`")
_NOTE_REF = re.compile(r"\[\^(?P<id>[\w-]+)\](?!:)")
_NOTE_DEF = re.compile(r"(?m)^\[\^(?P<id>[\w-]+)\]:")


def table() -> list[list[str]]:
    """The rows of the page's table (header first), each split into its cells."""
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in PAGE.read_text("utf-8").splitlines()
        if line.startswith("| ")
    ]
    assert rows, f"{PAGE.name} has no table"
    return rows


def features() -> list[tuple[str, str]]:
    """Each feature row's name and its cell in our column."""
    header, *rows = table()
    assert header == COLUMNS, f"{PAGE.name}: the table's columns are {header}"
    for row in rows:
        # a '|' inside a cell would shift every later column: refuse it rather than misread
        assert len(row) == len(COLUMNS), f"{PAGE.name}: row {row[0]!r} has {len(row)} cells"
    return [(row[0], row[1]) for row in rows]


def defined_tests(path: Path) -> set[str]:
    """The test functions a file defines, as pytest names them: ``name`` or ``Class::name``."""
    names: set[str] = set()
    for node in ast.parse(path.read_text("utf-8"), str(path)).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.update(
                f"{node.name}::{item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            )
    return {name for name in names if name.split("::")[-1].startswith("test")}


def test_every_test_named_in_our_column_exists() -> None:
    refs = [
        (feature, match["path"], match["name"])
        for feature, cell in features()
        for match in _TEST_REF.finditer(cell)
    ]
    assert len(refs) >= 10, f"{PAGE.name}: only {len(refs)} test names found in our column"
    missing = []
    for feature, path, name in refs:
        file = ROOT / path
        if not file.is_file() or name not in defined_tests(file):
            missing.append(f"{feature}: {path}::{name}")
    assert not missing, f"{PAGE.name} names tests that do not exist: {missing}"


def test_every_feature_we_claim_names_a_test() -> None:
    """A row of our column names a test, or says the feature is not there yet, nothing else."""
    unshown = [
        feature
        for feature, cell in features()
        if cell != IN_PROGRESS and not _TEST_REF.search(cell)
    ]
    assert not unshown, f"{PAGE.name}: rows that claim a feature but name no test: {unshown}"


def test_every_note_of_the_table_has_its_source_and_every_source_is_used() -> None:
    text = PAGE.read_text("utf-8")
    used = {match["id"] for match in _NOTE_REF.finditer(text)}
    defined = {match["id"] for match in _NOTE_DEF.finditer(text)}
    assert used, f"{PAGE.name} cites no source"
    assert used == defined, (
        f"{PAGE.name}: notes without a source {sorted(used - defined)}, "
        f"sources no row cites {sorted(defined - used)}"
    )
