"""Worker actors: they run bodies, one item at a time, and report each outcome.

A worker's mailbox holds `(operation, item)` pairs. Only the supervisor posts to it
(in its turn), so a post needs no lock, and a worker is woken only on the
empty->non-empty edge. The worker that reports an outcome is idle again and, being
awake, is the first one the supervisor hands the next item to: a busy coordinator
wakes no thread.

A worker owns the operation it runs (its signals, its result) until it reports the
outcome; ownership then passes to the supervisor with the message.
"""

from __future__ import annotations

import asyncio
import threading
import types
from collections import deque
from typing import TYPE_CHECKING, Any, Final

from ephemeral_actors._errors import (
    OperationCancelledError,
    OperationTimeoutError,
    WorkerCrashError,
)
from ephemeral_actors._mailbox import Parking
from ephemeral_actors._operation import RunningCell, _current
from ephemeral_actors._runtime import SHARED_LOOP

if TYPE_CHECKING:
    from ephemeral_actors._coordinators._supervisor import Core
    from ephemeral_actors._operation import Operation

__all__ = [
    "CANCELLED",
    "COMPLETED",
    "FAILED",
    "RUNNING",
    "AsyncWorker",
    "InjectedWorkerCrash",
    "ThreadWorker",
    "WorkerBase",
    "failure",
]

RUNNING: Final = 0
COMPLETED: Final = 1
FAILED: Final = 2
CANCELLED: Final = 3


_ITEMS_BETWEEN_YIELDS: Final = 32
"""An async worker yields to its loop at least once per this many items, so bodies
that complete without suspending cannot starve the loop's other tasks."""

_RETURNED_A_COROUTINE: Final = (
    "the body returned a coroutine; declare it with 'async def' so the coordinator runs it "
    "on its event loop"
)


class InjectedWorkerCrash(BaseException):
    """Raised by `ephemeral_actors.testing.crash_worker()` inside a body."""


def failure(op: Operation, exc: BaseException) -> tuple[int, BaseException]:
    """How a body's exception counts: cancelled if it honoured a cancel request.

    Honouring the request of a deadline (`item_timeout`) is a failure, with
    `OperationTimeoutError`; a coroutine body honours it by letting the cancellation
    of its task propagate.
    """
    if op._cancel and isinstance(exc, OperationCancelledError | asyncio.CancelledError):
        if op._timed_out:
            return FAILED, timed_out(op)
        if isinstance(exc, OperationCancelledError):
            return CANCELLED, exc
        # Cancelled on request, and the deadline then interrupted the task: the request
        # is what ended it, so it counts as cancelled, with the library's own error.
        return CANCELLED, OperationCancelledError(f"operation {op.id} was cancelled")
    return FAILED, exc


def timed_out(op: Operation) -> OperationTimeoutError:
    """The error of an attempt of `op` that outlived its deadline."""
    timeout = op._core.options.item_timeout
    return OperationTimeoutError(
        f"operation {op.id} (attempt {op._attempts}) did not finish within item_timeout={timeout} s"
    )


class WorkerBase:
    """A worker actor: a mailbox of `(operation, item)` pairs and something that runs it.

    Only the supervisor posts to a worker (in its turn), so a post needs no lock;
    `current` is the operation it was last given, for cancel requests and for
    failing the item if the worker dies.
    """

    number = 0
    current: Operation | None = None
    processed = 0
    retired = False
    abandoned = False
    """Its body outlived its deadline: the slot went to another worker, and the late
    outcome it reports is ignored (set in the supervisor's turn). An abandoned worker
    is also `retired`, which the per-item report tests alone."""

    def expire(self, op: Operation) -> None:
        """`op`, which this worker runs, is past its deadline: interrupt it if possible."""

    def post(self, entry: tuple[Operation, Any] | None) -> None:
        raise NotImplementedError

    def depth(self) -> int:
        return 0

    def start(self) -> None:
        """Start the worker's thread, if it has one (once the supervisor records it)."""

    def join(self, timeout: float | None) -> bool:  # noqa: ARG002
        """Wait for the worker's thread; True if it is gone."""
        return True


