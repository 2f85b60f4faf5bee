"""OperationFuture: what submit() returns (SPEC section 15).

It keeps Pykka's future contract and is a `concurrent.futures.Future` too: `wait`,
`as_completed`, `asyncio.wrap_future`, `await` without blocking the loop, done-callbacks,
`cancel()` through the core's canceller hook, and builtin `TimeoutError`s.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import queue
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    CancelledError,
    InvalidStateError,
    ThreadPoolExecutor,
    as_completed,
    wait,
)
from pathlib import Path
from typing import Any

import pykka
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ephemeral_actors import (
    CoordinatorOptions,
    Operation,
    OperationFuture,
    ResultCoordinator,
    WorkCoordinator,
    messages,
)
from tests.conftest import WAIT, traceback_length

CALLBACK_THREAD = "ephemeral-actors-callbacks"


@pytest.fixture
def make() -> Iterator[Callable[..., Any]]:
    """Build coordinators (`cls=` picks the kind) and close them all after the test."""
    made: list[Any] = []

    def factory(body: Callable[[Any], Any], *, cls: type = WorkCoordinator, **options: Any) -> Any:
        c = cls(body, CoordinatorOptions(**options))
        made.append(c)
        return c

    yield factory
    for c in made:
        c.close(timeout=WAIT)


class Gates:
    """A body that blocks item `i` until `open(i)`: completion order under test control."""

    def __init__(self) -> None:
        self._gates: dict[Any, threading.Event] = {}
        self._lock = threading.Lock()
        self.started: dict[Any, threading.Event] = {}

    def _gate(self, item: Any) -> threading.Event:
        with self._lock:
            self.started.setdefault(item, threading.Event())
            return self._gates.setdefault(item, threading.Event())

    def open(self, item: Any) -> None:
        self._gate(item).set()

    def wait_started(self, item: Any) -> None:
        self._gate(item)
        assert self.started[item].wait(WAIT)

    def body(self, item: Any) -> Any:
        gate = self._gate(item)
        self.started[item].set()
        assert gate.wait(WAIT)
        if isinstance(item, str) and item.startswith("fail"):
            raise ValueError(item)
        return item


def cancellable(future: OperationFuture[Any], *, drops: bool = True) -> list[int]:
    """Install a stand-in for the core's canceller; return the list counting its calls.

    Like the core's, it resolves the future through `_set_cancelled()` when it drops
    the item.
    """
    calls: list[int] = []

    def canceller() -> bool:
        calls.append(1)
        if drops:
            future._set_cancelled()
        return drops

    future._canceller = canceller
    return calls


# -- Pykka's contract ---------------------------------------------------------------------


def test_value_set_before_get():
    """A value set before get() is returned at once, as often as asked."""
    f: OperationFuture[int] = OperationFuture()
    f.set(3)
    assert f.get() == 3
    assert f.get(timeout=0) == 3
    assert f.result(timeout=0) == 3


def test_waiters_are_woken_by_set():
    """Several threads blocked in get() all receive the value."""
    f: OperationFuture[str] = OperationFuture()
    results: list[str] = []
    barrier = threading.Barrier(5)

    def waiter() -> None:
        barrier.wait(WAIT)
        results.append(f.get(timeout=WAIT))

    threads = [threading.Thread(target=waiter) for _ in range(4)]
    for t in threads:
        t.start()
    barrier.wait(WAIT)
    f.set("done")
    for t in threads:
        t.join(WAIT)
    assert results == ["done"] * 4


def test_get_timeout_is_a_builtin_timeout_error_and_a_pykka_timeout():
    """get(timeout) without an outcome raises TimeoutError (SPEC 15; it was pykka.Timeout)."""
    with pytest.raises(TimeoutError) as info:
        OperationFuture().get(timeout=0.01)
    # Code written against Pykka's contract still catches it.
    assert isinstance(info.value, pykka.Timeout)


def test_result_and_exception_timeouts_are_builtin_timeout_errors():
    """result(timeout) and exception(timeout) raise the builtin TimeoutError."""
    f: OperationFuture[int] = OperationFuture()
    with pytest.raises(TimeoutError):
        f.result(timeout=0.01)
    with pytest.raises(TimeoutError):
        f.exception(timeout=0)
    assert not f.done()


def test_exception_is_reraised_with_its_traceback():
    """set_exception() makes get() raise the exception with the original traceback."""
    f: OperationFuture[None] = OperationFuture()
    try:
        raise KeyError("k")
    except KeyError:
        f.set_exception()
    with pytest.raises(KeyError) as info:
        f.get()
    assert info.value.__traceback__ is not None
    assert isinstance(f.exception(), KeyError)


def test_exc_info_with_only_a_type_is_instantiated():
    """A Pykka exc_info of (type, None, None) raises an instance of that type."""
    f: OperationFuture[None] = OperationFuture()
    f.set_exception((LookupError, None, None))  # type: ignore[arg-type]
    with pytest.raises(LookupError):
        f.result()


def test_set_exception_takes_an_exception_instance_too():
    """concurrent.futures' set_exception(exc) form: result() raises it, exception() returns it."""
    f: OperationFuture[int] = OperationFuture()
    error = ValueError("bad")
    f.set_exception(error)
    assert f.done()
    assert f.exception(timeout=0) is error
    with pytest.raises(ValueError, match="bad"):
        f.result()
    with pytest.raises(ValueError, match="bad"):
        f.get()


