"""Retries (SPEC 16): `RetryPolicy`, re-queued attempts, `retry_after`, `attempts` in records."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ephemeral_actors import (
    CoordinatorOptions,
    KeyedWorkCoordinator,
    OperationSnapshot,
    OperationTimeoutError,
    ResultCoordinator,
    RetryPolicy,
    SignalBus,
    SignalCancelledError,
    WorkCoordinator,
    current_operation,
)
from tests.conftest import WAIT

FAST = RetryPolicy(attempts=3, backoff=0.001, jitter=0.0)


class Boom(Exception):
    """A failure worth retrying."""


class Throttled(Exception):
    """A failure that says when to come back, like an HTTP 429 with Retry-After."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


# -- the policy record ---------------------------------------------------------------------


def test_policy_defaults_match_the_spec():
    """RetryPolicy() is attempts=3, backoff=0.1, doubling, at most 30 s, ±10 %, on any Exception."""
    p = RetryPolicy()
    assert (p.attempts, p.backoff, p.multiplier, p.max_backoff, p.jitter) == (
        3,
        0.1,
        2.0,
        30.0,
        0.1,
    )
    assert p.retry_on == (Exception,)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("attempts", 0, ValueError),
        ("attempts", 1.5, TypeError),
        ("attempts", True, TypeError),
        ("backoff", -0.1, ValueError),
        ("backoff", "1", TypeError),
        ("multiplier", 0.5, ValueError),
        ("multiplier", float("inf"), ValueError),
        ("max_backoff", -1, ValueError),
        ("jitter", 1.5, ValueError),
        ("jitter", -0.1, ValueError),
        ("retry_on", (), TypeError),
        ("retry_on", (ValueError, "x"), TypeError),
        ("retry_on", 3, TypeError),
    ],
)
def test_policy_fields_are_validated(field: str, value: Any, error: type[Exception]):
    """Every field is checked at construction; the message names the field."""
    with pytest.raises(error, match=field):
        RetryPolicy(**{field: value})


def test_policy_normalises_durations_and_a_single_class():
    """A timedelta becomes seconds; one exception class becomes a one-element tuple."""
    p = RetryPolicy(backoff=timedelta(milliseconds=250), retry_on=ConnectionError)
    assert p.backoff == 0.25
    assert p.retry_on == (ConnectionError,)


def test_options_refuse_anything_but_a_policy():
    """CoordinatorOptions(retry=...) takes a RetryPolicy or None."""
    with pytest.raises(TypeError, match="retry"):
        CoordinatorOptions(retry=3)  # type: ignore[arg-type]


def test_backoff_grows_and_is_capped():
    """Waits grow by `multiplier` per failed attempt and never exceed `max_backoff`."""
    p = RetryPolicy(backoff=1.0, multiplier=3.0, max_backoff=10.0, jitter=0.0)
    assert [p.delay(n) for n in (1, 2, 3, 4, 500)] == [1.0, 3.0, 9.0, 10.0, 10.0]


@given(st.floats(0, 1), st.integers(1, 20))
def test_jitter_stays_within_its_fraction(r: float, attempt: int):
    """Jitter moves a wait by at most ±jitter of itself, and never past max_backoff."""
    p = RetryPolicy(backoff=0.5, multiplier=2.0, max_backoff=8.0, jitter=0.1)
    base = min(0.5 * 2.0 ** (attempt - 1), 8.0)
    wait = p.delay(attempt, rand=lambda: min(r, 0.999999))
    assert base * 0.9 - 1e-9 <= wait <= min(base * 1.1, 8.0) + 1e-9


@given(st.floats(-10, 1e6, allow_nan=False), st.floats(0, 100))
def test_retry_after_wins_and_is_capped(retry_after: float, cap: float):
    """A numeric retry_after is the wait, without jitter, between 0 and max_backoff."""
    p = RetryPolicy(backoff=0.5, max_backoff=cap, jitter=0.5)
    assert p.delay(1, Throttled(retry_after)) == min(max(retry_after, 0.0), cap)


def test_a_non_numeric_retry_after_is_ignored():
    """retry_after that is not a number (a header string, a bool) leaves the backoff."""
    p = RetryPolicy(backoff=0.5, jitter=0.0)
    error = Boom()
    error.retry_after = "120"  # type: ignore[attr-defined]
    assert p.delay(1, error) == 0.5
    error.retry_after = True  # type: ignore[attr-defined]
    assert p.delay(1, error) == 0.5


# -- retries in a coordinator -----------------------------------------------------------------


