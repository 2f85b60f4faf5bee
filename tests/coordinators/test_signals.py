"""Signals on coordinators: emission, constraints, callbacks, cancel/defer/resume, queries."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from ephemeral_actors import (
    CoordinatorOptions,
    KeyedWorkCoordinator,
    SignalBlockReason,
    SignalBus,
    SignalCancelledError,
    SignalConstraints,
    SignalEvent,
    current_operation,
)
from tests.conftest import WAIT, run_all


@pytest.fixture
def bus() -> Iterator[SignalBus]:
    with SignalBus(name="test") as b:
        yield b


def test_signals_are_recorded_in_emit_order_with_timestamps(make):
    """A body's signals appear on its snapshot, in order, with real timestamps."""
    before = datetime.now(UTC)

    def body(_: Any) -> None:
        op = current_operation()
        assert op.signal("fetch.start") is True
        op.signal("fetch.done")
        assert op.has_signal("fetch.done")

    c = make(body)
    run_all(c, [1])
    (snap,) = c.get_snapshot()
    assert snap.signals == ("fetch.start", "fetch.done")
    assert snap.has_signal("fetch.start")
    events = c.get_signals()
    assert [e.signal for e in events] == ["fetch.start", "fetch.done"]
    assert all(before <= e.timestamp <= datetime.now(UTC) for e in events)
    assert events[0].operation_id == snap.id
    assert events[0].depth == 1


def test_retract_and_retract_matching(make):
    """retract removes by name, retract_matching by pattern, and report what they removed."""
    seen: list[Any] = []

    def body(_: Any) -> None:
        op = current_operation()
        for name in ("a.1", "a.2", "b.1"):
            op.signal(name)
        seen.append(op.retract("b.1"))
        seen.append(op.retract("nope"))
        seen.append(op.retract_matching("a.*"))

    c = make(body)
    run_all(c, [1])
    assert seen == [True, False, 2]
    assert c.count_signals() == 0


def test_caused_emissions_follow_constraints(make):
    """emit_caused extends the path, and a cycle is blocked with on_blocked told why."""
    blocked: list[tuple[str, SignalBlockReason]] = []
    results: list[bool] = []

    def on_blocked(event: SignalEvent, reason: SignalBlockReason) -> None:
        blocked.append((event.signal, reason))

    def body(_: Any) -> None:
        op = current_operation()
        op.signal("a")
        (root,) = [e for e in c.get_signals() if e.operation_id == op.id] or [None]
        assert root is not None
        results.append(op.emit_caused("b", root))
        caused = next(e for e in c.get_signals() if e.signal == "b")
        results.append(op.emit_caused("a", caused))

    c = make(body, signal_constraints=SignalConstraints(on_blocked=on_blocked))
    run_all(c, [1])
    assert results == [True, False]
    assert blocked == [("a", SignalBlockReason.CYCLE_DETECTED)]
    b = c.get_signals_by_name("b")[0]
    assert b.propagation is not None
    assert str(b.propagation) == "a -> b"


def test_bad_signal_names_are_rejected(make):
    """An empty signal name is a ValueError raised into the body (recorded as its failure)."""

    def body(_: Any) -> None:
        current_operation().signal("")

    c = make(body)
    run_all(c, [1])
    assert isinstance(c.get_failed()[0].error, ValueError)


def test_on_signal_runs_synchronously_and_its_errors_are_logged(make, caplog):
    """on_signal sees each event before signal() returns; its exceptions never reach the body."""
    seen: list[str] = []

    def on_signal(event: SignalEvent) -> None:
        seen.append(event.signal)
        raise RuntimeError("listener broke")

    def body(_: Any) -> None:
        current_operation().signal("x")
        assert seen == ["x"]

    c = make(body, on_signal=on_signal)
    run_all(c, [1])
    assert c.total_completed == 1
    assert "listener broke" in caplog.text


