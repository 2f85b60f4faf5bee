"""The backlog: accepted items not yet started, owned by the supervisor.

A coordinator kind differs from another in its backlog, not in hooks on the
supervisor: `FifoBacklog` starts items in arrival order; the keyed coordinator's
`KeyedBacklog` (in `_keyed.py`) keeps items in per-key child actors and gives global
slots to ready keys in turn. Only the supervisor's turn calls these methods.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import threading

    from ephemeral_actors._operation import Operation

__all__ = ["Backlog", "FifoBacklog"]

Entry = tuple["Operation", Any]


class Backlog(Protocol):
    """What the supervisor needs of a backlog."""

    fair_threshold: int
    """Per-key pending bound for `try_enqueue` (0: no fair scheduling)."""

    def push(self, op: Operation, item: Any) -> None:
        """Take an accepted item."""

    def pop(self) -> Entry | None:
        """The next item that may start now (None if none may)."""

    def take_all(self) -> list[Entry]:
        """Remove and return every waiting item (cancel, fault)."""

    def remove(self, op_id: int) -> Operation | None:
        """Remove one waiting item by operation id; its operation, or None."""

    def ended(self, op: Operation) -> None:
        """An operation that came from this backlog ended."""

    def requeue(self, op: Operation, item: Any) -> None:
        """Take back a started item to run again (a retry), ahead of every waiting one.

        The item left this backlog when it started and `ended` was not called for it
        (keyed backlogs: it still holds its key); it was accepted before anything
        waiting now, so it goes to the head.
        """

    def key_pending(self, raw_key: Any) -> int:
        """Items of `raw_key` waiting (0 without keys)."""

    def close(self) -> list[threading.Thread]:
        """Stop whatever the backlog runs (children, timers); threads to join."""


class FifoBacklog:
    """Items start in arrival order."""

    __slots__ = ("items",)

    fair_threshold = 0

    def __init__(self) -> None:
        self.items: deque[Entry] = deque()

    def push(self, op: Operation, item: Any) -> None:
        self.items.append((op, item))

    def pop(self) -> Entry | None:
        items = self.items
        return items.popleft() if items else None

    def take_all(self) -> list[Entry]:
        dropped = list(self.items)
        self.items.clear()
        return dropped

    def remove(self, op_id: int) -> Operation | None:
        items = self.items
        for index, entry in enumerate(items):
            if entry[0].id == op_id:
                del items[index]
                return entry[0]
        return None

    def ended(self, op: Operation) -> None:
        pass

    def requeue(self, op: Operation, item: Any) -> None:
        self.items.appendleft((op, item))

    def key_pending(self, raw_key: Any) -> int:  # noqa: ARG002
        return 0

    def close(self) -> list[threading.Thread]:
        return []
