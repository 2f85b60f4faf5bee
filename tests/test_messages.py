"""Driving a coordinator's supervisor with Pykka tell/ask and `ephemeral_actors.messages` (SPEC 4)."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pykka
import pytest

from ephemeral_actors import (
    CoordinatorClosedError,
    CoordinatorOptions,
    CoordinatorStats,
    DynamicConcurrencyDisabledError,
    KeyedWorkCoordinator,
    OperationSnapshot,
    ResultCoordinator,
    ResultSnapshot,
    WorkCoordinator,
    current_operation,
    messages,
)
from ephemeral_actors.messages import (
    Cancel,
    Complete,
    Enqueue,
    Evict,
    GetSnapshot,
    GetStats,
    Pause,
    Pin,
    Resume,
    SetMaxConcurrency,
    Submit,
    Unpin,
)
from tests.conftest import WAIT
from tests.coordinators.test_work import Tracker, gated


class Driver(pykka.ThreadingActor):
    """A user actor that talks to a coordinator's supervisor.

    It understands `("tell", message)` (forwarded with `tell`, answers None) and
    `("ask", message)` (forwarded with `ask`, answers the supervisor's answer or
    raises what the supervisor raised).
    """

    def __init__(self, target: pykka.ActorRef[Any]) -> None:
        super().__init__()
        self.target = target

    def on_receive(self, message: Any) -> Any:
        kind, payload = message
        if kind == "tell":
            self.target.tell(payload)
            return None
        if kind == "ask":
            return self.target.ask(payload, timeout=WAIT)
        raise ValueError(f"driver does not understand {kind!r}")


class Harness:
    """A coordinator plus a driver actor, with tell/ask helpers that go through the driver."""

    def __init__(self, coordinator: Any) -> None:
        self.c = coordinator
        self.driver = Driver.start(coordinator.actor_ref)

    def tell(self, message: Any) -> None:
        self.driver.ask(("tell", message), timeout=WAIT)

    def ask(self, message: Any) -> Any:
        return self.driver.ask(("ask", message), timeout=WAIT)

    def close(self) -> None:
        self.driver.stop()
        self.c.close(timeout=WAIT)


@pytest.fixture
def harness() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def factory(
        body: Callable[[Any], Any], *, cls: type = WorkCoordinator, **options: Any
    ) -> Harness:
        h = Harness(cls(body, CoordinatorOptions(**options)))
        made.append(h)
        return h

    yield factory
    for h in made:
        h.close()


# -- intake ---------------------------------------------------------------------------------


def test_tell_enqueue_processes_items(harness):
    """tell(Enqueue(x)) from an actor enqueues x; the body runs it."""
    seen: list[int] = []
    h = harness(seen.append, max_concurrency=1)
    for i in range(20):
        h.tell(Enqueue(i))
    stats = h.ask(GetStats())  # the supervisor handles its mailbox in order
    assert stats.total_enqueued == 20
    h.ask(Complete())
    h.c.drain(WAIT)
    assert seen == list(range(20))


def test_ask_enqueue_answers_the_operation_id(harness):
    """ask(Enqueue(x)) answers the positive operation id of the accepted item."""
    h = harness(lambda _: None, max_concurrency=1)
    ids = [h.ask(Enqueue(i)) for i in range(5)]
    assert all(isinstance(i, int) and i > 0 for i in ids)
    assert len(set(ids)) == 5
    h.ask(Complete())
    h.c.drain(WAIT)
    assert [s.id for s in h.c.get_snapshot()] == ids


def test_ask_submit_answers_a_future_of_the_result(harness):
    """ask(Submit(x)) answers a pykka Future that resolves to the body's result."""
    h = harness(lambda x: x * 3, cls=ResultCoordinator)
    future = h.ask(Submit(14))
    assert isinstance(future, pykka.Future)
    assert future.get(timeout=WAIT) == 42


def test_ask_submit_future_of_a_work_coordinator_resolves_to_none(harness):
    """ask(Submit(x)) on a WorkCoordinator gives a future resolving to None."""
    h = harness(lambda x: x * 3)
    assert h.ask(Submit(1)).get(timeout=WAIT) is None


def test_ask_submit_future_raises_the_body_exception(harness):
    """The future from ask(Submit(x)) raises what the body raised."""

    def body(x: int) -> None:
        raise ArithmeticError(f"bad {x}")

    h = harness(body)
    future = h.ask(Submit(7))
    with pytest.raises(ArithmeticError, match="bad 7"):
        future.get(timeout=WAIT)
    assert h.ask(GetStats()).total_failed == 1


