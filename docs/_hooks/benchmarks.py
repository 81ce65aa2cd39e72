"""An mkdocs hook: the performance page shows ``benchmarks/RESULTS.md`` and its chart as the
last ``nox -s bench`` wrote them, read from where the benchmarks write them (no copy to drift,
nothing regenerated at build time).

The page holds the marker ``<!-- benchmarks/RESULTS.md -->``; the file's first heading is
dropped (the page has its own), its other headings go one level down, and its chart link points
at ``benchmarks/results.png``, which this hook adds to the site.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
CHART = ROOT / "benchmarks" / "results.png"
CHART_URI = "benchmarks/results.png"
MARKER = "<!-- benchmarks/RESULTS.md -->"


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    files.append(File.generated(config, CHART_URI, abs_src_path=str(CHART)))
    return files


def results_markdown(text: str, chart_uri: str) -> str:
    """``RESULTS.md`` as a part of a page whose chart lives at ``chart_uri``."""
    lines = text.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    body = "\n".join(lines)
    body = re.sub(r"(?m)^(#{2,5}) ", r"#\1 ", body)
    return body.replace("](results.png)", f"]({chart_uri})")


def on_page_markdown(markdown: str, page: Page, config: Any, files: Files, **kwargs: Any) -> str:
    if MARKER not in markdown:
        return markdown
    depth = page.file.src_uri.count("/")
    chart_uri = "../" * depth + CHART_URI
    return markdown.replace(MARKER, results_markdown(RESULTS.read_text("utf-8"), chart_uri))
