"""`SignalBus` as an actor (SPEC 14): no thread, callbacks off its turn, exact `holds`,
bounded memory, `actor_stats()` and the ownership check mode."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

import pykka
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ephemeral_actors import ActorStats
from ephemeral_actors._signals import SignalBus, SignalEvent, matches
from ephemeral_actors.testing import library_threads
from tests.conftest import WAIT
from tests.isolated import run_isolated


class FakeClock:
    """Seconds since the epoch that only move when a test says so."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def bus() -> Any:
    bus = SignalBus(name="t")
    yield bus
    bus.close()


def in_thread(call: Callable[[], Any]) -> threading.Thread:
    """Run `call` on a daemon thread (a hung one cannot keep the process alive)."""
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def finishes(call: Callable[[], Any]) -> bool:
    """True if `call` returns on another thread within WAIT (False: it is blocked)."""
    thread = in_thread(call)
    thread.join(WAIT)
    return not thread.is_alive()


def until(condition: Callable[[], bool]) -> None:
    """Spin until `condition()` holds (for states no event announces); fail after WAIT."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "condition never held"


def index_size(bus: SignalBus) -> int:
    view = bus._state.view
    return len(view.old) + len(view.young)


# -- no thread --------------------------------------------------------------------------------


def test_a_bus_starts_no_thread_even_with_subscribers_and_pykka_stop():
    """Neither construction, delivery, a Pykka stop nor close() starts a thread."""
    before = set(threading.enumerate())
    bus = SignalBus()
    seen: list[str] = []
    bus.subscribe("*", lambda event: seen.append(event.signal))
    bus.emit("a")
    assert bus._ref.is_alive()
    bus._ref.stop()
    assert bus.is_closed
    assert not bus._ref.is_alive()
    bus.close()
    assert seen == ["a"]
    assert set(threading.enumerate()) == before
    assert not [t for t in library_threads() if t not in before]


def test_close_unregisters_the_pykka_face(bus):
    """The bus's Pykka ref is registered while open, and dead and unregistered after close."""
    assert bus._ref in pykka.ActorRegistry.get_all()
    bus.close()
    assert bus._ref not in pykka.ActorRegistry.get_all()
    assert not bus._ref.is_alive()
    with pytest.raises(pykka.ActorDeadError):
        bus._ref.tell("hello")


# -- user code never runs in the bus's turn -------------------------------------------------


def test_a_slow_callback_does_not_delay_other_emits_or_reads(bus):
    """While one emitter's callback blocks, other threads emit, read, clear and subscribe."""
    entered, gate = threading.Event(), threading.Event()
    bus.subscribe("slow", lambda event: (entered.set(), gate.wait(WAIT)))
    fast: list[str] = []
    bus.subscribe("fast", lambda event: fast.append(event.signal))
    slow_emitter = in_thread(lambda: bus.emit("slow"))
    try:
        assert entered.wait(WAIT)
        assert finishes(lambda: bus.emit("fast"))
        assert fast == ["fast"]
        assert finishes(bus.sense)
        assert [e.signal for e in bus.sense()] == ["slow", "fast"]
        assert finishes(lambda: bus.detect("fast"))
        assert finishes(lambda: bus.subscribe("*", print, replay=False).unsubscribe())
        assert finishes(lambda: bus.clear_pattern("fast"))
        assert bus.count == 1
        assert slow_emitter.is_alive()  # its emit waits for its own callback
    finally:
        gate.set()
        slow_emitter.join(WAIT)


def test_an_emit_waits_for_a_matching_callback_running_on_another_thread(bus):
    """A subscription sees one event at a time: a second emitter's event waits for the
    first callback, and the callback sees both in window order."""
    entered, gate = threading.Event(), threading.Event()
    seen: list[str] = []

    def slow(event: SignalEvent) -> None:
        if event.signal == "first":
            entered.set()
            assert gate.wait(WAIT)
        seen.append(event.signal)

    bus.subscribe("*", slow)
    first = in_thread(lambda: bus.emit("first"))
    assert entered.wait(WAIT)
    returned = threading.Event()
    second = in_thread(lambda: (bus.emit("second"), returned.set()))
    # "second" is in the window at once; its emit returns only after its callback,
    # which waits for the callback of "first".
    until(lambda: bus.count == 2)
    assert not returned.is_set()
    gate.set()
    first.join(WAIT)
    second.join(WAIT)
    assert returned.is_set()
    assert seen == ["first", "second"]


# -- calling back into the bus --------------------------------------------------------------


def test_a_callback_emitting_into_its_own_subscription_is_delivered_nested(bus):
    """The inner emit returns after its own event was delivered, in window order."""
    seen: list[str] = []

    def react(event: SignalEvent) -> None:
        seen.append(event.signal)
        if event.signal == "a1":
            bus.emit("a2")
            seen.append("inner emit returned")

    bus.subscribe("a*", react)
    bus.emit("a1")
    assert seen == ["a1", "a2", "inner emit returned"]


