"""ResultCoordinator: results in the window, privacy-safe base snapshots (SPEC sections 6, 8)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pykka
import pytest

from ephemeral_actors import (
    CoordinatorOptions,
    OperationSnapshot,
    ResultCoordinator,
    ResultSnapshot,
    WorkCoordinator,
)
from ephemeral_actors.testing import use_clock
from tests.conftest import WAIT
from tests.coordinators.test_work import Tracker, gated


@pytest.fixture
def make() -> Iterator[Callable[..., ResultCoordinator[Any, Any]]]:
    made: list[ResultCoordinator[Any, Any]] = []

    def factory(body: Callable[[Any], Any], **options: Any) -> ResultCoordinator[Any, Any]:
        c = ResultCoordinator(body, CoordinatorOptions(**options))
        made.append(c)
        return c

    yield factory
    for c in made:
        c.close(timeout=WAIT)


def run_all(c: ResultCoordinator[Any, Any], items: Any) -> list[int]:
    ids = [c.enqueue(i) for i in items]
    c.complete()
    c.drain(WAIT)
    return ids


def odd_fails(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd {x}")
    return x * 10


# -- queries ------------------------------------------------------------------------------


def test_get_results_holds_successful_results_oldest_first(make):
    """get_results() gives the results of successful operations in start order, skipping failures."""
    c = make(odd_fails, max_concurrency=1)
    run_all(c, range(6))
    assert c.get_results() == (0, 20, 40)
    assert isinstance(c.get_results(), tuple)


def test_none_is_a_result(make):
    """A body returning None succeeded: has_result is True and None is among the results."""
    c = make(lambda _: None)
    run_all(c, [1])
    (snap,) = c.get_snapshot()
    assert snap.has_result is True
    assert snap.result is None
    assert c.get_results() == (None,)


def test_get_successful_gives_result_snapshots_of_successes(make):
    """get_successful() returns ResultSnapshots of the successful operations only."""
    c = make(odd_fails, max_concurrency=1)
    ids = run_all(c, range(4))
    successful = c.get_successful()
    assert [s.id for s in successful] == [ids[0], ids[2]]
    assert all(type(s) is ResultSnapshot for s in successful)
    assert [s.result for s in successful] == [0, 20]
    assert all(s.has_result and not s.is_faulted and s.error is None for s in successful)


def test_snapshots_are_result_snapshots(make):
    """get_snapshot() returns ResultSnapshots; failures have no result."""
    c = make(odd_fails, max_concurrency=1)
    ids = run_all(c, range(4))
    snap = c.get_snapshot()
    assert [s.id for s in snap] == ids
    assert all(type(s) is ResultSnapshot for s in snap)
    assert isinstance(snap[0], OperationSnapshot)
    by_id = {s.id: s for s in snap}
    failed = by_id[ids[1]]
    assert failed.has_result is False
    assert failed.result is None
    assert isinstance(failed.error, ValueError)
    assert by_id[ids[2]].result == 20


def test_running_result_snapshot_has_no_result_yet(make):
    """A running operation's ResultSnapshot has has_result False until the body returns."""
    tracker, gate = Tracker(), threading.Event()
    body = gated(tracker, gate)
    c = make(lambda x: body(x) or "done")
    op_id = c.enqueue(1)
    tracker.wait_for(lambda: tracker.current == 1)
    (running,) = c.get_running()
    assert running.id == op_id
    assert (running.has_result, running.result) == (False, None)
    assert c.get_results() == ()
    gate.set()
    c.complete()
    c.drain(WAIT)
    assert c.get_results() == ("done",)


def test_base_snapshot_has_no_results(make):
    """get_base_snapshot() gives plain OperationSnapshots without a result attribute."""
    secret = object()
    c = make(lambda _: secret, max_concurrency=1)
    ids = run_all(c, range(3))
    base = c.get_base_snapshot()
    assert [s.id for s in base] == ids
    for s in base:
        assert type(s) is OperationSnapshot
        assert not hasattr(s, "result")
        assert not hasattr(s, "has_result")
        assert secret not in (getattr(s, f) for f in OperationSnapshot.__slots__)
    # The cached result snapshots are not confused with the base ones (and vice versa).
    assert all(type(s) is ResultSnapshot for s in c.get_snapshot())
    assert all(type(s) is OperationSnapshot for s in c.get_base_snapshot())


def test_work_coordinator_snapshots_are_plain(make):
    """A plain WorkCoordinator's snapshots carry no result attribute."""
    c = WorkCoordinator(lambda x: x, CoordinatorOptions())
    try:
        c.submit(1).get(timeout=WAIT)
        (snap,) = c.get_snapshot()
        assert type(snap) is OperationSnapshot
        assert not hasattr(snap, "result")
    finally:
        c.close(WAIT)


