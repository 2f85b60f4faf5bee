"""The exception tree.

```
EphemeralError(Exception)
├── CoordinatorClosedError(RuntimeError)        intake is closed: complete()/cancel()/close()
├── CoordinatorNotCompletedError(RuntimeError)  drain() before complete()
├── CoordinatorFullError                        enqueue(timeout=...) found the backlog full
├── CoordinatorFaultedError(RuntimeError)       the supervisor actor itself died
├── DynamicConcurrencyDisabledError(RuntimeError)
├── UnknownCoordinatorError(KeyError)           registry lookup of an unregistered name
├── RegistryClosedError(RuntimeError)
├── NoCurrentOperationError(RuntimeError)       current_operation() outside a body
├── WorkerCrashError(RuntimeError)              recorded on an item whose worker actor died
├── OperationTimeoutError(TimeoutError)         an attempt outlived `item_timeout`
└── OperationCancelledError                     a body noticed a cancellation request
    └── SignalCancelledError                    an item was cancelled by a signal
```

Every subclass also inherits the builtin a caller would naturally catch, so
`except RuntimeError` keeps working for code that does not know this library.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CoordinatorClosedError",
    "CoordinatorFaultedError",
    "CoordinatorFullError",
    "CoordinatorNotCompletedError",
    "DynamicConcurrencyDisabledError",
    "EphemeralError",
    "NoCurrentOperationError",
    "OperationCancelledError",
    "OperationTimeoutError",
    "RegistryClosedError",
    "SignalCancelledError",
    "UnknownCoordinatorError",
    "WorkerCrashError",
]


class EphemeralError(Exception):
    """Root of every error this library raises on purpose."""


class CoordinatorClosedError(EphemeralError, RuntimeError):
    """The coordinator no longer accepts work (`complete()`, `cancel()` or `close()` ran)."""


class CoordinatorNotCompletedError(EphemeralError, RuntimeError):
    """`drain()` was called before `complete()` on a coordinator that has no source."""


class CoordinatorFullError(EphemeralError):
    """`enqueue(timeout=...)` waited for backlog space and none came in time."""


class CoordinatorFaultedError(EphemeralError, RuntimeError):
    """The coordinator's supervisor actor died; every waiter is released with this."""


class DynamicConcurrencyDisabledError(EphemeralError, RuntimeError):
    """`set_max_concurrency()` needs `CoordinatorOptions(enable_dynamic_concurrency=True)`."""


class UnknownCoordinatorError(EphemeralError, KeyError):
    """A registry was asked for a name nobody registered."""

    def __str__(self) -> str:
        # KeyError.__str__ repr()s its argument, which would wrap the message in quotes.
        return str(self.args[0]) if self.args else ""


class RegistryClosedError(EphemeralError, RuntimeError):
    """The registry was closed; it creates no more coordinators."""


class NoCurrentOperationError(EphemeralError, RuntimeError):
    """`current_operation()` was called outside a running body."""


class WorkerCrashError(EphemeralError, RuntimeError):
    """Recorded on an operation whose worker actor died under it (not a body failure).

    The supervisor replaces the worker and counts it in `CoordinatorStats.worker_restarts`.
    """


class OperationTimeoutError(EphemeralError, TimeoutError):
    """An attempt of an operation outlived `CoordinatorOptions.item_timeout`.

    A coroutine body past its deadline is cancelled; a plain body is asked to cancel
    and, if it has not returned after a further `item_timeout`, abandoned. Either way
    the attempt fails with this error (counted in `total_failed`), and it is retried
    when the coordinator's `RetryPolicy.retry_on` matches it.

    Added in version 0.2.
    """


class OperationCancelledError(EphemeralError):
    """Cancellation was requested and the body acknowledged it.

    A body that ends by raising this after cancellation was requested counts as
    cancelled, not failed.
    """


class SignalCancelledError(OperationCancelledError):
    """An item was not started because a `cancel_on_signals` pattern matched a signal.

    Attributes:
        signal: The name of the signal that cancelled the item.
    """

    def __init__(self, signal: str, message: str | None = None) -> None:
        super().__init__(message or f"cancelled by signal {signal!r}")
        self.signal = signal

    def __reduce__(self) -> tuple[Any, ...]:
        # BaseException pickles as `cls(*self.args)`, and args hold only the message,
        # which would come back as the signal name: rebuild from both.
        return (type(self), (self.signal, *self.args[:1]), self.__dict__)
