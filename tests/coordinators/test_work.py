"""WorkCoordinator: intake, limits, counters, window, control, lifecycle (SPEC section 4)."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import pykka
import pytest
from pykka._envelope import Envelope

from ephemeral_actors import (
    CoordinatorClosedError,
    CoordinatorFaultedError,
    CoordinatorFullError,
    CoordinatorNotCompletedError,
    CoordinatorOptions,
    DynamicConcurrencyDisabledError,
    KeyedWorkCoordinator,
    NoCurrentOperationError,
    OperationCancelledError,
    ResultCoordinator,
    RetryPolicy,
    WorkCoordinator,
    WorkerCrashError,
    current_operation,
)
from ephemeral_actors import messages as m
from ephemeral_actors.testing import crash_worker, library_threads, use_clock
from tests.conftest import WAIT, collector_off, traceback_length


class Tracker:
    """Counts bodies running at once and remembers the highest count seen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.current = 0
        self.peak = 0
        self.started: list[Any] = []

    def enter(self, item: Any) -> None:
        with self.cond:
            self.current += 1
            self.peak = max(self.peak, self.current)
            self.started.append(item)
            self.cond.notify_all()

    def leave(self) -> None:
        with self.cond:
            self.current -= 1
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool]) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, WAIT), "condition not reached in time"


def gated(tracker: Tracker, gate: threading.Event) -> Callable[[Any], None]:
    def body(item: Any) -> None:
        tracker.enter(item)
        try:
            assert gate.wait(WAIT)
        finally:
            tracker.leave()

    return body


def invariant_holds(c: WorkCoordinator[Any]) -> bool:
    s = c.stats()
    return s.total_enqueued == (
        s.pending_count + s.active_count + s.total_completed + s.total_failed + s.total_cancelled
    )


# -- intake and order -------------------------------------------------------------------


def test_items_start_in_enqueue_order(make):
    """With one worker, items start in the order they were enqueued (FIFO)."""
    seen: list[int] = []
    c = make(seen.append, max_concurrency=1)
    for i in range(100):
        c.enqueue(i)
    c.complete()
    c.drain(WAIT)
    assert seen == list(range(100))


