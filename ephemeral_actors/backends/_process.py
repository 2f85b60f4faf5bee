"""`ProcessBackend`: run a coordinator's plain bodies in worker processes (SPEC section 17).

Only `body(item)` leaves this process; supervision, ordering, limits, the window,
deferral and signals stay in the coordinator. The wrapped body is a coroutine
function, so the coordinator runs it as a task on its event loop: an item in flight
in a worker process costs a suspended task here, not a thread. One item flows like
this:

```
coordinator event loop (here)                 worker process (ProcessPoolExecutor)
-----------------------------                 ------------------------------------
await wrapped(item)
  pickle the item (TypeError naming its type)
  pool.submit(_run_in_child, ...)  ─────────▶ _run_in_child(): current_operation() is
  await the future, waking every 0.1 s          a _ChildOperation; body(item) runs;
  to check op.cancelled (→ future.cancel())     op.signal(name) records (seq, name)
                                                and writes it to the relay pipe ──┐
  relay thread: read the pipe and     ◀───────────────────────────────────────────┘
    replay each event on the local Operation
  ◀──── pickle((outcome, value, events)) ─────
  replay events not yet relayed; return the value or raise the body's exception
```

Why the stdlib pool and not loky (or billiard): `ProcessPoolExecutor` is always
there, is what Python users already know, and gives everything this backend needs —
reused worker processes, an initializer (for the signal pipe), `Future.cancel()` for
items not yet started and `BrokenProcessPool` when a worker dies. loky's extras
(cloudpickle for lambdas and closures, a reusable executor, worker timeouts) are not
needed for that, and it fails every item in flight when a worker dies just as the
stdlib pool does (`TerminatedWorkerError`), so it would buy no better crash handling.

A worker that dies (`os._exit`, a signal such as SIGKILL or SIGSEGV, the OOM killer)
breaks the whole stdlib pool: every item in it at that moment, running or queued,
fails with `WorkerCrashError` — none is silently re-run, because any of them may have
run partly; retry them with a retry policy if the body is idempotent — and the next
item gets a fresh pool. Nothing accepted is lost or left hanging.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import inspect
import itertools
import logging
import multiprocessing
import multiprocessing.context
import os
import pickle
import threading
import types
import uuid
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, Final, cast

from ephemeral_actors._errors import OperationCancelledError, WorkerCrashError
from ephemeral_actors._operation import Operation, _current
from ephemeral_actors._validate import check_int
from ephemeral_actors.backends._relay import Call, Event, RecordingOperation, portable_error

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.connection import Connection
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

# Outcomes a worker returns, with the value and the body's events.
_OK: Final = 0
_RAISED: Final = 1


# -- the worker side ------------------------------------------------------------------------
#
# Everything in this section runs in the worker processes.

_relay_writer: Connection | None = None
"""This worker's end of the backend's signal pipe (set by the pool's initializer)."""
_bodies: collections.OrderedDict[str, Callable[[Any], Any]] = collections.OrderedDict()
"""Unpickled bodies by wrap token, so a body is unpickled once per process, not per item."""


def _init_worker(writer: Connection) -> None:
    """The pool's initializer: keep the signal pipe's writing end."""
    global _relay_writer  # noqa: PLW0603 - one per worker process, set once
    _relay_writer = writer


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
    token: str, body_bytes: bytes, item_bytes: bytes, *, op_id: int, key: str | None, call: int
) -> bytes:
    """Run one item in a worker process; return the pickled (outcome, value, events)."""
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
    """Built; no process yet (the first item starts the pool)."""
    RUNNING = "running"
    """The pool exists."""
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


