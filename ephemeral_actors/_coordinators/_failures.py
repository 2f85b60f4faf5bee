"""Failure labels and the failure log (SPEC section 15, "Labels for failures").

A label is `str(describe(item))[:200]`, computed when the item is offered, in the
caller's thread (like the key selector): `describe` is user code and never runs in
the supervisor's turn. It lets a record say *which* item failed without keeping it.

The failure log keeps the most recent `max_tracked_failures` operations that ended
with an error (failures and cancellations), so that `get_failed()` still lists them
after the window's size trim dropped them: 2,000 items with 25 failures must not
show only the 5 still in a 200-record window. It is owned by the supervisor (only
its turn calls these methods), obeys the age bound and `evict`, and holds the same
`Operation` records as the window (metadata only, error tracebacks cleared).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final

from ephemeral_actors._owned import checked_writes, owner_slot

if TYPE_CHECKING:
    from ephemeral_actors._coordinators._supervisor import Core
    from ephemeral_actors._coordinators._window import Window
    from ephemeral_actors._operation import Operation

__all__ = ["LABEL_LIMIT", "FailureLog", "label_of"]

logger = logging.getLogger("ephemeral_actors")

LABEL_LIMIT: Final = 200
"""Characters of `describe(item)` kept as the label."""


def label_of(core: Core, item: Any) -> str | None:
    """`str(describe(item))[:200]`, or None when `describe` raises (logged, not raised).

    Called in the thread that offers the item, never in an actor's turn.
    """
    describe = core.describe
    if describe is None:
        return None
    try:
        return str(describe(item))[:LABEL_LIMIT]
    except Exception as exc:
        # The message may quote the item, so only the type is logged.
        logger.warning(
            "describe() of coordinator %r raised %s; the operation has no label",
            core.name,
            type(exc).__name__,
            extra={
                "coordinator": core.name,
                "operation_id": None,
                "key": None,
                "error_type": type(exc).__name__,
                "event": "describe.failed",
            },
        )
        return None


@checked_writes(owner_slot, "add", "evict", "trim")
class FailureLog:
    """The newest failed or cancelled operations, oldest end first (supervisor-owned)."""

    __slots__ = ("bound", "lifetime", "ops", "owner")

    def __init__(self, bound: int, lifetime: float | None) -> None:
        self.bound = bound
        self.lifetime = lifetime
        self.ops: OrderedDict[int, Operation] = OrderedDict()

    def __len__(self) -> int:
        return len(self.ops)

    def add(self, op: Operation) -> None:
        """Remember an operation that ended with an error; forget the oldest past the bound."""
        ops = self.ops
        ops[op.id] = op
        while len(ops) > self.bound:
            ops.popitem(last=False)

    def evict(self, op_id: int) -> bool:
        """Forget `op_id`; True if it was here."""
        return self.ops.pop(op_id, None) is not None

    def trim(self, now: float) -> None:
        """Drop records older (by start) than the window's age bound."""
        lifetime = self.lifetime
        if lifetime is None or not self.ops:
            return
        cutoff = now - lifetime
        for op_id in [i for i, op in self.ops.items() if op._started < cutoff]:
            del self.ops[op_id]

    def failed(self, window: Window, now: float) -> list[Operation]:
        """Every failed record of the window and the log, by start time (age-trimmed)."""
        self.trim(now)
        found = {op.id: op for op in window if op._error is not None}
        for op_id, op in self.ops.items():
            found.setdefault(op_id, op)
        # Intake order breaks ties: a coarse (or injected) clock gives equal start times.
        return sorted(found.values(), key=lambda op: (op._started, op._seq))
