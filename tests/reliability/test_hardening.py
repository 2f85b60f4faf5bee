"""Regression tests for the coordinator-core findings of issue 13 (see docs/reliability.md).

Each test is named after its finding. Where the failure was a hang, a fork or an exit,
the scenario runs in a child process (`tests/isolated.py`) whose own watchdog dumps
every thread's stack and exits, so the suite can never hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import weakref
from typing import Any

import pytest

from ephemeral_actors import (
    KeyedWorkCoordinator,
    NoCurrentOperationError,
    SignalBus,
    SignalCancelledError,
    WorkCoordinator,
    current_operation,
)
from ephemeral_actors import messages as m
from ephemeral_actors.testing import use_clock
from tests.conftest import WAIT
from tests.isolated import run_isolated

PRELUDE = """
import asyncio, faulthandler, gc, os, sys, threading, time
faulthandler.dump_traceback_later(40, exit=True)  # a hang shows every stack, then exits
from ephemeral_actors import *
from ephemeral_actors.testing import library_threads
WAIT = 20.0

def no_library_threads(wait=WAIT):
    for t in library_threads():
        t.join(wait)
    alive = [t.name for t in library_threads() if t.is_alive()]
    assert not alive, alive
"""


def isolated(body: str) -> str:
    """Run `PRELUDE` + `body` in a child process; its stdout."""
    import textwrap  # noqa: PLC0415

    return run_isolated(PRELUDE + textwrap.dedent(body))


# -- finding 1: close() inside a body while another body runs ------------------------------


@pytest.mark.parametrize("kind", ["plain", "coroutine"])
def test_finding_1_close_inside_a_body_returns_while_another_body_runs(kind: str) -> None:
    """close() called by one body returns at once; the coordinator closes once the other returns."""
    out = isolated(
        f"""
        gate, returned = threading.Event(), threading.Event()
        def work(item):
            if item == "closer":
                c.close()
                returned.set()
            else:
                gate.wait(WAIT)
        async def awork(item):
            if item == "closer":
                c.close()
                returned.set()
            else:
                while not gate.is_set():
                    await asyncio.sleep(0.001)
        c = WorkCoordinator(work if {kind!r} == "plain" else awork, max_concurrency=2)
        c.enqueue("blocker")
        c.enqueue("closer")
        assert returned.wait(WAIT), "close() inside a body did not return"
        assert c.is_completed
        gate.set()
        c.close(WAIT)
        no_library_threads()
        print("ok", c.stats().total_completed)
        """
    )
    assert out.split() == ["ok", "2"]


# -- finding 2: on_sample calling close() while a body runs --------------------------------


def test_finding_2_on_sample_closing_while_a_body_runs_leaves_no_thread() -> None:
    """close() from on_sample returns; queries answer; a later close() waits; threads end."""
    out = isolated(
        """
        gate, closed_in_sample = threading.Event(), threading.Event()
        def work(item):
            if item == "slow":
                gate.wait(WAIT)
        def on_sample(window):
            if not closed_in_sample.is_set():
                c.close()
                closed_in_sample.set()
        c = WorkCoordinator(work, max_concurrency=2, on_sample=on_sample)
        c.enqueue("slow")
        c.enqueue("fast")
        assert closed_in_sample.wait(WAIT), "close() inside on_sample did not return"
        c.stats(); c.get_snapshot()  # the supervisor is not blocked
        gate.set()
        c.close(WAIT)
        assert c._core.closed_event.is_set()
        no_library_threads()
        print("ok")
        """
    )
    assert out.strip() == "ok"


# -- finding 3: from_iterable(async source) awaiting forever --------------------------------


def test_finding_3_close_cancels_an_async_source_that_awaits_forever() -> None:
    """close() returns and cancels the feeder task; nothing is left on the shared loop."""
    out = isolated(
        """
        started, cancelled = threading.Event(), threading.Event()
        async def source():
            yield 1
            started.set()
            try:
                await asyncio.Event().wait()  # never set
            except asyncio.CancelledError:
                cancelled.set()
                raise
            yield 2
        async def body(item):
            pass
        c = WorkCoordinator.from_iterable(source(), body)
        assert started.wait(WAIT)
        c.close()
        assert cancelled.is_set(), "the feeder task was not cancelled"
        no_library_threads()
        s = c.stats()
        print("ok", s.total_enqueued, s.total_completed)
        """
    )
    assert out.split() == ["ok", "1", "1"]


def test_finding_3_close_with_a_timeout_does_not_leave_the_feeder_on_the_loop() -> None:
    """close(timeout) also cancels the feeder; the shared loop then stops."""
    out = isolated(
        """
        started = threading.Event()
        async def source():
            started.set()
            await asyncio.Event().wait()
            yield 1
        c = KeyedWorkCoordinator.from_iterable(source(), lambda i: i, lambda i: None)
        assert started.wait(WAIT)
        c.close(timeout=5.0)
        no_library_threads()
        from ephemeral_actors._runtime import SHARED_LOOP
        assert SHARED_LOOP._tasks == 0 and SHARED_LOOP._loop is None, SHARED_LOOP
        print("ok")
        """
    )
    assert out.strip() == "ok"


# -- finding 4: close(timeout) abandoning a body while on_sample is busy --------------------


def test_finding_4_drain_returns_after_close_abandoned_a_body_behind_a_busy_on_sample() -> None:
    """The abandoned body's late outcome settles even though the callbacks actor was stopped."""
    body_gate, sample_gate, sampling = threading.Event(), threading.Event(), threading.Event()

    def work(item: str) -> None:
        if item == "slow":
            body_gate.wait(WAIT)

    def on_sample(_window: object) -> None:
        sampling.set()
        sample_gate.wait(WAIT)

    c = WorkCoordinator(work, max_concurrency=2, on_sample=on_sample)
    try:
        c.enqueue("slow")
        c.enqueue("fast")
        assert sampling.wait(WAIT)
        c.close(timeout=0.2)  # abandons "slow"; on_sample is still busy with "fast"
        body_gate.set()  # "slow" ends after close() stopped the callbacks actor
        sample_gate.set()
        c.drain(WAIT)  # used to raise TimeoutError: the late sample was never settled
        s = c.stats()
        assert s.total_completed == 2
        assert s.is_drained
    finally:
        body_gate.set()
        sample_gate.set()


