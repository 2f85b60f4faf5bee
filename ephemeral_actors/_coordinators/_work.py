"""`WorkCoordinator` and `ResultCoordinator` (SPEC sections 4 and 6)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar, Unpack, overload

from ephemeral_actors._coordinators import _completions
from ephemeral_actors._coordinators._base import CoordinatorBase
from ephemeral_actors._options import merge_options
from ephemeral_actors._validate import check_seconds_or_none

if TYPE_CHECKING:
    from collections.abc import (
        AsyncIterable,
        AsyncIterator,
        Awaitable,
        Callable,
        Coroutine,
        Iterable,
        Iterator,
    )

    # The future submit() answers. When the coordinator's future class changes, swap
    # this one line and ResultCoordinator.submit() stays typed by the result.
    from ephemeral_actors._coordinators._future import OperationFuture as ResultFuture
    from ephemeral_actors._options import CoordinatorOptions, OptionsKwargs
    from ephemeral_actors._records import OperationSnapshot, ResultSnapshot

__all__ = ["ResultCoordinator", "WorkCoordinator"]

T = TypeVar("T")
R = TypeVar("R")


class WorkCoordinator(CoordinatorBase[T]):
    """A long-lived, bounded, observable queue of work.

    `body(item)` is a plain function or a coroutine function; coroutine bodies run on
    an event loop owned by the library. Processing starts at construction.

    Options come as `options=` (a `CoordinatorOptions`), as keyword arguments
    (`WorkCoordinator(body, max_concurrency=8)`), or both: keywords override
    `options` field by field. An unknown keyword is a `TypeError` naming it.

    Example:
        ```python
        with WorkCoordinator(send_email, CoordinatorOptions(max_concurrency=4)) as emails:
            for message in outbox:
                emails.enqueue(message)
        # leaving the block completes, drains and closes the coordinator
        ```
    """

    _kind = "work"

    def __init__(
        self,
        body: Callable[[T], Any] | Callable[[T], Awaitable[Any]],
        options: CoordinatorOptions | None = None,
        **option_fields: Unpack[OptionsKwargs],
    ) -> None:
        super().__init__(body, merge_options(options, option_fields, where=type(self).__name__))

    @classmethod
    def from_iterable(
        cls,
        source: Iterable[T] | AsyncIterable[T],
        body: Callable[[T], Any] | Callable[[T], Awaitable[Any]],
        options: CoordinatorOptions | None = None,
        **option_fields: Unpack[OptionsKwargs],
    ) -> WorkCoordinator[T]:
        """Build a coordinator that takes its items from `source` until it ends.

        A sync iterable is read on a thread of the coordinator, an async iterable on
        the loop the bodies run on (the caller's with coroutine bodies built in a
        running loop, else the shared one); both wait for backlog space. An in-memory
        collection (a list, tuple, range, set, dict or deque) needs no thread: with
        coroutine bodies it is read on that loop, as it cannot block it; with plain
        bodies and no label or backend the supervisor takes its items itself, as
        backlog space frees. `drain()` waits for the source to end and re-raises its
        exception if it raised.
        """
        coordinator = cls(body, options, **option_fields)
        coordinator._start_source(source)
        return coordinator


class ResultCoordinator(CoordinatorBase[T], Generic[T, R]):
    """A `WorkCoordinator` that keeps each successful body's result in the window.

    Results evaporate with their operation when the window trims or evicts it.
    `get_base_snapshot()` and `on_sample` give plain snapshots without results.
    """

    _kind = "result"
    _capture_results = True

    @overload
    def __init__(
        self: ResultCoordinator[T, R],
        body: Callable[[T], Coroutine[Any, Any, R]],
        options: CoordinatorOptions | None = None,
        **option_fields: Unpack[OptionsKwargs],
    ) -> None: ...
    @overload
    def __init__(
        self: ResultCoordinator[T, R],
        body: Callable[[T], R],
        options: CoordinatorOptions | None = None,
        **option_fields: Unpack[OptionsKwargs],
    ) -> None: ...
    def __init__(
        self,
        body: Callable[[T], Any],
        options: CoordinatorOptions | None = None,
        **option_fields: Unpack[OptionsKwargs],
    ) -> None:
        super().__init__(body, merge_options(options, option_fields, where=type(self).__name__))

    @classmethod
    def from_iterable(
        cls,
        source: Iterable[T] | AsyncIterable[T],
        body: Callable[[T], R] | Callable[[T], Awaitable[R]],
        options: CoordinatorOptions | None = None,
        **option_fields: Unpack[OptionsKwargs],
    ) -> ResultCoordinator[T, R]:
        """Build a result coordinator fed from `source` (see `WorkCoordinator.from_iterable`)."""
        coordinator: ResultCoordinator[T, R] = cls(body, options, **option_fields)  # type: ignore[arg-type]
        coordinator._start_source(source)
        return coordinator

    if TYPE_CHECKING:
        # Typing only: at run time these are CoordinatorBase's own methods, whose
        # outcome here is the body's result. Declaring them keeps submit() free of a
        # wrapper on the hot path while mypy sees `ResultCoordinator[T, R]` results.

        def submit(
            self, item: T, *, priority: int = 0, delay: float | None = None
        ) -> ResultFuture[R]:
            """Accept `item` and return a future of the body's result."""
            ...

        async def submit_async(
            self, item: T, *, priority: int = 0, delay: float | None = None
        ) -> R:
            """Accept `item` and await the body's result without blocking the loop."""
            ...

    def as_completed(self, timeout: float | None = None) -> Iterator[ResultFuture[R]]:
        """Futures of everything accepted before the call, in completion order.

        Like `concurrent.futures.as_completed`: items that already ended come first
        (those still in the window, and failed or cancelled ones still in the failure
        log: a record both trimmed cannot be reported, and a WARNING says how many
        were left out), then each item as it ends. A failed item's future raises its
        exception (traceback cleared); a cancelled item (dropped, signal-cancelled, or
        a body that acknowledged cancellation) comes as a cancelled future. Items
        accepted after the call are not included. Iterating does not close intake.

        Args:
            timeout: Seconds, from the call, for the whole iteration; `None` waits as
                long as it takes.

        Raises:
            TimeoutError: Not every item ended within `timeout` (raised by `next()`).

        Added in version 0.2.0.
        """
        timeout = check_seconds_or_none("timeout", timeout)
        return _completions.as_completed(self._core, timeout)

    def as_completed_async(self, timeout: float | None = None) -> AsyncIterator[ResultFuture[R]]:
        """`as_completed` for `async for`: waits without blocking the event loop.

        The items are fixed at the call, as with `as_completed`.

        Added in version 0.2.0.
        """
        timeout = check_seconds_or_none("timeout", timeout)
        return _completions.as_completed_async(self._core, timeout)

    def get_snapshot(self) -> tuple[ResultSnapshot, ...]:
        """Every operation in the window with its result, oldest first."""
        return super().get_snapshot()  # type: ignore[return-value]

    def get_results(self) -> tuple[R, ...]:
        """Results of the successful operations still in the window, oldest first."""
        return tuple(s.result for s in self.get_snapshot() if s.has_result)

    def get_successful(self) -> tuple[ResultSnapshot, ...]:
        """Snapshots of the successful operations in the window, with results."""
        return tuple(s for s in self.get_snapshot() if s.has_result)

    def get_base_snapshot(self) -> tuple[OperationSnapshot, ...]:
        """The window without results: safe to log or expose."""
        core = self._core
        return core.snapshot(with_results=False)
