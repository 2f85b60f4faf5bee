"""The backlog: accepted items not yet started, owned by the supervisor.

A coordinator kind differs from another in its backlog, not in hooks on the
supervisor: `FifoBacklog` starts items in arrival order; the keyed coordinator's
`KeyedBacklog` (in `_keyed.py`) keeps items in per-key child actors and gives global
slots to ready keys in turn. Only the supervisor's turn calls these methods.

Priorities (SPEC 16): lower numbers start first, equal ones in arrival order. A
backlog keeps its plain structure until it sees a non-zero priority, so a
coordinator that never uses them pays nothing for them.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from ephemeral_actors._mailbox import CHECK_OWNERSHIP
from ephemeral_actors._owned import checked_writes, owned_deque, owner_slot

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable

    from ephemeral_actors._coordinators._supervisor import Core
    from ephemeral_actors._operation import Operation

__all__ = ["Backlog", "FifoBacklog"]

Entry = tuple["Operation", Any]


class Backlog(Protocol):
    """What the supervisor needs of a backlog."""

    fair_threshold: int
    """Per-key pending bound for `try_enqueue` (0: no fair scheduling)."""

    tracks_ended: bool
    """Whether `ended` does anything: the per-item turn skips the call when not."""

    def push(self, op: Operation, item: Any, priority: int = 0) -> None:
        """Take an accepted item (lower `priority` starts first; equal ones FIFO)."""

    def append(self, entry: Entry, /) -> None:
        """`push` of an `(operation, item)` entry at priority 0 (the intake path)."""

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

    def has_ready(self) -> bool:
        """Whether an item waits that could start now, but for the global rate limit."""

    def rate_stats(self) -> tuple[int, int, int]:
        """Per-key rate limits: (keys waiting for a token, their items, holds so far)."""

    def refund(self, op: Operation) -> None:
        """`op` was taken but cancelled before it started: give back its per-key token."""

    def wake(self, now: float) -> None:
        """Keys whose per-key rate-limit token is due by `now` may ask for slots again."""

    def close(self) -> list[threading.Thread]:
        """Stop whatever the backlog runs (children, timers); threads to join."""

    def refer_back_weakly(self, core: Core) -> None:
        """The coordinator closed: hold `core` (a weak proxy now) instead of the core."""


@checked_writes(owner_slot, "push", "pop", "take_all", "remove", "requeue")
class FifoBacklog:
    """Items start in arrival order, or by priority once one is not 0.

    While every priority is 0, `items` (a deque) holds the backlog. The first
    non-zero priority moves it into `ranked`, a heap of (priority, sequence, entry);
    once that heap empties, the deque takes over again.
    """

    __slots__ = (
        "__weakref__",
        "append",
        "fair_threshold",
        "items",
        "owner",
        "ranked",
        "sequence",
        "tracks_ended",
    )

    def __init__(self) -> None:
        self.fair_threshold = 0
        self.tracks_ended = False  # a slot, not a class default: read once per item
        self.items: deque[Entry] = owned_deque(self, owner_slot) if CHECK_OWNERSHIP else deque()
        self.ranked: list[tuple[int, int, Entry]] | None = None
        self.sequence = itertools.count()
        # `append` is the deque's own (a C call per accepted item) while no priority
        # is in play; the heap's push while one is.
        self.append: Callable[[Entry], None] = self.items.append

    def _append_ranked(self, entry: Entry) -> None:
        assert self.ranked is not None
        heapq.heappush(self.ranked, (0, next(self.sequence), entry))

    def _unrank(self) -> None:
        self.ranked = None
        self.append = self.items.append

    def push(self, op: Operation, item: Any, priority: int = 0) -> None:
        if not priority and self.ranked is None:
            self.items.append((op, item))
            return
        ranked = self.ranked
        if ranked is None:
            # Items already waiting keep their order, ahead of later priority-0 items.
            sequence = self.sequence
            ranked = self.ranked = [(0, next(sequence), entry) for entry in self.items]
            self.items.clear()
            self.append = self._append_ranked
        heapq.heappush(ranked, (priority, next(self.sequence), (op, item)))

    def pop(self) -> Entry | None:
        items = self.items
        if items:
            return items.popleft()
        ranked = self.ranked
        if not ranked:
            return None
        entry = heapq.heappop(ranked)[2]
        if not ranked:
            self._unrank()
        return entry

    def take_all(self) -> list[Entry]:
        dropped = list(self.items)
        self.items.clear()
        if self.ranked is not None:
            dropped.extend(ranked[2] for ranked in sorted(self.ranked))
            self._unrank()
        return dropped

    def remove(self, op_id: int) -> Operation | None:
        items = self.items
        for index, entry in enumerate(items):
            if entry[0].id == op_id:
                del items[index]
                return entry[0]
        ranked = self.ranked
        if ranked is not None:
            for index, (_, _, entry) in enumerate(ranked):
                if entry[0].id == op_id:
                    ranked[index] = ranked[-1]
                    ranked.pop()
                    heapq.heapify(ranked)
                    if not ranked:
                        self._unrank()
                    return entry[0]
        return None

    def ended(self, op: Operation) -> None:
        pass

    def requeue(self, op: Operation, item: Any) -> None:
        self.items.appendleft((op, item))

    def key_pending(self, raw_key: Any) -> int:  # noqa: ARG002
        return 0

    def has_ready(self) -> bool:
        return bool(self.items or self.ranked)

    def rate_stats(self) -> tuple[int, int, int]:
        return (0, 0, 0)

    def refund(self, op: Operation) -> None:
        pass

    def wake(self, now: float) -> None:
        pass

    def close(self) -> list[threading.Thread]:
        return []

    def refer_back_weakly(self, core: Core) -> None:
        pass  # a FIFO backlog does not refer to its core
