"""Messages a Pykka actor can send to a coordinator's supervisor actor.

Every coordinator exposes its supervisor as `coordinator.actor_ref`. An actor that
must not block uses `tell`; one that wants an answer uses `ask`:

```python
ref = coordinator.actor_ref
ref.tell(Enqueue(item))                  # fire and forget
op_id = ref.ask(Enqueue(item))           # the operation id
outcome = ref.ask(Submit(item))          # a pykka.Future of the outcome
stats = ref.ask(GetStats())              # CoordinatorStats
```

`Enqueue`/`Submit` sent as messages never block the sender on backpressure: an
actor cannot wait, so the supervisor accepts the item even when the backlog is
full (the mailbox already holds it). A rejected `tell` (closed coordinator) is
logged, since there is nobody to raise to; an `ask` raises to the asker.

`Enqueue` and `Submit` take an optional `priority` (lower starts first) and `delay`
(seconds before the item may start), as `enqueue(item, priority=..., delay=...)` does;
`Enqueue(item)` alone still means priority 0, no delay.

All messages are frozen records that take their fields positionally.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ephemeral_actors._coordinators._schedule import check_priority
from ephemeral_actors._validate import check_seconds_or_none

__all__ = [
    "Cancel",
    "Complete",
    "Enqueue",
    "Evict",
    "GetSnapshot",
    "GetStats",
    "Pause",
    "Pin",
    "Resume",
    "SetMaxConcurrency",
    "Submit",
    "Unpin",
]


@dataclass(frozen=True, slots=True)
class Enqueue:
    """Accept `item`; an `ask` answers its operation id.

    `priority` (an int, lower starts first) and `delay` (seconds, or a
    `datetime.timedelta`, before the item may start) are checked when the message
    is built, so a bad value raises in the sender.
    """

    item: Any
    priority: int = 0
    delay: float | None = None

    def __post_init__(self) -> None:
        _check_schedule(self, self.priority, self.delay)


@dataclass(frozen=True, slots=True)
class Submit:
    """Accept `item`; an `ask` answers a `pykka.Future` of the operation's outcome.

    `priority` and `delay` as for `Enqueue`.
    """

    item: Any
    priority: int = 0
    delay: float | None = None

    def __post_init__(self) -> None:
        _check_schedule(self, self.priority, self.delay)


def _check_schedule(message: Enqueue | Submit, priority: object, delay: object) -> None:
    object.__setattr__(message, "priority", check_priority(priority))
    object.__setattr__(message, "delay", check_seconds_or_none("delay", delay) or None)


@dataclass(frozen=True, slots=True)
class GetStats:
    """Answer a `CoordinatorStats`."""


@dataclass(frozen=True, slots=True)
class GetSnapshot:
    """Answer the operation window as a tuple of snapshots, oldest first."""


@dataclass(frozen=True, slots=True)
class Pause:
    """Stop starting new operations."""


@dataclass(frozen=True, slots=True)
class Resume:
    """Start operations again."""


@dataclass(frozen=True, slots=True)
class Complete:
    """Close intake; queued items are still processed."""


@dataclass(frozen=True, slots=True)
class Cancel:
    """Close intake, drop the backlog and ask running operations to cancel."""


@dataclass(frozen=True, slots=True)
class SetMaxConcurrency:
    """Change the global concurrency limit to `limit`."""

    limit: int


@dataclass(frozen=True, slots=True)
class Pin:
    """Protect operation `op_id` from window trimming; answers True if found."""

    op_id: int


@dataclass(frozen=True, slots=True)
class Unpin:
    """Let operation `op_id` be trimmed again; answers True if found."""

    op_id: int


@dataclass(frozen=True, slots=True)
class Evict:
    """Drop operation `op_id` from the window now; answers True if found."""

    op_id: int
