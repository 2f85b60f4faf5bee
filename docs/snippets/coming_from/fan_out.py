"""Job 1: fan out N calls with at most 8 at once, and collect the results in order.

Each function below is one peer's way of doing it; `main()` runs them all and checks
that they agree. The docs page "Coming from concurrent.futures / asyncio.TaskGroup /
aiometer" shows them side by side (tests/test_coming_from.py runs this file).
"""

from __future__ import annotations

import asyncio
import time


def fetch(n: int) -> int:
    """Stands in for a blocking call (HTTP, database)."""
    time.sleep(0.001)
    return n * n


async def afetch(n: int) -> int:
    """Stands in for an awaitable call."""
    await asyncio.sleep(0.001)
    return n * n


# --8<-- [start:futures]
def with_thread_pool(items: list[int]) -> list[int]:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(fetch, items))


# --8<-- [end:futures]


# --8<-- [start:taskgroup]
async def with_task_group(items: list[int]) -> list[int]:
    limit = asyncio.Semaphore(8)  # TaskGroup itself has no limit

    async def limited(n: int) -> int:
        async with limit:
            return await afetch(n)

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(limited(n)) for n in items]
    return [task.result() for task in tasks]


# --8<-- [end:taskgroup]


# --8<-- [start:aiometer]
async def with_aiometer(items: list[int]) -> list[int]:
    import functools

    import aiometer

    jobs = [functools.partial(afetch, n) for n in items]
    return await aiometer.run_all(jobs, max_at_once=8)


# --8<-- [end:aiometer]


# --8<-- [start:ephemeral]
def with_ephemeral_actors(items: list[int]) -> list[int]:
    from ephemeral_actors import ResultCoordinator

    with ResultCoordinator(fetch, max_concurrency=8) as squares:
        futures = [squares.submit(n) for n in items]
    # Leaving the block drained the coordinator: every future is resolved.
    return [future.get() for future in futures]


async def with_ephemeral_actors_async(items: list[int]) -> list[int]:
    from ephemeral_actors import ResultCoordinator

    async with ResultCoordinator(afetch, max_concurrency=8) as squares:
        return list(await asyncio.gather(*(squares.submit_async(n) for n in items)))


# --8<-- [end:ephemeral]


def main() -> None:
    items = list(range(50))
    expected = [n * n for n in items]
    assert with_thread_pool(items) == expected
    assert asyncio.run(with_task_group(items)) == expected
    assert with_ephemeral_actors(items) == expected
    assert asyncio.run(with_ephemeral_actors_async(items)) == expected
    print("fan out: all agree")


if __name__ == "__main__":
    main()
