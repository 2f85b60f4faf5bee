"""RayBackend against a real local Ray: outcomes, order, signals, cancel, lost workers, pools.

One local Ray (`num_cpus=2`) serves the whole module. Bodies are module-level
functions, so Ray workers import them from this module by name; anything they return
or raise travels back pickled.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip(
    "ray", reason="Ray is not installed; install the extra: pip install 'ephemeral_actors[ray]'"
)

from ephemeral_actors import (  # noqa: E402 - only once Ray is known to be importable
    CoordinatorOptions,
    KeyedWorkCoordinator,
    OperationCancelledError,
    ResultCoordinator,
    SignalCancelledError,
    SignalEvent,
    SignalPropagation,
    WorkCoordinator,
    WorkerCrashError,
    current_operation,
)
from ephemeral_actors.backends import Backend, RayBackend  # noqa: E402
from tests.conftest import WAIT  # noqa: E402

REMOTE_WAIT = 60.0
"""Generous bound for work that crosses into Ray (worker start-up on a busy 2-core box)."""


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def backend(ray_cluster: None) -> Iterator[RayBackend]:
    b = RayBackend()
    yield b
    b.shutdown()


@pytest.fixture(scope="module")
def pool(ray_cluster: None) -> Iterator[RayBackend]:
    b = RayBackend(actors=2)
    yield b
    b.shutdown()


@pytest.fixture(autouse=True)
def _relay_threads_end() -> Iterator[None]:
    """The backend's relay thread stops soon after the last body; it must not linger."""
    yield
    for thread in threading.enumerate():
        if thread.name.startswith("ray-backend-relay"):
            thread.join(WAIT)
            assert not thread.is_alive(), f"{thread.name} outlived the test"


@pytest.fixture
def make() -> Iterator[Callable[..., Any]]:
    made: list[Any] = []

    def factory(kind: type, *args: Any, **options: Any) -> Any:
        c = kind(*args, CoordinatorOptions(**options))
        made.append(c)
        return c

    yield factory
    for c in made:
        c.close(timeout=REMOTE_WAIT)


def run_all(c: Any, items: Any) -> list[int]:
    ids = [c.enqueue(i) for i in items]
    c.complete()
    c.drain(REMOTE_WAIT)
    return ids


