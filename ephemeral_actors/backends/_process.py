"""`ProcessBackend`: run a coordinator's plain bodies in worker processes (SPEC section 17).

Only `body(item)` leaves this process; supervision, ordering, limits, the window,
deferral and signals stay in the coordinator. The wrapped body is a coroutine
function, so the coordinator runs it as a task on its event loop: an item in flight
in a worker process costs a suspended task here, not a thread. One item flows like
this:

```
coordinator event loop (here)                 a lane: one worker process
-----------------------------                 ------------------------------------
await wrapped(item)
  pickle the item (TypeError naming its type)
  a job joins the backend's queue; a lane
  with room takes it: lane.submit(...)  ─────▶ _run_in_child(): under the lane lock,
  await the job's ticket, and every 0.1 s       skip a withdrawn job, else mark it
  check op.cancelled (→ withdraw the job)       started; current_operation() is a
                                                _ChildOperation; body(item) runs;
                                                op.signal(name) records (seq, name)
                                                and writes it to the relay pipe ──┐
  relay thread: read the pipe and     ◀───────────────────────────────────────────┘
    replay each event on the local Operation
  ◀──── pickle((outcome, value, events)) ─────
  replay events not yet relayed; return the value or raise the body's exception
```

**Lanes: one process each.** The pool is `max_workers` *lanes*; each lane is a
`concurrent.futures.ProcessPoolExecutor(max_workers=1)` — one worker process — plus
a lock and a few shared integers (`multiprocessing.RawArray`): the process's pid, the
sequence number of the last job it started, and the jobs withdrawn from it. A lane
holds at most two jobs, the one its process runs and the next (so the process finds
its next item queued when it finishes one); the others wait in the backend's queue
and go to the first lane with room, an idle lane first.

Why lanes and not one shared pool: the standard pool cannot say which process runs
which item, nor stop one process without breaking the whole pool (a dead worker
fails every item in it with `BrokenProcessPool`, loky's reusable executor does the
same with `TerminatedWorkerError`). A lane is one process, so what happens to its
process happens to its two jobs only, and the shared integers say exactly which of
the two had started:

- **Kill at a deadline** (`kill(op_id)`, called by the coordinator when an
  operation passes `item_timeout`): under the lane lock, if the lane's process has
  started that job, the process gets SIGKILL and the lane lock is never released,
  so the process cannot start the lane's next job meanwhile; that job goes back to
  the head of the queue (it never started) and the next lane to have room — a fresh
  process takes the killed one's place — runs it. If the job has not started, it is
  withdrawn instead (the process skips it). Either way the job ends with
  `OperationCancelledError`, which the coordinator counts as the timeout.
- **A crash** (`os._exit`, SIGSEGV, the OOM killer): the job the process had
  started fails with `WorkerCrashError` — it may have run partly, so it is not re-run
  (retry it with a `RetryPolicy` if the body is idempotent); the lane's other job,
  which never started, is re-sent. Only that lane's process is replaced.
- **Cancel** (`cancel(op_id)`, `Operation.cancelled`, `shutdown()`): a job not yet
  started, queued here or in a lane, is withdrawn; a running body is never
  interrupted.

Nothing accepted is lost or left hanging: every job ends, completed or failed, and a
job re-sent `_MAX_RESENDS` times without ever starting (a process that cannot even
start) fails with `WorkerCrashError` rather than looping.

Why `ProcessPoolExecutor` underneath and not loky or billiard: it is always there,
it is what Python users know, and it gives each lane what it needs — a worker
process started with the platform's start method, an initializer (for the signal
pipe and the lane's shared state), pickling of calls and results, and
`BrokenProcessPool` when the process dies. billiard (Celery's pool) does attribute
a job to its process, with an acknowledgement message per job, but it is a heavier
dependency with a different API; loky adds cloudpickle and a reusable executor,
neither needed here, and reacts to a dead worker like the standard pool.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import functools
import inspect
import itertools
import logging
import multiprocessing
import multiprocessing.context
import os
import pickle
import signal
import threading
import types
import uuid
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, Final, cast

from ephemeral_actors._errors import OperationCancelledError, WorkerCrashError
from ephemeral_actors._operation import Operation, _current
from ephemeral_actors._validate import check_int
from ephemeral_actors.backends._relay import Call, Event, RecordingOperation, portable_error

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.connection import Connection
    from multiprocessing.synchronize import Lock as ProcessLock
    from types import TracebackType
    from typing import Self

__all__ = ["ProcessBackend"]

logger = logging.getLogger("ephemeral_actors")

_POLL_INTERVAL: Final = 0.1
"""Seconds between checks of `Operation.cancelled` while an item waits for its process."""
_RELAY_WAIT: Final = 0.2
"""Seconds the relay thread waits for a message; it stops this long after the last item."""
_MAX_LIVE_EVENT: Final = 4000
"""Largest relayed event, in bytes: a pipe write this small is atomic (PIPE_BUF is 4096),
so worker processes share one pipe without a lock, and one dying mid-write cannot
leave half a message. Larger events travel only with the body's outcome."""
_BODY_CACHE: Final = 64
"""Bodies each worker process keeps unpickled (least recently used dropped first)."""
_PROTOCOL: Final = pickle.HIGHEST_PROTOCOL
_DEPTH: Final = 2
"""Jobs a lane holds: the one its process runs and the next one."""
_MAX_RESENDS: Final = 3
"""Times a job that never started is re-sent after its lane's process died."""
_LANE_LOCK_WAIT: Final = 1.0
"""Seconds to wait for a lane lock. Its process holds it for a few stores only; longer
means that process died holding it, and the lane is then treated as dead."""
_KILL: Final = getattr(signal, "SIGKILL", signal.SIGTERM)
"""SIGKILL where there is one; on Windows `os.kill` with SIGTERM is TerminateProcess."""

