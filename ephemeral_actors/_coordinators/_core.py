"""The coordinator's state and its actors: supervisor, workers, and the dispatch path.

Message flow (see docs/concepts.md for the picture):

* **Intake.** `enqueue` appends `(operation, item)` to the backlog under the core
  lock and, if a worker slot is free and no worker is on its way, wakes an idle
  worker actor with a `_Go` message (or starts one, up to `max_concurrency`).
* **Work pulling.** A woken worker takes the next item under the lock, runs the
  body with no lock held, then — in one lock hold — records the outcome and takes
  the next item. A busy coordinator therefore costs one lock hold per item and no
  message at all; messages flow only when workers go idle or wake. This is the
  actor "work pulling" pattern with the pull done in shared memory, which is what
  lets a tracked coordinator keep up with an untracked thread pool.
* **Supervisor.** The supervisor actor owns the workers (starts them, replaces
  dead ones and records their in-flight item as failed), delivers `on_sample`
  callbacks one at a time, answers state queries and control messages, and
  releases every waiter with `CoordinatorFaultedError` if it dies itself.

The lock guards everything in `Core`; nothing slow (bodies, user callbacks,
thread starts excepted) runs while it is held.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import queue
import threading
import time
import types
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, cast

import pykka

from ephemeral_actors import messages as m
from ephemeral_actors._coordinators._future import OutcomeFuture
from ephemeral_actors._errors import (
    CoordinatorClosedError,
    CoordinatorFaultedError,
    CoordinatorFullError,
    DynamicConcurrencyDisabledError,
    OperationCancelledError,
    SignalCancelledError,
    WorkerCrashError,
)
from ephemeral_actors._exc import copy_error as _copy_error
from ephemeral_actors._exc import detach as _detach
from ephemeral_actors._ids import next_operation_id
from ephemeral_actors._operation import Operation, _current
from ephemeral_actors._records import CoordinatorStats, OperationSnapshot, ResultSnapshot
from ephemeral_actors._runtime import SHARED_LOOP
from ephemeral_actors._validate import check_int

if TYPE_CHECKING:
    from collections.abc import Callable

    from ephemeral_actors._options import CoordinatorOptions
    from ephemeral_actors._signals import SignalEvent, SignalPropagation

__all__ = ["BLOCK", "FORCE", "TRY", "CoordinatorState", "Core", "WorkerCrashError"]

logger = logging.getLogger("ephemeral_actors")

BLOCK: Final = 0
FORCE: Final = 1
TRY: Final = 2
NOWAIT: Final = 3

_now = time.time
"""Wall clock for operation timestamps; tests replace it to move time without sleeping."""

_RUNNING: Final = 0
_COMPLETED: Final = 1
_FAILED: Final = 2
_CANCELLED: Final = 3


class CoordinatorState(enum.Enum):
    """Lifecycle of a coordinator; transitions only move down this list."""

    RUNNING = "running"
    """Accepting and processing work."""
    COMPLETING = "completing"
    """Intake closed by `complete()`; the backlog is still processed."""
    CANCELLED = "cancelled"
    """Intake closed, backlog dropped, running operations asked to cancel."""
    FAULTED = "faulted"
    """The supervisor actor died; waiters were released with `CoordinatorFaultedError`."""
    CLOSED = "closed"
    """All actors and threads stopped; queries answer the final state."""


_ORDER = {s: i for i, s in enumerate(CoordinatorState)}
_PROCESSING = frozenset({CoordinatorState.RUNNING, CoordinatorState.COMPLETING})


class _InjectedWorkerCrash(BaseException):
    """Raised by `ephemeral_actors.testing.crash_worker()` inside a body."""


# -- private messages --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Go:
    """Wake an idle worker: pull work until there is none."""


@dataclass(frozen=True, slots=True)
class _Sample:
    """An operation ended; call `on_sample` and settle it."""


@dataclass(frozen=True, slots=True)
class _WorkerDied:
    worker: _WorkerBase
    error: BaseException


_GO = _Go()
_SAMPLE = _Sample()


class _ReplyAwareInbox(queue.Queue[Any]):
    """A mailbox that remembers the envelope being handled.

    Pykka stops an actor whose `tell` handler raises. The supervisor must survive
    bad `tell`s from user actors, so it needs to know whether anyone waits for the
    answer; the envelope's `reply_to` says so.
    """

    current: Any = None

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        envelope = super().get(block, timeout)
        self.current = envelope
        return envelope


# -- replies (submit futures) ---------------------------------------------------------


class _AsyncReply:
    """Resolves an asyncio future on its own loop from any thread."""

    __slots__ = ("fut", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any]) -> None:
        self.loop = loop
        self.fut = fut


def _set_future(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


def _resolve(reply: Any, ok: bool, value: Any) -> None:
    if isinstance(reply, _AsyncReply):
        # A closed loop raises RuntimeError: its caller is gone and nobody is left to tell.
        with contextlib.suppress(RuntimeError):
            reply.loop.call_soon_threadsafe(_set_future, reply.fut, ok, value)
    elif ok:
        reply.set(value)
    else:
        reply.set_exception((type(value), value, value.__traceback__))


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


# -- workers -------------------------------------------------------------------------


class _WorkerBase:
    """What the core needs of a worker, whatever it runs on."""

    current: Operation | None = None

    def wake(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Ask the worker to stop once it has nothing running."""

    def join(self, timeout: float | None) -> bool:  # noqa: ARG002
        """Wait for the worker's thread; True if it is gone."""
        return True


