"""ProcessBackend: bodies in worker processes, pickling rules, crashes, signals, cancel, lifecycle.

Bodies are module-level functions, so worker processes find them by name (with the
default start method they are forked from this interpreter; one test spawns).
Cross-process rendezvous uses a `multiprocessing.Manager`'s Event and Barrier,
whose proxies travel inside items.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ephemeral_actors import (
    CoordinatorFaultedError,
    CoordinatorOptions,
    KeyedWorkCoordinator,
    NoCurrentOperationError,
    OperationCancelledError,
    OperationTimeoutError,
    ResultCoordinator,
    RetryPolicy,
    SignalCancelledError,
    WorkCoordinator,
    WorkerCrashError,
    current_operation,
)
from ephemeral_actors._operation import _current
from ephemeral_actors.backends import Backend, ProcessBackend
from ephemeral_actors.testing import library_threads
from tests.conftest import WAIT


@pytest.fixture(scope="module")
def backend() -> Iterator[ProcessBackend]:
    b = ProcessBackend(max_workers=2)
    yield b
    b.shutdown()


@pytest.fixture(scope="module")
def manager() -> Iterator[Any]:
    with multiprocessing.Manager() as m:
        yield m


@pytest.fixture
def make() -> Iterator[Callable[..., Any]]:
    made: list[Any] = []

    def factory(kind: type, *args: Any, **options: Any) -> Any:
        c = kind(*args, CoordinatorOptions(**options))
        made.append(c)
        return c

    yield factory
    for c in made:
        c.close(timeout=WAIT)


def run_all(c: Any, items: Any) -> list[int]:
    ids = [c.enqueue(i) for i in items]
    c.complete()
    c.drain(WAIT)
    return ids


def wait_until(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def alive(pid: int) -> bool:
    """Whether process `pid` exists (a dead child not yet reaped still does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- bodies (module level: worker processes find them by name) ----------------------------------


class LedgerError(ValueError):
    """A user exception type that must survive the trip back."""


class Unpicklable(Exception):
    """An exception that cannot be pickled (it holds a lock)."""

    def __init__(self) -> None:
        super().__init__("holds a lock")
        self.lock = threading.Lock()


def square(x: int) -> int:
    return x * x


def pid_of(_: Any) -> int:
    return os.getpid()


def crunch(packed: tuple[Any, int]) -> int:
    """Meet a partner in another process at the barrier, then burn CPU; return the pid."""
    barrier, n = packed
    barrier.wait(WAIT)
    total = 0
    for i in range(n):
        total += i * i
    return os.getpid()


def odd_fails(x: int) -> int:
    if x % 2:
        raise LedgerError(f"odd item {x}")
    return x


def raise_unpicklable(_: Any) -> None:
    raise Unpicklable


def return_lock(x: int) -> Any:
    return threading.Lock() if x == 1 else x


def return_coroutine(_: Any) -> Any:
    return asyncio.sleep(0)


def die_on_zero(x: int) -> int:
    if x == 0:
        os._exit(1)
    return x


def hang_or_return(packed: tuple[Any, Any]) -> Any:
    """Note this process's pid; then hang if the item says so (only a kill ends it)."""
    x, pids = packed
    pids.append(os.getpid())
    if x == "hang":
        time.sleep(3600)
    return x


def hang_the_first_time(marks: Any) -> str:
    """The first attempt notes its pid and hangs; the next one returns at once."""
    if not marks:
        marks.append(os.getpid())
        time.sleep(3600)
    return "second attempt"


def describe_op(_: Any) -> tuple[int, str | None, bool, int]:
    op = current_operation()
    return op.id, op.key, op.cancelled, os.getpid()


def no_op_outside(_: Any) -> str:
    try:
        current_operation()
    except NoCurrentOperationError:
        return "none"
    return "some"


def signalling(x: int) -> int:
    op = current_operation()
    op.signal("work.started")
    op.signal("work.noise")
    assert op.has_signal("work.noise")
    assert op.retract("work.noise")
    op.signal(f"work.item-{x}")
    return op.id


def signal_then_wait(packed: tuple[str, Any]) -> str:
    """Signal, then block until the test releases the event: only a live relay shows it."""
    name, release = packed
    current_operation().signal(name)
    if not release.wait(WAIT):
        raise AssertionError("never released")
    return name


def gate(packed: tuple[str, Any, Any]) -> str:
    """Record that this item ran; the item called "A" waits for the release event."""
    name, ran, release = packed
    ran.append(name)
    if name == "A":
        current_operation().signal("A.started")
        if not release.wait(WAIT):
            raise AssertionError("never released")
    return name


def mark_then_sleep(packed: tuple[Any, int]) -> int:
    """Set the event, then take half a second: the outcome comes after the caller left."""
    started, x = packed
    started.set()
    time.sleep(0.5)
    return x * 10


def note(packed: tuple[str, Any]) -> str:
    """Record that this item ran."""
    name, ran = packed
    ran.append(name)
    return name


def size_after_gates(packed: tuple[str, Any, Any, bytes]) -> int:
    """Item "A" signals, waits for `go`, signals again and waits for `release`; every item
    returns the size of its blob."""
    name, go, release, blob = packed
    if name == "A":
        op = current_operation()
        op.signal("A.started")
        if not go.wait(WAIT):
            raise AssertionError("never let go")
        op.signal("A.more")
        if not release.wait(WAIT):
            raise AssertionError("never released")
    return len(blob)


class CancelledStandIn:
    """An operation that was asked to cancel before its body reached the backend."""

    id = 4242
    key = None
    cancelled = True


class NoReaders(asyncio.SelectorEventLoop):
    """A loop that cannot watch sockets, like Windows' proactor loop."""

    add_reader = asyncio.BaseEventLoop.add_reader  # raises NotImplementedError
    add_writer = asyncio.BaseEventLoop.add_writer


async def async_body(x: int) -> int:
    return x


class Scaler:
    """A picklable callable object (an instance of a module-level class)."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    def __call__(self, x: int) -> int:
        return x * self.factor


class CountsUnpickling:
    """A body that says how often its class was unpickled in this process."""

    unpickled = 0

    def __setstate__(self, state: dict[str, Any]) -> None:
        type(self).unpickled += 1
        self.__dict__.update(state)

    def __call__(self, _: Any) -> int:
        return type(self).unpickled


class CountsPickling:
    """An item that counts how often it was pickled in this process."""

    pickled = 0

    def __init__(self, value: int) -> None:
        self.value = value

    def __getstate__(self) -> dict[str, Any]:
        type(self).pickled += 1
        return self.__dict__


def value_of(item: CountsPickling) -> int:
    return item.value


def contents(items: list[int]) -> list[int]:
    return items


class AsyncCallable:
    async def __call__(self, x: int) -> int:
        return x


# -- where bodies run ---------------------------------------------------------------------------


def test_bodies_run_in_worker_processes(make, backend):
    """A picklable body runs in another process; its results come back to the coordinator."""
    assert isinstance(backend, Backend)
    c = make(ResultCoordinator, square, max_concurrency=4, backend=backend)
    run_all(c, range(10))
    assert sorted(c.get_results()) == [x * x for x in range(10)]
    pids = make(ResultCoordinator, pid_of, max_concurrency=2, backend=backend)
    run_all(pids, range(4))
    assert os.getpid() not in pids.get_results()


def test_cpu_bound_work_uses_both_processes(make, backend, manager):
    """Two items meet at a barrier (only possible in two processes at once), eight times over."""
    barrier = manager.Barrier(2)
    c = make(ResultCoordinator, crunch, max_concurrency=2, backend=backend)
    run_all(c, [(barrier, 20_000)] * 8)
    assert c.total_completed == 8, [s.error for s in c.get_failed()]
    assert len(set(c.get_results())) == 2
    assert os.getpid() not in c.get_results()


def test_a_callable_object_is_a_body(make, backend):
    """An instance of a module-level class pickles, state included."""
    c = make(ResultCoordinator, Scaler(3), backend=backend)
    run_all(c, [1, 2])
    assert sorted(c.get_results()) == [3, 6]


def test_a_body_is_unpickled_once_per_worker_process(make):
    """Each worker keeps the body it unpickled; items do not unpickle it again."""
    with ProcessBackend(max_workers=1) as solo:
        body = CountsUnpickling()
        body.tag = "state"  # type: ignore[attr-defined]
        c = make(ResultCoordinator, body, max_concurrency=1, backend=solo)
        run_all(c, range(5))
        assert c.get_results() == (1, 1, 1, 1, 1)
        c.close(WAIT)


def test_bodies_in_flight_hold_no_coordinator_thread(make, backend, manager):
    """The wrapped body is a coroutine function: items in flight are tasks, not threads."""
    assert asyncio.iscoroutinefunction(type(backend.wrap(square, is_async=False)).__call__)
    release = manager.Event()
    c = make(WorkCoordinator, signal_then_wait, max_concurrency=2, backend=backend)
    c.enqueue_many([("one", release), ("two", release)])
    wait_until(lambda: c.has_signal("one") and c.has_signal("two"))
    assert c.active_count == 2
    prefix = f"ephemeral-actors-{c.name}-worker"
    assert [t.name for t in threading.enumerate() if t.name.startswith(prefix)] == []
    release.set()
    c.complete()
    c.drain(WAIT)
    assert c.total_completed == 2


def test_the_operation_in_the_worker_carries_its_id(make, backend):
    """current_operation() there has the local id, no key, and is never cancelled."""
    c = make(ResultCoordinator, describe_op, backend=backend)
    (op_id,) = run_all(c, [0])
    ((got_id, key, cancelled, pid),) = c.get_results()
    assert (got_id, key, cancelled) == (op_id, None, False)
    assert pid != os.getpid()


def test_keyed_coordinators_pass_the_key(make, backend):
    """In a keyed coordinator the worker's operation carries str(key)."""
    c = make(KeyedWorkCoordinator, lambda x: x % 2, describe_op, backend=backend)
    run_all(c, range(4))
    keys = {s.key for s in c.get_snapshot()}
    assert keys == {"0", "1"}


def test_calling_the_wrapped_body_outside_a_coordinator(backend):
    """Without an operation, the wrapped body still runs; current_operation() raises there."""
    wrapped = backend.wrap(no_op_outside, is_async=False)
    assert asyncio.run(wrapped(1)) == "none"


# -- outcomes -----------------------------------------------------------------------------------


def test_failures_are_recorded_with_their_exception(make, backend):
    """A body's exception fails its operation with the same type and message."""
    c = make(WorkCoordinator, odd_fails, max_concurrency=2, backend=backend)
    run_all(c, range(4))
    assert (c.total_completed, c.total_failed) == (2, 2)
    errors = [s.error for s in c.get_failed()]
    assert all(type(e) is LedgerError for e in errors)
    assert sorted(str(e) for e in errors) == ["odd item 1", "odd item 3"]
    assert all("Raised on a worker process" in "".join(e.__notes__) for e in errors)


def test_submit_futures_carry_results_and_errors(make, backend):
    """ResultCoordinator.submit: the future resolves with the value or the body's exception."""
    c = make(ResultCoordinator, odd_fails, backend=backend)
    ok, bad = c.submit(2), c.submit(3)
    assert ok.get(timeout=WAIT) == 2
    with pytest.raises(LedgerError, match="odd item 3"):
        bad.get(timeout=WAIT)


def test_an_exception_that_cannot_be_pickled_becomes_a_runtime_error(make, backend):
    c = make(WorkCoordinator, raise_unpicklable, backend=backend)
    run_all(c, [1])
    (snap,) = c.get_failed()
    assert type(snap.error) is RuntimeError
    assert "Unpicklable" in str(snap.error)
    assert "holds a lock" in str(snap.error)


def test_a_result_that_cannot_be_pickled_fails_its_item(make, backend):
    c = make(ResultCoordinator, return_lock, max_concurrency=2, backend=backend)
    run_all(c, [0, 1, 2])
    assert sorted(c.get_results()) == [0, 2]
    (snap,) = c.get_failed()
    assert isinstance(snap.error, TypeError)
    assert "result" in str(snap.error)
    assert "_thread.lock" in str(snap.error)


def test_a_plain_body_returning_a_coroutine_fails(make, backend):
    c = make(WorkCoordinator, return_coroutine, backend=backend)
    run_all(c, [1])
    (snap,) = c.get_failed()
    assert isinstance(snap.error, TypeError)
    assert "coroutine" in str(snap.error)


# -- picklability -------------------------------------------------------------------------------


def _lambda() -> Callable[[Any], Any]:
    return lambda x: x


def _closure() -> Callable[[Any], Any]:
    factor = 2

    def body(x: int) -> int:
        return x * factor

    return body


def _local_class_instance() -> Callable[[Any], Any]:
    class Local:
        def __call__(self, x: int) -> int:
            return x

    return Local()


@pytest.mark.parametrize("build", [_lambda, _closure, _local_class_instance])
def test_an_unpicklable_body_raises_type_error_at_construction(backend, build):
    with pytest.raises(TypeError, match="cannot be pickled"):
        WorkCoordinator(build(), CoordinatorOptions(backend=backend))


@pytest.mark.parametrize("body", [async_body, AsyncCallable()], ids=["async-def", "async-call"])
def test_a_coroutine_body_raises_type_error_at_construction(backend, body):
    with pytest.raises(TypeError, match="plain"):
        WorkCoordinator(body, CoordinatorOptions(backend=backend))
    with pytest.raises(TypeError, match="plain"):
        backend.wrap(body, is_async=False)


def test_check_item_names_the_type_of_an_unpicklable_item(backend):
    """check_item passes picklable items and raises TypeError naming the type otherwise."""
    backend.check_item((1, "two", [3.0]))
    with pytest.raises(TypeError, match=r"_thread\.lock") as info:
        backend.check_item(threading.Lock())
    assert "picklable" in str(info.value)

    class Local:
        pass

    with pytest.raises(TypeError, match=r"test_check_item_names_the_type.*Local"):
        backend.check_item(Local())


def test_an_unpicklable_item_is_refused_at_intake(make, backend):
    """SPEC 17: enqueue/submit raise TypeError naming the item, try_enqueue says False;
    nothing is accepted for it."""
    c = make(ResultCoordinator, square, max_concurrency=2, backend=backend)
    with pytest.raises(TypeError, match="_thread.lock"):
        c.enqueue(threading.Lock())
    with pytest.raises(TypeError, match="_thread.lock"):
        c.submit(threading.Lock())
    assert c.try_enqueue(threading.Lock()) is False
    run_all(c, [2, 3])
    assert sorted(c.get_results()) == [4, 9]
    assert c.total_enqueued == 2


def test_a_keyed_coordinator_refuses_an_unpicklable_item_at_intake(make, backend):
    """The same for keyed items, whose intake checks the item before taking its key."""
    keys: list[Any] = []

    def key_of(item: Any) -> int:
        keys.append(item)
        return 0

    c = make(KeyedWorkCoordinator, key_of, square, max_concurrency=2, backend=backend)
    with pytest.raises(TypeError, match="_thread.lock"):
        c.enqueue(threading.Lock())
    assert c.try_enqueue(threading.Lock()) is False
    assert keys == []  # refused before its key was asked for
    run_all(c, [2, 3])
    assert c.total_enqueued == 2
    assert c.total_completed == 2


def test_labelled_items_of_a_backend_are_labelled_as_given(make, backend):
    """With `describe`, intake takes the general path: the label comes from the item as
    offered, the body gets it through the backend, a bad item is still refused."""
    c = make(ResultCoordinator, square, backend=backend, describe=lambda x: f"n={x}")
    with pytest.raises(TypeError, match="_thread.lock"):
        c.enqueue(threading.Lock())
    run_all(c, [2, 3])
    assert sorted(c.get_results()) == [4, 9]
    assert sorted(s.label for s in c.get_snapshot()) == ["n=2", "n=3"]


def test_an_item_is_pickled_once_at_intake(make, backend):
    """prepare_item pickles the item in the caller's thread; the event loop sends those
    bytes as they are (it pickled every item a second time before)."""
    c = make(ResultCoordinator, value_of, max_concurrency=2, backend=backend)
    before = CountsPickling.pickled
    futures = [c.submit(CountsPickling(n)) for n in range(5)]
    assert CountsPickling.pickled - before == 5  # at intake, before any item ran
    assert sorted(f.result(WAIT) for f in futures) == [0, 1, 2, 3, 4]
    assert CountsPickling.pickled - before == 5


def test_a_process_body_sees_its_item_as_it_was_offered(make, backend):
    """The item is pickled when it is offered: a later change does not reach the worker
    process, as with any message sent to another process."""
    c = make(ResultCoordinator, contents, max_concurrency=1, backend=backend)
    c.pause()
    items = [1, 2]
    future = c.submit(items)
    items.append(3)
    c.resume()
    assert future.result(WAIT) == [1, 2]


def test_the_wrapped_body_still_fails_an_unpicklable_item(backend):
    """Called outside a coordinator, the wrapped body fails the item with check_item's error."""
    run = backend.wrap(square, is_async=False)
    with pytest.raises(TypeError, match="_thread.lock"):
        asyncio.run(run(threading.Lock()))


# -- crashes ------------------------------------------------------------------------------------


def test_a_dead_worker_process_fails_its_item_and_the_next_items_run(make):
    """os._exit in a body: that item fails with WorkerCrashError, a fresh pool runs the rest."""
    with ProcessBackend(max_workers=1) as solo:
        c = make(ResultCoordinator, die_on_zero, max_concurrency=1, backend=solo)
        run_all(c, [1, 0, 2, 3])
        assert c.get_results() == (1, 2, 3)
        (failed,) = c.get_failed()
        assert isinstance(failed.error, WorkerCrashError)
        assert "worker process died" in str(failed.error)
        assert solo.pool_restarts == 1
        assert c.stats().worker_restarts == 1  # SPEC 14: a dead worker process is a crash
        c.close(WAIT)


def test_a_dead_worker_process_past_max_restarts_faults_the_coordinator(make):
    """max_restarts=0: the first dead worker process faults the coordinator (SPEC 14)."""
    with ProcessBackend(max_workers=1) as solo:
        c = make(ResultCoordinator, die_on_zero, max_concurrency=1, backend=solo, max_restarts=0)
        first = c.submit(0)
        with pytest.raises(WorkerCrashError):
            first.result(timeout=WAIT)
        wait_until(lambda: c.is_faulted)
        with pytest.raises(CoordinatorFaultedError):
            c.enqueue(1)
        assert c.stats().worker_restarts == 1
        c.close(WAIT)


def test_a_broken_pool_loses_and_hangs_nothing(make):
    """Items in flight when a worker dies end too (WorkerCrashError); later ones run."""
    with ProcessBackend(max_workers=2) as pair:
        c = make(ResultCoordinator, die_on_zero, max_concurrency=4, backend=pair)
        run_all(c, [5, 6, 0, 7, 8, 9, 10, 11])
        assert c.total_completed + c.total_failed == 8
        failed = c.get_failed()
        assert failed
        assert all(isinstance(s.error, WorkerCrashError) for s in failed)
        assert 0 not in c.get_results()
        assert pair.pool_restarts >= 1
        after = make(ResultCoordinator, square, backend=pair)
        run_all(after, [4])
        assert after.get_results() == (16,)
        c.close(WAIT)
        after.close(WAIT)


def test_a_worker_process_killed_while_idle_is_replaced(make):
    """A process killed from outside between items: its end is noticed while the backend is
    idle, a fresh process replaces it, and the next item runs there without an error."""
    with ProcessBackend(max_workers=1) as solo:
        c = make(ResultCoordinator, pid_of, max_concurrency=1, backend=solo)
        first = c.submit(0).get(timeout=WAIT)
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: solo.pool_restarts == 1)
        wait_until(lambda: not alive(first))  # reaped without another item
        second = c.submit(1).get(timeout=WAIT)
        assert second not in (first, os.getpid())
        s = c.stats()
        assert (s.total_completed, s.total_failed, s.worker_restarts) == (2, 0, 0)
        c.close(WAIT)


