"""Coroutine bodies run on the caller's event loop; the async default concurrency (SPEC 15)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator

import pytest

from ephemeral_actors import (
    CoordinatorOptions,
    OperationCancelledError,
    ResultCoordinator,
    WorkCoordinator,
    for_each_async,
)
from tests.conftest import WAIT


def test_bodies_use_an_asyncio_queue_made_in_main_while_the_loop_keeps_running():
    """An asyncio.Queue bound to main()'s loop works in bodies; a ticker keeps ticking."""

    async def main() -> tuple[list[int], int, set[int]]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        threads: set[int] = set()
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.001)

        async def body(item: int) -> None:
            threads.add(threading.get_ident())
            await queue.put(item)  # bound to main()'s loop
            await asyncio.sleep(0.005)

        tick_task = asyncio.create_task(ticker())
        async with WorkCoordinator(body, max_concurrency=4) as work:
            for i in range(20):
                await work.enqueue_async(i)
            await work.wait_idle_async(WAIT)
        stop.set()
        await tick_task
        got = sorted(queue.get_nowait() for _ in range(queue.qsize()))
        return got, ticks, threads

    got, ticks, threads = asyncio.run(main())
    assert got == list(range(20))
    assert ticks > 0
    assert threads == {threading.get_ident()}  # asyncio.run runs main() in this thread


def test_async_with_binds_a_coordinator_made_outside_the_loop():
    """Built outside any loop, then entered with `async with`: bodies run on that loop."""
    used: list[asyncio.AbstractEventLoop] = []

    async def body(_: int) -> None:
        used.append(asyncio.get_running_loop())

    work = WorkCoordinator(body)

    async def main() -> asyncio.AbstractEventLoop:
        async with work:
            for i in range(5):
                work.enqueue(i)
        return asyncio.get_running_loop()

    loop = asyncio.run(main())
    assert used == [loop] * 5


def test_outside_a_running_loop_the_shared_loop_is_used():
    """Built and used outside a loop, bodies run on the library's shared loop thread."""
    names: list[str] = []

    async def body(_: int) -> None:
        names.append(threading.current_thread().name)

    with WorkCoordinator(body) as work:
        work.enqueue(1)
    assert names == ["ephemeral-actors-shared-loop"]


def test_work_left_when_the_loop_closes_is_cancelled_and_counted(caplog):
    """asyncio.run returning with work queued: running and pending items end cancelled."""
    started = threading.Event()
    holder: list[WorkCoordinator[int]] = []

    async def main() -> None:
        async def body(_: int) -> None:
            started.set()
            await asyncio.sleep(WAIT * 10)

        work = WorkCoordinator(body, max_concurrency=2, name="left-behind")
        holder.append(work)
        for i in range(6):
            work.enqueue(i)
        await asyncio.sleep(0)
        # main() returns with 2 running and 4 pending: asyncio.run cancels the tasks.

    asyncio.run(main())
    work = holder[0]
    try:
        stats = work.stats()
        assert stats.total_cancelled == 6
        assert stats.pending_count == stats.active_count == 0
        assert stats.total_enqueued == 6
        assert all(isinstance(s.error, OperationCancelledError) for s in work.get_failed())
        assert any("left-behind" in r.getMessage() for r in caplog.records)
    finally:
        work.close(WAIT)


def test_a_loop_closed_without_cancelling_cancels_new_work():
    """A loop closed (not by asyncio.run): a later item cannot start there and is cancelled."""
    loop = asyncio.new_event_loop()

    async def build() -> WorkCoordinator[int]:
        async def body(_: int) -> None:
            await asyncio.sleep(0)

        return WorkCoordinator(body)

    work = loop.run_until_complete(build())
    loop.close()
    try:
        work.enqueue(1)
        assert work.total_cancelled == 1
        assert work.is_completed  # intake closed: nothing could run these
    finally:
        work.close(WAIT)


def test_submit_async_on_the_callers_loop():
    """submit_async resolves on the caller's loop with bodies on that loop."""

    async def main() -> list[int]:
        async def double(x: int) -> int:
            await asyncio.sleep(0)
            return 2 * x

        async with ResultCoordinator(double) as results:
            return list(await asyncio.gather(*(results.submit_async(i) for i in range(10))))

    assert asyncio.run(main()) == [2 * i for i in range(10)]


def test_bodies_that_never_suspend_do_not_starve_the_loop():
    """Coroutine bodies that return without suspending still let the loop's other tasks
    run: a worker yields to its loop now and then (every 32 items)."""

    async def main() -> int:
        ticks = 0
        stop = False

        async def ticker() -> None:
            nonlocal ticks
            while not stop:
                ticks += 1
                await asyncio.sleep(0)

        async def body(item: int) -> int:
            return item  # never suspends

        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        async with WorkCoordinator(body, max_concurrency=1, max_tracked_operations=2000) as c:
            for i in range(1000):
                c.enqueue(i)
            before = ticks
            await c.wait_idle_async(WAIT)
            during = ticks - before
        stop = True
        await ticking
        return during

    # One worker runs the 1,000 items; without yields the ticker ran at most once.
    assert asyncio.run(main()) >= 1000 // 32 - 1


async def _never_suspending_source(count: int) -> AsyncIterator[int]:
    for i in range(count):
        yield i