# Outcomes a worker returns, with the value and the body's events.
_OK: Final = 0
_RAISED: Final = 1
_SKIPPED: Final = 2
"""The job was withdrawn before the process started it; its body did not run."""

# The lane's shared integers (a RawArray of 4): its process's pid, the sequence
# number of the last job that process started, and two slots of withdrawn jobs (a
# lane holds at most two, with consecutive numbers, so seq % 2 picks the slot).
_PID: Final = 0
_STARTED: Final = 1
_WITHDRAWN: Final = 2


# -- the worker side ------------------------------------------------------------------------
#
# Everything in this section runs in the worker processes.

_relay_writer: Connection | None = None
"""This worker's end of the backend's signal pipe (set by the pool's initializer)."""
_lane_lock: ProcessLock | None = None
"""This worker's lane lock (set by the pool's initializer)."""
_lane_state: Any = None
"""This worker's lane's shared integers (set by the pool's initializer)."""
_bodies: collections.OrderedDict[str, Callable[[Any], Any]] = collections.OrderedDict()
"""Unpickled bodies by wrap token, so a body is unpickled once per process, not per item."""


def _init_worker(writer: Connection, lock: ProcessLock | None = None, state: Any = None) -> None:
    """The lane's initializer: keep the signal pipe's writing end and the lane's state."""
    global _relay_writer, _lane_lock, _lane_state  # noqa: PLW0603 - one per worker process
    _relay_writer = writer
    _lane_lock = lock
    _lane_state = state
    if state is not None:
        state[_PID] = os.getpid()


class _ChildOperation(RecordingOperation):
    """`current_operation()` for a body running in a worker process.

    Each event is written to the backend's signal pipe as it happens (if it is small
    enough for an atomic write); all of them also return with the outcome.
    `cancelled` is always False: a body in a worker process is never asked to stop.
    """

    __slots__ = ("_call",)

    where = "in a worker process"

    def __init__(self, op_id: int, key: str | None, call: int) -> None:
        super().__init__(op_id, key)
        self._call = call

    def push(self, event: Event) -> None:
        """Write `event` to the signal pipe now (best effort: the outcome carries it too)."""
        writer = _relay_writer
        if writer is None:
            return
        try:
            data = pickle.dumps((self._call, event), _PROTOCOL)
        except Exception:
            return
        if len(data) <= _MAX_LIVE_EVENT:
            with contextlib.suppress(OSError):
                writer.send_bytes(data)


def _run_in_child(
    token: str,
    body_bytes: bytes,
    item_bytes: bytes,
    *,
    op_id: int,
    key: str | None,
    call: int,
    seq: int = 0,
) -> bytes:
    """Run one item in a worker process; return the pickled (outcome, value, events).

    `seq` is the job's number in its lane: under the lane lock, a withdrawn job is
    skipped, and any other is marked started before its body runs. The backend holds
    that lock while it decides to kill this process or withdraw a job, so neither
    can race with the start of the next job.
    """
    lock, state = _lane_lock, _lane_state
    if seq and lock is not None:
        with lock:
            if state[_WITHDRAWN + seq % 2] == seq:
                return _SKIPPED_BYTES
            state[_STARTED] = seq
    body = _bodies.get(token)
    if body is None:
        body = _bodies[token] = pickle.loads(body_bytes)  # noqa: S301 - our own bytes
        if len(_bodies) > _BODY_CACHE:
            _bodies.popitem(last=False)
    else:
        _bodies.move_to_end(token)
    op = _ChildOperation(op_id, key, call) if op_id else None
    events = op.events if op is not None else []
    reset = _current.set(cast("Operation | None", op))  # a duck-typed stand-in
    try:
        item = pickle.loads(item_bytes)  # noqa: S301 - pickled by the backend
        result = body(item)
        if type(result) is types.CoroutineType:
            result.close()
            raise TypeError(  # noqa: TRY301 - reported like any body failure
                "the body returned a coroutine; ProcessBackend runs plain (def) bodies"
            )
    except BaseException as exc:
        return _pack(_RAISED, portable_error(exc, "a worker process"), events)
    finally:
        _current.reset(reset)
    return _pack(_OK, result, events)


_SKIPPED_BYTES: Final = pickle.dumps((_SKIPPED, None, []), _PROTOCOL)