def test_a_worker_process_found_dead_at_submit_is_replaced_and_the_item_runs(make):
    """A process that died while no loop watched it (its coordinator closed): the next item,
    refused by its socket, runs in a fresh process, with no error."""
    with ProcessBackend(max_workers=1) as solo:
        c = make(ResultCoordinator, pid_of, max_concurrency=1, backend=solo)
        first = c.submit(0).get(timeout=WAIT)
        c.close(WAIT)
        (lane,) = solo._lanes
        os.kill(first, signal.SIGKILL)
        lane.process.join(WAIT)
        assert not alive(first)
        d = make(ResultCoordinator, pid_of, max_concurrency=1, backend=solo)
        assert d.submit(1).get(timeout=WAIT) not in (first, os.getpid())
        assert solo.pool_restarts == 1
        s = d.stats()
        assert (s.total_completed, s.total_failed, s.worker_restarts) == (1, 0, 0)
        d.close(WAIT)


def test_a_crash_fails_only_the_item_its_process_was_running(make):
    """The item queued behind the dying one in the same process never started: it runs."""
    with ProcessBackend(max_workers=1) as solo:
        c = make(ResultCoordinator, die_on_zero, max_concurrency=2, backend=solo)
        crashed, queued = c.submit(0), c.submit(5)
        with pytest.raises(WorkerCrashError, match="worker process died"):
            crashed.result(WAIT)
        assert queued.result(WAIT) == 5
        assert solo.pool_restarts == 1
        assert c.stats().worker_restarts == 1
        c.close(WAIT)


