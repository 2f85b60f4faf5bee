"""Run a snippet in a fresh interpreter, for failures that are hangs or slow-downs.

A test whose failure mode is a hang (a deadlock, exponential backtracking) must not be
able to hang the suite, and must not judge speed with a wall-clock bound inside the
test process. Running the snippet in a child with a generous timeout does both: a
correct library finishes in well under a second, a broken one never finishes, and the
test reports that instead of stalling.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HANG = 60.0
"""Seconds after which the child counts as hung: generous, never a performance bound."""


def run_isolated(source: str, *, timeout: float = HANG) -> str:
    """Run `source` with this checkout's package first on `sys.path`; return its stdout.

    Fails the test if the child does not finish within `timeout` seconds or exits
    with a non-zero status (its stderr is shown).
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(source)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the child did not finish within {timeout} s (a hang):\n{exc.stdout!r}")
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout
