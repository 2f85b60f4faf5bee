"""Deferral for a duration (SPEC 16): `defer_for` on `SignalBus.emit` and `Operation.signal`."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

from ephemeral_actors import SignalBus, SignalEvent, WorkCoordinator, current_operation
from tests.conftest import WAIT

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def test_signal_events_keep_positional_construction():
    """SignalEvent still takes its five fields positionally; defer_for defaults to None."""
    event = SignalEvent("a", None, None, NOW, None)
    assert event.defer_for is None
    assert SignalEvent("a", None, None, NOW, None, 2).defer_for == 2.0


@pytest.mark.parametrize("value", [0, -1, float("nan")])
def test_defer_for_must_be_positive_seconds(value: float):
    """A zero, negative or NaN duration is refused, naming the field."""
    with pytest.raises(ValueError, match="defer_for"):
        SignalEvent("a", None, None, NOW, defer_for=value)


def test_defer_for_accepts_a_timedelta():
    """A timedelta is stored as seconds."""
    event = SignalEvent("a", None, None, NOW, defer_for=dt.timedelta(milliseconds=1500))
    assert event.defer_for == 1.5


def deferred_coordinator(bus: SignalBus | None = None, **options: object) -> tuple:
    starts: list[float] = []
    c = WorkCoordinator(
        lambda _item: starts.append(time.monotonic()),
        signals=bus,
        defer_on_signals="slow-down",
        resume_on_signals="go",
        # One quick re-check: without defer_for, a deferral would end after ~10 ms.
        max_defer_attempts=1,
        defer_check_interval=0.01,
        max_concurrency=1,
        **options,
    )
    return c, starts


def test_a_bus_signal_defers_for_its_duration_beyond_max_defer_attempts():
    """Work waits until emit time + defer_for, however few re-checks are allowed."""
    with SignalBus() as bus:
        c, starts = deferred_coordinator(bus)
        with c:
            emitted = time.monotonic()
            event = bus.emit("slow-down", defer_for=0.3)
            assert event.defer_for == 0.3
            c.enqueue(1)
            assert c.stats().is_deferred
            c.complete()
            c.drain(WAIT)
            assert starts[0] - emitted >= 0.3 - 0.01  # a lower bound: never sooner
            # Over: it no longer defers, though the event is still in the bus window.
            assert not c.stats().is_deferred
            assert bus.detect("slow-down")


def test_after_its_duration_a_timed_signal_no_longer_defers():
    """Work enqueued after the deferral ended starts without waiting."""
    with SignalBus() as bus:
        c, starts = deferred_coordinator(bus)
        with c:
            bus.emit("slow-down", defer_for=0.05)
            assert c.submit(1).result(WAIT) is None
            assert not c.stats().is_deferred
            c.enqueue(2)
            c.complete()
            c.drain(WAIT)
            assert len(starts) == 2


def test_a_resume_signal_ends_a_timed_deferral_sooner():
    """A resume match releases the work long before defer_for is over."""
    with SignalBus() as bus:
        c, starts = deferred_coordinator(bus)
        with c:
            bus.emit("slow-down", defer_for=3600)
            future = c.submit(1)
            assert c.stats().is_deferred
            assert starts == []
            bus.emit("go")
            assert future.result(WAIT) is None


def test_a_body_signal_defers_its_own_coordinator_for_the_duration():
    """Operation.signal(name, defer_for=...) defers later items of its coordinator."""
    first_done = threading.Event()
    starts: list[float] = []

    def body(item: int) -> None:
        starts.append(time.monotonic())
        if item == 0:
            current_operation().signal("slow-down", defer_for=0.2)
            first_done.set()

    with WorkCoordinator(
        body,
        defer_on_signals="slow-down",
        max_defer_attempts=1,
        defer_check_interval=0.01,
        max_concurrency=1,
    ) as c:
        c.enqueue(0)
        assert first_done.wait(WAIT)
        c.enqueue(1)
        c.complete()
        c.drain(WAIT)
        assert c.get_signals_by_name("slow-down")[0].defer_for == 0.2
        assert starts[1] - starts[0] >= 0.2 - 0.01


def test_a_replayed_timed_signal_counts_from_its_emit_time():
    """A coordinator built after the deferral is over is not deferred by it."""
    clock = [1000.0]
    with SignalBus(_clock=lambda: clock[0]) as bus:
        bus.emit("slow-down", defer_for=5)
        clock[0] += 10  # the deferral ended five seconds ago, on the bus clock
        c, _ = deferred_coordinator(bus)
        with c:
            assert not c.stats().is_deferred
        clock[0] -= 8  # only two of its five seconds are gone
        c, _ = deferred_coordinator(bus)
        with c:
            assert c.stats().is_deferred
            bus.emit("go")
            assert not c.stats().is_deferred


def test_a_wall_clock_step_does_not_end_a_replayed_timed_deferral(monkeypatch):
    """A coordinator that subscribes after the wall clock jumped an hour still defers
    for the event's duration: the time gone is measured on the bus's monotonic clock."""
    wall = [2_000_000.0]
    monkeypatch.setattr(time, "time", lambda: wall[0])
    with SignalBus() as bus:
        bus.emit("slow-down", defer_for=3600)
        wall[0] += 3600.0  # an NTP step: by the wall clock, the deferral is over
        c, starts = deferred_coordinator(bus)
        with c:
            c.enqueue(1)
            assert c.stats().is_deferred  # replayed at subscription, with its time left
            bus.emit("go")
            c.complete()
            c.drain(WAIT)
        assert len(starts) == 1
