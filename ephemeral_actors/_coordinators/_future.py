"""`OperationFuture`: the future `submit()` returns (SPEC section 15).

It is both a `concurrent.futures.Future` and a `pykka.Future`, so it works with
`concurrent.futures.wait`/`as_completed`, `asyncio.wrap_future`, `await`, and Pykka's
`get`/`map`/`join`/`filter`/`reduce`/`get_all`.

Why it does not simply call `concurrent.futures.Future.__init__`: that builds a
`threading.Condition` (an `RLock`, a deque, bound methods) per future, about 7 µs
and a heap of GC-tracked objects per `submit()`. A coordinator resolves most
outcomes before anyone waits for them, so this future keeps its state in plain
attributes and creates the Condition only for `wait()`/`as_completed()`, which use
`future._condition` and `future._waiters` directly. A blocking `result()`/`get()`
parks on a plain lock of its own instead (`_parked`), which the resolution releases.
`set()` on a future nobody waits for or watches is one module-lock hold and two stores.

Locking protocol (why resolving stays cheap and still never loses a wake-up):

* While `_cond` is None the state (parked waiters included) is guarded by the
  module lock `_LOCK` alone. `_condition` creates the Condition under `_LOCK` too,
  so a resolution either happens wholly before the Condition exists (and a waiter
  then sees the outcome) or sees the Condition and resolves under it, notifying.
* Once `_cond` exists it guards the state, as in CPython. `_LOCK` is never held
  while taking a Condition, so the order is always Condition -> `_LOCK`.
* Every hold is a `with` on a C lock (`_LOCK`, or the Condition's own `_cond_lock`),
  never `acquire()` followed by `try`: Python runs a signal handler (Ctrl-C's
  `KeyboardInterrupt`) when a call returns, so it could strike between a successful
  `acquire()` and the `try`, and a module lock left taken would stop every future
  in the process. A `with` on a C lock has no such instant.

Callbacks: the core resolves futures through Pykka's `set()`/`set_exception(exc_info)`
and `_set_cancelled()` while holding its own (non-reentrant) lock, so a done-callback
run there could deadlock by calling back into the coordinator, and would stall a
worker. Callbacks of such a resolution run on a short-lived library thread
(`ephemeral-actors-callbacks`) instead; resolutions through the
`concurrent.futures` API (`set_result`, `set_exception(exception)`) run them inline
like CPython. `await` does not use callbacks: it wakes its loop through the loop's inbox
(`_loop_inbox`), which takes no lock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import sys
import threading
from collections import deque
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
)
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pykka

from ephemeral_actors._mailbox import call_on_loop

if TYPE_CHECKING:
    from collections.abc import Callable, Generator
    from types import TracebackType

    from pykka._types import OptExcInfo

__all__ = ["OperationFuture", "OutcomeFuture"]

T = TypeVar("T")

logger = logging.getLogger("ephemeral_actors")

_LOCK = threading.Lock()


def _reset_lock_after_fork() -> None:
    # A parent thread may have held it at the fork; in the child nobody would release it.
    global _LOCK  # noqa: PLW0603
    _LOCK = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock_after_fork)
_DONE = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED))
_CANCELLED = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED))
_OPEN = frozenset((PENDING, RUNNING))
_DESCRIPTION = {
    PENDING: "pending",
    RUNNING: "running",
    CANCELLED: "cancelled",
    CANCELLED_AND_NOTIFIED: "cancelled",
    FINISHED: "finished",
}


class _FutureTimeoutError(TimeoutError, pykka.Timeout):
    """No outcome in time: a builtin `TimeoutError` that Pykka code still catches."""


class _AlreadyResolvedError(concurrent.futures.InvalidStateError, queue.Full):
    """A second resolution: `InvalidStateError` for CPython code, `queue.Full` for Pykka's."""


