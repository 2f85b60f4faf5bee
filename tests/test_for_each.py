"""for_each / for_each_async: a one-shot bounded parallel loop (SPEC section 7)."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from ephemeral_actors import (
    CoordinatorOptions,
    CoordinatorStats,
    KeyedWorkCoordinator,
    WorkCoordinator,
    current_operation,
    for_each,
    for_each_async,
)
from ephemeral_actors.testing import library_threads
from tests.conftest import WAIT
from tests.coordinators.test_work import Tracker, gated


def fails_on_multiples_of_three(item: int) -> None:
    if item % 3 == 0:
        raise ValueError(item)


def wait_for_cancellation() -> bool:
    """Cooperative body helper: poll the running operation until cancel is requested."""
    op = current_operation()
    deadline = time.monotonic() + WAIT
    while not op.cancelled and time.monotonic() < deadline:
        time.sleep(0.001)
    return op.cancelled


# -- for_each -----------------------------------------------------------------------------


def test_for_each_returns_stats_counting_completed_and_failed():
    """for_each returns CoordinatorStats that count successes and failures; failures are not raised."""
    seen: list[int] = []
    lock = threading.Lock()

    def body(item: int) -> None:
        with lock:
            seen.append(item)
        fails_on_multiples_of_three(item)

    stats = for_each(range(30), body, CoordinatorOptions(max_concurrency=4))
    assert isinstance(stats, CoordinatorStats)
    assert (stats.total_enqueued, stats.total_completed, stats.total_failed) == (30, 20, 10)
    assert stats.total_cancelled == 0
    assert (stats.pending_count, stats.active_count) == (0, 0)
    assert stats.is_completed and stats.is_drained
    assert sorted(seen) == list(range(30))


def test_for_each_with_default_options():
    """for_each works without options."""
    stats = for_each(iter(range(10)), lambda _: None)
    assert stats.total_completed == 10


def test_for_each_empty_source_returns_at_once():
    """An empty source returns zero counts without running the body."""
    calls: list[Any] = []
    stats = for_each([], calls.append)
    assert calls == []
    assert stats.total_enqueued == 0
    assert stats.total_completed == stats.total_failed == 0
    assert stats.is_drained


def test_for_each_respects_max_concurrency():
    """No more than max_concurrency bodies run at once, and the limit is reached."""
    tracker, gate = Tracker(), threading.Event()
    results: list[CoordinatorStats] = []
    runner = threading.Thread(
        target=lambda: results.append(
            for_each(range(20), gated(tracker, gate), CoordinatorOptions(max_concurrency=3))
        )
    )
    runner.start()
    try:
        tracker.wait_for(lambda: tracker.current == 3)
        with tracker.cond:
            assert not tracker.cond.wait_for(lambda: tracker.current > 3, 0.2)
    finally:
        gate.set()
        runner.join(WAIT)
    assert not runner.is_alive()
    assert tracker.peak == 3
    assert results[0].total_completed == 20


def test_for_each_source_exception_propagates():
    """An exception raised by the source propagates from for_each after earlier items ran."""
    seen: list[int] = []

    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise OSError("source broke")

    before = set(library_threads())
    with pytest.raises(OSError, match="source broke"):
        for_each(source(), seen.append)
    assert sorted(seen) == [1, 2]
    assert set(library_threads()) - before == set()


def test_for_each_keyed_keeps_per_key_order():
    """With key=, items of one key run in their source order."""
    started: dict[int, list[int]] = {}
    lock = threading.Lock()

    def body(item: tuple[int, int]) -> None:
        with lock:
            started.setdefault(item[0], []).append(item[1])

    items = [(seq % 5, seq) for seq in range(200)]
    stats = for_each(items, body, CoordinatorOptions(max_concurrency=4), key=lambda i: i[0])
    assert stats.total_completed == 200
    assert started == {k: list(range(k, 200, 5)) for k in range(5)}


def test_for_each_keyed_failures_are_counted():
    """Keyed for_each counts failures in the stats instead of raising."""
    stats = for_each(range(12), fails_on_multiples_of_three, key=lambda i: i % 2)
    assert (stats.total_completed, stats.total_failed) == (8, 4)


def test_keyed_for_each_of_a_list_computes_keys_in_the_caller_and_starts_no_reader():
    """A list with key=: the caller computes the keys (the selector never runs in the
    supervisor's turn), the supervisor draws the items, and no source thread starts."""
    selector_threads: set[threading.Thread] = set()
    readers: list[str] = []

    def key(item: int) -> int:
        selector_threads.add(threading.current_thread())
        return item % 4

    def body(_: int) -> None:
        readers.extend(t.name for t in threading.enumerate() if t.name.endswith("-source"))

    stats = for_each(list(range(300)), body, max_concurrency=3, max_tracked_operations=5, key=key)
    assert (stats.total_enqueued, stats.total_completed) == (300, 300)
    assert selector_threads == {threading.current_thread()}
    assert readers == []


@pytest.mark.parametrize("bad", ["raises", "unhashable"])
def test_keyed_for_each_runs_the_items_before_a_failing_key_then_raises(bad):
    """A selector that raises (or returns an unhashable key) at one item: the items
    before it run, none after it, and `for_each` raises that error, as when a reader
    thread fed them."""
    ran: list[int] = []

    def key(item: int) -> Any:
        if item == 7:
            if bad == "raises":
                raise LookupError("no key for 7")
            return [item]
        return item % 3

    expected = LookupError if bad == "raises" else TypeError
    with pytest.raises(expected):
        for_each(list(range(20)), ran.append, max_concurrency=2, key=key)
    assert sorted(ran) == list(range(7))


def test_an_interrupt_while_keys_are_computed_leaves_nothing_running():
    """Ctrl-C in the selector (the caller's thread computes keys): for_each raises it
    and no library thread is left."""
    before = set(library_threads())

    def key(item: int) -> int:
        if item == 50:
            raise KeyboardInterrupt
        return item % 2

    with pytest.raises(KeyboardInterrupt):
        for_each(list(range(100)), lambda _: None, key=key)
    assert set(library_threads()) - before == set()


def test_for_each_rejects_a_non_callable_key():
    """key must be callable."""
    with pytest.raises(TypeError, match="key"):
        for_each([1], lambda _: None, key=3)  # type: ignore[arg-type]


def test_for_each_with_a_coroutine_body():
    """for_each runs coroutine bodies too."""
    seen: list[int] = []

    async def body(item: int) -> None:
        await asyncio.sleep(0)
        seen.append(item)

    stats = for_each(range(50), body, CoordinatorOptions(max_concurrency=10))
    assert stats.total_completed == 50
    assert sorted(seen) == list(range(50))


def test_keyboard_interrupt_from_the_source_propagates_and_leaves_no_threads():
    """A KeyboardInterrupt raised while iterating the source propagates from for_each; no thread is left."""
    seen: list[int] = []

    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise KeyboardInterrupt

    before = set(library_threads())
    with pytest.raises(KeyboardInterrupt):
        for_each(source(), seen.append, CoordinatorOptions(max_concurrency=2))
    assert set(library_threads()) - before == set()
    assert set(seen) <= {1, 2}


def test_keyboard_interrupt_from_the_source_cancels_running_and_pending_work():
    """An interrupt from the source drops the backlog and asks running bodies to cancel."""
    started = threading.Event()
    ran: list[int] = []
    saw_cancel: list[bool] = []

    def body(item: int) -> None:
        ran.append(item)
        if item == 0:
            started.set()
            saw_cancel.append(wait_for_cancellation())

    def source() -> Iterator[int]:
        yield 0
        yield 1
        yield 2
        assert started.wait(WAIT)
        raise KeyboardInterrupt

    before = set(library_threads())
    with pytest.raises(KeyboardInterrupt):
        for_each(source(), body, CoordinatorOptions(max_concurrency=1))
    assert set(library_threads()) - before == set()
    assert ran == [0]
    assert saw_cancel == [True]


# -- for_each_async -------------------------------------------------------------------------


def test_for_each_async_with_a_sync_source():
    """for_each_async over a plain iterable returns stats counting successes and failures."""

    async def main() -> CoordinatorStats:
        return await for_each_async(range(30), fails_on_multiples_of_three)

    stats = asyncio.run(main())
    assert isinstance(stats, CoordinatorStats)
    assert (stats.total_completed, stats.total_failed) == (20, 10)
    assert stats.is_drained


@pytest.mark.parametrize(
    "items",
    [
        list(range(20)),
        tuple(range(20)),
        range(20),
        dict.fromkeys(range(20)),
        dict.fromkeys(range(20)).keys(),
        collections.deque(range(20)),
    ],
    ids=["list", "tuple", "range", "dict", "dict_keys", "deque"],
)
def test_for_each_async_reads_an_in_memory_collection_on_the_callers_loop(items):
    """With coroutine bodies, an in-memory collection is read on the loop: no reader thread.

    The backlog holds 4 of the 20 items, so a reader thread would still be waiting for
    space (alive) while every body runs.
    """
    readers_seen: list[list[str]] = []
    order: list[int] = []

    async def body(item: int) -> None:
        readers_seen.append([t.name for t in library_threads() if t.name.endswith("-source")])
        order.append(item)
        await asyncio.sleep(0)

    async def main() -> CoordinatorStats:
        return await for_each_async(items, body, max_concurrency=1, max_tracked_operations=4)

    stats = asyncio.run(main())
    assert stats.total_completed == 20
    assert order == list(range(20))
    assert readers_seen == [[]] * 20


def test_for_each_and_from_iterable_read_an_in_memory_collection_on_the_bodies_loop():
    """Coroutine bodies on the shared loop: a list is read there too, by `for_each` and by
    `from_iterable` (keyed as well), with no reader thread while bodies run."""
    readers_seen: list[list[str]] = []

    async def body(item: int) -> None:
        readers_seen.append([t.name for t in library_threads() if t.name.endswith("-source")])
        await asyncio.sleep(0)

    options = CoordinatorOptions(max_concurrency=1, max_tracked_operations=4)
    stats = for_each(list(range(20)), body, options)
    assert stats.total_completed == 20
    with WorkCoordinator.from_iterable(list(range(20)), body, options) as plain:
        plain.drain(WAIT)
        assert plain.total_completed == 20
    with KeyedWorkCoordinator.from_iterable(
        list(range(20)), lambda item: item % 3, body, options
    ) as keyed:
        keyed.drain(WAIT)
        assert keyed.total_completed == 20
    assert readers_seen == [[]] * 60


@pytest.mark.parametrize("kind", ["list", "generator"])
def test_with_sync_bodies_a_list_needs_no_reader_thread_and_a_generator_has_one(kind):
    """With plain bodies the supervisor takes a list's items itself, in its turns, as
    backlog space frees: no thread reads it. A generator may block in `next()`: a
    thread reads it, never a library actor's turn."""
    readers_seen: list[list[str]] = []

    def body(item: int) -> None:
        readers_seen.append([t.name for t in library_threads() if t.name.endswith("-source")])

    source = list(range(20)) if kind == "list" else (i for i in range(20))
    stats = for_each(source, body, max_concurrency=1, max_tracked_operations=4)
    assert stats.total_completed == 20
    if kind == "list":
        assert readers_seen == [[]] * 20
    else:
        assert all(seen for seen in readers_seen[:10]), readers_seen


def test_a_collection_source_that_changes_while_read_is_raised_by_drain():
    """A dict source that grows while its items wait for space: `drain()` raises what
    iterating it raised (as for any source), and what was accepted ran."""
    items = {i: i for i in range(10)}
    gate = threading.Event()
    tracker = Tracker()
    c = WorkCoordinator.from_iterable(
        items, gated(tracker, gate), max_concurrency=1, max_tracked_operations=2
    )
    try:
        tracker.wait_for(lambda: len(tracker.started) == 1)
        assert c._core.wait_for(lambda: c._core.npending == 2, time.monotonic() + WAIT)
        items[99] = 99
        gate.set()
        with pytest.raises(RuntimeError, match="changed size during iteration"):
            c.drain(WAIT)
        assert c.total_completed == 3
    finally:
        gate.set()
        c.close(WAIT)


def test_for_each_async_reads_a_generator_on_a_thread():
    """A generator may block in `next()`: it is read on a thread, never on the bodies' loop.

    The source waits for the first body before yielding its second item; read on the
    loop, it would block the loop that body needs, and raise after WAIT seconds.
    """
    first_body_ran = threading.Event()

    def source() -> Iterator[int]:
        yield 0
        assert first_body_ran.wait(WAIT), "the source blocked the loop its bodies run on"
        yield 1

    async def body(item: int) -> None:
        first_body_ran.set()

    async def main() -> CoordinatorStats:
        return await for_each_async(source(), body, max_concurrency=1)

    stats = asyncio.run(main())
    assert stats.total_completed == 2


def test_for_each_async_with_an_async_source_and_async_body():
    """for_each_async consumes an async generator with coroutine bodies."""
    seen: list[int] = []

    async def source() -> AsyncIterator[int]:
        for i in range(40):
            await asyncio.sleep(0)
            yield i

    async def body(item: int) -> None:
        await asyncio.sleep(0)
        seen.append(item)

    async def main() -> CoordinatorStats:
        return await for_each_async(source(), body, CoordinatorOptions(max_concurrency=8))

    stats = asyncio.run(main())
    assert stats.total_completed == 40
    assert sorted(seen) == list(range(40))


def test_for_each_async_empty_source_returns_at_once():
    """An empty async source returns zero counts."""

    async def source() -> AsyncIterator[int]:
        return
        yield  # pragma: no cover

    async def main() -> CoordinatorStats:
        return await for_each_async(source(), lambda _: None)

    stats = asyncio.run(main())
    assert stats.total_enqueued == 0
    assert stats.is_drained


def test_for_each_async_keyed_keeps_per_key_order():
    """for_each_async with key= keeps each key's order."""
    started: dict[str, list[int]] = {}

    async def body(item: tuple[str, int]) -> None:
        await asyncio.sleep(0)
        started.setdefault(item[0], []).append(item[1])

    items = [("abc"[seq % 3], seq) for seq in range(90)]

    async def main() -> CoordinatorStats:
        return await for_each_async(
            items, body, CoordinatorOptions(max_concurrency=6), key=lambda i: i[0]
        )

    stats = asyncio.run(main())
    assert stats.total_completed == 90
    assert started == {k: [s for (kk, s) in items if kk == k] for k in "abc"}


def test_for_each_async_source_exception_propagates():
    """An async source that raises propagates its exception from for_each_async."""

    async def source() -> AsyncIterator[int]:
        yield 1
        raise ConnectionResetError("gone")

    async def main() -> None:
        await for_each_async(source(), lambda _: None)

    before = set(library_threads())
    with pytest.raises(ConnectionResetError, match="gone"):
        asyncio.run(main())
    assert set(library_threads()) - before == set()


def test_cancelling_for_each_async_propagates_and_leaves_no_threads():
    """Cancelling the task running for_each_async cancels work cooperatively and re-raises CancelledError."""
    saw_cancel: list[bool] = []
    ran: list[int] = []
    before = set(library_threads())

    async def main() -> None:
        loop = asyncio.get_running_loop()
        started = asyncio.Event()

        def body(item: int) -> None:
            ran.append(item)
            loop.call_soon_threadsafe(started.set)
            saw_cancel.append(wait_for_cancellation())
            current_operation().raise_if_cancelled()

        task = asyncio.create_task(
            for_each_async(range(10), body, CoordinatorOptions(max_concurrency=1))
        )
        await asyncio.wait_for(started.wait(), WAIT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert ran == [0]
    assert saw_cancel == [True]
    assert set(library_threads()) - before == set()


def test_cancelling_for_each_async_with_coroutine_bodies():
    """Task cancellation reaches coroutine bodies through current_operation().cancelled."""
    saw_cancel: list[bool] = []
    before = set(library_threads())

    async def main() -> None:
        loop = asyncio.get_running_loop()
        started = asyncio.Event()

        async def body(item: int) -> None:
            op = current_operation()
            loop.call_soon_threadsafe(started.set)
            deadline = time.monotonic() + WAIT
            # Operation.cancelled is a flag with no event to await: a body polls it.
            while not op.cancelled and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.001)
            saw_cancel.append(op.cancelled)
            op.raise_if_cancelled()

        task = asyncio.create_task(
            for_each_async(range(3), body, CoordinatorOptions(max_concurrency=3))
        )
        await asyncio.wait_for(started.wait(), WAIT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert saw_cancel
    assert all(saw_cancel)
    assert set(library_threads()) - before == set()


def test_keyboard_interrupt_from_an_async_source_cancels_and_propagates():
    """An async source raising KeyboardInterrupt cancels running work and propagates from for_each_async."""
    saw_cancel: list[bool] = []
    ran: list[int] = []
    shared: dict[str, Any] = {}
    before = set(library_threads())

    def body(item: int) -> None:
        ran.append(item)
        if item == 0:
            shared["loop"].call_soon_threadsafe(shared["started"].set)
            saw_cancel.append(wait_for_cancellation())

    async def source() -> AsyncIterator[int]:
        # The source runs on the library's shared loop: wait there without blocking it.
        shared["loop"] = asyncio.get_running_loop()
        shared["started"] = asyncio.Event()
        yield 0
        yield 1
        await asyncio.wait_for(shared["started"].wait(), WAIT)
        raise KeyboardInterrupt

    async def main() -> None:
        await for_each_async(source(), body, CoordinatorOptions(max_concurrency=1))

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main())
    assert ran == [0]
    assert saw_cancel == [True]
    assert set(library_threads()) - before == set()
