"""Deadlines (SPEC 16): `item_timeout`, `OperationTimeoutError` and abandoned threads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ephemeral_actors import (
    CoordinatorOptions,
    EphemeralError,
    KeyedWorkCoordinator,
    OperationCancelledError,
    OperationTimeoutError,
    WorkCoordinator,
    current_operation,
)
from tests.conftest import WAIT

SLACK = 3.0
"""Scheduling slack on top of `2 * item_timeout` (generous: this is no speed test)."""


def test_the_error_is_an_ephemeral_error_and_a_timeout_error():
    """OperationTimeoutError is caught by `except TimeoutError` and by the library root."""
    assert issubclass(OperationTimeoutError, EphemeralError)
    assert issubclass(OperationTimeoutError, TimeoutError)


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf")])
def test_item_timeout_must_be_positive_seconds(value: float):
    """A non-positive or non-finite item_timeout is refused, naming the field."""
    with pytest.raises(ValueError, match="item_timeout"):
        CoordinatorOptions(item_timeout=value)


def test_item_timeout_rejects_a_string():
    """item_timeout must be seconds."""
    with pytest.raises(TypeError, match="item_timeout"):
        CoordinatorOptions(item_timeout="1")  # type: ignore[arg-type]


def test_a_coroutine_body_past_its_deadline_is_cancelled_and_fails():
    """The body's task is cancelled; the operation fails with OperationTimeoutError."""
    saw_cancel = threading.Event()

    async def body(_item: int) -> None:
        try:
            await asyncio.sleep(WAIT * 10)
        except asyncio.CancelledError:
            saw_cancel.set()
            raise

    with WorkCoordinator(body, item_timeout=0.05, max_concurrency=1) as c:
        future = c.submit(1)
        with pytest.raises(OperationTimeoutError, match="item_timeout=0.05"):
            future.result(WAIT)
        assert saw_cancel.is_set()
        (snap,) = c.get_failed()
        assert isinstance(snap.error, OperationTimeoutError)
        s = c.stats()
        assert (s.total_failed, s.total_cancelled, s.abandoned_threads) == (1, 0, 0)


def test_the_worker_task_goes_on_after_a_deadline_cancel():
    """After one body's deadline cancel, the next item on the same worker runs normally."""

    async def body(item: int) -> int:
        if item == 0:
            await asyncio.sleep(WAIT * 10)
        await asyncio.sleep(0)
        return item

    with WorkCoordinator(body, item_timeout=0.05, max_concurrency=1) as c:
        first = c.submit(0)
        second = c.submit(1)
        with pytest.raises(OperationTimeoutError):
            first.result(WAIT)
        assert second.result(WAIT) is None
        c.complete()
        c.drain(WAIT)
        s = c.stats()
        assert (s.total_completed, s.total_failed) == (1, 1)


def test_a_plain_body_that_honours_the_deadline_counts_as_failed():
    """A plain body is asked to cancel; raising OperationCancelledError then is a timeout."""
    asked = threading.Event()

    def body(_item: int) -> None:
        op = current_operation()
        while not op.cancelled:
            asked.wait(0.005)
        asked.set()
        op.raise_if_cancelled()

    with WorkCoordinator(body, item_timeout=0.05, max_concurrency=1) as c:
        future = c.submit(1)
        with pytest.raises(OperationTimeoutError):
            future.result(WAIT)
        assert asked.is_set()
        s = c.stats()
        assert (s.total_failed, s.total_cancelled, s.abandoned_threads) == (1, 0, 0)


def test_a_body_that_succeeds_after_the_cancel_request_completes():
    """Cancellation is cooperative: a body that returns normally past its deadline completed."""

    def body(_item: int) -> str:
        op = current_operation()
        while not op.cancelled:
            threading.Event().wait(0.005)
        return "done anyway"

    # A deadline long enough that the body's next poll (every 5 ms) comes well before
    # twice the deadline, when the worker would be abandoned: at 0.05 s, a body thread
    # held off the CPU for 45 ms on a loaded machine was abandoned (a clean-clone CI
    # run did that once).
    with WorkCoordinator(body, item_timeout=0.5, max_concurrency=1) as c:
        assert c.submit(1).result(WAIT) is None
        s = c.stats()
        assert (s.total_completed, s.total_failed) == (1, 0)