def test_enqueue_returns_unique_positive_63_bit_ids(make):
    """Operation ids are positive, fit 63 bits and never repeat."""
    c = make(lambda _: None, max_tracked_operations=1000)
    ids = [c.enqueue(i) for i in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(0 < i < 2**63 for i in ids)


def test_limit_is_reached_and_never_exceeded(make):
    """max_concurrency bodies run at once, and never more."""
    tracker, gate = Tracker(), threading.Event()
    c = make(gated(tracker, gate), max_concurrency=4)
    for i in range(20):
        c.enqueue(i)
    tracker.wait_for(lambda: tracker.current == 4)
    assert c.active_count == 4
    assert c.pending_count == 16
    gate.set()
    c.complete()
    c.drain(WAIT)
    assert tracker.peak == 4
    assert c.total_completed == 20


def test_backlog_bound_blocks_then_times_out(make):
    """A full backlog makes enqueue wait, then raise CoordinatorFullError."""
    tracker, gate = Tracker(), threading.Event()
    c = make(gated(tracker, gate), max_concurrency=1, max_tracked_operations=2)
    c.enqueue(0)
    tracker.wait_for(lambda: tracker.current == 1)
    c.enqueue(1)
    c.enqueue(2)
    with pytest.raises(CoordinatorFullError, match="backlog"):
        c.enqueue(3, timeout=0.05)
    assert c.try_enqueue(3) is False
    assert c.total_enqueued == 3
    gate.set()


def test_blocked_enqueue_proceeds_when_space_frees(make):
    """A producer waiting for backlog space is let in once an item starts."""
    tracker, gate = Tracker(), threading.Event()
    c = make(gated(tracker, gate), max_concurrency=1, max_tracked_operations=1)
    c.enqueue(0)
    tracker.wait_for(lambda: tracker.current == 1)
    c.enqueue(1)
    entered = threading.Event()
    result: list[int] = []

    def producer() -> None:
        entered.set()
        result.append(c.enqueue(2))

    t = threading.Thread(target=producer)
    t.start()
    assert entered.wait(WAIT)
    assert not result
    gate.set()
    t.join(WAIT)
    assert len(result) == 1
    c.complete()
    c.drain(WAIT)
    assert c.total_completed == 3


def test_enqueue_many_counts_accepted(make):
    """enqueue_many accepts every item and says how many."""
    c = make(lambda _: None)
    assert c.enqueue_many(range(500)) == 500
    c.complete()
    c.drain(WAIT)
    assert c.total_completed == 500


def _draw_waits(c: Any) -> None:
    """Return once an `enqueue_many` collection waits for backlog space."""
    assert c._core.wait_for(
        lambda: any(type(w).__name__ == "Draw" for w in c._core.space_waiters),
        time.monotonic() + WAIT,
    )


def test_enqueue_many_of_a_collection_is_one_message(make):
    """A list goes to the supervisor as one message, not one per item (SPEC 14)."""
    c = make(lambda _: None, max_tracked_operations=1000)
    c.pause()
    before = c.actor_stats()[0].messages_processed
    assert c.enqueue_many(list(range(300))) == 300
    # A read is itself a message, counted by the next read: the first read, the draw.
    assert c.actor_stats()[0].messages_processed - before == 2
    assert c.pending_count == 300


def test_enqueue_many_of_a_collection_waits_for_space_and_keeps_order(make):
    """Past the backlog bound the rest is taken as space frees: in order, never over it."""
    ran: list[int] = []
    pending_seen: list[int] = []

    def body(item: int) -> None:
        ran.append(item)
        pending_seen.append(c.pending_count)

    c = make(body, max_concurrency=1, max_tracked_operations=4)
    assert c.enqueue_many(range(200)) == 200
    c.complete()
    c.drain(WAIT)
    assert ran == list(range(200))
    assert max(pending_seen) <= 4


def test_an_enqueue_waiting_behind_a_collection_is_not_starved(make):
    """A collection takes its turn for space as one producer does: an item enqueued
    while it waits is accepted at the next free space, not after the whole collection."""
    ran: list[Any] = []
    first = threading.Event()

    def body(item: Any) -> None:
        ran.append(item)
        first.set()

    c = make(body, max_concurrency=1, max_tracked_operations=4)
    c.pause()
    many = threading.Thread(target=c.enqueue_many, args=(range(200),))
    many.start()
    _draw_waits(c)
    other = threading.Thread(target=c.enqueue, args=("other",))
    other.start()
    assert c._core.wait_for(lambda: len(c._core.space_waiters) == 2, time.monotonic() + WAIT)
    c.resume()
    many.join(WAIT)
    other.join(WAIT)
    c.complete()
    c.drain(WAIT)
    assert first.is_set()
    assert len(ran) == 201
    assert ran.index("other") < 20, ran.index("other")


@pytest.mark.parametrize("end", ["complete", "cancel"])
def test_enqueue_many_of_a_collection_returns_the_count_when_intake_closes(make, end):
    """Intake closing while the rest waits for space: the count accepted, nothing more."""
    c = make(lambda _: None, max_concurrency=1, max_tracked_operations=4)
    c.pause()
    counted: list[int] = []
    many = threading.Thread(target=lambda: counted.append(c.enqueue_many(list(range(100)))))
    many.start()
    _draw_waits(c)
    getattr(c, end)()
    many.join(WAIT)
    assert counted == [4]
    assert c.total_enqueued == 4


def test_enqueue_many_of_a_collection_after_close_raises(make):
    """Nothing accepted: the refusal is raised, as for a single item."""
    c = make(lambda _: None)
    c.cancel()
    with pytest.raises(CoordinatorClosedError):
        c.enqueue_many(list(range(10)))
    assert c.total_enqueued == 0


def test_a_collection_that_changes_while_read_raises_and_the_coordinator_goes_on(make):
    """A dict that grows while its items wait for space raises from `enqueue_many` (as
    iterating it would); what was accepted runs, and the supervisor keeps working."""
    items = {i: i for i in range(10)}
    c = make(lambda _: None, max_concurrency=1, max_tracked_operations=2)
    c.pause()
    raised: list[BaseException] = []

    def produce() -> None:
        try:
            c.enqueue_many(items)
        except RuntimeError as exc:
            raised.append(exc)

    many = threading.Thread(target=produce)
    many.start()
    _draw_waits(c)
    items[99] = 99  # the dict's iterator, held by the waiting draw, is now invalid
    c.resume()
    many.join(WAIT)
    assert [str(e) for e in raised] == ["dictionary changed size during iteration"]
    assert c.total_enqueued == 2
    c.enqueue("after")
    c.complete()
    c.drain(WAIT)
    assert c.total_completed == 3


def test_a_body_enqueue_many_never_waits_for_space_it_frees(make):
    """From a body of the same coordinator a collection is taken at once, past the
    bound: waiting for space only the bodies free would deadlock (SPEC 15)."""
    counts: list[int] = []
    enqueued = threading.Event()

    def body(item: int) -> None:
        if item == 0:
            counts.append(c.enqueue_many(list(range(1, 50))))
            enqueued.set()

    c = make(body, max_concurrency=1, max_tracked_operations=2)
    c.enqueue(0)
    assert enqueued.wait(WAIT)
    c.complete()
    c.drain(WAIT)
    assert counts == [49]
    assert c.total_completed == 50


def test_a_supervisor_crash_while_taking_a_collection_answers_the_caller(make, monkeypatch):
    """The supervisor dying in the turn that takes the first items (an interrupt there,
    say) raises in `enqueue_many`, which does not wait for an answer for ever."""
    from ephemeral_actors._coordinators import _supervisor  # noqa: PLC0415

    c = make(lambda _: None)
    c.pause()

    def broken(*_: object) -> NoReturn:
        raise RuntimeError("boom")

    monkeypatch.setattr(_supervisor, "Operation", broken)  # the turn that takes them makes records
    with pytest.raises(RuntimeError, match="boom"):
        c.enqueue_many(list(range(10)))
    assert c.is_faulted
    with pytest.raises(CoordinatorFaultedError):
        c.enqueue_many(list(range(10)))


def test_enqueue_many_interrupted_while_waiting_takes_no_more(make):
    """An interrupt in the waiting caller withdraws the collection: only what was
    accepted runs."""
    c = make(lambda _: None, max_concurrency=1, max_tracked_operations=3)
    c.pause()

    class Interrupted(BaseException):
        pass

    interrupted = threading.Event()

    def interrupt(*_: Any) -> None:
        if not interrupted.is_set():  # once: a repeated signal must not hit the withdraw
            interrupted.set()
            raise Interrupted

    def send_when_waiting() -> None:
        # Only once the caller waits on its answer (inside `Reply.wait`): a signal in the
        # turn that took the first items would interrupt the supervisor, not the wait.
        _draw_waits(c)
        draw = next(w for w in c._core.space_waiters if type(w).__name__ == "Draw")
        deadline = time.monotonic() + WAIT
        while draw.waiter is None:  # set by the waiting thread: no event tells of it
            assert time.monotonic() < deadline
            time.sleep(0.005)
        # To the main thread itself (one the kernel hands to another thread would not
        # wake it), and again until its handler ran: a signal that lands just before
        # the lock's wait begins is handled only after the wait, which never ends.
        main = threading.main_thread().ident
        assert main is not None
        while not interrupted.wait(0.05):
            assert time.monotonic() < deadline
            signal.pthread_kill(main, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, interrupt)
    sender = threading.Thread(target=send_when_waiting)
    try:
        sender.start()
        with pytest.raises(Interrupted):
            c.enqueue_many(list(range(100)))
    finally:
        sender.join(WAIT)
        signal.signal(signal.SIGUSR1, previous)
    assert not any(type(w).__name__ == "Draw" for w in c._core.space_waiters)
    c.resume()
    c.complete()
    c.drain(WAIT)
    assert c.total_enqueued == c.total_completed == 3


def test_enqueue_after_complete_raises_and_try_enqueue_refuses(make):
    """Intake is closed after complete(): enqueue raises, try_enqueue returns False."""
    c = make(lambda _: None)
    c.complete()
    with pytest.raises(CoordinatorClosedError, match="completing"):
        c.enqueue(1)
    assert c.try_enqueue(1) is False
    with pytest.raises(CoordinatorClosedError):
        c.enqueue_many([1, 2])


# -- counters -------------------------------------------------------------------------


def test_counters_split_completed_failed_cancelled(make):
    """Completed, failed and cancelled are counted apart and add up."""

    def body(item: int) -> None:
        if item % 3 == 0:
            raise ValueError(item)

    c = make(body)
    for i in range(30):
        c.enqueue(i)
    c.complete()
    c.drain(WAIT)
    s = c.stats()
    assert (s.total_completed, s.total_failed, s.total_cancelled) == (20, 10, 0)
    assert invariant_holds(c)
    assert s.is_completed and s.is_drained


def test_counters_add_up_while_work_runs(make):
    """The counter invariant holds at every instant a reader looks."""
    c = make(lambda i: None if i % 2 else (_ for _ in ()).throw(ValueError()), max_concurrency=4)
    stop = threading.Event()
    broken: list[Any] = []

    def reader() -> None:
        while not stop.is_set():
            s = c.stats()
            total = s.pending_count + s.active_count + s.total_ended
            if s.total_enqueued != total:
                broken.append(s)

    t = threading.Thread(target=reader)
    t.start()
    for i in range(3000):
        c.enqueue(i)
    c.complete()
    c.drain(WAIT)
    stop.set()
    t.join(WAIT)
    assert not broken
    assert c.total_completed + c.total_failed == 3000


# -- submit ---------------------------------------------------------------------------


def test_submit_future_resolves_to_none(make):
    """submit() returns a pykka future that resolves to None for work coordinators."""
    c = make(lambda x: x * 2)
    future = c.submit(21)
    assert isinstance(future, pykka.Future)
    assert future.get(timeout=WAIT) is None


def test_submit_future_raises_body_exception_with_traceback(make):
    """The caller gets the original exception with its traceback; the window a clean copy."""

    def body(item: int) -> None:
        raise KeyError(item)

    c = make(body)
    with pytest.raises(KeyError) as info:
        c.submit(7).get(timeout=WAIT)
    assert info.value.args == (7,)
    assert info.value.__traceback__ is not None
    (failed,) = c.get_failed()
    assert isinstance(failed.error, KeyError)
    assert failed.error.__traceback__ is None


def test_window_error_has_no_traceback(make):
    """Recorded errors carry no traceback (frames would retain payloads)."""
    secret = object()

    def body(item: object) -> None:
        raise RuntimeError("boom")

    c = make(body)
    c.enqueue(secret)
    c.complete()
    c.drain(WAIT)
    (snap,) = c.get_failed()
    assert snap.error is not None
    assert snap.error.__traceback__ is None
    assert snap.is_faulted
    assert snap.duration is not None and snap.duration >= 0


# -- window ---------------------------------------------------------------------------


def test_window_keeps_newest_within_bound_and_pins_survive(make):
    """Size trim keeps the newest finished operations; pinned ones survive."""
    first: list[int] = []
    c = make(lambda _: None, max_concurrency=1, max_tracked_operations=5)
    first.append(c.enqueue("first"))
    c.enqueue("x")
    c.submit("y").get(timeout=WAIT)
    assert c.pin(first[0]) is True
    ids = [c.enqueue(i) for i in range(20)]
    last = c.submit("last")
    last.get(timeout=WAIT)
    snap = c.get_snapshot()
    assert len(snap) == 5
    assert snap[0].id == first[0] and snap[0].is_pinned
    assert ids[-1] in {s.id for s in snap}
    assert ids[0] not in {s.id for s in snap}
    assert c.unpin(first[0]) is True
    c.submit("one more").get(timeout=WAIT)
    assert first[0] not in {s.id for s in c.get_snapshot()}
    assert len(c.get_snapshot()) == 5
    assert c.pin(12345) is False


def test_running_operations_are_never_trimmed(make):
    """get_running() shows every running operation even past the window bound."""
    tracker, gate = Tracker(), threading.Event()
    c = make(gated(tracker, gate), max_concurrency=6, max_tracked_operations=2)
    for i in range(6):
        c.enqueue(i)
    tracker.wait_for(lambda: tracker.current == 6)
    assert len(c.get_running()) == 6
    gate.set()
    c.complete()
    c.drain(WAIT)
    assert len(c.get_snapshot()) == 2


def test_age_trim_applies_on_read(make, monkeypatch):
    """Finished, unpinned operations older than the lifetime vanish, even with no activity."""
    clock = [1_000_000.0]
    with use_clock(lambda: clock[0]):
        c = make(lambda _: None, max_operation_lifetime=10)
    pinned = c.submit("a")
    pinned.get(timeout=WAIT)
    keep = c.get_snapshot()[0].id
    c.pin(keep)
    c.submit("b").get(timeout=WAIT)
    assert len(c.get_snapshot()) == 2
    clock[0] += 11
    snap = c.get_snapshot()
    assert [s.id for s in snap] == [keep]


def test_evict_removes_running_op_without_changing_counters(make):
    """evict() drops even a running operation; it still finishes and counts."""
    tracker, gate = Tracker(), threading.Event()
    c = make(gated(tracker, gate), max_concurrency=1)
    op_id = c.enqueue(1)
    tracker.wait_for(lambda: tracker.current == 1)
    assert c.evict(op_id) is True
    assert c.get_snapshot() == ()
    assert c.evict(op_id) is False
    gate.set()
    c.complete()
    c.drain(WAIT)
    assert c.total_completed == 1
    assert c.get_snapshot() == ()


# -- control --------------------------------------------------------------------------


def test_pause_holds_new_starts_and_resume_releases(make):
    """pause() starts nothing new while intake continues; resume() starts the backlog."""
    started = threading.Event()
    c = make(lambda _: started.set(), max_concurrency=2)
    c.pause()
    assert c.is_paused
    for i in range(5):
        c.enqueue(i)
    assert not started.wait(0.2)
    assert (c.pending_count, c.active_count) == (5, 0)
    c.resume()
    c.complete()
    c.drain(WAIT)
    assert c.total_completed == 5


@pytest.mark.parametrize("keyed", [False, True])
def test_busy_workers_start_nothing_after_pause_returns(make, keyed):
    """Workers that report and take their next item in one turn still honour pause().

    Short bodies keep every worker on the path where the outcome turn hands the
    worker its next item; once pause() returns, no body may begin, so the bodies that
    ran are exactly the items the counters say started, and the rest stay pending.
    """
    entered: list[int] = []
    many = threading.Event()

    def body(item: int) -> None:
        entered.append(item)
        if len(entered) == 300:
            many.set()
        elif len(entered) > 300:
            # Past the 300th, each body takes a moment (releasing the GIL, as real work
            # does): otherwise the workers can run all 5,000 before the test thread
            # gets the GIL back to call pause().
            time.sleep(0.0002)

    options = {"key": (lambda i: i % 50)} if keyed else {}
    c = make(body, max_concurrency=4, max_tracked_operations=5_000, **options)
    for i in range(5_000):
        c.enqueue(i)
    assert many.wait(WAIT)
    c.pause()
    started = c.total_enqueued - c.pending_count
    deadline = time.monotonic() + WAIT
    while c.active_count and time.monotonic() < deadline:  # no event marks "all reported"
        time.sleep(0.001)
    assert c.active_count == 0
    assert len(entered) == started == c.total_completed
    assert started < 5_000, "every item ran before pause(): the test proved nothing"
    assert c.pending_count == 5_000 - started
    c.resume()
    c.complete()
    c.drain(WAIT)
    assert sorted(entered) == list(range(5_000))


def test_set_max_concurrency_requires_opt_in(make):
    """Without enable_dynamic_concurrency the limit cannot change."""
    c = make(lambda _: None)
    with pytest.raises(DynamicConcurrencyDisabledError):
        c.set_max_concurrency(3)


@pytest.mark.parametrize("bad", [0, -1])
def test_set_max_concurrency_rejects_below_one(make, bad):
    """A limit below one is a ValueError naming the argument."""
    c = make(lambda _: None, enable_dynamic_concurrency=True)
    with pytest.raises(ValueError, match="max_concurrency"):
        c.set_max_concurrency(bad)


def test_lowered_limit_holds_under_sustained_backlog(make):
    """After lowering, no more than the new limit run, even with a backlog waiting."""
    tracker = Tracker()
    first_gate, later_gate = threading.Event(), threading.Event()
    lowered = threading.Event()

    def body(item: int) -> None:
        tracker.enter(item)
        try:
            assert (later_gate if lowered.is_set() else first_gate).wait(WAIT)
        finally:
            tracker.leave()

    c = make(body, max_concurrency=4, enable_dynamic_concurrency=True)
    for i in range(30):
        c.enqueue(i)
    tracker.wait_for(lambda: tracker.current == 4)
    c.set_max_concurrency(2)
    assert c.max_concurrency == 2
    lowered.set()
    first_gate.set()
    tracker.wait_for(lambda: len(tracker.started) >= 6 and tracker.current == 2)
    assert c.active_count == 2
    assert c.pending_count > 0
    with tracker.cond:
        assert not tracker.cond.wait_for(lambda: tracker.current > 2, 0.2)
    c.set_max_concurrency(5)
    tracker.wait_for(lambda: tracker.current == 5)
    later_gate.set()
    c.complete()
    c.drain(WAIT)
    assert c.total_completed == 30


def test_complete_and_cancel_are_idempotent(make):
    """Calling complete() and cancel() repeatedly changes nothing after the first."""
    c = make(lambda _: None)
    c.complete()
    c.complete()
    c.cancel()
    c.cancel()
    c.drain(WAIT)
    assert c.is_completed and c.is_drained


def test_cancel_drops_backlog_and_asks_running_to_cancel(make):
    """cancel() counts dropped items as cancelled and running bodies see the request."""
    running = threading.Event()

    def body(item: int) -> None:
        running.set()
        op = current_operation()
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            op.raise_if_cancelled()
            time.sleep(0.001)

    c = make(body, max_concurrency=1)
    futures = [c.submit(i) for i in range(5)]
    assert running.wait(WAIT)
    c.cancel()
    c.drain(WAIT)
    s = c.stats()
    assert s.total_cancelled == 5
    assert s.total_failed == 0
    for future in futures:
        with pytest.raises(OperationCancelledError):
            future.get(timeout=WAIT)
    (snap,) = c.get_failed()
    assert isinstance(snap.error, OperationCancelledError)


def test_operation_cancelled_without_request_is_a_failure(make):
    """A body raising OperationCancelledError on its own is a failure, not a cancellation."""

    def body(_: int) -> None:
        raise OperationCancelledError("not asked")

    c = make(body)
    c.enqueue(1)
    c.complete()
    c.drain(WAIT)
    assert (c.total_failed, c.total_cancelled) == (1, 0)


# -- drain and close ------------------------------------------------------------------


def test_drain_needs_complete(make):
    """drain() before complete() raises CoordinatorNotCompletedError."""
    c = make(lambda _: None)
    with pytest.raises(CoordinatorNotCompletedError):
        c.drain()


def test_drain_times_out(make):
    """drain(timeout) raises TimeoutError while work is still running."""
    tracker, gate = Tracker(), threading.Event()
    c = make(gated(tracker, gate))
    c.enqueue(1)
    c.complete()
    with pytest.raises(TimeoutError):
        c.drain(timeout=0.05)
    gate.set()
    c.drain(WAIT)


def test_close_returns_in_time_despite_a_body_that_never_returns(make, caplog):
    """close(timeout) abandons a stuck body instead of hanging; its thread ends later."""
    tracker, gate = Tracker(), threading.Event()
    c = make(gated(tracker, gate), max_concurrency=2)
    c.enqueue(1)
    tracker.wait_for(lambda: tracker.current == 1)
    t0 = time.monotonic()
    c.close(timeout=0.2)
    assert time.monotonic() - t0 < WAIT
    assert "abandoned" in caplog.text
    assert c.is_completed
    gate.set()  # the abandoned thread ends; the autouse fixture checks it goes


def test_no_thread_outlives_close():
    """Every thread a coordinator started is gone once close() returns."""
    before = set(library_threads())
    c = WorkCoordinator(lambda _: None, CoordinatorOptions(max_concurrency=8))
    for i in range(100):
        c.enqueue(i)
    assert set(library_threads()) - before
    c.close()
    assert set(library_threads()) - before == set()


def test_reads_keep_answering_after_close(make):
    """Counters, stats and window queries answer the final state after close()."""
    c = make(lambda _: None)
    c.enqueue(1)
    c.complete()
    c.drain(WAIT)
    c.close()
    assert c.total_completed == 1
    assert c.stats().is_drained
    assert len(c.get_completed()) == 1
    assert c.pin(c.get_snapshot()[0].id) is True
    with pytest.raises(CoordinatorClosedError, match="closed|cancelled"):
        c.enqueue(2)


@pytest.mark.parametrize("kind", ["work", "result", "async", "keyed"])
def test_a_closed_unused_coordinator_is_freed_without_the_garbage_collector(kind: str) -> None:
    """Closing makes what points back at the core point weakly, so a coordinator that
    never ran an item is freed by reference counting once its facade is dropped, not
    left to the collector (whose work was an eighth of creating and closing one)."""

    async def abody(_: object) -> None:
        return None

    with collector_off():  # any cycle left would survive to the assertion
        c: Any
        if kind == "work":
            c = WorkCoordinator(lambda _: None, max_concurrency=8)
        elif kind == "result":
            c = ResultCoordinator(lambda _: None, max_concurrency=8)
        elif kind == "keyed":  # its backlog refers back to the core too
            c = KeyedWorkCoordinator(lambda item: item, lambda _: None, max_concurrency=8)
        else:
            c = WorkCoordinator(abody, max_concurrency=8)
        c.close()
        core = weakref.ref(c._core)
        supervisor = weakref.ref(c._core.supervisor)
        del c
        assert core() is None
        assert supervisor() is None


def _ran(kind: str) -> tuple[Any, list[Any]]:
    """A coordinator of `kind` that ran items (one fails) and was closed; what a user
    might still hold (futures, the operations its bodies saw)."""

    def body(item: int) -> int:
        seen.append(current_operation())
        if item == 3:
            raise ValueError("three")
        return item

    async def abody(item: int) -> int:
        return body(item)

    seen: list[Any] = []
    held: list[Any] = []
    c: Any
    if kind == "result":
        c = ResultCoordinator(body, max_concurrency=4)
        held += [c.submit(i) for i in range(40)]
    elif kind == "async":

        async def run() -> Any:
            coordinator = WorkCoordinator(abody, max_concurrency=4)
            for i in range(40):
                coordinator.enqueue(i)
            coordinator.complete()
            await coordinator.drain_async()
            coordinator.close(WAIT)
            return coordinator

        c = asyncio.run(run())
        return c, seen
    elif kind == "keyed":
        c = KeyedWorkCoordinator(lambda i: i % 7, body, max_concurrency=4, key_idle_timeout=0.001)
        for i in range(40):
            c.enqueue(i)
    elif kind == "source":
        c = WorkCoordinator.from_iterable(range(40), body, max_concurrency=4)
    elif kind == "deadlines and retries":
        c = WorkCoordinator(
            body,
            max_concurrency=4,
            item_timeout=WAIT,
            retry=RetryPolicy(attempts=2, backoff=0.001),
        )
        for i in range(40):
            c.enqueue(i)
    elif kind == "delays and rate limit":
        c = ResultCoordinator(body, max_concurrency=4, rate_limit=100_000.0, rate_burst=40)
        done = [c.submit(i, delay=0.001 if i % 2 else None) for i in range(40)]
        for future in done:
            future.exception(WAIT)
        held.append(c.submit(99, delay=WAIT))  # its timer is armed when close cancels it
        c.close(WAIT)
        assert isinstance(held[0].exception(0), OperationCancelledError)
        return c, held
    elif kind == "observers":
        c = WorkCoordinator(body, max_concurrency=4, on_sample=lambda _: None)
        c.add_observer(lambda _: None)
        for i in range(40):
            c.enqueue(i)
    else:
        c = WorkCoordinator(body, max_concurrency=4)
        for i in range(40):
            c.enqueue(i)
    c.complete()
    c.drain(WAIT)
    c.close(WAIT)
    assert c.stats().total_failed >= 1
    held += seen
    return c, held


@pytest.mark.parametrize(
    "kind",
    [
        "work",
        "result",
        "async",
        "keyed",
        "source",
        "deadlines and retries",
        "delays and rate limit",
        "observers",
    ],
)
def test_a_closed_coordinator_that_ran_items_is_freed_without_the_garbage_collector(
    kind: str,
) -> None:
    """Its records (kept for queries, and perhaps by the user), its actors and its
    timers refer back to a closed core weakly: once the facade is dropped, reference
    counting frees the coordinator, with no cycle left for the collector."""
    with collector_off():  # any cycle left would survive to the assertion
        c, held = _ran(kind)
        assert c.get_snapshot()  # the records answer queries as before
        core = weakref.ref(c._core)
        del c
        assert core() is None
        del held
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            found = gc.collect()
            garbage = [type(o).__qualname__ for o in gc.garbage]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        assert found == 0, garbage


def test_an_operation_that_outlives_its_coordinator_answers_without_it() -> None:
    """A record held past its coordinator (closed, and freed) still answers what it
    holds itself; what needs the coordinator says it did nothing."""
    with collector_off():
        ops: list[Any] = []

        def body(item: int) -> int:
            op = current_operation()
            op.signal("seen.here")
            ops.append(op)
            return item

        c = ResultCoordinator(body, max_concurrency=1)
        future = c.submit(1)
        assert future.result(WAIT) == 1
        c.close(WAIT)
        core = weakref.ref(c._core)
        del c
        assert core() is None
        (op,) = ops
        assert op.signal("later") is False
        assert op.emit_caused("later", op._signals[0]) is False
        assert op.has_signal("seen.here")
        assert op.retract_matching("seen.*") == 1
        assert not op.has_signal("seen.here")
        assert op.cancelled is False
        assert future.cancel() is False
        assert future.result(0) == 1


@pytest.mark.parametrize("timer", ["deadline alarm", "schedule", "keyed passivation"])
def test_a_timer_that_rings_after_its_coordinator_is_gone_does_nothing(timer: str) -> None:
    """Timers ring on a dispatcher thread; one that fired as its coordinator closed may
    ring after the core was freed (its link is weak then): it stops there instead of
    raising on the dispatcher's thread."""
    c: Any
    if timer == "keyed passivation":
        c = KeyedWorkCoordinator(lambda i: i, lambda _: None)  # no fixture: it must be freed
    else:
        c = WorkCoordinator(lambda _: None, max_concurrency=1, item_timeout=WAIT, rate_limit=1e6)
    c.submit(1).result(WAIT)
    core_ = c._core
    if timer == "deadline alarm":
        ring = core_.attempts.alarm._ring
    elif timer == "schedule":
        ring = functools.partial(core_.schedule._ring, core_.schedule.generation)
    else:
        ring = core_.backlog._reap_due
    del core_
    core = weakref.ref(c._core)
    c.close(WAIT)
    del c
    gc.collect()
    assert core() is None
    ring()  # would raise ReferenceError from the dead link


def test_a_closed_coordinator_answers_as_before_through_its_weak_back_links(make):
    """After `close()` the mailbox, router, actor and inbox reach the core weakly: every
    read, a refused intake and the actor's refusals still answer as they did."""
    c = make(lambda _: None)
    ref = c.actor_ref
    c.close()
    assert c.stats().total_enqueued == 0
    assert c.actor_stats()
    assert c.get_snapshot() == ()
    with pytest.raises(CoordinatorClosedError):
        c.enqueue(1)
    with pytest.raises(CoordinatorClosedError):
        c.submit(1)
    assert c.try_enqueue(1) is False
    assert repr(c._core.supervisor).startswith("<Supervisor ")
    with pytest.raises(pykka.ActorDeadError):
        ref.tell(m.GetStats())
    with pytest.raises(pykka.ActorDeadError):
        ref.ask(m.GetStats())
    del c
    gc.collect()  # the facade's fixture may hold it: only the ref is ours now
    with pytest.raises(pykka.ActorDeadError):
        ref.ask(m.GetStats())


def test_a_tell_that_raced_a_close_is_refused_once_the_core_is_gone():
    """A `tell` passes Pykka's liveness test, then the coordinator closes and its facade
    goes before the message reaches the inbox: the inbox, which holds the closed core
    weakly, refuses it as Pykka refuses a stopped actor's (not with a ReferenceError)."""
    with collector_off():
        c = WorkCoordinator(lambda _: None, max_concurrency=2)
        inbox = c.actor_ref.actor_inbox
        c.close()
        del c
        with pytest.raises(pykka.ActorDeadError):
            inbox.put(Envelope(m.GetStats()))  # where the raced tell's `put` lands


def test_context_manager_completes_drains_and_closes():
    """Leaving a with-block normally processes everything and stops all threads."""
    seen: list[int] = []
    with WorkCoordinator(seen.append) as c:
        for i in range(50):
            c.enqueue(i)
    assert sorted(seen) == list(range(50))
    assert c.is_drained


def test_context_manager_closes_on_exception():
    """An exception in the with-block cancels and closes, and propagates."""
    tracker, gate = Tracker(), threading.Event()
    with pytest.raises(LookupError), WorkCoordinator(gated(tracker, gate)) as c:
        c.enqueue(1)
        c.enqueue(2)
        gate.set()
        raise LookupError
    assert c.is_completed


# -- bodies ---------------------------------------------------------------------------


def test_current_operation_inside_and_outside_bodies(make):
    """current_operation() gives the running operation's id in a body and raises elsewhere."""
    seen: list[int] = []
    c = make(lambda _: seen.append(current_operation().id))
    op_id = c.enqueue(1)
    c.complete()
    c.drain(WAIT)
    assert seen == [op_id]
    with pytest.raises(NoCurrentOperationError):
        current_operation()


def test_current_operation_in_contexts_a_body_copies_and_in_later_bodies(make):
    """Contexts a sync body copies see its operation; each later body sees its own.

    A thread worker keeps one cell in its context and writes each body's operation
    into it: `asyncio.to_thread` (a copied context, another thread) must still see
    the body's operation while the body waits for it, and no item may see another's.
    """
    import asyncio  # noqa: PLC0415 - only this test runs an event loop in a body

    seen: list[tuple[int, int, int]] = []

    def body(_: int) -> None:
        own = current_operation().id
        copied = asyncio.run(asyncio.to_thread(lambda: current_operation().id))
        seen.append((own, copied, current_operation().id))

    c = make(body)
    ids = [c.enqueue(i) for i in range(20)]
    c.complete()
    c.drain(WAIT)
    assert c.total_completed == 20
    assert sorted(own for own, _, _ in seen) == sorted(ids)
    assert all(own == copied == after for own, copied, after in seen)
    with pytest.raises(NoCurrentOperationError):
        current_operation()


@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt, GeneratorExit])
def test_base_exception_in_body_is_recorded_and_stops_nothing(make, exc_type):
    """A body raising SystemExit/KeyboardInterrupt fails its item; other actors live on."""

    class Bystander(pykka.ThreadingActor):
        def on_receive(self, message: Any) -> Any:
            return message

    other = make(lambda _: None)
    bystander = Bystander.start()
    try:

        def body(_: int) -> None:
            raise exc_type

        c = make(body)
        c.enqueue(1)
        c.complete()
        c.drain(WAIT)
        assert c.total_failed == 1
        assert isinstance(c.get_failed()[0].error, exc_type)
        assert bystander.ask("ping", timeout=WAIT) == "ping"
        assert other.submit(1).get(timeout=WAIT) is None
    finally:
        bystander.stop()


