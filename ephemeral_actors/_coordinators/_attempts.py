"""Attempts: deadlines and retries of running operations, owned by the supervisor (SPEC 16).

A coordinator built with `item_timeout` or `retry` has one `Attempts`; every method
runs in the supervisor's turn, and the supervisor calls it at three points only:
when it hands an item to a worker (`started`), when an attempt ends (`ended`, which
may turn a failure into a retry) and when a pending item is dropped (`forget`,
`forget_all`). Without either option the supervisor has none, and the dispatch path
pays one `is None` test.

**One timer.** Deadlines and retry backoffs share a single dispatcher timer armed at
the earliest due time (`Alarm`). Its callback only posts a message to the
supervisor, whose turn then expires deadlines, abandons bodies and re-queues items.
Nothing polls: between due times no thread wakes for this.

**Deadlines.** An attempt is due `item_timeout` seconds after dispatch. Because the
timeout is the same for every attempt, dispatch order is due order, so a dict in
insertion order is the queue (O(1) to add, to remove when the attempt ends, and to
find the earliest) and holds only running attempts. At its deadline an attempt is
asked to cancel (`op._cancel`; a coroutine body's task is cancelled) and marked
timed out, unless someone asked it to cancel before (that request decides how it
counts). A backend with a `kill(op_id)` hook (`ProcessBackend`) is first told to
stop the body at once: it kills the worker process running it (or withdraws an item
no process started), so a hung body does not hold a process for good, and the
attempt then ends with the backend's `OperationCancelledError`, which counts as the
timeout (or as the earlier cancel request). Only if the backend could not stop it
is the task cancelled, as for any coroutine body: a cancelled task would end the
attempt with a bare `CancelledError`, which says nothing of an earlier request. If
it is still running one more `item_timeout` later, its worker is
*abandoned*: it leaves the worker set (a new worker takes the slot at once), the
attempt fails with `OperationTimeoutError`, and whatever the body reports when it
finally returns is ignored; a plain body's thread then ends, a coroutine body's task
too. Abandoned workers are counted (`CoordinatorStats.abandoned_threads`) and are
not crashes.

**Retries.** A failed attempt is retried when the policy matches its error, attempts
remain, the coordinator still processes its backlog and nobody but a deadline asked
the attempt to cancel. The item then counts as pending again (`running` down,
`npending` up, counters otherwise untouched: the operation is counted once, when it
finally ends), leaves the window (a pending item has no record there; it returns with
its next attempt, whose dispatch time becomes its `started`) and waits in a heap
ordered by due time. When due it goes back to the *head* of the backlog: it was
accepted before anything still waiting there. `op._attempts` counts runs of the body:
it grows when the next attempt *starts* (`retrying` marks the operations whose next
start is a retry), so an item cancelled while it waits for a retry reports the runs
it made, not the one it never got.

Keyed coordinators: a retrying item **holds its key** while it waits. Its key
child still counts it as running, so no later item of the key overtakes it (SPEC 5:
items with equal keys start in enqueue order), and the child is not passivated; on
re-queue it goes back to the head of its key's mailbox. (Celery re-publishes a
retried task as a new message, so a per-key order there would break.)

Why the held item: a retry must hand the body the same item again, so the item of a
running attempt is kept here until the attempt ends (only with a `RetryPolicy`), as
the backlog keeps a pending one. It is dropped when the operation ends.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from ephemeral_actors._coordinators._workers import FAILED, RUNNING, timed_out
from ephemeral_actors._dispatch import Timer, call_later, give_back
from ephemeral_actors._mailbox import post_unless_gone
from ephemeral_actors._owned import checked_writes

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable

    from ephemeral_actors._coordinators._supervisor import Core
    from ephemeral_actors._coordinators._workers import WorkerBase
    from ephemeral_actors._operation import Operation
    from ephemeral_actors._retry import RetryPolicy

__all__ = ["Alarm", "Attempts"]

logger = logging.getLogger("ephemeral_actors")

Entry = tuple["Operation", Any]

_EARLY = 1e-3
"""A timer this much later than wanted is re-armed; closer ones are close enough."""


class Alarm:
    """The supervisor's one dispatcher timer, armed at the earliest due time wanted."""

    __slots__ = ("core", "handler", "timer", "uses_dispatcher")

    def __init__(self, core: Core, handler: Any) -> None:
        self.core = core
        self.handler = handler
        self.timer: Timer | None = None
        self.uses_dispatcher = False

    def want(self, due: float) -> None:
        """Make sure the alarm rings by `due` (a `time.monotonic()` value)."""
        timer = self.timer
        if timer is not None:
            if timer.deadline <= due + _EARLY:
                return
            timer.cancel()
        self.timer = call_later(self, max(0.0, due - time.monotonic()), self._ring)

    def _ring(self) -> None:
        """Timer callback (a dispatcher thread): timers are messages to the owner."""
        post_unless_gone(self.core, (self.handler, None))

    def close(self) -> list[threading.Thread]:
        """Stop the timer; dispatcher threads to join."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        # The handler is its owner's bound method, and the owner holds this alarm: a
        # cycle that would leave a closed coordinator to the garbage collector. A ring
        # that fired before the cancel finds its owner closed either way.
        self.handler = _closed
        return give_back(self)


def _closed(_: object) -> None:
    """What a closed alarm's late ring runs: nothing, as its closed owner would."""


