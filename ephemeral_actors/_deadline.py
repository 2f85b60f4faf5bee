"""Deadlines: how every wait bounded by a caller's `timeout` counts down.

A public call with `timeout` turns it into a deadline once (`deadline_after`), and each
wait inside it asks for the time left (`remaining`): a call that waits several times
(`close()` joins many threads) is bounded as a whole, not per wait. Both read
`time.monotonic`, which a step of the wall clock does not move.
"""

from __future__ import annotations

import time

__all__ = ["deadline_after", "remaining"]


def deadline_after(timeout: float | None) -> float | None:
    """The `time.monotonic()` value `timeout` seconds from now; None: no deadline."""
    return None if timeout is None else time.monotonic() + timeout


def remaining(deadline: float | None) -> float | None:
    """Seconds left until `deadline` (never negative); None: no deadline."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())