def test_an_explicit_cancel_before_the_deadline_keeps_counting_as_cancelled():
    """cancel_operation() first: honouring it counts as cancelled even past the deadline."""
    running = threading.Event()

    def body(_item: int) -> None:
        start = time.monotonic()
        running.set()
        op = current_operation()
        while not op.cancelled:
            threading.Event().wait(0.005)
        # Outlive the deadline (0.5 s), then honour the request well before the thread
        # would be abandoned (1.0 s). Timed from the start, not from the cancel: a cancel
        # that came late on a loaded machine used to push the body past 2 * deadline.
        threading.Event().wait(max(0.0, start + 0.7 - time.monotonic()))
        op.raise_if_cancelled()

    with WorkCoordinator(body, item_timeout=0.5, max_concurrency=1) as c:
        _cancel_while_running_and_expect_cancelled(c, running)


def test_a_cancelled_coroutine_body_interrupted_at_its_deadline_counts_as_cancelled():
    """cancel_operation() first, then the deadline cancels the task: the user's cancel is
    what ended it, so the item is cancelled with OperationCancelledError, not failed with
    a bare asyncio.CancelledError."""
    running = threading.Event()

    async def body(_item: int) -> None:
        running.set()
        await asyncio.sleep(3600)  # ignores the cooperative request; the deadline interrupts

    with WorkCoordinator(body, item_timeout=0.2, max_concurrency=1) as c:
        _cancel_while_running_and_expect_cancelled(c, running)


def _cancel_while_running_and_expect_cancelled(c: Any, running: threading.Event) -> None:
    """Submit one item, cancel it once its body runs; it must end cancelled, not timed out."""
    future = c.submit(1)
    assert running.wait(WAIT)
    assert c.cancel_operation(future.operation_id)
    with pytest.raises(OperationCancelledError) as info:
        future.result(WAIT)
    assert not isinstance(info.value, OperationTimeoutError)
    stats = c.stats()
    assert (stats.total_cancelled, stats.total_failed) == (1, 0)


def test_a_plain_body_ignoring_its_deadline_is_abandoned(caplog: pytest.LogCaptureFixture):
    """After 2 * item_timeout the slot is freed, the thread abandoned, counted and logged."""
    gate = threading.Event()
    late = threading.Event()
    ran: list[int] = []

    def body(item: int) -> int:
        ran.append(item)
        if item == 0:
            gate.wait(WAIT)
            late.set()
        return item

    caplog.set_level(logging.WARNING, logger="ephemeral_actors")
    c = WorkCoordinator(body, item_timeout=0.05, max_concurrency=1)
    try:
        stuck = c.submit(0)
        with pytest.raises(OperationTimeoutError):
            stuck.result(WAIT)
        s = c.stats()
        assert (s.active_count, s.total_failed, s.abandoned_threads) == (0, 1, 1)
        assert "abandoned operation" in caplog.text
        # The freed slot goes to a new worker at once, while the old body still hangs.
        assert c.submit(1).result(WAIT) is None
        assert not late.is_set()
        gate.set()
        assert late.wait(WAIT)
        c.complete()
        c.drain(WAIT)
        # The late outcome of the abandoned body is ignored: it already failed.
        s = c.stats()
        assert (s.total_completed, s.total_failed, s.abandoned_threads) == (1, 1, 1)
        assert s.total_enqueued == s.total_completed + s.total_failed
        assert ran == [0, 1]
    finally:
        gate.set()
        c.close(WAIT)
    # The autouse fixture checks that the abandoned thread ended once its body returned.


def test_a_coroutine_body_swallowing_its_cancel_is_abandoned_too():
    """A coroutine body that ignores its task's cancellation loses its slot after 2 * timeout."""
    gate = asyncio.Event()
    release: list[Any] = []

    async def body(item: int) -> None:
        if item == 0:
            release.append(asyncio.get_running_loop())
            while not gate.is_set():
                with contextlib.suppress(asyncio.CancelledError):  # a misbehaving body
                    await gate.wait()

    c = WorkCoordinator(body, item_timeout=0.05, max_concurrency=1)
    try:
        with pytest.raises(OperationTimeoutError):
            c.submit(0).result(WAIT)
        assert c.stats().abandoned_threads == 1
        assert c.submit(1).result(WAIT) is None
    finally:
        for loop in release:
            loop.call_soon_threadsafe(gate.set)
        c.close(WAIT)


