"""Shared fixtures: every test must leave no library thread behind."""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ephemeral_actors import (
    ActorStats,
    CoordinatorOptions,
    CoordinatorStats,
    KeyedWorkCoordinator,
    SignalBus,
    WorkCoordinator,
)
from ephemeral_actors._coordinators._supervisor import STALE_FAST_PATHS
from ephemeral_actors.testing import library_threads

WAIT = 10.0
"""Generous timeout for any wait in a test (never a performance bound)."""


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    """The garbage collector off inside the block (collected first): any reference
    cycle left there survives to the block's assertions, so what they check is freed
    by reference counting alone."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def traceback_length(error: BaseException) -> int:
    """How many entries `error`'s traceback has."""
    count, tb = 0, error.__traceback__
    while tb is not None:
        count += 1
        tb = tb.tb_next
    return count


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


@pytest.fixture(autouse=True)
def _no_stale_fast_paths() -> Iterator[None]:
    """Ownership check mode: fail a test in which a turn found a stale fast-path flag.

    A turn run by a timer on the dispatcher thread only logs what it raises, so the
    check's record is what makes such a test fail.
    """
    del STALE_FAST_PATHS[:]
    yield
    found, STALE_FAST_PATHS[:] = list(STALE_FAST_PATHS), []
    assert not found, found


@pytest.fixture
def make() -> Iterator[Callable[..., Any]]:
    """Build coordinators for a test and close them all after it.

    `make(body, **options)` gives a `WorkCoordinator`; with `key=selector`, a
    `KeyedWorkCoordinator`. Options are `CoordinatorOptions` fields.
    """
    made: list[Any] = []

    def factory(
        body: Callable[[Any], Any], *, key: Callable[[Any], Any] | None = None, **options: Any
    ) -> Any:
        opts = CoordinatorOptions(**options)
        c = WorkCoordinator(body, opts) if key is None else KeyedWorkCoordinator(key, body, opts)
        made.append(c)
        return c

    yield factory
    for c in made:
        c.close(timeout=WAIT)


def run_all(c: Any, items: list[Any]) -> None:
    """Enqueue every item, complete, and drain."""
    for item in items:
        c.enqueue(item)
    c.complete()
    c.drain(WAIT)


class FakeClock:
    """A schedule clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def settle(c: Any, started: list[Any]) -> CoordinatorStats:
    """Wait until every started body has recorded itself and none is running."""
    deadline = time.monotonic() + WAIT
    while True:
        s = c.stats()
        if s.active_count == 0 and len(started) == s.total_completed:
            return s
        assert time.monotonic() < deadline, s
        time.sleep(0.0005)


class PinnedBus(SignalBus):
    """A real bus whose actor statistics the test sets: a bus turn never waits, so a
    real bus's mailbox is not deep at a moment a test can choose."""

    def __init__(self, stats: ActorStats, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pinned = stats

    def actor_stats(self) -> ActorStats:
        return self.pinned
