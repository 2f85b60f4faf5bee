"""Tests for `SignalBus` and `Subscription`."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import weakref

import pykka
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ephemeral_actors._signals import SignalBus, SignalEvent, SignalPropagation
from ephemeral_actors.testing import library_threads
from tests.conftest import WAIT, collector_off


class FakeClock:
    """Seconds since the epoch that only move when a test says so."""

    def __init__(self, now=1_000.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def make_bus(clock):
    buses = []

    def make(max_capacity=1000, max_age=60.0, **kwargs):
        kwargs.setdefault("_clock", clock)
        bus = SignalBus(max_capacity, max_age, **kwargs)
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        bus.close()


def names(events):
    return [event.signal for event in events]


# Construction


@pytest.mark.parametrize(
    ("kwargs", "error", "argument"),
    [
        ({"max_capacity": 0}, ValueError, "max_capacity"),
        ({"max_capacity": True}, TypeError, "max_capacity"),
        ({"max_capacity": 1.5}, TypeError, "max_capacity"),
        ({"max_age": 0}, ValueError, "max_age"),
        ({"max_age": -1.0}, ValueError, "max_age"),
        ({"max_age": True}, TypeError, "max_age"),
        ({"max_age": "60"}, TypeError, "max_age"),
        ({"name": 1}, TypeError, "name"),
    ],
)
def test_bad_options_raise_naming_the_argument(kwargs, error, argument):
    """Invalid options raise before any actor is started."""
    before = threading.active_count()
    with pytest.raises(error, match=argument):
        SignalBus(**kwargs)
    assert threading.active_count() == before


def test_max_age_accepts_a_timedelta(make_bus):
    """A timedelta is taken as seconds."""
    assert make_bus(max_age=dt.timedelta(minutes=2)).max_age == 120.0


def test_callbacks_run_on_the_emitting_thread(make_bus):
    """SPEC 14: the bus has no thread; a callback runs on the thread that emitted,
    after the bus's turn (it used to run on the bus's own thread)."""
    seen = []
    bus = make_bus(name="orders")
    bus.subscribe("*", lambda event: seen.append(threading.current_thread()))
    bus.emit("a")
    emitter = threading.Thread(target=bus.emit, args=("b",))
    emitter.start()
    emitter.join()
    assert seen == [threading.current_thread(), emitter]


# Emit, publish and reads


def test_emit_returns_the_event_and_puts_it_in_the_window(make_bus, clock):
    """`emit` builds a UTC event on the bus clock and it is readable at once."""
    bus = make_bus()
    event = bus.emit("a.b", key="k", operation_id=7)
    assert event.signal == "a.b"
    assert event.key == "k"
    assert event.operation_id == 7
    assert event.timestamp == dt.datetime.fromtimestamp(clock.now, tz=dt.UTC)
    assert event.propagation is None
    assert bus.sense() == (event,)
    assert bus.count == 1


def test_emit_validates_its_arguments(make_bus):
    """Bad names, keys and ids raise in the caller and publish nothing."""
    bus = make_bus()
    with pytest.raises(ValueError, match="signal"):
        bus.emit("")
    with pytest.raises(TypeError, match="key"):
        bus.emit("a", key=1)
    with pytest.raises(TypeError, match="operation_id"):
        bus.emit("a", operation_id="1")
    assert bus.count == 0


def test_emit_carries_propagation(make_bus):
    """A propagation passed to `emit` is kept on the event."""
    chain = SignalPropagation.root("a").extend("b")
    assert make_bus().emit("b", propagation=chain).depth == 2


def test_publish_adds_a_prebuilt_event(make_bus):
    """`publish` puts an existing event in the window as is."""
    bus = make_bus()
    event = SignalEvent("op.done", 3, "k", dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    bus.publish(event)
    assert bus.sense() == (event,)
    with pytest.raises(TypeError, match="event"):
        bus.publish("op.done")


def test_sense_is_oldest_first_and_filters(make_bus):
    """`sense` returns events in emit order, filtered by an optional predicate."""
    bus = make_bus()
    for name in ["a", "b", "c"]:
        bus.emit(name, key=name)
    assert names(bus.sense()) == ["a", "b", "c"]
    assert names(bus.sense(lambda event: event.key != "b")) == ["a", "c"]
    with pytest.raises(TypeError, match="predicate"):
        bus.sense("a")


def test_detect_takes_a_pattern_or_a_predicate(make_bus):
    """`detect` with a str matches it as a pattern; a callable is a predicate."""
    bus = make_bus()
    bus.emit("rate-limit.hit", key="k")
    assert bus.detect("rate-limit.hit")
    assert bus.detect("rate-limit.*")
    assert not bus.detect("rate-limit")
    assert not bus.detect("rate-limit.hit,other")  # one pattern: the comma is literal
    assert bus.detect(lambda event: event.key == "k")
    assert not bus.detect(lambda event: event.key == "x")
    with pytest.raises(TypeError, match="name_or_predicate"):
        bus.detect(1)


def test_capacity_drops_the_oldest(make_bus):
    """A full window drops its oldest event for each new one."""
    bus = make_bus(max_capacity=3)
    for name in "abcde":
        bus.emit(name)
    assert names(bus.sense()) == ["c", "d", "e"]
    assert bus.count == 3


def test_age_bound_applies_on_read_with_nothing_else_happening(make_bus, clock):
    """Events older than max_age are never returned, even without new writes."""
    bus = make_bus(max_age=10)
    bus.emit("a")
    clock.advance(5)
    bus.emit("b")
    clock.advance(5)
    assert names(bus.sense()) == ["a", "b"]  # exactly max_age old is still fresh
    clock.advance(1)
    assert names(bus.sense()) == ["b"]
    assert not bus.detect("a")
    clock.advance(5)
    assert bus.count == 0


def test_age_counts_from_when_the_bus_received_the_event(make_bus, clock):
    """A published event with an old timestamp is kept for max_age from publish."""
    bus = make_bus(max_age=10)
    bus.publish(SignalEvent("old", None, None, dt.datetime(2000, 1, 1, tzinfo=dt.UTC)))
    assert bus.detect("old")


# Clearing


def test_clear_variants_remove_and_count(make_bus):
    """Each clear removes only what it names and returns how many it removed."""
    bus = make_bus()
    bus.emit("a.1", key="k1", operation_id=1)
    bus.emit("a.2", key="k2", operation_id=1)
    bus.emit("b.1", key="k1", operation_id=2)
    bus.emit("a,b", key="k3", operation_id=3)
    bus.emit("c", key="k3", operation_id=4)
    assert bus.clear_pattern("a,b") == 1  # one pattern: comma literal
    assert bus.clear_pattern("a.*") == 2
    assert bus.clear_operation(2) == 1
    assert bus.clear_operation(99) == 0
    assert bus.clear_key("k3") == 1
    assert names(bus.sense()) == []
    bus.emit("x")
    bus.emit("y")
    assert bus.clear() == 2
    assert bus.count == 0


def test_clear_does_not_count_expired_events(make_bus, clock):
    """Expired events are pruned first, so they never count as removed."""
    bus = make_bus(max_age=1)
    bus.emit("a")
    clock.advance(2)
    bus.emit("b")
    assert bus.clear() == 1


def test_clear_arguments_are_validated(make_bus):
    """Wrong argument types raise TypeError naming the argument."""
    bus = make_bus()
    with pytest.raises(TypeError, match="pattern"):
        bus.clear_pattern(None)
    with pytest.raises(TypeError, match="operation_id"):
        bus.clear_operation(True)
    with pytest.raises(TypeError, match="key"):
        bus.clear_key(1)


# Subscriptions


def test_subscribers_get_matching_events_before_emit_returns(make_bus):
    """Delivery is synchronous: the callback has run when `emit` returns."""
    bus = make_bus()
    seen = []
    bus.subscribe(" cancel.* , stop", seen.append)
    bus.emit("cancel.now")
    assert names(seen) == ["cancel.now"]
    bus.emit("other")
    bus.emit("stop")
    assert names(seen) == ["cancel.now", "stop"]


def test_subscribe_accepts_several_entries(make_bus):
    """A list of entries, each possibly a comma list, is one subscription."""
    bus = make_bus()
    seen = []
    bus.subscribe(["a", "b, c"], seen.append)
    for name in "abcd":
        bus.emit(name)
    assert names(seen) == ["a", "b", "c"]


def test_subscribe_validates_its_arguments(make_bus):
    """An empty pattern or a non-callable callback is refused."""
    bus = make_bus()
    with pytest.raises(ValueError, match="pattern"):
        bus.subscribe(" , ", print)
    # The message names subscribe's own argument, `pattern`.
    with pytest.raises(TypeError, match="^pattern must be"):
        bus.subscribe(1, print)
    with pytest.raises(TypeError, match="callback"):
        bus.subscribe("a", "print")


def test_unsubscribe_is_synchronous_and_idempotent(make_bus):
    """After `unsubscribe` returns nothing more is delivered; repeating it is harmless."""
    bus = make_bus()
    seen = []
    subscription = bus.subscribe("*", seen.append)
    bus.emit("a")
    assert subscription.active
    subscription.unsubscribe()
    subscription.unsubscribe()
    assert not subscription.active
    bus.emit("b")
    assert names(seen) == ["a"]


def test_a_callback_can_unsubscribe_a_later_subscriber(make_bus):
    """A subscriber removed by an earlier callback does not see the same event."""
    bus = make_bus()
    seen = []
    later = None
    bus.subscribe("*", lambda event: later.unsubscribe())
    later = bus.subscribe("*", seen.append)
    bus.emit("a")
    assert seen == []


def test_replay_delivers_the_window_before_subscribe_returns(make_bus):
    """With replay, matching events already in the window arrive first, in order, once."""
    bus = make_bus()
    bus.emit("defer.a")
    bus.emit("other")
    bus.emit("defer.b")
    seen = []
    bus.subscribe("defer.*", seen.append, replay=True)
    assert names(seen) == ["defer.a", "defer.b"]
    bus.emit("defer.c")
    assert names(seen) == ["defer.a", "defer.b", "defer.c"]


def test_replay_skips_expired_events(make_bus, clock):
    """Replay honours the age bound."""
    bus = make_bus(max_age=5)
    bus.emit("a")
    clock.advance(6)
    bus.emit("b")
    seen = []
    bus.subscribe("*", seen.append, replay=True)
    assert names(seen) == ["b"]


def test_without_replay_earlier_events_are_not_delivered(make_bus):
    """By default a subscription sees only later events."""
    bus = make_bus()
    bus.emit("a")
    seen = []
    bus.subscribe("*", seen.append)
    assert seen == []


@pytest.mark.parametrize("exception", [ValueError("boom"), KeyboardInterrupt()])
def test_callback_exceptions_are_logged_never_raised(make_bus, caplog, exception):
    """A raising callback is logged; the emitter, other subscribers and the bus go on."""
    bus = make_bus()
    seen = []

    def bad(event):
        raise exception

    bus.subscribe("*", bad)
    bus.subscribe("*", seen.append)
    with caplog.at_level(logging.ERROR, logger="ephemeral_actors"):
        bus.emit("a")
    assert names(seen) == ["a"]
    (record,) = [r for r in caplog.records if r.name == "ephemeral_actors"]
    assert record.exc_info is not None
    assert record.exc_info[1] is exception
    bus.emit("b")
    assert names(bus.sense()) == ["a", "b"]


def test_callbacks_may_call_back_into_the_same_bus(make_bus):
    """Emitting, reading and subscribing from a callback does not deadlock."""
    bus = make_bus()
    inside = []

    def react(event):
        inside.append(len(bus.sense()))
        bus.subscribe("never", print)
        bus.emit("b")

    bus.subscribe("a", react)
    bus.emit("a")
    assert inside == [1]
    assert names(bus.sense()) == ["a", "b"]


# Lifecycle


def test_no_thread_at_construction_use_or_close():
    """SPEC 14: building, using and closing a bus starts no thread (it used to start one)."""
    before = set(threading.enumerate())
    bus = SignalBus(name="quiet")
    assert set(threading.enumerate()) == before
    bus.subscribe("*", lambda event: None, replay=True)
    bus.emit("a")
    assert bus.sense() == bus.sense()
    assert set(threading.enumerate()) == before
    bus.close()
    assert set(threading.enumerate()) == before
    assert library_threads() == [t for t in before if t in library_threads()]


def test_close_is_idempotent_and_reads_keep_answering(make_bus, clock):
    """After close, reads return the final window; writes raise RuntimeError."""
    bus = make_bus(max_age=10, name="main")
    bus.emit("a", key="k")
    clock.advance(5)
    bus.emit("b")
    subscription = bus.subscribe("*", print)
    bus.close()
    bus.close()
    assert bus.is_closed
    assert names(bus.sense()) == ["a", "b"]
    assert bus.detect("a")
    assert bus.count == 2
    clock.advance(6)
    assert names(bus.sense()) == ["b"]  # the age bound still applies
    with pytest.raises(RuntimeError, match="'main' is closed"):
        bus.emit("c")
    with pytest.raises(RuntimeError, match="closed"):
        bus.subscribe("*", print)
    with pytest.raises(RuntimeError, match="closed"):
        bus.publish(SignalEvent("x", None, None, dt.datetime.now(dt.UTC)))
    with pytest.raises(RuntimeError, match="closed"):
        bus.clear()
    subscription.unsubscribe()
    assert not subscription.active


def test_context_manager_closes(clock):
    """Leaving a `with` block closes the bus."""
    with SignalBus(_clock=clock) as bus:
        bus.emit("a")
    assert bus.is_closed
    assert names(bus.sense()) == ["a"]


def test_close_from_a_callback_does_not_deadlock():
    """A callback may close its own bus; no thread is left behind."""
    before = threading.active_count()
    bus = SignalBus()
    bus.subscribe("stop", lambda event: bus.close())
    bus.emit("stop")
    assert bus.is_closed
    bus.close()  # idempotent from outside too
    assert threading.active_count() == before
    assert names(bus.sense()) == ["stop"]


def test_repr_shows_name_state_and_counts(make_bus):
    """`repr` names the bus, its state, its count and its limits."""
    bus = make_bus(max_capacity=5, name="orders")
    bus.emit("a")
    assert repr(bus) == "<SignalBus 'orders' running count=1 max_capacity=5 max_age=60.0>"
    subscription = bus.subscribe("a", print)
    assert repr(subscription).startswith("<Subscription 'a' active on <SignalBus 'orders'")
    bus.close()
    assert "closed count=1" in repr(bus)


# Concurrency


@settings(max_examples=25, deadline=None)
@given(
    threads=st.integers(min_value=2, max_value=8),
    per_thread=st.integers(min_value=1, max_value=40),
    capacity=st.integers(min_value=1, max_value=64),
)
def test_concurrent_emitters_never_overfill_the_window(threads, per_thread, capacity):
    """Many emitters at once never make sense() exceed max_capacity, and counts add up."""
    delivered = []
    barrier = threading.Barrier(threads + 1)
    done = threading.Event()
    largest = []
    with SignalBus(max_capacity=capacity) as bus:
        bus.subscribe("*", delivered.append)

        def emitter(index):
            barrier.wait()
            for n in range(per_thread):
                bus.emit(f"t{index}.{n}", operation_id=index)

        def reader():
            barrier.wait()
            while not done.is_set():
                largest.append(len(bus.sense()))

        workers = [threading.Thread(target=emitter, args=(i,)) for i in range(threads)]
        watcher = threading.Thread(target=reader)
        for thread in [*workers, watcher]:
            thread.start()
        for thread in workers:
            thread.join()
        done.set()
        watcher.join()

        total = threads * per_thread
        assert max(largest, default=0) <= capacity
        assert bus.count == min(capacity, total)
        assert len(delivered) == total
        assert names(bus.sense()) == names(delivered[-capacity:])
        for index in range(threads):
            mine = [e.signal for e in delivered if e.operation_id == index]
            assert mine == [f"t{index}.{n}" for n in range(per_thread)]


def test_a_wall_clock_step_neither_ages_events_early_nor_keeps_them(monkeypatch):
    """Timestamps come from the wall clock, ages from a monotonic one: an NTP step of an
    hour either way leaves a fresh event readable."""
    import time  # noqa: PLC0415 - patched below, for this test only

    wall = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: wall[0])
    with SignalBus(max_age=60.0) as bus:
        event = bus.emit("fresh")
        assert event.timestamp == dt.datetime.fromtimestamp(1_000_000.0, dt.UTC)
        wall[0] += 3600.0  # the wall clock jumps forward an hour
        assert bus.holds(event)
        assert bus.sense() == (event,)
        wall[0] -= 7200.0  # and back two
        assert bus.holds(event)
        assert bus.count == 1


@pytest.mark.parametrize("used", [False, True])
def test_a_closed_bus_is_freed_without_the_garbage_collector(used):
    """Closing makes the bus's mailbox and actor refer back to its state weakly, so a
    closed bus is freed by reference counting once dropped, used or not."""
    with collector_off():  # any cycle left would survive to the assertion
        bus = SignalBus(name="freed")
        if used:
            subscription = bus.subscribe("a.*", lambda event: None, replay=True)
            bus.emit("a.b", key="k")
            assert bus.detect("a.b")
            subscription.unsubscribe()
            del subscription  # it holds its bus, as it should
        bus.close()
        assert bus.count == (1 if used else 0)  # reads answer after close, as before
        state = weakref.ref(bus._state)
        del bus
        assert state() is None


# Supervision: the bus is watched


def _interrupting_clock(bus_box, armed):
    """A clock that raises `armed[0]` once, inside a turn of the bus: a turn torn half-way."""

    def clock():
        if armed[0] is not None and bus_box[0]._state.mailbox.in_turn():
            error, armed[0] = armed[0], None
            raise error
        return 1_000.0

    return clock


def test_an_interrupt_in_a_turn_of_the_bus_closes_it_and_reaches_the_caller(caplog):
    """The interrupted caller sees its interrupt; the bus, maybe half-written, closes."""
    bus_box, armed = [None], [None]
    bus = bus_box[0] = SignalBus(_clock=_interrupting_clock(bus_box, armed))
    bus.emit("a")
    armed[0] = KeyboardInterrupt()
    with (
        caplog.at_level(logging.ERROR, logger="ephemeral_actors"),
        pytest.raises(KeyboardInterrupt),
    ):
        bus.emit("b")
    assert bus.is_closed
    with pytest.raises(RuntimeError, match=r"closed: its actor crashed \(KeyboardInterrupt\)"):
        bus.emit("c")
    assert names(bus.sense()) == ["a"]  # reads keep answering
    assert bus._ref not in pykka.ActorRegistry.get_all()
    assert any("interrupted (KeyboardInterrupt)" in r.getMessage() for r in caplog.records)
    bus.close()  # idempotent after the crash


def test_a_crash_of_a_turn_the_bus_runs_on_another_thread_fails_that_call_only(caplog):
    """Off the main thread an interrupt is no caller's: it is the bus's crash, logged."""
    bus_box, armed = [None], [None]
    bus = bus_box[0] = SignalBus(_clock=_interrupting_clock(bus_box, armed))
    armed[0] = KeyboardInterrupt()
    raised = []

    def emit():
        try:
            bus.emit("a")
        except BaseException as exc:
            raised.append(exc)

    with caplog.at_level(logging.ERROR, logger="ephemeral_actors"):
        thread = threading.Thread(target=emit)
        thread.start()
        thread.join(WAIT)
    (error,) = raised
    assert isinstance(error, RuntimeError)
    assert "its actor crashed (KeyboardInterrupt)" in str(error)
    (record,) = [r for r in caplog.records if "its actor crashed" in r.getMessage()]
    assert isinstance(record.exc_info[1], KeyboardInterrupt)
    assert bus.is_closed