def wait_until(condition: Callable[[], bool], timeout: float = REMOTE_WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


# -- bodies (module level: Ray workers import them from here) ---------------------------------


class LedgerError(ValueError):
    """A user exception type that must survive the trip back from Ray."""


class Unpicklable(Exception):
    """An exception that cannot be pickled (it holds a lock)."""

    def __init__(self) -> None:
        super().__init__("holds a lock")
        self.lock = threading.Lock()


def square(x: int) -> int:
    return x * x


async def square_async(x: int) -> int:
    await asyncio.sleep(0.001)
    return x * x


def odd_fails(x: int) -> int:
    if x % 2:
        raise LedgerError(f"odd item {x}")
    return x


def raise_unpicklable(_: Any) -> None:
    raise Unpicklable


def where_am_i(_: Any) -> tuple[int, bool]:
    return os.getpid(), ray.is_initialized()


def log_order(item: tuple[int, int, str]) -> None:
    key, seq, path = item
    assert current_operation().key == str(key)  # the remote op carries the local key
    with Path(path).open("a", encoding="utf-8") as log:
        log.write(f"{key} {seq} start\n")
    time.sleep(0.01 * (3 - key))  # later keys are faster: only per-key order may hold
    with Path(path).open("a", encoding="utf-8") as log:
        log.write(f"{key} {seq} end\n")


def signalling(x: int) -> int:
    op = current_operation()
    op.signal("work.started")
    op.signal("work.noise")
    assert op.has_signal("work.noise")
    assert op.retract("work.noise")
    op.signal(f"work.item-{x}")
    op.emit_caused("work.caused", SignalPropagation.root("origin"))
    return op.id


def long_running(_: Any) -> None:
    current_operation().signal("long.started")
    for _ in range(600):
        time.sleep(0.05)


def cooperative(_: Any) -> None:
    op = current_operation()
    op.signal("coop.started")
    for _ in range(600):
        op.raise_if_cancelled()
        time.sleep(0.05)


def stop_everything(kind: str) -> None:
    op = current_operation()
    if kind == "stopper":
        time.sleep(0.3)
        op.signal("stop.now")
        # Keeps running: only a live relay lets the signal act before this returns.
    for _ in range(600):
        time.sleep(0.05)


def stop_then_return(kind: str) -> str:
    if kind == "stop":
        current_operation().signal("stop.now")
    return kind


def die(x: int) -> int:
    if x == 0:
        os._exit(1)
    return x


_calls = 0


def count_calls(_: Any) -> tuple[int, int]:
    global _calls  # noqa: PLW0603 - per-process state is what a pool actor keeps
    _calls += 1
    return os.getpid(), _calls


# -- outcomes ---------------------------------------------------------------------------------


def test_ray_backend_is_a_backend(backend):
    """RayBackend satisfies the Backend protocol."""
    assert isinstance(backend, Backend)


def test_results_come_back_to_a_result_coordinator(make, backend):
    """A body's return value, computed on Ray, lands in the ResultCoordinator's window."""
    c = make(ResultCoordinator, square, max_concurrency=4, backend=backend)
    run_all(c, range(8))
    assert sorted(c.get_results()) == [x * x for x in range(8)]
    assert c.total_completed == 8
    assert c.total_failed == 0


def test_bodies_run_in_ray_worker_processes(make, backend):
    """Bodies really run elsewhere: in a Ray worker, not in this process."""
    c = make(ResultCoordinator, where_am_i, backend=backend)
    run_all(c, range(2))
    for pid, initialised in c.get_results():
        assert pid != os.getpid()
        assert initialised


def test_coroutine_bodies_run_on_an_event_loop_in_the_task(make, backend):
    """An async body is run with asyncio inside its Ray task; its result comes back."""
    c = make(ResultCoordinator, square_async, max_concurrency=4, backend=backend)
    run_all(c, range(5))
    assert sorted(c.get_results()) == [0, 1, 4, 9, 16]


def test_submit_resolves_with_the_remote_result(make, backend):
    """submit() futures resolve with the remote body's result."""
    c = make(ResultCoordinator, square, backend=backend)
    assert c.submit(7).get(timeout=REMOTE_WAIT) == 49


def test_a_body_exception_keeps_its_type_and_message(make, backend):
    """A remote failure fails the op with the body's own exception type and message."""
    c = make(ResultCoordinator, odd_fails, max_concurrency=2, backend=backend)
    ids = run_all(c, range(4))
    assert c.total_failed == 2
    assert c.total_completed == 2
    failed = {s.id: s.error for s in c.get_failed()}
    assert set(failed) == {ids[1], ids[3]}
    error = failed[ids[1]]
    assert type(error) is LedgerError
    assert str(error) == "odd item 1"
    assert any("Raised on a Ray worker" in note for note in getattr(error, "__notes__", []))


def test_submit_raises_the_body_exception(make, backend):
    """A submit() caller gets the remote body's exception, with its type."""
    c = make(WorkCoordinator, odd_fails, backend=backend)
    with pytest.raises(LedgerError, match="odd item 3"):
        c.submit(3).get(timeout=REMOTE_WAIT)


def test_an_unpicklable_exception_becomes_a_runtime_error_naming_it(make, backend):
    """An exception that cannot travel back is replaced by a RuntimeError naming it."""
    c = make(WorkCoordinator, raise_unpicklable, backend=backend)
    with pytest.raises(RuntimeError, match=r"Unpicklable: holds a lock"):
        c.submit(1).get(timeout=REMOTE_WAIT)


def test_an_unpicklable_item_fails_its_operation(make, backend):
    """Payloads must pickle: an item that cannot fails its op, and the coordinator goes on."""
    c = make(ResultCoordinator, lambda x: x, backend=backend)
    run_all(c, [threading.Lock(), 5])
    assert c.total_failed == 1
    assert c.get_results() == (5,)
    (failed,) = c.get_failed()
    assert failed.error is not None
    with pytest.raises(TypeError):
        pickle.dumps(threading.Lock())


# -- what stays local -------------------------------------------------------------------------


def test_per_key_order_holds_with_bodies_on_ray(make, backend, tmp_path):
    """Keyed coordinators keep each key's items in order (one at a time) on Ray."""
    path = str(tmp_path / "order.log")
    c = make(
        KeyedWorkCoordinator,
        lambda item: item[0],
        log_order,
        max_concurrency=4,
        backend=backend,
    )
    run_all(c, [(key, seq, path) for seq in range(4) for key in range(3)])
    assert c.total_completed == 12
    lines = Path(path).read_text(encoding="utf-8").split("\n")[:-1]
    for key in range(3):
        mine = [line.split()[1:] for line in lines if line.startswith(f"{key} ")]
        expected = [[str(seq), phase] for seq in range(4) for phase in ("start", "end")]
        assert mine == expected, f"key {key} ran out of order: {mine}"


def test_the_concurrency_limit_bounds_remote_work(make, backend):
    """max_concurrency bounds the bodies in flight on Ray: the window never shows more."""
    c = make(WorkCoordinator, lambda _: time.sleep(0.05), max_concurrency=1, backend=backend)
    seen: list[int] = []
    for i in range(4):
        c.enqueue(i)
        seen.append(c.active_count)
    c.complete()
    while not c.is_drained:
        seen.append(c.active_count)
        time.sleep(0.01)
    assert max(seen) <= 1
    assert c.total_completed == 4


# -- signals ----------------------------------------------------------------------------------


def test_remote_signals_appear_on_the_local_operation(make, backend):
    """Signals a remote body emits (and retracts) show on its op, with its id and key."""
    events: list[SignalEvent] = []
    c = make(ResultCoordinator, signalling, backend=backend, on_signal=events.append)
    (op_id,) = run_all(c, [4])
    assert c.get_results() == (op_id,)  # the remote op has the local op's id
    (snap,) = c.get_snapshot()
    assert snap.signals == ("work.started", "work.item-4", "work.caused")
    assert c.has_signal("work.item-4")
    assert not c.has_signal("work.noise")
    emitted = [e.signal for e in events]
    assert emitted == ["work.started", "work.noise", "work.item-4", "work.caused"]
    assert {e.operation_id for e in events} == {op_id}
    caused = events[-1].propagation
    assert caused is not None
    assert caused.path == ("origin", "work.caused")


def test_a_signal_returned_with_the_task_cancels_later_items(make, backend):
    """A remote signal matching cancel_on_signals cancels the items that reach dispatch later."""
    c = make(
        WorkCoordinator,
        stop_then_return,
        max_concurrency=1,
        cancel_on_signals="stop.*",
        backend=backend,
    )
    run_all(c, ["stop", "later", "later"])
    assert c.total_completed == 1
    assert c.total_cancelled == 2
    cancelled = [s.error for s in c.get_snapshot() if s.error is not None]
    assert all(isinstance(e, SignalCancelledError) for e in cancelled)
    assert {e.signal for e in cancelled} == {"stop.now"}


def test_a_live_signal_cancels_running_remote_work(make, backend):
    """A signal relayed while its body still runs cancels the other running Ray task at once."""
    c = make(
        WorkCoordinator,
        stop_everything,
        max_concurrency=2,
        cancel_on_signals="stop.now",
        backend=backend,
    )
    start = time.monotonic()
    c.enqueue("sleeper")
    c.enqueue("stopper")
    c.complete()
    c.drain(REMOTE_WAIT)
    # Both bodies would run 30 s; the live relay gets the signal home within a second or so.
    assert time.monotonic() - start < 20
    assert c.total_cancelled == 2
    assert c.has_signal("stop.now")
    assert all(isinstance(s.error, OperationCancelledError) for s in c.get_snapshot())


def test_signals_still_arrive_when_the_live_relay_is_lost(make, ray_cluster, caplog):
    """With the relay actor gone, signals come home with the task's return value."""
    with RayBackend() as b:
        b.start()
        ray.kill(b._relay)
        c = make(ResultCoordinator, signalling, backend=b)
        run_all(c, [1, 2])
        assert [s.signals for s in c.get_snapshot()] == [
            ("work.started", "work.item-1", "work.caused"),
            ("work.started", "work.item-2", "work.caused"),
        ]
        wait_until(lambda: b._relay is None)  # the relay thread noticed and let go
        assert "live signal relay failed" in caplog.text
        c.close(REMOTE_WAIT)


# -- cancellation and lost workers -------------------------------------------------------------


def test_cancel_cancels_a_running_ray_task(make, backend):
    """cancel() interrupts a long-running remote body; the op counts as cancelled."""
    c = make(WorkCoordinator, long_running, backend=backend)
    op_id = c.enqueue(1)
    wait_until(lambda: c.has_signal("long.started"))  # the body is running on Ray
    start = time.monotonic()
    c.cancel()
    c.drain(REMOTE_WAIT)
    assert time.monotonic() - start < 10
    assert c.total_cancelled == 1
    assert c.total_failed == 0
    (snap,) = c.get_snapshot()
    assert snap.id == op_id
    assert isinstance(snap.error, OperationCancelledError)
    assert snap.signals == ("long.started",)


def test_a_killed_worker_fails_its_operation_without_a_hang(make, backend):
    """A Ray worker process that dies under a body fails that op; the others complete."""
    c = make(ResultCoordinator, die, max_concurrency=2, backend=backend)
    ids = run_all(c, range(3))
    assert c.total_failed == 1
    assert sorted(c.get_results()) == [1, 2]
    (failed,) = c.get_failed()
    assert failed.id == ids[0]
    assert isinstance(failed.error, WorkerCrashError)
    assert "was lost" in str(failed.error)


# -- actor pools -------------------------------------------------------------------------------


def test_a_pool_runs_bodies_on_long_lived_actors(make, pool):
    """With actors=2, items run on two actor processes that keep state between items."""
    c = make(ResultCoordinator, count_calls, max_concurrency=2, backend=pool)
    run_all(c, range(8))
    results = c.get_results()
    by_pid: dict[int, list[int]] = {}
    for pid, calls in results:
        by_pid.setdefault(pid, []).append(calls)
    assert len(by_pid) == 2
    for calls in by_pid.values():
        assert sorted(calls) == list(range(1, len(calls) + 1))  # one process, counting up


def test_a_pool_keeps_exception_types_and_async_bodies(make, pool):
    """Pool actors report body exceptions by type and run coroutine bodies."""
    failing = make(WorkCoordinator, odd_fails, backend=pool)
    with pytest.raises(LedgerError, match="odd item 1"):
        failing.submit(1).get(timeout=REMOTE_WAIT)
    c = make(ResultCoordinator, square_async, max_concurrency=2, backend=pool)
    run_all(c, range(4))
    assert sorted(c.get_results()) == [0, 1, 4, 9]


def test_cancel_reaches_a_pool_actor_cooperatively(make, pool):
    """On a pool actor, cancel() sets the flag a body checks with raise_if_cancelled()."""
    c = make(WorkCoordinator, cooperative, backend=pool)
    c.enqueue(1)
    wait_until(lambda: c.has_signal("coop.started"))
    c.cancel()
    c.drain(REMOTE_WAIT)
    assert c.total_cancelled == 1
    (snap,) = c.get_snapshot()
    assert isinstance(snap.error, OperationCancelledError)


def test_bodies_in_flight_on_ray_hold_no_coordinator_thread(make, pool):
    """The wrapped body is a coroutine function: items in flight are tasks, not threads."""
    assert asyncio.iscoroutinefunction(type(pool.wrap(square, is_async=False)).__call__)
    c = make(WorkCoordinator, cooperative, max_concurrency=2, backend=pool)
    c.enqueue_many([1, 2])
    wait_until(lambda: c.count_signals("coop.started") == 2)
    assert c.active_count == 2
    workers = [
        t.name
        for t in threading.enumerate()
        if t.name.startswith(f"ephemeral-actors-{c.name}-worker")
    ]
    assert workers == []
    c.cancel()
    c.drain(REMOTE_WAIT)
    assert c.total_cancelled == 2


def test_a_dead_pool_actor_fails_its_item_and_is_replaced(make, ray_cluster):
    """An actor that dies fails its item with WorkerCrashError; a fresh actor takes its place."""
    with RayBackend(actors=1) as solo:
        c = make(ResultCoordinator, die, max_concurrency=1, backend=solo)
        run_all(c, [0, 1, 2])
        assert c.total_failed == 1
        assert c.get_results() == (1, 2)
        (failed,) = c.get_failed()
        assert isinstance(failed.error, WorkerCrashError)
        assert isinstance(failed.error.__cause__, ray.exceptions.RayActorError)
        c.close(REMOTE_WAIT)


# -- lifecycle and validation ------------------------------------------------------------------


def test_shutdown_leaves_a_ray_it_did_not_start_running(make, ray_cluster):
    """A backend that found Ray running does not own it: shutdown() leaves Ray up."""
    b = RayBackend()
    c = make(ResultCoordinator, square, backend=b)
    run_all(c, [3])
    assert not b.owns_ray
    c.close(REMOTE_WAIT)
    b.shutdown()
    b.shutdown()  # idempotent
    assert ray.is_initialized()
    assert "shut down" in repr(b)
    with pytest.raises(RuntimeError, match="shut down"):
        b.wrap(square, is_async=False)


def test_bodies_fail_once_their_backend_is_shut_down(make, ray_cluster):
    """An item that reaches a shut-down backend fails with a RuntimeError saying so."""
    b = RayBackend()
    c = make(WorkCoordinator, square, backend=b)
    b.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        c.submit(1).get(timeout=REMOTE_WAIT)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_cpus": 0}, ValueError, "num_cpus"),
        ({"num_cpus": 2, "address": "auto"}, ValueError, "num_cpus"),
        ({"actors": 0}, ValueError, "actors"),
        ({"actors": 1.5}, TypeError, "actors"),
        ({"address": 5}, TypeError, "address"),
        ({"ray_remote_options": ["num_cpus"]}, TypeError, "ray_remote_options"),
        ({"ray_remote_options": {"no_such_option": 1}}, ValueError, "no_such_option"),
        ({"ray_remote_options": {"max_retries": 1}, "actors": 2}, ValueError, "max_retries"),
    ],
)
def test_bad_arguments_are_rejected_at_construction(kwargs, error, match):
    """Arguments, including ray.remote options, are checked when the backend is built."""
    with pytest.raises(error, match=match):
        RayBackend(**kwargs)


