"""The mutant runner: ``python -m tests.mutants [--list] [--check] [--only ID[,ID]] ...``.

For each mutant of the catalogue it copies the project (``redicache_async/``, ``tests/`` and the
files beside them) into a temporary directory, applies the edit there, and runs the mutant's
tests in that copy with ``-x -q -p no:randomly --topologies single``, with the copy first on
``PYTHONPATH`` and no bytecode written, so that the tests (and the worker processes they spawn)
import the mutated source; :mod:`tests.mutants.guard` stops a run that imported anything else.
The real files are never touched, so an interrupted run leaves nothing mutated behind.

A mutant is *killed* when its tests fail (a test that hangs until its pytest-timeout counts,
and is marked so), *survived* when they pass, and an *error* when it could not be judged: its
``before`` snippet is not in its file exactly once (a stale mutant: the code moved on), the edit
does not compile, pytest found no such test, the guard stopped the run, or the run outlived its
wall-clock bound, or a test was skipped. First, the tests of every mutant to run are run once
unmutated: a mutant killed by a test that fails anyway proves nothing. The exit status is 0 only
when every mutant was killed. The tests always use servers they start themselves (``REDIS_URL``
is ignored): several of them stop, freeze or restart their server.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .catalogue import MUTANTS, Mutant
from .guard import WRONG_CODE

ROOT = Path(__file__).resolve().parents[2]

#: What is not copied: caches, virtualenvs and VCS data (the copy must import as a clean tree).
_IGNORED = shutil.ignore_patterns(
    ".git",
    ".nox",
    ".venv",
    "venv",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "*.egg-info",
    "build",
    "dist",
)

_PYTEST_ARGS = ("-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider")
_FAILED_LINE = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)
_SKIPPED = re.compile(r"\b\d+ skipped\b")


@dataclass(frozen=True, slots=True)
class Verdict:
    mutant: Mutant
    #: ``killed``, ``survived`` or ``error``.
    status: str
    #: For a killed mutant, the test that failed first; otherwise why it is not killed.
    detail: str
    seconds: float


class MutantError(Exception):
    """The mutant cannot be applied (stale snippet, edit that does not compile)."""


def mutate(mutant: Mutant, root: Path = ROOT) -> str:
    """The mutated text of the mutant's file in ``root``; raises MutantError if it is stale."""
    path = root / mutant.file
    if not path.is_file():
        raise MutantError(f"stale mutant: {mutant.file} does not exist")
    text = path.read_text()
    found = text.count(mutant.before)
    if found != 1:
        where = "is not in" if found == 0 else f"occurs {found} times in"
        raise MutantError(f"stale mutant: its 'before' snippet {where} {mutant.file}")
    if mutant.before == mutant.after:
        raise MutantError("the mutant changes nothing")
    mutated = text.replace(mutant.before, mutant.after)
    try:
        compile(mutated, str(path), "exec")
    except SyntaxError as exc:
        raise MutantError(f"the edit does not compile: {exc}") from exc
    return mutated


