"""Delays (SPEC 16): pending throughout, never started early, due items by priority."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ephemeral_actors import (
    CoordinatorClosedError,
    KeyedWorkCoordinator,
    OperationCancelledError,
    WorkCoordinator,
)
from ephemeral_actors.messages import Enqueue, Submit
from ephemeral_actors.testing import library_threads, use_schedule_clock
from tests.conftest import WAIT, FakeClock, settle

PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# Fake seconds: the library's real-time wake-up timer is armed this far ahead, so within
# a test only the explicit nudges (resume()) dispatch.
BASE = 1_000.0


@PROPERTY
@given(
    items=st.lists(
        st.tuples(st.one_of(st.none(), st.integers(1, 5)), st.integers(-2, 2)), max_size=20
    ),
    steps=st.lists(st.integers(0, 3), min_size=1, max_size=8),
    data=st.data(),
)
def test_delayed_items_start_when_due_by_priority_then_due_time(
    items: list[tuple[int | None, int]], steps: list[int], data: st.DataObject
) -> None:
    """Nothing starts before its due time; each batch that falls due starts by (priority,
    due time, enqueue order); a cancelled delayed item never starts; counters add up."""
    clock = FakeClock()
    started: list[tuple[int, float]] = []
    with use_schedule_clock(clock):
        c = WorkCoordinator(lambda i: started.append((i, clock.now)), max_concurrency=1)
    try:
        c.pause()
        ids = [
            c.enqueue(i, priority=rank, delay=None if delay is None else delay * BASE)
            for i, (delay, rank) in enumerate(items)
        ]
        doomed = data.draw(st.sets(st.sampled_from(range(len(items))) if items else st.nothing()))
        for i in doomed:
            assert c.cancel_operation(ids[i])
        s = c.stats()
        assert s.pending_count == len(items) - len(doomed)
        assert s.total_cancelled == len(doomed)
        c.resume()
        settle(c, started)
        for step in [*steps, 6]:  # the last step makes everything due
            clock.now += step * BASE
            c.resume()  # a dispatch: releases what is due now
            settle(c, started)
            s = c.stats()
            assert s.total_enqueued == s.pending_count + s.total_completed + s.total_cancelled
        c.complete()
        c.drain(WAIT)
        s = c.stats()
    finally:
        c.close(WAIT)
    due = [0.0 if delay is None else delay * BASE for delay, _ in items]
    kept = [i for i in range(len(items)) if i not in doomed]
    assert sorted(i for i, _ in started) == kept
    for i, at in started:
        assert at >= due[i], f"item {i} started at {at}, due at {due[i]}"
    # Items that fell due by the same dispatch start by priority, then due time.
    batches: dict[float, list[int]] = {}
    for i, at in started:
        batches.setdefault(at, []).append(i)
    for batch in batches.values():
        assert batch == sorted(batch, key=lambda i: (items[i][1], due[i], i)), batch
    assert s.total_completed == len(kept)
    assert s.total_cancelled == len(doomed)


def test_a_delayed_item_counts_as_pending_and_starts_after_its_delay(make: Any) -> None:
    """Real time: pending meanwhile, started no earlier than `delay` after acceptance."""
    done = threading.Event()
    started_at: list[float] = []

    def body(_: object) -> None:
        started_at.append(time.monotonic())
        done.set()

    c = make(body)
    accepted = time.monotonic()
    c.enqueue("x", delay=0.05)
    s = c.stats()
    assert (s.pending_count, s.active_count) == (1, 0) or started_at
    assert done.wait(WAIT)  # the schedule's own timer dispatched it: nothing nudged
    assert started_at[0] - accepted >= 0.05
    c.complete()
    c.drain(WAIT)
    assert c.total_completed == 1


def test_timedelta_delay_and_every_intake_form(make: Any) -> None:
    """`delay` takes a timedelta, and every intake form and actor message takes it."""
    clock = FakeClock()
    started: list[str] = []
    with use_schedule_clock(clock):
        c = make(started.append, max_concurrency=1)
    c.enqueue("enqueue", delay=dt.timedelta(seconds=BASE))
    assert c.try_enqueue("try", delay=BASE)
    future = c.submit("submit", delay=BASE)
    asyncio.run(c.enqueue_async("async", delay=BASE))
    c.actor_ref.ask(Enqueue("actor", 0, BASE), timeout=WAIT)
    answer = c.actor_ref.ask(Submit("actor-submit", delay=BASE), timeout=WAIT)

    s = c.stats()
    assert (s.pending_count, s.total_completed) == (6, 0)
    clock.now = BASE
    c.resume()  # a dispatch: the six are due now

    async def submit_async() -> Any:
        task = asyncio.ensure_future(c.submit_async("submit-async", delay=BASE))
        async with asyncio.timeout(WAIT):
            while c.stats().total_enqueued < 7:  # noqa: ASYNC110 - another actor's counter
                await asyncio.sleep(0.001)
        clock.now = 2 * BASE
        c.resume()
        return await task

    assert asyncio.run(submit_async()) is None
    c.complete()
    c.drain(WAIT)
    assert future.result(WAIT) is None
    assert answer.get(timeout=WAIT) is None
    assert started == ["enqueue", "try", "submit", "async", "actor", "actor-submit", "submit-async"]


@pytest.mark.parametrize(("bad", "error"), [(-1, ValueError), (True, TypeError), ("1", TypeError)])
def test_delay_is_validated(make: Any, bad: object, error: type[Exception]) -> None:
    """A negative or non-numeric delay raises, naming `delay`."""
    c = make(lambda _: None)
    with pytest.raises(error, match="delay"):
        c.enqueue(1, delay=bad)
    with pytest.raises(error, match="delay"):
        Enqueue(1, 0, bad)
    assert c.total_enqueued == 0


def test_cancel_and_close_reach_delayed_items(make: Any) -> None:
    """cancel() drops delayed items (futures fail, counted cancelled); nothing leaks."""
    started: list[int] = []
    c = make(started.append)
    futures = [c.submit(i, delay=600) for i in range(3)]
    c.enqueue(9, delay=600)
    assert c.pending_count == 4
    c.cancel()
    s = c.stats()
    assert (s.pending_count, s.total_cancelled) == (0, 4)
    for future in futures:
        with pytest.raises(OperationCancelledError):
            future.result(WAIT)
    with pytest.raises(CoordinatorClosedError):
        c.enqueue(1, delay=1)
    c.close(WAIT)
    assert not started


def test_future_cancel_of_a_delayed_item(make: Any) -> None:
    """future.cancel() takes a delayed item back; it never starts."""
    started: list[int] = []
    c = make(started.append)
    future = c.submit(1, delay=600)
    assert future.cancel()
    assert future.cancelled()
    s = c.stats()
    assert (s.pending_count, s.total_cancelled) == (0, 1)
    c.complete()
    c.drain(WAIT)
    assert not started


def test_building_with_delays_starts_no_thread_until_a_delay_is_used() -> None:
    """A coordinator starts no thread for its schedule until it needs a timer."""
    before = set(library_threads())
    c = WorkCoordinator(lambda _: None)
    try:
        assert set(library_threads()) == before
        assert c._core.schedule is None
        c.enqueue(1, delay=600)
        assert c._core.schedule is not None
    finally:
        c.close(WAIT)


def test_keyed_delays_count_per_key_and_keep_other_keys_moving() -> None:
    """A delayed item counts in its key's pending count and blocks neither its key nor others."""
    clock = FakeClock()
    started: list[str] = []
    with use_schedule_clock(clock):
        c = KeyedWorkCoordinator(
            lambda s: s[0],
            started.append,
            max_concurrency=1,
            enable_fair_scheduling=True,
            fair_scheduling_threshold=2,
        )
    try:
        c.enqueue("a-later", delay=BASE)
        c.enqueue("a-later-2", delay=BASE)
        assert c.get_pending_count_for_key("a") == 2
        assert not c.try_enqueue("a-refused")  # fair scheduling counts delayed items
        c.enqueue("a-now")
        c.enqueue("b-now")
        c.complete()
        settle(c, started)
        assert started == ["a-now", "b-now"]
        assert c.get_pending_count_for_key("a") == 2
        clock.now = BASE
        c.resume()
        c.drain(WAIT)
    finally:
        c.close(WAIT)
    assert started == ["a-now", "b-now", "a-later", "a-later-2"]
