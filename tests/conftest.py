"""Test-session plumbing.

After the whole suite has run and reported, leave the interpreter with os._exit: the
test process has hosted Ray drivers, metric exporters, gloo and torch thread pools, and
their C++ destructors can crash during interpreter teardown (seen here as a segfault
after "N passed"), which would turn a green run red. Nothing is skipped: the exit
status is pytest's own.
"""

from __future__ import annotations

import os
import sys

_status: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _status.append(int(exitstatus))


def pytest_unconfigure(config):
    if _status and not hasattr(sys, "pypy_version_info") and os.environ.get("RAYSPLIT_NO_FAST_EXIT") != "1":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_status[-1])