# -- finding 5: a task cancelled while `async with` awaits close() --------------------------


def test_finding_5_cancelling_async_with_exit_does_not_block_the_loop() -> None:
    """The cancelled task ends at once; the loop keeps running while close() finishes."""
    gate, running = threading.Event(), threading.Event()
    watchdog = threading.Timer(WAIT, gate.set)  # unblocks a broken run, and tells us

    def work(_item: int) -> None:
        running.set()
        gate.wait(WAIT * 2)

    class Stop(Exception):
        """Leaves the `async with` block."""

    async def scenario() -> bool:
        c = WorkCoordinator(work)

        async def user() -> None:
            async with c:
                await c.enqueue_async(1)
                await asyncio.to_thread(running.wait, WAIT)
                raise Stop

        task = asyncio.create_task(user())
        while not c._core.closing:  # noqa: ASYNC110 - set by close() on another thread
            await asyncio.sleep(0.001)
        task.cancel()
        await asyncio.wait([task], timeout=WAIT)
        ended_first = task.done() and not gate.is_set()
        with contextlib.suppress(asyncio.CancelledError, Stop):
            await task
        return ended_first

    watchdog.start()
    try:
        assert asyncio.run(scenario()), "the event loop was blocked until the body ended"
    finally:
        watchdog.cancel()
        gate.set()


# -- finding 6: fork ---------------------------------------------------------------------------