class OperationFuture(concurrent.futures.Future[T], pykka.Future[T]):
    """The outcome of one submitted item: a `concurrent.futures.Future` and a `pykka.Future`.

    It resolves when the operation ends: to its result (`None` for a
    `WorkCoordinator`), or to the exception the body raised (with its traceback).
    Every wait that runs out of time (`result`, `exception`, `get`,
    `concurrent.futures.wait`/`as_completed`) raises a builtin `TimeoutError`; the
    one from `get` is also a `pykka.Timeout`. `await future` waits without blocking
    the event loop; cancelling the awaiting task cancels the item if it is still
    pending, as with `asyncio.wrap_future`.

    Done-callbacks are called once, in the order added, with the future; one added
    after the future ended is called at once in the adding thread. When the
    coordinator resolves the future they run on the library's callback thread, never
    in a worker and never in the supervisor's turn, so they may call the
    coordinator. An exception a callback raises is logged, as CPython does.

    Futures made by `map`/`join`/`filter`/`reduce` are Pykka's lazy futures: their
    value is computed by the first `get()`/`result()`/`await`, so use them with those
    rather than with `wait`/`as_completed`.

    Cancellation contract (between this future and the coordinator core):
    the core sets `_canceller`, a callable taking no arguments that removes the
    still-pending item and returns True, or returns False when the item has
    already started or ended. When it removes the item the core counts it in
    `total_cancelled` and calls `_set_cancelled()` (with or without its lock held;
    it must not hold this future's Condition). `cancel()` calls the canceller only
    while the future is pending and returns True exactly when the future ends up
    cancelled; without a canceller it returns False. The core may call
    `set_running_or_notify_cancel()` when a worker takes the item, so `running()`
    answers True and `cancel()` returns False without asking the core.

    Attributes:
        operation_id: The id of the operation, as in `get_snapshot()`; set by the
            coordinator when it accepts the item, 0 for a future it did not make.
    """

    # Only what every future reads on its hot paths is set per instance (attributes
    # found in the instance dict are read fastest); the rest are class-level defaults.
    operation_id: int = 0
    _canceller: Callable[[], bool] | None = None
    _waiter_list: list[Any]
    _state: str
    _result: T | None
    _exception: BaseException | None
    _exception_tb: TracebackType | None = None
    """`_exception`'s traceback as the body left it: each `result()` raises it with this
    one, as asyncio's futures do (raising an exception prepends the raising frames, so
    the error, which the operation's record shares, would grow with every call)."""
    _cond: threading.Condition | None
    _cond_lock: Any = None  # the Condition's lock, once there is a Condition
    _callbacks: list[Callable[[concurrent.futures.Future[T]], object]] | None
    _loop_wakers: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] | None
    _parked: list[Any] | None
    _get_hook: Callable[[float | None], T] | None

    def __init__(self) -> None:
        """Create a pending future (no lock, no list: see the module docstring)."""
        # Neither base __init__ runs: concurrent.futures' would build the Condition this
        # class exists to avoid, and Pykka's allocates a sentinel we do not use.
        self._state = PENDING
        self._result = None
        self._exception = None
        self._cond = None
        self._callbacks = None
        self._loop_wakers = None
        self._parked = None
        self._get_hook = None

    def __repr__(self) -> str:
        state = self._state
        op = f" operation={self.operation_id}" if self.operation_id else ""
        head = f"<{type(self).__name__} at {id(self):#x}{op} state={_DESCRIPTION[state]}"
        if state == FINISHED:
            if self._exception is not None:
                return f"{head} raised {type(self._exception).__name__}>"
            return f"{head} returned {type(self._result).__name__}>"
        return f"{head}>"

    # -- the Condition and waiter list concurrent.futures.wait/as_completed use -------

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        """This future's Condition, created on first use (see the module docstring)."""
        cond = self._cond
        if cond is None:
            with _LOCK:
                cond = self._cond
                if cond is None:
                    self._waiter_list = []
                    # Its lock is kept apart: `with` on a C lock leaves no instant, as
                    # Condition.__enter__ (Python code) does, where an interrupt could
                    # strike with the lock taken and never released.
                    self._cond_lock = lock = threading.RLock()
                    cond = self._cond = threading.Condition(lock)
        return cond

    @property
    def _waiters(self) -> list[Any]:  # type: ignore[override]
        """The waiters `wait`/`as_completed` install; only touched under `_condition`."""
        self._condition  # noqa: B018 - creates the list with the Condition
        return self._waiter_list

    # -- state ---------------------------------------------------------------------------

    def done(self) -> bool:
        """Return True once the future has a result, an exception, or was cancelled."""
        return self._state in _DONE

    def running(self) -> bool:
        """Return True while the operation runs (once the coordinator reports its start)."""
        return self._state == RUNNING

    def cancelled(self) -> bool:
        """Return True if `cancel()` cancelled the item before it started."""
        return self._state in _CANCELLED

    # -- waiting -------------------------------------------------------------------------

    def result(self, timeout: float | None = None) -> T:
        """Return the operation's result, waiting up to `timeout` seconds (None: forever).

        Raises:
            TimeoutError: No outcome within `timeout`.
            concurrent.futures.CancelledError: The item was cancelled by `cancel()`.
            BaseException: The exception the operation ended with.
        """
        if self._state == FINISHED and self._exception is None:
            return self._result  # type: ignore[return-value]  # the common case: no call, not even cast()
        self._wait(timeout)
        return self._outcome()

    def get(self, *, timeout: float | None = None) -> T:
        """Pykka's form of `result()`: the same value, exception and waiting.

        Raises:
            TimeoutError: No outcome within `timeout` (also a `pykka.Timeout`).
            concurrent.futures.CancelledError: The item was cancelled by `cancel()`.
            BaseException: The exception the operation ended with.
        """
        if self._state == FINISHED and self._exception is None:
            return self._result  # type: ignore[return-value]  # the common case: no call, not even cast()
        self._wait(timeout)
        return self._outcome()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Return the exception the operation ended with (None if it succeeded).

        Raises:
            TimeoutError: No outcome within `timeout`.
            concurrent.futures.CancelledError: The item was cancelled by `cancel()`.
        """
        self._wait(timeout)
        if self._state in _CANCELLED:
            raise concurrent.futures.CancelledError
        return self._exception

    def _wait(self, timeout: float | None) -> None:
        if self._state in _DONE:
            return
        if self._get_hook is None and not self._park(timeout):
            raise _FutureTimeoutError(f"no outcome within {timeout} s")
        if self._state not in _DONE:
            self._run_get_hook(timeout)

    def _park(self, timeout: float | None) -> bool:
        """Block until the future is done or has a get hook; False on timeout.

        A blocking `result()` parks on a lock of its own, which the resolution releases:
        a Condition (an RLock, a deque, a waiter lock per wait and a notify loop) costs
        several microseconds on both sides of the idle round trip, where it is the
        whole hand-off back to the caller. `wait()`/`as_completed()` still use the
        Condition, which `concurrent.futures` reads directly.
        """
        waiter = threading.Lock()
        waiter.acquire()
        while True:
            cond = self._cond
            lock = _LOCK if cond is None else self._cond_lock
            with lock:
                if cond is None and self._cond is not None:
                    continue  # a Condition made meanwhile: its lock guards the state now
                if self._state in _DONE or self._get_hook is not None:  # _ready(), inlined
                    return True
                parked = self._parked
                if parked is None:
                    self._parked = [waiter]
                else:
                    parked.append(waiter)
            break
        if waiter.acquire(True, -1 if timeout is None else max(0.0, timeout)):
            return True
        while True:
            cond = self._cond
            lock = _LOCK if cond is None else self._cond_lock
            with lock:
                if cond is None and self._cond is not None:
                    continue  # a Condition made meanwhile: its lock guards the state now
                # Released between the timeout and here: the outcome is in, so no timeout.
                parked = self._parked
                if parked is not None and waiter in parked:
                    parked.remove(waiter)
                return self._ready()

    def _ready(self) -> bool:
        return self._state in _DONE or self._get_hook is not None

    def _run_get_hook(self, timeout: float | None) -> None:
        hook = self._get_hook
        assert hook is not None
        try:
            value = hook(timeout)
        except pykka.Timeout as error:
            # A joined plain Pykka future times out with pykka.Timeout alone; our
            # contract is a builtin TimeoutError from every wait. The future stays pending.
            if isinstance(error, TimeoutError):
                raise
            raise _FutureTimeoutError(*error.args) from error
        except Exception as error:  # becomes the outcome, raised by _outcome
            self._finish(FINISHED, None, error, defer=False, from_hook=True)
        else:
            self._finish(FINISHED, value, None, defer=False, from_hook=True)

    def _outcome(self) -> T:
        if self._state in _CANCELLED:
            raise concurrent.futures.CancelledError
        error = self._exception
        if error is not None:
            raise error.with_traceback(self._exception_tb)
        return cast("T", self._result)

    def __await__(self) -> Generator[Any, None, T]:
        """Wait for the outcome without blocking the running event loop."""
        if self._state not in _DONE:
            loop = asyncio.get_running_loop()
            if self._get_hook is not None:
                # A lazy Pykka future only gets its value by computing it: do so on a
                # thread, so the loop keeps running.
                yield from loop.run_in_executor(None, self._wait, None).__await__()
            else:
                waker: asyncio.Future[None] = loop.create_future()
                if self._add_waker(loop, waker):
                    try:
                        yield from waker.__await__()
                    except asyncio.CancelledError:
                        # As with asyncio.wrap_future: a cancelled awaiter cancels the item
                        # if it has not started yet.
                        self.cancel()
                        raise
        return self._outcome()

    __iter__ = __await__  # Pykka futures also support `yield from future`

    def _add_waker(self, loop: asyncio.AbstractEventLoop, waker: asyncio.Future[None]) -> bool:
        while True:
            cond = self._cond
            lock = _LOCK if cond is None else self._cond_lock
            with lock:
                if cond is None and self._cond is not None:
                    continue  # a Condition made meanwhile: its lock guards the state now
                if self._state in _DONE:
                    return False
                if self._loop_wakers is None:
                    self._loop_wakers = []
                self._loop_wakers.append((loop, waker))
                return True

    # -- callbacks -----------------------------------------------------------------------

    def add_done_callback(self, fn: Callable[[concurrent.futures.Future[T]], object]) -> None:
        """Call `fn(future)` once the future is done (at once if it already is)."""
        while True:
            cond = self._cond
            lock = _LOCK if cond is None else self._cond_lock
            with lock:
                if cond is None and self._cond is not None:
                    continue  # a Condition made meanwhile: its lock guards the state now
                if self._state not in _DONE:
                    if self._callbacks is None:
                        self._callbacks = []
                    self._callbacks.append(fn)
                    return
            break
        self._invoke((fn,))

    def _invoke(self, callbacks: Any) -> None:
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                logger.exception(
                    "exception calling callback for %r",
                    self,
                    extra={"event": "future.callback_failed", "operation_id": self.operation_id},
                )

    # -- resolution ----------------------------------------------------------------------

    def set_result(self, result: T) -> None:
        """Resolve the future to `result`; callbacks run in this thread.

        Raises:
            concurrent.futures.InvalidStateError: The future was already resolved
                (also a `queue.Full`, as Pykka raises).
        """
        self._resolve(FINISHED, result, None, defer=False)

    def set(self, value: T | None = None) -> None:
        """Pykka's `set`: resolve to `value` (the core's path: callbacks are deferred).

        Raises:
            queue.Full: The future was already resolved or has a get hook (also a
                `concurrent.futures.InvalidStateError`).
        """
        # The per-submit path: nothing attached but, at most, callers blocked in
        # result(); settle it here without the general machinery of _finish (about 3x
        # cheaper). With a caller waiting, this is the hand-off of an idle round trip.
        with _LOCK:
            if (
                self._cond is None
                and self._callbacks is None
                and self._loop_wakers is None
                and self._get_hook is None
                and self._state in _OPEN
            ):
                self._result = value
                self._state = FINISHED
                # A resolved future cannot be cancelled: drop the canceller, which holds
                # the operation record (100k held futures kept 100k records alive, and
                # every full garbage collection walked them).
                self._canceller = None
                parked = self._parked
                if parked is None:
                    return
                self._parked = None
            else:
                parked = None
        if parked is not None:
            _release_all(parked)
            return
        self._resolve(FINISHED, value, None, defer=True)

    def set_exception(self, exception: BaseException | OptExcInfo | None = None) -> None:
        """Resolve the future to an exception.

        Accepts both signatures: `concurrent.futures`' exception instance (callbacks
        run in this thread), or Pykka's `exc_info` triple, `sys.exc_info()` when
        omitted (the core's path: callbacks are deferred).

        Raises:
            concurrent.futures.InvalidStateError: The future was already resolved
                (also a `queue.Full`, as Pykka raises).
        """
        if isinstance(exception, BaseException):
            self._resolve(FINISHED, None, exception, defer=False)
            return
        exc_info = sys.exc_info() if exception is None else exception
        exc_type, exc_value, exc_traceback = exc_info
        if exc_value is None:
            if exc_type is None:
                raise TypeError("set_exception() without an exception, outside an except block")
            exc_value = exc_type()
        if exc_traceback is not None and exc_value.__traceback__ is not exc_traceback:
            exc_value = exc_value.with_traceback(exc_traceback)
        self._resolve(FINISHED, None, exc_value, defer=True)

    def set_get_hook(self, func: Callable[[float | None], T]) -> None:
        """Compute the value lazily with `func(timeout)` on the first wait for it.

        Raises:
            queue.Full: The future was already resolved or has a get hook.
        """
        while True:
            cond = self._cond
            lock = _LOCK if cond is None else self._cond_lock
            with lock:
                if cond is None and self._cond is not None:
                    continue  # a Condition made meanwhile: its lock guards the state now
                if self._state in _DONE or self._get_hook is not None:
                    raise _AlreadyResolvedError(f"{self._state}: {self!r}")
                self._get_hook = func
                if cond is not None:
                    cond.notify_all()
                parked, self._parked = self._parked, None
            break
        # Waiters blocked in get() wake up and compute the value themselves.
        _release_all(parked)

    def set_running_or_notify_cancel(self) -> bool:
        """Mark the operation as started; False if it was cancelled (do not run it).

        Raises:
            RuntimeError: The future was already running or resolved.
        """
        while True:
            cond = self._cond
            lock = _LOCK if cond is None else self._cond_lock
            with lock:
                if cond is None and self._cond is not None:
                    continue  # a Condition made meanwhile: its lock guards the state now
                if self._state in _CANCELLED:
                    return False
                if self._state != PENDING:
                    raise RuntimeError(f"future in unexpected state: {self._state}")
                self._state = RUNNING
                return True

    def cancel(self) -> bool:
        """Cancel the item if it has not started; True if the future is now cancelled.

        Returns False once the item runs or ended, and for a future with no
        coordinator behind it. See the class docstring for the contract with the core.
        """
        state = self._state
        if state in _CANCELLED:
            return True
        canceller = self._canceller
        if state != PENDING or canceller is None:
            return False
        # Called holding no lock of ours: the canceller asks the supervisor, whose turn
        # may be resolving this very future (it takes the future's lock to do so).
        if canceller():
            self._set_cancelled()
        return self._state in _CANCELLED

    def _set_cancelled(self) -> bool:
        """Resolve as cancelled (the core's hook); False if the future already ended."""
        return self._finish(CANCELLED_AND_NOTIFIED, None, None, defer=True)

    def _resolve(
        self, state: str, result: Any, exception: BaseException | None, *, defer: bool
    ) -> None:
        if not self._finish(state, result, exception, defer=defer):
            raise _AlreadyResolvedError(f"{self._state}: {self!r}")

    def _finish(
        self,
        state: str,
        result: Any,
        exception: BaseException | None,
        *,
        defer: bool,
        from_hook: bool = False,
    ) -> bool:
        while True:
            cond = self._cond
            lock = _LOCK if cond is None else self._cond_lock
            with lock:
                if cond is None and self._cond is not None:
                    continue  # a Condition made meanwhile: its lock guards the state now
                if self._state in _DONE or (self._get_hook is not None and not from_hook):
                    return False
                self._result = result
                self._exception = exception
                if exception is not None:
                    self._exception_tb = exception.__traceback__
                self._state = state
                self._canceller = None  # as in set(): only a pending future can be cancelled
                if cond is not None:
                    for waiter in self._waiter_list:
                        if state != FINISHED:
                            waiter.add_cancelled(self)
                        elif exception is not None:
                            waiter.add_exception(self)
                        else:
                            waiter.add_result(self)
                    cond.notify_all()
                wakers, self._loop_wakers = self._loop_wakers, None
                callbacks, self._callbacks = self._callbacks, None
                parked, self._parked = self._parked, None
            break
        _release_all(parked)
        if wakers:
            for loop, waker in wakers:
                # Batched per loop (a closed loop drops it: its awaiter is gone).
                call_on_loop(loop, _wake, waker)
        if callbacks:
            if defer:
                _RUNNER.run(self, callbacks)
            else:
                self._invoke(callbacks)
        return True


def _release_all(parked: list[Any] | None) -> None:
    if parked:
        for waiter in parked:
            waiter.release()


def _wake(waker: asyncio.Future[None]) -> None:
    if not waker.done():
        waker.set_result(None)


class _CallbackRunner:
    """Runs deferred done-callbacks in order on one thread that exits when idle.

    Short-lived and non-daemon: a program ends with no thread of ours left, and a
    callback queued before interpreter exit still runs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[tuple[OperationFuture[Any], list[Any]]] = deque()
        self._active = False

    def run(self, future: OperationFuture[Any], callbacks: list[Any]) -> None:
        with self._lock:
            self._queue.append((future, callbacks))
            if self._active:
                return
            self._active = True
        thread = threading.Thread(target=self._drain, name="ephemeral-actors-callbacks")
        try:
            thread.start()
        except RuntimeError:
            # Interpreter finalization forbids new threads: run them here, late but run.
            self._drain()

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._active = False
                    return
                future, callbacks = self._queue.popleft()
            try:
                future._invoke(callbacks)
            except BaseException:
                # _invoke logs Exceptions; a SystemExit or KeyboardInterrupt from a
                # callback must not end this thread with callbacks still queued.
                logger.exception(
                    "exception calling callback for %r",
                    future,
                    extra={"event": "future.callback_failed", "operation_id": future.operation_id},
                )


_RUNNER = _CallbackRunner()

OutcomeFuture = OperationFuture
"""The former name, still imported by the coordinator core until it is rewired."""
