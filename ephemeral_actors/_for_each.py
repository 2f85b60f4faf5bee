"""`for_each` / `for_each_async`: a one-shot bounded parallel loop (SPEC section 7)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

from ephemeral_actors._coordinators._base import CoordinatorBase, run_blocking
from ephemeral_actors._options import merge_options

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ephemeral_actors._options import CoordinatorOptions, OptionsKwargs
    from ephemeral_actors._records import CoordinatorStats

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
) -> CoordinatorBase[T]:
    options = merge_options(options, option_fields, where=where)
    if not isinstance(items, Iterable | AsyncIterable):
        raise TypeError(
            f"items must be an iterable or async iterable, got {type(items).__name__} {items!r}"
        )
    if key is None:
        from ephemeral_actors._coordinators._work import WorkCoordinator  # noqa: PLC0415

        return WorkCoordinator.from_iterable(items, body, options)
    from ephemeral_actors._coordinators._keyed import KeyedWorkCoordinator  # noqa: PLC0415

    # The key= form checks the selector (callable, not a coroutine function) by that name.
    return KeyedWorkCoordinator.from_iterable(items, body, options, key=key)


def for_each(
    items: Iterable[T] | AsyncIterable[T],
    body: Callable[[T], Any] | Callable[[T], Awaitable[Any]],
    options: CoordinatorOptions | None = None,
    *,
    key: Callable[[T], Any] | None = None,
    **option_fields: Unpack[OptionsKwargs],
) -> CoordinatorStats:
    """Run `body` over `items` with bounded concurrency and return the final stats.

    Options come as `options=`, as keywords (`for_each(urls, fetch, max_concurrency=8)`)
    or both (keywords win). Body failures are recorded, not raised: the returned
    stats count them. With `key`, items of one key run in order (see
    `KeyedWorkCoordinator`). An interrupt (`KeyboardInterrupt`) stops intake, asks
    running work to cancel and propagates.

    Raises:
        BaseException: Whatever `items` raised while being iterated.
    """
    coordinator = _build(items, body, options, key, option_fields=option_fields, where="for_each")
    try:
        coordinator.drain()
    except BaseException:
        coordinator.close()
        raise
    coordinator.close()
    return coordinator.stats()


async def for_each_async(
    items: Iterable[T] | AsyncIterable[T],
    body: Callable[[T], Any] | Callable[[T], Awaitable[Any]],
    options: CoordinatorOptions | None = None,
    *,
    key: Callable[[T], Any] | None = None,
    **option_fields: Unpack[OptionsKwargs],
) -> CoordinatorStats:
    """`for_each` for asyncio: awaits without blocking the event loop.

    Cancelling the awaiting task stops intake, asks running work to cancel and
    re-raises `CancelledError`.
    """
    coordinator = _build(
        items, body, options, key, option_fields=option_fields, where="for_each_async"
    )
    try:
        await coordinator.drain_async()
    except BaseException:
        await asyncio.shield(run_blocking(coordinator.close))
        raise
    await run_blocking(coordinator.close)
    return coordinator.stats()