def test_tell_enqueue_never_blocks_on_a_full_backlog(harness):
    """Enqueue sent as a message is accepted past the backlog bound and counted; the supervisor stays responsive."""
    tracker, gate = Tracker(), threading.Event()
    h = harness(gated(tracker, gate), max_concurrency=1, max_tracked_operations=2)
    try:
        h.tell(Enqueue(0))
        tracker.wait_for(lambda: tracker.current == 1)
        for i in range(1, 11):
            h.tell(Enqueue(i))
        extra_id = h.ask(Enqueue(11))
        stats = h.ask(GetStats())
        assert isinstance(extra_id, int)
        assert stats.total_enqueued == 12
        assert stats.pending_count == 11
        assert stats.pending_count > h.c.options.max_tracked_operations
        assert h.c.try_enqueue("facade") is False  # the facade still honours the bound
    finally:
        gate.set()
    h.ask(Complete())
    h.c.drain(WAIT)
    assert h.c.total_completed == 12


# -- queries -----------------------------------------------------------------------------------


def test_ask_get_stats_and_get_snapshot(harness):
    """GetStats answers CoordinatorStats and GetSnapshot the window of snapshots."""
    h = harness(lambda x: x + 1, cls=ResultCoordinator, max_concurrency=1)
    h.ask(Submit(1)).get(timeout=WAIT)
    h.ask(Submit(2)).get(timeout=WAIT)
    stats = h.ask(GetStats())
    assert isinstance(stats, CoordinatorStats)
    assert (stats.total_enqueued, stats.total_completed) == (2, 2)
    snap = h.ask(GetSnapshot())
    assert isinstance(snap, tuple)
    assert all(type(s) is ResultSnapshot for s in snap)
    assert [s.result for s in snap] == [2, 3]


def test_get_snapshot_of_a_work_coordinator_is_plain(harness):
    """GetSnapshot on a WorkCoordinator answers plain OperationSnapshots."""
    h = harness(lambda _: None)
    op_id = h.ask(Enqueue(1))
    h.ask(Complete())
    h.c.drain(WAIT)
    (snap,) = h.ask(GetSnapshot())
    assert type(snap) is OperationSnapshot
    assert snap.id == op_id


# -- control ----------------------------------------------------------------------------------


def test_ask_pause_and_resume(harness):
    """Pause holds new starts until Resume, with read-your-writes for the asker."""
    started = threading.Event()
    h = harness(lambda _: started.set())
    assert h.ask(Pause()) is None
    assert h.c.is_paused
    h.ask(Enqueue(1))
    assert not started.wait(0.2)
    stats = h.ask(GetStats())
    assert (stats.pending_count, stats.is_paused) == (1, True)
    h.ask(Resume())
    assert not h.c.is_paused
    assert started.wait(WAIT)
    h.ask(Complete())
    h.c.drain(WAIT)


def test_ask_complete_closes_intake(harness):
    """Complete stops intake; queued items still run."""
    h = harness(lambda _: None)
    h.ask(Enqueue(1))
    h.ask(Complete())
    assert h.c.is_completed
    h.c.drain(WAIT)
    assert h.c.total_completed == 1


def test_ask_cancel_drops_the_backlog(harness):
    """Cancel stops intake and counts the dropped backlog as cancelled."""
    tracker, gate = Tracker(), threading.Event()
    h = harness(gated(tracker, gate), max_concurrency=1)
    try:
        for i in range(5):
            h.tell(Enqueue(i))
        tracker.wait_for(lambda: tracker.current == 1)
        h.ask(Cancel())
        assert h.c.is_completed
        assert h.ask(GetStats()).total_cancelled == 4
    finally:
        gate.set()
    h.c.drain(WAIT)
    assert (h.c.total_completed, h.c.total_cancelled) == (1, 4)


