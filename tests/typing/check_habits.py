"""Type-checked only (mypy runs over it in CI): results, registry keys, option keywords."""

from __future__ import annotations

from typing import Any, assert_type

from ephemeral_actors import (
    CoordinatorKey,
    CoordinatorOptions,
    CoordinatorRegistry,
    KeyedWorkCoordinator,
    OperationFuture,
    ResultCoordinator,
    WorkCoordinator,
    for_each,
)
from ephemeral_actors._coordinators._base import CoordinatorBase


def length(text: str) -> int:
    return len(text)


async def double(x: int) -> int:
    return 2 * x


def first_letter(text: str) -> str:
    return text[0]


def show(text: str) -> None:
    print(text)


async def async_show(text: str) -> None:
    print(text)


def submit_is_typed_by_the_result() -> None:
    with ResultCoordinator(length) as results:
        future = results.submit("abc")
        assert_type(future, OperationFuture[int])
        assert_type(future.get(), int)
        assert_type(future.result(), int)


async def submit_async_is_typed_by_the_result() -> None:
    async with ResultCoordinator(double) as results:
        assert_type(await results.submit_async(2), int)


def registry_keys_type_get() -> None:
    with CoordinatorRegistry() as registry:
        work = registry.register_work("work", show)
        assert_type(work, CoordinatorKey[WorkCoordinator[str]])
        assert_type(registry.get(work), WorkCoordinator[str])
        keyed = registry.register_keyed("keyed", first_letter, show)
        assert_type(registry.get(keyed), KeyedWorkCoordinator[str, str])
        lengths = registry.register_result("lengths", length)
        assert_type(registry.get(lengths), ResultCoordinator[str, int])
        doubled = registry.register_result("doubled", double)
        assert_type(registry.get(doubled), ResultCoordinator[int, int])
        custom = registry.register("custom", lambda _r: WorkCoordinator(async_show))
        assert_type(registry.get(custom), WorkCoordinator[str])
        # A plain name still works, untyped.
        assert_type(registry.get("work"), CoordinatorBase[Any])
        registry.get(work).enqueue(3)  # type: ignore[arg-type]


def option_keywords_are_typed() -> None:
    WorkCoordinator(show, max_concurrency=8, name="x").close()
    WorkCoordinator(show, CoordinatorOptions(), max_concurrency=8).close()
    WorkCoordinator(show, max_concurrency="8").close()  # type: ignore[arg-type]
    WorkCoordinator(show, max_concurency=8).close()  # type: ignore[call-arg]
    ResultCoordinator(length, max_tracked_operations=10).close()
    ResultCoordinator.from_iterable(["a"], length, max_concurrency=2).close()
    WorkCoordinator.from_iterable(["a"], show, name="x").close()
    for_each(["a"], show, max_concurrency=2)
    for_each(["a"], show, key=first_letter, max_concurrency_per_key=2)
    for_each(["a"], show, max_concurency=2)  # type: ignore[call-arg]


def keyed_forms_are_typed() -> None:
    selector_first = KeyedWorkCoordinator(first_letter, show, max_concurrency=2)
    assert_type(selector_first, KeyedWorkCoordinator[str, str])
    body_first = KeyedWorkCoordinator(show, key=first_letter, max_concurrency=2)
    assert_type(body_first, KeyedWorkCoordinator[str, str])
    fed = KeyedWorkCoordinator.from_iterable(["a1"], show, key=first_letter)
    assert_type(fed, KeyedWorkCoordinator[str, str])
    fed_classic = KeyedWorkCoordinator.from_iterable(["a1"], first_letter, show)
    assert_type(fed_classic, KeyedWorkCoordinator[str, str])
    KeyedWorkCoordinator(first_letter, show, key=first_letter)  # type: ignore[call-overload]
