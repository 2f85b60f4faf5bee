"""`Admission`: why an item was or was not accepted (SPEC section 15, "Why a refusal").

`try_enqueue` answers a bare bool, which cannot tell "come back later" (the backlog
is full) from "never come back" (the coordinator is closed). `offer(item)` answers
an `Admission` instead; it is truthy only for `ACCEPTED`, so code written for the
bool keeps reading naturally:

```python
if not (admission := coordinator.offer(request)):
    status = 503 if admission is Admission.CLOSED else 429
```

Added in version 0.2.0.
"""

from __future__ import annotations

import enum

__all__ = ["Admission"]


class Admission(enum.Enum):
    """The answer of `offer(item)`: accepted, or the reason it was refused.

    Only `ACCEPTED` is truthy. When several reasons apply at once, the most
    permanent one is reported: `CLOSED` > `KEY_ERROR` > `UNFAIR` > `FULL`.

    Added in version 0.2.0.
    """

    ACCEPTED = "accepted"
    """The item was accepted and will run."""
    FULL = "full"
    """The backlog (`max_tracked_operations` pending items) is full; retry later."""
    UNFAIR = "unfair"
    """Fair scheduling: the item's key already has `fair_scheduling_threshold` pending."""
    CLOSED = "closed"
    """Intake is closed (`complete()`, `cancel()` or `close()`); it will not reopen."""
    KEY_ERROR = "key_error"
    """The key selector raised (or returned an unhashable key) for this item."""

    def __bool__(self) -> bool:
        # Truthy only when accepted, so `if coordinator.offer(item):` reads like the
        # bool `try_enqueue` returns (an Enum member is otherwise always truthy).
        return self is Admission.ACCEPTED