def test_second_resolution_raises_queue_full_and_invalid_state():
    """Only one resolution: Pykka's queue.Full, which is also CPython's InvalidStateError."""
    f: OperationFuture[int] = OperationFuture()
    f.set(1)
    for resolve in (
        lambda: f.set(2),
        lambda: f.set_result(2),
        lambda: f.set_exception((ValueError, ValueError(), None)),
        lambda: f.set_exception(ValueError()),
        lambda: f.set_get_hook(lambda _timeout: 3),
    ):
        with pytest.raises(queue.Full):
            resolve()
        with pytest.raises(InvalidStateError):
            resolve()
    assert f.result() == 1


def test_composition_helpers_work():
    """map, join, filter, reduce and get_all behave as on pykka.ThreadingFuture."""
    a: OperationFuture[int] = OperationFuture()
    b: OperationFuture[int] = OperationFuture()
    doubled = a.map(lambda x: x * 2)
    both = a.join(b)
    a.set(4)
    b.set(5)
    assert doubled.get(timeout=WAIT) == 8
    assert both.get(timeout=WAIT) == [4, 5]
    items: OperationFuture[list[int]] = OperationFuture()
    items.set([1, 2, 3, 4])
    assert items.filter(lambda x: x % 2 == 0).get(timeout=WAIT) == [2, 4]
    assert items.reduce(lambda x, y: x + y).get(timeout=WAIT) == 10
    assert pykka.get_all([a, b], timeout=WAIT) == [4, 5]


def test_composed_futures_answer_the_concurrent_futures_api():
    """A mapped future's result() computes it; it is then done, with callbacks called."""
    a: OperationFuture[int] = OperationFuture()
    tripled = a.map(lambda x: x * 3)
    assert isinstance(tripled, OperationFuture)
    assert not tripled.done()
    a.set(2)
    seen: list[int] = []
    tripled.add_done_callback(lambda f: seen.append(f.result()))
    assert tripled.result(timeout=WAIT) == 6
    assert tripled.done()
    assert seen == [6]


def test_a_composed_future_of_a_failed_one_raises_its_error():
    """map over a failed future raises the failure from get() and result()."""
    a: OperationFuture[int] = OperationFuture()
    mapped = a.map(lambda x: x + 1)
    a.set_exception(ZeroDivisionError("z"))
    with pytest.raises(ZeroDivisionError):
        mapped.get(timeout=WAIT)
    assert isinstance(mapped.exception(timeout=WAIT), ZeroDivisionError)


def test_join_with_a_plain_pykka_future_times_out_with_timeout_error():
    """A join waiting on a ThreadingFuture (pykka.Timeout only) still raises TimeoutError."""
    a: OperationFuture[int] = OperationFuture()
    a.set(1)
    joined = a.join(pykka.ThreadingFuture())
    with pytest.raises(TimeoutError):
        joined.get(timeout=0.01)
    assert not joined.done()


def test_get_hook_wakes_a_waiter():
    """A waiter blocked before set_get_hook() gets the hook's value."""
    f: OperationFuture[int] = OperationFuture()
    result: list[int] = []
    started = threading.Event()

    def waiter() -> None:
        started.set()
        result.append(f.get(timeout=WAIT))

    t = threading.Thread(target=waiter)
    t.start()
    assert started.wait(WAIT)
    f.set_get_hook(lambda _timeout: 7)
    t.join(WAIT)
    assert result == [7]