class ThreadWorker(WorkerBase):
    """A worker actor for plain bodies: a thread that parks while its mailbox is empty."""

    def __init__(self, core: Core, number: int) -> None:
        self.core = core
        self.number = number
        self.current = None
        # Instance values, not the class defaults: CPython 3.11 specializes reads of an
        # instance's own attributes, and the supervisor reads these once per item.
        self.processed = 0
        self.retired = False
        self.abandoned = False
        self.inbox: deque[tuple[Operation, Any] | None] = deque()
        self.parking = Parking()
        self.thread = threading.Thread(
            target=self.run,
            name=f"ephemeral-actors-{core.name}-worker-{number}",
            daemon=True,
        )

    def start(self) -> None:
        self.thread.start()

    def __repr__(self) -> str:
        return f"<worker {self.core.name}#{self.number} queued={len(self.inbox)}>"

    def post(self, entry: tuple[Operation, Any] | None) -> None:
        self.inbox.append(entry)
        # Wake only on the edge: a worker that is running finds the entry itself (the
        # test is `Parking.wake`'s own, made here to save its frame when not parked).
        parking = self.parking
        if parking.parked:
            parking.wake()

    def depth(self) -> int:
        return len(self.inbox)

    def run(self) -> None:
        inbox = self.inbox
        core = self.core
        body = core.body
        capture = core.capture_results
        post = core.mailbox.post
        report_and_take = core.report_and_take
        wait_for = self.parking.wait_for
        # The context's variable holds this worker's cell from here on; each body
        # only writes the cell (see `RunningCell`).
        cell = RunningCell()
        _current.set(cell)
        coroutine = types.CoroutineType
        entry: tuple[Operation, Any] | None = None
        try:
            while True:
                if entry is None:
                    # Nothing handed over with the last report: the mailbox, as usual.
                    if not inbox:
                        wait_for(inbox)
                    entry = inbox.popleft()
                    if entry is None:
                        return
                op, item = entry
                entry = None
                # The body, with `op` current; inline, not a helper: this runs once per item.
                cell.op = op
                error: BaseException | None = None
                try:
                    result = body(item)
                    if type(result) is coroutine:
                        result.close()
                        raise TypeError(_RETURNED_A_COROUTINE)  # noqa: TRY301 - a body failure
                except InjectedWorkerCrash:
                    cell.op = None
                    crash = WorkerCrashError("worker crash injected by testing.crash_worker()")
                    post((core._on_worker_died, (self, crash)))
                    return
                except BaseException as exc:
                    outcome, error = failure(op, exc)
                else:
                    outcome = COMPLETED
                    if capture:
                        op._result = result
                        op._has_result = True
                cell.op = None
                # A parked worker must not keep its last item alive (no payload is kept),
                # nor the error whose traceback frames may hold it.
                item = result = None
                self.processed += 1
                entry = report_and_take(self, op, outcome, error)
                del op, error
        finally:
            # A body's frame holds its caller's, this one, and the frame outlives the
            # thread while anything keeps a traceback through the body (a failed
            # item's record or future): it must not keep the coordinator alive.
            del self, core, post, report_and_take

    def join(self, timeout: float | None) -> bool:
        thread = self.thread
        if thread is threading.current_thread() or thread.ident is None:
            return True  # never started: an interrupt stopped `start` before the thread
        thread.join(timeout)
        return not thread.is_alive()