class WorkerActor(pykka.ThreadingActor):
    """A worker actor for sync bodies: one thread that pulls items from the core."""

    use_daemon_thread = True

    def __init__(self, handle: _ThreadWorker) -> None:
        super().__init__()
        self.handle = handle

    def __repr__(self) -> str:
        return f"<WorkerActor {self.handle.core.name}#{self.handle.number}>"

    def _start_actor_loop(self) -> None:
        handle = self.handle
        handle.thread = threading.Thread(
            target=self._actor_loop,
            name=f"ephemeral-actors-{handle.core.name}-worker-{handle.number}",
            daemon=True,
        )
        handle.thread.start()

    def on_receive(self, message: Any) -> Any:
        if message is _GO:
            self.handle.core.run_sync_worker(self.handle)
            return None
        return super().on_receive(message)

    def on_failure(self, *exc_info: Any) -> None:
        error = exc_info[1] if exc_info[1] is not None else RuntimeError("worker died")
        self.handle.core.report_worker_death(self.handle, error)


class _ThreadWorker(_WorkerBase):
    """The core's handle on one `WorkerActor`."""

    def __init__(self, core: Core, number: int) -> None:
        self.core = core
        self.number = number
        self.current: Operation | None = None
        self.thread: threading.Thread | None = None
        self.ref = WorkerActor.start(self)

    def wake(self) -> None:
        self.ref.tell(_GO)

    def stop(self) -> None:
        if self.ref.is_alive():
            with contextlib.suppress(pykka.ActorDeadError):
                self.ref.stop(block=False)

    def join(self, timeout: float | None) -> bool:
        thread = self.thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()


class _AsyncWorker(_WorkerBase):
    """A worker for coroutine bodies: a task on the shared loop, no thread of its own."""

    def __init__(self, core: Core, number: int) -> None:
        self.core = core
        self.number = number
        self.current: Operation | None = None

    def wake(self) -> None:
        SHARED_LOOP.spawn(self.core.run_async_worker(self))


# -- the supervisor actor -------------------------------------------------------------


class Supervisor(pykka.ThreadingActor):
    """The coordinator's supervisor actor: control, queries, sampling, supervision.

    Other actors talk to it with the messages of `ephemeral_actors.messages`, or
    through a proxy (`coordinator.proxy()`), whose methods mirror those messages.
    A `tell` (or a proxy's `.defer()`) the coordinator rejects is logged, never
    raised: raising would stop the supervisor.
    """

    use_daemon_thread = True

    def __init__(self, core: Core) -> None:
        super().__init__()
        self._core = core

    @staticmethod
    def _create_actor_inbox() -> Any:
        return _ReplyAwareInbox()

    def _start_actor_loop(self) -> None:
        self._core.supervisor_thread = thread = threading.Thread(
            target=self._actor_loop,
            name=f"ephemeral-actors-{self._core.name}-supervisor",
            daemon=True,
        )
        thread.start()

    def __repr__(self) -> str:
        return f"<Supervisor {self._core.name}>"

    def on_receive(self, message: Any) -> Any:
        core = self._core
        if message is _SAMPLE:
            core.deliver_sample()
            return None
        if type(message) is _WorkerDied:
            core.replace_worker(message.worker, message.error)
            return None
        if core.handle_private(message):
            return None
        return self._apply(message)

    def _apply(self, message: Any) -> Any:
        core = self._core
        envelope = cast("_ReplyAwareInbox", self.actor_inbox).current
        if envelope is not None and envelope.reply_to is not None:
            return core.handle(message, from_actor=True)
        # A tell has nobody to raise to, and raising would stop the supervisor.
        try:
            core.handle(message, from_actor=True)
        except Exception:
            logger.exception(f"coordinator {core.name!r} rejected {type(message).__name__}")
        return None

    # Proxy surface: one method per public message.

    def enqueue(self, item: Any) -> int:
        """Accept `item` (past the backlog bound: an actor cannot wait); its op id."""
        return cast("int", self._apply(m.Enqueue(item)))

    def submit(self, item: Any) -> pykka.Future[Any]:
        """Accept `item`; a future of its outcome."""
        return cast("pykka.Future[Any]", self._apply(m.Submit(item)))

    def stats(self) -> CoordinatorStats:
        """Every counter, read at one instant."""
        return cast("CoordinatorStats", self._apply(m.GetStats()))

    def get_snapshot(self) -> tuple[OperationSnapshot, ...]:
        """The operation window, oldest first."""
        return cast("tuple[OperationSnapshot, ...]", self._apply(m.GetSnapshot()))

    def pause(self) -> None:
        """Stop starting new operations."""
        self._apply(m.Pause())

    def resume(self) -> None:
        """Start operations again."""
        self._apply(m.Resume())

    def complete(self) -> None:
        """Close intake; the backlog is still processed."""
        self._apply(m.Complete())

    def cancel(self) -> None:
        """Close intake, drop the backlog, ask running operations to cancel."""
        self._apply(m.Cancel())

    def set_max_concurrency(self, limit: int) -> None:
        """Change the global concurrency limit."""
        self._apply(m.SetMaxConcurrency(limit))

    def pin(self, op_id: int) -> bool:
        """Protect an operation from window trims; True if found."""
        return bool(self._apply(m.Pin(op_id)))

    def unpin(self, op_id: int) -> bool:
        """Let an operation be trimmed again; True if found."""
        return bool(self._apply(m.Unpin(op_id)))

    def evict(self, op_id: int) -> bool:
        """Drop an operation from the window now; True if found."""
        return bool(self._apply(m.Evict(op_id)))

    def on_failure(self, *exc_info: Any) -> None:
        self._core.fault(exc_info[1])

    def on_stop(self) -> None:
        if not self._core.closing:
            self._core.fault(None)