def module_name(file: str) -> str:
    """``redicache_async/client.py`` -> ``redicache_async.client``."""
    parts = list(Path(file).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@contextlib.contextmanager
def project_copy(parent: Path, name: str) -> Iterator[Path]:
    copy = parent / name
    shutil.copytree(ROOT, copy, ignore=_IGNORED, symlinks=True)
    try:
        yield copy
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def run_pytest(
    copy: Path,
    tests: Sequence[str],
    *,
    module: str,
    source: str,
    topologies: str,
    test_timeout: float,
    wall: float,
    log: Path,
) -> tuple[int | None, str]:
    """Run ``tests`` in ``copy``; returns pytest's exit status (None: past ``wall`` seconds,
    and stopped) and its output."""
    env = {
        key: value
        for key, value in os.environ.items()
        # REDIS_URL too: the tests of several mutants stop, pause or restart their server.
        if key not in ("PYTHONPATH", "PYTEST_ADDOPTS", "REDICACHE_TOPOLOGIES", "REDIS_URL")
    }
    env |= {
        "PYTHONPATH": str(copy),
        "PYTHONDONTWRITEBYTECODE": "1",
        "REDICACHE_MUTANT_ROOT": str(copy),
        "REDICACHE_MUTANT_MODULE": module,
        "REDICACHE_MUTANT_SHA256": hashlib.sha256(source.encode()).hexdigest(),
    }
    command = [
        sys.executable,
        "-m",
        "pytest",
        *_PYTEST_ARGS,
        "-p",
        "tests.mutants.guard",
        "--topologies",
        topologies,
        f"--timeout={test_timeout:g}",
        *tests,
    ]
    with log.open("wb") as out:
        # A session of its own, so that a run past its bound can be stopped with every process
        # it started (servers, workers) and nothing else.
        process = subprocess.Popen(
            command, cwd=copy, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code: int | None = process.wait(timeout=wall)
        except subprocess.TimeoutExpired:
            code = None
            _stop(process)
    return code, log.read_text(errors="replace")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGINT to the run's process group (pytest tears its fixtures down, servers included),
    then SIGKILL to whatever is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def judge(code: int | None, output: str, wall: float) -> tuple[str, str]:
    if code is None:
        return "error", f"still running after {wall:g} s: stopped"
    if code == 0:
        skipped = _SKIPPED.search(output)
        if skipped:  # a skipped test proves nothing either way
            return "error", f"its tests passed but {skipped.group(0)}: not judged"
        return "survived", "its tests passed"
    if code == 1:
        failed = _FAILED_LINE.findall(output)
        killer = failed[0] if failed else "(a test failed)"
        if "Failed: Timeout" in output:
            killer += " (timed out)"
        return "killed", killer
    if code == WRONG_CODE:
        return "error", "the guard stopped the run: " + _last_line(output)
    if code == 5:
        return "error", "pytest collected no test: the mutant's test selection is stale"
    return "error", f"pytest exited with status {code}: {_last_line(output)}"


def _last_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


_TOPOLOGIES = ("single", "cluster", "sentinel")


def topologies_for(tests: Sequence[str], default: str) -> str:
    """``default``, and every topology that a test id names as its first parameter (a test
    that kills a cluster-only mutant is named ``...[cluster]``): those servers are started."""
    wanted = default.split(",")
    for test in tests:
        if test.endswith("]") and "[" in test:
            first = test[test.rindex("[") + 1 : -1].split("-")[0]
            if first in _TOPOLOGIES and first not in wanted:
                wanted.append(first)
    return ",".join(wanted)


def run_mutant(mutant: Mutant, work: Path, args: argparse.Namespace) -> Verdict:
    started = time.monotonic()
    try:
        source = mutate(mutant)
    except MutantError as exc:
        return Verdict(mutant, "error", str(exc), 0.0)
    with project_copy(work, mutant.id) as copy:
        (copy / mutant.file).write_text(source)
        code, output = run_pytest(
            copy,
            mutant.tests,
            module=module_name(mutant.file),
            source=source,
            topologies=topologies_for(mutant.tests, args.topologies),
            test_timeout=args.test_timeout,
            wall=args.wall,
            log=work / f"{mutant.id}.log",
        )
    status, detail = judge(code, output, args.wall)
    if args.verbose or status == "error":
        print(output, file=sys.stderr)
    return Verdict(mutant, status, detail, time.monotonic() - started)


def baseline(mutants: Sequence[Mutant], work: Path, args: argparse.Namespace) -> str | None:
    """Run every selected test once on the unmutated copy; the failure, if any."""
    tests = sorted({test for mutant in mutants for test in mutant.tests})
    with project_copy(work, "baseline") as copy:
        source = (copy / "redicache_async/__init__.py").read_text()
        code, output = run_pytest(
            copy,
            tests,
            module="redicache_async",
            source=source,
            topologies=topologies_for(tests, args.topologies),
            test_timeout=args.test_timeout,
            wall=args.wall * 4,
            log=work / "baseline.log",
        )
    if code == 0:
        return None
    print(output, file=sys.stderr)
    return judge(code, output, args.wall * 4)[1]


def select(only: Sequence[str]) -> list[Mutant]:
    if not only:
        return list(MUTANTS)
    wanted = [name.strip() for names in only for name in names.split(",") if name.strip()]
    known = {mutant.id: mutant for mutant in MUTANTS}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise SystemExit(f"unknown mutant(s): {', '.join(unknown)}; see --list")
    return [known[name] for name in wanted]


def print_list(mutants: Sequence[Mutant]) -> None:
    for mutant in mutants:
        print(f"{mutant.id}  [{mutant.promise}]  {mutant.file}")
        print(f"    removes: {mutant.removes}")
        for test in mutant.tests:
            print(f"    killed by: {test}")


def print_table(verdicts: Sequence[Verdict]) -> None:
    width = max(len(v.mutant.id) for v in verdicts)
    promise_width = max(len(v.mutant.promise) for v in verdicts)
    print()
    for v in verdicts:
        print(
            f"{v.mutant.id:<{width}}  {v.mutant.promise:<{promise_width}}  "
            f"{v.status.upper():<8}  {v.seconds:5.1f} s  {v.detail}"
        )


def check(mutants: Sequence[Mutant]) -> int:
    """Apply every mutant in memory only: are they all still current?"""
    problems = 0
    for mutant in mutants:
        try:
            mutate(mutant)
        except MutantError as exc:
            problems += 1
            print(f"{mutant.id}: {exc}")
    print(f"{len(mutants) - problems} / {len(mutants)} mutants apply")
    return 1 if problems else 0


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.mutants", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument(
        "--check", action="store_true", help="check every snippet applies; run nothing"
    )
    parser.add_argument(
        "--only", action="append", default=[], metavar="ID[,ID]", help="run these mutants only"
    )
    parser.add_argument(
        "--tests",
        action="append",
        default=[],
        metavar="NODEID",
        help="run these tests instead of each mutant's own (does this test kill that mutant?)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    parser.add_argument("--topologies", default="single", help="passed to pytest (default: single)")
    parser.add_argument(
        "--test-timeout", type=float, default=30.0, help="pytest-timeout per test, in seconds"
    )
    parser.add_argument(
        "--wall", type=float, default=180.0, help="bound on one mutant's run, in seconds"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print every run's output")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    mutants = select(args.only)
    if args.tests:
        mutants = [dataclasses.replace(mutant, tests=tuple(args.tests)) for mutant in mutants]
    if args.list:
        print_list(mutants)
        return 0
    if args.check:
        return check(mutants)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="redicache-mutants-") as work_dir:
        work = Path(work_dir)
        if not args.no_baseline:
            print(f"baseline: the tests of {len(mutants)} mutant(s), unmutated", flush=True)
            failure = baseline(mutants, work, args)
            if failure is not None:
                print(f"the unmutated tests fail ({failure}): no mutant can be judged")
                return 2
        verdicts = []
        for n, mutant in enumerate(mutants, 1):
            print(f"[{n}/{len(mutants)}] {mutant.id} ...", end=" ", flush=True)
            verdict = run_mutant(mutant, work, args)
            print(f"{verdict.status} ({verdict.seconds:.1f} s) {verdict.detail}", flush=True)
            verdicts.append(verdict)
    print_table(verdicts)
    killed = sum(v.status == "killed" for v in verdicts)
    errors = sum(v.status == "error" for v in verdicts)
    print(
        f"\nkilled {killed} / total {len(verdicts)}"
        + (f" ({errors} could not be judged)" if errors else "")
        + f"; {time.monotonic() - started:.0f} s"
    )
    return 0 if killed == len(verdicts) else 1
