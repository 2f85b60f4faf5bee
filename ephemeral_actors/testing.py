"""Helpers for testing code that uses coordinators, and the library itself.

```python
from ephemeral_actors.testing import crash_worker, library_threads

def body(item):
    crash_worker()   # the worker actor dies here, as if its machinery failed
```
"""

from __future__ import annotations

import threading
from typing import NoReturn

from ephemeral_actors._coordinators._core import _InjectedWorkerCrash

__all__ = ["crash_worker", "library_threads"]


def crash_worker() -> NoReturn:
    """Kill the worker actor running the current body, as a machinery fault would.

    The supervisor records the in-flight operation as failed with a
    `WorkerCrashError`, counts a worker restart and replaces the worker. Use it to
    test that your code copes with supervision events.
    """
    raise _InjectedWorkerCrash


def library_threads() -> list[threading.Thread]:
    """Every live thread this library started (their names start with `ephemeral-actors-`)."""
    return [t for t in threading.enumerate() if t.name.startswith("ephemeral-actors-")]