def test_a_callback_may_unsubscribe_itself_subscribe_with_replay_and_clear(bus):
    """unsubscribe (own subscription), subscribe(replay=True), clear and close from a
    callback all return."""
    seen: list[str] = []
    replayed: list[str] = []
    own: Any = None

    def react(event: SignalEvent) -> None:
        seen.append(event.signal)
        own.unsubscribe()
        bus.subscribe("*", lambda e: replayed.append(e.signal), replay=True)
        bus.emit("after")  # not delivered to `react`: unsubscribed
        assert bus.clear_pattern("after") == 1

    own = bus.subscribe("*", react)
    bus.emit("a")
    assert seen == ["a"]
    assert replayed == ["a", "after"]
    assert not own.active


def test_callbacks_on_two_threads_emitting_into_each_other_do_not_deadlock(bus):
    """Two callbacks running at once on two threads, each emitting an event the other's
    subscription must see: neither waits for the other, and both events arrive."""
    both_inside = threading.Barrier(2, timeout=WAIT)
    xs: list[str] = []
    ys: list[str] = []

    def on_x(event: SignalEvent) -> None:
        xs.append(event.signal)
        if event.signal == "x":
            both_inside.wait()
            bus.emit("y.from-x")

    def on_y(event: SignalEvent) -> None:
        ys.append(event.signal)
        if event.signal == "y":
            both_inside.wait()
            bus.emit("x.from-y")

    bus.subscribe("x*", on_x)
    bus.subscribe("y*", on_y)
    threads = [in_thread(lambda: bus.emit("x")), in_thread(lambda: bus.emit("y"))]
    for thread in threads:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads), "deadlocked"
    assert sorted(xs) == ["x", "x.from-y"]
    assert sorted(ys) == ["y", "y.from-x"]


# -- unsubscribe ------------------------------------------------------------------------------


def test_unsubscribe_drops_events_queued_behind_a_running_callback(bus):
    """An event queued for a subscription while its callback runs elsewhere is not
    delivered once unsubscribe() has been handled; its emitter returns."""
    entered, gate = threading.Event(), threading.Event()
    seen: list[str] = []

    def slow(event: SignalEvent) -> None:
        seen.append(event.signal)
        if event.signal == "first":
            entered.set()
            assert gate.wait(WAIT)

    subscription = bus.subscribe("*", slow)
    first = in_thread(lambda: bus.emit("first"))
    assert entered.wait(WAIT)
    second = in_thread(lambda: bus.emit("second"))
    until(lambda: bus.count == 2)  # "second" is in the window, so queued for `slow`
    subscription.unsubscribe(wait=False)  # sends the request; the bus is idle, so handled
    unsubscribed = in_thread(subscription.unsubscribe)  # waits for `slow` to return
    gate.set()
    for thread in (first, second, unsubscribed):
        thread.join(WAIT)
        assert not thread.is_alive()
    assert seen == ["first"]


def test_unsubscribe_waits_for_a_callback_running_on_another_thread(bus):
    """unsubscribe() returns only after the subscription's running callback returned."""
    entered, gate = threading.Event(), threading.Event()
    order: list[str] = []

    def slow(event: SignalEvent) -> None:
        entered.set()
        assert gate.wait(WAIT)
        order.append("callback returned")

    subscription = bus.subscribe("*", slow)
    emitter = in_thread(lambda: bus.emit("a"))
    assert entered.wait(WAIT)
    unsubscriber = in_thread(lambda: (subscription.unsubscribe(), order.append("unsubscribed")))
    gate.set()
    emitter.join(WAIT)
    unsubscriber.join(WAIT)
    assert order == ["callback returned", "unsubscribed"]
    bus.emit("b")
    assert order == ["callback returned", "unsubscribed"]


# -- holds ----------------------------------------------------------------------------------


def test_holds_follows_clears_evictions_and_age():
    """holds(event) is True exactly while that event object is in the window."""
    clock = FakeClock()
    with SignalBus(max_capacity=2, max_age=10, _clock=clock) as bus:
        a = bus.emit("a", key="k")
        assert bus.holds(a)
        twin = SignalEvent(a.signal, a.operation_id, a.key, a.timestamp, a.propagation)
        assert twin == a
        assert not bus.holds(twin)  # identity, not equality
        b = bus.emit("b")
        c = bus.emit("c")  # evicts a
        assert not bus.holds(a)
        assert bus.holds(b)
        assert bus.holds(c)
        assert bus.clear_pattern("b") == 1
        assert not bus.holds(b)
        assert bus.holds(c)
        clock.now += 10
        assert bus.holds(c)  # exactly max_age old is still present
        clock.now += 0.5
        assert not bus.holds(c)  # no message needed: age is checked on read
        d = bus.emit("d")
        bus.close()
        assert bus.holds(d)  # the final window still counts after close


def test_holds_sends_no_message(bus):
    """holds() is answered from the published view: the mailbox counter does not move."""
    event = bus.emit("a")
    before = bus.actor_stats().messages_processed
    assert bus.holds(event)
    assert bus.actor_stats().messages_processed == before


