"""Sessions: ``tests`` (the suite, against the installed wheel), ``lint`` (ruff, mypy --strict),
``package`` (build the sdist and the wheel, check them), ``mutants`` (every promise has a test
that fails without it), ``model`` (the long run of the stateful model), ``demo``, ``bench``,
``docs`` (the documentation site, built ``--strict``).

``python3 -m nox -s tests`` runs the suite against a server it starts itself (see
``redicache_async.testing``); ``REDICACHE_REDIS_SERVER`` picks the server binary and
``REDIS_URL`` an already running server instead. ``python3 -m nox -s bench -- --smoke`` is the
short benchmark run CI does.
"""

from __future__ import annotations

import email
import os
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint"]

# Read by the test suite; nox passes the environment through, this makes it explicit.
PASSTHROUGH_ENV = ("REDICACHE_REDIS_SERVER", "REDIS_URL")


def _passthrough_env() -> dict[str, str]:
    return {name: os.environ[name] for name in PASSTHROUGH_ENV if name in os.environ}


#: The build backend, for builds without network (``--no-isolation``) in a reused venv.
BUILD_REQUIREMENTS = ("build", "hatchling>=1.27", "hatch-fancy-pypi-readme>=24.1")


def _build(session: nox.Session, outdir: Path, *, isolated: bool = True) -> tuple[Path, Path]:
    """The sdist, and the wheel built from it (as a packager builds it), in a clean ``outdir``."""
    shutil.rmtree(outdir, ignore_errors=True)
    options = () if isolated else ("--no-isolation",)
    session.run("python", "-m", "build", *options, "--outdir", str(outdir))
    (sdist,) = outdir.glob("*.tar.gz")
    (wheel,) = outdir.glob("*.whl")
    return sdist, wheel


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite against a real server (Valkey from the wheel unless told otherwise), and
    against the package users get: the wheel built from the sdist, installed, with the tests
    run from the sdist's copy outside the checkout, so that nothing imports the source tree
    (``tests/test_package.py`` checks it)."""
    session.install(*BUILD_REQUIREMENTS)
    work = Path(session.create_tmp()).resolve()
    sdist, wheel = _build(session, work / "dist", isolated=False)
    session.install(f"{wheel}[test]")
    # The same version is already installed in a reused venv: replace it by this build.
    session.run(
        "python", "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", str(wheel)
    )

    # The tests, pytest's configuration and the docs whose code the tests run, from the sdist;
    # not the library beside them.
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    root = sdist.name.removesuffix(".tar.gz")
    files = {f"{root}/{name}" for name in ("pyproject.toml", "README.md", "mkdocs.yml")}
    folders = tuple(f"{root}/{name}/" for name in ("tests", "docs"))
    with tarfile.open(sdist) as archive:
        members = [
            member
            for member in archive.getmembers()
            if member.name in files or member.name.startswith(folders)
        ]
        archive.extractall(run, members=members, filter="data")
    session.chdir(run / root)
    session.run(
        "python", "-c", "import redicache_async; print('under test:', redicache_async.__file__)"
    )
    env = {**_passthrough_env(), "REDICACHE_EXPECT_INSTALLED": "1"}
    session.run("pytest", *session.posargs, env=env)


@nox.session
def package(session: nox.Session) -> None:
    """Build the sdist and the wheel into ``dist/`` (the wheel from the sdist), check their
    metadata with ``twine check --strict``, and check what each holds: the sdist what a
    packager needs to rebuild and test, the wheel the library only."""
    session.install("build", "twine")
    sdist, wheel = _build(session, Path("dist"))
    session.run("twine", "check", "--strict", str(sdist), str(wheel))

    root = sdist.name.removesuffix(".tar.gz")
    with tarfile.open(sdist) as archive:
        in_sdist = {name.removeprefix(f"{root}/") for name in archive.getnames()}
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
        (metadata,) = (name for name in in_wheel if name.endswith(".dist-info/METADATA"))
        description = email.message_from_bytes(archive.read(metadata)).get_payload()
    _expect(session, "sdist", in_sdist, SDIST_HOLDS, SDIST_LACKS)
    _expect(session, "wheel", in_wheel, WHEEL_HOLDS, WHEEL_LACKS)

    # The index shows the readme alone: a link to a file beside it or to a heading is broken.
    relative = RELATIVE_LINK.findall(str(description))
    if relative:
        session.error(f"the readme the index shows has relative links: {relative}")
    session.log("the readme the index shows has absolute links only")


#: A Markdown link or image whose target has no scheme (``](path)``, ``](#heading)``).
RELATIVE_LINK = re.compile(r"\]\((?![a-z]+:)([^)\s]+)\)")


#: Paths (or path prefixes, ending in ``/``) each archive must hold, and must not.
SDIST_HOLDS = (
    "pyproject.toml",
    "README.md",
    "LICENSE",
    "CHANGELOG.md",
    "noxfile.py",
    ".ci/run",
    "redicache_async/__init__.py",
    "redicache_async/py.typed",
    "tests/conftest.py",
    "tests/mutants/",
    "examples/",
    "benchmarks/",
)
SDIST_LACKS = ("site/", ".nox/", ".venv/", "dist/", "__pycache__/", ".pyc", ".rdb", "nodes-")
WHEEL_HOLDS = (
    "redicache_async/__init__.py",
    "redicache_async/py.typed",
    "redicache_async/testing/__init__.py",
    "redicache_async/integrations/fastapi.py",
    "redicache_async/demo/__main__.py",
)
WHEEL_LACKS = ("tests/", "examples/", "benchmarks/", "noxfile.py", "__pycache__/", ".pyc")


def _expect(
    session: nox.Session,
    label: str,
    names: set[str],
    holds: tuple[str, ...],
    lacks: tuple[str, ...],
) -> None:
    missing = [path for path in holds if not any(name.startswith(path) for name in names)]
    unwanted = sorted(name for name in names if any(part in name for part in lacks))
    if missing or unwanted:
        session.error(f"the {label} lacks {missing} and holds {unwanted}")
    session.log(f"the {label} holds {len(names)} paths, as expected")


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