def test_on_signal_async_is_bounded_and_counts_drops(make):
    """Async handlers run at most N at once; a full queue drops the newest and counts it."""
    started = threading.Event()
    gate = threading.Event()
    handled: list[str] = []

    async def handler(event: SignalEvent) -> None:
        started.set()
        while not gate.is_set():  # noqa: ASYNC110 - a test gate crossing threads
            await asyncio.sleep(0.001)
        handled.append(event.signal)

    def body(_: Any) -> None:
        op = current_operation()
        op.signal("s0")
        assert started.wait(WAIT)
        for n in range(1, 6):
            op.signal(f"s{n}")

    c = make(body, on_signal_async=handler, max_concurrent_signal_handlers=1, max_queued_signals=2)
    run_all(c, [1])
    assert c.stats().signals_dropped == 3
    gate.set()
    c.close(WAIT)
    assert handled[0] == "s0"
    assert set(handled) <= {"s0", "s1", "s2"}
    assert c.stats().signals_dropped + len(handled) == 6


def test_own_cancel_signal_cancels_later_items(make):
    """A body's cancel signal cancels the items reaching dispatch after it."""
    order: list[int] = []

    def body(item: int) -> None:
        order.append(item)
        if item == 2:
            current_operation().signal("overload")

    c = make(body, max_concurrency=1, cancel_on_signals=["overload"])
    run_all(c, list(range(6)))
    assert order == [0, 1, 2]
    s = c.stats()
    assert (s.total_completed, s.total_cancelled) == (3, 3)
    cancelled = [snap for snap in c.get_failed() if isinstance(snap.error, SignalCancelledError)]
    assert len(cancelled) == 3
    assert cancelled[0].error.signal == "overload"
    assert cancelled[0].started == cancelled[0].completed


def test_cancel_signal_asks_running_operations_to_cancel(make):
    """Running operations see the cancellation request when a cancel signal is emitted."""
    running = threading.Event()
    saw_cancel = threading.Event()

    def body(item: str) -> None:
        if item == "long":
            running.set()
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                if current_operation().cancelled:
                    saw_cancel.set()
                    current_operation().raise_if_cancelled()
                time.sleep(0.001)
        else:
            assert running.wait(WAIT)
            current_operation().signal("stop.now")

    c = make(body, max_concurrency=2, cancel_on_signals="stop.*")
    c.enqueue("long")
    c.enqueue("trigger")
    c.complete()
    c.drain(WAIT)
    assert saw_cancel.is_set()
    assert c.total_cancelled == 1


def test_overload_on_a_shared_bus_cancels_another_coordinator(make, bus):
    """A signal emitted by one coordinator's body cancels work in another through the bus."""
    emitted = threading.Event()

    def producer_body(_: Any) -> None:
        current_operation().signal("overload")
        emitted.set()

    producer = make(producer_body, signals=bus)
    consumer_seen: list[int] = []
    consumer = make(consumer_seen.append, signals=bus, cancel_on_signals="overload")
    producer.submit(1).get(timeout=WAIT)
    assert emitted.is_set()
    assert bus.detect("overload")
    run_all(consumer, [1, 2, 3])
    assert consumer_seen == []
    assert consumer.total_cancelled == 3


def test_events_already_on_the_bus_count_when_a_coordinator_starts(make, bus):
    """A cancel signal emitted before the coordinator existed still cancels its work."""
    bus.emit("maintenance")
    seen: list[int] = []
    c = make(seen.append, signals=bus, cancel_on_signals=["maint*"])
    run_all(c, [1, 2])
    assert seen == []
    assert c.total_cancelled == 2


def test_defer_holds_work_until_resume(make, bus):
    """A rate-limit signal defers new work; a resume signal releases all of it at once."""
    started = threading.Event()
    c = make(
        lambda _: started.set(),
        signals=bus,
        defer_on_signals="rate-limit",
        resume_on_signals="rate-limit.cleared",
        defer_check_interval=30,
    )
    bus.emit("rate-limit")
    for i in range(5):
        c.enqueue(i)
    assert not started.wait(0.2)
    assert c.pending_count == 5
    bus.emit("rate-limit.cleared")
    c.complete()
    c.drain(WAIT)
    assert c.total_completed == 5


def test_deferral_is_bounded_by_attempts_times_interval(make, bus):
    """Deferred work runs anyway after max_defer_attempts re-checks; nothing is dropped."""
    bus.emit("busy")
    c = make(
        lambda _: None,
        signals=bus,
        defer_on_signals="busy",
        max_defer_attempts=3,
        defer_check_interval=0.02,
    )
    t0 = time.monotonic()
    run_all(c, list(range(10)))
    assert time.monotonic() - t0 >= 3 * 0.02
    assert c.total_completed == 10