# -- the concurrent.futures contract ---------------------------------------------------------


def test_is_both_kinds_of_future():
    """OperationFuture is a concurrent.futures.Future and a pykka.Future."""
    f: OperationFuture[int] = OperationFuture()
    assert isinstance(f, concurrent.futures.Future)
    assert isinstance(f, pykka.Future)
    assert (f.done(), f.running(), f.cancelled()) == (False, False, False)


def test_an_outcome_set_before_anyone_waits_creates_no_condition():
    """The fast path: resolving and reading a settled future never builds a Condition."""
    f: OperationFuture[int] = OperationFuture()
    f.set(1)
    assert f.result() == 1
    assert f.get() == 1
    assert f.exception() is None
    assert f.done()
    assert f._cond is None


def _parked_waiter(f: OperationFuture[Any], kind: str) -> tuple[threading.Thread, list[Any]]:
    """A thread blocked in `f.<kind>()`, returned once it is parked on the future."""
    out: list[Any] = []

    def wait() -> None:
        try:
            out.append(getattr(f, kind)(timeout=WAIT))
        except BaseException as exc:  # the test inspects it
            out.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    deadline = time.monotonic() + WAIT
    # Polls an observable state (the waiter registered), not a guess at timing.
    while not f._parked and time.monotonic() < deadline:
        time.sleep(0.001)
    assert f._parked, "the waiter never parked"
    return thread, out


@pytest.mark.parametrize("kind", ["result", "get", "exception"])
def test_a_blocked_reader_parks_on_its_own_lock_and_builds_no_condition(kind):
    """A blocking read is woken by the resolution without a Condition (the round trip's
    hand-off back to the caller); the waiter list is emptied by the resolution."""
    f: OperationFuture[int] = OperationFuture()
    thread, out = _parked_waiter(f, kind)
    f.set(7)
    thread.join(WAIT)
    assert out == [None if kind == "exception" else 7]
    assert f._cond is None
    assert f._parked is None


def test_a_timed_out_reader_withdraws_and_later_readers_still_get_the_outcome():
    """A waiter that times out leaves the waiter list: the resolution releases nobody twice."""
    f: OperationFuture[int] = OperationFuture()
    with pytest.raises(TimeoutError):
        f.result(timeout=0.01)
    assert not f._parked
    thread, out = _parked_waiter(f, "result")
    f.set_result(5)
    thread.join(WAIT)
    assert out == [5]
    assert f.result(timeout=0) == 5


def test_a_parked_reader_is_woken_by_a_get_hook_and_computes_the_value():
    """set_get_hook() wakes a parked get(): the waiter runs the hook itself."""
    f: OperationFuture[int] = OperationFuture()
    thread, out = _parked_waiter(f, "get")
    f.set_get_hook(lambda _timeout: 11)
    thread.join(WAIT)
    assert out == [11]


def test_a_resolved_future_does_not_keep_its_operation_record_alive():
    """Once resolved, a future held by the caller no longer holds the operation's record.

    Before, the canceller kept every record of every held future alive (and every full
    garbage collection walked them), long after the window had trimmed it.
    """

    def live_records(op_id: int) -> list[Operation]:
        gc.collect()
        return [o for o in gc.get_objects() if type(o) is Operation and o.id == op_id]

    with ResultCoordinator(lambda item: item, CoordinatorOptions(max_tracked_operations=1)) as c:
        first = c.submit(1)
        assert first.result(timeout=WAIT) == 1
        assert c.submit(2).result(timeout=WAIT) == 2  # the window trims the first record
        c.complete()
        c.drain(timeout=WAIT)
        assert live_records(first.operation_id) == []
        assert not first.cancel()
        assert first.result() == 1


def test_repr_shows_state_and_outcome_type():
    """repr() names the state, and the outcome's type once finished, like CPython's."""
    f: OperationFuture[int] = OperationFuture()
    f.operation_id = 12
    assert "operation=12 state=pending" in repr(f)
    f.set(5)
    assert repr(f).endswith("state=finished returned int>")
    g: OperationFuture[int] = OperationFuture()
    g.set_exception(KeyError("k"))
    assert repr(g).endswith("state=finished raised KeyError>")


