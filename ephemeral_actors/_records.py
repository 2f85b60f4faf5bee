"""Frozen records that cross actor boundaries: snapshots and stats.

Pykka futures do not copy values, so everything a state query answers is
immutable: frozen slotted dataclasses holding tuples.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datetime as _dt

__all__ = [
    "ActorStats",
    "CoordinatorStats",
    "OperationSnapshot",
    "RateLimitStats",
    "ResultSnapshot",
]


@dataclass(frozen=True, slots=True)
class OperationSnapshot:
    """What is remembered about one operation: metadata only, never the item.

    Attributes:
        id: Positive 63-bit operation id.
        started: When the operation was dispatched (timezone-aware UTC).
        completed: When it ended, or `None` while it runs.
        key: `str(key)` for keyed coordinators, else `None`.
        is_faulted: True if it ended with an error (failure or cancellation).
        error: The exception it ended with (traceback cleared), or `None`.
        duration: `completed - started` in seconds, or `None` while running.
        signals: Names of the signals it emitted, in emit order.
        is_pinned: True if pinned against window trimming.
        attempts: Runs of its body so far, the first included (1 without retries).
            Keyword-only, so positional construction keeps its nine fields. Added in 0.2.
        label: `str(describe(item))[:200]` when `CoordinatorOptions.describe` is set
            (None otherwise, or when it raised): says which item this was without
            keeping it. Keyword-only, so positional construction is unchanged.
            Added in 0.2.0.
    """

    id: int
    started: _dt.datetime
    completed: _dt.datetime | None
    key: str | None
    is_faulted: bool
    error: BaseException | None
    duration: float | None
    signals: tuple[str, ...]
    is_pinned: bool
    # Keyword-only: dataclasses put it after every positional field, subclasses' too,
    # so `OperationSnapshot(*nine)` and `ResultSnapshot(*nine, result, has_result)` work.
    _: KW_ONLY
    attempts: int = 1
    label: str | None = None

    @property
    def is_running(self) -> bool:
        """True while the operation has not ended."""
        return self.completed is None

    def has_signal(self, name: str) -> bool:
        """Return True if the operation emitted a signal called `name`."""
        return name in self.signals


@dataclass(frozen=True, slots=True)
class ResultSnapshot(OperationSnapshot):
    """An `OperationSnapshot` of a `ResultCoordinator`, with the body's result.

    Attributes:
        result: The body's return value (`None` until it succeeded).
        has_result: True once the body returned successfully.
    """

    result: Any = None
    has_result: bool = False


@dataclass(frozen=True, slots=True)
class CoordinatorStats:
    """Every counter and state flag of a coordinator, read at one instant.

    `total_enqueued == pending_count + active_count + total_completed + total_failed
    + total_cancelled` holds for every instance.
    """

    name: str
    pending_count: int
    active_count: int
    total_enqueued: int
    total_completed: int
    total_failed: int
    total_cancelled: int
    max_concurrency: int
    tracked_operations: int
    signals_dropped: int
    worker_restarts: int
    is_completed: bool
    is_drained: bool
    is_paused: bool
    signals_emitted: int = 0
    """Signals the coordinator's operations emitted (blocked emissions excluded)."""
    is_deferred: bool = False
    """True while a defer signal holds new work back."""
    abandoned_threads: int = 0
    """Bodies abandoned past their deadline (`item_timeout`); each ends when it returns."""
    rate_limit: RateLimitStats | None = None
    """The rate limits and what they hold back (None without `rate_limit` or
    `rate_limit_per_key`). Added in 0.2.0."""

    @property
    def total_ended(self) -> int:
        """Operations that ended: completed + failed + cancelled."""
        return self.total_completed + self.total_failed + self.total_cancelled


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitStats:
    """A coordinator's rate limits and what they hold back, read at one instant (SPEC 16).

    `CoordinatorStats.rate_limit` holds one for a coordinator with `rate_limit` or
    (keyed) `rate_limit_per_key`. A limit *holds* an item back when that item could
    have started — a slot was free and it was next — but its bucket had no token.

    Attributes:
        rate_limit: Starts per second allowed for the whole coordinator (None: no
            such limit).
        rate_limit_per_key: Starts per second allowed per key (None: no such limit,
            or not a keyed coordinator).
        rate_burst: Tokens each bucket holds when full.
        tokens: Starts the coordinator-wide bucket would allow right now, 0 to
            `rate_burst` (None without `rate_limit`).
        waiting: Items in the backlog that the coordinator-wide limit holds back now:
            while a free slot waits for a token, every item waiting in the backlog
            (delayed items and retries waiting out a backoff excluded); else 0.
        holds: How many times the coordinator-wide limit has held dispatch back since
            construction: each wait of a free slot for a token counts once, however
            long it lasts (with a queue longer than `rate_burst`, about one per item
            started after the burst).
        throttled_keys: Keys whose next item waits for its key's token now.
        key_waiting: Items waiting in those keys.
        key_holds: How many times a key's next item was held back for its key's token
            since construction (once per wait).

    Added in version 0.2.0.
    """

    rate_limit: float | None
    rate_limit_per_key: float | None
    rate_burst: int
    tokens: int | None
    waiting: int
    holds: int
    throttled_keys: int
    key_waiting: int
    key_holds: int


@dataclass(frozen=True, slots=True)
class ActorStats:
    """One role of actors behind a coordinator or bus, read at one instant (SPEC 14).

    Attributes:
        role: `"supervisor"`, `"worker"`, `"key"`, `"callbacks"` or `"bus"`.
        actors: How many actors of this role are alive now (0 when none is).
        mailbox_depth: Messages waiting in their mailboxes now.
        messages_processed: Messages (not turns) handled since construction. An
            `enqueue_many` of an in-memory collection (a list, range, dict, ...) to a
            coordinator with plain bodies and no key, label or backend counts as one;
            any other `enqueue_many` counts one per item.
    """

    role: str
    actors: int
    mailbox_depth: int
    messages_processed: int
