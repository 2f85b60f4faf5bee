"""Type-checked only (mypy runs over it in CI): the public API's types hold up in use."""

from __future__ import annotations

import pykka

from ephemeral_actors import (
    CoordinatorOptions,
    CoordinatorStats,
    KeyedWorkCoordinator,
    ResultCoordinator,
    WorkCoordinator,
)


def typed_proxy(coordinator: WorkCoordinator[int]) -> None:
    proxy = coordinator.proxy()
    op_id: pykka.Future[int] = proxy.enqueue(1)
    stats: pykka.Future[CoordinatorStats] = proxy.stats()
    pinned: pykka.Future[bool] = proxy.pin(op_id.get())
    proxy.pause().get()
    assert stats.get().total_enqueued >= 0
    assert pinned.get() in (True, False)


def typed_results() -> None:
    with ResultCoordinator(len, CoordinatorOptions(max_concurrency=2)) as results:
        results.enqueue("abc")
    lengths: tuple[int, ...] = results.get_results()
    assert lengths == (3,)


def first_letter(text: str) -> str:
    return text[0]


def typed_keyed() -> None:
    with KeyedWorkCoordinator(first_letter, print) as keyed:
        keyed.enqueue("a1")
    assert keyed.get_pending_count_for_key("a") == 0


async def double(x: int) -> int:
    return 2 * x


def typed_async_results() -> None:
    with ResultCoordinator(double) as results:
        results.enqueue(2)
    doubled: tuple[int, ...] = results.get_results()
    assert doubled == (4,)