def test_ask_set_max_concurrency(harness):
    """SetMaxConcurrency changes the limit; without opt-in the asker gets the error."""
    h = harness(lambda _: None, max_concurrency=1, enable_dynamic_concurrency=True)
    h.ask(SetMaxConcurrency(5))
    assert h.c.max_concurrency == 5
    assert h.ask(GetStats()).max_concurrency == 5
    with pytest.raises(ValueError, match="max_concurrency"):
        h.ask(SetMaxConcurrency(0))
    fixed = harness(lambda _: None)
    with pytest.raises(DynamicConcurrencyDisabledError):
        fixed.ask(SetMaxConcurrency(2))
    assert fixed.driver.is_alive() and fixed.c.actor_ref.is_alive()


def test_ask_pin_unpin_evict(harness):
    """Pin, Unpin and Evict answer True for a known operation and False otherwise."""
    h = harness(lambda _: None, max_concurrency=1, max_tracked_operations=2)
    first = h.ask(Enqueue("first"))
    h.ask(Submit("second")).get(timeout=WAIT)
    assert h.ask(Pin(first)) is True
    for i in range(5):
        h.ask(Submit(i)).get(timeout=WAIT)
    snap = h.ask(GetSnapshot())
    assert snap[0].id == first and snap[0].is_pinned
    assert h.ask(Unpin(first)) is True
    assert not h.ask(GetSnapshot())[0].is_pinned
    h.ask(Submit("push it out")).get(timeout=WAIT)
    assert first not in {s.id for s in h.ask(GetSnapshot())}
    assert h.ask(Pin(first)) is False
    last = h.ask(GetSnapshot())[-1].id
    assert h.ask(Evict(last)) is True
    assert h.ask(Evict(last)) is False
    assert last not in {s.id for s in h.ask(GetSnapshot())}
    assert h.ask(Unpin(123456789)) is False
    assert h.ask(GetStats()).total_completed == 8


# -- robustness ------------------------------------------------------------------------------


def test_rejected_tell_is_logged_and_the_supervisor_survives(harness, caplog):
    """A tell the coordinator rejects (Enqueue after Complete) is logged; later asks still answer."""
    h = harness(lambda _: None)
    h.ask(Complete())
    with caplog.at_level(logging.WARNING, logger="ephemeral_actors"):
        h.tell(Enqueue("late"))
        stats = h.ask(GetStats())
    assert stats.total_enqueued == 0
    assert h.c.actor_ref.is_alive()
    assert any("Enqueue" in r.getMessage() for r in caplog.records), caplog.text
    h.c.drain(WAIT)
    assert h.ask(GetStats()).is_drained


def test_rejected_ask_raises_to_the_asker(harness):
    """An ask the coordinator rejects (Enqueue after Complete) raises CoordinatorClosedError to the asker."""
    h = harness(lambda _: None)
    h.ask(Complete())
    with pytest.raises(CoordinatorClosedError):
        h.ask(Enqueue(1))
    with pytest.raises(CoordinatorClosedError):
        h.ask(Submit(1))
    assert h.ask(GetStats()).total_enqueued == 0


def test_unknown_message_via_ask_raises_type_error(harness):
    """An unknown message sent with ask raises TypeError to the asker; the supervisor lives on."""
    h = harness(lambda _: None)
    with pytest.raises(TypeError, match="str|object|understand"):
        h.ask("hello")
    with pytest.raises(TypeError):
        h.ask(object())
    assert h.c.actor_ref.is_alive()
    assert isinstance(h.ask(GetStats()), CoordinatorStats)


def test_unknown_message_via_tell_does_not_kill_the_supervisor(harness, caplog):
    """An unknown message sent with tell is logged and the supervisor keeps answering."""
    h = harness(lambda _: None)
    with caplog.at_level(logging.WARNING, logger="ephemeral_actors"):
        h.tell(("not", "a", "message"))
        assert isinstance(h.ask(GetStats()), CoordinatorStats)
    assert h.c.actor_ref.is_alive()
    assert caplog.records
    assert h.c.submit(1).get(timeout=WAIT) is None


def test_test_thread_can_ask_the_actor_ref_directly():
    """actor_ref is a pykka ActorRef usable with tell/ask from any thread."""
    with WorkCoordinator(lambda _: None) as c:
        ref = c.actor_ref
        assert isinstance(ref, pykka.ActorRef)
        ref.tell(Enqueue(1))
        op_id = ref.ask(Enqueue(2), timeout=WAIT)
        assert isinstance(op_id, int)
        assert ref.ask(GetStats(), timeout=WAIT).total_enqueued == 2
    assert c.total_completed == 2


# -- the message types -------------------------------------------------------------------------


