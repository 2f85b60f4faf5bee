"""`Operation`: the running item's handle, and `current_operation()`.

One `Operation` object is created per accepted item and doubles as the window's
record of it, so the dispatch path allocates one object per item, not three.
Everything a snapshot shows is metadata; the item itself is never stored here.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

from ephemeral_actors import _ids
from ephemeral_actors._errors import NoCurrentOperationError, OperationCancelledError
from ephemeral_actors._signals._event import check_signal_name

if TYPE_CHECKING:
    from collections.abc import Callable

    from ephemeral_actors._coordinators._supervisor import Core
    from ephemeral_actors._signals import SignalEvent, SignalPropagation

__all__ = ["Operation", "RunningCell", "current_operation", "running_operation"]


class RunningCell:
    """What a thread worker's context holds: the operation its body runs now, or None.

    A thread worker sets its context's variable to its cell once, then writes `op`
    around each body. Setting the variable itself for each item (a new context map,
    a token, and the reset) was a twentieth of a no-op item's instructions. Only the
    worker's own thread writes the cell.
    """

    __slots__ = ("op",)

    def __init__(self) -> None:
        self.op: Operation | None = None


_current: contextvars.ContextVar[Operation | RunningCell | None] = contextvars.ContextVar(
    "ephemeral_actors_current_operation", default=None
)
"""The running operation: an `Operation` in a coroutine body's task (and in remote
bodies' stand-ins), a `RunningCell` in a thread worker. Read it through
`running_operation()`."""


def running_operation() -> Operation | None:
    """The operation whose body runs in this context, or None."""
    value = _current.get()
    if value.__class__ is RunningCell:
        return value.op
    return value  # type: ignore[return-value]


def current_operation() -> Operation:
    """Return the `Operation` whose body is running in this context.

    Works in sync bodies (the worker thread's context) and in coroutine bodies
    (the task's context). In a sync body, a context copied from the body
    (`contextvars.copy_context()`) follows its worker: run after the body ended, it
    sees the worker's next operation or none. Pass the operation itself to code
    that outlives the body.

    Raises:
        NoCurrentOperationError: Called outside a body.
    """
    op = running_operation()
    if op is None:
        raise NoCurrentOperationError("current_operation() called outside a coordinator body")
    return op


class Operation:
    """The handle of one accepted item, seen from inside its body.

    Attributes:
        id: Positive 63-bit operation id (the value `enqueue` returned).
        key: `str(key)` in keyed coordinators, else `None`.
    """

    __slots__ = (
        "_aside_rank",
        "_attempts",
        "_cancel",
        "_core",
        "_ended",
        "_error",
        "_has_result",
        "_in_window",
        "_label",
        "_outcome",
        "_pinned",
        "_raw_key",
        "_reply",
        "_result",
        "_seq",
        "_signals",
        "_snapshot",
        "_started",
        "_timed_out",
        "id",
        "key",
    )

    _aside_rank: int
    """Its rank among records the window set aside (`_window`); set only for those."""

    def __init__(self, core: Core, key: str | None, raw_key: Any = None) -> None:
        # The id drawn here, not passed in: `next_operation_id` written out (its frame
        # was a thirtieth of an `enqueue`'s instructions). The module's iterator is read
        # at each draw, since a forked child replaces it.
        ids = _ids._ids
        self.id = next(ids) or next(ids)  # 0, once in 2**63 draws, is not an id
        self.key = key
        self._raw_key = raw_key
        self._core = core
        self._started = 0.0
        self._ended: float | None = None
        self._error: BaseException | None = None
        self._outcome = 0  # 0 pending/running, 1 completed, 2 failed, 3 cancelled
        self._cancel = False
        self._pinned = False
        self._in_window = 0  # 0 out, 1 listed, 2 set aside (`_window`)
        self._signals: tuple[SignalEvent, ...] | None = None
        self._reply: Any = None
        self._result: Any = None
        self._has_result = False
        self._snapshot: Any = None
        self._attempts = 1  # runs so far (retries, SPEC 16)
        self._timed_out = False  # this attempt passed its deadline (item_timeout)
        self._label: str | None = None
        self._seq = 0  # its rank in the coordinator's intake (1, 2, ...), set at admission

    def __repr__(self) -> str:
        state = ("running", "completed", "failed", "cancelled")[self._outcome]
        return f"<Operation id={self.id} key={self.key!r} {state}>"

    @property
    def cancelled(self) -> bool:
        """True once cancellation of this operation was requested."""
        return self._cancel

    def raise_if_cancelled(self) -> None:
        """Raise `OperationCancelledError` if cancellation was requested.

        A body that lets this propagate is counted as cancelled, not failed.
        """
        if self._cancel:
            raise OperationCancelledError(f"operation {self.id} was cancelled")

    def signal(self, name: str, *, defer_for: float | None = None) -> bool:
        """Emit the signal `name` from this operation.

        Args:
            name: The signal name.
            defer_for: Seconds (> 0): where `defer_on_signals` matches `name`, new work
                is deferred until now + `defer_for` (overriding `max_defer_attempts`)
                unless a resume signal ends it sooner. Added in 0.2.

        Returns:
            False if the coordinator's signal constraints blocked it, or if the
            coordinator is gone (closed, and freed), else True.
        """
        try:
            return self._core.emit_signal(self, name, None, defer_for)
        except ReferenceError:  # a closed coordinator's records refer to it weakly
            return False

    def emit_caused(self, name: str, cause: SignalPropagation | SignalEvent) -> bool:
        """Emit `name` as caused by `cause`, subject to `signal_constraints`.

        Args:
            name: The new signal's name.
            cause: A `SignalPropagation`, or a `SignalEvent` whose propagation is used.

        Returns:
            False if the constraints blocked the emission, or if the coordinator is
            gone (closed, and freed), else True.
        """
        try:
            return self._core.emit_signal(self, name, cause)
        except ReferenceError:
            return False

    def retract(self, name: str) -> bool:
        """Remove this operation's signals called `name`; True if any were removed."""
        check_signal_name("name", name)
        return self._retract(lambda s: s == name) > 0

    def retract_matching(self, pattern: str) -> int:
        """Remove this operation's signals matching `pattern`; return how many."""
        from ephemeral_actors._signals import matches  # noqa: PLC0415

        check_signal_name("pattern", pattern)
        return self._retract(lambda s: matches(s, pattern))

    def _retract(self, predicate: Callable[[str], bool]) -> int:
        # A running operation's signals belong to its body; the tuple is replaced whole,
        # so the supervisor (snapshots, marks) always reads a consistent one.
        signals = self._signals
        if not signals:
            return 0
        kept = tuple(e for e in signals if not predicate(e.signal))
        removed = len(signals) - len(kept)
        if removed:
            self._signals = kept
            self._snapshot = None
        return removed

    def has_signal(self, name: str) -> bool:
        """Return True if this operation emitted `name` (and did not retract it)."""
        signals = self._signals
        return signals is not None and any(e.signal == name for e in signals)

    def _cancel_pending(self) -> bool:
        """Take this operation back if it has not started: its future's canceller."""
        try:
            return self._core.cancel_pending(self)
        except ReferenceError:  # its coordinator is gone: it ended long ago
            return False

    def _finish(self, outcome: int, error: BaseException | None, now: float) -> None:
        self._ended = now
        self._outcome = outcome
        self._error = error
        self._snapshot = None