class AsyncWorker(WorkerBase):
    """A worker actor for coroutine bodies: a task on the loop while it has mail."""

    def __init__(self, core: Core, number: int) -> None:
        self.core = core
        self.number = number
        self.current = None
        self.processed = 0
        self.retired = False
        self.abandoned = False
        self.inbox: deque[tuple[Operation, Any] | None] = deque()
        # Scheduled flag: a Lock used only as a test-and-set, taken once per burst of
        # mail (not per item, as a mailbox flag is, which is why that one is a deque).
        self.scheduled = threading.Lock()

        # Deadlines (item_timeout): the task running the body and the operation in it,
        # both touched only on the loop's thread.
        self.task: asyncio.Task[None] | None = None
        self.in_body: Operation | None = None
        self.interrupted: Operation | None = None

    def __repr__(self) -> str:
        return f"<async worker {self.core.name}#{self.number} queued={len(self.inbox)}>"

    def expire(self, op: Operation) -> None:
        # The supervisor's turn runs off the loop: the cancel is done by the loop itself.
        task = self.task
        if task is not None:
            task.get_loop().call_soon_threadsafe(self._interrupt, op)

    def _interrupt(self, op: Operation) -> None:
        # On the loop, between steps of the task: if it is still inside this operation's
        # body, it is suspended at an await there, and only that await sees the cancel.
        task = self.task
        if self.in_body is op and task is not None and self.interrupted is not op:
            self.interrupted = op
            task.cancel()

    def post(self, entry: tuple[Operation, Any] | None) -> None:
        if entry is None:
            return  # a task ends when its mailbox is empty; nothing to stop
        self.inbox.append(entry)
        if self.scheduled.acquire(False):
            binding = self.core.loop
            if binding is None:
                self.core.hold_shared_loop()
                SHARED_LOOP.spawn(self.run())
            elif not binding.spawn(self.run):
                # The caller's loop is closed: nothing can run this item any more. This
                # runs in the supervisor's turn, so the message is handled right after.
                self.scheduled.release()
                self.core.mailbox.post((self.core._on_loop_lost, self))

    def depth(self) -> int:
        return len(self.inbox)

    async def run(self) -> None:
        inbox = self.inbox
        core = self.core
        body = core.body
        post = core.mailbox.post
        report = core.report
        report_and_take = core.report_and_take
        capture = core.capture_results
        self.task = asyncio.current_task()
        entry: tuple[Operation, Any] | None = None
        budget = _ITEMS_BETWEEN_YIELDS
        try:
            while True:
                while entry is not None or inbox:
                    if entry is None:
                        entry = inbox.popleft()
                        assert entry is not None
                    op, item = entry
                    entry = None
                    _current.set(op)
                    error: BaseException | None
                    self.in_body = op
                    try:
                        budget -= 1
                        if not budget:
                            # A body that never suspends would keep this task, and so the
                            # loop, running for as long as items come: let the loop's other
                            # tasks (and this coordinator's other workers) run now and then.
                            budget = _ITEMS_BETWEEN_YIELDS
                            await asyncio.sleep(0)
                        result = await body(item)
                    except InjectedWorkerCrash:
                        _current.set(None)
                        crash = WorkerCrashError("worker crash injected by testing.crash_worker()")
                        self.scheduled.release()
                        post((core._on_worker_died, (self, crash)))
                        return
                    except asyncio.CancelledError as exc:
                        _current.set(None)
                        task = asyncio.current_task()
                        if self.interrupted is op:
                            # Our own deadline cancel (expire): the supervisor turns it into
                            # an OperationTimeoutError; the task is uncancelled below.
                            outcome, error = failure(op, exc)
                        elif task is not None and task.cancelling():
                            # Our own task is cancelled: its loop is closing (asyncio.run
                            # cancels the tasks it leaves). Cancel what is left, then this
                            # item; nothing more is started on a closing loop.
                            self.processed += 1
                            self.scheduled.release()
                            post((core._on_loop_lost, self))
                            closed = OperationCancelledError(
                                "the event loop running this operation closed"
                            )
                            report(self, op, CANCELLED, closed)
                            return
                        else:
                            outcome, error = CANCELLED, exc
                    except BaseException as exc:
                        outcome, error = failure(op, exc)
                    else:
                        outcome, error = COMPLETED, None
                        if capture:
                            op._result = result
                            op._has_result = True
                    finally:
                        self.in_body = None
                    if self.interrupted is not None:
                        # Our own deadline cancel: the task itself goes on to the next item.
                        self.interrupted = None
                        if self.task is not None:
                            self.task.uncancel()
                    _current.set(None)
                    self.processed += 1
                    # The next item, if the reporting turn could start one for this worker
                    # (as a thread worker takes it): no trip through the mailbox.
                    entry = report_and_take(self, op, outcome, error)
                    item = result = None
                self.scheduled.release()
                if not inbox or not self.scheduled.acquire(False):
                    return
        finally:
            # As a thread worker's frame (`ThreadWorker.run`): a kept traceback of a
            # body holds this frame, which must not keep the coordinator alive.
            del self, core, post, report, report_and_take