class ProcessBackend:
    """Runs coordinator bodies in worker processes, so CPU-bound work uses every core.

    The coordinator — supervision, per-key order, limits, the window, signals,
    pause/resume, deferral, cancel — stays in this process; only `body(item)` runs in
    a worker process of a `concurrent.futures.ProcessPoolExecutor` that the backend
    owns. Items in flight cost the coordinator no thread: the wrapped body is a
    coroutine function that awaits the pool's future.

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
    `cancelled` is always False in the worker: a running body is never interrupted.
    Cancelling an operation whose item is still queued for a process (not started)
    cancels it there.

    A worker process that dies fails every item in the pool at that moment with
    `WorkerCrashError` and the pool is replaced (see the module documentation).

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
        """How many worker processes the pool runs."""
        self.mp_context: multiprocessing.context.BaseContext = (
            mp_context or multiprocessing.get_context()
        )
        """The `multiprocessing` context that starts them."""
        self._lock = threading.Lock()
        self._state = _State.NEW
        self._pool: ProcessPoolExecutor | None = None
        self._retired: list[ProcessPoolExecutor] = []
        self._reader: Connection | None = None
        self._writer: Connection | None = None
        self._relay_thread: threading.Thread | None = None
        self._calls: dict[int, Call] = {}
        self._queued: dict[int, Future[bytes]] = {}
        self._call_ids = itertools.count(1)
        self._wraps = itertools.count(1)
        self._token = uuid.uuid4().hex[:12]
        self._unfinished = 0
        self._submitted = 0
        self._pool_restarts = 0

    def __repr__(self) -> str:
        return (
            f"<ProcessBackend {self._state.value} max_workers={self.max_workers} "
            f"start_method={self.mp_context.get_start_method()} in_flight={self._unfinished} "
            f"submitted={self._submitted} pool_restarts={self._pool_restarts}>"
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
        """Items handed to the pool whose outcome has not come back yet."""
        return self._unfinished

    @property
    def submitted(self) -> int:
        """Items handed to the pool since construction."""
        return self._submitted

    @property
    def pool_restarts(self) -> int:
        """How many times a broken pool (a worker process died) was replaced."""
        return self._pool_restarts

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
        """Cancel operation `op_id`'s item if no worker process has started it yet.

        The coordinator may call this when it is asked to cancel a running operation;
        without that call the backend notices `Operation.cancelled` within 0.1 s.

        Returns:
            True if the item was withdrawn (its operation then ends cancelled).
        """
        with self._lock:
            future = self._queued.get(op_id)
        return future is not None and future.cancel()

    def shutdown(self) -> None:
        """Shut the pool down: items not yet started fail, running bodies finish first.

        Waits for the worker processes to exit and the relay thread to end, so no
        process or thread of the backend is left. Close the coordinators that use the
        backend first. Idempotent.
        """
        with self._lock:
            if self._state is _State.SHUT_DOWN:
                return
            self._state = _State.SHUT_DOWN
            pools = [*self._retired, *([self._pool] if self._pool is not None else [])]
            self._pool = None
            self._retired = []
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)
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
        future: Future[bytes] | None = None
        try:
            pool, future = self._submit(
                wrapped, item_bytes, op_id=op_id, key=key, call_id=call_id, call=call
            )
            payload = await self._await(future, op)
        except BrokenProcessPool as exc:
            self._replace(pool, exc, op)
            raise WorkerCrashError(
                f"a worker process died while operation {op_id} was running or queued in "
                "the process pool (os._exit, a signal such as SIGKILL or SIGSEGV, or the "
                "OOM killer); its body may or may not have run to the end"
            ) from exc
        finally:
            with self._lock:
                self._calls.pop(call_id, None)
                if future is not None and self._queued.get(op_id) is future:
                    del self._queued[op_id]
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

    def _submit(
        self,
        wrapped: _Wrapped,
        item_bytes: bytes,
        *,
        op_id: int,
        key: str | None,
        call_id: int,
        call: Call | None,
    ) -> tuple[ProcessPoolExecutor, Future[bytes]]:
        """Hand one item to the pool (to a fresh one if the current pool is broken)."""
        for _attempt in range(2):
            with self._lock:
                if self._state is _State.SHUT_DOWN:
                    raise RuntimeError("ProcessBackend is shut down; build a new one")
                pool = self._pool if self._pool is not None else self._new_pool_locked()
                # Counted before the item goes in, so the relay thread (which runs while
                # anything is unfinished) is there before the body can signal.
                self._unfinished += 1
                if call is not None:
                    self._calls[call_id] = call
                if self._relay_thread is None:
                    self._start_relay_thread_locked()
            try:
                future = pool.submit(
                    _run_in_child,
                    wrapped.token,
                    wrapped.body_bytes,
                    item_bytes,
                    op_id=op_id,
                    key=key,
                    call=call_id,
                )
            except BaseException as exc:
                with self._lock:
                    self._unfinished -= 1
                    shut_down = self._shut_down()
                if isinstance(exc, BrokenProcessPool):
                    # Broken before this item went in: none of it ran, so a fresh pool
                    # may take it.
                    self._replace(pool, exc, None)
                    continue
                if shut_down:
                    raise RuntimeError("ProcessBackend is shut down; build a new one") from exc
                raise
            with self._lock:
                self._submitted += 1
                if call is not None:
                    self._queued[op_id] = future
            future.add_done_callback(self._finished)
            return pool, future
        raise WorkerCrashError("the process pool broke twice in a row while taking an item")

    def _shut_down(self) -> bool:
        return self._state is _State.SHUT_DOWN

    def _new_pool_locked(self) -> ProcessPoolExecutor:
        if self._writer is None:
            self._reader, self._writer = self.mp_context.Pipe(duplex=False)
        self._pool = ProcessPoolExecutor(
            self.max_workers,
            mp_context=self.mp_context,
            initializer=_init_worker,
            initargs=(self._writer,),
        )
        self._state = _State.RUNNING
        return self._pool

    def _finished(self, _future: Future[bytes]) -> None:
        with self._lock:
            self._unfinished -= 1

    async def _await(self, future: Future[bytes], op: Operation | None) -> bytes:
        """Await the outcome; withdraw the item if `op` is cancelled before it starts."""
        waiter = asyncio.wrap_future(future)
        if op is not None:
            _CancelWatch(op, future, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                future.cancel()  # this task is being cancelled (its loop is closing)
                raise
            # The pool's future was cancelled: by a cancel request, or by shutdown().
            op_id = op.id if op is not None else 0
            if self._state is _State.SHUT_DOWN:
                raise RuntimeError(
                    f"ProcessBackend was shut down before a worker process started "
                    f"operation {op_id}"
                ) from None
            raise OperationCancelledError(
                f"operation {op_id} was cancelled before a worker process started it"
            ) from None

    def _replace(
        self, pool: ProcessPoolExecutor, error: BaseException, op: Operation | None
    ) -> None:
        """`pool` broke: the next item starts a fresh one (once per broken pool)."""
        with self._lock:
            if self._pool is not pool:
                return  # already replaced, or shut down
            self._pool = None
            self._retired.append(pool)
            self._pool_restarts += 1
        logger.warning(
            "ProcessBackend: a worker process died and broke the pool; the items in it "
            "failed with WorkerCrashError and the next item starts a fresh pool",
            extra={
                "coordinator": None,
                "operation_id": op.id if op is not None else None,
                "key": op.key if op is not None else None,
                "error_type": type(error).__name__,
                "event": "process.pool.replaced",
            },
        )
        pool.shutdown(wait=False)

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
    """A timer on the coordinator's loop: withdraws the item once `op` is cancelled.

    It checks `op.cancelled` every `_POLL_INTERVAL` until the item ends.
    `future.cancel()` is False once a process has the item, which then finishes (a
    body in a worker process is never interrupted).
    """

    __slots__ = ("future", "handle", "op")

    def __init__(self, op: Operation, future: Future[bytes], waiter: asyncio.Future[bytes]) -> None:
        self.op = op
        self.future = future
        self.handle = waiter.get_loop().call_later(_POLL_INTERVAL, self.check)
        waiter.add_done_callback(self.stop)

    def check(self) -> None:
        if self.op.cancelled:
            self.future.cancel()
        else:
            self.handle = asyncio.get_running_loop().call_later(_POLL_INTERVAL, self.check)

    def stop(self, _waiter: asyncio.Future[bytes]) -> None:
        self.handle.cancel()


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
