"""Shared fixtures: every test must leave no library thread behind."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from ephemeral_actors.testing import library_threads

WAIT = 10.0
"""Generous timeout for any wait in a test (never a performance bound)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="run slow tests too")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow; run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a thread of ours running after it ends."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in library_threads() if t not in before]
    for thread in leaked:
        thread.join(WAIT)
    alive = [t.name for t in leaked if t.is_alive()]
    assert not alive, f"threads outlived the test: {alive}"
