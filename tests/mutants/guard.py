"""A pytest plugin that the mutant runner loads (``-p tests.mutants.guard``): once the tests are
collected, it stops the run unless the library they imported is the mutated copy.

A run that imported the real package instead (an editable install, a stray ``sys.path`` entry)
would pass and report the mutant as surviving, or fail and report it as killed: either way the
verdict would be about the wrong code. Inactive without ``REDICACHE_MUTANT_ROOT``.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path

import pytest

#: pytest's exit status when the guard stops a run (pytest's own statuses are 0-5).
WRONG_CODE = 7


def _origin(name: str) -> Path:
    return Path(importlib.import_module(name).__file__ or "").resolve()


def pytest_collection_finish(session: pytest.Session) -> None:
    root = os.environ.get("REDICACHE_MUTANT_ROOT")
    if not root:
        return
    copy = Path(root).resolve()
    mutated = os.environ["REDICACHE_MUTANT_MODULE"]
    for name in ("redicache_async", mutated):
        origin = _origin(name)
        if not origin.is_relative_to(copy):
            pytest.exit(f"{name} was imported from {origin}, not from {copy}", WRONG_CODE)
    source = _origin(mutated)
    if hashlib.sha256(source.read_bytes()).hexdigest() != os.environ["REDICACHE_MUTANT_SHA256"]:
        pytest.exit(f"{source} is not the source the runner wrote", WRONG_CODE)
