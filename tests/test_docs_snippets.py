"""The documentation's code runs: README.md and the site's pages (``docs/``) cannot rot.

A Python block preceded by a marker line is run against the session's real server:

- ``<!-- test: program -->``: a complete program, run as ``python -c`` in a fresh interpreter
  with ``REDIS_URL`` set; it must exit 0;
- ``<!-- test: asgi /path ... -->``: a module that defines an ASGI ``app`` (FastAPI); it is
  imported, its lifespan run, and each path must answer ``GET`` with 200;
- ``<!-- test: aiohttp /path ... -->``: the same for an ``aiohttp.web.Application`` named
  ``app``.

Every Python block of README.md must carry a marker (the README shows complete programs only);
pages may also hold fragments, which must at least compile. Also checked: README links work on
the package index page (absolute, and those into the site name a page and heading that exist),
and every ``S: <row>`` promise of the mutation catalogue names a row of the semantics table.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from asgi_lifespan import LifespanManager

import redicache_async

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
SEMANTICS = DOCS / "reference" / "semantics.md"
CATALOGUE = ROOT / "tests" / "mutants" / "catalogue.py"

_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>\w*)")
_MARKER = re.compile(r"^\s*<!-- test: (?P<kind>program|asgi|aiohttp)(?P<args>(?: \S+)*) -->\s*$")
_LINK = re.compile(r"\]\((?P<url>[^)\s]+)\)|<(?P<auto>https?://[^>]+)>")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    code: str
    kind: str | None  # the marker's kind; None for a fragment
    args: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def python_blocks(path: Path) -> list[Block]:
    """The fenced Python blocks of a Markdown file, with the marker line just above each."""
    lines = path.read_text("utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        indent = fence.group("indent")
        end = index + 1
        while end < len(lines) and not lines[end].startswith(f"{indent}```"):
            end += 1
        body = [line.removeprefix(indent) for line in lines[index + 1 : end]]
        included = any(line.lstrip().startswith("--8<--") for line in body)
        if fence.group("lang") == "python" and not included:
            marker = _MARKER.match(lines[index - 1]) if index > 0 else None
            blocks.append(
                Block(
                    path=path,
                    line=index + 1,
                    code="\n".join(body) + "\n",
                    kind=marker.group("kind") if marker else None,
                    args=tuple(marker.group("args").split()) if marker else (),
                )
            )
        index = end + 1
    return blocks


def _all_blocks() -> list[Block]:
    pages = sorted(DOCS.rglob("*.md"))
    return [block for path in [README, *pages] for block in python_blocks(path)]


BLOCKS = _all_blocks()


def _of_kind(kind: str) -> list[Any]:
    return [pytest.param(block, id=block.id) for block in BLOCKS if block.kind == kind]


def _environment(redis_url: str) -> dict[str, str]:
    """The session's server, and the package these tests import (a checkout or an installed
    wheel) first on the path, so that a program runs the same code."""
    package_home = str(Path(redicache_async.__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [package_home, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "REDIS_URL": redis_url}


def _module_of(block: Block, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The block imported as a module (not as ``__main__``), with ``REDIS_URL`` set."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    module = types.ModuleType("docs_snippet")
    exec(compile(block.code, block.id, "exec"), module.__dict__)
    return module


def test_the_docs_have_runnable_blocks() -> None:
    """The markers are found: the README shows one program per engine, the pages an app per
    framework (a marker spelled wrong would otherwise run nothing and pass)."""
    readme = [block for block in BLOCKS if block.path == README]
    assert sum(block.kind == "program" for block in readme) >= 2
    assert _of_kind("asgi")
    assert _of_kind("aiohttp")


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id) for b in BLOCKS if b.path == README])
def test_every_readme_block_is_run(block: Block) -> None:
    assert block.kind is not None, (
        f"{block.id}: a Python block of the README without a '<!-- test: ... -->' marker"
    )


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id) for b in BLOCKS])
def test_every_python_block_compiles(block: Block) -> None:
    """Fragments too (top-level ``await`` allowed): a typo in a page fails here."""
    import ast

    compile(block.code, block.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@pytest.mark.parametrize("block", _of_kind("program"))
def test_program_runs(block: Block, redis_url: str, tmp_path: Path) -> None:
    # Run elsewhere than the checkout: `python -c` puts its working directory on the path.
    result = subprocess.run(
        [sys.executable, "-c", block.code],
        env=_environment(redis_url),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )
    assert result.returncode == 0, (
        f"{block.id} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )


@pytest.mark.parametrize("block", _of_kind("asgi"))
async def test_asgi_app_serves(
    block: Block, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _module_of(block, redis_url, monkeypatch).app
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://docs") as http:
            for path in block.args:
                response = await http.get(path)
                assert response.status_code == 200, (path, response.text)


@pytest.mark.parametrize("block", _of_kind("aiohttp"))
async def test_aiohttp_app_serves(
    block: Block, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _module_of(block, redis_url, monkeypatch).app
    assert isinstance(app, web.Application)
    async with TestClient(TestServer(app)) as http:
        for path in block.args:
            response = await http.get(path)
            assert response.status == 200, (path, await response.text())


# -- links -----------------------------------------------------------------------------------


def _site_url() -> str:
    match = re.search(r"(?m)^site_url:\s*(\S+)\s*$", (ROOT / "mkdocs.yml").read_text("utf-8"))
    assert match is not None, "mkdocs.yml has no site_url"
    return match.group(1).rstrip("/") + "/"


def _slug(heading: str) -> str:
    """The anchor Python-Markdown's ``toc`` gives a heading (its default ``slugify``)."""
    text = re.sub(r"[`*]", "", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"(?ms)^```.*?^```", "", page.read_text("utf-8"))
    return {_slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def _readme_links() -> list[str]:
    text = README.read_text("utf-8")
    return [match.group("url") or match.group("auto") for match in _LINK.finditer(text)]


def test_readme_links_work_on_the_package_index() -> None:
    """The index shows the README alone: a relative link there leads nowhere, and a link into
    the site must name a page and a heading that the site has."""
    site = _site_url()
    links = _readme_links()
    assert any(link.startswith(site) for link in links)
    for link in links:
        assert link.startswith("https://"), f"README link {link!r} is not absolute"
        if not link.startswith(site):
            continue
        path, _, anchor = link.removeprefix(site).partition("#")
        stem = path.strip("/") or "index"
        candidates = [DOCS / f"{stem}.md", DOCS / stem / "index.md"]
        page = next((p for p in candidates if p.is_file()), None)
        assert page is not None, f"README link {link!r}: no page docs/{stem}.md"
        if anchor:
            assert anchor in _anchors(page), f"README link {link!r}: no such heading"


# -- the semantics table and the mutation catalogue -----------------------------------------


def test_every_semantics_promise_names_a_row() -> None:
    """The mutants label their promises ``S: <row>`` by the words that start a row of the
    semantics table: rewording a row must not leave a label that names nothing."""
    rows = [
        line.split("|")[1].replace("`", "").strip()
        for line in SEMANTICS.read_text("utf-8").splitlines()
        if line.startswith("| ") and not line.startswith("| situation")
    ]
    labels = set(re.findall(r'promise="S: ([^"]+)"', CATALOGUE.read_text("utf-8")))
    assert labels
    unmatched = sorted(label for label in labels if not any(r.startswith(label) for r in rows))
    assert not unmatched, f"promises that name no row of {SEMANTICS.name}: {unmatched}"
