"""The library's shape: every module in the layer map of the package docstring, imports that
only point down (or sideways within a layer) and never form a cycle, and no module reaching
into another's private names.

The rule for private names: a name that starts with ``_`` (not a dunder) belongs to its module.
Another module may not import it (``from x import _name``), nor read it off an imported
module (``x._name``), nor off any object unless the name is defined in the reading module
itself (an attribute of one of its own classes). The one exception is a subpackage's modules
among themselves (``testing/``, ``integrations/``): a subpackage may keep helpers private to
it, in a ``_module`` or as ``_names``. The package root is no such subpackage: its modules are
all of the library.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import redicache_async

ROOT = Path(redicache_async.__file__).parent
PACKAGE = "redicache_async"
LAYERS = ("faces", "engines", "mechanisms", "primitives", "leaves")


def _layer_map() -> dict[str, list[str]]:
    """The ``layer: patterns`` lines of the package docstring (a pattern may continue on the
    next, indented line)."""
    doc = redicache_async.__doc__ or ""
    found: dict[str, list[str]] = {}
    current = None
    for line in doc.splitlines():
        match = re.fullmatch(r"\s{4}(\w+):\s+(.*)", line)
        if match and match.group(1) in LAYERS:
            current = match.group(1)
            found[current] = match.group(2).split()
        elif current is not None and re.fullmatch(r"\s{8,}\S.*", line):
            found[current] += line.split()
        else:
            current = None
    return found


def _modules() -> dict[str, Path]:
    """Every module of the library, by dotted name below the package (``client.cache``; the
    package itself is ``__init__``)."""
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def layer_of(module: str, layers: dict[str, list[str]]) -> int | None:
    for rank, name in enumerate(LAYERS):
        for pattern in layers.get(name, ()):
            if module == pattern or fnmatch.fnmatchcase(module, pattern):
                return rank
            if pattern.endswith(".*") and module == pattern[:-2]:
                return rank
    return None


def _package_of(module: str) -> str:
    """The subpackage a module belongs to ("" for the package root)."""
    path = _modules()[module]
    if path.name == "__init__.py":
        return module if module != "__init__" else ""
    return module.rpartition(".")[0]


@dataclass(frozen=True)
class Import:
    importer: str
    module: str
    names: tuple[str, ...]
    line: int


def _resolve(importer: str, level: int, target: str | None) -> str | None:
    """The dotted name below the package of what an import statement names, or None when it
    is not of the library."""
    if level == 0:
        if target is None or not (target == PACKAGE or target.startswith(PACKAGE + ".")):
            return None
        rest = target[len(PACKAGE) + 1 :]
        return rest or "__init__"
    package = _package_of(importer).split(".") if _package_of(importer) else []
    base = package[: len(package) - (level - 1)] if level > 1 else package
    parts = base + (target.split(".") if target else [])
    return ".".join(parts) or "__init__"


def imports(module: str, tree: ast.Module) -> Iterator[Import]:
    known = _modules()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                resolved = _resolve(module, 0, alias.name)
                if resolved is not None:
                    yield Import(module, resolved, (), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            resolved = _resolve(module, node.level, node.module)
            if resolved is None:
                continue
            names = tuple(alias.name for alias in node.names)
            plain = [n for n in names if f"{resolved}.{n}".removeprefix("__init__.") not in known]
            if plain or not names:
                yield Import(module, resolved, tuple(plain), node.lineno)
            for name in names:
                submodule = f"{resolved}.{name}".removeprefix("__init__.")
                if submodule in known:
                    yield Import(module, submodule, (), node.lineno)


def _trees() -> dict[str, ast.Module]:
    return {name: ast.parse(path.read_text(), str(path)) for name, path in _modules().items()}


def _edges() -> list[Import]:
    return [edge for name, tree in _trees().items() for edge in imports(name, tree)]


def test_every_module_has_a_layer() -> None:
    layers = _layer_map()
    assert set(layers) == set(LAYERS), f"the package docstring's map names {sorted(layers)}"
    unplaced = [name for name in _modules() if layer_of(name, layers) is None]
    assert not unplaced, f"modules missing from the layer map: {unplaced}"


def test_no_import_from_a_higher_layer() -> None:
    layers = _layer_map()
    upward = []
    for edge in _edges():
        here, there = layer_of(edge.importer, layers), layer_of(edge.module, layers)
        assert here is not None
        assert there is not None
        if there < here:
            upward.append(
                f"{edge.importer} ({LAYERS[here]}) imports {edge.module} ({LAYERS[there]}) "
                f"at line {edge.line}"
            )
    assert not upward, "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` (its nodes in order), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for edge in _edges():
        if edge.module != edge.importer:
            graph.setdefault(edge.importer, set()).add(edge.module)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


#: The public methods of named tuples (``urlsplit(...)._replace``), underscored to keep them
#: apart from the fields.
_NAMEDTUPLE_API = frozenset({"_asdict", "_fields", "_make", "_replace"})


def _private(name: str) -> bool:
    dunder = name.startswith("__") and name.endswith("__")
    return name.startswith("_") and not dunder and name not in _NAMEDTUPLE_API


def _own_names(tree: ast.Module) -> set[str]:
    """The names a module defines: functions, classes, assigned names and attributes,
    annotations, ``__slots__`` entries, keyword arguments of its own calls."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store | ast.Del):
            names.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # __slots__ entries (and strings naming attributes)
    return names


def test_no_reach_into_private_names() -> None:
    trees = _trees()
    modules = _modules()
    reaches = []
    for module, tree in trees.items():
        own_package = _package_of(module)
        imported_modules: dict[str, str] = {}
        for edge in imports(module, tree):
            shared = own_package and _package_of(edge.module) == own_package
            for name in edge.names:
                if _private(name) and not shared:
                    reaches.append(f"{module}:{edge.line} imports {name} from {edge.module}")
            last = edge.module.rpartition(".")[2]
            if _private(last) and not shared and edge.module in modules:
                reaches.append(f"{module}:{edge.line} imports private module {edge.module}")
            if edge.module in modules:
                imported_modules[last] = edge.module
        own = _own_names(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _private(node.attr)):
                continue
            value = node.value
            if isinstance(value, ast.Name) and value.id in ("self", "cls"):
                continue
            if isinstance(value, ast.Name) and value.id in imported_modules:
                other = imported_modules[value.id]
                if not (own_package and _package_of(other) == own_package):
                    reaches.append(f"{module}:{node.lineno} reads {value.id}.{node.attr}")
                continue
            if node.attr not in own:
                reaches.append(
                    f"{module}:{node.lineno} reads .{node.attr}, defined in no class of its own"
                )
    assert not reaches, "\n".join(reaches)


@pytest.mark.parametrize(
    ("source", "complaint"),
    [
        ("from redicache_async.keys import _tagged\n", "imports _tagged"),
        ("import redicache_async.keys as keys\nkeys._tagged('x')\n", "reads keys._tagged"),
        ("def f(other):\n    return other._secret\n", "reads ._secret"),
    ],
)
def test_the_private_rule_sees_each_kind_of_reach(source: str, complaint: str) -> None:
    tree = ast.parse(source)
    own = _own_names(tree)
    found = []
    for edge in imports("locks", tree):
        found += [f"imports {n}" for n in edge.names if _private(n)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            if isinstance(node.value, ast.Name) and node.value.id == "keys":
                found.append(f"reads keys.{node.attr}")
            elif node.attr not in own:
                found.append(f"reads .{node.attr}")
    assert complaint in found
