"""drain_on_signals and clear_on_signals (SPEC 16, the .NET v1.x options)."""

from __future__ import annotations

import threading

import pytest

from ephemeral_actors import (
    CoordinatorClosedError,
    CoordinatorOptions,
    SignalBus,
    WorkCoordinator,
    current_operation,
)
from tests.conftest import WAIT


def test_a_matching_bus_signal_completes_the_coordinator():
    """drain_on_signals: a matching bus signal closes intake; the backlog still runs."""
    gate = threading.Event()
    ran: list[int] = []

    def body(item: int) -> None:
        assert gate.wait(WAIT)
        ran.append(item)

    with SignalBus() as bus:
        c = WorkCoordinator(body, max_concurrency=1, signals=bus, drain_on_signals="shutdown.*")
        try:
            for item in range(3):
                c.enqueue(item)
            bus.emit("shutdown.requested")
            assert c.is_completed  # applied before emit() returned
            with pytest.raises(CoordinatorClosedError):
                c.enqueue(99)
            gate.set()
            c.drain(WAIT)  # no complete() needed: the signal did it
            assert ran == [0, 1, 2]
            bus.emit("unrelated")
        finally:
            gate.set()
            c.close(WAIT)


def test_a_non_matching_signal_does_not_complete():
    """Only signals matching drain_on_signals close intake."""
    with SignalBus() as bus:
        c = WorkCoordinator(lambda _i: None, signals=bus, drain_on_signals="shutdown.*")
        try:
            bus.emit("startup.done")
            assert not c.is_completed
        finally:
            c.close(WAIT)


def test_without_a_bus_the_coordinators_own_signal_drains_it():
    """With no shared bus, one of its own operations' signals closes intake."""
    c = WorkCoordinator(
        lambda item: current_operation().signal("batch.last") if item == 1 else None,
        max_concurrency=1,
        drain_on_signals="batch.last",
    )
    try:
        c.enqueue(0)
        c.submit(1).result(timeout=WAIT)
        assert c.is_completed
        c.drain(WAIT)
    finally:
        c.close(WAIT)


def test_an_operations_matching_signal_clears_those_events_from_the_bus():
    """clear_on_signals: this coordinator's matching signal clears the bus events matching
    the same patterns (the ones others emitted too), and leaves the rest."""
    with SignalBus() as bus:
        bus.emit("rate-limit.hit")
        bus.emit("rate-limit.hit")
        bus.emit("other")
        c = WorkCoordinator(
            lambda _item: current_operation().signal("rate-limit.cleared"),
            signals=bus,
            clear_on_signals="rate-limit.*",
        )
        try:
            c.submit(1).result(timeout=WAIT)
            assert [e.signal for e in bus.sense()] == ["other"]
        finally:
            c.close(WAIT)


def test_signals_not_matching_clear_on_signals_stay():
    """A signal outside clear_on_signals clears nothing."""
    with SignalBus() as bus:
        bus.emit("rate-limit.hit")
        c = WorkCoordinator(
            lambda _item: current_operation().signal("progress"),
            signals=bus,
            clear_on_signals="rate-limit.*",
        )
        try:
            c.submit(1).result(timeout=WAIT)
            assert [e.signal for e in bus.sense()] == ["rate-limit.hit", "progress"]
        finally:
            c.close(WAIT)


@pytest.mark.parametrize("field", ["drain_on_signals", "clear_on_signals"])
def test_the_pattern_sets_are_validated(field):
    """They take a string, a comma list or an iterable of strings; anything else names the field."""
    assert getattr(CoordinatorOptions(**{field: "a, b"}), field) == ("a, b",)
    assert getattr(CoordinatorOptions(**{field: ["a", "b"]}), field) == ("a", "b")
    with pytest.raises(TypeError, match=field):
        CoordinatorOptions(**{field: 7})
