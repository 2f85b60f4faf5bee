"""Ctrl-C at any bytecode of the main thread leaves every coordinator usable or faulted,
never wedged.

Python runs signal handlers in the main thread between bytecodes (at the end of a call,
at a function's start, at a loop's back-edge), and the main thread runs supervisor turns
itself (an idle coordinator's `enqueue` is one). These tests fire real timer signals at
random instants into loops of public calls, hundreds of times, and check after each that
the coordinator can still be closed and that every accepted item was settled. They used
to hang: an interrupt landing just after a turn took the supervisor's flag, and before
the `try` that gives it back, left the flag taken for good, so the next call (`close()`
too) waited forever.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import random
import signal
import threading
from typing import TYPE_CHECKING, Any

import pytest

from ephemeral_actors import CoordinatorFaultedError, SignalBus, WorkCoordinator
from tests.conftest import WAIT

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.skipif(
    not hasattr(signal, "setitimer"), reason="needs setitimer (POSIX timer signals)"
)

ROUNDS = 150


_armed = [False]
_raises: list[type[BaseException]] = [KeyboardInterrupt]
_again: list[random.Random | None] = [None]


def _interrupt(signum: int, frame: object) -> None:
    if _armed[0]:  # a signal already pending when the timer was stopped is not raised
        again = _again[0]
        if again is not None:
            # A second interrupt a few microseconds of CPU later: into the handling of
            # this one (the crash path of the turn it may strike).
            signal.setitimer(signal.ITIMER_VIRTUAL, again.uniform(1e-6, 60e-6))
        raise _raises[0]


def _disarm() -> None:
    """Stop the timer; no interrupt is raised after this returns."""
    _armed[0] = False
    signal.setitimer(signal.ITIMER_VIRTUAL, 0)


def _in_time(call: Callable[[], object]) -> bool:
    """Run `call` on another thread; False if it did not return within WAIT (wedged)."""
    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    caller.join(WAIT)
    return not caller.is_alive()


@contextlib.contextmanager
def _timer_signals(raised: type[BaseException], *, twice: bool = False) -> Iterator[None]:
    """Timer signals raise `raised` (and, `twice`, a second one right after) in this block."""
    _raises[0] = raised
    _again[0] = random.Random(20261204) if twice else None
    previous = signal.signal(signal.SIGVTALRM, _interrupt)
    # The collector would run earlier rounds' finalizers at any allocation, and an
    # interrupt striking in one is printed and dropped: collect between rounds instead.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        _disarm()
        _again[0] = None
        signal.signal(signal.SIGVTALRM, previous)
        if gc_was_enabled:
            gc.enable()


def _until_interrupted(
    loop: Callable[[], None], rng: random.Random, stops: tuple[type[BaseException], ...]
) -> None:
    """Run `loop` (which never returns) under repeating timer signals until one of
    `stops` ends it; no interrupt is raised after this returns."""
    try:
        # Repeating: an interrupt that lands where Python drops it (a finalizer) must
        # not leave the loop running for ever.
        delay = rng.uniform(20e-6, 600e-6)
        _armed[0] = True
        signal.setitimer(signal.ITIMER_VIRTUAL, delay, delay)
        loop()
    except stops:
        _armed[0] = False  # first, and no call before it: no second interrupt
    finally:
        _disarm()


def _loop_enqueue(c: WorkCoordinator[Any, Any]) -> None:
    i = 0
    while True:
        c.enqueue(i)
        i += 1


def _loop_mixed(c: WorkCoordinator[Any, Any]) -> None:
    i = 0
    while True:
        c.enqueue(i)
        if i % 7 == 0:
            c.stats()  # a state query: a call into the supervisor's turn
        if i % 11 == 0:
            c.enqueue_many(range(5))  # drawn by the supervisor in its turn
        i += 1


def _loop_submit(c: WorkCoordinator[Any, Any]) -> None:
    i = 0
    while True:
        c.submit(i).result(WAIT)
        i += 1


@pytest.mark.parametrize(
    ("loop", "raised", "twice"),
    [
        (_loop_enqueue, KeyboardInterrupt, False),
        (_loop_mixed, KeyboardInterrupt, False),
        (_loop_submit, KeyboardInterrupt, False),
        # A SIGTERM handler that exits (`sys.exit` raises SystemExit): any exception that
        # is not an `Exception`, raised in the main thread, takes the interrupt's path.
        (_loop_mixed, SystemExit, False),
        # Ctrl-C pressed twice, or a fast repeating signal: the second one strikes while
        # the first is handled (where it struck a turn: as the supervisor dies of it).
        (_loop_mixed, KeyboardInterrupt, True),
    ],
    ids=["enqueue", "mixed", "submit", "mixed-SystemExit", "mixed-twice"],
)
def test_interrupts_at_random_instants_never_wedge_a_coordinator(
    loop: Callable[[WorkCoordinator[Any, Any]], None],
    raised: type[BaseException],
    twice: bool,
) -> None:
    rng = random.Random(20261202)
    wedged = 0
    unsettled: list[tuple[int, int, int, bool]] = []
    landed_in_a_turn = 0
    with _timer_signals(raised, twice=twice):
        for _ in range(ROUNDS):
            c: WorkCoordinator[Any, Any] = WorkCoordinator(lambda _: None, max_concurrency=2)
            # Faulted: the interrupt struck in a turn, then the loop called again.
            _until_interrupted(functools.partial(loop, c), rng, (raised, CoordinatorFaultedError))
            landed_in_a_turn += c.is_faulted
            if not _in_time(c.close):
                wedged += 1
                break  # each wedge costs WAIT seconds: one is enough to fail
            gc.collect()
            s = c.stats()
            if s.total_enqueued != s.total_completed + s.total_failed + s.total_cancelled:
                unsettled.append((s.total_enqueued, s.pending_count, s.active_count, c.is_faulted))
    assert wedged == 0, "an interrupt left a coordinator that never closed"
    assert unsettled == [], f"accepted items left unsettled after close: {unsettled}"
    # The test is only worth something if interrupts land inside turns as well as between.
    assert landed_in_a_turn > 0


def _loop_bus(bus: SignalBus) -> None:
    i = 0
    while True:
        bus.emit("tick")
        if i % 5 == 0:
            bus.sense()
        if i % 13 == 0:
            bus.subscribe("never", print).unsubscribe()
        i += 1


def test_interrupts_at_random_instants_close_a_signal_bus_never_wedge_it() -> None:
    """The bus is watched: a turn an interrupt tears closes the bus, as a crash would.

    Without its crash handler the interrupt left the bus open with its window possibly
    half-written; an interrupt while the turn answered its requests could leave a
    sender waiting for ever.
    """
    rng = random.Random(20261205)
    wedged = 0
    crashed = 0
    broken: list[str] = []
    with _timer_signals(KeyboardInterrupt):
        for _ in range(ROUNDS):
            bus = SignalBus()
            _until_interrupted(
                functools.partial(_loop_bus, bus), rng, (KeyboardInterrupt, RuntimeError)
            )
            if not _in_time(bus.sense):
                wedged += 1
                break
            if bus.is_closed:
                crashed += 1
                try:
                    bus.emit("after")
                except RuntimeError as exc:
                    if "crashed" not in str(exc):
                        broken.append(f"closed bus said {exc}")
                else:
                    broken.append("a crashed bus accepted an emit")
            else:
                bus.emit("after")
                if bus.sense()[-1].signal != "after":
                    broken.append("an open bus lost an emit")
            if not _in_time(bus.close):
                wedged += 1
                break
            gc.collect()
    assert wedged == 0, "an interrupt left a bus whose calls never returned"
    assert broken == []
    # Worth something only if interrupts landed inside the bus's turns.
    assert crashed > 0