@checked_writes(attrgetter("core"), "started", "ended", "forget", "forget_all", "on_alarm")
class Attempts:
    """Deadlines of running attempts and items waiting to be retried."""

    def __init__(self, core: Core, timeout: float | None, policy: RetryPolicy | None) -> None:
        self.core = core
        self.timeout = timeout
        self.policy = policy
        self.alarm = Alarm(core, self.on_alarm)
        # op id -> (due, op, worker); insertion order is due order (see module doc).
        self.deadlines: dict[int, tuple[float, Operation, WorkerBase]] = {}
        self.last_call: dict[int, tuple[float, Operation, WorkerBase]] = {}
        self.held: dict[int, Any] = {}
        self.retrying: dict[int, Operation] = {}
        """Re-queued operations by id: their next start is one more attempt."""
        self.waiting: dict[int, Entry] = {}
        self.due: list[tuple[float, int, int]] = []  # (due, seq, op id), a heap
        # Keyed coordinators: waiting items per raw key (they count as the key's pending).
        self.keyed = core.key_of is not None
        self.per_key: dict[Any, int] = {}
        self.seq = itertools.count()
        self.abandoned = 0
        self.closed = False
        # The backend's optional hook that stops a body at its deadline (SPEC 17).
        self.kill: Callable[[int], bool] | None = getattr(core.backend, "kill", None)

    def __repr__(self) -> str:
        return (
            f"<Attempts of {self.core.name!r} deadlines={len(self.deadlines)} "
            f"overdue={len(self.last_call)} waiting={len(self.waiting)} "
            f"abandoned={self.abandoned}>"
        )

    # -- the supervisor's hooks ----------------------------------------------------------

    def started(self, op: Operation, item: Any, worker: WorkerBase) -> None:
        """An attempt of `op` was handed to `worker`."""
        if self.policy is not None:
            self.held[op.id] = item
            if self.retrying and self.retrying.pop(op.id, None) is not None:
                op._attempts += 1
        timeout = self.timeout
        if timeout is not None:
            due = time.monotonic() + timeout
            self.deadlines[op.id] = (due, op, worker)
            # Usually a no-op: the timer is already armed at an earlier deadline (or a
            # retry due sooner). Only when it rings later, for a retry, is it re-armed.
            self.alarm.want(due)

    def ended(self, op: Operation, outcome: int, error: BaseException | None) -> bool:
        """An attempt of `op` ended; True if it will be retried (then it is pending again)."""
        op_id = op.id
        if self.deadlines:
            self.deadlines.pop(op_id, None)
        if self.last_call:
            self.last_call.pop(op_id, None)
        policy = self.policy
        if policy is None:
            return False
        item = self.held.pop(op_id, None)
        if self.retrying:
            self.retrying.pop(op_id, None)  # cancelled at dispatch: that attempt never ran
        core = self.core
        if (
            outcome != FAILED
            or error is None
            or op._attempts >= policy.attempts
            or not core.processing
            # Someone other than the deadline asked this attempt to cancel: no more runs.
            or (op._cancel and not op._timed_out)
            or not policy.should_retry(error)
        ):
            return False
        delay = policy.delay(op._attempts, error)
        core.running -= 1
        core.npending += 1
        if op._in_window:
            core.window.remove(op)
        self._retry_due(op)
        op._cancel = False
        op._timed_out = False
        op._snapshot = None
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "operation %d of coordinator %r failed with %s; attempt %d in %.3f s",
                op_id,
                core.name,
                type(error).__name__,
                op._attempts + 1,
                delay,
                extra={
                    "coordinator": core.name,
                    "operation_id": op_id,
                    "key": op.key,
                    "error_type": type(error).__name__,
                    "event": "operation.retrying",
                },
            )
        if delay <= 0:
            core.backlog.requeue(op, item)
            return True
        due = time.monotonic() + delay
        self.waiting[op_id] = (op, item)
        if self.keyed:
            self.per_key[op._raw_key] = self.per_key.get(op._raw_key, 0) + 1
        heapq.heappush(self.due, (due, next(self.seq), op_id))
        self.alarm.want(due)
        return True

    def _retry_due(self, op: Operation) -> None:
        retrying = self.retrying
        retrying[op.id] = op
        if len(retrying) > 2 * self.core.npending + 16:
            # A re-queued item cancelled by id in the backlog never starts again, and
            # nobody tells us: forget such operations once they outnumber the pending.
            self.retrying = {i: o for i, o in retrying.items() if o._outcome == RUNNING}

    def forget(self, op_id: int) -> Operation | None:
        """Take back an item waiting out its backoff (it is being cancelled); its op."""
        if self.retrying:
            self.retrying.pop(op_id, None)
        entry = self.waiting.pop(op_id, None)
        if entry is None:
            return None
        op = entry[0]
        self._left(op)
        # Its key slot was held for it (keyed coordinators): let the key go on.
        self.core.backlog.ended(op)
        self.core._dispatch()
        return op

    def forget_all(self) -> list[Entry]:
        """Take back every waiting item (cancel, fault)."""
        dropped = list(self.waiting.values())
        self.waiting.clear()
        self.retrying.clear()
        self.due.clear()
        self.per_key.clear()
        backlog = self.core.backlog
        for op, _item in dropped:
            backlog.ended(op)
        return dropped

    def key_waiting(self, raw_key: Any) -> int:
        """Items of `raw_key` waiting out a backoff (pending items of that key too)."""
        return self.per_key.get(raw_key, 0)

    def _left(self, op: Operation) -> None:
        if self.keyed:
            key = op._raw_key
            left = self.per_key[key] - 1
            if left:
                self.per_key[key] = left
            else:
                del self.per_key[key]

    # -- the alarm (in the supervisor's turn) ----------------------------------------------

    def on_alarm(self, _: object) -> None:
        """Expire deadlines, abandon overdue bodies, re-queue items whose backoff ended."""
        self.alarm.timer = None
        if self.closed:
            return
        now = time.monotonic()
        deadlines = self.deadlines
        while deadlines:
            op_id, (due, op, worker) = next(iter(deadlines.items()))
            if due > now:
                break
            del deadlines[op_id]
            self._expire(op, worker, due)
        last_call = self.last_call
        while last_call:
            op_id, (due, op, worker) = next(iter(last_call.items()))
            if due > now:
                break
            del last_call[op_id]
            self._abandon(op, worker)
        heap = self.due
        requeued = False
        while heap and heap[0][0] <= now:
            op_id = heapq.heappop(heap)[2]
            entry = self.waiting.pop(op_id, None)
            if entry is not None:  # else cancelled while it waited
                self._left(entry[0])
                self.core.backlog.requeue(*entry)
                requeued = True
        if requeued:
            self.core._dispatch()
        self._rearm()

    def _rearm(self) -> None:
        firsts = [next(iter(d.values()))[0] for d in (self.deadlines, self.last_call) if d]
        if self.due:
            firsts.append(self.due[0][0])
        if firsts:
            self.alarm.want(min(firsts))

    def _expire(self, op: Operation, worker: WorkerBase, due: float) -> None:
        """`op`'s attempt reached its deadline: ask it to cancel; abandon it later."""
        if op._outcome != RUNNING or worker.current is not op:
            return
        if not op._cancel:
            op._timed_out = True
        op._cancel = True
        stopped = False
        if self.kill is not None:
            try:
                stopped = self.kill(op.id)
            except Exception:
                logger.exception(f"coordinator {self.core.name!r}: the backend's kill() raised")
        if not stopped:
            worker.expire(op)
        assert self.timeout is not None
        self.last_call[op.id] = (due + self.timeout, op, worker)

    def _abandon(self, op: Operation, worker: WorkerBase) -> None:
        """`op`'s body outlived its deadline twice over: free its slot without it."""
        core = self.core
        if op._outcome != RUNNING or worker.current is not op or worker.retired:
            return
        worker.abandoned = True
        worker.retired = True
        core.retired_processed += worker.processed
        core.workers.remove(worker)
        if worker in core.idle:
            core.idle.remove(worker)
        worker.post(None)  # a thread ends once the body returns; a task ends by itself
        self.abandoned += 1
        logger.warning(
            "coordinator %r abandoned operation %d: its body did not return within "
            "twice item_timeout=%s s; its thread ends when it returns",
            core.name,
            op.id,
            self.timeout,
            extra={
                "coordinator": core.name,
                "operation_id": op.id,
                "key": op.key,
                "error_type": "OperationTimeoutError",
                "event": "operation.abandoned",
            },
        )
        core._finish(op, FAILED, timed_out(op))
        core._dispatch()

    def close(self, _: object = None) -> list[threading.Thread]:
        """Stop the timer (in the turn); dispatcher threads to join."""
        self.closed = True
        self.deadlines.clear()
        self.last_call.clear()
        self.held.clear()
        self.retrying.clear()
        return self.alarm.close()