def _pack(outcome: int, value: Any, events: list[Event]) -> bytes:
    """Pickle an outcome; a value that cannot be pickled becomes the item's failure."""
    with contextlib.suppress(Exception):
        return pickle.dumps((outcome, value, events), _PROTOCOL)
    with contextlib.suppress(Exception):  # an event's cause does not pickle: drop them
        return pickle.dumps((outcome, value, []), _PROTOCOL)
    try:
        pickle.dumps(value, _PROTOCOL)
    except Exception as why:
        error: BaseException = TypeError(
            f"the body's {'result' if outcome == _OK else 'exception'}, a "
            f"{_type_name(value)}, cannot be pickled to leave the worker process "
            f"({type(why).__name__}: {why})"
        )
    else:  # pragma: no cover - the value pickles alone but not with its events
        error = RuntimeError("the body's outcome cannot be pickled")
    with contextlib.suppress(Exception):
        return pickle.dumps((_RAISED, error, events), _PROTOCOL)
    return pickle.dumps((_RAISED, error, []), _PROTOCOL)


def _type_name(value: Any) -> str:
    kind = type(value)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


# -- the coordinator side ---------------------------------------------------------------------


class _State(enum.Enum):
    NEW = "new"
    """Built; no process yet (the first item starts a lane)."""
    RUNNING = "running"
    """A lane exists."""
    SHUT_DOWN = "shut down"
    """`shutdown()` ran; bodies are refused."""


class _Wrapped:
    """What `ProcessBackend.wrap` returns: a coroutine function that runs the body there."""

    __slots__ = ("backend", "body_bytes", "name", "token")

    def __init__(self, backend: ProcessBackend, name: str, token: str, body_bytes: bytes) -> None:
        self.backend = backend
        self.name = name
        self.token = token
        self.body_bytes = body_bytes

    def __repr__(self) -> str:
        return f"<ProcessBackend body {self.name}>"

    async def __call__(self, item: Any) -> Any:
        return await self.backend._run(self, item)


class _Job:
    """One item handed to the backend, from its queue through a lane to its outcome.

    `ticket` is what the coordinator's task awaits. It is set running when made, so
    only the backend resolves it (`asyncio.wrap_future` would otherwise cancel it
    with the task), and `settled`, written under the backend lock, lets exactly one
    path resolve it.
    """

    __slots__ = (
        "call_id",
        "item_bytes",
        "key",
        "lane",
        "op_id",
        "resends",
        "seq",
        "settled",
        "ticket",
        "wrapped",
    )

    def __init__(
        self, wrapped: _Wrapped, item_bytes: bytes, op_id: int, key: str | None, call_id: int
    ) -> None:
        self.wrapped = wrapped
        self.item_bytes = item_bytes
        self.op_id = op_id
        self.key = key
        self.call_id = call_id
        self.ticket: Future[bytes] = Future()
        self.ticket.set_running_or_notify_cancel()
        self.lane: _Lane | None = None
        """The lane holding it, or None while it waits in the backend's queue."""
        self.seq = 0
        """Its number in its lane (1, 2, ...: the order its process takes jobs in)."""
        self.resends = 0
        self.settled = False

    def __repr__(self) -> str:
        where = "queued" if self.lane is None else f"lane {self.lane.number} seq {self.seq}"
        return f"<job op={self.op_id} {where} {'settled' if self.settled else 'open'}>"


class _Lane:
    """One worker process: a one-process `ProcessPoolExecutor`, its lock and shared state."""

    __slots__ = ("dead", "jobs", "killed", "lock", "number", "pool", "seqs", "state")

    def __init__(
        self, number: int, context: multiprocessing.context.BaseContext, writer: Connection
    ) -> None:
        self.number = number
        self.lock = context.Lock()
        self.state: Any = context.RawArray("q", 4)
        self.pool = ProcessPoolExecutor(
            1,
            mp_context=context,
            initializer=_init_worker,
            initargs=(writer, self.lock, self.state),
        )
        self.jobs: dict[int, _Job] = {}
        """Its jobs by number: at most `_DEPTH`, the one its process runs and the next."""
        self.seqs = itertools.count(1)
        self.dead = False
        """Its process died or was killed: it takes no more jobs, and the backend holds
        its lock for good, so `started` is final."""
        self.killed = 0
        """The number of the job its process was killed for (0: not killed)."""

    def __repr__(self) -> str:
        state = "dead" if self.dead else "live"
        return f"<lane {self.number} {state} pid={self.state[_PID]} jobs={sorted(self.jobs)}>"

    def started(self) -> int:
        """The number of the last job its process started (0: none yet)."""
        return int(self.state[_STARTED])


