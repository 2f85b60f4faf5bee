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
  with room takes it: one socket write ──────▶ _lane_main(): read the job; under the
  await the job's future                        lane lock, skip a withdrawn job, else
                                                mark it started; current_operation()
                                                is a _ChildOperation; body(item) runs;
  the lane's reader (loop.add_reader):          op.signal(name) writes (seq, event)
    replay each event on the local  ◀────────── to the same socket at once
    Operation
    resolve the job's future        ◀────────── (outcome, value, events), pickled
  replay events not yet replayed; return the value or raise the body's exception
```

**Lanes: one process each.** The pool is `max_workers` *lanes*; each lane is one
worker process (the `multiprocessing` context's `Process`, started with the
platform's start method) running a small loop of ours (`_process_child._lane_main`),
one end of a socket pair to talk to it, a lock, and a few shared integers
(`multiprocessing.RawArray`): the sequence number of the last job the process
started and the jobs withdrawn from it. A lane holds at most two jobs, the one its
process runs and the next (so the process finds its next item queued when it
finishes one); the others wait in the backend's queue and go to the first lane
with room, an idle lane first.

**No thread per lane, and none per backend.** The backend's *home loop* — the
event loop of the coordinator tasks that await its jobs (every coordinator shares
one) — watches each lane's socket with `loop.add_reader`: an outcome wakes that
loop once, the reader resolves the job's future in place (the awaiting task is on
that loop: no `call_soon_threadsafe` hop), and the next job goes out with one
non-blocking write from the same loop. A write that does not fit the
socket buffer (a multi-megabyte item queued behind a running body) keeps its rest
in the lane's buffer and finishes through `loop.add_writer`, so the loop never
blocks on a process that is busy. Live signals travel on the same socket, so there
is no relay thread either. Lane state is guarded by the backend lock because
`cancel()`, `kill()` and `shutdown()` come from other threads; the socket work
itself happens on the home loop (or, in `shutdown()`, under that lock). A task
awaiting a job on another loop than the home loop is served too: its job is handed
to the home loop and its outcome comes back with `call_soon_threadsafe`; when the
home loop has stopped, the next loop to submit becomes home. A loop without
`add_reader` (Windows' proactor loop) gets a private selector loop on a backend
thread as home.

The lane processes are not daemonic (a body may start processes of its own):
`multiprocessing` joins them at interpreter exit, so an exit hook of ours first
shuts down every lane socket `shutdown()` did not close, and each process ends after
its running body. An at-fork hook closes the lane sockets in every forked child, so
no other process holds a copy that would hide the end of a lane's socket.

Why this and not a `concurrent.futures.ProcessPoolExecutor(max_workers=1)` per
lane, as the backend first did: each such pool runs a manager thread and a queue
feeder thread, and on a 2-CPU VM they, the relay thread and the wake-ups between
them cost this process 550 to 650 µs of CPU per item (a selector built per wait,
condition variables, a queue, a thread hop back to the loop per outcome), CPU the
worker processes then did not get. The loop-driven lanes cost about 200 µs per item
all told, the coordinator's own work included, and a bare `ProcessPoolExecutor` fed
one item at a time about 300 (`benchmarks/bench_process.py`, "here/item"); what is
left is mostly the loop waking once per outcome. The lane protocol — the lock, the
shared integers, which job may be re-sent — is the one the pools had.

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
- **A crash** (`os._exit`, SIGSEGV, the OOM killer), seen as the end of the lane's
  socket after every outcome the process sent: the job the process had started
  fails with `WorkerCrashError` — it may have run partly, so it is not re-run (retry
  it with a `RetryPolicy` if the body is idempotent); the lane's other job, which
  never started, is re-sent. Only that lane's process is replaced. A process found
  dead while idle (its socket refuses the next job) is replaced the same way, and
  the job runs in the new one.
- **Cancel** (`cancel(op_id)`, `shutdown()`): a job not yet started, queued here or
  in a lane, is withdrawn; a running body is never interrupted. Every path by which
  a coordinator asks an operation to cancel calls `cancel(op_id)`, and a job whose
  operation was already asked to cancel when it reached the backend is withdrawn
  there, so no timer polls `Operation.cancelled`.

Nothing accepted is lost or left hanging: every job ends, completed or failed, and a
job re-sent `_MAX_RESENDS` times without ever starting (a process that cannot even
start) fails with `WorkerCrashError` rather than looping.

Why not loky or billiard: billiard (Celery's pool) does attribute a job to its
process, with an acknowledgement message per job, but it is a heavier dependency
with a different API, and still runs result-handler threads; loky adds cloudpickle
and a reusable executor, neither needed here, and reacts to a dead worker like the
standard pool.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import enum
import functools
import inspect
import itertools
import logging
import multiprocessing
import multiprocessing.context
import multiprocessing.process
import multiprocessing.util
import os
import pickle
import selectors
import signal
import socket
import threading
import uuid
import weakref
from asyncio.events import _get_running_loop
from typing import TYPE_CHECKING, Any, Final

from ephemeral_actors._errors import OperationCancelledError, WorkerCrashError
from ephemeral_actors._operation import running_operation
from ephemeral_actors._validate import check_int
from ephemeral_actors.backends._process_child import (
    EVENT,
    LENGTH,
    OK,
    PROTOCOL,
    REPLY,
    RESULT,
    STARTED,
    STOP,
    WITHDRAWN,
    _lane_main,
    frame,
    type_name,
)
from ephemeral_actors.backends._relay import Call

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType
    from typing import Self


__all__ = ["ProcessBackend"]

logger = logging.getLogger("ephemeral_actors")

_DEPTH: Final = 2
"""Jobs a lane holds: the one its process runs and the next one."""
_MAX_RESENDS: Final = 3
"""Times a job that never started is re-sent after its lane's process died."""
_LANE_LOCK_WAIT: Final = 1.0
"""Seconds to wait for a lane lock. Its process holds it for a few stores only; longer
means that process died holding it, and the lane is then treated as dead."""
_KILL: Final = getattr(signal, "SIGKILL", signal.SIGTERM)
"""SIGKILL where there is one; on Windows `os.kill` with SIGTERM is TerminateProcess."""
_READ_SIZE: Final = 1 << 18
"""Bytes read from a lane's socket per wake-up (more stay readable for the next one)."""
_REAP_RETRY: Final = 0.01
"""Seconds before looking again for the exit status of a process whose socket closed."""
_SHUTDOWN_POLL: Final = 0.1
"""Seconds `shutdown()` waits at a time for the lanes' sockets (it re-checks between)."""
_HOME_CHECK: Final = 1.0
"""Seconds a job of another loop waits before checking that the home loop still serves it."""


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

    `waiter` is the future the coordinator's task awaits, on that task's loop;
    `settled`, written under the backend lock, lets exactly one path decide the
    outcome.
    """

    __slots__ = (
        "call",
        "item_bytes",
        "key",
        "lane",
        "loop",
        "op_id",
        "resends",
        "seq",
        "settled",
        "waiter",
        "wrapped",
    )

    def __init__(
        self,
        wrapped: _Wrapped,
        item_bytes: bytes,
        op_id: int,
        key: str | None,
        *,
        call: Call | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.wrapped = wrapped
        self.item_bytes = item_bytes
        self.op_id = op_id
        self.key = key
        self.call = call
        self.loop = loop
        self.waiter: asyncio.Future[bytes] = loop.create_future()
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
    """One worker process, the socket to it, its lock and shared state."""

    __slots__ = (
        "broken",
        "dead",
        "ended",
        "inbuf",
        "jobs",
        "killed",
        "lock",
        "number",
        "outbuf",
        "process",
        "reading",
        "seqs",
        "sock",
        "state",
        "writing",
    )

    def __init__(self, number: int, context: multiprocessing.context.BaseContext) -> None:
        self.number = number
        self.lock = context.Lock()
        self.state: Any = context.RawArray("q", 3)
        # A socket pair, not a pipe: one duplex channel per lane, and sockets work with
        # a selector loop everywhere (Windows included).
        mine, theirs = socket.socketpair()
        _OURS.add(mine)
        process = context.Process(  # type: ignore[attr-defined]
            target=_lane_main,
            args=(theirs, self.lock, self.state),
            name=f"ephemeral-actors-process-{number}",
        )
        try:
            process.start()
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()  # the process has its own copy; ours would hide its end
        mine.setblocking(False)
        self.process: multiprocessing.process.BaseProcess = process
        self.sock = mine
        self.jobs: dict[int, _Job] = {}
        """Its jobs by number: at most `_DEPTH`, the one its process runs and the next.
        A withdrawn job stays until its process answers that it skipped it."""
        self.seqs = itertools.count(1)
        self.inbuf = bytearray()
        """Bytes read from its socket that do not make a whole frame yet."""
        self.outbuf = bytearray()
        """Bytes for its socket that did not fit yet (sent by the home loop's writer)."""
        self.reading: asyncio.AbstractEventLoop | None = None
        """The loop watching its socket for reading (None: not watched)."""
        self.writing: asyncio.AbstractEventLoop | None = None
        """The loop watching its socket for writing (only while `outbuf` has bytes)."""
        self.broken = False
        """A write to its socket failed: its process is gone, the end of file follows."""
        self.dead = False
        """Its process died or was killed: it takes no more jobs, and the backend holds
        its lock for good, so `started` is final."""
        self.ended = False
        """Its socket reached the end of file: nothing more will come from it."""
        self.killed = 0
        """The number of the job its process was killed for (0: not killed)."""

    def __repr__(self) -> str:
        state = "dead" if self.dead else "live"
        return (
            f"<lane {self.number} {state} pid={self.process.pid} jobs={sorted(self.jobs)} "
            f"unsent={len(self.outbuf)}>"
        )

    def started(self) -> int:
        """The number of the last job its process started (0: none yet)."""
        return int(self.state[STARTED])

    def room(self) -> bool:
        """Whether it can take a job now."""
        return len(self.jobs) < _DEPTH and not (self.dead or self.broken)


class ProcessBackend:
    """Runs coordinator bodies in worker processes, so CPU-bound work uses every core.

    The coordinator — supervision, per-key order, limits, the window, signals,
    pause/resume, deferral, cancel — stays in this process; only `body(item)` runs in
    one of `max_workers` worker processes the backend owns (see the module
    documentation). Items in flight cost the coordinator no thread: the wrapped body
    is a coroutine function that awaits the item's outcome, and the coordinator's
    event loop reads the processes' outcomes itself.

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
        self._dying: list[_Lane] = []
        """Dead lanes whose socket is still open: it is read until its end of file, then
        closed by the home loop (or `shutdown()`)."""
        self._unreaped: list[multiprocessing.process.BaseProcess] = []
        """Exited lane processes whose exit status was not collected yet."""
        self._waiting: collections.deque[_Job] = collections.deque()
        self._jobs: dict[int, _Job] = {}
        """Unsettled jobs by operation id, for `cancel` and `kill`."""
        self._settlements: list[tuple[_Job, bytes | None, BaseException | None]] = []
        """Jobs settled under the lock, resolved right after it is released."""
        self._replaced: list[tuple[int, str]] = []
        """Lane deaths to log once the lock is released: (operation id, error type)."""
        self._home: asyncio.AbstractEventLoop | None = None
        """The loop that watches the lanes' sockets (see the module documentation)."""
        self._kicked = False
        """A `_service` call is scheduled on the home loop."""
        self._private: tuple[asyncio.AbstractEventLoop, threading.Thread] | None = None
        """The backend's own selector loop and its thread, made only for a loop without
        `add_reader`."""
        self._received = memoryview(bytearray(_READ_SIZE))
        """Where lane sockets are read into (under the lock), reused: a fresh buffer per
        read this large would be mapped and unmapped by malloc every time."""
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
            body_bytes = pickle.dumps(body, PROTOCOL)
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

        Raises:
            TypeError: `item` does not pickle.
        """
        _dump_item(item)

    def prepare_item(self, item: Any) -> Any:
        """`item`, pickled for a worker process: what a coordinator keeps and runs.

        Coordinators call this when an item is offered, in the caller's thread, so a
        bad item is refused at `enqueue`/`submit` rather than failing later, and the
        item is pickled once, off the event loop that talks to the processes. Later
        changes to a mutable item do not reach the worker process.

        Raises:
            TypeError: `item` does not pickle.

        Added in version 0.2.0.
        """
        return _Shipped(_dump_item(item))

    def cancel(self, op_id: int) -> bool:
        """Withdraw operation `op_id`'s item if no worker process has started it yet.

        The coordinator calls this whenever it asks a running operation to cancel.

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
                # Its process died holding the lock (a few stores long): the end of its
                # socket follows, and the dead lane's jobs are settled then.
                stopped = False
            else:
                started = lane.started()
                if started == job.seq:
                    # The lock is never released: the process cannot start the lane's
                    # next job before the signal lands, and `started` stays final.
                    killed_pid = lane.process.pid or 0
                    lane.killed = job.seq
                    self._kills += 1
                    if killed_pid > 0:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(killed_pid, _KILL)
                    self._settle_locked(
                        job,
                        None,
                        OperationCancelledError(
                            f"operation {op_id} was stopped: its worker process was killed"
                        ),
                    )
                    self._retire_locked(lane)  # re-queues the job behind it
                    self._kick_locked()  # a fresh lane takes it
                    stopped = True
                elif started < job.seq:
                    lane.state[WITHDRAWN + job.seq % 2] = job.seq
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

        Waits for the worker processes to exit, so no process of the backend is
        left (and no thread: it runs none, except a private loop where a coordinator's
        loop cannot watch sockets). Close the coordinators that use the backend first.
        Idempotent.
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
                # Each process exits once it has answered every job sent before this.
                self._send_locked(lane, STOP)
            lanes = [*self._lanes, *self._dying]
            settled = self._take_settlements_locked()
        _resolve(settled)
        self._pump_until_ended(lanes)
        self._on_home(functools.partial(self._close_sockets, lanes))
        with self._lock:
            processes = [lane.process for lane in lanes] + self._unreaped
            self._unreaped = []
            private, self._private = self._private, None
        for process in processes:
            with contextlib.suppress(ValueError):  # closed already: it was reaped
                process.join()
                process.close()
        if private is not None:
            loop, thread = private
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
        self._log_replaced()

    def _pump_until_ended(self, lanes: list[_Lane]) -> None:
        """Read and write the lanes' sockets here until each has reached its end.

        The home loop may still run on another thread, or not at all any more; all
        socket work happens under the backend lock, so both may do it.
        """
        with selectors.DefaultSelector() as selector:
            while True:
                with self._lock:
                    open_lanes = [lane for lane in lanes if not lane.ended]
                    for lane in open_lanes:
                        events = selectors.EVENT_READ
                        if lane.outbuf:
                            events |= selectors.EVENT_WRITE
                        with contextlib.suppress(KeyError):
                            selector.unregister(lane.sock)
                        selector.register(lane.sock, events, lane)
                if not open_lanes:
                    return
                ready = selector.select(_SHUTDOWN_POLL)
                offers: list[tuple[Call, bytes]] = []
                with self._lock:
                    for key, mask in ready:
                        lane = key.data
                        if mask & selectors.EVENT_WRITE:
                            self._flush_locked(lane)
                        if mask & selectors.EVENT_READ:
                            self._read_locked(lane, offers)
                    for lane in lanes:
                        if lane.ended:
                            with contextlib.suppress(KeyError):
                                selector.unregister(lane.sock)
                    settled = self._take_settlements_locked()
                _offer(offers)
                _resolve(settled)

    def _close_sockets(self, lanes: list[_Lane]) -> None:
        """Stop watching the lanes' sockets and close them (on the home loop's thread)."""
        with self._lock:
            for lane in lanes:
                self._unwatch_locked(lane)
                lane.sock.close()
            self._lanes = []
            self._dying = []

    def _on_home(self, fn: Callable[[], None]) -> None:
        """Run `fn` where the lanes' sockets may be unwatched.

        That is on the home loop's thread, or here when that loop is not running (it
        then watches nothing any more).
        """
        home = self._home
        if home is None or _get_running_loop() is home or not home.is_running():
            fn()
            return
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        try:
            home.call_soon_threadsafe(run)
        except RuntimeError:  # closed meanwhile
            fn()
            return
        while not done.wait(_SHUTDOWN_POLL):
            if not home.is_running():  # stopped before it ran `run`
                fn()
                return

    # -- running one item (a task on the coordinator's event loop) ---------------------------

    async def _run(self, wrapped: _Wrapped, item: Any) -> Any:
        op = running_operation()
        item_bytes = item.data if type(item) is _Shipped else _dump_item(item)
        op_id, key = (op.id, op.key) if op is not None else (0, None)
        call = Call(op) if op is not None else None
        loop = asyncio.get_running_loop()
        job = _Job(wrapped, item_bytes, op_id, key, call=call, loop=loop)
        with self._lock:
            if self._state is _State.SHUT_DOWN:
                raise RuntimeError("ProcessBackend is shut down; build a new one")
            self._unfinished += 1
            self._submitted += 1
            if op_id:
                self._jobs[op_id] = job
            if op is not None and op.cancelled:
                # Asked to cancel before it got here: `cancel(op_id)` found nothing to
                # withdraw then, so it is withdrawn now (the flag was set before that
                # call took the lock, and this check runs under it).
                self._settle_locked(job, None, _cancelled_error(job))
            else:
                self._waiting.append(job)
                if loop is not self._home:
                    self._adopt_locked(loop)
                if _get_running_loop() is self._home:
                    self._service_locked()
                else:
                    self._kick_locked()
            settled = self._take_settlements_locked()
        _resolve(settled)
        self._log_replaced()
        try:
            payload = await self._outcome_of(job, loop)
        except asyncio.CancelledError:
            # The task was cancelled: at a deadline (the coordinator then kills the
            # process if the body started), or as its loop closes. A job no process
            # has started must not run later.
            self._withdraw(job, _cancelled_error(job))
            raise
        try:
            outcome, value, events = pickle.loads(payload)  # noqa: S301 - our worker's bytes
        except Exception as why:
            raise RuntimeError(
                f"the outcome of operation {op_id} came back from the worker process but "
                f"cannot be unpickled here ({type(why).__name__}: {why})"
            ) from why
        if call is not None:
            call.offer(events, final=True)
        if outcome == OK:
            return value
        raise value

    async def _outcome_of(self, job: _Job, loop: asyncio.AbstractEventLoop) -> bytes:
        """The job's outcome; re-home the backend here if its home loop stopped serving it.

        The home loop reads every lane's socket. When it is another coordinator's loop
        and that loop closes (its `asyncio.run` ends) while this job is in flight, nobody
        reads the worker's reply: checked once a second while a job waits, this loop
        then becomes home and takes over the sockets (their unread bytes included).
        """
        waiter = job.waiter
        if self._home is loop:
            # This loop reads the sockets itself, and it cannot stop while a task of
            # its own waits: no check is needed (the timed wait below costs a timer and
            # a callback per item).
            return await waiter
        while True:
            try:
                done, _ = await asyncio.wait((waiter,), timeout=_HOME_CHECK)
            except asyncio.CancelledError:
                waiter.cancel()  # as `await waiter` would: a late outcome is then dropped
                raise
            if done:
                return waiter.result()
            with self._lock:
                home = self._home
                if home is loop or _serving(home):
                    continue
                self._adopt_locked(loop)
                if self._home is loop:
                    self._service_locked()
                else:
                    self._kick_locked()
                settled = self._take_settlements_locked()
            _resolve(settled)

    # -- the home loop (the backend lock guards everything below) -----------------------------

    def _adopt_locked(self, loop: asyncio.AbstractEventLoop) -> None:
        """A job arrived from `loop`, not the home loop: make it home if home is idle."""
        if _serving(self._home):
            return  # served there; its outcome comes back to `loop` thread-safely
        if _watches_sockets(loop):
            self._home = loop
        else:
            self._home = self._private_loop_locked()

    def _private_loop_locked(self) -> asyncio.AbstractEventLoop:
        if self._private is None:
            loop = asyncio.SelectorEventLoop()
            thread = threading.Thread(
                target=loop.run_forever,
                name=f"ephemeral-actors-process-io-{self._token}",
                daemon=True,
            )
            thread.start()
            self._private = (loop, thread)
        return self._private[0]

    def _kick_locked(self) -> None:
        """Have the home loop run `_service` soon (from a thread that is not its own)."""
        home = self._home
        if home is None or self._kicked:
            return
        self._kicked = True
        try:
            home.call_soon_threadsafe(self._service)
        except RuntimeError:  # closed: the next job to arrive makes a new home
            self._kicked = False

    def _service(self) -> None:
        with self._lock:
            self._kicked = False
            if _get_running_loop() is self._home:
                self._service_locked()
            settled = self._take_settlements_locked()
        _resolve(settled)
        self._log_replaced()

    def _service_locked(self) -> None:
        """On the home loop: give waiting jobs to lanes, and watch every lane's socket."""
        self._assign_locked()
        home = self._home
        assert home is not None
        for lanes in (self._lanes, self._dying):
            for lane in lanes:
                if lane.reading is not home and not lane.ended:
                    if lane.reading is not None:  # an earlier home, stopped or closed
                        lane.reading.remove_reader(lane.sock)
                    home.add_reader(lane.sock, self._readable, lane)
                    lane.reading = home
                if lane.outbuf and lane.writing is not home and not lane.ended:
                    if lane.writing is not None:
                        lane.writing.remove_writer(lane.sock)
                    home.add_writer(lane.sock, self._writable, lane)
                    lane.writing = home

    def _readable(self, lane: _Lane) -> None:
        offers: list[tuple[Call, bytes]] = []
        with self._lock:
            self._read_locked(lane, offers)
            if lane.ended:
                self._unwatch_locked(lane)
                # After shutdown() began, it closes the sockets and joins the
                # processes itself (it may be watching this socket right now).
                if self._state is not _State.SHUT_DOWN:
                    lane.sock.close()
                    if lane in self._dying:
                        self._dying.remove(lane)
                    self._reap_locked(lane.process)
            if self._home is _get_running_loop():
                self._service_locked()
            settled = self._take_settlements_locked()
        _offer(offers)
        _resolve(settled)
        self._log_replaced()

    def _writable(self, lane: _Lane) -> None:
        with self._lock:
            self._flush_locked(lane)
            if not lane.outbuf and lane.writing is not None:
                lane.writing.remove_writer(lane.sock)
                lane.writing = None

    def _unwatch_locked(self, lane: _Lane) -> None:
        if lane.reading is not None:
            lane.reading.remove_reader(lane.sock)
            lane.reading = None
        if lane.writing is not None:
            lane.writing.remove_writer(lane.sock)
            lane.writing = None

    def _read_locked(self, lane: _Lane, offers: list[tuple[Call, bytes]]) -> None:
        """Read what `lane`'s socket has; settle the jobs whose outcome came."""
        if lane.ended:
            return
        try:
            got = lane.sock.recv_into(self._received)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            got = 0
        if not got:
            lane.ended = True
            if not lane.dead:
                self._retire_locked(lane)
            return
        fresh = self._received[:got]
        buf = lane.inbuf
        if buf:
            buf += fresh
            view: memoryview | bytearray = buf
        else:
            view = fresh
        size = len(view)
        offset = 0
        header, reply = LENGTH.size, LENGTH.size + REPLY.size
        jobs = lane.jobs
        while size - offset >= header:
            end = offset + header + LENGTH.unpack_from(view, offset)[0]
            if end > size:
                break
            tag, seq = REPLY.unpack_from(view, offset + header)
            payload = bytes(view[offset + reply : end])
            offset = end
            if tag == RESULT:
                job = jobs.pop(seq, None)
                if job is not None and not job.settled:
                    self._settle_locked(job, payload, None)
            elif tag == EVENT:
                job = jobs.get(seq)
                if job is not None and job.call is not None and not job.settled:
                    offers.append((job.call, payload))
        if buf:
            del buf[:offset]
        elif offset < size:
            buf += view[offset:]

    def _send_locked(self, lane: _Lane, data: bytes) -> None:
        """Write `data` to `lane`'s socket now, as far as it goes; keep the rest."""
        if lane.broken:
            return
        if lane.outbuf:
            lane.outbuf += data
            return
        try:
            sent = lane.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            # Its process is gone (it closed its end): its jobs are settled when the
            # end of file is read, after any outcome it sent before dying.
            lane.broken = True
            return
        if sent < len(data):
            lane.outbuf += memoryview(data)[sent:]

    def _flush_locked(self, lane: _Lane) -> None:
        if not lane.outbuf or lane.ended:
            return
        try:
            sent = lane.sock.send(lane.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            lane.broken = True
            lane.outbuf.clear()
            return
        del lane.outbuf[:sent]

    def _reap_locked(self, process: multiprocessing.process.BaseProcess) -> None:
        """Collect an exited process's status now, or soon (its socket closed first)."""
        try:
            process.join(0)
            if process.exitcode is not None:
                process.close()
                return
        except ValueError:  # closed: shutdown() reaped it
            return
        self._unreaped.append(process)
        if len(self._unreaped) == 1:
            asyncio.get_running_loop().call_later(_REAP_RETRY, self._reap)

    def _reap(self) -> None:
        with self._lock:
            waiting = self._unreaped
            self._unreaped = []
            for process in waiting:
                self._reap_locked(process)

    # -- jobs and lanes ----------------------------------------------------------------------

    def _assign_locked(self) -> None:
        """Give waiting jobs to lanes with room (on the home loop)."""
        waiting = self._waiting
        if self._state is _State.SHUT_DOWN:
            return
        while waiting:
            if waiting[0].settled:  # withdrawn while it waited
                waiting.popleft()
                continue
            lane = self._lane_with_room_locked()
            if lane is None:
                break
            job = waiting.popleft()
            job.lane = lane
            job.seq = seq = next(lane.seqs)
            lane.jobs[seq] = job
            wrapped = job.wrapped
            self._send_locked(
                lane,
                frame(
                    pickle.dumps(
                        (
                            seq,
                            wrapped.token,
                            wrapped.body_bytes,
                            job.item_bytes,
                            job.op_id,
                            job.key,
                        ),
                        PROTOCOL,
                    )
                ),
            )

    def _lane_with_room_locked(self) -> _Lane | None:
        """An idle lane, else a new one (up to `max_workers`), else one with one job."""
        fallback = None
        for lane in self._lanes:
            if lane.room():
                if not lane.jobs:
                    return lane
                if fallback is None:
                    fallback = lane
        if len(self._lanes) < self.max_workers:
            try:
                lane = _Lane(next(self._lane_numbers), self.mp_context)
            except Exception as exc:  # out of file descriptors or processes, say
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
                return False  # its process died holding the lock; its socket's end says so
            else:
                try:
                    if lane.started() >= job.seq:
                        return False
                    # Its process checks this slot, under the same lock, before it
                    # starts the job: it will skip it.
                    lane.state[WITHDRAWN + job.seq % 2] = job.seq
                finally:
                    lane.lock.release()
        self._settle_locked(job, None, error)
        return True

    def _retire_locked(self, lane: _Lane) -> None:
        """`lane`'s process is dead or being killed: settle or re-queue its jobs.

        Called with the lane lock held for good (a kill), or once its socket ended.
        """
        if lane.dead:
            return
        stopped = self._state is _State.SHUT_DOWN and lane.ended
        if not lane.killed:
            # Take its lock for good, so `started` is final. A timeout means it died
            # holding the lock, before starting anything new.
            lane.lock.acquire(timeout=_LANE_LOCK_WAIT)
        lane.dead = True
        if lane in self._lanes:
            self._lanes.remove(lane)
        if not lane.ended:
            self._dying.append(lane)
        if not stopped:  # else it exited as asked, by shutdown()
            self._pool_restarts += 1
        started = lane.started()
        crashed = 0
        # Highest number first: each goes to the head of the queue, so they keep order.
        for seq in sorted(lane.jobs, reverse=True):
            job = lane.jobs[seq]
            if job.settled:
                continue
            if seq > started:
                # Its process died before starting it (the lock kept it from starting
                # after a kill): nothing of it ran, so it runs elsewhere.
                if self._state is _State.SHUT_DOWN:
                    self._settle_locked(job, None, _shut_down_error(job))
                else:
                    self._resend_locked(job)
            else:
                crashed = job.op_id or -1
                self._settle_locked(
                    job,
                    None,
                    WorkerCrashError(
                        f"a worker process died while running operation {job.op_id} "
                        "(os._exit, a signal such as SIGKILL or SIGSEGV, or the OOM killer); "
                        "its body may or may not have run to the end"
                    ),
                )
        lane.jobs.clear()
        if not (lane.killed or stopped):
            self._replaced.append((max(crashed, 0), "WorkerCrashError"))

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

    def _settle_locked(self, job: _Job, payload: bytes | None, error: BaseException | None) -> None:
        job.settled = True
        self._unfinished -= 1
        if self._jobs.get(job.op_id) is job:
            del self._jobs[job.op_id]
        self._settlements.append((job, payload, error))

    def _take_settlements_locked(self) -> list[tuple[_Job, bytes | None, BaseException | None]]:
        settled = self._settlements
        if settled:
            self._settlements = []
        return settled

    def _log_replaced(self) -> None:
        if not self._replaced:
            return
        with self._lock:
            replaced, self._replaced = self._replaced, []
        for op_id, error_type in replaced:
            logger.warning(
                "ProcessBackend: a worker process died; the operation it was running failed "
                "with WorkerCrashError, and a fresh process takes its place",
                extra={
                    "coordinator": None,
                    "operation_id": op_id or None,
                    "key": None,
                    "error_type": error_type,
                    "event": "process.pool.replaced",
                },
            )


_OURS: weakref.WeakSet[socket.socket] = weakref.WeakSet()
"""This process's end of every lane's socket not garbage-collected yet."""


def _let_lanes_go() -> None:
    """At interpreter exit, end every lane socket that `shutdown()` did not close.

    The lane processes are not daemonic (a body may start processes of its own), so
    `multiprocessing`'s own exit hook, which runs after this one, joins them; each
    then ends after its running body, as `shutdown()` would let it. `shutdown()` on
    the socket, not `close()`, because a process forked meanwhile may hold a copy.
    """
    for sock in list(_OURS):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _close_in_forked_child() -> None:
    """In a forked child (a new lane's process, or any fork), close our lane sockets.

    Its copies would keep those sockets open: a lane's process (the new one included,
    whose socket pair was made just before the fork) would not see the end of its
    socket when this process ends.
    """
    for sock in list(_OURS):
        sock.close()
    _OURS.clear()


# Registered after multiprocessing.util's exit hook (imported above), so it runs first.
atexit.register(_let_lanes_go)
if hasattr(os, "register_at_fork"):  # not on Windows, where nothing is forked
    os.register_at_fork(after_in_child=_close_in_forked_child)


def _resolve(settled: list[tuple[_Job, bytes | None, BaseException | None]]) -> None:
    """Resolve settled jobs' futures (outside the backend lock), each on its own loop."""
    if not settled:
        return
    running = _get_running_loop()
    for job, payload, error in settled:
        if job.loop is running:
            _set(job.waiter, payload, error)
        else:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody awaits
                job.loop.call_soon_threadsafe(_set, job.waiter, payload, error)


def _set(waiter: asyncio.Future[bytes], payload: bytes | None, error: BaseException | None) -> None:
    if waiter.done():  # its task was cancelled
        return
    if error is not None:
        waiter.set_exception(error)
    else:
        assert payload is not None
        waiter.set_result(payload)


def _offer(offers: list[tuple[Call, bytes]]) -> None:
    """Replay live events on their local operations (outside the backend lock)."""
    for call, data in offers:
        try:
            event = pickle.loads(data)  # noqa: S301 - our worker's bytes
        except Exception:
            logger.exception("ProcessBackend: could not unpickle a relayed event")
            continue
        call.offer((event,))


def _watches_sockets(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether `loop` has `add_reader` (a selector loop has; Windows' proactor loop has not)."""
    return type(loop).add_reader is not asyncio.BaseEventLoop.add_reader


def _cancelled_error(job: _Job) -> OperationCancelledError:
    return OperationCancelledError(
        f"operation {job.op_id} was cancelled before a worker process started it"
    )


def _shut_down_error(job: _Job) -> RuntimeError:
    return RuntimeError(
        f"ProcessBackend was shut down before a worker process started operation {job.op_id}"
    )


def _serving(home: asyncio.AbstractEventLoop | None) -> bool:
    """Whether `home` can still read the lanes' sockets (it exists and runs)."""
    return home is not None and not home.is_closed() and home.is_running()


class _Shipped:
    """An item pickled at intake (`prepare_item`): a wrapped body sends it as it is."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"<item pickled for a worker process, {len(self.data)} bytes>"


def _dump_item(item: Any) -> bytes:
    try:
        return pickle.dumps(item, PROTOCOL)
    except Exception as why:
        raise TypeError(
            f"ProcessBackend: items must be picklable to reach a worker process, and this "
            f"{type_name(item)} is not ({type(why).__name__}: {why})"
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