# -- deadlines: item_timeout kills the process (SPEC 17) ----------------------------------------


@pytest.mark.timeout(60)
def test_a_hung_body_is_killed_at_its_deadline_and_the_next_items_run(make, manager):
    """A body that never returns: its process is killed at item_timeout, the item fails with
    OperationTimeoutError (not a crash), later items run in a fresh process, and after
    close() and shutdown() no child process is left."""
    pids = manager.list()
    with ProcessBackend(max_workers=1) as solo:
        c = make(ResultCoordinator, hang_or_return, backend=solo, item_timeout=0.5)
        started = time.monotonic()
        hung = c.submit(("hang", pids))
        with pytest.raises(OperationTimeoutError, match=r"item_timeout=0\.5"):
            hung.result(WAIT)
        assert 0.4 < time.monotonic() - started < WAIT
        (hung_pid,) = pids
        wait_until(lambda: not alive(hung_pid))  # killed, and reaped by its pool
        later = [c.submit((i, pids)) for i in range(3)]
        assert [f.result(WAIT) for f in later] == [0, 1, 2]
        assert hung_pid not in pids[1:]
        assert (solo.kills, solo.pool_restarts) == (1, 1)
        s = c.stats()
        assert (s.total_completed, s.total_failed, s.total_cancelled) == (3, 1, 0)
        assert (s.worker_restarts, s.abandoned_threads) == (0, 0)
        (failed,) = c.get_failed()
        assert isinstance(failed.error, OperationTimeoutError)
        assert failed.attempts == 1
        c.close(WAIT)
    children = {p.pid for p in multiprocessing.active_children()}
    assert not children & set(pids)
    assert not any(alive(pid) for pid in set(pids))


