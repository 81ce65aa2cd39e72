"""The package under test is the one users get: ``nox -s tests`` installs the wheel it built
and runs the suite from outside the checkout, so that neither pytest nor the processes the
suite starts can import the source tree instead. It sets ``REDICACHE_EXPECT_INSTALLED=1``,
and this test checks that the wheel really is what they import."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import redicache_async
import redicache_async.testing

EXPECT_INSTALLED = os.environ.get("REDICACHE_EXPECT_INSTALLED") == "1"


@pytest.mark.skipif(
    not EXPECT_INSTALLED,
    reason="REDICACHE_EXPECT_INSTALLED=1 unset: this run may use a checkout (nox -s tests sets it)",
)
def test_the_suite_imports_the_installed_wheel() -> None:
    site_packages = Path(sysconfig.get_paths()["purelib"]).resolve()
    for module in (redicache_async, redicache_async.testing):
        location = Path(module.__file__ or "").resolve()
        assert location.is_relative_to(site_packages), f"{module.__name__} from {location}"

    # The worker, status and demo processes the suite starts run from the same directory.
    started = subprocess.run(
        [sys.executable, "-c", "import redicache_async; print(redicache_async.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    location = Path(started.stdout.strip()).resolve()
    assert location.is_relative_to(site_packages), f"a started process imported {location}"

    # One source of the version: the wheel's metadata was read from __version__.
    assert importlib.metadata.version("redicache-async") == redicache_async.__version__