def test_sync_body_returning_coroutine_fails_clearly(make):
    """A plain function that returns a coroutine is a failure that says what to do."""

    async def inner() -> None:
        return None

    c = make(lambda _: inner())
    c.enqueue(1)
    c.complete()
    c.drain(WAIT)
    (snap,) = c.get_failed()
    assert "async def" in str(snap.error)


def test_body_must_be_callable():
    """A non-callable body is a TypeError naming the argument."""
    with pytest.raises(TypeError, match="body"):
        WorkCoordinator(42)  # type: ignore[arg-type]


def test_options_must_be_options():
    """Passing something other than CoordinatorOptions is a TypeError."""
    with pytest.raises(TypeError, match="options"):
        WorkCoordinator(lambda _: None, {"max_concurrency": 2})  # type: ignore[arg-type]


# -- on_sample ------------------------------------------------------------------------


def test_on_sample_sees_each_completion_before_drain_returns(make):
    """on_sample runs once per ended operation, and drain waits for it."""
    calls: list[int] = []
    gate = threading.Event()

    def sample(window: tuple[Any, ...]) -> None:
        assert gate.wait(WAIT)
        calls.append(len(window))

    c = make(lambda _: None, on_sample=sample, max_tracked_operations=3)
    for i in range(10):
        c.enqueue(i)
    c.complete()
    with pytest.raises(TimeoutError):
        c.drain(timeout=0.05)
    gate.set()
    c.drain(WAIT)
    assert len(calls) == 10
    assert all(1 <= n <= 3 for n in calls)