@pytest.mark.timeout(60)
def test_the_item_queued_behind_a_killed_body_runs_in_the_fresh_process(make, manager):
    """A process holds its next item too; killing it does not fail that item, which never
    started: it is re-sent (here it belongs to a coordinator without a deadline)."""
    pids = manager.list()
    with ProcessBackend(max_workers=1) as solo:
        timed = make(WorkCoordinator, hang_or_return, backend=solo, item_timeout=0.5)
        patient = make(ResultCoordinator, hang_or_return, backend=solo)
        timed.enqueue(("hang", pids))
        wait_until(lambda: len(pids) == 1)
        queued = patient.submit((7, pids))
        wait_until(lambda: solo.in_flight == 2)
        (lane,) = solo._lanes
        assert len(lane.jobs) == 2  # queued in the hung body's process, not in the backend
        assert queued.result(WAIT) == 7
        hung_pid, ran_in = pids
        assert ran_in != hung_pid
        assert solo.kills == 1
        assert timed.stats().total_failed == 1
        assert isinstance(timed.get_failed()[0].error, OperationTimeoutError)
        assert (patient.stats().total_completed, patient.stats().total_failed) == (1, 0)


@pytest.mark.timeout(60)
def test_a_killed_attempt_is_retried_in_a_fresh_process(make, manager):
    """With a RetryPolicy, the attempt killed at its deadline runs again: one operation,
    two attempts, completed once."""
    marks = manager.list()
    with ProcessBackend(max_workers=1) as solo:
        policy = RetryPolicy(attempts=3, backoff=0, jitter=0)
        c = make(
            ResultCoordinator, hang_the_first_time, backend=solo, item_timeout=0.5, retry=policy
        )
        future = c.submit(marks)
        assert future.result(WAIT) == "second attempt"
        (snap,) = c.get_snapshot()
        assert (snap.id, snap.attempts, snap.error) == (future.operation_id, 2, None)
        s = c.stats()
        assert (s.total_enqueued, s.total_completed, s.total_failed) == (1, 1, 0)
        assert solo.kills == 1
        wait_until(lambda: not alive(marks[0]))