def test_submit_returns_an_operation_future_with_the_operation_id(make):
    """submit() returns an OperationFuture whose operation_id is the snapshot's id."""
    c = make(lambda x: x * 2, cls=ResultCoordinator)
    future = c.submit(21)
    assert isinstance(future, OperationFuture)
    assert future.result(timeout=WAIT) == 42
    assert future.get(timeout=WAIT) == 42
    assert future.exception(timeout=WAIT) is None
    assert future.operation_id > 0
    c.complete()
    c.drain(WAIT)
    assert [s.id for s in c.get_snapshot()] == [future.operation_id]


def test_submit_future_of_a_failing_body_raises_from_result(make):
    """result() raises the body's exception; exception() returns it."""

    def body(_item: int) -> None:
        raise ArithmeticError("boom")

    future = make(body).submit(1)
    with pytest.raises(ArithmeticError, match="boom"):
        future.result(timeout=WAIT)
    assert isinstance(future.exception(timeout=WAIT), ArithmeticError)


def test_ask_submit_answers_an_operation_future(make):
    """The Submit message answers the same kind of future as submit()."""
    c = make(lambda x: x + 1, cls=ResultCoordinator)
    future = c.actor_ref.ask(messages.Submit(1), timeout=WAIT)
    assert isinstance(future, OperationFuture)
    assert future.result(timeout=WAIT) == 2


@pytest.mark.parametrize("return_when", [FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED])
def test_wait_over_a_mix_of_operation_and_thread_pool_futures(make, return_when):
    """concurrent.futures.wait handles OperationFutures and TPE futures together."""
    gates = Gates()
    c = make(gates.body, cls=ResultCoordinator, max_concurrency=4)
    with ThreadPoolExecutor(2) as pool:
        ours = c.submit("ours")
        failing = c.submit("fail-ours")
        theirs = pool.submit(gates.body, "theirs")
        futures = [ours, failing, theirs]
        if return_when == FIRST_COMPLETED:
            gates.open("ours")
            done, not_done = wait(futures, timeout=WAIT, return_when=return_when)
            assert ours in done
            assert theirs in not_done
        elif return_when == FIRST_EXCEPTION:
            gates.open("fail-ours")
            done, not_done = wait(futures, timeout=WAIT, return_when=return_when)
            assert done == {failing}
            assert not_done == {ours, theirs}
        else:
            for item in ("ours", "fail-ours", "theirs"):
                gates.open(item)
            done, not_done = wait(futures, timeout=WAIT, return_when=return_when)
            assert done == set(futures)
            assert not not_done
        for item in ("ours", "fail-ours", "theirs"):
            gates.open(item)
    assert ours.result(timeout=WAIT) == "ours"
    assert theirs.result(timeout=WAIT) == "theirs"
    assert isinstance(failing.exception(timeout=WAIT), ValueError)


def test_wait_times_out_and_reports_not_done(make):
    """wait(timeout) returns the pending OperationFuture in not_done."""
    gates = Gates()
    future = make(gates.body).submit("slow")
    done, not_done = wait([future], timeout=0.01)
    assert (done, not_done) == (set(), {future})
    gates.open("slow")
    assert wait([future], timeout=WAIT).done == {future}


def test_as_completed_yields_in_completion_order_across_kinds(make):
    """as_completed over OperationFutures and TPE futures yields each as it ends."""
    gates = Gates()
    c = make(gates.body, cls=ResultCoordinator, max_concurrency=4)
    with ThreadPoolExecutor(2) as pool:
        first = c.submit("a")
        second = pool.submit(gates.body, "b")
        third = c.submit("c")
        gates.open("a")
        order: list[Any] = []
        for future in as_completed([third, second, first], timeout=WAIT):
            order.append(future.result())
            if len(order) == 1:
                gates.open("b")
            elif len(order) == 2:
                gates.open("c")
    assert order == ["a", "b", "c"]


def test_as_completed_raises_timeout_error_for_a_pending_future(make):
    """as_completed(timeout) raises TimeoutError when an OperationFuture stays pending."""
    gates = Gates()
    future = make(gates.body).submit("stuck")
    with pytest.raises(TimeoutError):
        list(as_completed([future], timeout=0.01))
    gates.open("stuck")
    assert future.result(timeout=WAIT) is None


# -- done-callbacks ----------------------------------------------------------------------


