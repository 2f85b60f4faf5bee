"""Rate limits (SPEC 16): starts never exceed `rate_burst + rate * t` in any window."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ephemeral_actors import (
    CoordinatorOptions,
    KeyedWorkCoordinator,
    SignalBus,
    WorkCoordinator,
)
from ephemeral_actors._coordinators._limits import TokenBucket
from ephemeral_actors.testing import library_threads, use_clock, use_schedule_clock
from tests.conftest import WAIT, FakeClock, settle

PROPERTY = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
EPSILON = 1e-9


def worst_window(times: list[float], rate: float, burst: int) -> float:
    """max over windows [a, b] of (starts in it) - (burst + rate * (b - a)); <= 0 is kept."""
    times = sorted(times)
    worst = -float(burst)
    for i, first in enumerate(times):
        for j in range(i, len(times)):
            worst = max(worst, (j - i + 1) - (burst + rate * (times[j] - first)))
    return worst


rates = st.sampled_from([0.5, 1.0, 2.0, 3.0, 10.0])
bursts = st.integers(1, 4)
advances = st.lists(st.sampled_from([0.0, 0.05, 0.1, 1 / 3, 0.5, 1.0, 2.5]), max_size=25)


@PROPERTY
@given(rate=rates, burst=bursts, count=st.integers(0, 25), steps=advances)
def test_global_rate_is_never_exceeded_in_any_window(
    rate: float, burst: int, count: int, steps: list[float]
) -> None:
    """Whatever the timing, starts in any window of t seconds <= rate_burst + rate * t."""
    clock = FakeClock()
    started: list[float] = []
    with use_schedule_clock(clock):
        c = WorkCoordinator(
            lambda _: started.append(clock.now),
            max_concurrency=4,
            rate_limit=rate,
            rate_burst=burst,
        )
    try:
        for i in range(count):
            c.enqueue(i)
        settle(c, started)
        assert len(started) == min(count, burst)  # a full bucket lets a burst through
        for step in steps:
            clock.now += step
            c.resume()  # a dispatch at the new time
            settle(c, started)
            s = c.stats()
            assert s.total_enqueued == s.pending_count + s.active_count + s.total_completed
        # Liveness: given enough time, everything starts.
        while len(started) < count:
            clock.now += 1 / rate
            c.resume()
            settle(c, started)
    finally:
        c.close(WAIT)
    assert worst_window(started, rate, burst) <= EPSILON


@PROPERTY
@given(
    rate=rates,
    key_rate=st.one_of(st.none(), rates),
    burst=bursts,
    keys=st.lists(st.integers(0, 2), max_size=20),
    steps=advances,
)
def test_per_key_and_global_limits_each_hold(
    rate: float, key_rate: float | None, burst: int, keys: list[int], steps: list[float]
) -> None:
    """Keyed, with both limits: each key's starts and all starts obey their own bucket."""
    clock = FakeClock()
    started: list[tuple[int, float]] = []
    with use_schedule_clock(clock):
        c = KeyedWorkCoordinator(
            lambda i: keys[i],
            lambda i: started.append((keys[i], clock.now)),
            max_concurrency=4,
            max_concurrency_per_key=2,
            rate_limit=None if key_rate is None else rate,
            rate_limit_per_key=key_rate if key_rate is not None else rate,
            rate_burst=burst,
        )
    try:
        for i in range(len(keys)):
            c.enqueue(i)
        settle(c, started)
        for step in [*steps, *([1.0] * 3 * len(keys))]:
            clock.now += step
            c.resume()
            settle(c, started)
        s = c.stats()
        assert s.pending_count == 0, s  # liveness: a throttled key is woken
    finally:
        c.close(WAIT)
    per_key: defaultdict[int, list[float]] = defaultdict(list)
    for key, at in started:
        per_key[key].append(at)
    limit_per_key = rate if key_rate is None else key_rate
    for times in per_key.values():
        assert worst_window(times, limit_per_key, burst) <= EPSILON
    if key_rate is not None:
        assert worst_window([at for _, at in started], rate, burst) <= EPSILON


def test_token_bucket_model() -> None:
    """The GCRA bucket: a burst at once, then one token per interval; refunds give back."""
    bucket = TokenBucket(2.0, 3)
    assert bucket.burst == 3
    for _ in range(3):
        assert bucket.wait(10.0) <= 0
        bucket.take(10.0)
    assert bucket.wait(10.0) == pytest.approx(0.5)
    bucket.refund()
    assert bucket.wait(10.0) <= 0
    bucket.take(10.0)
    assert bucket.full_in(10.0) == pytest.approx(1.5)
    assert bucket.wait(12.0) <= 0  # idle: full again


def test_a_token_due_exactly_now_is_given_despite_float_rounding() -> None:
    """0.5/s, burst 2, at t=0.2: the second token computes as due 1e-17 s later, and
    must still be given now (refusing it re-armed a zero-delay timer, forever under a
    clock that does not move)."""
    bucket = TokenBucket(0.5, 2)
    bucket.take(0.2)
    assert bucket.wait(0.2) <= 0
    clock = FakeClock()
    clock.now = 0.2
    started: list[int] = []
    with use_schedule_clock(clock):
        c = WorkCoordinator(started.append, max_concurrency=4, rate_limit=0.5, rate_burst=2)
    try:
        c.enqueue_many(range(3))
        settle(c, started)
        assert len(started) == 2
        before = c.actor_stats()[0].messages_processed
        time.sleep(0.2)  # nothing is due for 2 s of the fake clock: the supervisor idles
        assert c.actor_stats()[0].messages_processed - before <= 2
    finally:
        c.close(WAIT)