def test_finding_6_new_coordinators_work_in_a_forked_child() -> None:
    """After fork with coroutine, keyed and deferring coordinators open, the child's new ones work."""
    out = isolated(
        """
        import signal
        async def abody(item):
            await asyncio.sleep(0)
        bus = SignalBus()
        old = [
            WorkCoordinator(abody),
            KeyedWorkCoordinator(lambda i: i % 3, lambda i: None, key_idle_timeout=0.01),
            WorkCoordinator(lambda i: None, signals=bus, defer_on_signals="hold",
                            defer_check_interval=0.01, max_defer_attempts=10**6),
        ]
        for c in old:
            for i in range(20):
                c.enqueue(i)
        bus.emit("hold")  # the third one defers, with a timer armed on the dispatcher
        old[0].complete(); old[0].drain(WAIT)
        old[1].complete(); old[1].drain(WAIT)
        time.sleep(0.05)  # let the key reaper and the defer timer run at fork time

        def child():
            done = []
            c1 = WorkCoordinator(abody)
            c2 = KeyedWorkCoordinator(lambda i: i % 3, lambda i: done.append(i),
                                      key_idle_timeout=0.01)
            b2 = SignalBus()
            c3 = WorkCoordinator(lambda i: None, signals=b2, defer_on_signals="hold",
                                 resume_on_signals="go", defer_check_interval=0.01)
            b2.emit("hold")
            for c in (c1, c2, c3):
                for i in range(30):
                    c.enqueue(i)
            b2.emit("go")
            for c in (c1, c2, c3):
                c.complete(); c.drain(WAIT)
                assert c.stats().total_completed == 30, c.stats()
                c.close(WAIT)
            no_library_threads()

        pid = os.fork()
        if pid == 0:
            # No faulthandler here: its watchdog thread did not survive the fork (re-arming
            # it would wait for that thread). The parent kills a hung child instead.
            try:
                child()
            except BaseException:
                import traceback; traceback.print_exc()
                os._exit(1)
            os._exit(0)
        deadline = time.monotonic() + 35
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError("the forked child hung")
            time.sleep(0.01)
        assert os.waitstatus_to_exitcode(status) == 0, status
        bus.emit("go-away")
        for c in old:
            c.close(WAIT)
        print("ok")
        """
    )
    assert out.strip().endswith("ok")


# -- finding 7: a key whose hash changes while its item runs ---------------------------------


class MutableKey:
    """A key whose hash follows a field the test changes (a user bug we must survive)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __hash__(self) -> int:
        return hash(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MutableKey) and other.value == self.value

    def __str__(self) -> str:
        return f"key{self.value}"


def test_finding_7_the_key_captured_at_intake_is_the_one_used() -> None:
    """Items whose key's hash changed while they ran still end; later items start; drain returns."""
    key = MutableKey(1)
    gate, running = threading.Event(), threading.Event()
    seen: list[int] = []

    def work(item: tuple[MutableKey, int]) -> None:
        seen.append(item[1])
        if item[1] == 0:
            running.set()
            gate.wait(WAIT)

    c = KeyedWorkCoordinator(lambda item: item[0], work, key_idle_timeout=0.001)
    try:
        c.enqueue((key, 0))
        c.enqueue((key, 1))  # waits behind item 0: same key as captured at intake
        assert running.wait(WAIT)
        key.value = 2  # the hash changes while item 0 runs
        c.enqueue((key, 2))  # a new key now (hash 2), it may start at once
        gate.set()
        c.complete()
        c.drain(WAIT)
        assert sorted(seen) == [0, 1, 2]
        assert seen.index(0) < seen.index(1)
        assert c.stats().total_completed == 3
        assert c.get_pending_count_for_key(key) == 0
    finally:
        gate.set()
        c.close(WAIT)


def test_finding_7_reaping_survives_keys_whose_hash_keeps_changing() -> None:
    """Passivating idle children never looks a mutated key up again (no supervisor crash)."""
    key = MutableKey(1)
    c = KeyedWorkCoordinator(lambda item: item[0], lambda item: None, key_idle_timeout=0.001)
    try:
        for round_ in range(20):
            c.enqueue((key, round_))
            key.value += 1
            assert c._core.wait_idle(None, 0)
        c.complete()
        c.drain(WAIT)
        assert not c.is_faulted
        assert c.stats().total_completed == 20
    finally:
        c.close(WAIT)


# -- finding 8: self-waits ---------------------------------------------------------------------


def test_finding_8_drain_inside_its_own_body_raises() -> None:
    """drain() inside a body raises RuntimeError at once instead of waiting for itself."""
    errors: list[BaseException] = []

    def work(_item: int) -> None:
        try:
            c.drain()
        except BaseException as exc:
            errors.append(exc)

    c = WorkCoordinator(work)
    try:
        c.enqueue(1)
        c.complete()
        c.drain(WAIT)
        assert len(errors) == 1
        assert isinstance(errors[0], RuntimeError)
        assert "wait for itself" in str(errors[0])
    finally:
        c.close(WAIT)


