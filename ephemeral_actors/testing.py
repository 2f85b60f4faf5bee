"""Helpers for testing code that uses coordinators, and the library itself.

```python
from ephemeral_actors.testing import crash_worker, library_threads

def body(item):
    crash_worker()   # the worker actor dies here, as if its machinery failed
```
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, NoReturn

from ephemeral_actors._coordinators._limits import SCHEDULE_CLOCK
from ephemeral_actors._coordinators._window import CLOCK
from ephemeral_actors._coordinators._workers import InjectedWorkerCrash
from ephemeral_actors._mailbox import CHECK_OWNERSHIP

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = [
    "crash_worker",
    "library_threads",
    "ownership_checks_enabled",
    "use_clock",
    "use_schedule_clock",
]


def crash_worker() -> NoReturn:
    """Kill the worker actor running the current body, as a machinery fault would.

    The supervisor records the in-flight operation as failed with a
    `WorkerCrashError`, counts a worker restart and replaces the worker. Use it to
    test that your code copes with supervision events.
    """
    raise InjectedWorkerCrash


def library_threads() -> list[threading.Thread]:
    """Every live thread this library started (their names start with `ephemeral-actors-`)."""
    return [t for t in threading.enumerate() if t.name.startswith("ephemeral-actors-")]


@contextlib.contextmanager
def use_clock(clock: Callable[[], float]) -> Iterator[None]:
    """Coordinators built inside this block stamp their records with `clock`.

    `clock()` returns seconds since the epoch, like `time.time`. Use it to move time
    in tests of window ageing without sleeping:

    ```python
    now = [1_000_000.0]
    with use_clock(lambda: now[0]):
        c = WorkCoordinator(body, max_operation_lifetime=10)
    ...
    now[0] += 11   # c's finished operations are now too old
    ```
    """
    if not callable(clock):
        raise TypeError(f"clock must be callable, got {type(clock).__name__} {clock!r}")
    token = CLOCK.set(clock)
    try:
        yield
    finally:
        CLOCK.reset(token)


@contextlib.contextmanager
def use_schedule_clock(clock: Callable[[], float]) -> Iterator[None]:
    """Coordinators built inside this block time their schedule and supervision with `clock`.

    That is delays, rate limits, the restart window (`restart_window`) and the
    passivation of idle keys (`key_idle_timeout`); deadlines and retry backoff
    (`item_timeout`, `RetryPolicy`) and timed deferrals (`defer_for`) keep real time,
    since a body or a signal runs in it. `clock()` returns monotonic seconds,
    like `time.monotonic` (the default). Records keep their own wall clock
    (`use_clock`). With a clock you move by hand, a test decides exactly when a
    delayed item is due, a token is back or a crash has left the restart window; any
    later dispatch (for instance `resume()`) then starts what became eligible:

    ```python
    now = [0.0]
    with use_schedule_clock(lambda: now[0]):
        c = WorkCoordinator(body, rate_limit=1.0)
    c.enqueue(a)
    c.enqueue(b)      # no token: b waits in the backlog
    now[0] += 1.0     # b's token is due
    c.resume()        # dispatches: b starts
    ```

    The library's own wake-up timers still run on real time, so they may fire
    early or late relative to `clock`; they only ever trigger a dispatch, which
    re-reads `clock`.
    """
    if not callable(clock):
        raise TypeError(f"clock must be callable, got {type(clock).__name__} {clock!r}")
    token = SCHEDULE_CLOCK.set(clock)
    try:
        yield
    finally:
        SCHEDULE_CLOCK.reset(token)


def ownership_checks_enabled() -> bool:
    """True if `EPHEMERAL_ACTORS_CHECK_OWNERSHIP=1` was set before the library was imported.

    In that mode every write to actor-owned state checks that it happens in its
    owner's turn and raises `AssertionError` naming the actor and the state if not.
    """
    return CHECK_OWNERSHIP