def test_repr_shows_state_and_mode(ray_cluster):
    """repr() says the lifecycle state, the mode and the counts."""
    assert repr(RayBackend()) == "<RayBackend new tasks in_flight=0 submitted=0>"
    assert "actors=3" in repr(RayBackend(actors=3))


def run_driver(tmp_path: Path, source: str) -> str:
    """Run `source` as a Ray driver in a fresh interpreter; its stdout (it must exit 0).

    For what needs its own Ray: this module's cluster is already up.
    """
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(source), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=110,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_a_backend_starts_and_owns_ray_when_none_is_running(tmp_path):
    """Without a running Ray, the backend starts one (from a worker thread), owns and ends it.

    Runs in a fresh interpreter: this module's Ray is already up. The first
    coordinator's worker threads exit before the second runs, which kills a Ray
    started on such a thread (Linux ties Ray's head processes to their starting
    thread); the backend starts Ray on a thread of its own instead.
    """
    stdout = run_driver(
        tmp_path,
        """
            import ray
            from ephemeral_actors import CoordinatorOptions, ResultCoordinator
            from ephemeral_actors.backends import RayBackend

            def triple(x):
                return 3 * x

            backend = RayBackend(num_cpus=1)
            for round in range(2):
                options = CoordinatorOptions(max_concurrency=2, backend=backend)
                with ResultCoordinator(triple, options) as c:
                    c.enqueue_many(range(3))
                assert sorted(c.get_results()) == [0, 3, 6], c.get_results()
            assert backend.owns_ray
            backend.shutdown()
            assert not ray.is_initialized()
            print("ok")
            """,
    )
    assert stdout.strip().endswith("ok")


