"""The operation window: records of recent operations, owned by the supervisor.

FIFO in start order. After every change, a size trim drops the oldest finished,
unpinned records while the window is larger than its bound, and an age trim drops
finished, unpinned records older than `max_operation_lifetime`. Running records are
never trimmed; `evict` removes any record. Only the supervisor's turn calls these
methods; snapshots it hands out are frozen records.
"""

from __future__ import annotations

import contextvars
import time
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ephemeral_actors._records import OperationSnapshot, ResultSnapshot

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ephemeral_actors._operation import Operation
    from ephemeral_actors._signals import SignalEvent

__all__ = ["CLOCK", "Window", "utc"]

CLOCK: contextvars.ContextVar[Callable[[], float]] = contextvars.ContextVar(
    "ephemeral_actors_clock", default=time.time
)
"""The wall clock a coordinator built in this context stamps its records with.

`ephemeral_actors.testing.use_clock()` sets it, so tests move time without sleeping
and without patching module globals: the clock is injected at construction.
"""

_RUNNING = 0
_NEVER = float("inf")
_AT_ONCE = float("-inf")


def utc(ts: float) -> datetime:
    """A timezone-aware UTC datetime for a `time.time()`-style timestamp."""
    return datetime.fromtimestamp(ts, UTC)


class Window:
    """Operation records by id, oldest start first.

    `order` holds the records in start order beside the `ops` index: trimming takes
    records off the front of a deque, where deleting the oldest keys of a dict would
    leave dead slots that every later scan from the front walks again.
    """

    __slots__ = ("bound", "expiry", "lifetime", "ops", "order")

    def __init__(self, bound: int, lifetime: float | None) -> None:
        self.ops: dict[int, Operation] = {}
        self.order: deque[Operation] = deque()
        self.bound = bound
        self.lifetime = lifetime
        self.expiry = _NEVER
        """The earliest time a trim can have work: when the oldest record reaches
        `lifetime` (never, without one or when empty), or at once (-inf) while running
        or pinned records hold the window over its bound. Before then `trim` has
        nothing to do, which a finishing operation's turn sees with one comparison."""

    def __len__(self) -> int:
        return len(self.ops)

    def __iter__(self) -> Iterator[Operation]:
        return iter(self.order)

    def add(self, op: Operation) -> None:
        """Record a started operation (trimming the oldest finished ones past the bound)."""
        op._in_window = True
        self.ops[op.id] = op
        order = self.order
        order.append(op)
        size = len(order)
        if size <= self.bound:
            if size == 1:
                self._set_expiry()
            return
        if size > self.bound + 1:  # running or pinned records held it over the bound
            self.trim(op._started)
            return
        oldest = order[0]
        if oldest._outcome == _RUNNING or oldest._pinned:
            self._make_room(op)
            return
        # trim() for the usual case of a full window whose oldest record has finished,
        # written out because it runs once per item (the call, trim's checks and
        # `_set_expiry`'s frame were a twentieth of a no-op item's instructions).
        order.popleft()
        del self.ops[oldest.id]
        oldest._in_window = False
        lifetime = self.lifetime
        if lifetime is not None:
            expiry = self.expiry = order[0]._started + lifetime
            if op._started >= expiry:
                self.trim(op._started)

    def _make_room(self, op: Operation) -> None:
        """`add` one past the bound when the oldest record is running or pinned."""
        order = self.order
        # Running records may lie ahead of the oldest finished one (a worker still
        # waiting for the GIL holds the oldest start while another finishes later ones).
        index = 0
        for old in order:
            if old._outcome != _RUNNING and not old._pinned:
                break
            index += 1
        else:
            self.expiry = _AT_ONCE  # every record is running or pinned: none may go yet
            return
        del order[index]
        del self.ops[old.id]
        old._in_window = False
        if self.lifetime is not None and op._started >= self.expiry:
            self.trim(op._started)

    def get(self, op_id: int) -> Operation | None:
        return self.ops.get(op_id)

    def evict(self, op_id: int) -> bool:
        """Drop a record now, even pinned or running; True if it was there."""
        op = self.ops.pop(op_id, None)
        if op is None:
            return False
        op._in_window = False
        self.order.remove(op)
        self._set_expiry()
        return True

    def _set_expiry(self) -> None:
        order = self.order
        lifetime = self.lifetime
        if len(order) > self.bound:
            self.expiry = _AT_ONCE
        elif order and lifetime is not None:
            self.expiry = order[0]._started + lifetime
        else:
            self.expiry = _NEVER

    def trim(self, now: float) -> None:
        """Apply the size and age bounds."""
        ops = self.ops
        excess = len(ops) - self.bound
        if excess <= 0 and now < self.expiry:
            return
        lifetime = self.lifetime
        cutoff = now - lifetime if lifetime is not None else None
        if excess <= 0 and (cutoff is None or not ops):
            return
        order = self.order
        # Running and pinned records stay where they are: a few of them at most (the
        # concurrency, and what the user pinned) lie ahead of the records that go.
        index = 0
        while index < len(order):
            head = order[index]
            if excess <= 0 and (cutoff is None or head._started >= cutoff):
                break
            if head._outcome == _RUNNING or head._pinned:
                index += 1
                continue
            del order[index]
            del ops[head.id]
            head._in_window = False
            excess -= 1
        self._set_expiry()

    def snapshot(self, now: float, with_results: bool) -> tuple[OperationSnapshot, ...]:
        """Every record as a frozen snapshot (age-trimmed first)."""
        if self.ops:
            self.trim(now)
        return tuple(snapshot_of(op, with_results) for op in self.order)

    def signals(
        self, now: float, predicate: Callable[[SignalEvent], bool] | None
    ) -> tuple[SignalEvent, ...]:
        """Signals of the records, in start order then emit order (age-trimmed first)."""
        if self.ops:
            self.trim(now)
        found: list[SignalEvent] = []
        for op in self.order:
            signals = op._signals
            if signals:
                found.extend(e for e in signals if predicate is None or predicate(e))
        return tuple(found)


def snapshot_of(op: Operation, with_results: bool) -> OperationSnapshot:
    """A frozen snapshot of one record; a finished record caches its snapshot."""
    cached = op._snapshot
    if cached is not None and (type(cached) is ResultSnapshot) == with_results:
        return cached  # type: ignore[no-any-return]
    started = utc(op._started)
    ended = op._ended
    signals = tuple(e.signal for e in op._signals) if op._signals else ()
    error = op._error
    fields = (
        op.id,
        started,
        None if ended is None else utc(ended),
        op.key,
        error is not None,
        error,
        None if ended is None else ended - op._started,
        signals,
        op._pinned,
    )
    snap: OperationSnapshot
    if with_results:
        snap = ResultSnapshot(
            *fields, op._result, op._has_result, attempts=op._attempts, label=op._label
        )
    else:
        snap = OperationSnapshot(*fields, attempts=op._attempts, label=op._label)
    if ended is not None:
        op._snapshot = snap
    return snap
