"""The runnable examples and the demo: each runs in a fresh interpreter and says what it did."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TIMEOUT = 60.0

# A line each example prints only when it did its job (regexes, searched per line).
EXPECTED = {
    "quickstart.py": r"^38 sent, 2 failed$",
    "keyed_orders.py": r"^per-key order check: ok$",
    "signals_rate_limit.py": (
        r"^reports: \d+ completed, \d+ cancelled: [1-9]\d* SignalCancelledError\('overload'\)"
    ),
    "asyncio_pipeline.py": r"^fetcher: 101 completed, 0 failed$",
    "pykka_actor_system.py": r"^per-SKU totals check: ok$",
    "registry_services.py": r"^audit-log: 12 entries, user-0's in upload order: True$",
    "resilient_fetch.py": r"^fetched 12 of 13 pages; failed: /missing \(HTTP 404\)$",
    "crawler.py": r"^crawled 60 pages: 55 ok, 5 failed$",
}

# Examples that serve until stopped; they are not batch scripts and are tested elsewhere.
NOT_BATCH = {"web_service.py"}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def assert_line(result: subprocess.CompletedProcess[str], pattern: str) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert re.search(pattern, result.stdout, re.MULTILINE), (
        f"no line matches {pattern!r} in:\n{result.stdout}\n{result.stderr}"
    )


def test_every_example_is_covered():
    """Each examples/*.py is run below or listed as a server, so none goes untested."""
    present = {path.name for path in EXAMPLES.glob("*.py")}
    assert present - NOT_BATCH == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str):
    """The example exits 0 and prints the line that shows it worked."""
    assert_line(run(str(EXAMPLES / name)), EXPECTED[name])


def test_signals_example_defers_until_cleared():
    """The rate-limit worked example defers the queue for the API's 0.3 s limit, no less."""
    result = run(str(EXAMPLES / "signals_rate_limit.py"))
    assert_line(result, r"^api-sync: \d+ completed, [1-9] got 429 \('rate-limit',\)$")
    match = re.search(r"queue deferred (\d+\.\d+) s", result.stdout)
    assert match is not None, result.stdout
    assert float(match.group(1)) >= 0.25


def test_resilient_fetch_retries_after_429s_and_a_timeout():
    """The 429s wait their Retry-After, the hung request is retried, and records count it."""
    result = run(str(EXAMPLES / "resilient_fetch.py"))
    # /news, /sports, /weather (429), /markets (503) and /archive (timeout): 2 attempts each.
    assert_line(result, r"^operations retried: 5, attempts in all: 10$")
    assert_line(result, r"^Retry-After honoured: True$")
    assert_line(result, r"^timed-out request retried: True$")
    assert_line(result, r"^rate limit kept: True$")


def test_demo_summary():
    """`python -m ephemeral_actors demo --plain` processes every item and prints a summary."""
    result = run("-m", "ephemeral_actors", "demo", "--plain", "--items", "60")
    assert_line(result, r"^summary: 60 accepted, \d+ completed, \d+ failed, 0 cancelled in ")
    summary = re.search(r"summary: 60 accepted, (\d+) completed, (\d+) failed", result.stdout)
    assert summary is not None
    assert int(summary.group(1)) + int(summary.group(2)) == 60
