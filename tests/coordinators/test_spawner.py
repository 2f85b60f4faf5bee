"""Worker threads start off the supervisor's turn (`_coordinators/_spawner.py`)."""

from __future__ import annotations

import threading

import pytest

from ephemeral_actors import (
    KeyedWorkCoordinator,
    ResultCoordinator,
    WorkCoordinator,
    WorkerCrashError,
)
from ephemeral_actors.testing import library_threads
from tests.conftest import WAIT

_thread_start = threading.Thread.start


def refuse_one_start(monkeypatch: pytest.MonkeyPatch, suffix: str) -> list[str]:
    """Make the first start of a thread named `...suffix` raise as an exhausted process
    does; returns the names refused."""
    refused: list[str] = []

    def start(thread: threading.Thread) -> None:
        if thread.name.endswith(suffix) and not refused:
            refused.append(thread.name)
            raise RuntimeError("can't start new thread")
        _thread_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    return refused


@pytest.fixture
def starts(monkeypatch):
    """(thread started, thread that started it) for every worker thread start."""
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()

    def start(thread: threading.Thread) -> None:
        if "-worker-" in thread.name:
            with lock:
                seen.append((thread.name, threading.current_thread().name))
        _thread_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    return seen


@pytest.mark.parametrize("keyed", [False, True], ids=["work", "keyed"])
def test_only_the_first_worker_starts_in_the_callers_turn(starts, keyed):
    """Every worker but the first is started by the spawner, never by the thread whose
    turn needed it; all of them run at once."""
    concurrency = 16
    barrier = threading.Barrier(concurrency)

    def body(item: int) -> None:
        barrier.wait(WAIT)  # breaks (and fails the item) unless all 16 run at once

    if keyed:
        c = KeyedWorkCoordinator(lambda item: item, body, max_concurrency=concurrency)
    else:
        c = WorkCoordinator(body, max_concurrency=concurrency)
    try:
        futures = [c.submit(i) for i in range(concurrency)]
        for future in futures:
            assert future.result(timeout=WAIT) is None
    finally:
        c.close(WAIT)
    assert len(starts) == concurrency
    first, *rest = starts
    assert first == (f"ephemeral-actors-{c.name}-worker-1", threading.current_thread().name)
    for started, starter in rest:
        assert starter == f"ephemeral-actors-{c.name}-spawner", (started, starter)
    assert not library_threads()


def test_a_worker_whose_thread_cannot_start_fails_its_item_and_is_replaced(monkeypatch):
    """Out of threads: the item given to that worker fails with WorkerCrashError, a
    restart is counted, the next worker takes the rest, and nothing is lost."""
    refused = refuse_one_start(monkeypatch, "-worker-3")
    gate = threading.Event()

    def body(item: int) -> int:
        assert gate.wait(WAIT)
        return item

    c = ResultCoordinator(body, max_concurrency=4)
    try:
        futures = [c.submit(i) for i in range(8)]
        gate.set()
        errors = [future.exception(timeout=WAIT) for future in futures]
        assert refused
        crashed = [error for error in errors if error is not None]
        assert len(crashed) == 1
        assert isinstance(crashed[0], WorkerCrashError)
        assert "could not start the worker's thread" in str(crashed[0])
        assert [f.result() for f, e in zip(futures, errors, strict=True) if e is None] == [
            i for i, e in enumerate(errors) if e is None
        ]
        c.complete()
        c.drain(WAIT)
        s = c.stats()
        assert s.worker_restarts == 1
        assert (s.total_enqueued, s.total_completed, s.total_failed) == (8, 7, 1)
        assert not c.is_faulted
    finally:
        gate.set()
        c.close(WAIT)
    assert not library_threads()


def test_a_first_worker_that_cannot_start_fails_its_item_not_the_coordinator(monkeypatch):
    """The first worker starts in the supervisor's turn; its refusal is a worker death
    there too: the item fails, a restart counts, the next item gets a new worker."""
    refused = refuse_one_start(monkeypatch, "-worker-1")
    c = ResultCoordinator(lambda item: item * 2, max_concurrency=1)
    try:
        first = c.submit(1)
        with pytest.raises(WorkerCrashError, match="could not start the worker's thread"):
            first.result(timeout=WAIT)
        assert c.submit(2).result(timeout=WAIT) == 4
        assert not c.is_faulted
        s = c.stats()
        assert (s.worker_restarts, s.total_completed, s.total_failed) == (1, 1, 1)
    finally:
        c.close(WAIT)
    assert refused
    assert not library_threads()


def test_close_right_after_the_items_leaves_no_thread():
    """close() while the spawner may still be starting workers: every item still ends
    (completed, or cancelled before it started) and no thread outlives close()."""
    for _ in range(5):
        c = WorkCoordinator(lambda item: None, max_concurrency=32)
        for i in range(64):
            c.enqueue(i)
        c.close(WAIT)
        s = c.stats()
        assert s.total_enqueued == s.total_completed + s.total_cancelled == 64
        assert not library_threads()


def test_no_spawner_for_a_single_worker():
    """An idle coordinator's first item waits for one thread start, not two."""
    c = ResultCoordinator(lambda item: item, max_concurrency=8)
    try:
        assert c.submit(1).result(timeout=WAIT) == 1
        names = [t.name for t in library_threads()]
        assert any(name.endswith("-worker-1") for name in names)
        assert not any(name.endswith("-spawner") for name in names)
    finally:
        c.close(WAIT)
