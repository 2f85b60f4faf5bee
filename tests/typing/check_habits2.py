"""Type-checked only (mypy runs over it in CI): offer, wait_idle, as_completed, fail_fast, labels."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import assert_type

from ephemeral_actors import (
    Admission,
    CoordinatorOptions,
    CoordinatorStats,
    KeyedWorkCoordinator,
    OperationFuture,
    ResultCoordinator,
    WorkCoordinator,
    for_each,
    for_each_async,
)


def length(text: str) -> int:
    return len(text)


def show(text: str) -> None:
    print(text)


def offer_answers_an_admission() -> None:
    with WorkCoordinator(show) as work:
        assert_type(work.offer("x"), Admission)
        assert_type(work.try_enqueue("x"), bool)
        assert_type(work.wait_idle(1.0), None)
    with KeyedWorkCoordinator(length, show) as keyed:
        assert_type(keyed.offer("x"), Admission)


async def async_waits() -> None:
    async with WorkCoordinator(show) as work:
        assert_type(await work.wait_idle_async(), None)
        assert_type(await work.wait_idle_async(timeout=2.0), None)


def as_completed_is_typed_by_the_result() -> None:
    with ResultCoordinator(length) as results:
        stream = results.as_completed(timeout=5.0)
        assert_type(stream, Iterator[OperationFuture[int]])
        for future in stream:
            assert_type(future.result(), int)


async def as_completed_async_is_typed_by_the_result() -> None:
    async with ResultCoordinator(length) as results:
        stream = results.as_completed_async()
        assert_type(stream, AsyncIterator[OperationFuture[int]])
        async for future in stream:
            assert_type(future.result(), int)


async def fail_fast_keeps_the_stats_type() -> None:
    assert_type(for_each(["a"], show, fail_fast=True), CoordinatorStats)
    assert_type(await for_each_async(["a"], show, fail_fast=True), CoordinatorStats)


def new_options() -> None:
    options = CoordinatorOptions(describe=str, max_tracked_failures=10, exit_timeout=5.0)
    with WorkCoordinator(show, options, describe=lambda t: t.upper()) as work:
        for snapshot in work.get_failed():
            assert_type(snapshot.label, str | None)
