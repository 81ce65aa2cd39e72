"""A griffe extension: the library's docstrings are written in reStructuredText habits, and
mkdocstrings renders Markdown. Rewritten here, at documentation time, so the source stays as it
reads in ``help()``, in an editor and under Sphinx conventions:

- ``:class:`~redicache_async.CacheClient``` roles become code spans. Not links: a
  cross-reference to a name the site does not document would fail the strict build, and many
  roles name private helpers;
- ``text::`` before a literal block keeps one colon (in Markdown the indented block after it
  already is code);
- ``#:`` comments above an attribute (Sphinx's attribute docs, used for dataclass fields)
  become that attribute's docstring, which griffe does not read by itself.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import griffe

# :class:`X`, :meth:`~a.b.C.m`, :py:func:`f` ... ("~" shows the last part only, as Sphinx does).
_ROLE = re.compile(r":(?:py:)?[a-z]+:`(~?)([^`<>]+?)`")
_LITERAL_INTRO = re.compile(r"(\S)::\n\n")
_BARE_LITERAL_INTRO = re.compile(r"(?m)^::\n\n")
_DOC_COMMENT = re.compile(r"^\s*#:\s?(.*)$")


def markdown_of(text: str) -> str:
    """The Markdown reading of a docstring written with reStructuredText roles."""

    def code(match: re.Match[str]) -> str:
        short, target = match.groups()
        name = target.rsplit(".", 1)[-1] if short else target
        return f"`{name}`"

    text = _ROLE.sub(code, text)
    text = _BARE_LITERAL_INTRO.sub("\n", text)
    return _LITERAL_INTRO.sub(r"\1:\n\n", text)


def doc_comment(source: list[str], lineno: int) -> str | None:
    """The ``#:`` comment lines right above line ``lineno`` (1-based) of ``source``, joined."""
    found: list[str] = []
    index = lineno - 2
    while index >= 0:
        match = _DOC_COMMENT.match(source[index])
        if match is None:
            break
        found.append(match.group(1))
        index -= 1
    return "\n".join(reversed(found)) if found else None


class RstRoles(griffe.Extension):
    """Rewrite each docstring once, as griffe loads its object."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        filepath = obj.filepath
        if obj.docstring is None and obj.is_attribute and obj.lineno and isinstance(filepath, Path):
            lines = obj.lines_collection
            comment = doc_comment(lines[filepath], obj.lineno) if filepath in lines else None
            if comment is not None:
                obj.docstring = griffe.Docstring(comment, lineno=obj.lineno, parent=obj)
        if obj.docstring is not None:
            obj.docstring.value = markdown_of(obj.docstring.value)