class ProcessBackend:
    """Runs coordinator bodies in worker processes, so CPU-bound work uses every core.

    The coordinator — supervision, per-key order, limits, the window, signals,
    pause/resume, deferral, cancel — stays in this process; only `body(item)` runs in
    one of `max_workers` worker processes the backend owns (each a one-process
    `concurrent.futures.ProcessPoolExecutor`, see the module documentation). Items
    in flight cost the coordinator no thread: the wrapped body is a coroutine
    function that awaits the item's outcome.

    Bodies, items, results and exceptions cross the process boundary with `pickle`:

    - the body must be a plain (`def`) callable that pickles — a module-level
      function, or an instance of a module-level class; a coroutine body, a lambda,
      a closure or a function defined inside another raises `TypeError` at `wrap`
      (that is, when the coordinator is built);
    - an item that does not pickle fails its operation with a `TypeError` naming its
      type (`check_item` raises the same error up front);
    - a result that does not pickle fails its operation with `TypeError`; an
      exception that does not pickle becomes a `RuntimeError` with its text.

    Inside the body, `current_operation()` is a stand-in with `id`, `key`,
    `signal()`, `emit_caused()`, `retract()`, `retract_matching()` and
    `has_signal()`; signals reach the coordinator while the body runs (so
    `cancel_on_signals` acts at once) and constraints are applied there.
    `cancelled` is always False in the worker: a running body is never interrupted
    by a cancel request. Cancelling an operation whose item no process has started
    yet withdraws it.

    Deadlines: a coordinator with `item_timeout` calls `kill(op_id)` when an
    operation passes its deadline; the process running it is killed (SIGKILL), the
    operation fails with `OperationTimeoutError` (retried if the coordinator's
    `RetryPolicy` says so; cancelled if a cancel request came first) and a fresh
    process takes its place. That is not a crash.

    A worker process that dies on its own fails the item it was running with
    `WorkerCrashError` (a crash, supervised as one); the item queued behind it,
    which never started, runs in the fresh process that replaces it.

    One backend may serve several coordinators; a coordinator never shuts down a
    backend it was given. Call `shutdown()` (or use `with`) when they are closed.

    Args:
        max_workers: Worker processes (default: the CPUs this process may use).
            Give the coordinator a `max_concurrency` above this (about twice) so each
            process finds its next item queued when it finishes one.
        mp_context: A `multiprocessing` context (`multiprocessing.get_context("spawn")`);
            default: the platform's default start method.

    Example:
        ```python
        with ProcessBackend() as backend:
            options = CoordinatorOptions(max_concurrency=8, backend=backend)
            with ResultCoordinator(crunch, options) as c:
                c.enqueue_many(chunks)
            results = c.get_results()
        ```

    Added in version 0.2.0.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: multiprocessing.context.BaseContext | None = None,
    ) -> None:
        if max_workers is not None:
            check_int("max_workers", max_workers, minimum=1)
        if mp_context is not None and not isinstance(
            mp_context, multiprocessing.context.BaseContext
        ):
            raise TypeError(
                "mp_context must be a multiprocessing context "
                f"(multiprocessing.get_context(...)) or None, got {type(mp_context).__name__}"
            )
        self.max_workers: int = max_workers or _usable_cpus()
        """How many worker processes the backend runs at most."""
        self.mp_context: multiprocessing.context.BaseContext = (
            mp_context or multiprocessing.get_context()
        )
        """The `multiprocessing` context that starts them."""
        self._lock = threading.Lock()
        self._state = _State.NEW
        self._lanes: list[_Lane] = []
        self._retired: list[_Lane] = []
        """Dead lanes whose pool may still be tearing itself down (`shutdown()` joins them)."""
        self._waiting: collections.deque[_Job] = collections.deque()
        self._jobs: dict[int, _Job] = {}
        """Unsettled jobs by operation id, for `cancel` and `kill`."""
        self._settlements: list[tuple[_Job, bytes | None, BaseException | None]] = []
        """Jobs settled under the lock, resolved right after it is released (a ticket's
        callbacks take the lock)."""
        self._reader: Connection | None = None
        self._writer: Connection | None = None
        self._relay_thread: threading.Thread | None = None
        self._calls: dict[int, Call] = {}
        self._call_ids = itertools.count(1)
        self._lane_numbers = itertools.count(1)
        self._wraps = itertools.count(1)
        self._token = uuid.uuid4().hex[:12]
        self._unfinished = 0
        self._submitted = 0
        self._pool_restarts = 0
        self._kills = 0

    def __repr__(self) -> str:
        return (
            f"<ProcessBackend {self._state.value} max_workers={self.max_workers} "
            f"start_method={self.mp_context.get_start_method()} processes={len(self._lanes)} "
            f"in_flight={self._unfinished} submitted={self._submitted} "
            f"pool_restarts={self._pool_restarts} kills={self._kills}>"
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    @property
    def in_flight(self) -> int:
        """Items handed to the backend whose outcome has not come back yet."""
        return self._unfinished

    @property
    def submitted(self) -> int:
        """Items handed to the backend since construction."""
        return self._submitted

    @property
    def pool_restarts(self) -> int:
        """Worker processes replaced because they died or were killed at a deadline."""
        return self._pool_restarts

    @property
    def kills(self) -> int:
        """Worker processes killed by `kill()` (an operation passed its `item_timeout`)."""
        return self._kills

    def wrap(self, body: Callable[[Any], Any], *, is_async: bool) -> Callable[[Any], Any]:
        """Return a coroutine function that runs `body(item)` in a worker process.

        This is the `Backend` protocol; the coordinator calls it when it is built.
        The body is pickled now, once; each worker process unpickles it once.

        Raises:
            TypeError: `body` is a coroutine function, or cannot be pickled.
            RuntimeError: The backend was shut down.
        """
        name = getattr(body, "__qualname__", None) or type(body).__qualname__
        if is_async or _is_coroutine_function(body):
            raise TypeError(
                f"ProcessBackend runs plain (def) bodies, and {name} is a coroutine function; "
                "run it in-process, or give the backend a plain function that calls "
                "asyncio.run()"
            )
        try:
            body_bytes = pickle.dumps(body, _PROTOCOL)
        except Exception as why:
            raise TypeError(
                f"ProcessBackend: the body {name} cannot be pickled, so it cannot be sent "
                f"to a worker process ({type(why).__name__}: {why}); use a module-level "
                "function or an instance of a module-level class (lambdas, closures and "
                "functions defined inside other functions do not pickle)"
            ) from why
        with self._lock:
            if self._state is _State.SHUT_DOWN:
                raise RuntimeError("ProcessBackend is shut down; build a new one")
            token = f"{self._token}-{next(self._wraps)}"
        return _Wrapped(self, name, token, body_bytes)

    def check_item(self, item: Any) -> None:
        """Raise `TypeError` naming the item's type if it cannot be sent to a worker process.

        Coordinators call this when an item is offered, so a bad item is refused at
        `enqueue`/`submit` rather than failing later.

        Raises:
            TypeError: `item` does not pickle.
        """
        _dump_item(item)

    def cancel(self, op_id: int) -> bool:
        """Withdraw operation `op_id`'s item if no worker process has started it yet.

        The coordinator calls this when it is asked to cancel a running operation;
        without that call the backend notices `Operation.cancelled` within 0.1 s.

        Returns:
            True if the item was withdrawn (its operation then ends cancelled).
        """
        error = OperationCancelledError(
            f"operation {op_id} was cancelled before a worker process started it"
        )
        with self._lock:
            job = self._jobs.get(op_id)
            withdrawn = job is not None and self._withdraw_locked(job, error)
            settled = self._take_settlements_locked()
        _resolve(settled)
        return withdrawn

    def kill(self, op_id: int) -> bool:
        """Stop operation `op_id`'s body now: kill its process, or withdraw its item.

        The coordinator calls this when the operation passes its deadline
        (`item_timeout`). If a worker process runs the body, that process is killed
        (SIGKILL) and replaced by a fresh one; the item queued behind it in that
        process, which never started, goes to the next free process. An item no
        process has started yet is withdrawn instead. Either way the operation's
        attempt ends with `OperationCancelledError`, which a coordinator counts as
        `OperationTimeoutError` when the deadline asked (or as cancelled when a
        cancel request came first).

        Returns:
            True if the body was stopped: its process killed, or its item withdrawn.
            False if the operation is unknown or its body already returned.
        """
        killed_pid = 0
        with self._lock:
            job = self._jobs.get(op_id)
            if job is None or job.settled:
                return False
            lane = job.lane
            if lane is None or lane.dead:
                stopped = self._withdraw_locked(
                    job,
                    OperationCancelledError(
                        f"operation {op_id} was stopped before a worker process started it"
                    ),
                )
            elif not lane.lock.acquire(timeout=_LANE_LOCK_WAIT):
                # Its process died holding the lock (a few stores long): the pool
                # reports the death, and the dead lane's jobs are settled then.
                stopped = False
            else:
                started = lane.started()
                if started == job.seq:
                    # The lock is never released: the process cannot start the lane's
                    # next job before the signal lands, and `started` stays final.
                    killed_pid = int(lane.state[_PID])
                    lane.killed = job.seq
                    self._bury_locked(lane)
                    self._kills += 1
                    if killed_pid > 0:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(killed_pid, _KILL)
                    stopped = True
                elif started < job.seq:
                    lane.state[_WITHDRAWN + job.seq % 2] = job.seq
                    lane.lock.release()
                    self._settle_locked(
                        job,
                        None,
                        OperationCancelledError(
                            f"operation {op_id} was stopped before a worker process started it"
                        ),
                    )
                    stopped = True
                else:
                    lane.lock.release()  # it returned; its outcome is on its way
                    stopped = False
            settled = self._take_settlements_locked()
        _resolve(settled)
        if killed_pid:
            logger.warning(
                "ProcessBackend killed worker process %d, which was running operation %d; "
                "a fresh process takes its place",
                killed_pid,
                op_id,
                extra={
                    "coordinator": None,
                    "operation_id": op_id,
                    "key": job.key,
                    "error_type": None,
                    "event": "process.killed",
                },
            )
        return stopped

    def shutdown(self) -> None:
        """Shut down: items not yet started fail, running bodies finish first.

        Waits for the worker processes to exit and the relay thread to end, so no
        process or thread of the backend is left. Close the coordinators that use the
        backend first. Idempotent.
        """
        with self._lock:
            if self._state is _State.SHUT_DOWN:
                return
            self._state = _State.SHUT_DOWN
            for job in self._waiting:
                if not job.settled:
                    self._settle_locked(job, None, _shut_down_error(job))
            self._waiting.clear()
            for lane in self._lanes:
                for job in list(lane.jobs.values()):
                    self._withdraw_locked(job, _shut_down_error(job))
            lanes = [*self._retired, *self._lanes]
            self._lanes = []
            self._retired = []
            settled = self._take_settlements_locked()
        _resolve(settled)
        for lane in lanes:
            lane.pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            thread = self._relay_thread
            reader, writer = self._reader, self._writer
            self._reader = self._writer = None
        if thread is not None and writer is not None:
            with contextlib.suppress(OSError):
                writer.send_bytes(pickle.dumps(None))  # wakes the thread to see the state
            thread.join()
        for end in (reader, writer):
            if end is not None:
                end.close()

    # -- running one item (a task on the coordinator's event loop) ---------------------------

    async def _run(self, wrapped: _Wrapped, item: Any) -> Any:
        op = _current.get()
        item_bytes = _dump_item(item)
        op_id, key = (op.id, op.key) if op is not None else (0, None)
        call_id = next(self._call_ids)
        call = Call(op) if op is not None else None
        job = _Job(wrapped, item_bytes, op_id, key, call_id)
        with self._lock:
            if self._state is _State.SHUT_DOWN:
                raise RuntimeError("ProcessBackend is shut down; build a new one")
            # Counted before the job can reach a process, so the relay thread (which
            # runs while anything is unfinished) is there before the body can signal.
            self._unfinished += 1
            self._submitted += 1
            if call is not None:
                self._calls[call_id] = call
            if op_id:
                self._jobs[op_id] = job
            if self._writer is None:
                self._reader, self._writer = self.mp_context.Pipe(duplex=False)
            if self._relay_thread is None:
                self._start_relay_thread_locked()
            self._waiting.append(job)
            handoffs = self._assign_locked()
            settled = self._take_settlements_locked()
        job.ticket.add_done_callback(self._finished)
        _resolve(settled)
        self._hand_over(handoffs)
        try:
            payload = await self._await(job, op)
        finally:
            with self._lock:
                self._calls.pop(call_id, None)
        try:
            outcome, value, events = pickle.loads(payload)  # noqa: S301 - our worker's bytes
        except Exception as why:
            raise RuntimeError(
                f"the outcome of operation {op_id} came back from the worker process but "
                f"cannot be unpickled here ({type(why).__name__}: {why})"
            ) from why
        if call is not None:
            call.offer(events, final=True)
        if outcome == _OK:
            return value
        raise value

    async def _await(self, job: _Job, op: Operation | None) -> bytes:
        """Await the job's outcome; withdraw it if this task is cancelled first."""
        waiter = asyncio.wrap_future(job.ticket)
        if op is not None:
            _CancelWatch(op, self, job, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            # The ticket itself is never cancelled, so this task is: at a deadline
            # (the coordinator then kills the process if the body started), or as
            # its loop closes. A job no process has started must not run later.
            self._withdraw(
                job,
                OperationCancelledError(
                    f"operation {job.op_id} was cancelled before a worker process started it"
                ),
            )
            raise

    def _finished(self, _ticket: Future[bytes]) -> None:
        with self._lock:
            self._unfinished -= 1

    # -- jobs and lanes (the backend lock guards everything below) ---------------------------

    def _assign_locked(self) -> list[_Job]:
        """Give waiting jobs to lanes with room; the jobs to hand over after the lock."""
        handoffs: list[_Job] = []
        waiting = self._waiting
        if self._state is _State.SHUT_DOWN:
            return handoffs
        while waiting:
            if waiting[0].settled:  # withdrawn while it waited
                waiting.popleft()
                continue
            lane = self._lane_with_room_locked()
            if lane is None:
                break
            job = waiting.popleft()
            job.lane = lane
            job.seq = next(lane.seqs)
            lane.jobs[job.seq] = job
            handoffs.append(job)
        return handoffs

    def _lane_with_room_locked(self) -> _Lane | None:
        """An idle lane, else a new one (up to `max_workers`), else one with one job."""
        fallback = None
        for lane in self._lanes:
            held = len(lane.jobs)
            if held == 0:
                return lane
            if held < _DEPTH and fallback is None:
                fallback = lane
        if len(self._lanes) < self.max_workers:
            assert self._writer is not None  # made with the first job
            try:
                lane = _Lane(next(self._lane_numbers), self.mp_context, self._writer)
            except Exception as exc:  # out of file descriptors or semaphores, say
                if fallback is None and not self._lanes:
                    # No process could run the waiting jobs: fail them rather than
                    # leave them waiting for a lane that cannot be built.
                    for job in self._waiting:
                        if not job.settled:
                            self._settle_locked(job, None, exc)
                    self._waiting.clear()
                else:
                    logger.warning(
                        f"ProcessBackend could not start worker process number "
                        f"{len(self._lanes) + 1} ({type(exc).__name__}: {exc}); "
                        f"running on {len(self._lanes)}"
                    )
                return fallback
            self._lanes.append(lane)
            self._state = _State.RUNNING
            return lane
        return fallback

    def _hand_over(self, jobs: list[_Job]) -> None:
        """Submit assigned jobs to their lanes' pools (outside the lock: it may fork)."""
        for job in jobs:
            lane = job.lane
            assert lane is not None
            wrapped = job.wrapped
            try:
                future = lane.pool.submit(
                    _run_in_child,
                    wrapped.token,
                    wrapped.body_bytes,
                    job.item_bytes,
                    op_id=job.op_id,
                    key=job.key,
                    call=job.call_id,
                    seq=job.seq,
                )
            except Exception as exc:
                self._refused(job, lane, exc)
            else:
                future.add_done_callback(functools.partial(self._lane_done, job, lane))

    def _refused(self, job: _Job, lane: _Lane, error: Exception) -> None:
        """`lane`'s pool refused `job` (it broke before the job went in)."""
        with self._lock:
            lane.jobs.pop(job.seq, None)
            buried = isinstance(error, BrokenProcessPool) and self._retire_locked(lane)
            if not job.settled:
                if self._state is _State.SHUT_DOWN:
                    self._settle_locked(job, None, _shut_down_error(job))
                elif isinstance(error, BrokenProcessPool):
                    self._resend_locked(job)  # none of it ran: a fresh lane may take it
                else:
                    self._settle_locked(job, None, error)
            handoffs = self._assign_locked()
            settled = self._take_settlements_locked()
        if buried:
            _log_replaced(job.op_id, error)
        _resolve(settled)
        self._hand_over(handoffs)

    def _lane_done(self, job: _Job, lane: _Lane, future: Future[bytes]) -> None:
        """`job`'s future in `lane` ended (a lane's manager thread runs this)."""
        payload: bytes | None = None
        error: BaseException | None = None
        try:
            payload = future.result()
        except CancelledError:
            # shutdown(cancel_futures=True) took it before the process did.
            error = _shut_down_error(job)
        except BaseException as exc:
            error = exc
        with self._lock:
            lane.jobs.pop(job.seq, None)
            broken = isinstance(error, BrokenProcessPool)
            buried = broken and self._retire_locked(lane)
            if job.settled:
                pass  # withdrawn (its process skipped it) or stopped already
            elif not broken:
                self._settle_locked(job, payload, error)
            elif lane.killed == job.seq:
                self._settle_locked(
                    job,
                    None,
                    OperationCancelledError(
                        f"operation {job.op_id} was stopped: its worker process was killed"
                    ),
                )
            elif job.seq > lane.started():
                # Its process died before starting it (the lock kept it from starting
                # after a kill): nothing of it ran, so it runs elsewhere.
                if self._state is _State.SHUT_DOWN:
                    self._settle_locked(job, None, _shut_down_error(job))
                else:
                    self._resend_locked(job)
            else:
                self._settle_locked(
                    job,
                    None,
                    WorkerCrashError(
                        f"a worker process died while running operation {job.op_id} "
                        "(os._exit, a signal such as SIGKILL or SIGSEGV, or the OOM killer); "
                        "its body may or may not have run to the end"
                    ),
                )
            handoffs = self._assign_locked()
            settled = self._take_settlements_locked()
        if buried:
            assert error is not None
            _log_replaced(job.op_id, error)
        _resolve(settled)
        self._hand_over(handoffs)

    def _withdraw(self, job: _Job, error: BaseException) -> bool:
        with self._lock:
            withdrawn = self._withdraw_locked(job, error)
            settled = self._take_settlements_locked()
        _resolve(settled)
        return withdrawn

    def _withdraw_locked(self, job: _Job, error: BaseException) -> bool:
        """Settle `job` with `error` if no process started it (it then never will)."""
        if job.settled:
            return False
        lane = job.lane
        if lane is not None:
            if lane.dead:
                if lane.started() >= job.seq:  # final: the dead lane's lock is ours
                    return False
            elif not lane.lock.acquire(timeout=_LANE_LOCK_WAIT):
                return False  # its process died holding the lock; the pool reports it
            else:
                try:
                    if lane.started() >= job.seq:
                        return False
                    # Its process checks this slot, under the same lock, before it
                    # starts the job: it will skip it.
                    lane.state[_WITHDRAWN + job.seq % 2] = job.seq
                finally:
                    lane.lock.release()
        self._settle_locked(job, None, error)
        return True

    def _resend_locked(self, job: _Job) -> None:
        """`job` never started and its lane is dead: back to the head of the queue."""
        if job.resends >= _MAX_RESENDS:
            self._settle_locked(
                job,
                None,
                WorkerCrashError(
                    f"{job.resends + 1} worker processes died before any started operation "
                    f"{job.op_id}; giving up on it"
                ),
            )
            return
        job.resends += 1
        job.lane = None
        job.seq = 0
        self._waiting.appendleft(job)

    def _retire_locked(self, lane: _Lane) -> bool:
        """`lane`'s pool broke: take it out of service; True the first time."""
        if lane.dead:
            return False
        # Take its lock for good: should its process still be alive (a result that
        # could not be read), it cannot start another job, so `started` is final. A
        # timeout means it died holding the lock, before starting anything new.
        lane.lock.acquire(timeout=_LANE_LOCK_WAIT)
        self._bury_locked(lane)
        return True

    def _bury_locked(self, lane: _Lane) -> None:
        lane.dead = True
        if lane in self._lanes:
            self._lanes.remove(lane)
        self._pool_restarts += 1
        # A dead lane's pool tears itself down: its manager thread fails the lane's
        # futures, joins the process and ends. Keep it until then, for shutdown().
        self._retired = [r for r in self._retired if _tearing_down(r.pool)]
        self._retired.append(lane)

    def _settle_locked(self, job: _Job, payload: bytes | None, error: BaseException | None) -> None:
        job.settled = True
        if self._jobs.get(job.op_id) is job:
            del self._jobs[job.op_id]
        self._settlements.append((job, payload, error))

    def _take_settlements_locked(self) -> list[tuple[_Job, bytes | None, BaseException | None]]:
        settled = self._settlements
        if settled:
            self._settlements = []
        return settled

    # -- the signal relay ---------------------------------------------------------------

    def _start_relay_thread_locked(self) -> None:
        # The thread runs while any item is in the pool and ends soon after the last one.
        assert self._reader is not None
        self._relay_thread = threading.Thread(
            target=self._relay_loop,
            args=(self._reader,),
            name=f"ephemeral-actors-process-relay-{self._token}",
            daemon=True,
        )
        self._relay_thread.start()

    def _relay_loop(self, reader: Connection) -> None:
        """Replay relayed events on their local operations while any item is in the pool."""
        while True:
            try:
                data = reader.recv_bytes() if reader.poll(_RELAY_WAIT) else None
            except (EOFError, OSError):  # pragma: no cover - the parent holds a writer
                with self._lock:
                    self._relay_thread = None
                return
            if data is not None:
                message = pickle.loads(data)  # noqa: S301 - our workers' bytes
                if message is not None:
                    call_id, event = message
                    with self._lock:
                        call = self._calls.get(call_id)
                    if call is not None:
                        call.offer((event,))
                    continue
            with self._lock:
                if self._unfinished == 0 or self._state is _State.SHUT_DOWN:
                    self._relay_thread = None
                    return


class _CancelWatch:
    """A timer on the coordinator's loop: withdraws the job once `op` is cancelled.

    It checks `op.cancelled` every `_POLL_INTERVAL` until the job ends or is asked
    to stop once; a job a process already started then finishes (a body in a
    worker process is never interrupted by a cancel request).
    """

    __slots__ = ("backend", "handle", "job", "op")

    def __init__(
        self, op: Operation, backend: ProcessBackend, job: _Job, waiter: asyncio.Future[bytes]
    ) -> None:
        self.op = op
        self.backend = backend
        self.job = job
        self.handle = waiter.get_loop().call_later(_POLL_INTERVAL, self.check)
        waiter.add_done_callback(self.stop)

    def check(self) -> None:
        if self.op.cancelled:
            self.backend._withdraw(
                self.job,
                OperationCancelledError(
                    f"operation {self.job.op_id} was cancelled before a worker process started it"
                ),
            )
        else:
            self.handle = asyncio.get_running_loop().call_later(_POLL_INTERVAL, self.check)

    def stop(self, _waiter: asyncio.Future[bytes]) -> None:
        self.handle.cancel()


def _resolve(settled: list[tuple[_Job, bytes | None, BaseException | None]]) -> None:
    """Resolve settled jobs' tickets (outside the backend lock: callbacks take it)."""
    for job, payload, error in settled:
        if error is not None:
            job.ticket.set_exception(error)
        else:
            assert payload is not None
            job.ticket.set_result(payload)


def _shut_down_error(job: _Job) -> RuntimeError:
    return RuntimeError(
        f"ProcessBackend was shut down before a worker process started operation {job.op_id}"
    )


def _log_replaced(op_id: int, error: BaseException) -> None:
    logger.warning(
        "ProcessBackend: a worker process died; the operation it was running failed with "
        "WorkerCrashError, and a fresh process takes its place",
        extra={
            "coordinator": None,
            "operation_id": op_id or None,
            "key": None,
            "error_type": type(error).__name__,
            "event": "process.pool.replaced",
        },
    )


def _tearing_down(pool: ProcessPoolExecutor) -> bool:
    """Whether a broken pool's manager thread may still run (True if unknown)."""
    # A private attribute, read defensively: without it, dead lanes are simply kept
    # until shutdown() joins them.
    thread = getattr(pool, "_executor_manager_thread", pool)
    if thread is pool:
        return True
    return isinstance(thread, threading.Thread) and thread.is_alive()


def _dump_item(item: Any) -> bytes:
    try:
        return pickle.dumps(item, _PROTOCOL)
    except Exception as why:
        raise TypeError(
            f"ProcessBackend: items must be picklable to reach a worker process, and this "
            f"{_type_name(item)} is not ({type(why).__name__}: {why})"
        ) from why


def _is_coroutine_function(fn: Any) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