def test_callbacks_are_called_once_in_order_after_resolution():
    """Callbacks added before set_result run once, in order, with the future, in this thread."""
    f: OperationFuture[int] = OperationFuture()
    calls: list[tuple[str, Any, str]] = []
    for name in ("first", "second"):
        f.add_done_callback(
            lambda fut, name=name: calls.append((name, fut, threading.current_thread().name))
        )
    assert calls == []
    f.set_result(1)
    me = threading.current_thread().name
    assert calls == [("first", f, me), ("second", f, me)]
    with pytest.raises(InvalidStateError):
        f.set_result(2)
    assert len(calls) == 2


def test_a_callback_added_after_completion_runs_at_once_in_the_adding_thread():
    """add_done_callback on a done future calls it immediately, once."""
    f: OperationFuture[int] = OperationFuture()
    f.set(1)
    seen: list[tuple[int, str]] = []
    f.add_done_callback(lambda fut: seen.append((fut.result(), threading.current_thread().name)))
    assert seen == [(1, threading.current_thread().name)]


def test_a_raising_callback_is_logged_and_the_next_still_runs(caplog):
    """An exception in a callback is logged (as CPython does) and does not stop the others."""
    f: OperationFuture[int] = OperationFuture()
    seen: list[int] = []

    def bad(_fut: Any) -> None:
        raise RuntimeError("callback broke")

    f.add_done_callback(bad)
    f.add_done_callback(lambda fut: seen.append(fut.result()))
    with caplog.at_level(logging.ERROR, logger="ephemeral_actors"):
        f.set_result(3)
        f.add_done_callback(bad)
    assert seen == [3]
    records = [r for r in caplog.records if "exception calling callback" in r.getMessage()]
    assert len(records) == 2
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in records)


def test_core_resolution_runs_callbacks_off_the_worker_so_they_may_call_the_coordinator(make):
    """A callback of a submitted item may enqueue into and query its coordinator.

    The core resolves futures under its own lock; a callback run there would deadlock
    on that lock. They run on the library's callback thread instead.
    """
    gates = Gates()
    c = make(gates.body, max_concurrency=2)
    future = c.submit("first")
    gates.wait_started("first")
    called = threading.Event()
    seen: dict[str, Any] = {}

    def callback(fut: Any) -> None:
        seen["thread"] = threading.current_thread().name
        seen["next"] = c.enqueue("second")
        seen["enqueued"] = c.stats().total_enqueued
        called.set()

    future.add_done_callback(callback)
    gates.open("first")
    gates.open("second")
    assert called.wait(WAIT), "the callback never finished: it deadlocked in the worker"
    assert seen["thread"] == CALLBACK_THREAD
    assert seen["enqueued"] == 2
    c.complete()
    c.drain(WAIT)
    assert c.total_completed == 2


def test_pykka_set_defers_callbacks_to_the_callback_thread():
    """set()/set_exception(exc_info) (the core's path) hand callbacks to another thread."""
    for resolve in (lambda f: f.set(1), lambda f: f.set_exception((KeyError, KeyError(), None))):
        f: OperationFuture[int] = OperationFuture()
        ran = threading.Event()
        threads: list[str] = []
        f.add_done_callback(
            lambda _f, t=threads, e=ran: (t.append(threading.current_thread().name), e.set())
        )
        resolve(f)
        assert ran.wait(WAIT)
        assert threads == [CALLBACK_THREAD]


def test_a_callback_raising_system_exit_does_not_stop_the_callback_thread(caplog):
    """Callbacks queued after one that raised SystemExit on the callback thread still run."""
    first: OperationFuture[int] = OperationFuture()
    second: OperationFuture[int] = OperationFuture()
    ran = threading.Event()

    def exits(_fut: Any) -> None:
        raise SystemExit(3)

    first.add_done_callback(exits)
    second.add_done_callback(lambda _fut: ran.set())
    with caplog.at_level(logging.ERROR, logger="ephemeral_actors"):
        first.set(1)
        second.set(2)
        assert ran.wait(WAIT)
    assert any(r.exc_info and r.exc_info[0] is SystemExit for r in caplog.records)


def test_set_exception_outside_an_except_block_needs_an_exception():
    """Pykka's set_exception() with nothing to take from sys.exc_info() is a TypeError."""
    f: OperationFuture[int] = OperationFuture()
    with pytest.raises(TypeError):
        f.set_exception()
    assert not f.done()