# -- the core --------------------------------------------------------------------------


class Core:
    """State shared by a coordinator's facade, supervisor and workers."""

    def __init__(
        self,
        body: Callable[[Any], Any],
        options: CoordinatorOptions,
        *,
        kind: str,
        capture_results: bool = False,
    ) -> None:
        if not callable(body):
            raise TypeError(f"body must be callable, got {type(body).__name__} {body!r}")
        self.options = options
        self.kind = kind
        self.name = options.name or f"{kind}-{next_operation_id() & 0xFFFFFF:06x}"
        self.is_async = _is_coroutine_function(body)
        self.backend = options.backend
        if self.backend is not None and type(self.backend).__name__ != "InProcessBackend":
            # A backend turns the body into a plain callable that runs it elsewhere and
            # blocks its worker thread until the outcome is back.
            body = self.backend.wrap(body, is_async=self.is_async)
            self.is_async = _is_coroutine_function(body)
        self.body = body
        self.capture_results = capture_results
        self.bound = options.max_tracked_operations
        self.lifetime = options.max_operation_lifetime
        self.on_sample = options.on_sample

        self.lock = threading.Lock()
        self.space = threading.Condition(self.lock)
        self.settled_cv = threading.Condition(self.lock)
        self.state = CoordinatorState.RUNNING
        self.processing = True  # state in _PROCESSING, kept as a bool for the hot path
        self.closing = False
        self.fault_error: CoordinatorFaultedError | None = None

        self.pending: deque[tuple[Operation, Any]] = deque()
        self.npending = 0
        self.window: dict[int, Operation] = {}
        self.running = 0
        self.limit = options.max_concurrency
        self.paused = False
        self.deferring = False
        self.enqueued = 0
        self.completed = 0
        self.failed = 0
        self.cancelled = 0
        self.unsettled = 0
        self.signals_dropped = 0
        self.signals_emitted = 0
        self.worker_restarts = 0

        self.workers: list[_WorkerBase] = []
        self.idle: list[_WorkerBase] = []
        self.waking = 0
        self.worker_numbers = 0
        self.space_waiters = 0
        self.settle_waiters = 0
        self.async_space: list[_AsyncReply] = []
        self.async_settled: list[_AsyncReply] = []
        self.samples = 0

        self.source_open = False
        self.source_error: BaseException | None = None
        self.feeder: threading.Thread | None = None
        self.loop_refs = 0

        if self.is_async:
            self.uses_shared_loop()
        from ephemeral_actors._coordinators._signaling import SignalRouter  # noqa: PLC0415

        self.router = SignalRouter(self, options)
        self.supervisor_thread: threading.Thread | None = None
        self.supervisor_ref: pykka.ActorRef[Supervisor] = Supervisor.start(self)

    def start(self) -> None:
        """Finish construction: things that may call back into a fully built core."""
        self.router.start()

    def _set_state_locked(self, new: CoordinatorState) -> None:
        """Move to `new`; states only move forward (FAULTED may still be CLOSED)."""
        if _ORDER[new] < _ORDER[self.state]:
            raise AssertionError(f"coordinator {self.name!r}: {self.state.value} -> {new.value}")
        self.state = new
        self.processing = new in _PROCESSING

    def uses_shared_loop(self) -> None:
        """Hold a reference on the shared event loop until `close()`."""
        SHARED_LOOP.acquire()
        self.loop_refs += 1

    def source_finished(self) -> None:
        """The `from_iterable` source ended (or raised): intake is complete."""
        with self.lock:
            self.source_open = False
            if self.state is CoordinatorState.RUNNING:
                self._set_state_locked(CoordinatorState.COMPLETING)
            self._intake_closed_locked()

    # -- reading state -----------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"<{self.kind} {self.name!r} {self.state.value} pending={self.npending} "
            f"active={self.running} completed={self.completed} failed={self.failed} "
            f"cancelled={self.cancelled} limit={self.limit}>"
        )

    def is_drained_locked(self) -> bool:
        return (
            self.state is not CoordinatorState.RUNNING
            and not self.source_open
            and not self.npending
            and self.running == 0
        )

    def stats(self) -> CoordinatorStats:
        with self.lock:
            return CoordinatorStats(
                name=self.name,
                pending_count=self.npending,
                active_count=self.running,
                total_enqueued=self.enqueued,
                total_completed=self.completed,
                total_failed=self.failed,
                total_cancelled=self.cancelled,
                max_concurrency=self.limit,
                tracked_operations=len(self.window),
                signals_dropped=self.signals_dropped,
                signals_emitted=self.signals_emitted,
                worker_restarts=self.worker_restarts,
                is_completed=self.state is not CoordinatorState.RUNNING,
                is_drained=self.is_drained_locked(),
                is_paused=self.paused,
                is_deferred=self.deferring,
            )

    def closed_error_locked(self) -> Exception:
        if self.fault_error is not None:
            return self.fault_error
        return CoordinatorClosedError(
            f"coordinator {self.name!r} is {self.state.value} and accepts no more items"
        )

    # -- intake ------------------------------------------------------------------------

    key_of: Callable[[Any], Any] | None = None
    """Keyed coordinators set this to their key selector."""

    def accept(self, item: Any, reply: Any, timeout: float | None, mode: int) -> Operation | None:
        """Accept `item` (the hot path of `enqueue`).

        `mode` is `BLOCK` (wait for backlog space, up to `timeout`), `FORCE` (accept past
        the bound: actor messages, whose sender cannot wait), `TRY` (answer None
        instead of waiting or raising; fair scheduling applies) or `NOWAIT` (like
        `BLOCK`, but answer None instead of waiting: the asyncio path waits itself).
        """
        key = raw_key = None
        keyer = self.key_of
        if keyer is not None:
            try:
                raw_key = keyer(item)  # a raising selector means the item is not accepted
            except Exception:
                if mode == TRY:
                    return None
                raise
            key = str(raw_key)
        with self.lock:
            if self.state is not CoordinatorState.RUNNING:
                if mode == TRY:
                    return None
                raise self.closed_error_locked()
            if (
                mode == TRY
                and self.fair_threshold
                and (self.key_pending_locked(raw_key) >= self.fair_threshold)
            ):
                return None
            if self.npending >= self.bound:
                if mode in (TRY, NOWAIT):
                    return None
                if mode == BLOCK:
                    self._wait_for_space_locked(timeout)
            op = Operation(self, next_operation_id(), key, raw_key)
            op._reply = reply
            self._push_locked(op, item)
            self.enqueued += 1
            self.unsettled += 1
            if self.running + self.waking < self.limit and self.waking < self._ready_locked():
                self._dispatch_locked()
            return op

    def _wait_for_space_locked(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        self.space_waiters += 1
        try:
            while self.npending >= self.bound:
                if self.state is not CoordinatorState.RUNNING:
                    raise self.closed_error_locked()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise CoordinatorFullError(
                        f"coordinator {self.name!r} backlog stayed full "
                        f"({self.bound} pending) for {timeout} s"
                    )
                self.space.wait(remaining)
            if self.state is not CoordinatorState.RUNNING:
                raise self.closed_error_locked()
        finally:
            self.space_waiters -= 1

    async def accept_async(self, item: Any, reply: Any) -> Operation:
        loop = asyncio.get_running_loop()
        while True:
            with self.lock:
                if self.state is not CoordinatorState.RUNNING:
                    raise self.closed_error_locked()
                if self.npending < self.bound:
                    waiter = None
                else:
                    waiter = _AsyncReply(loop, loop.create_future())
                    self.async_space.append(waiter)
            if waiter is None:
                op = self.accept(item, reply, None, NOWAIT)
                if op is not None:
                    return op
                continue  # another producer took the space between the check and now
            await waiter.fut

    def _space_freed_locked(self) -> None:
        if self.space_waiters:
            self.space.notify()
        if self.async_space:
            waiters, self.async_space = self.async_space, []
            for waiter in waiters:
                _resolve(waiter, True, None)

    # -- dispatch ----------------------------------------------------------------------

    def dispatch_locked(self) -> None:
        """Wake (or start) workers for every item that may start now."""
        self._dispatch_locked()

    def request_cancel_running_locked(self) -> None:
        """Ask every running operation to cancel (cooperatively)."""
        for worker in self.workers:
            if worker.current is not None:
                worker.current._cancel = True

    def _cancel_present_locked(self) -> bool:
        return bool(self.router.cancel_marks) and (
            self.router.cancelling_signal_locked() is not None
        )

    def _dispatch_locked(self) -> None:
        if self.paused or not self.processing:
            return
        if self.deferring and not self._cancel_present_locked():
            return
        while self.running + self.waking < self.limit and self.waking < self._ready_locked():
            worker = self.idle.pop() if self.idle else self._new_worker_locked()
            self.waking += 1
            worker.wake()

    def _new_worker_locked(self) -> _WorkerBase:
        self.worker_numbers += 1
        worker: _WorkerBase
        if self.is_async:
            worker = _AsyncWorker(self, self.worker_numbers)
        else:
            worker = _ThreadWorker(self, self.worker_numbers)
        self.workers.append(worker)
        return worker

    # The backlog: a FIFO here; KeyedCore keeps per-key queues and a ready queue.

    fair_threshold = 0
    """Keyed coordinators with fair scheduling: per-key pending bound for `try_enqueue`."""

    def key_pending_locked(self, raw_key: Any) -> int:  # noqa: ARG002
        return 0

    def _push_locked(self, op: Operation, item: Any) -> None:
        self.pending.append((op, item))
        self.npending += 1

    def _ready_locked(self) -> int:
        """How many items could start now if slots were free."""
        return self.npending

    def _pop_locked(self) -> tuple[Operation, Any] | None:
        if self.npending:
            self.npending -= 1
            return self.pending.popleft()
        return None

    def _take_all_locked(self) -> list[tuple[Operation, Any]]:
        dropped = list(self.pending)
        self.pending.clear()
        self.npending = 0
        return dropped

    def _op_ended_locked(self, op: Operation) -> None:
        """Bookkeeping after an operation ended (per-key state in KeyedCore)."""

    def _take_locked(self, worker: _WorkerBase) -> tuple[Operation, Any] | None:
        while self.running < self.limit and not self.paused and self.processing:
            # The life of an item: pause wait, cancel check, then defer wait. While a
            # deferral holds, items are still taken if a cancel signal is present, so
            # they are cancelled now rather than when the deferral ends.
            if self.deferring and not self._cancel_present_locked():
                break
            entry = self._pop_locked()
            if entry is None:
                break
            op = entry[0]
            op._started = _now()
            op._in_window = True
            window = self.window
            window[op.id] = op
            self.running += 1
            if len(window) > self.bound:
                self._trim_locked(op._started)
            if self.space_waiters or self.async_space:
                self._space_freed_locked()
            if self.router.cancel_marks:
                signal = self.router.cancelling_signal_locked()
                if signal is not None:
                    self._finish_locked(op, _CANCELLED, SignalCancelledError(signal))
                    op._ended = op._started
                    continue
            if self.running + self.waking < self.limit and self.waking < self._ready_locked():
                # Keyed work can make more items ready than were woken for.
                self._dispatch_locked()
            # Under the lock, so cancel() cannot miss an item taken but not yet begun.
            worker.current = op
            return entry
        self.idle.append(worker)
        return None

    def _finish_locked(
        self, op: Operation, outcome: int, error: BaseException | None, *, settle: bool = True
    ) -> None:
        """Record how `op` ended; with `settle=False` the caller calls `_ended_locked` later.

        Observers run between the two, so `drain()` returns only after they saw it.
        """
        reply = op._reply
        if error is None:
            op._finish(outcome, None, _now())
        elif reply is None:
            op._finish(outcome, _detach(error), _now())
        else:
            # The caller's future gets the original with its traceback; the window keeps
            # a traceback-free twin, so no frame (and no payload) is retained by us. An
            # exception that cannot be copied is shared, without its traceback.
            twin = _copy_error(error)
            op._finish(outcome, _detach(twin) if twin is error else twin, _now())
        self.running -= 1
        self._op_ended_locked(op)
        if outcome == _COMPLETED:
            self.completed += 1
        elif outcome == _FAILED:
            self.failed += 1
            if logger.isEnabledFor(logging.WARNING):
                self._log_failure(op)
        else:
            self.cancelled += 1
        if op._in_window:
            self._trim_locked(op._ended or 0.0)
        if reply is not None:
            op._reply = None
            if outcome == _COMPLETED:
                _resolve(reply, True, op._result if self.capture_results else None)
            else:
                assert error is not None
                _resolve(reply, False, error)
        if settle:
            self._ended_locked()

    def _log_failure(self, op: Operation) -> None:
        # The exception's message may quote the item, so only its type is logged; the
        # snapshot holds the exception itself.
        error_type = type(op._error).__name__
        logger.warning(
            "operation %d of coordinator %r failed with %s",
            op.id,
            self.name,
            error_type,
            extra={
                "coordinator": self.name,
                "operation_id": op.id,
                "key": op.key,
                "error_type": error_type,
                "event": "operation.failed",
            },
        )

    def _ended_locked(self) -> None:
        if self.on_sample is not None:
            self.samples += 1
            try:
                self.supervisor_ref.tell(_SAMPLE)
            except pykka.ActorDeadError:
                self.samples -= 1
                self._settle_locked(1)
        else:
            self._settle_locked(1)

    def _settle_locked(self, count: int) -> None:
        self.unsettled -= count
        if (self.settle_waiters or self.async_settled) and (
            self.unsettled == 0 or self.running == 0
        ):
            self._wake_settle_locked()

    def _wake_settle_locked(self) -> None:
        if self.settle_waiters:
            self.settled_cv.notify_all()
        if self.async_settled:
            waiters, self.async_settled = self.async_settled, []
            for waiter in waiters:
                _resolve(waiter, True, None)

    def _run_one(self, op: Operation, item: Any) -> tuple[int, BaseException | None]:
        """Run a sync body with `op` current; returns (outcome, error)."""
        token = _current.set(op)
        try:
            result = self.body(item)
            if type(result) is types.CoroutineType:
                result.close()
                raise TypeError(  # noqa: TRY301 - recorded like any body failure
                    "the body returned a coroutine; declare it with 'async def' so the "
                    "coordinator runs it on its event loop"
                )
        except _InjectedWorkerCrash:
            raise WorkerCrashError("worker crash injected by testing.crash_worker()") from None
        except BaseException as exc:
            return self._failure(op, exc)
        finally:
            _current.reset(token)
        if self.capture_results:
            op._result = result
            op._has_result = True
        return _COMPLETED, None

    @staticmethod
    def _failure(op: Operation, exc: BaseException) -> tuple[int, BaseException]:
        if op._cancel and isinstance(exc, OperationCancelledError):
            return _CANCELLED, exc
        return _FAILED, exc

    def run_sync_worker(self, worker: _ThreadWorker) -> None:
        """The pull loop of a thread worker, run when it receives `_Go`."""
        lock = self.lock
        with lock:
            self.waking -= 1
            entry = self._take_locked(worker)
        while entry is not None:
            op, item = entry
            outcome, error = self._run_one(op, item)
            worker.current = None
            observed = bool(self.observers)
            with lock:
                self._finish_locked(op, outcome, error, settle=not observed)
                entry = self._take_locked(worker)
            if observed:
                self._notify_observers(op)

    async def run_async_worker(self, worker: _AsyncWorker) -> None:
        """The pull loop of a coroutine worker: a task on the shared loop."""
        lock = self.lock
        body = self.body
        with lock:
            self.waking -= 1
            entry = self._take_locked(worker)
        while entry is not None:
            op, item = entry
            _current.set(op)
            result = None
            error: BaseException | None
            try:
                result = await body(item)
            except _InjectedWorkerCrash:
                self.report_worker_death(
                    worker, WorkerCrashError("worker crash injected by testing.crash_worker()")
                )
                return
            except BaseException as exc:
                outcome, error = self._failure(op, exc)
            else:
                outcome, error = _COMPLETED, None
                if self.capture_results:
                    op._result = result
                    op._has_result = True
            worker.current = None
            _current.set(None)
            observed = bool(self.observers)
            with lock:
                self._finish_locked(op, outcome, error, settle=not observed)
                entry = self._take_locked(worker)
            if observed:
                self._notify_observers(op)

    observers: tuple[Callable[[OperationSnapshot], None], ...] = ()

    def add_observer(self, callback: Callable[[OperationSnapshot], None]) -> None:
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        with self.lock:
            self.observers = (*self.observers, callback)

    def remove_observer(self, callback: Callable[[OperationSnapshot], None]) -> bool:
        with self.lock:
            kept = tuple(o for o in self.observers if o is not callback)
            removed = len(kept) != len(self.observers)
            self.observers = kept
            return removed

    def _notify_observers(self, op: Operation) -> None:
        """Tell observers an operation ended (no lock held), then settle it."""
        snapshot = self._snapshot_of(op, with_results=False)
        for observer in self.observers:
            try:
                observer(snapshot)
            except BaseException:
                logger.exception(f"observer of coordinator {self.name!r} raised")
        with self.lock:
            self._ended_locked()

    # -- window ------------------------------------------------------------------------

    def _trim_locked(self, now: float) -> None:
        window = self.window
        excess = len(window) - self.bound
        lifetime = self.lifetime
        cutoff = now - lifetime if lifetime is not None else None
        if excess <= 0 and (cutoff is None or not window):
            return
        victims: list[int] = []
        for op_id, op in window.items():
            old = cutoff is not None and op._started < cutoff
            if excess <= 0 and not old:
                break
            if op._outcome != _RUNNING and not op._pinned:
                victims.append(op_id)
                excess -= 1
        for op_id in victims:
            window.pop(op_id)._in_window = False

    def snapshot_locked(self, *, with_results: bool) -> tuple[OperationSnapshot, ...]:
        if self.window:
            self._trim_locked(_now())
        return tuple(
            self._snapshot_of(op, with_results=with_results) for op in self.window.values()
        )

    def _snapshot_of(self, op: Operation, *, with_results: bool) -> OperationSnapshot:
        cached = op._snapshot
        if cached is not None and (type(cached) is ResultSnapshot) == with_results:
            return cached  # type: ignore[no-any-return]
        started = _utc(op._started)
        ended = op._ended
        signals = tuple(e.signal for e in op._signals) if op._signals else ()
        error = op._error
        fields = (
            op.id,
            started,
            None if ended is None else _utc(ended),
            op.key,
            error is not None,
            error,
            None if ended is None else ended - op._started,
            signals,
            op._pinned,
        )
        snap: OperationSnapshot
        if with_results:
            snap = ResultSnapshot(*fields, op._result, op._has_result)
        else:
            snap = OperationSnapshot(*fields)
        if ended is not None:
            op._snapshot = snap
        return snap

    # -- control (the supervisor's message handlers) ------------------------------------

    def handle_private(self, message: Any) -> bool:  # noqa: ARG002
        """Handle a message only this core kind knows; True if it was one."""
        return False

    def handle(self, message: Any, *, from_actor: bool = False) -> Any:
        """Apply one public message; the facade and the supervisor both call this."""
        handler = _HANDLERS.get(type(message))
        if handler is None:
            raise TypeError(
                f"coordinator {self.name!r} does not understand {type(message).__name__!r}; "
                "see ephemeral_actors.messages"
            )
        return handler(self, message, from_actor)

    def pause(self) -> None:
        with self.lock:
            self.paused = True

    def resume(self) -> None:
        with self.lock:
            self.paused = False
            self._dispatch_locked()

    def set_max_concurrency(self, limit: int) -> None:
        if not self.options.enable_dynamic_concurrency:
            raise DynamicConcurrencyDisabledError(
                f"coordinator {self.name!r} was built without enable_dynamic_concurrency=True"
            )
        check_int("max_concurrency", limit, minimum=1)
        with self.lock:
            self.limit = limit
            self._dispatch_locked()

    def complete(self) -> None:
        with self.lock:
            if self.state is CoordinatorState.RUNNING:
                self._set_state_locked(CoordinatorState.COMPLETING)
                self._intake_closed_locked()

    def cancel(self) -> None:
        with self.lock:
            if _ORDER[self.state] >= _ORDER[CoordinatorState.CANCELLED]:
                return
            self._set_state_locked(CoordinatorState.CANCELLED)
            self._drop_backlog_locked(
                lambda: OperationCancelledError(f"coordinator {self.name!r} was cancelled")
            )
            self.request_cancel_running_locked()
            self._intake_closed_locked()

    def _drop_backlog_locked(self, make_error: Callable[[], BaseException]) -> None:
        dropped = self._take_all_locked()
        for op, _item in dropped:
            op._outcome = _CANCELLED
            if op._reply is not None:
                _resolve(op._reply, False, make_error())
                op._reply = None
        self.cancelled += len(dropped)
        if dropped:
            self._settle_locked(len(dropped))

    def _intake_closed_locked(self) -> None:
        self.space.notify_all()
        if self.async_space:
            waiters, self.async_space = self.async_space, []
            for waiter in waiters:
                _resolve(waiter, True, None)
        self._wake_settle_locked()

    def set_pinned(self, op_id: int, pinned: bool) -> bool:
        check_int("op_id", op_id, minimum=1)
        with self.lock:
            op = self.window.get(op_id)
            if op is None:
                return False
            op._pinned = pinned
            op._snapshot = None
            if not pinned:
                self._trim_locked(_now())
            return True

    def evict(self, op_id: int) -> bool:
        check_int("op_id", op_id, minimum=1)
        with self.lock:
            op = self.window.pop(op_id, None)
            if op is None:
                return False
            op._in_window = False
            return True

    # -- draining and closing ----------------------------------------------------------

    def settled_locked(self) -> bool:
        return self.is_drained_locked() and self.unsettled == 0

    def wait_settled(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            self.settle_waiters += 1
            try:
                while not self.settled_locked():
                    if self.fault_error is not None:
                        raise self.fault_error
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError(
                            f"coordinator {self.name!r} did not drain within {timeout} s "
                            f"({self.npending} pending, {self.running} active)"
                        )
                    self.settled_cv.wait(remaining)
            finally:
                self.settle_waiters -= 1

    async def wait_settled_async(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with self.lock:
                if self.fault_error is not None:
                    raise self.fault_error
                if self.settled_locked():
                    return
                waiter = _AsyncReply(loop, loop.create_future())
                self.async_settled.append(waiter)
            await waiter.fut

    def wait_idle(self, deadline: float | None, own: int) -> bool:
        """Wait until at most `own` operations run (the caller's own); True if reached."""
        with self.lock:
            self.settle_waiters += 1
            try:
                while self.running > own:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self.settled_cv.wait(remaining)
                return True
            finally:
                self.settle_waiters -= 1

    # -- supervision -------------------------------------------------------------------

    def deliver_sample(self) -> None:
        """Call `on_sample` with the window (on the supervisor thread), then settle."""
        callback = self.on_sample
        with self.lock:
            self.samples -= 1
            window = self.snapshot_locked(with_results=False)
        try:
            if callback is not None:
                callback(window)
        except BaseException:
            logger.exception(f"on_sample of coordinator {self.name!r} raised")
        with self.lock:
            self._settle_locked(1)

    def report_worker_death(self, worker: _WorkerBase, error: BaseException) -> None:
        try:
            self.supervisor_ref.tell(_WorkerDied(worker, error))
        except pykka.ActorDeadError:
            self.replace_worker(worker, error)

    def replace_worker(self, actor_or_worker: _WorkerBase, error: BaseException) -> None:
        """Forget a dead worker, fail its in-flight item, and start work again."""
        op = getattr(actor_or_worker, "current", None)
        logger.error(
            "coordinator %r: worker died (%s); replacing it",
            self.name,
            type(error).__name__,
            extra={
                "coordinator": self.name,
                "operation_id": op.id if op is not None else None,
                "key": op.key if op is not None else None,
                "error_type": type(error).__name__,
                "event": "worker.restarted",
            },
        )
        with self.lock:
            worker = actor_or_worker
            if worker not in self.workers:
                return
            self.workers.remove(worker)
            if worker in self.idle:
                self.idle.remove(worker)
            op = worker.current
            failed = op is not None and op._outcome == _RUNNING
            observed = failed and bool(self.observers)
            if failed:
                assert op is not None
                self._finish_locked(op, _FAILED, _detach(error), settle=not observed)
            self.worker_restarts += 1
            self._dispatch_locked()
        if observed:
            assert op is not None
            self._notify_observers(op)

    def fault(self, error: BaseException | None) -> None:
        """The supervisor died: release every waiter with `CoordinatorFaultedError`."""
        cause = f": {error!r}" if error is not None else ""
        fault = CoordinatorFaultedError(f"supervisor of coordinator {self.name!r} died{cause}")
        logger.error(
            "coordinator %r faulted: its supervisor actor died%s",
            self.name,
            f" ({type(error).__name__})" if error is not None else "",
            extra={
                "coordinator": self.name,
                "operation_id": None,
                "key": None,
                "error_type": type(error).__name__ if error is not None else None,
                "event": "supervisor.faulted",
            },
        )
        with self.lock:
            if self.state is CoordinatorState.CLOSED or self.fault_error is not None:
                return
            self.fault_error = fault
            self._set_state_locked(CoordinatorState.FAULTED)
            self._drop_backlog_locked(lambda: CoordinatorFaultedError(str(fault)))
            # Samples still queued for the dead supervisor will never be delivered.
            if self.samples:
                self._settle_locked(self.samples)
                self.samples = 0
            self.on_sample = None
            self._intake_closed_locked()

    def close(self, timeout: float | None) -> bool:
        """Stop everything; False if another call already closed (or is closing)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            if self.closing:
                return False
            self.closing = True
        try:
            self._close(deadline)
        finally:
            # Whatever failed on the way, the shared runtime references are returned
            # and the state says closed, so nothing leaks and queries keep answering.
            with self.lock:
                if self.state is not CoordinatorState.CLOSED:
                    self._set_state_locked(CoordinatorState.CLOSED)
            self._release_runtime(deadline)
        return True

    def _release_runtime(self, deadline: float | None) -> None:
        """Return this coordinator's references on the process-wide runtime (once)."""
        for _ in range(self.loop_refs):
            loop_thread = SHARED_LOOP.release(deadline)
            if loop_thread is not None and loop_thread is not threading.current_thread():
                loop_thread.join(_remaining(deadline))
        self.loop_refs = 0

    def _close(self, deadline: float | None) -> None:
        self.cancel()
        own = 1 if (op := _current.get()) is not None and op._core is self else 0
        if not self.wait_idle(deadline, own):
            logger.warning(
                f"coordinator {self.name!r}: close() abandoned {self.running - own} running "
                "operation(s) that did not return in time; their threads end when they return"
            )
        with self.lock:
            workers = list(self.workers)
        for worker in workers:
            worker.stop()
        sup_thread = self.supervisor_thread
        if self.supervisor_ref.is_alive():
            self.supervisor_ref.stop(block=False)
        for worker in workers:
            worker.join(_remaining(deadline))
        if sup_thread is not None and sup_thread is not threading.current_thread():
            sup_thread.join(_remaining(deadline))
        feeder = self.feeder
        if feeder is not None and feeder is not threading.current_thread():
            feeder.join(_remaining(deadline))
            if feeder.is_alive():
                logger.warning(
                    f"coordinator {self.name!r}: close() abandoned its source, which did not "
                    "yield in time"
                )
        release = getattr(self.body, "close", None) if self.backend is not None else None
        if callable(release):
            # A backend's wrapped body may hold remote resources (e.g. Ray actors).
            try:
                release()
            except Exception:
                logger.exception(f"coordinator {self.name!r}: closing its backend failed")
        for ending in self.router.close(deadline):
            ending.join(_remaining(deadline))

    # -- signals (filled in by the signals layer) --------------------------------------

    def emit_signal(
        self, op: Operation, name: str, cause: SignalPropagation | SignalEvent | None
    ) -> bool:
        return self.router.emit(op, name, cause)

    def signals_locked(
        self, predicate: Callable[[SignalEvent], bool] | None = None
    ) -> tuple[SignalEvent, ...]:
        from ephemeral_actors._coordinators._signaling import signals_in_window  # noqa: PLC0415

        if self.window:
            self._trim_locked(_now())
        return signals_in_window(self.window.values(), predicate)

    def retract_signals(self, op: Operation, predicate: Callable[[str], bool]) -> int:
        with self.lock:
            signals = op._signals
            if not signals:
                return 0
            kept = [e for e in signals if not predicate(e.signal)]
            removed = len(signals) - len(kept)
            op._signals = kept
            op._snapshot = None
            return removed


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _is_coroutine_function(fn: Any) -> bool:
    import inspect  # noqa: PLC0415

    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def _handle_enqueue(core: Core, msg: m.Enqueue, from_actor: bool) -> int:
    op = core.accept(msg.item, None, None, FORCE if from_actor else BLOCK)
    assert op is not None
    return op.id


def _handle_submit(core: Core, msg: m.Submit, from_actor: bool) -> pykka.Future[Any]:
    future: pykka.Future[Any] = OutcomeFuture()
    core.accept(msg.item, future, None, FORCE if from_actor else BLOCK)
    return future


def _handle_stats(core: Core, _msg: m.GetStats, _from_actor: bool) -> CoordinatorStats:
    return core.stats()


def _handle_snapshot(
    core: Core, _msg: m.GetSnapshot, _from_actor: bool
) -> tuple[OperationSnapshot, ...]:
    with core.lock:
        return core.snapshot_locked(with_results=core.capture_results)


_HANDLERS: dict[type, Callable[[Core, Any, bool], Any]] = {
    m.Enqueue: _handle_enqueue,
    m.Submit: _handle_submit,
    m.GetStats: _handle_stats,
    m.GetSnapshot: _handle_snapshot,
    m.Pause: lambda core, _msg, _a: core.pause(),
    m.Resume: lambda core, _msg, _a: core.resume(),
    m.Complete: lambda core, _msg, _a: core.complete(),
    m.Cancel: lambda core, _msg, _a: core.cancel(),
    m.SetMaxConcurrency: lambda core, msg, _a: core.set_max_concurrency(msg.limit),
    m.Pin: lambda core, msg, _a: core.set_pinned(msg.op_id, True),
    m.Unpin: lambda core, msg, _a: core.set_pinned(msg.op_id, False),
    m.Evict: lambda core, msg, _a: core.evict(msg.op_id),
}
