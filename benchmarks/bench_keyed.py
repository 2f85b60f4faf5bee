"""Keyed work: per-key ordering on per-key child actors, against an unordered thread pool.

Runs in one process, side by side, and prints items/s and ratios:

  (a) 100,000 no-op items over 100,000 distinct keys, max_concurrency=8, against
      ThreadPoolExecutor(8) doing the same unordered work (target >= 0.8x), with
      the peak thread count (target <= max_concurrency + 10) and peak RSS growth
      (target < 150 MB).
  (b) the same over 1,000 keys.
  (c) the cost of per-key ordering: keyed vs unkeyed coordinator on the same input.

    python benchmarks/bench_keyed.py [--quick] [--repeat N]
"""

from __future__ import annotations

import gc
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Self

from _common import (
    Row,
    RssSampler,
    check_threads,
    fmt_rate,
    header,
    parse_quick,
    run_rows,
    table,
    time_through,
)

from ephemeral_actors import CoordinatorOptions, KeyedWorkCoordinator, WorkCoordinator

LIMIT = 8


def noop(item: int) -> None:
    """The body: nothing, so only the machinery is measured."""


class ThreadPeak:
    """Samples the process's thread count every 10 ms and keeps the highest."""

    def __init__(self) -> None:
        self.peak = threading.active_count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-thread-peak")

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, threading.active_count())


def run_keyed(keys: int, n: int) -> float:
    options = CoordinatorOptions(max_concurrency=LIMIT)
    wall = time_through(lambda: KeyedWorkCoordinator(lambda i: i % keys, noop, options), n)
    check_threads(f"keyed coordinator over {keys} keys")
    return wall


def run_unkeyed(n: int) -> float:
    return time_through(lambda: WorkCoordinator(noop, CoordinatorOptions(max_concurrency=LIMIT)), n)


def run_pool(n: int) -> float:
    gc.collect()
    start = time.perf_counter()
    with ThreadPoolExecutor(LIMIT) as pool:
        wait([pool.submit(noop, i) for i in range(n)])
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    n, repeat, mode = parse_quick(argv, __doc__)
    print(header("ephemeral_actors keyed benchmark", mode))

    distinct = Row(f"keyed, {n:,} distinct keys", n, lambda k: run_keyed(n, k))
    thousand = Row("keyed, 1,000 keys", n, lambda k: run_keyed(1000, k))
    unkeyed = Row("unkeyed WorkCoordinator", n, run_unkeyed)
    pool = Row("ThreadPoolExecutor(8), unordered", n, run_pool)
    rows = [distinct, thousand, unkeyed, pool]
    run_rows(rows, repeat, warmup=min(n, 2_000))

    print(f"\n(a)-(c) {n:,} no-op items, max_concurrency={LIMIT}, median of {repeat}")
    print(
        table(
            ["runner", "items/s", "wall s", "vs pool", "vs unkeyed"],
            [
                [
                    r.label,
                    fmt_rate(r.rate),
                    f"{r.wall:.3f}",
                    f"{r.ratio(pool):.2f}x",
                    f"{r.ratio(unkeyed):.2f}x",
                ]
                for r in rows
            ],
        )
    )

    with ThreadPeak() as threads, RssSampler() as rss:
        run_keyed(n, n)
    print(
        f"\n(a) resources, {n:,} distinct keys: peak threads {threads.peak} "
        f"(target <= {LIMIT + 10} + this script's 3), peak RSS growth {rss.growth_mb:.1f} MB "
        "(target < 150 MB)"
    )
    verdict = "met" if distinct.ratio(pool) >= 0.8 else "MISSED"
    print(f"target keyed >= 0.8x ThreadPoolExecutor ({n:,} distinct keys): {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