def test_on_sample_exceptions_are_logged_and_hang_nothing(make, caplog):
    """A raising on_sample is logged; work and drain carry on."""

    def sample(_: Any) -> None:
        raise RuntimeError("sampler broke")

    c = make(lambda _: None, on_sample=sample)
    for i in range(5):
        c.enqueue(i)
    c.complete()
    c.drain(WAIT)
    assert c.total_completed == 5
    assert "sampler broke" in caplog.text


def test_callbacks_keep_their_order_when_completions_come_in_batches(make):
    """Fast items end faster than the callbacks actor delivers them, so it takes them
    in batches (sharing one snapshot of the window): still, per operation in order,
    the observers first, then one `on_sample` whose window holds that operation."""
    observed: list[int] = []
    sampled: list[tuple[int, bool]] = []

    def observe(snapshot: Any) -> None:
        observed.append(snapshot.id)

    def sample(window: tuple[Any, ...]) -> None:
        last = observed[-1]
        sampled.append((last, any(s.id == last for s in window)))

    c = make(lambda _: None, on_sample=sample, max_concurrency=8, max_tracked_operations=2000)
    c.add_observer(observe)
    ids = [c.enqueue(i) for i in range(1000)]
    c.complete()
    c.drain(WAIT)
    assert sorted(observed) == sorted(ids)
    assert len(set(observed)) == len(observed)
    assert [last for last, _ in sampled] == observed  # one call after each observer call
    assert all(found for _, found in sampled)