def test_the_index_stays_bounded_however_many_events_pass():
    """Nothing in the bus grows per emit beyond max_capacity (issue 13, finding 11)."""
    with SignalBus(max_capacity=10) as bus:
        subscription = bus.subscribe("*", lambda event: None)
        compact_every = bus._state.compact_every
        largest = 0
        for n in range(20_000):
            bus.emit(f"s{n % 7}")
            if n % 97 == 0:
                bus.clear_pattern("s3")
            largest = max(largest, index_size(bus))
        assert bus.count <= 10
        assert largest <= 10 + compact_every
        assert not subscription._route.queue


# -- actor_stats ----------------------------------------------------------------------------


def test_actor_stats_count_messages_and_answer_after_close():
    """role "bus"; one actor while open, none after close; every call is one message."""
    bus = SignalBus()
    assert bus.actor_stats() == ActorStats("bus", 1, 0, 0)
    subscription = bus.subscribe("*", lambda event: None)
    bus.emit("a")
    bus.sense()
    assert bus.clear() == 1
    subscription.unsubscribe()
    assert bus.actor_stats() == ActorStats("bus", 1, 0, 5)
    bus.close()
    assert bus.actor_stats() == ActorStats("bus", 0, 0, 6)
    assert bus.sense() == ()
    assert bus.actor_stats().messages_processed == 7


# -- window invariants ----------------------------------------------------------------------

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("emit"), st.sampled_from("abc"), st.sampled_from(["k1", "k2"])),
        st.tuples(st.just("clear_pattern"), st.sampled_from(["a", "b*", "*"]), st.none()),
        st.tuples(st.just("clear_key"), st.sampled_from(["k1", "k2"]), st.none()),
        st.tuples(st.just("advance"), st.sampled_from([0.5, 3.0, 11.0]), st.none()),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(capacity=st.integers(min_value=1, max_value=6), ops=_ops)
def test_window_matches_a_model(capacity, ops):
    """Against a list model: sense(), count, holds() and the index bound always agree."""
    clock = FakeClock()
    max_age = 10.0
    model: list[tuple[float, SignalEvent]] = []
    emitted: list[SignalEvent] = []
    delivered: list[SignalEvent] = []
    with SignalBus(max_capacity=capacity, max_age=max_age, _clock=clock) as bus:
        bus.subscribe("*", delivered.append)
        for op, arg, key in ops:
            if op == "emit":
                event = bus.emit(arg, key=key)
                emitted.append(event)
                model.append((clock.now, event))
                del model[:-capacity]
            elif op == "clear_pattern":
                live = [e for t, e in model if t >= clock.now - max_age]
                gone = [e for e in live if matches(e.signal, arg)]
                assert bus.clear_pattern(arg) == len(gone)
                model = [(t, e) for t, e in model if t >= clock.now - max_age and e not in gone]
            elif op == "clear_key":
                live = [(t, e) for t, e in model if t >= clock.now - max_age]
                assert bus.clear_key(arg) == sum(e.key == arg for _, e in live)
                model = [(t, e) for t, e in live if e.key != arg]
            else:
                clock.now += arg
            present = [e for t, e in model if t >= clock.now - max_age]
            assert list(bus.sense()) == present
            assert bus.count == len(present) <= capacity
            for event in emitted:
                assert bus.holds(event) == any(event is e for e in present)
            assert index_size(bus) <= capacity + bus._state.compact_every
        assert delivered == emitted


# -- ownership check mode -------------------------------------------------------------------


def test_ownership_mode_catches_a_write_from_outside_the_bus_turn():
    """With EPHEMERAL_ACTORS_CHECK_OWNERSHIP=1, the bus's own traffic passes and a write
    to its state from outside its turn raises AssertionError naming the state."""
    out = run_isolated(
        """
        import os
        os.environ["EPHEMERAL_ACTORS_CHECK_OWNERSHIP"] = "1"
        from ephemeral_actors._signals import SignalBus
        from ephemeral_actors._mailbox import CHECK_OWNERSHIP
        assert CHECK_OWNERSHIP

        bus = SignalBus(max_capacity=2, name="checked")
        seen = []
        subscription = bus.subscribe("*", seen.append, replay=True)
        for name in "abc":
            bus.emit(name)
        bus.clear_pattern("b")
        subscription.unsubscribe()
        try:
            bus._state.next_seq = 0
        except AssertionError as exc:
            print("caught:", exc)
        else:
            raise SystemExit("a write from outside the turn was not caught")
        bus._ref.stop()  # a Pykka stop closes the bus in its turn: no false alarm
        assert bus.is_closed and [e.signal for e in bus.sense()] == ["c"]
        bus.close()
        print("seen:", "".join(e.signal for e in seen))
        """
    )
    assert "caught: SignalBus.next_seq of <bus actor SignalBus 'checked'>" in out
    assert "written outside its owner's turn" in out
    assert "seen: abc" in out


def test_max_age_as_timedelta_still_bounds_holds():
    """A timedelta max_age is honoured by holds as by reads."""
    clock = FakeClock()
    with SignalBus(max_age=dt.timedelta(seconds=5), _clock=clock) as bus:
        event = bus.emit("a")
        clock.now += 6
        assert not bus.holds(event)
        assert bus.count == 0
