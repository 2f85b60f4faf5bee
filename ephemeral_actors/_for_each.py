"""`for_each` / `for_each_async`: a one-shot bounded parallel loop (SPEC section 7)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

from ephemeral_actors._coordinators._base import CoordinatorBase, run_blocking
from ephemeral_actors._coordinators._loops import shared_loop_only
from ephemeral_actors._errors import OperationCancelledError
from ephemeral_actors._options import merge_options

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ephemeral_actors._options import CoordinatorOptions, OptionsKwargs
    from ephemeral_actors._records import CoordinatorStats, OperationSnapshot

__all__ = ["for_each", "for_each_async"]

T = TypeVar("T")


def _build(
    items: Iterable[T] | AsyncIterable[T],
    body: Callable[[T], Any] | Callable[[T], Awaitable[Any]],
    options: CoordinatorOptions | None,
    key: Callable[[T], Any] | None,
    *,
    option_fields: OptionsKwargs,
    where: str,
    fail_fast: _FailFast | None,
) -> CoordinatorBase[T]:
    options = merge_options(options, option_fields, where=where)
    if not isinstance(items, Iterable | AsyncIterable):
        raise TypeError(
            f"items must be an iterable or async iterable, got {type(items).__name__} {items!r}"
        )
    coordinator: CoordinatorBase[T]
    if key is None:
        from ephemeral_actors._coordinators._work import WorkCoordinator  # noqa: PLC0415

        coordinator = WorkCoordinator(body, options)
    else:
        from ephemeral_actors._coordinators._keyed import KeyedWorkCoordinator  # noqa: PLC0415

        # The key= form checks the selector (callable, not a coroutine function) by name.
        coordinator = KeyedWorkCoordinator(body, options, key=key)
    if fail_fast is not None:
        # Watching before the first item is read, so no failure can go unseen.
        coordinator._core.fail_fast()
        coordinator.add_observer(fail_fast.observe)
    # A blocking `for_each` waits for the run anyway: it may compute keys itself.
    coordinator._start_source(items, caller_waits=where == "for_each")
    return coordinator


class _FailFast:
    """`fail_fast=True`: the failures to raise once the rest is cancelled (SPEC 16).

    The supervisor cancels the coordinator in the turn that records the first failure
    (`Core.fail_fast`). This observer runs on the coordinator's callbacks actor once an
    operation ended, so the failures it collects are complete when `drain()` returns.
    """

    def __init__(self) -> None:
        self.errors: list[BaseException] = []

    def observe(self, snapshot: OperationSnapshot) -> None:
        error = snapshot.error
        # Cancellations (the ones the first failure causes included) are not failures.
        if error is None or isinstance(error, OperationCancelledError):
            return
        self.errors.append(error)

    def raise_failures(self) -> None:
        errors = self.errors
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise BaseExceptionGroup(f"{len(errors)} bodies failed (fail_fast=True)", errors)


def for_each(
    items: Iterable[T] | AsyncIterable[T],
    body: Callable[[T], Any] | Callable[[T], Awaitable[Any]],
    options: CoordinatorOptions | None = None,
    *,
    key: Callable[[T], Any] | None = None,
    fail_fast: bool = False,
    **option_fields: Unpack[OptionsKwargs],
) -> CoordinatorStats:
    """Run `body` over `items` with bounded concurrency and return the final stats.

    Options come as `options=`, as keywords (`for_each(urls, fetch, max_concurrency=8)`)
    or both (keywords win). Body failures are recorded, not raised: the returned
    stats count them. With `key`, items of one key run in order (see
    `KeyedWorkCoordinator`). An interrupt (`KeyboardInterrupt`) stops intake, asks
    running work to cancel and propagates.

    With `fail_fast=True` the first body failure stops intake, cancels the items not
    started (and asks running ones to cancel) and is raised once the running ones
    returned; if several bodies failed meanwhile, an `ExceptionGroup` of them is.
    Cancellations are not failures. (Added in version 0.2.0.)

    Called while an event loop runs in this thread, coroutine bodies still run on the
    library's shared loop: this call blocks the thread, so that loop could not run them.

    Raises:
        BaseException: Whatever `items` raised while being iterated; with
            `fail_fast`, the first body failure (or an `ExceptionGroup`).
    """
    watch = _FailFast() if _check_fail_fast(fail_fast) else None
    with shared_loop_only():
        coordinator = _build(
            items,
            body,
            options,
            key,
            option_fields=option_fields,
            where="for_each",
            fail_fast=watch,
        )
    try:
        coordinator.drain()
    except BaseException:
        coordinator.close()
        raise
    coordinator.close()
    if watch is not None:
        watch.raise_failures()
    return coordinator.stats()


def _check_fail_fast(fail_fast: object) -> bool:
    if not isinstance(fail_fast, bool):
        raise TypeError(f"fail_fast must be a bool, got {type(fail_fast).__name__} {fail_fast!r}")
    return fail_fast


async def for_each_async(
    items: Iterable[T] | AsyncIterable[T],
    body: Callable[[T], Any] | Callable[[T], Awaitable[Any]],
    options: CoordinatorOptions | None = None,
    *,
    key: Callable[[T], Any] | None = None,
    fail_fast: bool = False,
    **option_fields: Unpack[OptionsKwargs],
) -> CoordinatorStats:
    """`for_each` for asyncio: awaits without blocking the event loop.

    Coroutine bodies run on the awaiting task's loop; with them, so does the reading
    of `items` when it is an in-memory collection (a list, tuple, range, set, dict or
    deque). With plain bodies (and no key) the supervisor takes such a collection's
    items itself. Other iterables are read on a thread.
    Cancelling the awaiting task stops intake, asks running work to cancel and
    re-raises `CancelledError`.
    `fail_fast` is as in `for_each`.
    """
    watch = _FailFast() if _check_fail_fast(fail_fast) else None
    coordinator = _build(
        items,
        body,
        options,
        key,
        option_fields=option_fields,
        where="for_each_async",
        fail_fast=watch,
    )
    try:
        await coordinator.drain_async()
    except BaseException:
        await asyncio.shield(run_blocking(coordinator.close))
        raise
    await run_blocking(coordinator.close)
    if watch is not None:
        watch.raise_failures()
    return coordinator.stats()