def test_on_sample_can_query_its_coordinator(make):
    """Control and queries from on_sample (the supervisor's thread) do not deadlock."""
    holder: list[WorkCoordinator[Any]] = []
    seen: list[int] = []

    def sample(_: Any) -> None:
        c = holder[0]
        seen.append(len(c.get_snapshot()))
        c.pin(c.get_snapshot()[-1].id)

    c = make(lambda _: None, on_sample=sample)
    holder.append(c)
    c.enqueue(1)
    c.complete()
    c.drain(WAIT)
    assert seen == [1]


# -- from_iterable --------------------------------------------------------------------


def test_from_iterable_processes_the_source_and_drains():
    """A coordinator built from an iterable drains once the source ends."""
    seen: list[int] = []
    c = WorkCoordinator.from_iterable(range(300), seen.append)
    c.drain(WAIT)
    c.close()
    assert sorted(seen) == list(range(300))
    assert c.is_completed


def test_from_iterable_source_error_comes_out_of_drain():
    """An exception raised by the source is re-raised from drain()."""

    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise OSError("disk gone")

    c = WorkCoordinator.from_iterable(source(), lambda _: None)
    with pytest.raises(OSError, match="disk gone"):
        c.drain(WAIT)
    c.close()
    assert c.total_completed == 2


