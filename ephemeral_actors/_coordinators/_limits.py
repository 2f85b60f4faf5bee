"""Rate limits: the token buckets a supervisor owns (SPEC 16), and the clock they read.

`CoordinatorOptions(rate_limit=r, rate_burst=b)` means: starts never exceed
`b + r * t` in any window of `t` seconds. That is exactly a token bucket of `b` tokens
refilled at `r` per second, one token per start. The supervisor keeps one bucket for
the whole coordinator (`rate_limit`) and, in keyed coordinators, each key's child
actor keeps one for its key (`rate_limit_per_key`); a start takes a token from each
bucket that applies. Only the owner's turn touches a bucket.

Rate limits and delays measure durations, so they read a monotonic clock, not the
wall clock records are stamped with (a wall clock stepped back by NTP must not stall
a rate limit). `ephemeral_actors.testing.use_schedule_clock()` injects another one,
so a test can move scheduling time by hand and check the limit exactly.
"""

from __future__ import annotations

import contextvars
import math
import time
from typing import TYPE_CHECKING

from ephemeral_actors._owned import checked_writes, owner_slot

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["SCHEDULE_CLOCK", "TokenBucket"]

_ROUNDING = 1e-9
"""Seconds of float rounding a token may come early by. `tat` is a sum of intervals,
so a token due exactly now can compute as due 1e-17 s from now (0.2 + 2.0 - 2.0 -
0.2): refusing it would re-arm the timer for no time at all, and under a clock that
does not move (`use_schedule_clock` in a test) the supervisor would spin on it."""

SCHEDULE_CLOCK: contextvars.ContextVar[Callable[[], float]] = contextvars.ContextVar(
    "ephemeral_actors_schedule_clock", default=time.monotonic
)
"""The monotonic clock of coordinators built in this context: delays, rate limits, the
restart window of supervision and the passivation of idle keys."""


@checked_writes(owner_slot, "take", "refund")
class TokenBucket:
    """A bucket of `burst` tokens refilled at `rate` per second, one token per start.

    It keeps a single number instead of a token count and a refill time: the
    *theoretical arrival time* `tat` of the Generic Cell Rate Algorithm (the token
    bucket of ATM networks, also used by redis-cell and `throttled`). Each start
    pushes `tat` one `interval` (1 / rate) further; a start is allowed while `tat`
    is at most `tolerance` ((burst - 1) intervals) ahead of now. An idle bucket's
    `tat` falls behind the clock, which is a full bucket; nothing needs refilling,
    and the time the next token is due is a subtraction.
    """

    __slots__ = ("interval", "owner", "tat", "tolerance")

    def __init__(self, rate: float, burst: int) -> None:
        self.interval = 1.0 / rate
        self.tolerance = (burst - 1) * self.interval
        self.tat = -math.inf  # full

    def __repr__(self) -> str:
        return f"<TokenBucket interval={self.interval!r} burst={self.burst} tat={self.tat!r}>"

    @property
    def burst(self) -> int:
        """Tokens the bucket holds when full."""
        return round(self.tolerance / self.interval) + 1

    def wait(self, now: float) -> float:
        """Seconds from `now` until a token is available (<= 0: one is available now)."""
        return self.tat - self.tolerance - now - _ROUNDING

    def take(self, now: float) -> None:
        """Take a token at `now` (the caller checked `wait(now) <= 0`)."""
        self.tat = max(self.tat, now) + self.interval

    def refund(self) -> None:
        """Give back the token of a start that did not happen (cancelled at dispatch)."""
        self.tat -= self.interval

    def available(self, now: float) -> int:
        """Starts the bucket allows at `now`, one right after the other (0 to `burst`)."""
        ahead = max(self.tat, now) - now  # how much of the tolerance is used up
        allowed = math.floor((self.tolerance - ahead + _ROUNDING) / self.interval) + 1
        return max(0, min(self.burst, allowed))

    def full_in(self, now: float) -> float:
        """Seconds from `now` until the bucket is full again (<= 0: it is full)."""
        return self.tat - now
