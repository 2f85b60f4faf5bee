"""ProcessBackend: CPU-bound bodies on every core, against threads and a raw process pool.

One workload: N items (default 2,000), each a CPU-bound body of pure-Python
arithmetic calibrated at start-up to take about 2 ms on this machine. Rows:

  - WorkCoordinator + ProcessBackend(W), max_concurrency = 2 x W (so each process
    finds its next item queued when it finishes one);
  - WorkCoordinator in-process (threads), max_concurrency = W: the GIL lets one
    body run at a time;
  - raw `ProcessPoolExecutor(W).map(body, items, chunksize=1)`: one item per task,
    as the coordinator sends them;
  - raw `ProcessPoolExecutor(W).map(body, items, chunksize=N / (4 x W))`: the
    chunk size `multiprocessing.Pool.map` picks by default, the fair best case for
    a hand-written pool (250 at N = 2,000, W = 2).

Each timed run builds its runner (pool and processes included), hands it every item,
waits for every result and tears the runner down (`shutdown()` of the backend or the
pool, `close()` of the coordinator). Rows run interleaved, in an order that rotates
every repeat, after one untimed warm-up each; the table shows the median wall and
the min-max over `--repeat` runs (default 5). Ratios are throughput ratios at the
medians.

Targets (printed as met/MISSED, nothing asserts): ProcessBackend >= 1.7x the threads
row, and ProcessBackend wall <= 1.2x the faster raw ProcessPoolExecutor row.

    python benchmarks/bench_process.py [--quick] [--repeat N] [--items N] [--workers W]
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from _common import Row, check_threads, fmt_range, header, table

from ephemeral_actors import CoordinatorOptions, WorkCoordinator
from ephemeral_actors.backends import ProcessBackend

TARGET_MS = 2.0


def crunch(loops: int) -> int:
    """The CPU-bound body: pure-Python integer arithmetic, `loops` rounds."""
    total = 0
    for i in range(loops):
        total = (total + i * i) % 1_000_003
    return total


def calibrate(target_ms: float) -> tuple[int, float]:
    """Loops for about `target_ms` of `crunch` here, and the measured median ms.

    The cost per loop is the fastest of 15 timings, so that other processes taking the
    CPU during calibration do not shrink the body.
    """
    base = 1000
    while True:
        start = time.perf_counter()
        crunch(base)
        if time.perf_counter() - start > 0.005:
            break
        base *= 2
    fastest = float("inf")
    for _ in range(15):
        start = time.perf_counter()
        crunch(base)
        fastest = min(fastest, time.perf_counter() - start)
    loops = max(1, int(base * target_ms / 1000 / fastest))
    samples = []
    for _ in range(25):
        start = time.perf_counter()
        crunch(loops)
        samples.append((time.perf_counter() - start) * 1000)
    return loops, statistics.median(samples)


def run_coordinator(items: list[int], concurrency: int, workers: int | None) -> float:
    """Wall seconds: build (with a fresh ProcessBackend if `workers`), enqueue, drain, close."""
    gc.collect()
    start = time.perf_counter()
    backend = ProcessBackend(max_workers=workers) if workers else None
    coordinator: WorkCoordinator[int] = WorkCoordinator(
        crunch, CoordinatorOptions(max_concurrency=concurrency, backend=backend)
    )
    for item in items:
        coordinator.enqueue(item)
    coordinator.complete()
    coordinator.drain()
    coordinator.close()
    if backend is not None:
        backend.shutdown()
    wall = time.perf_counter() - start
    if coordinator.total_completed != len(items):
        raise RuntimeError(f"{coordinator!r} completed {coordinator.total_completed} items")
    check_threads("a coordinator run")
    return wall


def run_raw(items: list[int], workers: int, chunksize: int) -> float:
    """Wall seconds: ProcessPoolExecutor(workers).map(crunch, items, chunksize) and shutdown."""
    gc.collect()
    start = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        results = list(pool.map(crunch, items, chunksize=chunksize))
    wall = time.perf_counter() - start
    if len(results) != len(items):
        raise RuntimeError("the pool lost results")
    return wall


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user + system) used so far by this process, and by its ended children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def run_rotating(rows: list[Row], repeat: int, warmup: int) -> dict[str, list[tuple[float, float]]]:
    """Warm each row up once, then run all rows `repeat` times, rotating their order.

    Returns, per row, the CPU seconds of each timed run: (this process, worker processes).
    Worker processes are counted once they have exited, which every run waits for.
    """
    cpu: dict[str, list[tuple[float, float]]] = {row.label: [] for row in rows}
    for row in rows:
        row.run(warmup)
    for r in range(repeat):
        k = r % len(rows)
        for row in rows[k:] + rows[:k]:
            print(f"  repeat {r + 1}/{repeat}: {row.label} ...", file=sys.stderr)
            before = cpu_seconds()
            row.walls.append(row.run(row.items))
            after = cpu_seconds()
            cpu[row.label].append((after[0] - before[0], after[1] - before[1]))
    return cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 items, two repeats")
    parser.add_argument("--repeat", type=int, default=5, help="runs per row (median reported)")
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (W)")
    args = parser.parse_args(argv)
    n = 200 if args.quick else args.items
    repeat = 2 if args.quick else args.repeat
    workers = args.workers
    chunk = max(1, n // (4 * workers))

    loops, ms = calibrate(TARGET_MS)
    items = [loops] * n
    load_before = os.getloadavg()
    print(
        header(
            "bench_process: ProcessBackend vs threads vs ProcessPoolExecutor",
            "quick" if args.quick else "full",
        )
    )
    print(
        f"  workload  {n} items x crunch({loops}), calibrated to {TARGET_MS:g} ms; {ms:.2f} ms "
        f"each here (median of 25, one thread); W = {workers} worker processes; start method "
        f"{ProcessBackend().mp_context.get_start_method()}"
    )
    rows = [
        Row(
            f"WorkCoordinator + ProcessBackend({workers}), max_concurrency={2 * workers}",
            n,
            lambda k: run_coordinator(items[:k], 2 * workers, workers),
        ),
        Row(
            f"WorkCoordinator, in-process threads, max_concurrency={workers}",
            n,
            lambda k: run_coordinator(items[:k], workers, None),
        ),
        Row(
            f"ProcessPoolExecutor({workers}).map, chunksize=1",
            n,
            lambda k: run_raw(items[:k], workers, 1),
        ),
        Row(
            f"ProcessPoolExecutor({workers}).map, chunksize={chunk}",
            n,
            lambda k: run_raw(items[:k], workers, chunk),
        ),
    ]
    cpu = run_rotating(rows, repeat, warmup=min(n, 100))
    load_after = os.getloadavg()
    ideal = n * ms / 1000 / workers
    print(
        f"  load avg  {load_before[0]:.2f} before, {load_after[0]:.2f} after (1 min; other "
        "processes on this machine compete for the same cores)"
    )
    print()
    process, threads, raw1, raw_chunked = rows
    print(
        table(
            [
                "runner",
                "wall s",
                "min-max",
                "items/s",
                "vs threads",
                "CPU here",
                "here/item",
                "CPU workers",
            ],
            [
                [
                    r.label,
                    f"{r.wall:.3f}",
                    fmt_range(r.walls),
                    f"{r.rate:,.0f}",
                    f"{r.ratio(threads):.2f}x",
                    f"{statistics.median(c[0] for c in cpu[r.label]):.2f} s",
                    f"{statistics.median(c[0] for c in cpu[r.label]) / r.items * 1e6:.0f} µs",
                    f"{statistics.median(c[1] for c in cpu[r.label]):.2f} s",
                ]
                for r in rows
            ],
        )
    )
    print(
        "  CPU here / CPU workers: medians of user + system CPU seconds per run, of this "
        "process and of its worker processes; here/item: CPU here per item (building and "
        "tearing down the runner included)"
    )
    print(f"  ideal wall with {workers} busy cores and no overhead: {ideal:.3f} s")
    best_raw = min((raw1, raw_chunked), key=lambda r: r.wall)
    speedup = process.ratio(threads)
    vs_raw = process.wall / best_raw.wall
    print()
    print(
        f"  ProcessBackend throughput / threads = {speedup:.2f}x "
        f"(target >= 1.70x: {'met' if speedup >= 1.7 else 'MISSED'})"
    )
    print(
        f"  ProcessBackend wall / faster raw pool ({best_raw.label}) = {vs_raw:.2f}x "
        f"(target <= 1.20x: {'met' if vs_raw <= 1.2 else 'MISSED'})"
    )
    print(f"  ProcessBackend wall / raw pool at chunksize=1 = {process.wall / raw1.wall:.2f}x")
    check_threads("the whole run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
