"""An asyncio pipeline: coroutine bodies, backpressure, and an event loop that never stalls.

The producer offers 100 URLs to a coordinator whose backlog holds 10. `enqueue_async`
waits for space without blocking the loop, so a ticker task keeps ticking the whole
time. The bodies are coroutines too; they run on the library's shared event loop.

Run: python examples/asyncio_pipeline.py
"""

from __future__ import annotations

import asyncio
import time

from ephemeral_actors import CoordinatorOptions, ResultCoordinator


async def fetch(url: str) -> int:
    await asyncio.sleep(0.04)  # stands in for an HTTP request
    return len(url)


async def ticker(coordinator: ResultCoordinator[str, int], stop: asyncio.Event) -> list[float]:
    """Tick every 10 ms; return how late each tick was, and watch the backlog."""
    lateness: list[float] = []
    full_ticks = 0
    while not stop.is_set():
        due = time.monotonic() + 0.01
        await asyncio.sleep(0.01)
        lateness.append(time.monotonic() - due)
        full_ticks += coordinator.pending_count == coordinator.options.max_tracked_operations
    print(f"ticker: {len(lateness)} ticks, {full_ticks} of them with the backlog full")
    return lateness


async def main() -> None:
    options = CoordinatorOptions(name="fetcher", max_concurrency=5, max_tracked_operations=10)
    async with ResultCoordinator[str, int](fetch, options) as fetcher:
        stop = asyncio.Event()
        ticks = asyncio.create_task(ticker(fetcher, stop))
        started = time.monotonic()
        for n in range(100):
            await fetcher.enqueue_async(f"https://example.com/items/{n}")  # waits for space
        print(f"producer: 100 accepted in {time.monotonic() - started:.2f} s (backpressure)")
        length = await fetcher.submit_async("https://example.com/health")  # awaits the result
        print(f"submit_async: {length}")
        fetcher.complete()
        await fetcher.drain_async()  # the loop stays free while the last items finish
        stop.set()
        lateness = await ticks
    stats = fetcher.stats()
    print(f"fetcher: {stats.total_completed} completed, {stats.total_failed} failed")
    print(f"event loop: longest tick delay {max(lateness) * 1000:.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
