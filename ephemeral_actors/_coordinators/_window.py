"""The operation window: records of recent operations, owned by the supervisor.

FIFO in start order. After every change, a size trim drops the oldest finished,
unpinned records while the window is larger than its bound, and an age trim drops
finished, unpinned records older than `max_operation_lifetime`. Running records are
never trimmed; `evict` removes any record. Only the supervisor's turn calls these
methods; snapshots it hands out are frozen records.
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import time
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from ephemeral_actors._mailbox import CHECK_OWNERSHIP
from ephemeral_actors._owned import checked_writes, owned_deque, owned_dict, owner_slot
from ephemeral_actors._records import OperationSnapshot, ResultSnapshot

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ephemeral_actors._operation import Operation
    from ephemeral_actors._signals import SignalEvent

__all__ = ["CLOCK", "LISTED", "SET_ASIDE", "Window", "utc"]

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

# `Operation._in_window`: out of the window (0, also False), in `order`, or set aside.
_OUT: Final = 0
LISTED: Final = 1
SET_ASIDE: Final = 2


def utc(ts: float) -> datetime:
    """A timezone-aware UTC datetime for a `time.time()`-style timestamp."""
    return datetime.fromtimestamp(ts, UTC)


@checked_writes(owner_slot, "add", "reconsider", "note_ended", "evict", "remove", "trim")
class Window:
    """Operation records by id, oldest start first (supervisor-owned).

    `order` holds the records in start order: trimming takes records off the front of
    a deque, where deleting the oldest keys of a dict would leave dead slots that
    every later scan from the front walks again. The id `index` exists once something
    looked a record up.

    A record that reaches the front still running (or pinned) when a trim needs room
    is set aside, in the order records come off the front: every set-aside record
    started before every record in `order`, so the window in start order is `aside`
    (by rank), then `order`. When one of them ends (or is unpinned), the supervisor
    says so (`reconsider`) and it joins `droppable`, a heap by rank, where a trim
    finds the oldest record that may go without scanning the running ones. Scanning
    past running records at the front instead cost a third of a worker's time per
    no-op item (a worker waiting for the GIL holds a record it has started), and a
    pass over every running record per ending item with a thousand coroutine bodies.
    """

    __slots__ = (
        "__weakref__",
        "aside",
        "bound",
        "droppable",
        "expiry",
        "index",
        "lifetime",
        "order",
        "owner",
        "ranks",
        "size",
    )

    def __init__(self, bound: int, lifetime: float | None) -> None:
        self.size = 0
        self.index: dict[int, Operation] | None = None
        """Records by id, built by the first lookup and kept from then on: most
        coordinators never look a record up, and a dict insert and delete per item
        were a tenth of a worker's time per no-op item."""
        # Checked containers only in ownership check mode (a call each would cost
        # every coordinator's construction, which is on the create + close path).
        self.order: deque[Operation] = owned_deque(self, owner_slot) if CHECK_OWNERSHIP else deque()
        self.aside: dict[int, Operation] = owned_dict(self, owner_slot) if CHECK_OWNERSHIP else {}
        """Set-aside records by rank (insertion order: start order). A dict, whose dead
        slots only queries walk: trims reach these records through `droppable`."""
        self.droppable: list[tuple[int, Operation]] = []
        """(rank, record) of set-aside records that ended unpinned, a heap; an entry
        whose record was pinned or dropped since is skipped when it comes up."""
        self.ranks = 0
        self.bound = bound
        self.lifetime = lifetime
        self.expiry = _NEVER
        """The earliest time a trim can have work: when the oldest record that may go
        reaches `lifetime` (never, without one or when empty), or at once (-inf) while
        running or pinned records hold the window over its bound. Before then `trim`
        has nothing to do, which a finishing operation's turn sees with one comparison."""

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[Operation]:
        if self.aside:
            return itertools.chain(self.aside.values(), self.order)
        return iter(self.order)

    def add(self, op: Operation) -> None:
        """Record a started operation (trimming the oldest finished ones past the bound)."""
        op._in_window = LISTED
        order = self.order
        order.append(op)
        if self.size == self.bound and not self.droppable:
            # The usual case, once per item: a full window whose oldest record has
            # finished. It goes, and the size stays. (Taken, and put back if it must
            # stay: a deque's `[0]` costs more than the pop.) Written out, not `trim()`:
            # the call, trim's checks and `_set_expiry`'s frame were a twentieth of a
            # no-op item's instructions.
            oldest = order.popleft()
            if oldest._outcome != _RUNNING and not oldest._pinned:
                oldest._in_window = _OUT
                index = self.index
                if index is not None:
                    del index[oldest.id]
                    index[op.id] = op
                lifetime = self.lifetime
                if lifetime is not None:
                    # Nothing set aside may go (`droppable` is empty): `order`'s oldest
                    # is next.
                    expiry = self.expiry = order[0]._started + lifetime
                    if op._started >= expiry:
                        self.trim(op._started)
                return
            order.appendleft(oldest)
        size = self.size = self.size + 1
        index = self.index
        if index is not None:
            index[op.id] = op
        if size <= self.bound:
            if len(order) == 1:
                self._set_expiry()  # the first record of `order`, which can age out
            return
        if size > self.bound + 1 or self.droppable:
            self.trim(op._started)  # held over the bound, or a set-aside record may go
            return
        self._make_room(op)  # one past the bound, and the oldest record is running or pinned

    def _make_room(self, op: Operation) -> None:
        """`add` one past the bound when the oldest record is running or pinned."""
        order = self.order
        while order:
            old = order.popleft()
            if old._outcome != _RUNNING and not old._pinned:
                self._drop(old)
                if self.lifetime is not None:
                    self._set_expiry()
                    if op._started >= self.expiry:
                        self.trim(op._started)
                return
            self._set_aside(old)
        self.expiry = _AT_ONCE  # every record is running or pinned: none may go yet

    def _set_aside(self, op: Operation) -> None:
        rank = self.ranks = self.ranks + 1
        op._in_window = SET_ASIDE
        op._aside_rank = rank
        self.aside[rank] = op

    def reconsider(self, now: float, op: Operation) -> None:
        """`op`'s record ended or was unpinned: trim, now that it may go.

        Only a set-aside record needs telling: nothing else looks at those.
        """
        if op._in_window == SET_ASIDE:
            self._may_drop(op)
            self._set_expiry()
        self.trim(now)

    def note_ended(self) -> None:
        """Any set-aside record may have ended (all at once): the next trim sees them."""
        for op in self.aside.values():
            self._may_drop(op)
        self._set_expiry()

    def _may_drop(self, op: Operation) -> None:
        if op._outcome != _RUNNING and not op._pinned:
            heapq.heappush(self.droppable, (op._aside_rank, op))

    def _drop(self, op: Operation) -> None:
        self.size -= 1
        if self.index is not None:
            del self.index[op.id]
        op._in_window = _OUT

    def get(self, op_id: int) -> Operation | None:
        index = self.index
        if index is None:
            index = self.index = {op.id: op for op in self}
        return index.get(op_id)

    def evict(self, op_id: int) -> bool:
        """Drop a record now, even pinned or running; True if it was there."""
        op = self.get(op_id)
        if op is None:
            return False
        self.remove(op)
        return True

    def remove(self, op: Operation) -> None:
        """Drop `op`'s record now, which is in the window (`evict` by the record)."""
        if op._in_window == SET_ASIDE:
            del self.aside[op._aside_rank]  # its `droppable` entry, if any, is skipped
        else:
            self.order.remove(op)
        self._drop(op)
        self._set_expiry()

    def _next_droppable(self) -> Operation | None:
        """The oldest set-aside record that may go, or None (stale entries dropped)."""
        droppable = self.droppable
        while droppable:
            op = droppable[0][1]
            # Only an ended record has an entry, and an ended record never runs again:
            # once out of the window (dropped, evicted) it is out for good.
            if op._in_window == SET_ASIDE and not op._pinned:
                return op
            heapq.heappop(droppable)  # dropped, evicted or pinned again since
        return None

    def _set_expiry(self) -> None:
        lifetime = self.lifetime
        if self.size > self.bound:
            self.expiry = _AT_ONCE
        elif lifetime is None:
            self.expiry = _NEVER
        else:
            # Set-aside records all started before `order`'s: one that may go is older.
            first = self._next_droppable()
            if first is None and self.order:
                first = self.order[0]
            self.expiry = _NEVER if first is None else first._started + lifetime

    def trim(self, now: float) -> None:
        """Apply the size and age bounds."""
        excess = self.size - self.bound
        if excess <= 0 and now < self.expiry:
            return
        lifetime = self.lifetime
        cutoff = now - lifetime if lifetime is not None else None
        if excess <= 0 and (cutoff is None or not self.size):
            return
        # The oldest records first: the set-aside ones that may go, by rank.
        droppable = self.droppable
        aside = self.aside
        while droppable:
            old = self._next_droppable()
            if old is None or (excess <= 0 and (cutoff is None or old._started >= cutoff)):
                break
            heapq.heappop(droppable)
            del aside[old._aside_rank]
            self._drop(old)
            excess -= 1
        order = self.order
        while order:
            head = order[0]
            if excess <= 0 and (cutoff is None or head._started >= cutoff):
                break
            order.popleft()
            if head._outcome == _RUNNING or head._pinned:
                self._set_aside(head)  # behind the older set-aside records
                continue
            self._drop(head)
            excess -= 1
        self._set_expiry()

    def snapshot(self, now: float, with_results: bool) -> tuple[OperationSnapshot, ...]:
        """Every record as a frozen snapshot (age-trimmed first)."""
        if self.size:
            self.trim(now)
        return tuple(snapshot_of(op, with_results) for op in self)

    def signals(
        self, now: float, predicate: Callable[[SignalEvent], bool] | None
    ) -> tuple[SignalEvent, ...]:
        """Signals of the records, in start order then emit order (age-trimmed first)."""
        if self.size:
            self.trim(now)
        found: list[SignalEvent] = []
        for op in self:
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