@pytest.mark.timeout(60)
def test_out_of_attempts_a_hung_body_fails_once_with_the_timeout(make, manager):
    """Every attempt hangs: each is killed, and the operation fails once, after `attempts`."""
    pids = manager.list()
    with ProcessBackend(max_workers=1) as solo:
        policy = RetryPolicy(attempts=2, backoff=0, jitter=0)
        c = make(WorkCoordinator, hang_or_return, backend=solo, item_timeout=0.3, retry=policy)
        with pytest.raises(OperationTimeoutError, match="attempt 2"):
            c.submit(("hang", pids)).result(WAIT)
        (failed,) = c.get_failed()
        assert failed.attempts == 2
        s = c.stats()
        assert (s.total_enqueued, s.total_failed, s.worker_restarts) == (1, 1, 0)
        assert solo.kills == 2
        assert len(set(pids)) == 2  # each attempt in a process of its own
        wait_until(lambda: not any(alive(pid) for pid in pids))


@pytest.mark.timeout(60)
def test_a_cancel_request_before_the_deadline_still_counts_as_cancelled(make, manager):
    """A body in a process cannot see cancel_operation(); the deadline kills it, and the
    earlier request decides how it counts: cancelled, not timed out, not a bare
    CancelledError."""
    pids = manager.list()
    with ProcessBackend(max_workers=1) as solo:
        c = make(WorkCoordinator, hang_or_return, backend=solo, item_timeout=0.5)
        future = c.submit(("hang", pids))
        wait_until(lambda: len(pids) == 1)
        assert c.cancel_operation(future.operation_id) is True
        with pytest.raises(OperationCancelledError) as info:
            future.result(WAIT)
        assert not isinstance(info.value, OperationTimeoutError)
        assert "killed" in str(info.value)
        s = c.stats()
        assert (s.total_cancelled, s.total_failed, s.worker_restarts) == (1, 0, 0)
        assert solo.kills == 1
        wait_until(lambda: not alive(pids[0]))


def test_the_kill_hook_answers_false_for_unknown_and_ended_operations(make, backend):
    """kill(op_id) stops only a body in flight: False for an unknown id or an ended item."""
    c = make(ResultCoordinator, square, backend=backend)
    (op_id,) = run_all(c, [3])
    assert c.get_results() == (9,)
    assert backend.kill(op_id) is False
    assert backend.kill(12345) is False
    assert backend.kills == 0


# -- signals ------------------------------------------------------------------------------------


