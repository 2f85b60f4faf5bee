"""Type-checked only (mypy runs over it in CI): the public API's types hold up in use."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, assert_type

import pykka

from ephemeral_actors import (
    CoordinatorOptions,
    CoordinatorStats,
    KeyedWorkCoordinator,
    OperationFuture,
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


def typed_submit_future(coordinator: WorkCoordinator[int]) -> None:
    future: OperationFuture[Any] = coordinator.submit(1)
    # One object, usable wherever either kind of future is expected.
    as_standard: concurrent.futures.Future[Any] = future
    as_pykka: pykka.Future[Any] = future
    assert_type(future.operation_id, int)
    assert_type(future.cancel(), bool)
    done, _not_done = concurrent.futures.wait([future, as_standard], timeout=1.0)
    for finished in concurrent.futures.as_completed(done):
        finished.result()
    assert pykka.get_all([as_pykka], timeout=1.0)


def typed_future_values(future: OperationFuture[int]) -> None:
    assert_type(future.result(timeout=1.0), int)
    assert_type(future.get(timeout=1.0), int)
    assert_type(future.exception(timeout=1.0), BaseException | None)
    assert_type(future.map(str), pykka.Future[str])


async def typed_await(future: OperationFuture[int]) -> int:
    value = await future
    assert_type(value, int)
    wrapped = asyncio.wrap_future(future)
    assert_type(await wrapped, int)
    return value
