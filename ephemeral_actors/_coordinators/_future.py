"""`OutcomeFuture`: the `pykka.Future` that `submit()` returns.

`pykka.ThreadingFuture` builds a `threading.Condition` (a lock, a deque and bound
methods) per future. A coordinator resolves one future per submitted item, usually
before anyone waits for it, so that cost dominated the `submit()` path. This future
keeps its outcome in plain attributes and makes a `threading.Event` only when a
caller actually has to wait; one module lock orders the rare races between a
waiter arriving and the outcome being set.

It honours Pykka's future contract: `get(timeout=)` raising `pykka.Timeout`,
exceptions re-raised with their traceback, a second `set`/`set_exception`/
`set_get_hook` raising `queue.Full`, and `map`/`join`/`filter`/`reduce` through
get hooks.
"""

from __future__ import annotations

import queue
import sys
import threading
from typing import TYPE_CHECKING, Any, TypeVar

import pykka

if TYPE_CHECKING:
    from pykka._types import OptExcInfo

__all__ = ["OutcomeFuture"]

T = TypeVar("T")

_LOCK = threading.Lock()
_PENDING, _VALUE, _ERROR = 0, 1, 2


class OutcomeFuture(pykka.Future[T]):
    """A `pykka.Future` without a lock of its own, for operation outcomes."""

    def __init__(self) -> None:
        super().__init__()
        self._state = _PENDING
        self._value: Any = None
        self._exc_info: Any = None
        self._waiter: threading.Event | None = None

    def __repr__(self) -> str:
        state = ("pending", "value", "exception")[self._state]
        return f"<OutcomeFuture {state}>"

    def get(self, *, timeout: float | None = None) -> T:
        """Return the outcome, waiting up to `timeout` seconds (None: forever).

        Raises:
            pykka.Timeout: Nothing arrived within `timeout`.
            BaseException: The exception the operation ended with.
        """
        if self._state == _PENDING and self._get_hook is None:
            with _LOCK:
                waiter = None
                if self._state == _PENDING and self._get_hook is None:
                    waiter = self._waiter
                    if waiter is None:
                        waiter = self._waiter = threading.Event()
            if waiter is not None and not waiter.wait(timeout):
                raise pykka.Timeout(f"{timeout} seconds")
        if self._get_hook is not None:
            return super().get(timeout=timeout)
        if self._state == _ERROR:
            exc_type, exc_value, exc_traceback = self._exc_info
            if exc_value is None:
                exc_value = exc_type()
            if exc_value.__traceback__ is not exc_traceback:
                raise exc_value.with_traceback(exc_traceback)
            raise exc_value
        return self._value  # type: ignore[no-any-return]

    def set(self, value: Any | None = None) -> None:
        """Resolve the future to `value`."""
        self._resolve(_VALUE, value)

    def set_exception(self, exc_info: OptExcInfo | None = None) -> None:
        """Resolve the future to an exception (`sys.exc_info()` when not given)."""
        assert exc_info is None or len(exc_info) == 3
        self._resolve(_ERROR, sys.exc_info() if exc_info is None else exc_info)

    def set_get_hook(self, func: Any) -> None:
        """Compute the value lazily with `func(timeout)` on the first `get()`."""
        with _LOCK:
            if self._state != _PENDING:
                raise queue.Full
            super().set_get_hook(func)
            waiter = self._waiter
        if waiter is not None:
            waiter.set()

    def _resolve(self, state: int, payload: Any) -> None:
        with _LOCK:
            if self._state != _PENDING or self._get_hook is not None:
                raise queue.Full
            if state == _VALUE:
                self._value = payload
            else:
                self._exc_info = payload
            self._state = state
            waiter = self._waiter
        if waiter is not None:
            waiter.set()
