"""Mutation testing of the library's promises: ``python -m tests.mutants`` (``nox -s mutants``).

Each mutant in :mod:`tests.mutants.catalogue` is one small edit to the library that removes one
behaviour promised by DESIGN.md or by docs/reference/semantics.md. :mod:`tests.mutants.run`
applies each edit to a throw-away copy of the project, runs the tests that should notice, and
fails unless every mutant is killed. A curated list rather than mutmut or cosmic-ray: their
mutants are generated blindly (most of them change nothing a promise rests on) and each one
would need the real-server tests, seconds apiece, so a full run takes hours; the curated list
aims each edit at one promise and each run at the tests that guard it, in a few minutes.
"""
