"""Throughput and memory of `WorkCoordinator` against its peers, in one process.

Workloads (see benchmarks/README.md and docs/performance.md):

* (a) no-op items at concurrency 8: the cost of the dispatch path itself, against
  `ThreadPoolExecutor`, raw Pykka actors and asyncio.
* (b) 1 ms sleeping bodies at concurrency 64, sync and coroutine: how close each
  runner gets to the ideal wall time when the bodies, not the machinery, dominate.
* (c) 1,000,000 no-op items through the default window: peak RSS growth, which
  must stay flat however many items pass through.

Usage:
    python benchmarks/bench_throughput.py [--quick] [--repeat N] [--only a b c]

Rows run interleaved (every row once per repeat) so machine noise spreads over all
of them; each row reports its median wall time and the min-max over the repeats.
Ratios are coordinator / peer throughput at the medians: above 1.0 the coordinator
is faster.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from typing import Any

import pykka
from _common import (
    Row,
    RssSampler,
    check_threads,
    fmt_range,
    fmt_rate,
    header,
    leftover_warnings,
    rss_kib,
    run_rows,
    table,
)

from ephemeral_actors import CoordinatorOptions, WorkCoordinator


@dataclass(frozen=True)
class Sizes:
    noop_items: int
    sleep_items: int
    memory_items: int


FULL = Sizes(noop_items=100_000, sleep_items=20_000, memory_items=1_000_000)
QUICK = Sizes(noop_items=10_000, sleep_items=2_000, memory_items=100_000)

NOOP_CONCURRENCY = 8
SLEEP_CONCURRENCY = 64
SLEEP_SECONDS = 0.001


# -- bodies ------------------------------------------------------------------------------


def noop(item: int) -> None:
    return None


async def noop_async(item: int) -> None:
    return None


def sleep_1ms(item: int) -> None:
    time.sleep(SLEEP_SECONDS)


async def sleep_1ms_async(item: int) -> None:
    await asyncio.sleep(SLEEP_SECONDS)


# -- runners: each builds its runner, feeds `n` items, waits for all, and returns the
# -- wall seconds of exactly that; teardown (close, shutdown, stop) is not timed.


Feed = Callable[[WorkCoordinator[int], int], None]


def feed_enqueue(coordinator: WorkCoordinator[int], n: int) -> None:
    enqueue = coordinator.enqueue
    for item in range(n):
        enqueue(item)


def feed_enqueue_many(coordinator: WorkCoordinator[int], n: int) -> None:
    coordinator.enqueue_many(range(n))


def feed_submit(coordinator: WorkCoordinator[int], n: int) -> None:
    submit = coordinator.submit
    futures = [submit(item) for item in range(n)]
    pykka.get_all(futures)


def run_coordinator(body: Callable[[int], Any], limit: int, feed: Feed, n: int) -> float:
    """`WorkCoordinator(body, max_concurrency=limit)`, default window; feed, complete, drain."""
    gc.collect()
    start = time.perf_counter()
    coordinator = WorkCoordinator(body, CoordinatorOptions(max_concurrency=limit))
    try:
        feed(coordinator, n)
        coordinator.complete()
        coordinator.drain()
        wall = time.perf_counter() - start
        if coordinator.total_completed != n:
            raise RuntimeError(f"{coordinator!r} completed {coordinator.total_completed} of {n}")
    finally:
        coordinator.close()
    check_threads(f"closing a WorkCoordinator ({feed.__name__})")
    return wall


def run_thread_pool(body: Callable[[int], Any], limit: int, n: int) -> float:
    """`ThreadPoolExecutor(limit)`: submit each item, then `concurrent.futures.wait`."""
    gc.collect()
    start = time.perf_counter()
    with ThreadPoolExecutor(limit) as pool:
        futures = [pool.submit(body, item) for item in range(n)]
        wait(futures)
        return time.perf_counter() - start


class BodyActor(pykka.ThreadingActor):
    """A raw Pykka actor that runs the body on each message it is asked."""

    def __init__(self, body: Callable[[int], Any]) -> None:
        super().__init__()
        self.body = body

    def on_receive(self, message: Any) -> Any:
        return self.body(message)


def run_raw_pykka(body: Callable[[int], Any], limit: int, n: int) -> float:
    """`limit` ThreadingActors, round-robin `ask(block=False)`, then `pykka.get_all`."""
    gc.collect()
    start = time.perf_counter()
    refs = [BodyActor.start(body) for _ in range(limit)]
    try:
        actors = itertools.cycle(refs)
        futures = [next(actors).ask(item, block=False) for item in range(n)]
        pykka.get_all(futures)
        wall = time.perf_counter() - start
    finally:
        for ref in refs:
            ref.stop()
    return wall


def run_asyncio(body: Callable[[int], Awaitable[Any]], limit: int, n: int) -> float:
    """A fresh event loop: `Semaphore(limit)` + a `TaskGroup` of one task per item."""
    return asyncio.run(_asyncio_main(body, limit, n))


async def _asyncio_main(body: Callable[[int], Awaitable[Any]], limit: int, n: int) -> float:
    gc.collect()
    start = time.perf_counter()
    semaphore = asyncio.Semaphore(limit)

    async def one(item: int) -> None:
        async with semaphore:
            await body(item)

    async with asyncio.TaskGroup() as group:
        for item in range(n):
            group.create_task(one(item))
    return time.perf_counter() - start


# -- (a) no-op throughput ------------------------------------------------------------------


def bench_noop(n: int, repeat: int) -> tuple[str, dict[str, float]]:
    limit = NOOP_CONCURRENCY
    coordinator_rows = [
        Row("WorkCoordinator  enqueue", n, partial(run_coordinator, noop, limit, feed_enqueue)),
        Row(
            "WorkCoordinator  enqueue_many",
            n,
            partial(run_coordinator, noop, limit, feed_enqueue_many),
        ),
        Row(
            "WorkCoordinator  submit + get_all",
            n,
            partial(run_coordinator, noop, limit, feed_submit),
        ),
    ]
    tpe = Row(
        f"ThreadPoolExecutor({limit})  submit + wait", n, partial(run_thread_pool, noop, limit)
    )
    raw = Row(f"raw Pykka  {limit} actors, ask + get_all", n, partial(run_raw_pykka, noop, limit))
    aio = Row(
        f"asyncio  Semaphore({limit}) + TaskGroup", n, partial(run_asyncio, noop_async, limit)
    )
    peers = [tpe, raw, aio]
    run_rows([*coordinator_rows, *peers], repeat, warmup=min(n, 1_000))

    headings = ["runner", "wall s", "min-max", "items/s", "/ TPE", "/ Pykka", "/ asyncio"]
    lines = []
    for row in [*coordinator_rows, *peers]:
        ratios = (
            [f"{row.ratio(p):.2f}x" for p in peers] if row in coordinator_rows else ["", "", ""]
        )
        lines.append(
            [row.label, f"{row.wall:.3f}", fmt_range(row.walls), fmt_rate(row.rate), *ratios]
        )
    text = "\n".join(
        [
            (
                f"(a) {n:,} no-op items, concurrency {limit}"
                " (coordinator: default window, backlog blocks at 200 pending)"
            ),
            table(headings, lines),
        ]
    )
    figures = {row.label: row.ratio(tpe) for row in coordinator_rows}
    return text, figures


# -- (b) 1 ms bodies at concurrency 64 -------------------------------------------------------


def measured_sleeps(count: int = 200) -> tuple[float, float]:
    """Mean real duration of `time.sleep` and `asyncio.sleep` of SLEEP_SECONDS, alone."""
    start = time.perf_counter()
    for _ in range(count):
        time.sleep(SLEEP_SECONDS)
    sync = (time.perf_counter() - start) / count

    async def sleeps() -> float:
        start = time.perf_counter()
        for _ in range(count):
            await asyncio.sleep(SLEEP_SECONDS)
        return (time.perf_counter() - start) / count

    return sync, asyncio.run(sleeps())


def bench_sleep(n: int, repeat: int) -> tuple[str, dict[str, float]]:
    limit = SLEEP_CONCURRENCY
    ideal = n * SLEEP_SECONDS / limit
    pairs = [
        (
            Row(
                "sync   WorkCoordinator  enqueue",
                n,
                partial(run_coordinator, sleep_1ms, limit, feed_enqueue),
            ),
            Row(
                f"sync   ThreadPoolExecutor({limit})", n, partial(run_thread_pool, sleep_1ms, limit)
            ),
        ),
        (
            Row(
                "async  WorkCoordinator  enqueue",
                n,
                partial(run_coordinator, sleep_1ms_async, limit, feed_enqueue),
            ),
            Row(
                f"async  asyncio Semaphore({limit}) + TaskGroup",
                n,
                partial(run_asyncio, sleep_1ms_async, limit),
            ),
        ),
    ]
    rows = [row for pair in pairs for row in pair]
    run_rows(rows, repeat, warmup=min(n, 500))
    real_sync, real_async = measured_sleeps()

    headings = ["runner", "wall s", "min-max", "items/s", "efficiency", "eff. / peer"]
    lines = []
    figures = {}
    for coordinator_row, peer in pairs:
        ratio = peer.wall / coordinator_row.wall  # = efficiency ratio
        figures[coordinator_row.label] = ratio
        for row, cell in ((coordinator_row, f"{ratio:.2f}x"), (peer, "")):
            lines.append(
                [
                    row.label,
                    f"{row.wall:.3f}",
                    fmt_range(row.walls),
                    fmt_rate(row.rate),
                    f"{ideal / row.wall:.1%}",
                    cell,
                ]
            )
    text = "\n".join(
        [
            (
                f"(b) {n:,} bodies sleeping {SLEEP_SECONDS * 1000:g} ms, concurrency {limit}"
                f" (ideal wall {ideal:.4f} s = {n:,} x {SLEEP_SECONDS * 1000:g} ms / {limit};"
                " efficiency = ideal / actual)"
            ),
            "    coordinator: default window, so enqueue blocks while 200 items are pending",
            (
                f"    a lone 1 ms sleep really takes {real_sync * 1000:.3f} ms (time.sleep),"
                f" {real_async * 1000:.3f} ms (asyncio.sleep): efficiency ceilings"
                f" {SLEEP_SECONDS / real_sync:.0%} and {SLEEP_SECONDS / real_async:.0%}"
            ),
            table(headings, lines),
        ]
    )
    return text, figures


# -- (c) memory over 1,000,000 items ----------------------------------------------------------


@dataclass(frozen=True)
class MemoryRun:
    wall: float
    """Seconds from construction to drained."""
    growth_mb: float
    """Peak RSS over the baseline during the run."""
    retained_mb: float
    """RSS over the baseline after close() and gc.collect()."""


def run_memory_once(n: int) -> MemoryRun:
    with RssSampler(interval=0.05) as rss:
        start = time.perf_counter()
        coordinator = WorkCoordinator(noop, CoordinatorOptions(max_concurrency=NOOP_CONCURRENCY))
        feed_enqueue(coordinator, n)
        coordinator.complete()
        coordinator.drain()
        wall = time.perf_counter() - start
    coordinator.close()
    check_threads("closing the memory-run WorkCoordinator")
    del coordinator
    gc.collect()
    retained = (rss_kib() - rss.baseline) * 1024 / 1e6
    return MemoryRun(wall, rss.growth_mb, retained)


def bench_memory(n: int, repeat: int) -> tuple[str, dict[str, float]]:
    runs = [run_memory_once(n) for _ in range(repeat)]
    wall = statistics.median(r.wall for r in runs)
    growth = [r.growth_mb for r in runs]
    headings = ["runner", "wall s", "items/s", "peak RSS growth MB", "min-max", "retained MB"]
    line = [
        "WorkCoordinator  enqueue",
        f"{wall:.2f}",
        fmt_rate(n / wall),
        f"{statistics.median(growth):.1f}",
        fmt_range(growth, ".1f"),
        f"{statistics.median(r.retained_mb for r in runs):.1f}",
    ]
    text = "\n".join(
        [
            (
                f"(c) {n:,} no-op items through enqueue, default window"
                f" (max_concurrency={NOOP_CONCURRENCY}, max_tracked_operations=200)"
            ),
            (
                "    RSS sampled every 50 ms (+ ru_maxrss) against a baseline taken after"
                " gc.collect(); per run, in order: " + ", ".join(f"{g:.1f}" for g in growth) + " MB"
            ),
            table(headings, [line]),
        ]
    )
    return text, {"WorkCoordinator  enqueue, peak RSS growth": statistics.median(growth)}


# -- main ------------------------------------------------------------------------------------


def targets(results: dict[str, dict[str, float]]) -> str:
    lines = ["targets"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    for label, ratio in results.get("a", {}).items():
        lines.append(
            f"  (a) {label} >= 1.0x ThreadPoolExecutor: {ratio:.2f}x  {verdict(ratio >= 1.0)}"
        )
    for label, ratio in results.get("b", {}).items():
        lines.append(f"  (b) {label} efficiency >= peer's: {ratio:.2f}x  {verdict(ratio >= 1.0)}")
    for label, mb in results.get("c", {}).items():
        lines.append(f"  (c) {label} < 20 MB: {mb:.1f} MB  {verdict(mb < 20)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small N: a smoke test of a few seconds"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (median reported)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["a", "b", "c"],
        default=["a", "b", "c"],
        help="workloads to run (default: all)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    sizes = QUICK if args.quick else FULL
    benches = {
        "a": partial(bench_noop, sizes.noop_items),
        "b": partial(bench_sleep, sizes.sleep_items),
        "c": partial(bench_memory, sizes.memory_items),
    }
    # (c) runs first: its RSS baseline should not sit on heap freed by the peers'
    # 100,000 futures, which the memory run could reuse and so under-report.
    order = [w for w in ("c", "a", "b") if w in args.only]
    texts: dict[str, str] = {}
    results: dict[str, dict[str, float]] = {}
    for workload in order:
        print(f"running ({workload}) ...", file=sys.stderr, flush=True)
        texts[workload], results[workload] = benches[workload](args.repeat)

    mode = f"{'quick' if args.quick else 'full'}, repeat {args.repeat} (median, min-max)"
    print(header("ephemeral_actors throughput benchmark", mode))
    for workload in sorted(texts):
        print()
        print(texts[workload])
    print()
    print(targets(results))
    check_threads("the whole benchmark")
    warnings = leftover_warnings()
    print()
    print(
        f"threads: {len(warnings)} leftover warning(s)"
        if warnings
        else "threads: no ephemeral-actors- thread left after any run"
    )
    for line in warnings:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