def test_a_deferred_callback_still_runs_when_the_program_exits_at_once():
    """The callback thread is not a daemon: exiting right after a resolution loses nothing."""
    script = textwrap.dedent(
        """
        import time
        from ephemeral_actors import OperationFuture

        def slow_callback(future):
            time.sleep(0.2)  # still running when the main thread has finished
            print("callback ran with", future.result(), flush=True)

        future = OperationFuture()
        future.add_done_callback(slow_callback)
        future.set(7)  # the core's path: the callback goes to the callback thread
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=WAIT * 3,
        check=False,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "callback ran with 7\n"


# -- cancel() ----------------------------------------------------------------------------


def test_cancel_of_a_pending_submitted_item_drops_it_and_counts_it(make):
    """SPEC 15: submit(x).cancel() drops a pending item (True, total_cancelled), not a running one."""
    gates = Gates()
    c = make(gates.body, max_concurrency=1)
    try:
        running = c.submit("first")
        gates.wait_started("first")
        pending = c.submit("second")
        assert pending.cancel() is True
        assert pending.cancelled()
        assert running.cancel() is False
    finally:
        gates.open("first")
        gates.open("second")
    assert running.result(timeout=WAIT) is None
    c.complete()
    c.drain(WAIT)
    assert (c.total_cancelled, c.total_completed) == (1, 1)


def test_cancel_without_a_canceller_returns_false():
    """A future with no coordinator behind it cannot be cancelled."""
    f: OperationFuture[int] = OperationFuture()
    assert f.cancel() is False
    assert not f.cancelled()
    assert not f.done()


def test_cancel_of_a_pending_item_cancels_the_future():
    """The canceller drops the item: cancel() is True and every reader sees the cancellation."""
    f: OperationFuture[int] = OperationFuture()
    calls = cancellable(f)
    ran = threading.Event()
    f.add_done_callback(lambda _f: ran.set())
    assert f.cancel() is True
    assert calls == [1]
    assert f.cancelled()
    assert f.done()
    assert not f.running()
    assert ran.wait(WAIT)
    with pytest.raises(CancelledError):
        f.result(timeout=0)
    with pytest.raises(CancelledError):
        f.exception(timeout=0)
    with pytest.raises(CancelledError):
        f.get(timeout=0)
    assert wait([f], timeout=0).done == {f}
    assert list(as_completed([f], timeout=0)) == [f]
    # Cancelling again is still True and does not ask the core again.
    assert f.cancel() is True
    assert calls == [1]
    assert f.set_running_or_notify_cancel() is False


def test_cancel_wakes_waiters_blocked_in_wait_and_result():
    """Threads blocked in wait() and result() return when the item is cancelled."""
    f: OperationFuture[int] = OperationFuture()
    cancellable(f)
    barrier = threading.Barrier(3)
    outcomes: list[str] = []

    def in_wait() -> None:
        barrier.wait(WAIT)
        outcomes.append("wait" if wait([f], timeout=WAIT).done == {f} else "wait timed out")

    def in_result() -> None:
        barrier.wait(WAIT)
        try:
            f.result(timeout=WAIT)
        except CancelledError:
            outcomes.append("result")

    threads = [threading.Thread(target=in_wait), threading.Thread(target=in_result)]
    for t in threads:
        t.start()
    barrier.wait(WAIT)
    assert f.cancel()
    for t in threads:
        t.join(WAIT)
    assert sorted(outcomes) == ["result", "wait"]


def test_cancel_returns_false_once_the_item_started():
    """A canceller that finds the item running answers False; so does cancel()."""
    f: OperationFuture[int] = OperationFuture()
    calls = cancellable(f, drops=False)
    assert f.cancel() is False
    assert calls == [1]
    assert not f.cancelled()
    f.set(1)
    assert f.result() == 1


def test_a_running_or_finished_future_is_not_cancelled_and_the_core_is_not_asked():
    """After set_running_or_notify_cancel() or an outcome, cancel() is False at once."""
    f: OperationFuture[int] = OperationFuture()
    calls = cancellable(f)
    assert f.set_running_or_notify_cancel() is True
    assert f.running()
    assert not f.done()
    assert f.cancel() is False
    with pytest.raises(RuntimeError):
        f.set_running_or_notify_cancel()
    f.set(2)
    assert not f.running()
    assert f.cancel() is False
    assert calls == []


def test_cancel_cancels_even_if_the_canceller_did_not_resolve():
    """A canceller that dropped the item but did not call _set_cancelled still cancels."""
    f: OperationFuture[int] = OperationFuture()
    f._canceller = lambda: True
    assert f.cancel() is True
    assert f.cancelled()


def test_cancelling_the_awaiting_task_cancels_the_pending_item():
    """As with asyncio.wrap_future: a cancelled awaiter cancels an item not yet started."""
    f: OperationFuture[int] = OperationFuture()
    calls = cancellable(f)

    async def main() -> None:
        task = asyncio.ensure_future(_await(f))
        await asyncio.sleep(0)  # let the task start awaiting
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert calls == [1]
    assert f.cancelled()


async def _await(future: OperationFuture[Any]) -> Any:
    return await future


# -- asyncio -----------------------------------------------------------------------------


def test_await_does_not_block_the_event_loop(make):
    """A 10 ms ticker keeps ticking while `await submit(x)` waits for a slow item.

    The item finishes only after the ticker ticked five times; an await that blocked
    the loop would stop the ticker, and the body would end only at its WAIT timeout
    with no ticks counted.
    """
    release = threading.Event()
    ticks: list[float] = []

    def slow(item: int) -> int:
        release.wait(WAIT)
        return item * 2

    c = make(slow, cls=ResultCoordinator)

    async def ticker() -> None:
        while True:
            await asyncio.sleep(0.01)
            ticks.append(asyncio.get_running_loop().time())
            if len(ticks) == 5:
                release.set()

    async def main() -> int:
        task = asyncio.create_task(ticker())
        try:
            return await c.submit(21)
        finally:
            task.cancel()

    assert asyncio.run(main()) == 42
    assert len(ticks) >= 5


def test_await_raises_the_body_exception_and_returns_settled_values():
    """await re-raises the failure; a settled future returns at once."""
    failed: OperationFuture[int] = OperationFuture()
    failed.set_exception(KeyError("k"))
    settled: OperationFuture[int] = OperationFuture()
    settled.set(5)

    async def main() -> int:
        with pytest.raises(KeyError):
            await failed
        return await settled

    assert asyncio.run(main()) == 5


def test_await_a_composed_future_does_not_block_the_loop():
    """Awaiting a lazy mapped future computes it off the loop."""
    a: OperationFuture[int] = OperationFuture()
    mapped = a.map(lambda x: x + 1)

    async def main() -> int:
        pending = asyncio.ensure_future(_await(mapped))
        await asyncio.sleep(0)
        a.set(1)  # the loop ran: the await did not block it
        return await pending

    assert asyncio.run(main()) == 2


def test_asyncio_wrap_future_resolves_with_the_outcome(make):
    """asyncio.wrap_future gives an asyncio future of the result or the exception."""

    def body(x: int) -> int:
        if x < 0:
            raise ValueError(x)
        return x + 1

    c = make(body, cls=ResultCoordinator)

    async def main() -> int:
        with pytest.raises(ValueError):
            await asyncio.wrap_future(c.submit(-1))
        return await asyncio.wrap_future(c.submit(1))

    assert asyncio.run(main()) == 2


def test_asyncio_wrap_future_of_a_cancelled_future_is_cancelled():
    """A cancelled OperationFuture wraps into a cancelled asyncio future."""
    f: OperationFuture[int] = OperationFuture()
    cancellable(f)

    async def main() -> None:
        wrapped = asyncio.wrap_future(f)
        assert f.cancel()
        with pytest.raises(asyncio.CancelledError):
            await wrapped

    asyncio.run(main())


# -- races ------------------------------------------------------------------------------

READERS = ("result", "get", "exception", "wait", "wait_first", "as_completed", "callback")


@settings(max_examples=60, deadline=None)
@given(
    readers=st.lists(st.sampled_from(READERS), min_size=1, max_size=5),
    outcome=st.sampled_from(["value", "error", "cancel", "pykka-value", "pykka-error"]),
    condition_first=st.booleans(),
)
def test_resolution_racing_readers_wakes_every_reader_once(readers, outcome, condition_first):
    """However set and the readers interleave, each reader sees the outcome exactly once.

    Reader threads and the resolving thread start together from a barrier; the
    Condition may or may not exist before (the lazy fast path against the locked one).
    """
    f: OperationFuture[int] = OperationFuture()
    cancellable(f)
    if condition_first:
        f._condition  # noqa: B018 - build the Condition before the race
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()
    callbacks_done = threading.Event()
    callback_count = readers.count("callback")
    callback_calls: list[int] = []
    barrier = threading.Barrier(len(readers) + 1)

    def describe(fut: OperationFuture[int]) -> str:
        if fut.cancelled():
            return "cancel"
        return "error" if fut.exception(timeout=0) is not None else "value"

    def on_done(fut: Any) -> None:
        with lock:
            callback_calls.append(1)
            seen.append(("callback", describe(fut)))
            if len(callback_calls) == callback_count:
                callbacks_done.set()

    def reader(kind: str) -> None:
        barrier.wait(WAIT)
        if kind == "callback":
            f.add_done_callback(on_done)
            return
        if kind in ("result", "get"):
            try:
                f.result(timeout=WAIT) if kind == "result" else f.get(timeout=WAIT)
            except CancelledError:
                result = "cancel"
            except KeyError:
                result = "error"
            else:
                result = "value"
        elif kind == "exception":
            try:
                result = "value" if f.exception(timeout=WAIT) is None else "error"
            except CancelledError:
                result = "cancel"
        elif kind == "as_completed":
            (fut,) = as_completed([f], timeout=WAIT)
            result = describe(fut)
        else:
            when = FIRST_COMPLETED if kind == "wait_first" else ALL_COMPLETED
            (fut,) = wait([f], timeout=WAIT, return_when=when).done
            result = describe(fut)
        with lock:
            seen.append((kind, result))

    threads = [threading.Thread(target=reader, args=(kind,)) for kind in readers]
    for t in threads:
        t.start()
    barrier.wait(WAIT)
    if outcome == "value":
        f.set_result(1)
    elif outcome == "error":
        f.set_exception(KeyError("k"))
    elif outcome == "pykka-value":
        f.set(1)
    elif outcome == "pykka-error":
        f.set_exception((KeyError, KeyError("k"), None))
    else:
        assert f.cancel()
    for t in threads:
        t.join(WAIT)
    if callback_count:
        assert callbacks_done.wait(WAIT)
    expected = outcome.removeprefix("pykka-")
    assert sorted(seen) == sorted((kind, expected) for kind in readers)
    assert len(callback_calls) == callback_count


@pytest.mark.parametrize("fails", [False, True])
def test_a_future_its_caller_resolved_does_not_stop_the_coordinator(caplog, fails):
    """`set_result` is public: a caller who resolves a submit future keeps its value.

    The operation still runs and is counted; the worker that finds the future resolved
    goes on to the next item (it used to die with the turn, and the next item never
    ran), and the coordinator says what happened.
    """
    gate = threading.Event()

    def body(item: int) -> int:
        gate.wait(WAIT)
        if fails and item == 1:
            raise ValueError("boom")
        return item

    c = ResultCoordinator(body, CoordinatorOptions(max_concurrency=1))
    try:
        first, second = c.submit(1), c.submit(2)
        first.set_result(99)
        with caplog.at_level(logging.WARNING, logger="ephemeral_actors"):
            gate.set()
            assert second.result(timeout=WAIT) == 2
        assert first.result() == 99
        c.complete()
        c.drain(WAIT)
        stats = c.stats()
        assert (stats.total_completed, stats.total_failed) == ((1, 1) if fails else (2, 0))
        assert any("already resolved by its caller" in r.getMessage() for r in caplog.records)
    finally:
        c.close(WAIT)


def test_every_wait_raises_the_error_with_the_traceback_the_body_left(make):
    """As asyncio's futures do: raising an exception prepends the raising frames to its
    traceback, so raised as kept, the error (which the operation's record shares) would
    grow with every `result()` and keep every caller's frames."""

    def body(item: int) -> None:
        raise ValueError(item)

    c = make(body, cls=ResultCoordinator, max_concurrency=1)
    future = c.submit(1)
    lengths = []
    for outcome in (future.result, future.get, future.result):
        with pytest.raises(ValueError, match="1") as raised:
            outcome(timeout=WAIT)
        lengths.append(traceback_length(raised.value))

    async def awaited() -> None:
        for _ in range(2):
            with pytest.raises(ValueError) as raised:
                await future
            lengths.append(traceback_length(raised.value))

    asyncio.run(awaited())
    assert len(set(lengths[:3])) == 1, lengths
    assert len(set(lengths[3:])) == 1, lengths