def test_a_flaky_item_succeeds_on_a_later_attempt_as_one_operation():
    """One id and one record span the attempts; counters count the operation once."""
    runs: Counter[int] = Counter()

    def body(item: int) -> int:
        op = current_operation()
        runs[op.id] += 1
        if runs[op.id] < 3:
            raise Boom(runs[op.id])
        return item * 2

    with ResultCoordinator(body, retry=FAST) as c:
        future = c.submit(21)
        assert future.result(WAIT) == 42
        assert dict(runs) == {future.operation_id: 3}
        (snap,) = c.get_snapshot()
        assert (snap.id, snap.attempts, snap.error) == (future.operation_id, 3, None)
        s = c.stats()
        assert (s.total_enqueued, s.total_completed, s.total_failed) == (1, 1, 0)


def test_out_of_attempts_the_operation_fails_with_the_last_error():
    """After `attempts` runs the future raises the last attempt's error; failed once."""
    runs: list[int] = []

    def body(_item: int) -> None:
        runs.append(1)
        raise Boom(len(runs))

    with WorkCoordinator(body, retry=FAST) as c:
        future = c.submit(1)
        with pytest.raises(Boom) as info:
            future.result(WAIT)
        assert info.value.args == (3,)
        assert len(runs) == 3
        (snap,) = c.get_failed()
        assert snap.attempts == 3
        assert isinstance(snap.error, Boom)
        assert snap.error.args == (3,)
        assert c.stats().total_failed == 1


def test_errors_outside_retry_on_are_final():
    """An error retry_on does not match fails the operation at its first attempt."""
    runs: list[int] = []

    def body(_item: int) -> None:
        runs.append(1)
        raise KeyError("no")

    with WorkCoordinator(body, retry=RetryPolicy(retry_on=(Boom,), backoff=0)) as c:
        with pytest.raises(KeyError):
            c.submit(1).result(WAIT)
        assert len(runs) == 1


def test_without_a_policy_nothing_is_retried():
    """The default is one attempt; snapshots say attempts=1."""
    runs: list[int] = []

    def body(_item: int) -> None:
        runs.append(1)
        raise Boom

    with WorkCoordinator(body) as c:
        with pytest.raises(Boom):
            c.submit(1).result(WAIT)
        assert len(runs) == 1
        assert c.get_snapshot()[0].attempts == 1


def test_snapshots_keep_positional_construction():
    """OperationSnapshot still takes its nine fields positionally; attempts defaults to 1."""
    snap = OperationSnapshot(1, None, None, None, False, None, None, (), False)  # type: ignore[arg-type]
    assert snap.attempts == 1


def waiting_coordinator(**options: Any) -> tuple[Any, threading.Event, list[int]]:
    """Item 0 fails once and then waits a minute for its retry; others succeed."""
    started: list[int] = []

    def body(item: int) -> None:
        started.append(item)
        if item == 0 and started.count(0) == 1:
            raise Throttled(60.0)

    c = WorkCoordinator(
        body, retry=RetryPolicy(max_backoff=60.0), max_concurrency=1, name="waiting", **options
    )
    return c, threading.Event(), started


def wait_until(c: Any, predicate: Any) -> None:
    assert c._core.wait_for(lambda: predicate(c._core), time.monotonic() + WAIT)


def test_attempts_count_runs_not_the_retry_a_cancel_took_away():
    """An item re-queued for a retry, then cancelled by a signal when it was dispatched,
    ran its body once: its record says attempts=1 (the retry never started)."""
    bus = SignalBus()
    release = threading.Event()
    runs: list[int] = []

    def body(item: int) -> None:
        runs.append(item)
        release.wait(WAIT)
        raise Boom(item)

    policy = RetryPolicy(attempts=3, backoff=0, jitter=0)
    c = WorkCoordinator(body, retry=policy, signals=bus, cancel_on_signals="stop")
    try:
        future = c.submit(1)
        wait_until(c, lambda core: core.running == 1)
        c.pause()  # the retry stays in the backlog once the first attempt fails
        release.set()
        wait_until(c, lambda core: core.npending == 1 and core.running == 0)
        bus.emit("stop")
        c.resume()  # dispatch: the cancel signal ends it before its body runs again
        with pytest.raises(SignalCancelledError):
            future.result(WAIT)
        (snap,) = c.get_snapshot()
        assert (snap.id, snap.attempts) == (future.operation_id, 1)
        assert runs == [1]
    finally:
        c.close(WAIT)
        bus.close()