def test_zero_defer_attempts_disables_deferral(make, bus):
    """max_defer_attempts=0 means defer patterns never hold work."""
    bus.emit("busy")
    c = make(lambda _: None, signals=bus, defer_on_signals="busy", max_defer_attempts=0)
    run_all(c, [1, 2, 3])
    assert c.total_completed == 3


def test_own_defer_signal_ends_when_its_operation_leaves_the_window(make):
    """A defer signal on an operation stops counting once that operation is evicted."""
    holder: list[int] = []
    started = threading.Event()

    def body(item: str) -> None:
        if item == "signaller":
            holder.append(current_operation().id)
            current_operation().signal("slow-down")
        else:
            started.set()

    c = make(
        body,
        max_concurrency=1,
        defer_on_signals="slow-down",
        defer_check_interval=0.01,
        max_defer_attempts=1000,
    )
    c.submit("signaller").get(timeout=WAIT)
    c.enqueue("next")
    assert not started.wait(0.1)
    c.evict(holder[0])
    assert started.wait(WAIT)


def test_signal_queries_and_signals_leave_with_their_operation(make):
    """Queries read the window's signals; trimmed operations take their signals along."""

    def body(item: int) -> None:
        current_operation().signal(f"item.{item}")
        if item % 2:
            current_operation().signal("odd")

    c = make(body, max_concurrency=1, max_tracked_operations=4)
    t0 = datetime.now(UTC)
    run_all(c, list(range(10)))
    assert c.count_signals("odd") == 2
    assert c.has_signal("item.9")
    assert not c.has_signal("item.0")
    assert c.has_signal_matching("item.?")
    assert c.count_signals_matching("item.*") == 4
    assert c.count_signals() == 6
    assert c.get_signals_by_pattern("item.6,item.7") == ()
    assert len(c.get_signals_since(t0)) == 6
    newest = c.get_signals()[-1].timestamp
    assert len(c.get_signals_by_time_range(newest, newest)) >= 1
    assert c.get_signals(lambda e: e.signal == "odd")[0].signal == "odd"


def test_keyed_signal_queries(bus):
    """Keyed coordinators answer signal queries per key."""

    def body(item: tuple[str, int]) -> None:
        current_operation().signal(f"{item[0]}.done")

    with KeyedWorkCoordinator(lambda i: i[0], body, CoordinatorOptions(signals=bus)) as c:
        for i in range(3):
            c.enqueue(("a", i))
        c.enqueue(("b", 0))
    assert c.count_signals_for_key("a") == 3
    assert c.has_signal_for_key("b", "b.done")
    assert not c.has_signal_for_key("b", "a.done")
    assert [e.key for e in c.get_signals_by_key("b")] == ["b"]
    assert bus.count == 4


def test_signal_from_a_closed_bus_does_not_fail_the_body(make, caplog):
    """Publishing to a bus that was closed is logged; the body still completes."""
    bus = SignalBus()
    bus.close()
    c = make(lambda _: current_operation().signal("late"), signals=bus)
    run_all(c, [1])
    assert c.total_completed == 1
    assert "bus closed" in caplog.text


def test_cancel_is_checked_before_the_defer_wait(make, bus):
    """With both a defer and a cancel signal present, waiting items are cancelled at once."""
    c = make(
        lambda _: None,
        signals=bus,
        defer_on_signals="rate-limit",
        cancel_on_signals="overload",
        defer_check_interval=30,
    )
    bus.emit("rate-limit")
    for i in range(4):
        c.enqueue(i)
    assert c.pending_count == 4
    bus.emit("overload")
    c.complete()
    c.drain(WAIT)
    assert c.total_cancelled == 4
    assert c.total_completed == 0


def test_clearing_the_bus_withdraws_a_cancel_signal(make, bus):
    """Once the cancel signal is cleared from the bus, new items run again."""
    bus.emit("overload")
    seen: list[int] = []
    c = make(seen.append, signals=bus, cancel_on_signals="overload")
    with pytest.raises(SignalCancelledError):
        c.submit(1).get(timeout=WAIT)
    assert bus.clear_pattern("overload") == 1
    c.submit(2).get(timeout=WAIT)
    assert seen == [2]
    assert c.total_cancelled == 1