@pytest.mark.parametrize("kind", ["thread", "collection"])
def test_a_source_error_raised_by_every_drain_does_not_grow_or_keep_its_coordinator(
    kind: str,
) -> None:
    """The core keeps what the source raised, and `drain()` raises it each time: with
    its traceback as the source left it (raising an exception prepends the raising
    frames), and without a cycle through the coordinator once it is closed."""

    def source() -> Iterator[int]:
        yield 1
        raise OSError("disk gone")

    with collector_off():
        if kind == "thread":
            c = WorkCoordinator.from_iterable(source(), lambda _: None)
        else:  # read in the supervisor's turns; it changes while read
            changing = dict.fromkeys(range(500))  # more than one turn reads

            def grow(item: int) -> None:
                changing[item + 1000] = None

            c = WorkCoordinator.from_iterable(changing, grow, max_concurrency=1)
        lengths = []
        for _ in range(5):
            with pytest.raises((OSError, RuntimeError)) as raised:
                c.drain(WAIT)
            lengths.append(traceback_length(raised.value))
            del raised
        assert len(set(lengths)) == 1, lengths
        c.close(WAIT)
        core = weakref.ref(c._core)
        del c
        assert core() is None


def test_from_iterable_rejects_non_iterables():
    """A source that is not iterable is a TypeError naming the argument."""
    with pytest.raises(TypeError, match="source"):
        WorkCoordinator.from_iterable(5, lambda _: None)  # type: ignore[arg-type]