# -- results evaporate ----------------------------------------------------------------------


def test_results_evaporate_with_the_window_bound(make):
    """1,000 items through a 64-operation window leave exactly the 64 newest results."""
    c = make(lambda x: x, max_concurrency=4, max_tracked_operations=64)
    run_all(c, range(1000))
    results = c.get_results()
    assert len(results) == 64
    assert len(c.get_snapshot()) == 64
    assert len(c.get_successful()) == 64
    assert set(results) <= set(range(1000))
    assert c.total_completed == 1000
    assert max(results) >= 1000 - 64


def test_results_evaporate_in_order_with_one_worker(make):
    """With one worker the window keeps exactly the last max_tracked_operations results."""
    c = make(lambda x: x, max_concurrency=1, max_tracked_operations=64)
    run_all(c, range(1000))
    assert c.get_results() == tuple(range(1000 - 64, 1000))


def test_evict_removes_a_result(make):
    """evict(op_id) removes the operation and its result; counters stay."""
    c = make(lambda x: f"r{x}", max_concurrency=1)
    ids = run_all(c, range(3))
    assert c.evict(ids[1]) is True
    assert c.get_results() == ("r0", "r2")
    assert ids[1] not in {s.id for s in c.get_successful()}
    assert ids[1] not in {s.id for s in c.get_base_snapshot()}
    assert c.evict(ids[1]) is False
    assert c.total_completed == 3


def test_pinned_result_survives_the_size_trim(make):
    """A pinned operation keeps its result while newer ones push others out."""
    c = make(lambda x: x, max_concurrency=1, max_tracked_operations=4)
    first = c.submit(-1)
    assert first.get(timeout=WAIT) == -1
    (snap,) = c.get_snapshot()
    assert c.pin(snap.id) is True
    run_all(c, range(20))
    results = c.get_results()
    assert results[0] == -1
    assert len(results) == 4
    assert results[1:] == (17, 18, 19)


def test_results_evaporate_with_age(make, monkeypatch):
    """Results of operations older than max_operation_lifetime vanish on read."""
    clock = [2_000_000.0]
    with use_clock(lambda: clock[0]):
        c = make(lambda x: x, max_operation_lifetime=5)
    assert c.submit("old").get(timeout=WAIT) == "old"
    clock[0] += 3
    assert c.submit("new").get(timeout=WAIT) == "new"
    assert c.get_results() == ("old", "new")
    clock[0] += 3
    assert c.get_results() == ("new",)
    clock[0] += 3
    assert c.get_results() == ()
    assert c.total_completed == 2


# -- on_sample and submit -------------------------------------------------------------------


def test_on_sample_receives_base_snapshots_only(make):
    """on_sample gets plain OperationSnapshots, never results."""
    windows: list[tuple[Any, ...]] = []
    secret = "s3cr3t"
    c = make(lambda _: secret, on_sample=windows.append)
    run_all(c, range(5))
    assert len(windows) == 5
    for window in windows:
        assert window
        for s in window:
            assert type(s) is OperationSnapshot
            assert not hasattr(s, "result")
    assert c.get_results() == (secret,) * 5


def test_submit_resolves_to_the_result(make):
    """submit().get() resolves to the body's result."""
    c = make(lambda x: {"double": x * 2})
    future = c.submit(21)
    assert isinstance(future, pykka.Future)
    assert future.get(timeout=WAIT) == {"double": 42}


def test_submit_raises_the_body_exception(make):
    """submit().get() raises the body's exception; the window records it without a result."""
    c = make(odd_fails)
    with pytest.raises(ValueError, match="odd 3"):
        c.submit(3).get(timeout=WAIT)
    (snap,) = c.get_failed()
    assert isinstance(snap.error, ValueError)
    assert snap.has_result is False
    assert c.get_results() == ()
    assert c.total_failed == 1


def test_from_iterable_collects_results():
    """ResultCoordinator.from_iterable drains its source and keeps the results."""
    c = ResultCoordinator.from_iterable(
        range(10), lambda x: x * x, CoordinatorOptions(max_concurrency=1)
    )
    try:
        c.drain(WAIT)
        assert c.get_results() == tuple(x * x for x in range(10))
    finally:
        c.close(WAIT)


def test_results_still_answer_after_close(make):
    """get_results() keeps answering the final state after close()."""
    c = make(lambda x: x + 1, max_concurrency=1)
    run_all(c, range(3))
    c.close()
    assert c.get_results() == (1, 2, 3)
    assert len(c.get_base_snapshot()) == 3