def test_close_and_drain_do_not_wait_for_an_abandoned_body(caplog: pytest.LogCaptureFixture):
    """An abandoned body never counts as running: drain() and close() finish without it."""
    gate = threading.Event()
    c = WorkCoordinator(lambda _item: gate.wait(WAIT), item_timeout=0.05)
    try:
        c.enqueue(1)
        c.complete()
        c.drain(WAIT)  # returns once the deadline abandoned the body
        caplog.set_level(logging.WARNING, logger="ephemeral_actors")
        c.close(WAIT)
        assert "close() abandoned" not in caplog.text  # nothing left running for close
        s = c.stats()
        assert (s.total_failed, s.abandoned_threads, s.active_count) == (1, 1, 0)
    finally:
        gate.set()


def test_an_abandoned_keyed_item_lets_its_key_go_on():
    """A keyed item abandoned past its deadline frees its key slot too."""
    gate = threading.Event()
    ran: list[str] = []

    def body(item: str) -> None:
        ran.append(item)
        if item == "a1":
            gate.wait(WAIT)

    c = KeyedWorkCoordinator(lambda item: item[0], body, item_timeout=0.05)
    try:
        first = c.submit("a1")
        second = c.submit("a2")
        with pytest.raises(OperationTimeoutError):
            first.result(WAIT)
        assert second.result(WAIT) is None
        assert ran == ["a1", "a2"]
    finally:
        gate.set()
        c.close(WAIT)


BEHAVIOURS = ("quick", "honours", "ignores", "async-sleeps", "async-quick")


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    timeout=st.sampled_from([0.02, 0.05, 0.1]),
    behaviours=st.lists(st.sampled_from(BEHAVIOURS[:3]), min_size=1, max_size=4),
    use_async=st.booleans(),
    limit=st.integers(1, 3),
)
def test_every_item_ends_within_twice_its_deadline(
    timeout: float, behaviours: list[str], use_async: bool, limit: int
):
    """Whatever the body does, its operation ends within 2 * item_timeout (+ slack).

    Start and end times are recorded with `time.monotonic()` in the body and in the
    future's done-callback; the bound is generous, it shows there is a bound.
    """
    gate = threading.Event()
    started: dict[int, float] = {}
    ended: dict[int, float] = {}
    late: list[int] = []  # bodies that honoured the cancel after their abandonment
    done = threading.Semaphore(0)

    def sync_body(behaviour: str) -> None:
        op = current_operation()
        started[op.id] = time.monotonic()
        if behaviour == "honours":
            while not op.cancelled:
                gate.wait(0.002)
            if time.monotonic() - started[op.id] > 1.5 * timeout:
                # A loaded machine can hold a polling body (or its report) until the
                # grace period, one more timeout, is over: it may then be abandoned
                # like a body that ignores its deadline, and rightly so.
                late.append(op.id)
            op.raise_if_cancelled()
        elif behaviour == "ignores":
            gate.wait(WAIT)

    async def async_body(behaviour: str) -> None:
        op = current_operation()
        started[op.id] = time.monotonic()
        if behaviour != "quick":
            await asyncio.sleep(WAIT)

    body: Any = async_body if use_async else sync_body
    c = WorkCoordinator(body, item_timeout=timeout, max_concurrency=limit)
    try:
        futures = []
        for behaviour in behaviours:
            future = c.submit(behaviour)
            op_id = future.operation_id

            def finished(_f: Any, op_id: int = op_id) -> None:
                ended[op_id] = time.monotonic()
                done.release()

            future.add_done_callback(finished)
            futures.append(future)
        for _ in futures:
            assert done.acquire(timeout=WAIT)
        records = {r.id: r for r in c.get_snapshot()}
        for future in futures:
            op_id = future.operation_id
            if op_id in started:
                assert ended[op_id] - started[op_id] <= 2 * timeout + SLACK
            else:
                # The body never began: its worker was starved past the deadline (a
                # loaded machine), and the operation ended without it. The bound then
                # holds from dispatch, which only the record knows.
                duration = records[op_id].duration
                assert duration is not None
                assert duration <= 2 * timeout + SLACK
        s = c.stats()
        assert s.total_completed + s.total_failed == len(behaviours)
        never_began = sum(f.operation_id not in started for f in futures)
        assert s.abandoned_threads <= behaviours.count("ignores") + len(late) + never_began
    finally:
        gate.set()
        c.close(WAIT)