def test_signals_from_a_worker_reach_the_coordinator(make, backend):
    """signal() and retract() in the worker replay on the local operation, once each, in order."""
    c = make(ResultCoordinator, signalling, max_concurrency=2, backend=backend)
    ids = run_all(c, range(3))
    assert sorted(c.get_results()) == sorted(ids)
    assert c.count_signals("work.started") == 3
    assert not c.has_signal("work.noise")
    item_of = {op_id: x for x, op_id in enumerate(ids)}
    for snap in c.get_snapshot():
        assert snap.signals == ("work.started", f"work.item-{item_of[snap.id]}")


def test_signals_are_relayed_while_the_body_runs(make, backend, manager):
    """A signal reaches the coordinator before its body returns (the body waits for that)."""
    release = manager.Event()
    c = make(WorkCoordinator, signal_then_wait, backend=backend)
    c.enqueue(("live.signal", release))
    wait_until(lambda: c.has_signal("live.signal"))
    assert c.active_count == 1
    release.set()
    c.complete()
    c.drain(WAIT)
    assert c.total_completed == 1


def test_a_relayed_cancel_signal_stops_new_work_at_once(make, backend, manager):
    """cancel_on_signals acts on a signal from a body that is still running."""
    release = manager.Event()
    c = make(
        WorkCoordinator,
        signal_then_wait,
        backend=backend,
        max_concurrency=2,
        cancel_on_signals="stop.*",
    )
    c.enqueue(("stop.now", release))
    wait_until(lambda: c.has_signal("stop.now"))
    c.enqueue(("after", release))
    wait_until(lambda: c.total_cancelled == 1)
    release.set()
    c.complete()
    c.drain(WAIT)
    assert (c.total_completed, c.total_cancelled) == (1, 1)
    (cancelled,) = [s for s in c.get_snapshot() if isinstance(s.error, SignalCancelledError)]
    assert cancelled.error.signal == "stop.now"


# -- cancellation -------------------------------------------------------------------------------


def test_cancel_withdraws_items_no_process_started(make, manager):
    """With one process busy, cancel() withdraws the queued items; started ones finish."""
    ran = manager.list()
    release = manager.Event()
    with ProcessBackend(max_workers=1) as solo:
        c = make(WorkCoordinator, gate, max_concurrency=4, backend=solo)
        c.enqueue_many([(name, ran, release) for name in "ABCD"])
        wait_until(lambda: c.has_signal("A.started") and solo.in_flight == 4)
        c.cancel()
        wait_until(lambda: solo.in_flight < 4)  # D (at least) was withdrawn
        release.set()
        c.drain(WAIT)
        assert "A" in ran
        assert "D" not in ran
        assert c.total_cancelled == 4 - len(ran)
        assert c.total_completed == len(ran)
        cancelled = [s for s in c.get_snapshot() if s.error is not None]
        assert all(isinstance(s.error, OperationCancelledError) for s in cancelled)
        c.close(WAIT)


def test_cancel_withdraws_the_item_queued_in_the_busy_process(make, manager):
    """B waits in the same process as the running A: cancel() withdraws it there, so
    only A runs."""
    ran = manager.list()
    release = manager.Event()
    with ProcessBackend(max_workers=1) as solo:
        c = make(WorkCoordinator, gate, max_concurrency=2, backend=solo)
        c.enqueue_many([(name, ran, release) for name in "AB"])
        wait_until(lambda: c.has_signal("A.started") and solo.in_flight == 2)
        (lane,) = solo._lanes
        assert len(lane.jobs) == 2
        c.cancel()
        wait_until(lambda: solo.in_flight == 1)
        release.set()
        c.drain(WAIT)
        assert list(ran) == ["A"]
        assert (c.total_completed, c.total_cancelled) == (1, 1)
        c.close(WAIT)


def test_the_cancel_hook_withdraws_one_queued_item(make, manager):
    """backend.cancel(op_id): True for an item still queued for a process, False otherwise."""
    ran = manager.list()
    release = manager.Event()
    with ProcessBackend(max_workers=1) as solo:
        c = make(WorkCoordinator, gate, max_concurrency=4, backend=solo)
        ids = [c.enqueue((name, ran, release)) for name in "ABCD"]
        wait_until(lambda: c.has_signal("A.started") and solo.in_flight == 4)
        assert solo.cancel(ids[0]) is False  # running
        assert solo.cancel(12345) is False  # unknown
        assert solo.cancel(ids[3]) is True
        release.set()
        c.complete()
        c.drain(WAIT)
        assert "D" not in ran
        (withdrawn,) = [s for s in c.get_snapshot() if s.id == ids[3]]
        assert isinstance(withdrawn.error, OperationCancelledError)
        c.close(WAIT)


# -- the lanes: read by the coordinator's loop ----------------------------------------------


def test_lanes_run_no_thread_in_this_process(make, manager):
    """The coordinator's loop reads the worker processes itself: while bodies run in two
    processes, the backend has added no thread here (no pool manager, feeder or relay)."""
    release = manager.Event()
    before = set(threading.enumerate())
    with ProcessBackend(max_workers=2) as pair:
        c = make(WorkCoordinator, signal_then_wait, max_concurrency=4, backend=pair)
        c.enqueue_many([(f"held.{i}", release) for i in range(4)])
        wait_until(lambda: c.has_signal("held.0") and c.has_signal("held.1"))
        wait_until(lambda: pair.in_flight == 4)
        assert len(pair._lanes) == 2
        added = [t.name for t in set(threading.enumerate()) - before]
        # The coordinator's own threads (its loop, its supervisor) are named ours.
        assert [n for n in added if not n.startswith("ephemeral-actors-")] == []
        assert [n for n in added if n.startswith("ephemeral-actors-process")] == []
        release.set()
        c.complete()
        c.drain(WAIT)
        assert c.total_completed == 4
        c.close(WAIT)


