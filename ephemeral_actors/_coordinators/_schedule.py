"""When accepted items may start: delays, the coordinator-wide rate limit, one timer.

The supervisor owns a `Schedule` when it needs one: from construction if a rate
limit is configured, else from the first item enqueued with a `delay`. A plain
coordinator never builds it, so its dispatch path is unchanged.

* **Delays.** An item enqueued with `delay` counts as pending at once, but waits in
  `delayed` (a heap by due time) instead of the backlog. When it is due it joins the
  backlog with its priority, where it is ordered like an item accepted at that
  moment: by priority, then by the time it became due.
* **Rate limit.** `pop()` is the dispatch path's source of items while a schedule
  exists. With `rate_limit`, it takes an item from the backlog only when the
  coordinator's token bucket has a token, so a held-back item waits in the backlog,
  never in a worker slot. Per-key buckets live with each key's child (`_keyed.py`):
  a key without a token stays out of the ready queue, so it blocks no other key.
* **What the limits hold back** (`rate_stats()`, answered in the supervisor's turn
  for `CoordinatorStats.rate_limit`): dispatch is *held* when it has a free slot and
  an item to start but no token. `pop()` counts each such wait once (`holds`: the
  first refusal sets `holding`, the next start or a dropped backlog clears it); the
  keyed backlog counts per-key holds. Gauges (tokens, waiting items, throttled keys)
  are computed when asked, so the dispatch path pays a flag test per refusal and a
  store per start.
* **One timer.** All of this needs a single dispatcher timer, re-armed to the
  earliest time anything is due (the next delayed item, the next global token, the
  next token of a throttled key). Its callback only posts a message to the
  supervisor, whose turn releases what is due and dispatches: nothing polls. Every
  dispatch also releases due items, so the timer is a wake-up, never the only way
  in.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
from collections import Counter
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from ephemeral_actors._coordinators._limits import TokenBucket
from ephemeral_actors._coordinators._requests import Intake, Scheduled
from ephemeral_actors._dispatch import call_later, give_back
from ephemeral_actors._mailbox import post_unless_gone
from ephemeral_actors._owned import checked_writes, claim
from ephemeral_actors._records import RateLimitStats
from ephemeral_actors._validate import MAX_SECONDS, check_seconds_or_none

if TYPE_CHECKING:
    import threading

    from ephemeral_actors._coordinators._supervisor import Core
    from ephemeral_actors._dispatch import Timer
    from ephemeral_actors._operation import Operation

__all__ = ["Schedule", "check_priority", "scheduled_request"]

Entry = tuple["Operation", Any]


def check_priority(priority: object) -> int:
    """Return `priority` as an int (an `IntEnum` member is fine; a bool is not).

    Raises:
        TypeError: `priority` is not an int, or is a bool.
    """
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(
            f"priority must be an int (lower starts first), got {type(priority).__name__} "
            f"{priority!r}"
        )
    return int(priority)


def scheduled_request(item: Any, future: Any, mode: int, priority: object, delay: object) -> Intake:
    """The intake request of an item with a priority or a delay (validated here).

    Called in the sender's thread, so a bad argument raises to the caller and never
    reaches the supervisor. A zero delay is no delay.
    """
    rank = check_priority(priority)
    seconds = check_seconds_or_none("delay", delay, allow_zero=True)
    if not seconds:
        seconds = None
        if not rank:
            return Intake(item, future, mode)
    return Scheduled(item, future, mode, rank, seconds)


@checked_writes(attrgetter("core"), "delay", "pop", "unstarted", "wake_at", "remove", "take_all")
class Schedule:
    """The supervisor's delayed items, its global token bucket and its one timer.

    Owned by the supervisor: every method except `_ring` runs in its turn.
    """

    def __init__(self, core: Core) -> None:
        options = core.options
        self.core = core
        self.backlog = core.backlog
        self.clock = core.schedule_clock
        self.delayed: list[tuple[float, int, Operation, Any, int]] = []
        """(due, sequence, operation, item, priority), a heap by due time."""
        self.delayed_keys: Counter[Any] | None = Counter() if core.key_of is not None else None
        """Delayed items per raw key (keyed coordinators), for per-key pending counts."""
        self.sequence = itertools.count()
        rate = options.rate_limit
        self.bucket = None if rate is None else TokenBucket(rate, options.rate_burst)
        if self.bucket is not None:
            claim(self.bucket, core)
        self.per_key = options.rate_limit_per_key is not None and core.key_of is not None
        self.holding = False
        """The last dispatch found a free slot and an item, but no global token."""
        self.holds = 0
        """Waits of dispatch for a global token (each counted at its first refusal)."""
        self.timer: Timer | None = None
        self.timer_due = math.inf
        self.generation = 0
        self.uses_dispatcher = False
        self.closed = False

    def __repr__(self) -> str:
        return (
            f"<Schedule delayed={len(self.delayed)} bucket={self.bucket!r} "
            f"timer_due={self.timer_due!r}>"
        )

    # -- intake ------------------------------------------------------------------------

    def delay(self, op: Operation, item: Any, priority: int, seconds: float) -> None:
        """Hold an accepted item until `seconds` from now (it already counts as pending)."""
        due = self.clock() + seconds
        heapq.heappush(self.delayed, (due, next(self.sequence), op, item, priority))
        if self.delayed_keys is not None:
            self.delayed_keys[op._raw_key] += 1
        self.wake_at(due)

    # -- dispatch ----------------------------------------------------------------------

    def pop(self) -> Entry | None:
        """The next item that may start now, taking a token for it (dispatch's source)."""
        now = self.clock()
        delayed = self.delayed
        if delayed and delayed[0][0] <= now:
            self._release(now)
        if self.per_key:
            self.backlog.wake(now)
        bucket = self.bucket
        if bucket is None:
            return self.backlog.pop()
        wait = bucket.wait(now)
        if wait > 0:
            if self.core.npending > len(delayed):
                # Something waits in the backlog: dispatch again when the token is due.
                self.wake_at(now + wait)
                if not self.holding and self.backlog.has_ready():
                    # The item at the head could start but for the token. The next
                    # start clears the flag, so each wait is counted once.
                    self.holding = True
                    self.holds += 1
            return None
        entry = self.backlog.pop()
        if entry is not None:
            bucket.take(now)
            self.holding = False
        return entry

    def unstarted(self, op: Operation) -> None:
        """`op` was popped but cancelled before its body started: it spent no token."""
        if self.bucket is not None:
            self.bucket.refund()
        if self.per_key:
            self.backlog.refund(op)

    def _release(self, now: float) -> None:
        """Move every due item into the backlog, earliest due first."""
        delayed = self.delayed
        keys = self.delayed_keys
        push = self.backlog.push
        while delayed and delayed[0][0] <= now:
            _due, _seq, op, item, priority = heapq.heappop(delayed)
            if keys is not None:
                _uncount(keys, op._raw_key)
            push(op, item, priority)

    def rate_stats(self) -> RateLimitStats | None:
        """The rate limits and what they hold back now (None without a rate limit)."""
        bucket = self.bucket
        if bucket is None and not self.per_key:
            return None  # a schedule built only for delays
        core = self.core
        options = core.options
        now = self.clock()
        tokens = None
        waiting = 0
        if bucket is not None:
            tokens = bucket.available(now)
            if self.holding and tokens == 0 and not core.paused:
                retrying = len(core.attempts.waiting) if core.attempts is not None else 0
                waiting = max(0, core.npending - len(self.delayed) - retrying)
        throttled_keys = key_waiting = key_holds = 0
        if self.per_key:
            throttled_keys, key_waiting, key_holds = self.backlog.rate_stats()
        return RateLimitStats(
            rate_limit=options.rate_limit,
            rate_limit_per_key=options.rate_limit_per_key if self.per_key else None,
            rate_burst=options.rate_burst,
            tokens=tokens,
            waiting=waiting,
            holds=self.holds,
            throttled_keys=throttled_keys,
            key_waiting=key_waiting,
            key_holds=key_holds,
        )

    # -- the timer ---------------------------------------------------------------------

    def wake_at(self, due: float) -> None:
        """Make sure the supervisor dispatches again at `due` (a schedule-clock time)."""
        if self.closed or self.core.closing:
            return
        if self.timer is not None:
            if self.timer_due <= due:
                return  # an earlier wake-up is armed; it re-arms for the rest
            self.timer.cancel()
        self.generation += 1
        self.timer_due = due
        delay = min(max(0.0, due - self.clock()), MAX_SECONDS)
        self.timer = call_later(self, delay, functools.partial(self._ring, self.generation))

    def _ring(self, generation: int) -> None:
        """Timer callback (a dispatcher thread): timers are messages to the owner."""
        post_unless_gone(self.core, (self._on_ring, generation))

    def _on_ring(self, generation: int) -> None:
        if generation != self.generation or self.closed:
            return  # a timer that was re-armed earlier (its cancel came too late)
        self.timer = None
        self.timer_due = math.inf
        now = self.clock()
        delayed = self.delayed
        if delayed and delayed[0][0] <= now:
            self._release(now)
        if self.per_key:
            self.backlog.wake(now)
        self.core._dispatch()
        if delayed:
            self.wake_at(delayed[0][0])

    # -- removal -----------------------------------------------------------------------

    def remove(self, op_id: int) -> Operation | None:
        """Take back one delayed item (cancelled by id); its operation, or None."""
        delayed = self.delayed
        for index, entry in enumerate(delayed):
            op = entry[2]
            if op.id == op_id:
                delayed[index] = delayed[-1]
                delayed.pop()
                heapq.heapify(delayed)
                if self.delayed_keys is not None:
                    _uncount(self.delayed_keys, op._raw_key)
                return op
        return None

    def take_all(self) -> list[Entry]:
        """Remove and return every delayed item, earliest due first (cancel, fault)."""
        dropped = [(entry[2], entry[3]) for entry in sorted(self.delayed)]
        self.delayed.clear()
        self.holding = False  # the backlog went with it: a later wait is a new hold
        if self.delayed_keys is not None:
            self.delayed_keys.clear()
        return dropped

    def key_pending(self, raw_key: Any) -> int:
        """Delayed items of `raw_key`."""
        keys = self.delayed_keys
        return keys.get(raw_key, 0) if keys is not None else 0

    @property
    def delayed_count(self) -> int:
        """Items waiting out their delay."""
        return len(self.delayed)

    def close(self) -> list[threading.Thread]:
        """Cancel the timer and give back the dispatcher; threads to join."""
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        return give_back(self)


def _uncount(counter: Counter[Any], key: Any) -> None:
    left = counter[key] - 1
    if left > 0:
        counter[key] = left
    else:
        del counter[key]