def test_held_items_wait_in_the_backlog_not_in_slots(make: Any) -> None:
    """Real time: past the burst, items are pending with no worker slot taken."""
    started: list[int] = []
    c = make(started.append, max_concurrency=4, rate_limit=0.001, rate_burst=2)
    for i in range(5):
        c.enqueue(i)
    settle(c, started)
    s = c.stats()
    assert (s.pending_count, s.active_count, s.total_completed) == (3, 0, 2)
    c.cancel()  # cancelled items never started: they count cancelled, spend no token
    s = c.stats()
    assert (s.pending_count, s.total_cancelled) == (0, 3)
    assert s.total_enqueued == s.total_completed + s.total_cancelled


def test_real_time_starts_are_spaced_by_the_rate(make: Any) -> None:
    """With the default monotonic clock, the schedule's timer paces the starts."""
    with use_clock(time.monotonic):  # records stamped on the limiter's own clock
        c = make(lambda _: None, max_concurrency=4, rate_limit=50.0)
    for i in range(5):
        c.enqueue(i)
    c.complete()
    c.drain(WAIT)
    starts = sorted(s.started.timestamp() for s in c.get_snapshot())
    assert len(starts) == 5
    # Four intervals of 20 ms at least; the first stamp may come a little after its
    # token (a thread switch), so allow 20 ms of that. Time only ever adds to it.
    assert starts[-1] - starts[0] >= 4 / 50 - 0.02


def test_a_throttled_key_blocks_no_other_key() -> None:
    """No head-of-line blocking: a key out of tokens leaves the ready queue to others."""
    other = threading.Event()

    def body(item: str) -> None:
        if item == "b":
            other.set()

    c = KeyedWorkCoordinator(lambda s: s[0], body, max_concurrency=1, rate_limit_per_key=0.001)
    try:
        c.enqueue("a1")
        c.enqueue("a2")  # a's next token is 1000 s away
        c.enqueue("a3")
        c.enqueue("b")
        assert other.wait(WAIT)
        c.complete()
        deadline = time.monotonic() + WAIT
        while c.total_completed < 2:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        assert c.get_pending_count_for_key("a") == 2
        assert c.stats().active_count == 0
    finally:
        c.close(WAIT)
    s = c.stats()
    assert (s.total_completed, s.total_cancelled) == (2, 2)


def test_items_cancelled_at_dispatch_spend_no_token() -> None:
    """Items a cancel signal drops at dispatch never started: the bucket keeps its token."""
    clock = FakeClock()
    bus = SignalBus()
    started: list[int] = []
    with use_schedule_clock(clock):
        c = WorkCoordinator(
            started.append,
            CoordinatorOptions(rate_limit=1.0, signals=bus, cancel_on_signals="stop"),
        )
    try:
        bus.emit("stop")
        for i in range(3):
            c.enqueue(i)
        assert c.stats().total_cancelled == 3
        bus.clear()
        c.enqueue(9)  # the token is still there: it starts at once, at the same instant
        c.complete()
        c.drain(WAIT)
    finally:
        c.close(WAIT)
        bus.close()
    assert started == [9]


def test_rate_limit_starts_no_thread_at_construction() -> None:
    """Building a rate-limited coordinator starts no thread (timers come with need)."""
    before = set(library_threads())
    c = WorkCoordinator(lambda _: None, rate_limit=1.0, rate_limit_per_key=2.0)
    try:
        assert set(library_threads()) == before
    finally:
        c.close(WAIT)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("rate_limit", 0, ValueError),
        ("rate_limit", -1.0, ValueError),
        ("rate_limit", float("nan"), ValueError),
        ("rate_limit", float("inf"), ValueError),
        ("rate_limit", 1e-300, ValueError),
        ("rate_limit", True, TypeError),
        ("rate_limit", "5", TypeError),
        ("rate_limit_per_key", 0.0, ValueError),
        ("rate_limit_per_key", False, TypeError),
        ("rate_burst", 0, ValueError),
        ("rate_burst", 1.5, TypeError),
        ("rate_burst", True, TypeError),
    ],
)
def test_rate_options_are_validated(field: str, value: object, error: type[Exception]) -> None:
    """A bad rate or burst raises, naming the field and the value."""
    with pytest.raises(error, match=field) as info:
        CoordinatorOptions(**{field: value})
    assert repr(value) in str(info.value)


def test_rate_options_are_stored_as_float() -> None:
    """An int rate is stored as a float."""
    options = CoordinatorOptions(rate_limit=5, rate_limit_per_key=2, rate_burst=3)
    assert options.rate_limit == 5.0
    assert isinstance(options.rate_limit, float)
    assert options.rate_limit_per_key == 2.0
