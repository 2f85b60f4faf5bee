"""`ResultCoordinator.as_completed()` and `for_each(..., fail_fast=True)` (SPEC 16)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ephemeral_actors import ResultCoordinator, for_each, for_each_async
from tests.conftest import WAIT


def test_futures_come_in_completion_order():
    """Items released in reverse order come back in that order, with results and errors."""
    gates = [threading.Event() for _ in range(4)]
    order: list[int] = []

    def body(i: int) -> int:
        gates[i].wait(WAIT)
        if i == 2:
            raise ValueError("two")
        return i * 10

    with ResultCoordinator(body, max_concurrency=4) as results:
        for i in range(4):
            results.enqueue(i)
        stream = results.as_completed(WAIT)
        for i in reversed(range(4)):
            gates[i].set()
            future = next(stream)
            order.append(future.operation_id)
            if i == 2:
                assert isinstance(future.exception(), ValueError)
            else:
                assert future.result() == i * 10
        assert list(stream) == []
    assert len(set(order)) == 4


def test_items_already_ended_come_first_and_later_items_are_not_included():
    """What ended before the call comes first; items accepted after the call are not waited for."""
    gate = threading.Event()

    def body(i: int) -> int:
        if i == 1:
            gate.wait(WAIT)
        return i

    with ResultCoordinator(body, max_concurrency=2) as results:
        results.enqueue(0)
        results.wait_idle(WAIT)
        results.enqueue(1)
        stream = results.as_completed(WAIT)
        results.enqueue(2)  # after the call
        assert next(stream).result() == 0
        gate.set()
        assert [f.result() for f in stream] == [1]


def test_items_whose_records_left_the_window_are_named_in_a_warning(caplog):
    """An item that ended before the call and was trimmed cannot be yielded: a warning
    says how many were left out; a stream that leaves nothing out says nothing."""
    with ResultCoordinator(lambda i: i, max_tracked_operations=3) as results:
        for i in range(3):
            results.enqueue(i)
        results.wait_idle(WAIT)
        with caplog.at_level("WARNING", logger="ephemeral_actors"):
            assert sorted(f.result() for f in results.as_completed(WAIT)) == [0, 1, 2]
        assert not [r for r in caplog.records if "as_completed" in r.getMessage()]
        for i in range(3, 10):
            results.enqueue(i)
        results.wait_idle(WAIT)
        with caplog.at_level("WARNING", logger="ephemeral_actors"):
            yielded = [f.result() for f in results.as_completed(WAIT)]
    assert len(yielded) == 3  # the window's three records (running ones outlive older)
    (warning,) = [r for r in caplog.records if "as_completed" in r.getMessage()]
    assert "leaves out 7 item(s)" in warning.getMessage()
    assert "max_tracked_operations=3" in warning.getMessage()


def test_failures_that_left_the_window_still_come_from_the_failure_log(caplog):
    """Failed records outlive the window in the failure log, and the stream yields them;
    only the completed items the window trimmed are left out (and counted)."""

    def body(i: int) -> int:
        if i < 5:
            raise ValueError(i)
        return i

    with ResultCoordinator(body, max_concurrency=1, max_tracked_operations=2) as results:
        for i in range(10):
            results.enqueue(i)
        results.wait_idle(WAIT)
        with caplog.at_level("WARNING", logger="ephemeral_actors"):
            futures = list(results.as_completed(WAIT))
    failed = sorted(f.exception().args[0] for f in futures if f.exception() is not None)
    completed = sorted(f.result() for f in futures if f.exception() is None)
    assert failed == [0, 1, 2, 3, 4]
    assert completed == [8, 9]
    (warning,) = [r for r in caplog.records if "as_completed" in r.getMessage()]
    assert "leaves out 3 item(s)" in warning.getMessage()


def test_cancelled_items_come_as_cancelled_futures():
    """Items dropped by cancel() are delivered as cancelled futures."""
    gate = threading.Event()
    results = ResultCoordinator(lambda i: gate.wait(WAIT) and i, max_concurrency=1)
    try:
        for i in range(3):
            results.enqueue(i)
        stream = results.as_completed(WAIT)
        results.cancel()
        gate.set()
        futures = list(stream)
        assert len(futures) == 3
        assert sum(f.cancelled() for f in futures) == 2
    finally:
        results.close(WAIT)


def test_as_completed_times_out_like_concurrent_futures():
    """TimeoutError from next() once the timeout (from the call) has passed."""
    gate = threading.Event()
    results = ResultCoordinator(lambda i: gate.wait(WAIT), max_concurrency=1)
    try:
        results.enqueue(1)
        stream = results.as_completed(0.05)
        with pytest.raises(TimeoutError, match="1 item"):
            next(stream)
    finally:
        gate.set()
        results.close(WAIT)


def test_as_completed_async():
    """`async for` over as_completed_async() yields every future without blocking the loop."""

    async def main() -> list[int]:
        async def body(i: int) -> int:
            await asyncio.sleep(0.001 * (5 - i))
            return i

        async with ResultCoordinator(body) as results:
            for i in range(5):
                results.enqueue(i)
            return [f.result() async for f in results.as_completed_async(WAIT)]

    assert sorted(asyncio.run(main())) == list(range(5))


def test_as_completed_async_times_out():
    """as_completed_async raises TimeoutError after its timeout."""
    gate = threading.Event()
    results = ResultCoordinator(lambda i: gate.wait(WAIT), max_concurrency=1)

    async def main() -> None:
        with pytest.raises(TimeoutError):
            async for _ in results.as_completed_async(0.05):
                pass

    try:
        results.enqueue(1)
        asyncio.run(main())
    finally:
        gate.set()
        results.close(WAIT)


@pytest.mark.parametrize("source", ["range", "generator"])
def test_fail_fast_raises_the_first_failure_and_starts_nothing_after_it(source):
    """The first failure stops intake and is raised; the turn that records it cancels the
    rest, so with one body at a time no item starts after the failing one."""
    ran: list[int] = []

    def body(i: int) -> None:
        ran.append(i)
        if i == 3:
            raise ValueError("three")

    items = range(1000) if source == "range" else (i for i in range(1000))
    with pytest.raises(ValueError, match="three"):
        for_each(items, body, max_concurrency=1, max_tracked_operations=2, fail_fast=True)
    assert ran == [0, 1, 2, 3]


def test_fail_fast_off_records_failures():
    """Without fail_fast, failures are counted, not raised."""
    stats = for_each(range(10), lambda i: 1 / (i % 2), max_concurrency=2)
    assert stats.total_failed == 5


def test_fail_fast_groups_concurrent_failures():
    """Failures that happen together are raised as an ExceptionGroup."""
    barrier = threading.Barrier(2, timeout=WAIT)

    def body(i: int) -> None:
        barrier.wait()
        raise KeyError(i)

    with pytest.raises(ExceptionGroup) as info:
        for_each(range(2), body, max_concurrency=2, fail_fast=True)
    assert sorted(e.args[0] for e in info.value.exceptions) == [0, 1]


def test_fail_fast_async():
    """for_each_async(fail_fast=True) raises the body's failure."""

    async def body(i: int) -> None:
        await asyncio.sleep(0)
        if i == 5:
            raise ValueError("five")

    with pytest.raises(ValueError, match="five"):
        asyncio.run(for_each_async(range(50), body, max_concurrency=1, fail_fast=True))


def test_fail_fast_is_validated():
    """fail_fast must be a bool."""
    with pytest.raises(TypeError, match="fail_fast"):
        for_each([1], print, fail_fast=1)  # type: ignore[arg-type]