def test_the_slot_is_free_and_the_item_pending_while_it_waits():
    """A retrying item frees its slot (others run), counts as pending and leaves the window."""
    c, _, started = waiting_coordinator()
    try:
        first = c.submit(0)
        wait_until(c, lambda core: core.npending == 1 and core.running == 0)
        assert c.submit(1).result(WAIT) is None  # ran while item 0 waits
        s = c.stats()
        assert (s.pending_count, s.active_count, s.total_completed) == (1, 0, 1)
        assert s.total_enqueued == s.pending_count + s.total_completed
        assert first.operation_id not in {snap.id for snap in c.get_snapshot()}
        assert c.get_running() == ()
        assert c.pin(first.operation_id) is False
        assert started == [0, 1]
    finally:
        c.close(WAIT)


@pytest.mark.parametrize("how", ["cancel_operation", "future.cancel", "cancel"])
def test_an_item_waiting_for_its_retry_can_be_cancelled(how: str):
    """Cancelled while it waits out its backoff, an item never runs again; counted cancelled."""
    c, _, started = waiting_coordinator()
    try:
        future = c.submit(0)
        wait_until(c, lambda core: core.npending == 1 and core.running == 0)
        if how == "cancel_operation":
            assert c.cancel_operation(future.operation_id) is True
            assert c.cancel_operation(future.operation_id) is False
        elif how == "future.cancel":
            assert future.cancel() is True
        else:
            c.cancel()
        assert future.cancelled() or isinstance(future.exception(WAIT), Exception)
        s = c.stats()
        assert (s.pending_count, s.total_cancelled, s.total_failed) == (0, 1, 0)
        if how != "cancel":
            assert c.submit(5).result(WAIT) is None
        c.complete()
        c.drain(WAIT)
        assert started.count(0) == 1
    finally:
        c.close(WAIT)


def test_retry_after_is_honoured():
    """An error's retry_after holds the next attempt back at least that long."""
    times: list[float] = []

    def body(_item: int) -> None:
        times.append(time.monotonic())
        if len(times) == 1:
            raise Throttled(0.2)

    with WorkCoordinator(body, retry=RetryPolicy(backoff=0.0, jitter=0.0)) as c:
        assert c.submit(1).result(WAIT) is None
        assert len(times) == 2
        assert times[1] - times[0] >= 0.2 - 0.01  # a lower bound: timers never ring early


def test_retry_after_is_capped_by_max_backoff():
    """A retry_after of an hour waits max_backoff instead (the item still finishes)."""
    runs: list[int] = []

    def body(_item: int) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise Throttled(3600.0)

    with WorkCoordinator(body, retry=RetryPolicy(max_backoff=0.01)) as c:
        assert c.submit(1).result(WAIT) is None
        assert len(runs) == 2


def test_a_timed_out_attempt_is_retried_and_the_deadline_is_per_attempt():
    """A coroutine attempt past item_timeout fails with OperationTimeoutError and is retried."""
    runs: list[int] = []

    async def body(_item: int) -> str:
        runs.append(1)
        if len(runs) == 1:
            await asyncio.sleep(WAIT * 10)
        await asyncio.sleep(0.03)  # well within a fresh deadline
        return "ok"

    with ResultCoordinator(body, item_timeout=0.1, retry=FAST) as c:
        assert c.submit(1).result(WAIT) == "ok"
        assert c.get_snapshot()[0].attempts == 2
        assert c.stats().total_completed == 1


def test_a_timeout_outside_retry_on_is_final():
    """retry_on without OperationTimeoutError leaves a timed-out operation failed."""

    async def body(_item: int) -> None:
        await asyncio.sleep(WAIT * 10)

    policy = RetryPolicy(retry_on=(Boom,), backoff=0)
    with WorkCoordinator(body, item_timeout=0.05, retry=policy) as c:
        with pytest.raises(OperationTimeoutError):
            c.submit(1).result(WAIT)
        assert c.get_failed()[0].attempts == 1


def test_the_late_outcome_of_an_abandoned_attempt_is_ignored_when_retried():
    """An abandoned attempt's body returns after the retry succeeded: nothing changes."""
    gate = threading.Event()
    returned = threading.Event()
    runs: list[int] = []

    def body(_item: int) -> None:
        runs.append(1)
        if len(runs) == 1:
            gate.wait(WAIT)
            returned.set()
            raise Boom("late")

    c = WorkCoordinator(body, item_timeout=0.05, retry=FAST, max_concurrency=1)
    try:
        assert c.submit(1).result(WAIT) is None
        assert c.stats().abandoned_threads == 1
        gate.set()
        assert returned.wait(WAIT)
        c.complete()
        c.drain(WAIT)
        s = c.stats()
        assert (s.total_completed, s.total_failed, s.total_enqueued) == (1, 0, 1)
    finally:
        gate.set()
        c.close(WAIT)