@pytest.mark.parametrize("kind", ["list", "async generator"])
def test_reading_a_large_source_on_the_loop_lets_other_tasks_run(kind):
    """A source read on the bodies' loop with room for all of it is not read in one step:
    the reader yields every 32 items, so other tasks see intake in progress."""

    async def main() -> list[int]:
        seen: list[int] = []
        stop = False

        async def body(item: int) -> int:
            return item

        source = list(range(2000)) if kind == "list" else _never_suspending_source(2000)
        async with WorkCoordinator.from_iterable(
            source, body, max_concurrency=1, max_tracked_operations=5000
        ) as c:

            async def watcher() -> None:
                while not stop:
                    seen.append(c.total_enqueued)
                    await asyncio.sleep(0)

            watching = asyncio.create_task(watcher())
            await asyncio.wait_for(c.drain_async(), WAIT)
            stop = True
            await watching
        return seen

    seen = asyncio.run(main())
    assert any(0 < enqueued < 2000 for enqueued in seen), seen


class _SelfPipeCountingLoop(asyncio.SelectorEventLoop):
    """Counts wake-ups through the self-pipe (`call_soon_threadsafe` from any thread)."""

    wakeups = 0

    def _write_to_self(self) -> None:
        self.wakeups += 1
        super()._write_to_self()  # type: ignore[misc]


@pytest.mark.parametrize("waits_for_space", [False, True], ids=["space", "full-backlog"])
def test_submit_async_on_the_bodies_loop_needs_no_cross_thread_wakeup(waits_for_space):
    """With bodies on the caller's loop everything happens on that thread: answers and
    results set their futures directly, never through the loop's self-pipe."""
    loop = _SelfPipeCountingLoop()

    async def main() -> tuple[list[int], int]:
        async def double(x: int) -> int:
            await asyncio.sleep(0)
            return 2 * x

        options = {"max_tracked_operations": 4} if waits_for_space else {}
        async with ResultCoordinator(double, max_concurrency=2, **options) as results:
            doubled = await asyncio.gather(*(results.submit_async(i) for i in range(50)))
            return list(doubled), loop.wakeups  # close() itself runs on a thread

    try:
        doubled, wakeups = loop.run_until_complete(main())
    finally:
        loop.close()
    assert doubled == [2 * i for i in range(50)]
    assert wakeups == 0


def test_for_each_async_runs_bodies_on_the_callers_loop():
    """for_each_async with a coroutine body: bodies run on the awaiting task's loop."""

    async def main() -> bool:
        loop = asyncio.get_running_loop()
        loops: set[asyncio.AbstractEventLoop] = set()

        async def body(_: int) -> None:
            loops.add(asyncio.get_running_loop())

        await for_each_async(range(30), body, max_concurrency=5)
        return loops == {loop}

    assert asyncio.run(main())


def test_coroutine_bodies_default_to_100_concurrent():
    """Without an explicit max_concurrency, coroutine bodies get 100, plain ones the CPUs."""

    async def body(_: int) -> None:
        return None

    with WorkCoordinator(body) as work:
        assert work.max_concurrency == 100
        assert work.options.max_concurrency == (os.cpu_count() or 1)
    with WorkCoordinator(lambda _: None) as plain:
        assert plain.max_concurrency == (os.cpu_count() or 1)
    with WorkCoordinator(body, max_concurrency=3) as explicit:
        assert explicit.max_concurrency == 3
    explicit_default = CoordinatorOptions(max_concurrency=os.cpu_count() or 1)
    with WorkCoordinator(body, explicit_default) as given:
        assert given.max_concurrency == (os.cpu_count() or 1)


def test_the_default_stays_a_default_through_replace_and_keywords():
    """Options merged with keywords keep an unset max_concurrency unset."""

    async def body(_: int) -> None:
        return None

    with WorkCoordinator(body, CoordinatorOptions(name="n"), max_tracked_operations=5) as work:
        assert work.max_concurrency == 100


def test_many_coroutine_bodies_wait_at_once_by_default():
    """All 50 coroutine bodies are in flight together under the default limit."""

    async def main() -> int:
        arrived = 0
        all_in = asyncio.Event()

        async def body(_: int) -> None:
            nonlocal arrived
            arrived += 1
            if arrived == 50:
                all_in.set()
            await asyncio.wait_for(all_in.wait(), WAIT)

        async with WorkCoordinator(body) as work:
            for i in range(50):
                work.enqueue(i)
        return work.total_completed

    assert asyncio.run(main()) == 50


@pytest.mark.parametrize("value", [-1, "1", True])
def test_exit_timeout_is_validated(value):
    """exit_timeout must be seconds >= 0; the error names the field."""
    with pytest.raises((TypeError, ValueError), match="exit_timeout"):
        CoordinatorOptions(exit_timeout=value)


def test_enqueue_async_from_main_on_the_bodies_loop_still_waits_for_space():
    """Backpressure holds for async producers on the bodies' loop (only bodies skip it)."""

    async def main() -> int:
        gate = asyncio.Event()

        async def body(_: int) -> None:
            await gate.wait()

        async with WorkCoordinator(body, max_concurrency=1, max_tracked_operations=2) as work:
            for i in range(3):  # one runs, two wait: the backlog is full
                await work.enqueue_async(i)
            await asyncio.sleep(0)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(work.enqueue_async(3), 0.05)
            pending = work.pending_count
            gate.set()
        return pending

    assert asyncio.run(main()) == 2
