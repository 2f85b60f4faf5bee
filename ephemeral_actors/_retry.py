"""`RetryPolicy`: how a coordinator re-runs an operation whose attempt failed (SPEC 16).

The policy is a frozen record: it says how many attempts an operation gets, how long
to wait between them and which errors deserve another attempt. The supervisor applies
it (`ephemeral_actors._coordinators._attempts`): a failed attempt frees its slot and
the item waits out its backoff on a supervisor timer, then re-enters the backlog.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ephemeral_actors._validate import check_int, check_seconds, name_unknown_keywords

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Re-run failed attempts with exponential backoff (`CoordinatorOptions(retry=...)`).

    After attempt `n` fails with an error matching `retry_on`, the operation waits
    `backoff * multiplier ** (n - 1)` seconds (at most `max_backoff`, then spread by
    ±`jitter` of itself) and runs again, until `attempts` runs were made; then it
    fails with the last error. An error with a numeric `retry_after` attribute (seconds,
    as an HTTP 429/503 `Retry-After` header says) waits exactly that long instead, also
    capped by `max_backoff`. The slot is free while the item waits.

    Every field is validated; a bad value raises `TypeError`/`ValueError` naming it.

    Example:
        ```python
        policy = RetryPolicy(attempts=5, backoff=0.5, retry_on=(ConnectionError,))
        WorkCoordinator(fetch, retry=policy, item_timeout=10.0)
        ```

    Added in version 0.2.
    """

    attempts: int = 3
    """Runs in all, the first included (>= 1; 1 never retries)."""
    backoff: float = 0.1
    """Seconds to wait after the first failed attempt (>= 0)."""
    multiplier: float = 2.0
    """Factor applied to the wait after each further failure (>= 1)."""
    max_backoff: float = 30.0
    """Longest wait in seconds, `retry_after` included (>= 0)."""
    jitter: float = 0.1
    """Random spread as a fraction of the wait (0 to 1; 0.1 is ±10 %)."""
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,)
    """Exception classes worth another attempt (a class or a tuple; stored as a tuple)."""

    def __post_init__(self) -> None:
        """Validate and normalise every field."""
        set_ = object.__setattr__
        check_int("attempts", self.attempts, minimum=1)
        set_(self, "backoff", check_seconds("backoff", self.backoff, allow_zero=True))
        set_(self, "max_backoff", check_seconds("max_backoff", self.max_backoff, allow_zero=True))
        set_(self, "multiplier", _check_real("multiplier", self.multiplier, 1.0, math.inf))
        set_(self, "jitter", _check_real("jitter", self.jitter, 0.0, 1.0))
        retry_on = self.retry_on
        if isinstance(retry_on, type):
            retry_on = (retry_on,)
        if not isinstance(retry_on, tuple) or not retry_on:
            raise TypeError(
                "retry_on must be an exception class or a non-empty tuple of them, "
                f"got {type(self.retry_on).__name__} {self.retry_on!r}"
            )
        for cls in retry_on:
            if not (isinstance(cls, type) and issubclass(cls, BaseException)):
                raise TypeError(f"retry_on must hold exception classes, got {cls!r}")
        set_(self, "retry_on", retry_on)

    def should_retry(self, error: BaseException) -> bool:
        """True if `error` matches `retry_on` (the attempt count is the caller's)."""
        return isinstance(error, self.retry_on)

    def delay(
        self,
        attempt: int,
        error: BaseException | None = None,
        *,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait after failed attempt number `attempt` (1 for the first run).

        Args:
            attempt: The attempt that just failed, counting from 1.
            error: Its error; a numeric `retry_after` attribute on it wins.
            rand: A source of floats in [0, 1) for the jitter (tests pass their own).

        Returns:
            A wait between 0 and `max_backoff`.
        """
        cap = self.max_backoff
        retry_after = getattr(error, "retry_after", None)
        if (
            isinstance(retry_after, int | float)
            and not isinstance(retry_after, bool)
            and not math.isnan(retry_after)
        ):
            # The server said when; no jitter, but never longer than the policy allows.
            return min(max(float(retry_after), 0.0), cap)
        try:
            wait = self.backoff * self.multiplier ** (attempt - 1)
        except OverflowError:
            wait = cap
        wait = min(wait, cap)
        if self.jitter:
            wait *= 1.0 + self.jitter * (2.0 * rand() - 1.0)
        return min(max(wait, 0.0), cap)


name_unknown_keywords(RetryPolicy, frozenset(f.name for f in dataclasses.fields(RetryPolicy)))


def _check_real(name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or not low <= value <= high:
        bound = f"a finite number >= {low}" if high == math.inf else f"between {low} and {high}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return float(value)