def test_a_retrying_keyed_item_holds_its_key():
    """Items of one key start in enqueue order: a later item never overtakes a retry."""
    order: list[str] = []
    failed_once: set[str] = set()

    def body(item: str) -> None:
        order.append(item)
        if item.endswith("1") and item not in failed_once:
            failed_once.add(item)
            raise Boom(item)

    policy = RetryPolicy(backoff=0.05, jitter=0.0)
    with KeyedWorkCoordinator(lambda item: item[0], body, retry=policy, max_concurrency=4) as c:
        for item in ("a1", "a2", "a3", "b1", "b2"):
            c.enqueue(item)
        wait_until(c, lambda core: core.npending == 0 and core.running == 0)
        assert [i for i in order if i[0] == "a"] == ["a1", "a1", "a2", "a3"]
        assert [i for i in order if i[0] == "b"] == ["b1", "b1", "b2"]


def test_a_retrying_keyed_item_counts_as_its_keys_pending():
    """get_pending_count_for_key includes an item waiting out its backoff."""
    gate = threading.Event()

    def body(item: str) -> None:
        if item == "a1":
            raise Throttled(60.0)
        gate.wait(WAIT)

    c = KeyedWorkCoordinator(
        lambda item: item[0], body, retry=RetryPolicy(max_backoff=60.0), max_concurrency=2
    )
    try:
        c.enqueue("a1")
        c.enqueue("a2")
        wait_until(c, lambda core: core.npending == 2)
        assert c.get_pending_count_for_key("a") == 2
        assert c.pending_count == 2
    finally:
        gate.set()
        c.close(WAIT)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    attempts=st.integers(1, 4),
    failures=st.lists(st.integers(0, 5), min_size=1, max_size=6),
    use_async=st.booleans(),
    keyed=st.booleans(),
    limit=st.integers(1, 3),
    backoff=st.sampled_from([0.0, 0.001]),
    jitter=st.sampled_from([0.0, 0.5]),
)
def test_retries_never_exceed_attempts_and_count_once(
    attempts: int,
    failures: list[int],
    use_async: bool,
    keyed: bool,
    limit: int,
    backoff: float,
    jitter: float,
):
    """No operation runs more than `attempts` times; each counts once, in the right counter."""
    runs: Counter[int] = Counter()
    lock = threading.Lock()

    def attempt(item: tuple[int, int]) -> None:
        with lock:
            op_id = current_operation().id
            runs[op_id] += 1
            n = runs[op_id]
        if n <= item[1]:
            raise Boom(item)

    async def async_body(item: tuple[int, int]) -> None:
        await asyncio.sleep(0)
        attempt(item)

    body: Any = async_body if use_async else attempt
    policy = RetryPolicy(attempts=attempts, backoff=backoff, jitter=jitter)
    options: dict[str, Any] = {"retry": policy, "max_concurrency": limit}
    c: Any = (
        KeyedWorkCoordinator(lambda item: item[0] % 2, body, **options)
        if keyed
        else WorkCoordinator(body, **options)
    )
    with c:
        ids = [c.enqueue((index, f)) for index, f in enumerate(failures)]
        c.complete()
        c.drain(WAIT)
        s = c.stats()
        snaps = {snap.id: snap for snap in c.get_snapshot()}
    for op_id, f in zip(ids, failures, strict=True):
        expected = min(f + 1, attempts)
        assert runs[op_id] == expected
        assert snaps[op_id].attempts == expected
        assert (snaps[op_id].error is None) == (f < attempts)
    assert s.total_enqueued == len(failures)
    assert s.total_completed == sum(1 for f in failures if f < attempts)
    assert s.total_failed == sum(1 for f in failures if f >= attempts)
    assert s.total_enqueued == s.total_completed + s.total_failed
    assert s.pending_count == s.active_count == s.total_cancelled == 0


def test_a_long_retry_wait_does_not_delay_a_later_deadline():
    """The one timer rings for the earliest due time: a deadline before a retry's due."""

    async def body(item: int) -> None:
        if item == 0:
            raise Throttled(60.0)
        await asyncio.sleep(WAIT * 10)

    c = WorkCoordinator(
        body, item_timeout=0.05, retry=RetryPolicy(max_backoff=60.0), max_concurrency=2
    )
    try:
        c.enqueue(0)

        def armed_for_the_retry_only(core: Any) -> bool:
            timer = core.attempts.alarm.timer
            return (
                core.npending == 1
                and not core.attempts.deadlines
                and timer is not None
                and timer.deadline > time.monotonic() + WAIT
            )

        wait_until(c, armed_for_the_retry_only)  # item 0's own deadline is gone
        with pytest.raises(OperationTimeoutError):
            c.submit(1).result(WAIT)  # due in 0.05 s; the retry of item 0 in 60 s
    finally:
        c.close(WAIT)