def test_a_large_item_queued_behind_a_running_body_does_not_stall_the_loop(make, manager):
    """A 16 MiB item for a process that is busy cannot be written at once: the rest waits in
    the backend while the loop goes on reading that same process (its live signals arrive),
    and the item runs whole once the process takes it."""
    go, release = manager.Event(), manager.Event()
    size = 16 << 20
    with ProcessBackend(max_workers=1) as solo:
        c = make(ResultCoordinator, size_after_gates, max_concurrency=2, backend=solo)
        first = c.submit(("A", go, release, b""))
        wait_until(lambda: c.has_signal("A.started"))
        big = c.submit(("B", go, release, b"x" * size))
        wait_until(lambda: solo.in_flight == 2 and len(solo._lanes[0].jobs) == 2)
        (lane,) = solo._lanes
        # The process, busy with A, has not read all of B: the rest waits here, unsent.
        wait_until(lambda: len(lane.outbuf) > 0)
        go.set()
        wait_until(lambda: c.has_signal("A.more"))  # read by the loop while B is unsent
        assert lane.outbuf
        release.set()
        assert first.get(timeout=WAIT) == 0
        assert big.get(timeout=WAIT) == size
        assert not lane.outbuf
        c.close(WAIT)


def test_an_item_asked_to_cancel_before_it_reaches_the_backend_never_runs(backend, manager):
    """An operation already asked to cancel when its body is called: the item is withdrawn at
    once (there is no polling timer to catch it later), and the body never runs."""
    ran = manager.list()
    wrapped = backend.wrap(note, is_async=False)
    token = _current.set(CancelledStandIn())  # type: ignore[arg-type]
    try:
        with pytest.raises(OperationCancelledError, match="4242"):
            asyncio.run(wrapped(("never", ran)))
    finally:
        _current.reset(token)
    assert asyncio.run(wrapped(("after", ran))) == "after"
    assert list(ran) == ["after"]


def test_a_body_awaited_on_another_loop_runs_while_the_home_loop_is_busy(make, backend, manager):
    """The coordinators' loop watches the processes; a body awaited on another loop (here
    asyncio.run in the test's thread) is served through it and its outcome comes back."""
    release = manager.Event()
    c = make(WorkCoordinator, signal_then_wait, backend=backend)
    c.enqueue(("held", release))
    wait_until(lambda: c.has_signal("held"))
    assert backend._home is not None
    assert backend._home.is_running()
    wrapped = backend.wrap(square, is_async=False)
    assert asyncio.run(wrapped(7)) == 49
    release.set()
    c.complete()
    c.drain(WAIT)
    assert c.total_completed == 1


def test_a_loop_that_cannot_watch_sockets_gets_a_private_one():
    """A loop without add_reader (Windows' proactor loop): the backend watches its processes
    from a selector loop of its own, on a thread that ends with shutdown()."""
    with ProcessBackend(max_workers=1) as solo:
        wrapped = solo.wrap(square, is_async=False)
        loop = NoReaders()
        try:
            assert loop.run_until_complete(wrapped(6)) == 36
            assert loop.run_until_complete(wrapped(7)) == 49
        finally:
            loop.close()
        names = [t.name for t in threading.enumerate()]
        assert any(n.startswith("ephemeral-actors-process-io") for n in names)
    names = [t.name for t in threading.enumerate()]
    assert not any(n.startswith("ephemeral-actors-process-io") for n in names)


# -- sharing and lifecycle ----------------------------------------------------------------------


def test_one_backend_serves_two_coordinators(make, backend):
    """Two coordinators share the pool; closing them leaves the backend usable."""
    first = make(ResultCoordinator, square, max_concurrency=2, backend=backend)
    second = make(ResultCoordinator, odd_fails, max_concurrency=2, backend=backend)
    before = backend.submitted
    for i in range(6):
        first.enqueue(i)
        second.enqueue(2 * i)
    for c in (first, second):
        c.complete()
    for c in (first, second):
        c.drain(WAIT)
    assert sorted(first.get_results()) == [0, 1, 4, 9, 16, 25]
    assert sorted(second.get_results()) == [0, 2, 4, 6, 8, 10]
    assert backend.submitted - before == 12
    first.close(WAIT)
    second.close(WAIT)
    third = make(ResultCoordinator, square, backend=backend)
    run_all(third, [7])
    assert third.get_results() == (49,)


def test_shutdown_leaves_no_process_and_no_thread(make):
    """After shutdown() every worker process has exited and no thread of the pool remains."""
    threads_before = set(threading.enumerate())
    b = ProcessBackend(max_workers=2)
    c = make(ResultCoordinator, pid_of, max_concurrency=4, backend=b)
    c.enqueue(1)
    assert not c.try_enqueue(("meant", "to", "fail", threading.Lock()))
    c.enqueue(2)
    c.complete()
    c.drain(WAIT)
    pids = set(c.get_results())
    assert pids
    assert {p.pid for p in multiprocessing.active_children()} >= pids
    c.close(WAIT)
    b.shutdown()
    b.shutdown()  # idempotent
    assert not {p.pid for p in multiprocessing.active_children()} & pids
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    library = set(library_threads())
    left = [t.name for t in set(threading.enumerate()) - threads_before - library]
    assert left == []
    assert not any(t.name.startswith("ephemeral-actors-process-relay") for t in library)