def test_cancel_interrupts_bodies_when_the_driver_ignores_sigint(tmp_path):
    """A driver started ignoring SIGINT (nohup, a background job) can still cancel.

    Ray interrupts a running task with SIGINT; workers of a cluster started by such a
    driver inherit "ignore", and cancel did nothing (found by running CI as a
    background job). Runs in a fresh interpreter that ignores SIGINT before Ray starts.
    If the cancel does not interrupt, the body runs its 30 s and completes: the test
    then fails on the counts, not on a clock.
    """
    stdout = run_driver(
        tmp_path,
        """
            import signal
            signal.signal(signal.SIGINT, signal.SIG_IGN)

            import time
            import ray
            from ephemeral_actors import WorkCoordinator, current_operation
            from ephemeral_actors.backends import RayBackend

            def long_running(_):
                current_operation().signal("long.started")
                for _ in range(600):
                    time.sleep(0.05)

            ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
            backend = RayBackend()
            c = WorkCoordinator(long_running, backend=backend)
            c.enqueue(1)
            while not c.has_signal("long.started"):
                time.sleep(0.05)
            c.cancel()
            c.drain(60)
            print(f"cancelled={c.total_cancelled} completed={c.total_completed}")
            c.close(60)
            backend.shutdown()
            ray.shutdown()
            """,
    )
    assert "cancelled=1 completed=0" in stdout, stdout


def test_module_level_bodies_share_one_remote_function(backend):
    """A module-level body is exported to Ray once per backend; closures get their own."""
    assert backend._task_for(square, False) is backend._task_for(square, False)
    assert backend._task_for(square, False) is not backend._task_for(square, True)
    body = lambda x: x  # noqa: E731 - a closure-like body on purpose
    assert backend._task_for(body, False) is not backend._task_for(body, False)