@pytest.mark.parametrize("how", ["to_thread", "direct"])
def test_finding_8_on_signal_async_handler_closing_its_coordinator_does_not_hang(how: str) -> None:
    """A handler awaiting close() (or calling it) returns; the coordinator then closes fully."""
    out = isolated(
        f"""
        returned = threading.Event()
        async def handler(event):
            if {how!r} == "to_thread":
                await asyncio.to_thread(c.close)
            else:
                c.close()
            returned.set()
        def work(item):
            current_operation().signal("done")
        c = WorkCoordinator(work, on_signal_async=handler)
        c.enqueue(1)
        assert returned.wait(WAIT), "close() inside on_signal_async did not return"
        c.close(WAIT)
        assert c._core.closed_event.is_set()
        no_library_threads()
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_finding_8_drain_inside_on_signal_async_raises() -> None:
    """drain() from the coordinator's own async signal handler raises RuntimeError."""
    errors: list[BaseException] = []
    handled = threading.Event()

    async def handler(_event: object) -> None:
        try:
            await c.drain_async()
        except BaseException as exc:
            errors.append(exc)
        handled.set()

    c = WorkCoordinator(lambda _i: current_operation().signal("x"), on_signal_async=handler)
    try:
        c.enqueue(1)
        c.complete()
        assert handled.wait(WAIT)
        assert len(errors) == 1
        assert isinstance(errors[0], RuntimeError), errors
    finally:
        c.close(WAIT)


# -- finding 9: two concurrent close() calls ---------------------------------------------------


def test_finding_9_a_concurrent_close_returns_only_once_closed() -> None:
    """The second close() waits for the first: it never returns while a body still runs."""
    gate, running = threading.Event(), threading.Event()

    def work(_item: int) -> None:
        running.set()
        gate.wait(WAIT)

    c = WorkCoordinator(work)
    early: list[bool] = []

    def second() -> None:
        c.close()
        early.append(not gate.is_set() or not c._core.closed_event.is_set())

    try:
        c.enqueue(1)
        assert running.wait(WAIT)
        first = threading.Thread(target=c.close)
        first.start()
        while not c._core.closing:
            threading.Event().wait(0.001)
        other = threading.Thread(target=second)
        other.start()
        other.join(0.3)  # a broken second close() returns here, with the body running
        gate.set()
        other.join(WAIT)
        first.join(WAIT)
        assert early == [False]
    finally:
        gate.set()


# -- finding 10: KeyboardInterrupt/SystemExit from a key selector on actor intake ------------


def test_finding_10_base_exceptions_from_a_key_selector_stay_in_the_coordinator() -> None:
    """A tell(Enqueue) whose selector raises KeyboardInterrupt/SystemExit stops no actor."""
    out = isolated(
        """
        import pykka
        from ephemeral_actors import messages as m

        class Bystander(pykka.ThreadingActor):
            def on_receive(self, message):
                return "alive"

        def selector(item):
            if item == "int":
                raise KeyboardInterrupt
            if item == "exit":
                raise SystemExit(3)
            return item
        bystander = Bystander.start()
        other = WorkCoordinator(lambda i: None)
        c = KeyedWorkCoordinator(selector, lambda i: None)
        c.actor_ref.tell(m.Enqueue("int"))
        c.actor_ref.tell(m.Enqueue("exit"))
        c.actor_ref.tell(m.Enqueue("fine"))
        time.sleep(0.2)  # a stop_all() would run on a helper thread: give it time to hurt
        assert bystander.ask("ping", timeout=WAIT) == "alive"
        assert c.actor_ref.is_alive() and other.actor_ref.is_alive()
        assert not c.is_faulted and not other.is_faulted
        other.enqueue(1)
        c.complete(); c.drain(WAIT)
        assert c.stats().total_completed == 1, c.stats()
        c.close(WAIT); other.close(WAIT)
        bystander.stop()
        print("ok")
        """
    )
    assert out.strip() == "ok"


# -- finding 11: marks are pruned without waiting for an item ---------------------------------


def test_finding_11_cancel_and_defer_marks_stay_bounded_by_what_is_present() -> None:
    """50,000 matching emits on a 10-event bus leave a bounded number of marks."""
    bus = SignalBus(max_capacity=10)
    c = WorkCoordinator(
        lambda _i: None,
        signals=bus,
        cancel_on_signals="stop",
        defer_on_signals="hold",
        defer_check_interval=3600.0,
        max_defer_attempts=10**6,
    )
    try:
        for i in range(25_000):
            bus.emit("stop")
            bus.emit("hold")
            if i == 100:
                first = c._core.call(lambda: len(c._core.router.cancel_marks))
        router = c._core.router
        cancel, defer = c._core.call(lambda: (len(router.cancel_marks), len(router.defer_marks)))
        # Only 10 events are present; pruning is amortised, so allow a small multiple.
        assert cancel <= 64, cancel
        assert defer <= 64, defer
        assert first <= 64
        assert c.stats().is_deferred
    finally:
        c.close(WAIT)
        bus.close()


# -- finding 12: cancelled async waits leave no waiter -----------------------------------------


def test_finding_12_cancelled_async_waits_leave_no_waiters() -> None:
    """enqueue_async and drain_async cancelled by wait_for are withdrawn from the supervisor."""
    gate, running = threading.Event(), threading.Event()

    def work(_item: int) -> None:
        running.set()
        gate.wait(WAIT)

    c = WorkCoordinator(work, max_concurrency=1, max_tracked_operations=1)
    core = c._core
    try:
        c.enqueue(0)
        assert running.wait(WAIT)
        c.enqueue(1)  # the backlog is full now

        async def storm() -> int:
            accepted = 0
            for i in range(2_000):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(c.enqueue_async(i), 0.0001)
                    accepted += 1
            return accepted

        accepted = asyncio.run(storm())
        assert accepted == 0
        assert core.call(lambda: len(core.space_waiters)) == 0
        c.complete()

        async def drains() -> None:
            for _ in range(2_000):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(c.drain_async(), 0.0001)

        asyncio.run(drains())
        assert core.call(lambda: len(core.waiters)) == 0
    finally:
        gate.set()
        c.close(WAIT)


# -- finding 13: no payload kept -----------------------------------------------------------------


class Payload:
    """An item (and key) whose lifetime the test watches with a weakref."""

    def __init__(self, n: int) -> None:
        self.n = n


def _collected(ref: weakref.ref[Any]) -> bool:
    for _ in range(3):
        gc.collect()
        if ref() is None:
            return True
    return False


@pytest.mark.parametrize("how", ["enqueue", "actor", "submit"])
def test_finding_13_a_keyed_operation_keeps_no_key_after_it_ended(how: str) -> None:
    """The item (its own key) is gone from the operation once it ended, and from everything after close()."""
    ops: list[Any] = []
    c = KeyedWorkCoordinator(lambda o: o, lambda _o: ops.append(current_operation()))
    try:
        item = Payload(1)
        ref = weakref.ref(item)
        if how == "enqueue":
            c.enqueue(item)
        elif how == "submit":
            c.submit(item).result(WAIT)
        else:
            c.actor_ref.tell(m.Enqueue(item))
        del item
        c.complete()
        c.drain(WAIT)
        assert len(ops) == 1
        assert ops[0]._raw_key is None, "the ended operation keeps its raw key"
        c.close(WAIT)
        ops.clear()
        assert _collected(ref), gc.get_referrers(ref()) if ref() is not None else None
    finally:
        c.close(WAIT)


@pytest.mark.parametrize("kind", ["plain", "coroutine"])
def test_finding_13_the_supervisor_keeps_no_item_after_it_ran(kind: str) -> None:
    """After the last Enqueue ran, nothing of the library references the item (no close needed)."""

    def work(_o: Payload) -> None:
        pass

    async def awork(_o: Payload) -> None:
        pass

    c = WorkCoordinator(work if kind == "plain" else awork)
    try:
        item = Payload(1)
        ref = weakref.ref(item)
        c.actor_ref.tell(m.Enqueue(item))
        del item
        c.actor_ref.ask(m.GetStats(), timeout=WAIT)
        c._core.wait_idle(None, 0)
        assert c.stats().total_completed == 1
        assert _collected(ref), [type(r) for r in gc.get_referrers(ref())] if ref() else None
    finally:
        c.close(WAIT)


# -- finding 14: dropping an unclosed coordinator -----------------------------------------------


def test_finding_14_dropping_an_unclosed_coordinator_does_not_leak_its_threads_for_good() -> None:
    """A coordinator dropped without close() finishes its work, then its threads end."""
    out = isolated(
        """
        import warnings
        warnings.simplefilter("ignore")
        done = threading.Event()
        def work(item):
            done.set()
        c = WorkCoordinator(work)
        c.enqueue(1)
        assert done.wait(WAIT)
        c.stats()
        del c
        gc.collect()
        no_library_threads(wait=5.0)
        print("ok")
        """
    )
    assert out.strip() == "ok"


# -- finding 15: nothing starts while deferred -------------------------------------------------


def test_finding_15_nothing_starts_while_deferred_under_a_signal_storm() -> None:
    """Emits, clears and evictions racing dispatch never let an item start during a deferral."""
    out = isolated(
        """
        sys.setswitchinterval(1e-6)
        bus = SignalBus(max_capacity=4)
        started = []
        c = WorkCoordinator(
            lambda i: started.append(i), max_concurrency=4, max_tracked_operations=64,
            signals=bus, cancel_on_signals="stop", defer_on_signals="hold",
            defer_check_interval=3600.0, max_defer_attempts=10**6,
        )
        bus.emit("hold")
        assert c.stats().is_deferred
        stop = threading.Event()
        def storm():
            n = 0
            while not stop.is_set():
                bus.emit("stop")
                n += 1
                if n % 3 == 0:
                    bus.clear_pattern("stop")
                if n % 5 == 0:
                    for _ in range(4):
                        bus.emit("noise")  # evicts everything, the cancel signal too
        stormers = [threading.Thread(target=storm) for _ in range(2)]
        for t in stormers:
            t.start()
        for i in range(20_000):
            c.try_enqueue(i)
        stop.set()
        for t in stormers:
            t.join()
        assert c.stats().is_deferred
        assert not started, f"{len(started)} items started while deferred"
        c.close(WAIT)
        print("ok")
        """
    )
    assert out.strip() == "ok"


# -- finding 16: a body's own cancel signal after the bus evicted its copy -------------------


def test_finding_16_an_operations_cancel_signal_counts_while_it_is_in_the_window() -> None:
    """Either window counts: the bus evicting the copy does not withdraw the operation's signal."""
    bus = SignalBus(max_capacity=2)
    signalled, gate = threading.Event(), threading.Event()
    ran: list[int] = []

    def work(item: int) -> None:
        ran.append(item)
        if item == 0:
            current_operation().signal("abort")
            signalled.set()
            gate.wait(WAIT)

    c = WorkCoordinator(work, max_concurrency=2, signals=bus, cancel_on_signals="abort")
    try:
        c.enqueue(0)
        assert signalled.wait(WAIT)
        bus.emit("noise")
        bus.emit("noise")  # the bus no longer holds "abort"
        assert not bus.detect("abort")
        future = c.submit(1)
        with pytest.raises(SignalCancelledError):
            future.result(WAIT)
        assert ran == [0]
        gate.set()
        c.complete()
        c.drain(WAIT)
    finally:
        gate.set()
        c.close(WAIT)
        bus.close()


def test_finding_16_a_retracted_signal_on_an_evicted_bus_event_stops_cancelling() -> None:
    """Once neither window holds it (retracted and evicted), the signal no longer cancels."""
    bus = SignalBus(max_capacity=1)
    signalled, retract, gate = threading.Event(), threading.Event(), threading.Event()

    def work(item: int) -> None:
        if item == 0:
            op = current_operation()
            op.signal("abort")
            signalled.set()
            retract.wait(WAIT)
            op.retract("abort")
            gate.set()
            gate.wait(WAIT)

    c = WorkCoordinator(work, max_concurrency=2, signals=bus, cancel_on_signals="abort")
    try:
        c.enqueue(0)
        assert signalled.wait(WAIT)
        bus.emit("noise")
        retract.set()
        assert gate.wait(WAIT)
        assert c.submit(1).result(WAIT) is None
    finally:
        gate.set()
        retract.set()
        c.close(WAIT)
        bus.close()


# -- finding 17: current_operation() in on_signal_async -----------------------------------------


def test_finding_17_current_operation_raises_inside_on_signal_async() -> None:
    """The emitter's context does not leak into the async handler."""
    seen: list[BaseException | str] = []
    handled = threading.Event()

    async def handler(_event: object) -> None:
        try:
            current_operation()
        except BaseException as exc:
            seen.append(exc)
        else:
            seen.append("no error")
        handled.set()

    c = WorkCoordinator(lambda _i: current_operation().signal("x"), on_signal_async=handler)
    try:
        c.enqueue(1)
        assert handled.wait(WAIT)
        assert len(seen) == 1
        assert isinstance(seen[0], NoCurrentOperationError), seen
    finally:
        c.close(WAIT)


# -- finding 19: observers see a racing pin(); stats() trims by age ----------------------------


def test_finding_19_observer_snapshots_reflect_a_pin_made_before_delivery() -> None:
    """An operation pinned after it ended but before its observer ran is reported pinned."""
    first_seen, release = threading.Event(), threading.Event()
    reported: dict[int, bool] = {}

    def observer(snap: Any) -> None:
        reported[snap.id] = snap.is_pinned
        if not first_seen.is_set():
            first_seen.set()
            release.wait(WAIT)

    c = WorkCoordinator(lambda _i: None, max_concurrency=1)
    c.add_observer(observer)
    try:
        a = c.enqueue(1)
        assert first_seen.wait(WAIT)
        b = c.enqueue(2)
        c.complete()
        while c.stats().total_completed < 2:
            threading.Event().wait(0.001)
        assert c.pin(b)  # b ended; its observer call is queued behind a's
        release.set()
        c.drain(WAIT)
        assert reported == {a: False, b: True}
    finally:
        release.set()
        c.close(WAIT)


def test_finding_19_a_pin_from_inside_the_body_shows_in_its_observer_snapshot() -> None:
    """pin() returned before the operation ended, so every later snapshot says pinned."""
    reported: list[bool] = []
    c = WorkCoordinator(lambda _i: c.pin(current_operation().id))
    c.add_observer(lambda s: reported.append(s.is_pinned))
    try:
        c.enqueue(1)
        c.complete()
        c.drain(WAIT)
        assert reported == [True]
        assert [s.is_pinned for s in c.get_snapshot()] == [True]
    finally:
        c.close(WAIT)


def test_finding_19_tracked_operations_does_not_count_expired_records() -> None:
    """stats() applies the age bound before counting, like every other read."""
    now = [1_000_000.0]
    with use_clock(lambda: now[0]):
        c = WorkCoordinator(lambda _i: None, max_operation_lifetime=10.0)
    try:
        c.enqueue(1)
        c.complete()
        c.drain(WAIT)
        assert c.stats().tracked_operations == 1
        now[0] += 11.0
        assert c.stats().tracked_operations == 0
        assert c.actor_ref.ask(m.GetStats(), timeout=WAIT).tracked_operations == 0
    finally:
        c.close(WAIT)


# -- finding 21: an unhashable key ---------------------------------------------------------------


def test_finding_21_an_unhashable_key_is_a_clear_type_error() -> None:
    """Every intake form names key_selector; try_enqueue returns False; nothing is accepted."""
    c = KeyedWorkCoordinator(list, lambda _i: None)
    try:
        for call in (c.enqueue, c.submit):
            with pytest.raises(TypeError, match="key_selector"):
                call((1, 2))
        with pytest.raises(TypeError, match="key_selector"):
            asyncio.run(c.enqueue_async((1, 2)))
        with pytest.raises(TypeError, match="key_selector"):
            c.actor_ref.ask(m.Enqueue((1, 2)), timeout=WAIT)
        assert c.try_enqueue((1, 2)) is False
        with pytest.raises(TypeError, match="key_selector"):
            c.enqueue_many([(1, 2)])
        assert c.stats().total_enqueued == 0
        assert not c.is_faulted
    finally:
        c.close(WAIT)