def test_close_stops_a_blocked_source(make):
    """close() ends a source thread that waits for backlog space."""
    tracker, gate = Tracker(), threading.Event()
    c = WorkCoordinator.from_iterable(
        iter(range(1000)),
        gated(tracker, gate),
        CoordinatorOptions(max_concurrency=1, max_tracked_operations=2),
    )
    tracker.wait_for(lambda: tracker.current == 1)
    gate.set()
    c.close(WAIT)
    assert c.total_enqueued < 1000
    assert invariant_holds(c)


def _waiting_source(inside: threading.Event, release: threading.Event) -> Iterator[int]:
    """Yields 1, then waits for input (a consumer with no messages) until released."""
    yield 1
    inside.set()
    release.wait(WAIT)
    yield 2


def _close_in_a_thread(c: WorkCoordinator[int]) -> threading.Thread:
    closer = threading.Thread(target=c.close)
    closer.start()
    closer.join(WAIT)
    return closer


def test_close_does_not_wait_for_a_source_waiting_inside_next(caplog):
    """A source blocked in its own next() cannot hold close() (nor a with block's exit)."""
    inside, release = threading.Event(), threading.Event()
    c = WorkCoordinator.from_iterable(_waiting_source(inside, release), lambda _: None)
    try:
        assert inside.wait(WAIT)
        with caplog.at_level(logging.INFO, logger="ephemeral_actors"):
            closer = _close_in_a_thread(c)
            assert not closer.is_alive(), "close() waited for the source to yield"
        assert not release.is_set()
        assert "waiting in the source's next()" in caplog.text
    finally:
        release.set()
    # The source's next item comes after close(): its thread accepts nothing and ends.
    for thread in library_threads():
        if thread.name.endswith("-source"):
            thread.join(WAIT)
            assert not thread.is_alive()
    assert c.total_enqueued == 1
    assert c.total_completed == 1