ALL_MESSAGES = [
    (Enqueue, ("item", "priority", "delay")),
    (Submit, ("item", "priority", "delay")),
    (GetStats, ()),
    (GetSnapshot, ()),
    (Pause, ()),
    (Resume, ()),
    (Complete, ()),
    (Cancel, ()),
    (SetMaxConcurrency, ("limit",)),
    (Pin, ("op_id",)),
    (Unpin, ("op_id",)),
    (Evict, ("op_id",)),
]


@pytest.mark.parametrize(
    ("cls", "field_names"), ALL_MESSAGES, ids=lambda v: getattr(v, "__name__", "")
)
def test_messages_are_frozen_positional_records(cls, field_names):
    """Each message is a frozen, slotted dataclass that takes its fields positionally."""
    assert dataclasses.is_dataclass(cls)
    assert tuple(f.name for f in dataclasses.fields(cls)) == field_names
    assert cls.__doc__
    args = tuple(range(7, 7 + len(field_names)))
    message = cls(*args)
    assert tuple(getattr(message, f) for f in field_names) == args
    assert message == cls(*args)
    assert hash(message) == hash(cls(*args))
    assert not hasattr(message, "__dict__")
    assert hasattr(cls, "__slots__")
    if field_names:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(message, field_names[0], 99)


def test_messages_module_exports_every_message():
    """ephemeral_actors.messages.__all__ names exactly the public message types."""
    assert sorted(messages.__all__) == sorted(cls.__name__ for cls, _ in ALL_MESSAGES)
    for name in messages.__all__:
        assert getattr(messages, name) in {cls for cls, _ in ALL_MESSAGES}


def test_an_actor_messages_user_code_runs_outside_the_supervisors_turn():
    """SPEC 14: for `tell(Enqueue)`, `ask(Submit)` and proxy calls, the key selector and
    `describe` run in the sender's thread before the message reaches the supervisor, and
    a selector that raises (even a BaseException) answers the asker or is logged."""
    turns: list[bool] = []

    def key(item: int) -> int:
        turns.append(c._core.mailbox.in_turn())
        if item < 0:
            raise KeyboardInterrupt("selector")
        return item % 2

    c = KeyedWorkCoordinator(key, lambda item: None, describe=lambda item: f"#{item}")
    try:
        c.actor_ref.tell(Enqueue(1))
        assert c.actor_ref.ask(Submit(2)).result(timeout=WAIT) is None
        op_id = c.proxy().enqueue(3).get(timeout=WAIT)
        assert isinstance(op_id, int)
        # With a priority, by keyword or position, and a delay: prepared in the sender too.
        assert isinstance(c.proxy().enqueue(4, priority=1).get(timeout=WAIT), int)
        assert c.proxy().submit(5, 0, delay=0.0).get(timeout=WAIT).result(WAIT) is None
        with pytest.raises(TypeError):
            c.proxy().enqueue(6, flavour=1).get(timeout=WAIT)  # still the asker's error
        with pytest.raises(KeyboardInterrupt):
            c.actor_ref.ask(Enqueue(-1))
        c.actor_ref.tell(Enqueue(-2))  # logged; nothing stops
        assert c.actor_ref.is_alive()
        c.complete()
        c.drain(WAIT)
        assert c.total_enqueued == 5
        assert turns and not any(turns)
        assert {s.label for s in c.get_snapshot()} == {"#1", "#2", "#3", "#4", "#5"}
    finally:
        c.close(WAIT)


def test_facade_calls_and_actor_messages_from_one_thread_are_admitted_in_program_order():
    """The intake fast path begins a turn only when the mailbox is empty, so an `enqueue`
    never overtakes a `tell(Enqueue)` the same thread sent before it, even while workers'
    reports keep the supervisor busy on other threads (SPEC 14: messages from one sender
    are handled in order)."""
    ranks: dict[int, int] = {}

    def body(item: int) -> None:
        op = current_operation()
        assert op is not None
        ranks[item] = op._seq  # its rank at admission

    items = 6_000
    with WorkCoordinator(body, max_concurrency=4, max_tracked_operations=items) as c:
        for item in range(items):
            if item % 3 == 0:
                c.actor_ref.tell(Enqueue(item))
            else:
                c.enqueue(item)
        c.complete()
        c.drain(WAIT)
    assert len(ranks) == items
    assert sorted(ranks, key=ranks.__getitem__) == list(range(items))