def test_shutdown_while_a_coordinator_loop_still_watches_the_processes(make):
    """shutdown() with a coordinator still open: its loop and shutdown() both see each
    process end; every process is joined, every socket closed, nothing raises."""
    for _ in range(5):
        b = ProcessBackend(max_workers=2)
        c = make(ResultCoordinator, pid_of, max_concurrency=4, backend=b)
        run_all(c, range(20))
        pids = set(c.get_results())
        lanes = list(b._lanes)
        b.shutdown()
        assert all(lane.sock.fileno() == -1 for lane in lanes)
        assert not {p.pid for p in multiprocessing.active_children()} & pids
        c.close(WAIT)


def test_a_program_that_never_calls_shutdown_still_exits():
    """The worker processes are not daemonic (multiprocessing joins them at exit): the
    backend's exit hook lets them end, so the interpreter does not wait forever."""
    script = textwrap.dedent(
        """
        import asyncio
        from ephemeral_actors.backends import ProcessBackend
        from tests.backends.test_process import square

        backend = ProcessBackend(max_workers=2)
        wrapped = backend.wrap(square, is_async=False)

        async def main():
            return await asyncio.gather(wrapped(3), wrapped(4))

        print(asyncio.run(main()))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=6 * WAIT,
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "[9, 16]"), done.stderr


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_a_forked_worker_process_holds_no_other_lanes_socket(make):
    """A lane's process, forked after another lane exists, closes its copy of that lane's
    socket, so each lane's process sees the end of its own socket when this one ends."""
    with ProcessBackend(max_workers=2, mp_context=multiprocessing.get_context("fork")) as pair:
        c = make(ResultCoordinator, pid_of, max_concurrency=4, backend=pair)
        run_all(c, range(8))
        assert len(pair._lanes) == 2
        first, second = pair._lanes
        held = set()
        for fd in Path(f"/proc/{second.process.pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                held.add(str(fd.readlink()))
        assert f"socket:[{os.fstat(first.sock.fileno()).st_ino}]" not in held
        assert f"socket:[{os.fstat(second.sock.fileno()).st_ino}]" not in held
        c.close(WAIT)


def test_shutdown_fails_queued_items_and_lets_running_ones_finish(make, manager):
    """shutdown() with items waiting for a process: those fail (RuntimeError), A finishes."""
    ran = manager.list()
    release = manager.Event()
    solo = ProcessBackend(max_workers=1)
    c = make(WorkCoordinator, gate, max_concurrency=4, backend=solo)
    ids = [c.enqueue((name, ran, release)) for name in "ABCD"]
    wait_until(lambda: c.has_signal("A.started") and solo.in_flight == 4)
    closer = threading.Thread(target=solo.shutdown)
    closer.start()
    wait_until(lambda: c.total_failed >= 1)  # D, still queued, failed at once
    release.set()
    closer.join(WAIT)
    assert not closer.is_alive()
    c.complete()
    c.drain(WAIT)
    assert "D" not in ran
    (d,) = [s for s in c.get_snapshot() if s.id == ids[3]]
    assert isinstance(d.error, RuntimeError)
    assert "shut down before a worker process started" in str(d.error)
    (a,) = [s for s in c.get_snapshot() if s.id == ids[0]]
    assert a.error is None


def test_a_shut_down_backend_refuses_work(make):
    b = ProcessBackend(max_workers=1)
    c = make(WorkCoordinator, square, backend=b)
    b.shutdown()
    run_all(c, [1])
    (snap,) = c.get_failed()
    assert isinstance(snap.error, RuntimeError)
    assert "shut down" in str(snap.error)
    with pytest.raises(RuntimeError, match="shut down"):
        b.wrap(square, is_async=False)


def test_a_spawned_pool_runs_bodies_and_relays_signals(make):
    """mp_context=spawn: fresh interpreters import the body by name; signals still relay."""
    with ProcessBackend(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as b:
        assert "start_method=spawn" in repr(b)
        c = make(ResultCoordinator, signalling, backend=b)
        (op_id,) = run_all(c, [1])
        assert c.get_results() == (op_id,)
        assert c.count_signals("work.item-1") == 1
        c.close(WAIT)


def test_constructor_validation():
    with pytest.raises(ValueError, match="max_workers"):
        ProcessBackend(max_workers=0)
    with pytest.raises(TypeError, match="max_workers"):
        ProcessBackend(max_workers=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mp_context"):
        ProcessBackend(mp_context="spawn")  # type: ignore[arg-type]
    assert ProcessBackend().max_workers >= 1
    assert "new" in repr(ProcessBackend(max_workers=3))


def test_a_result_outlives_the_caller_loop_that_served_it(make, manager):
    """A coordinator's result is read even after the loop that served the backend closed.

    The backend serves every job from one home loop, which reads the workers' sockets.
    Here that home is another coordinator's loop (an `asyncio.run` that ends) while a
    job of a coordinator on the shared loop is in flight: the waiting job notices the
    home is gone and its own loop takes over the sockets. Its result used to be left
    unread for good.
    """
    backend = ProcessBackend(max_workers=2)
    try:
        waiting = make(ResultCoordinator, mark_then_sleep, max_concurrency=2, backend=backend)
        started = manager.Event()

        async def main() -> Any:
            served_here = ResultCoordinator(
                square, CoordinatorOptions(max_concurrency=2, backend=backend)
            )
            assert await served_here.submit_async(3) == 9  # the backend's home: this loop
            future = waiting.submit((started, 5))
            assert await asyncio.to_thread(started.wait, WAIT)  # in flight, served here
            served_here.close(WAIT)
            return future

        future = asyncio.run(main())  # the home loop closes with the job in flight
        assert future.result(timeout=WAIT) == 50
    finally:
        backend.shutdown()