def test_leaving_a_with_block_on_an_error_does_not_wait_for_the_source():
    inside, release = threading.Event(), threading.Event()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            with WorkCoordinator.from_iterable(_waiting_source(inside, release), lambda _: None):
                assert inside.wait(WAIT)
                raise RuntimeError("the caller gives up")
        except RuntimeError as exc:
            outcome.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    runner.join(WAIT)
    alive = runner.is_alive()
    release.set()
    runner.join(WAIT)
    assert not alive, "the with block's close() waited for the source"
    assert [str(e) for e in outcome] == ["the caller gives up"]


# -- supervision ----------------------------------------------------------------------


def test_crashed_worker_is_replaced_and_its_item_fails(make, caplog):
    """A dying worker actor fails its in-flight item, counts a restart, and work goes on."""

    def body(item: int) -> None:
        if item == 3:
            crash_worker()

    c = make(body, max_concurrency=2)
    for i in range(10):
        c.enqueue(i)
    c.complete()
    c.drain(WAIT)
    s = c.stats()
    assert s.worker_restarts == 1
    assert (s.total_completed, s.total_failed) == (9, 1)
    (failed,) = c.get_failed()
    assert isinstance(failed.error, WorkerCrashError)
    assert "worker died" in caplog.text


def test_supervisor_death_releases_blocked_callers(make):
    """If the supervisor actor dies, blocked enqueue and drain get CoordinatorFaultedError."""
    tracker, gate = Tracker(), threading.Event()
    c = make(gated(tracker, gate), max_concurrency=1, max_tracked_operations=1)
    c.enqueue(0)
    tracker.wait_for(lambda: tracker.current == 1)
    pending = c.submit(1)
    errors: list[BaseException] = []
    waiting = threading.Event()

    def producer() -> None:
        waiting.set()
        try:
            c.enqueue(2)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=producer)
    t.start()
    assert waiting.wait(WAIT)
    c.actor_ref.stop()
    t.join(WAIT)
    assert len(errors) == 1 and isinstance(errors[0], CoordinatorFaultedError)
    with pytest.raises(CoordinatorFaultedError):
        pending.get(timeout=WAIT)
    with pytest.raises(CoordinatorFaultedError):
        c.drain(WAIT)
    with pytest.raises(CoordinatorFaultedError):
        c.enqueue(3)
    gate.set()
    assert invariant_holds(c)


def test_observers_see_every_operation_that_ran(make):
    """add_observer gets one snapshot per operation that ran; a raising observer is logged."""
    seen: list[Any] = []

    def broken(_: Any) -> None:
        raise RuntimeError("observer broke")

    def body(item: int) -> None:
        if item == 2:
            raise ValueError(item)

    c = make(body, max_concurrency=2)
    c.add_observer(seen.append)
    c.add_observer(broken)
    for i in range(5):
        c.enqueue(i)
    c.complete()
    c.drain(WAIT)
    assert len(seen) == 5
    assert sum(s.is_faulted for s in seen) == 1
    assert all(s.duration is not None for s in seen)
    assert c.remove_observer(broken) is True
    assert c.remove_observer(broken) is False


def test_observers_added_and_removed_at_once_from_many_threads_are_none_lost(make):
    """Each add and remove is one change made in the supervisor's turn: two callers at
    once must not each replace the list the other changed."""
    c = make(lambda _: None)
    core = c._core
    gate = threading.Event()
    holder = threading.Thread(target=core.call, args=(gate.wait,))
    holder.start()  # holds the supervisor's turn, so the calls below queue as mail
    keep = [lambda _s, n=n: None for n in range(3)]
    drop = keep[0]
    callers = [threading.Thread(target=c.add_observer, args=(o,)) for o in keep]
    for t in callers:
        t.start()
    deadline = time.monotonic() + WAIT
    while len(core.mailbox) < len(keep) and time.monotonic() < deadline:
        time.sleep(0.001)  # polls a condition: no event to wait on inside the mailbox
    assert len(core.mailbox) == len(keep)
    removing = threading.Thread(target=c.remove_observer, args=(drop,))
    removing.start()
    gate.set()
    for t in (holder, *callers, removing):
        t.join(WAIT)
    assert set(map(id, core.observers)) == set(map(id, keep[1:]))


def test_signals_emitted_are_counted(make):
    """CoordinatorStats.signals_emitted counts the signals bodies emitted."""
    c = make(lambda _: current_operation().signal("tick"))
    for i in range(3):
        c.enqueue(i)
    c.complete()
    c.drain(WAIT)
    assert c.stats().signals_emitted == 3
