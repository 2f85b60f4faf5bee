"""Side-by-side benchmarks for the actor runtime's performance targets (issue 11).

Eight scenarios (with a pinned variant of the third and an asyncio one of the second),
each against what a Python user would write instead, each printing a markdown table
and one `target:` line per target (met, or missed by how much):

1. no-op `enqueue` + complete + drain, concurrency 8: vs `ThreadPoolExecutor(8)`
   submit + wait, raw Pykka `tell` round-robin to 8 actors + an ask flush, and the
   SimpleQueue + 8 threads floor;
2. `submit` + every result: vs `ThreadPoolExecutor(8)` submit + result, asyncio
   gather over `Semaphore(8)` (and aiometer, when installed); `2a` (no target), from
   asyncio with a sync body: gathered `submit_async` and awaited `submit` futures vs
   gathered `loop.run_in_executor` on a `ThreadPoolExecutor(8)`;
3. idle round trip `submit(x).result()`: p50 / p99 / p99.9 vs the same on a
   `ThreadPoolExecutor(8)` (and Pykka `ask`, and a SimpleQueue floor); `3p` is the
   same with the process pinned to one CPU, where thread placement cannot decide it;
4. 1 ms blocking bodies at concurrency 64, 4,000 and 20,000 items: efficiency;
5. keyed work over distinct keys and over 1,000 keys: vs asyncio per-key Locks and
   `ThreadPoolExecutor(8)` with per-key future chaining; per-key order, peak threads;
6. create + close of an unused coordinator; no thread until the first item;
7. RSS over up to 1,000,000 no-op items through the default window;
8. (no target) bursts of 64 1 ms items into a warm, idle runner of 64: vs
   `ThreadPoolExecutor(64)` and a SimpleQueue + 64 idle threads floor.

The scenarios measure what /work/shared/tools/bench_side.py measures, the same way, so
the figures agree (`--quick` = its `--scale 0.1`, with 3 repetitions): rows interleaved
with the order rotating each repetition, `gc.collect()` before every run, one untimed
warm-up per row; medians with min-max, never the best run. Timed region: from the first
item handed over until every item has ended (or every result is in hand); construction
and teardown are outside it (scenario 6 times exactly those). Lazily started threads
start inside it, for every row. Each scenario runs in a fresh interpreter (unless
`--in-process`), so heap and threads left by one do not colour the next.

Usage:
    python benchmarks/bench_actors.py                 # full: 5 repetitions, roughly 10 min on 2 cores
    python benchmarks/bench_actors.py --quick         # small sizes, 3 repetitions: validation
    python benchmarks/bench_actors.py --only 1 3      # some scenarios
    python benchmarks/bench_actors.py --repeat 7      # more repetitions

Nothing asserts a wall time: a missed target is printed, not raised.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pykka
from _common import check_threads, header, leftover_warnings

from ephemeral_actors import (
    CoordinatorOptions,
    KeyedWorkCoordinator,
    ResultCoordinator,
    WorkCoordinator,
    for_each,
)
from ephemeral_actors.testing import library_threads

try:
    import aiometer
except ImportError:  # optional peer: its row is skipped with a note
    aiometer = None

perf = time.perf_counter


# -- sizes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    noop: int
    """Items in scenarios 1, 2 and 5."""
    trips: int
    """Round trips per runner per repetition in scenario 3."""
    sleeps: tuple[int, ...]
    """Items in scenario 4."""
    setups: int
    """Sequential create + close per repetition in scenario 6."""
    growth: tuple[int, ...]
    """Items per run in scenario 7, smallest first."""
    bursts: int
    """Timed bursts per runner per repetition in scenario 8."""


FULL = Sizes(
    noop=100_000,
    trips=5_000,
    sleeps=(4_000, 20_000),
    setups=1_000,
    growth=(10_000, 100_000, 1_000_000),
    bursts=40,
)
# bench_side.py --scale 0.1 (which never goes below 1,000 items, 500 trips, 100 setups).
QUICK = Sizes(
    noop=10_000,
    trips=500,
    sleeps=(1_000, 2_000),
    setups=100,
    growth=(1_000, 10_000, 100_000),
    bursts=10,
)

CONCURRENCY = 8
SLEEP_CONCURRENCY = 64
SLEEP_S = 0.001
BACKLOG_BOUND = CoordinatorOptions().max_tracked_operations
"""The coordinator's default backpressure (SPEC 4): intake blocks at this many pending."""
KEYS_FEW = 1_000
WARM_ITEMS = 1_000


# -- bodies --------------------------------------------------------------------------------


def noop(item: int) -> None:
    return None


def ident(item: int) -> int:
    return item


async def anoop(item: int) -> None:
    return None


async def aident(item: int) -> int:
    return item


def sleep_1ms(item: int) -> None:
    time.sleep(SLEEP_S)


def opts(concurrency: int) -> CoordinatorOptions:
    """What a user writes: only max_concurrency; the default window (200) and the rest."""
    return CoordinatorOptions(max_concurrency=concurrency)


_STOP = object()


# -- measurement helpers ---------------------------------------------------------------------


def proc_status() -> tuple[int, int]:
    """(VmRSS KiB, OS threads) of this process, from /proc/self/status."""
    rss = threads = 0
    with Path("/proc/self/status").open(encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads


def vm_hwm_kib() -> int:
    """Peak RSS of this address space (VmHWM); unlike ru_maxrss, not inherited over exec."""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM line in /proc/self/status")


class Peak:
    """Samples VmRSS and the OS thread count every `interval` s and keeps the peaks.

    Used the same way for every row of a scenario, so its small cost is shared. The
    baseline is taken at construction: the thread count there includes this process's
    main thread and the sampler itself.
    """

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-peak", daemon=True)
        self._thread.start()
        self.base_rss, self.base_threads = proc_status()
        self.peak_rss, self.peak_threads = self.base_rss, self.base_threads

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        rss, threads = proc_status()
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_threads = max(self.peak_threads, threads)

    def stop(self) -> dict[str, float]:
        self._sample()
        self._stop.set()
        self._thread.join()
        return {
            "peak_threads": self.peak_threads,
            "added_threads": self.peak_threads - self.base_threads,
            "base_rss_mb": self.base_rss / 1024,
            "peak_rss_mb": self.peak_rss / 1024,
            "peak_growth_mb": (self.peak_rss - self.base_rss) / 1024,
        }


def pct(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (as bench_side computes it)."""
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def progress(message: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- rows, interleaving, tables and verdicts ---------------------------------------------------


@dataclass
class Row:
    """One runner of a scenario and its per-repetition results."""

    label: str
    run: Callable[[int], dict[str, float]]
    """Runs the workload on n items; returns at least {"wall": timed seconds}."""
    n: int
    ours: bool = False
    results: list[dict[str, float]] = field(default_factory=list)

    def vals(self, key: str = "wall") -> list[float]:
        return [r[key] for r in self.results]

    def median(self, key: str = "wall") -> float:
        return statistics.median(self.vals(key))


def interleave(rows: list[Row], reps: int, warm_n: int) -> None:
    """Warm every row once (untimed), then `reps` rounds; the order rotates each round."""
    for row in rows:
        gc.collect()
        row.run(min(warm_n, row.n))
    for rep in range(reps):
        k = rep % len(rows)
        for row in rows[k:] + rows[:k]:
            gc.collect()
            row.results.append(row.run(row.n))
        progress(f"rep {rep + 1}/{reps} done")


def fmt_range(values: list[float], fmt: str) -> str:
    return f"{min(values):{fmt}}-{max(values):{fmt}}"


def _r(x: float) -> str:
    return f"{x:.2f}" if x >= 0.1 else f"{x:.2g}"


@dataclass(frozen=True)
class Ratio:
    """A ratio at the medians with the range of the per-repetition ratios."""

    at_medians: float
    per_rep: list[float]

    def __str__(self) -> str:
        return f"{_r(self.at_medians)}x ({_r(min(self.per_rep))}-{_r(max(self.per_rep))})"


def speed(peer: Row, ours: Row, key: str = "wall") -> Ratio:
    """Peer time / our time (above 1: ours is faster). Rows of one repetition pair up."""
    per_rep = [p / u for p, u in zip(peer.vals(key), ours.vals(key), strict=True)]
    return Ratio(peer.median(key) / ours.median(key), per_rep)


def md_table(headings: list[str], rows: list[list[str]]) -> str:
    align = ["---"] + ["---:"] * (len(headings) - 1)
    lines = ["| " + " | ".join(headings) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def throughput_table(rows: list[Row], extra: dict[str, Callable[[Row], str]] | None = None) -> str:
    """runner | median s | min-max | items/s | µs/item | [extra] | speed us/peer."""
    ours = next(r for r in rows if r.ours)
    headings = ["runner", "median s", "min-max s", "items/s", "µs/item", *(extra or {})]
    headings.append("speed us/peer (per-rep range)")
    lines = []
    for row in rows:
        wall = row.median()
        cells = [
            f"**{row.label}**" if row.ours else row.label,
            f"{wall:.3f}",
            fmt_range(row.vals(), ".3f"),
            f"{row.n / wall:,.0f}",
            f"{wall / row.n * 1e6:.2f}",
            *(fn(row) for fn in (extra or {}).values()),
            "" if row.ours else str(speed(row, ours)),
        ]
        lines.append(cells)
    return md_table(headings, lines)


def verdict(
    what: str,
    value: float,
    target: float,
    *,
    at_least: bool,
    unit: str,
    fmt: str,
    gap_unit: str | None = None,
) -> str:
    """One `target:` line: the measured value against the target, met or missed by how much.

    `gap_unit` names the unit of the difference when it differs from the value's
    (percentage points for a percentage).
    """
    ok = value >= target if at_least else value <= target
    sign = ">=" if at_least else "<="
    gap = abs(value - target)
    rel = gap / target if target else float("inf")
    by = f"{gap:{fmt}}{unit if gap_unit is None else gap_unit}"
    if ok:
        state = f"met ({by} to spare)"
    else:
        state = f"MISSED by {by} ({rel:.0%} {'short' if at_least else 'over'})"
    return f"target: {what} {sign} {target:{fmt}}{unit}: {value:{fmt}}{unit} - {state}"


def ratio_verdict(what: str, ratio: Ratio, target: float, *, at_least: bool = True) -> str:
    line = verdict(what, ratio.at_medians, target, at_least=at_least, unit="x", fmt=".2f")
    return f"{line}; per-rep {_r(min(ratio.per_rep))}-{_r(max(ratio.per_rep))}x"


@dataclass
class Section:
    """One scenario's output: its markdown and its target lines."""

    markdown: list[str]
    targets: list[str]

    def text(self) -> str:
        return "\n".join([*self.markdown, "", *self.targets])


# -- shared runners ------------------------------------------------------------------------------


def run_coordinator_enqueue(
    body: Callable[[int], Any], concurrency: int, n: int
) -> dict[str, float]:
    """WorkCoordinator(concurrency), default window: enqueue each, complete, drain."""
    t = perf()
    c = WorkCoordinator(body, opts(concurrency))
    setup = perf() - t
    enqueue = c.enqueue
    t0 = perf()
    for i in range(n):
        enqueue(i)
    c.complete()
    c.drain()
    wall = perf() - t0
    done = c.total_completed
    t = perf()
    c.close()
    teardown = perf() - t
    check_threads("closing a WorkCoordinator")
    if done != n:
        raise RuntimeError(f"coordinator completed {done} of {n}")
    return {"wall": wall, "setup": setup, "teardown": teardown}


def run_coordinator_enqueue_many(
    body: Callable[[int], Any], concurrency: int, n: int
) -> dict[str, float]:
    """The same work handed over in one call: `enqueue_many(range(n))`, complete, drain."""
    c = WorkCoordinator(body, opts(concurrency))
    t0 = perf()
    c.enqueue_many(range(n))
    c.complete()
    c.drain()
    wall = perf() - t0
    done = c.total_completed
    c.close()
    check_threads("closing a WorkCoordinator")
    if done != n:
        raise RuntimeError(f"coordinator completed {done} of {n}")
    return {"wall": wall}


def run_for_each(body: Callable[[int], Any], concurrency: int, n: int) -> dict[str, float]:
    """`for_each(range(n), body, max_concurrency=...)`: build, run, close inside the timing."""
    t0 = perf()
    stats = for_each(range(n), body, opts(concurrency))
    wall = perf() - t0
    check_threads("for_each")
    if stats.total_completed != n:
        raise RuntimeError(f"for_each completed {stats.total_completed} of {n}")
    return {"wall": wall}


def run_tpe_submit_wait(body: Callable[[int], Any], concurrency: int, n: int) -> dict[str, float]:
    t = perf()
    pool = ThreadPoolExecutor(concurrency)
    setup = perf() - t
    submit = pool.submit
    t0 = perf()
    futures = [submit(body, i) for i in range(n)]
    wait(futures)
    wall = perf() - t0
    t = perf()
    pool.shutdown(wait=True)
    teardown = perf() - t
    if not all(f.done() and f.exception() is None for f in futures):
        raise RuntimeError("a ThreadPoolExecutor future did not complete")
    return {"wall": wall, "setup": setup, "teardown": teardown}


def run_floor(body: Callable[[int], Any], concurrency: int, n: int) -> dict[str, float]:
    """The practical CPython limit: a SimpleQueue and N threads pulling; no tracking at all."""
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    counts: list[int] = []

    def produce() -> None:
        put = q.put
        for i in range(n):
            put(i)

    return time_floor(q, floor_worker(q, body, counts), produce, concurrency, n, counts)


def floor_worker(
    q: queue.SimpleQueue[Any], body: Callable[[int], Any], counts: list[int]
) -> Callable[[], None]:
    """A floor thread: run `body` on each item until `_STOP`, then record its count."""

    def worker() -> None:
        get = q.get
        count = 0
        while True:
            item = get()
            if item is _STOP:
                counts.append(count)
                return
            body(item)
            count += 1

    return worker


def time_floor(
    q: queue.SimpleQueue[Any],
    worker: Callable[[], None],
    produce: Callable[[], None],
    concurrency: int,
    n: int,
    counts: list[int],
) -> dict[str, float]:
    """Time a floor: start its threads, `produce` the items, stop and join the threads."""
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    t0 = perf()
    for thread in threads:  # started inside the timed region, as lazy pools start theirs
        thread.start()
    produce()
    for _ in threads:
        q.put(_STOP)
    for thread in threads:
        thread.join()
    wall = perf() - t0
    if sum(counts) != n:
        raise RuntimeError(f"a floor ran {sum(counts)} of {n}")
    return {"wall": wall}


def run_tpe_bounded(body: Callable[[int], Any], concurrency: int, n: int) -> dict[str, float]:
    """A ThreadPoolExecutor with backpressure: a Semaphore bounds the items in flight.

    The usual recipe for bounding an executor. The bound is the coordinator's default:
    intake blocks at `max_tracked_operations` (200) pending, so with `concurrency`
    running, 200 + `concurrency` items are in flight.
    """
    pool = ThreadPoolExecutor(concurrency)
    slots = threading.Semaphore(BACKLOG_BOUND + concurrency)
    acquire = slots.acquire
    submit = pool.submit

    def release(_: Future[Any]) -> None:
        slots.release()

    t0 = perf()
    futures = []
    for i in range(n):
        acquire()
        future = submit(body, i)
        future.add_done_callback(release)
        futures.append(future)
    wait(futures)
    wall = perf() - t0
    pool.shutdown(wait=True)
    if not all(f.done() and f.exception() is None for f in futures):
        raise RuntimeError("a ThreadPoolExecutor future did not complete")
    return {"wall": wall}


def run_floor_bounded(body: Callable[[int], Any], concurrency: int, n: int) -> dict[str, float]:
    """The floor with the coordinator's backpressure (as `run_tpe_bounded`), still untracked.

    Each item's slot is released by a wrapper around the body: one more call per item,
    which is nothing beside the 1 ms bodies this row runs.
    """
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    slots = threading.Semaphore(BACKLOG_BOUND + concurrency)
    counts: list[int] = []
    release = slots.release

    def bounded(item: int) -> None:
        body(item)
        release()

    def produce() -> None:
        acquire = slots.acquire
        put = q.put
        for i in range(n):
            acquire()
            put(i)

    return time_floor(q, floor_worker(q, bounded, counts), produce, concurrency, n, counts)


# -- scenario 1: no-op enqueue + drain -----------------------------------------------------------


class SinkActor(pykka.ThreadingActor):
    """A raw Pykka actor that runs the body on each message and counts them."""

    def __init__(self, body: Callable[[int], Any]) -> None:
        super().__init__()
        self.body = body
        self.count = 0

    def on_receive(self, message: Any) -> Any:
        if message is _STOP:
            return self.count
        self.body(message)
        self.count += 1
        return None


def run_pykka_tell(body: Callable[[int], Any], concurrency: int, n: int) -> dict[str, float]:
    """`concurrency` ThreadingActors, `tell` round-robin, then one ask each as a flush."""
    t = perf()
    refs = [SinkActor.start(body) for _ in range(concurrency)]
    setup = perf() - t
    tells = [r.tell for r in refs]
    t0 = perf()
    for i in range(n):
        tells[i % concurrency](i)
    # An actor's inbox is FIFO: the answer to this ask comes after every earlier tell.
    counts = [f.get() for f in [r.ask(_STOP, block=False) for r in refs]]
    wall = perf() - t0
    t = perf()
    for r in refs:
        r.stop()
    teardown = perf() - t
    if sum(counts) != n:
        raise RuntimeError(f"pykka ran {sum(counts)} of {n}")
    return {"wall": wall, "setup": setup, "teardown": teardown}


def scenario_1(sizes: Sizes, reps: int) -> Section:
    n, c = sizes.noop, CONCURRENCY
    ours = Row(
        f"WorkCoordinator({c}): enqueue each + complete + drain",
        partial(run_coordinator_enqueue, noop, c),
        n,
        ours=True,
    )
    tpe = Row(
        f"ThreadPoolExecutor({c}): submit each + wait", partial(run_tpe_submit_wait, noop, c), n
    )
    tell = Row(
        f"raw Pykka: {c} ThreadingActors, tell round-robin + ask flush",
        partial(run_pykka_tell, noop, c),
        n,
    )
    many = Row(
        f"WorkCoordinator({c}): enqueue_many(range) + complete + drain (one call)",
        partial(run_coordinator_enqueue_many, noop, c),
        n,
        ours=True,
    )
    floor = Row(f"floor: SimpleQueue + {c} threads (no tracking)", partial(run_floor, noop, c), n)
    rows = [ours, many, tpe, tell, floor]
    interleave(rows, reps, warm_n=WARM_ITEMS)
    untimed = "; ".join(
        f"{r.label.split(':')[0]} setup {r.median('setup') * 1e3:.2f} / teardown"
        f" {r.median('teardown') * 1e3:.2f}"
        for r in rows
        if "setup" in r.results[0]
    )
    return Section(
        [
            f"### 1. No-op enqueue + drain: {n:,} items, concurrency {c}",
            "",
            (
                "Coordinator: default window, so `enqueue` blocks while 200 items are pending;"
                " the peers' queues are unbounded. The floor has no ids, records or counters:"
                " no tracked runner can reach it."
            ),
            "",
            throughput_table(rows),
            "",
            f"Untimed (median ms): {untimed}.",
        ],
        [
            ratio_verdict("throughput vs ThreadPoolExecutor submit+wait", speed(tpe, ours), 4.0),
            ratio_verdict("throughput vs raw Pykka tell", speed(tell, ours), 1.0),
            f"floor (no target): coordinator at {speed(floor, ours)} of the floor's speed",
            (
                f"enqueue_many (no target; one call, the supervisor takes the items): "
                f"{speed(tpe, many)} TPE submit+wait, {speed(tell, many)} Pykka tell"
            ),
        ],
    )


# -- scenario 2: submit + every result ------------------------------------------------------------


def run_result_coordinator(n: int) -> dict[str, float]:
    t = perf()
    c: ResultCoordinator[int, int] = ResultCoordinator(ident, opts(CONCURRENCY))
    setup = perf() - t
    submit = c.submit
    t0 = perf()
    futures = [submit(i) for i in range(n)]
    results = [f.result() for f in futures]
    wall = perf() - t0
    t = perf()
    c.close()
    teardown = perf() - t
    check_threads("closing a ResultCoordinator")
    if results != list(range(n)):
        raise RuntimeError("ResultCoordinator results wrong")
    return {"wall": wall, "setup": setup, "teardown": teardown}


def run_tpe_results(n: int) -> dict[str, float]:
    pool = ThreadPoolExecutor(CONCURRENCY)
    submit = pool.submit
    t0 = perf()
    futures = [submit(ident, i) for i in range(n)]
    results = [f.result() for f in futures]
    wall = perf() - t0
    pool.shutdown(wait=True)
    if results != list(range(n)):
        raise RuntimeError("ThreadPoolExecutor results wrong")
    return {"wall": wall}


def run_asyncio_gather(n: int) -> dict[str, float]:
    async def main() -> dict[str, float]:
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> int:
            async with sem:
                return await aident(i)

        t0 = perf()
        results = await asyncio.gather(*[one(i) for i in range(n)])
        wall = perf() - t0
        if results != list(range(n)):
            raise RuntimeError("gather results wrong")
        return {"wall": wall}

    return asyncio.run(main())


def run_aiometer_all(n: int) -> dict[str, float]:
    assert aiometer is not None

    async def main() -> dict[str, float]:
        t0 = perf()
        results = await aiometer.run_all(
            [partial(aident, i) for i in range(n)], max_at_once=CONCURRENCY
        )
        wall = perf() - t0
        if results != list(range(n)):
            raise RuntimeError("aiometer results wrong")
        return {"wall": wall}

    return asyncio.run(main())


def scenario_2(sizes: Sizes, reps: int) -> Section:
    n, c = sizes.noop, CONCURRENCY
    ours = Row(
        f"ResultCoordinator({c}): submit each + result() each",
        run_result_coordinator,
        n,
        ours=True,
    )
    tpe = Row(f"ThreadPoolExecutor({c}): submit each + result() each", run_tpe_results, n)
    gather = Row(f"asyncio: gather over Semaphore({c}), async body", run_asyncio_gather, n)
    rows = [ours, tpe, gather]
    note = ""
    if aiometer is not None:
        rows.append(Row(f"aiometer.run_all(max_at_once={c}), async body", run_aiometer_all, n))
    else:
        note = " aiometer is not installed: its row (no target) is skipped."
    interleave(rows, reps, warm_n=WARM_ITEMS)
    return Section(
        [
            (
                f"### 2. Submit + every result: {n:,} items (body returns its item),"
                f" concurrency {c}; results checked"
            ),
            "",
            (
                "Every row holds one future (or task) per item and collects every result in"
                " order. The asyncio rows run their no-op body as a coroutine on one thread;"
                f" their event loop is created outside the timed region.{note}"
            ),
            "",
            throughput_table(rows),
        ],
        [
            ratio_verdict("throughput vs ThreadPoolExecutor submit+result", speed(tpe, ours), 2.0),
            ratio_verdict("throughput vs asyncio gather + Semaphore", speed(gather, ours), 1.0),
        ],
    )


def run_submit_async_gathered(n: int) -> dict[str, float]:
    async def main() -> dict[str, float]:
        c: ResultCoordinator[int, int] = ResultCoordinator(ident, opts(CONCURRENCY))
        t0 = perf()
        results = await asyncio.gather(*[c.submit_async(i) for i in range(n)])
        wall = perf() - t0
        c.close()
        if results != list(range(n)):
            raise RuntimeError("submit_async results wrong")
        return {"wall": wall}

    out = asyncio.run(main())
    check_threads("closing a ResultCoordinator")
    return out


def run_await_submit_gathered(n: int) -> dict[str, float]:
    async def main() -> dict[str, float]:
        c: ResultCoordinator[int, int] = ResultCoordinator(ident, opts(CONCURRENCY))
        t0 = perf()
        # `submit` blocks while the backlog is full: futures first, then one gather.
        futures = [c.submit(i) for i in range(n)]

        async def one(future: Any) -> int:
            return int(await future)

        results = await asyncio.gather(*[one(f) for f in futures])
        wall = perf() - t0
        c.close()
        if results != list(range(n)):
            raise RuntimeError("await submit results wrong")
        return {"wall": wall}

    out = asyncio.run(main())
    check_threads("closing a ResultCoordinator")
    return out


def run_in_executor_gathered(n: int) -> dict[str, float]:
    async def main() -> dict[str, float]:
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(CONCURRENCY)
        t0 = perf()
        results = await asyncio.gather(*[loop.run_in_executor(pool, ident, i) for i in range(n)])
        wall = perf() - t0
        pool.shutdown(wait=True)
        if results != list(range(n)):
            raise RuntimeError("run_in_executor results wrong")
        return {"wall": wall}

    return asyncio.run(main())


def scenario_2a(sizes: Sizes, reps: int) -> Section:
    n, c = sizes.noop // 5, CONCURRENCY
    ours = Row(
        f"ResultCoordinator({c}): gather of submit_async, sync body",
        run_submit_async_gathered,
        n,
        ours=True,
    )
    awaited = Row(
        f"ResultCoordinator({c}): submit each, gather of await future",
        run_await_submit_gathered,
        n,
        ours=True,
    )
    executor = Row(
        f"loop.run_in_executor(ThreadPoolExecutor({c})), gathered", run_in_executor_gathered, n
    )
    rows = [ours, awaited, executor]
    interleave(rows, reps, warm_n=WARM_ITEMS)
    return Section(
        [
            (
                f"### 2a. From asyncio, a sync body on threads: {n:,} items (body returns its"
                f" item), concurrency {c}, gathered; results checked (no target)"
            ),
            "",
            (
                "Futures against futures, awaited on one event loop while the bodies run on"
                " worker threads: what a service that offloads blocking calls writes. Every"
                " outcome crosses from a worker thread to the loop; the event loop is created"
                " inside each run, outside the timed region."
            ),
            "",
            throughput_table(rows),
        ],
        [],
    )


# -- scenario 3: idle round trip -------------------------------------------------------------------


class EchoActor(pykka.ThreadingActor):
    def on_receive(self, message: Any) -> Any:
        return noop(message)


Opener = Callable[[], tuple[Callable[[int], Any], Callable[[], None]]]
"""Starts one idle runner; returns (one round trip, teardown)."""


def open_coordinator() -> tuple[Callable[[int], Any], Callable[[], None]]:
    c = WorkCoordinator(noop, opts(CONCURRENCY))
    submit = c.submit
    return (lambda i: submit(i).result()), c.close


def open_tpe() -> tuple[Callable[[int], Any], Callable[[], None]]:
    pool = ThreadPoolExecutor(CONCURRENCY)
    submit = pool.submit
    return (lambda i: submit(noop, i).result()), pool.shutdown


def open_pykka() -> tuple[Callable[[int], Any], Callable[[], None]]:
    ref = EchoActor.start()
    return ref.ask, ref.stop


def open_floor() -> tuple[Callable[[int], Any], Callable[[], None]]:
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def worker() -> None:
        while (item := inbox.get()) is not _STOP:
            outbox.put(noop(item))

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    put, get = inbox.put, outbox.get

    def call(i: int) -> None:
        put(i)
        get()

    def close() -> None:
        put(_STOP)
        thread.join()

    return call, close


def _latency_result(samples: list[float]) -> dict[str, float]:
    samples = sorted(samples)
    return {
        "wall": pct(samples, 50),  # "wall" = p50 µs, so the ratio helpers apply
        "p50": pct(samples, 50),
        "p99": pct(samples, 99),
        "p999": pct(samples, 99.9),
        "mean": statistics.fmean(samples),
    }


def latency_rep(
    openers: list[Opener], n: int, block: int = 50, warm: int = 200
) -> list[dict[str, float]]:
    """One repetition: every runner open and idle at once; round trips alternate between
    them in blocks of `block` (order rotating), so all see the same machine moments."""
    runners = [opener() for opener in openers]
    for call, _ in runners:
        for i in range(warm):
            call(i)
    clock = time.perf_counter_ns
    samples: list[list[float]] = [[] for _ in runners]
    for b in range(n // block):
        k = b % len(runners)
        for idx in [*range(k, len(runners)), *range(k)]:
            call = runners[idx][0]
            out = samples[idx]
            for i in range(block):
                t = clock()
                call(i)
                out.append((clock() - t) / 1e3)
    for _, close in runners:
        close()
    check_threads("closing the latency runners")
    return [_latency_result(s) for s in samples]


def scenario_3p(sizes: Sizes, reps: int) -> Section:
    """Scenario 3 with this thread, and so every thread the runners start, on one CPU.

    On this kind of VM a round trip between two threads on one CPU takes about 12 µs
    and between two CPUs about 60-70 µs (a SimpleQueue ping-pong, measured with
    `os.sched_setaffinity`), and which CPU each runner's worker thread lands on is luck
    that then sticks: free-running figures flip between modes from run to run, for
    every runner. Pinned, every runner pays the same hand-offs, and what differs is the
    work each does on the critical path.
    """
    if not hasattr(os, "sched_setaffinity"):
        return Section(["### 3p. skipped: os.sched_setaffinity is not available here"], [])
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        return scenario_3(sizes, reps, pinned=True)
    finally:
        os.sched_setaffinity(0, before)


def scenario_3(sizes: Sizes, reps: int, *, pinned: bool = False) -> Section:
    n, c = sizes.trips, CONCURRENCY
    specs: list[tuple[str, Opener, bool]] = [
        (f"WorkCoordinator({c}): submit(i).result()", open_coordinator, True),
        (f"ThreadPoolExecutor({c}): submit(f, i).result()", open_tpe, False),
        ("Pykka: ThreadingActor ask(i)", open_pykka, False),
        ("floor: 1 thread, SimpleQueue in + SimpleQueue out", open_floor, False),
    ]
    rows = [Row(label, lambda _n: {}, n, ours=is_ours) for label, _, is_ours in specs]
    for rep in range(reps):
        gc.collect()
        for row, result in zip(rows, latency_rep([o for _, o, _ in specs], n), strict=True):
            row.results.append(result)
        progress(f"rep {rep + 1}/{reps} done")
    ours, tpe = rows[0], rows[1]
    headings = ["runner", "p50 µs", "p99 µs", "p99.9 µs", "mean µs", "latency us/peer at p50"]
    lines = []
    for row in rows:
        cells = [f"**{row.label}**" if row.ours else row.label]
        for key in ("p50", "p99", "p999", "mean"):
            cells.append(f"{row.median(key):,.0f} ({fmt_range(row.vals(key), ',.0f')})")
        # Our latency over the peer's (below 1: ours is quicker), per repetition.
        cells.append("" if row.ours else str(speed(ours, row, "p50")))
        lines.append(cells)
    where = " (pinned to one CPU)" if pinned else ""
    return Section(
        [
            (
                f"### 3{'p' if pinned else ''}. Idle round trip{where}: {n:,} sequential"
                " trips per runner per repetition, no-op body"
            ),
            "",
            (
                "All four runners are open at once and their trips alternate in blocks of 50"
                " (rotating order), so they share the machine's moments; 200 untimed warm-up"
                " trips each. Each cell: median over repetitions of that repetition's"
                " percentile (min-max). Last column: our latency / the peer's (below 1: ours"
                f" is quicker).{' With so few trips, p99.9 is about the slowest trip.' if n < 1_000 else ''}"
                + (
                    " Pinned: the process and every thread it starts run on one CPU."
                    if pinned
                    else ""
                )
            ),
            "",
            md_table(headings, lines),
        ],
        [
            ratio_verdict(
                f"p50 latency / ThreadPoolExecutor's{where}",
                speed(ours, tpe, "p50"),
                1.5,
                at_least=False,
            ),
            ratio_verdict(
                f"p99.9 latency / ThreadPoolExecutor's{where}",
                speed(ours, tpe, "p999"),
                2.0,
                at_least=False,
            ),
        ],
    )


# -- scenario 4: 1 ms blocking bodies at concurrency 64 ---------------------------------------------


def lone_sleep(count: int = 300) -> float:
    """Mean real length of a lone `time.sleep(0.001)`: no runner can beat it."""
    t0 = perf()
    for _ in range(count):
        time.sleep(SLEEP_S)
    return (perf() - t0) / count


def scenario_4(sizes: Sizes, reps: int) -> Section:
    c = SLEEP_CONCURRENCY
    markdown = [
        f"### 4. Blocking bodies: `time.sleep(0.001)` at concurrency {c}",
        "",
        (
            "Efficiency = ideal / wall, ideal = items x 1 ms / 64. Coordinator: default"
            f" window (intake blocks at {BACKLOG_BOUND} pending). The bounded peers hold"
            f" their producer to the same backpressure ({BACKLOG_BOUND} pending + {c}"
            " running in flight, by a Semaphore released as each item ends); the plain"
            " ones take every item at once into an unbounded queue."
        ),
    ]
    targets = []
    for n in sizes.sleeps:
        ideal = n * SLEEP_S / c
        ours = Row(
            f"WorkCoordinator({c}): enqueue + complete + drain",
            partial(run_coordinator_enqueue, sleep_1ms, c),
            n,
            ours=True,
        )
        tpe = Row(
            f"ThreadPoolExecutor({c}): submit + wait", partial(run_tpe_submit_wait, sleep_1ms, c), n
        )
        looped = Row(
            f"for_each(range, max_concurrency={c})",
            partial(run_for_each, sleep_1ms, c),
            n,
            ours=True,
        )
        tpe_bounded = Row(
            f"ThreadPoolExecutor({c}) + Semaphore({BACKLOG_BOUND} + {c}): submit + wait",
            partial(run_tpe_bounded, sleep_1ms, c),
            n,
        )
        floor = Row(f"floor: SimpleQueue + {c} threads", partial(run_floor, sleep_1ms, c), n)
        floor_bounded = Row(
            f"floor + Semaphore({BACKLOG_BOUND} + {c}) (the coordinator's backpressure)",
            partial(run_floor_bounded, sleep_1ms, c),
            n,
        )
        rows = [ours, looped, tpe, tpe_bounded, floor, floor_bounded]
        progress(f"{n:,} items")
        interleave(rows, reps, warm_n=500)
        real = lone_sleep()

        def efficiency(row: Row, ideal: float = ideal) -> str:
            return (
                f"{ideal / row.median():.1%}"
                f" ({ideal / max(row.vals()):.0%}-{ideal / min(row.vals()):.0%})"
            )

        markdown += [
            "",
            (
                f"**{n:,} items**: ideal {ideal:.4f} s. A lone `time.sleep(0.001)` really took"
                f" {real * 1e3:.3f} ms here: ceiling ~{SLEEP_S / real:.0%}."
            ),
            "",
            throughput_table(rows, {"efficiency (min-max)": efficiency}),
        ]
        for how, row in (("", ours), (" with for_each", looped)):
            line = verdict(
                f"efficiency at {n:,} items{how}",
                ideal / row.median() * 100,
                60.0,
                at_least=True,
                unit=" %",
                fmt=".1f",
                gap_unit=" points",
            )
            if row is ours:
                line += (
                    f" (ceiling ~{SLEEP_S / real:.0%}; TPE {ideal / tpe.median():.0%},"
                    f" bounded TPE {ideal / tpe_bounded.median():.0%},"
                    f" floor {ideal / floor.median():.0%},"
                    f" bounded floor {ideal / floor_bounded.median():.0%})"
                )
            targets.append(line)
    return Section(markdown, targets)


# -- scenario 5: keyed -----------------------------------------------------------------------------


def keyed_coordinator(keys: int, body: Callable[[int], Any], n: int) -> dict[str, float]:
    peak = Peak()
    t = perf()
    c = KeyedWorkCoordinator(lambda i: i % keys, body, opts(CONCURRENCY))
    setup = perf() - t
    enqueue = c.enqueue
    t0 = perf()
    for i in range(n):
        enqueue(i)
    c.complete()
    c.drain()
    wall = perf() - t0
    done = c.total_completed
    res = peak.stop()
    t = perf()
    c.close()
    teardown = perf() - t
    check_threads("closing a KeyedWorkCoordinator")
    if done != n:
        raise RuntimeError(f"keyed coordinator completed {done} of {n}")
    return {"wall": wall, "setup": setup, "teardown": teardown, **res}


def keyed_asyncio(keys: int, body: Callable[[int], Any], n: int) -> dict[str, float]:
    """A dict of per-key asyncio.Lock (FIFO) + Semaphore(8); one task per item."""

    async def main() -> dict[str, float]:
        peak = Peak()
        locks: dict[int, asyncio.Lock] = {}
        sem = asyncio.Semaphore(CONCURRENCY)
        done = 0

        async def one(i: int) -> None:
            nonlocal done
            k = i % keys
            lock = locks.get(k)
            if lock is None:
                lock = locks[k] = asyncio.Lock()
            # Tasks start in creation order and a Lock wakes its waiters FIFO.
            async with lock, sem:
                await body(i)
            done += 1

        t0 = perf()
        async with asyncio.TaskGroup() as group:
            for i in range(n):
                group.create_task(one(i))
        wall = perf() - t0
        res = peak.stop()
        if done != n:
            raise RuntimeError(f"asyncio keyed ran {done} of {n}")
        return {"wall": wall, "teardown": 0.0, **res}

    return asyncio.run(main())


def _chain_start(
    submit: Callable[..., Future[Any]],
    body: Callable[[int], Any],
    item: int,
    placeholder: Future[Any],
    _prev: Future[Any],
) -> None:
    submit(body, item).add_done_callback(partial(_copy_outcome, placeholder))


def _copy_outcome(placeholder: Future[Any], inner: Future[Any]) -> None:
    error = inner.exception()
    if error is None:
        placeholder.set_result(inner.result())
    else:
        placeholder.set_exception(error)


def keyed_tpe_chain(keys: int, body: Callable[[int], Any], n: int) -> dict[str, float]:
    """TPE(8) + a dict key -> last future; an item whose predecessor is unfinished is
    submitted from the predecessor's done-callback (no worker ever blocks)."""
    peak = Peak()
    pool = ThreadPoolExecutor(CONCURRENCY)
    submit = pool.submit
    last: dict[int, Future[Any]] = {}
    futures: list[Future[Any]] = []
    t0 = perf()
    for i in range(n):
        k = i % keys
        prev = last.get(k)
        if prev is None or prev.done():
            f = submit(body, i)
        else:
            f = Future()
            prev.add_done_callback(partial(_chain_start, submit, body, i, f))
        last[k] = f
        futures.append(f)
    wait(futures)
    wall = perf() - t0
    res = peak.stop()
    t = perf()
    pool.shutdown(wait=True)
    teardown = perf() - t
    if not all(f.done() and f.exception() is None for f in futures):
        raise RuntimeError("a chained future did not complete")
    return {"wall": wall, "teardown": teardown, **res}


def _recording_body(seen: list[int], *, is_async: bool) -> Callable[[int], Any]:
    if is_async:

        async def abody(i: int) -> None:
            await asyncio.sleep(0)
            seen.append(i)

        return abody

    def body(i: int) -> None:
        if i % 7 == 0:
            time.sleep(0)  # yield the GIL now and then, to mix the interleaving
        seen.append(i)

    return body


def check_keyed_order(keys: int, n: int) -> str:
    """Untimed: every keyed runner keeps per-key order (the body records each item)."""
    verdicts = []
    for label, runner, is_async in (
        ("coordinator", keyed_coordinator, False),
        ("asyncio", keyed_asyncio, True),
        ("TPE chain", keyed_tpe_chain, False),
    ):
        seen: list[int] = []
        body = _recording_body(seen, is_async=is_async)
        runner(keys, body, n)
        last: dict[int, int] = {}
        ok = len(seen) == n
        for i in seen:
            if last.get(i % keys, -1) > i:
                ok = False
            last[i % keys] = i
        verdicts.append(f"{label} {'ok' if ok else 'OUT OF ORDER'}")
    return ", ".join(verdicts)


def scenario_5(sizes: Sizes, reps: int) -> Section:
    n, c = sizes.noop, CONCURRENCY
    markdown = [
        f"### 5. Keyed: {n:,} no-op items, concurrency {c}, per-key order",
        "",
        (
            "Peak threads: the whole process (its main thread and the 10 ms sampler"
            " included), max over repetitions; `added` is that peak minus the count when the"
            " row started, i.e. the threads the runner itself started."
        ),
    ]
    order = check_keyed_order(50, 5_000)
    markdown += ["", f"Per-key order check (5,000 items over 50 keys, untimed): {order}."]
    targets = []
    if "OUT OF ORDER" in order:
        targets.append(f"target: per-key order: MISSED ({order})")
    for keys in (n, KEYS_FEW):
        ours = Row(
            f"KeyedWorkCoordinator({c}): enqueue + complete + drain",
            partial(keyed_coordinator, keys, noop),
            n,
            ours=True,
        )
        aio = Row(
            f"asyncio: dict of per-key Lock + Semaphore({c}), async body",
            partial(keyed_asyncio, keys, anoop),
            n,
        )
        chain = Row(
            f"ThreadPoolExecutor({c}) + per-key future chaining",
            partial(keyed_tpe_chain, keys, noop),
            n,
        )
        rows = [ours, aio, chain]
        label = (
            f"{keys:,} distinct keys (one item per key)"
            if keys == n
            else f"{keys:,} keys ({n // keys:,} items per key)"
        )
        progress(label)
        interleave(rows, reps, warm_n=WARM_ITEMS)
        extra = {
            "teardown ms": lambda r: f"{r.median('teardown') * 1e3:.0f}",
            "peak threads (added)": lambda r: (
                f"{max(r.vals('peak_threads')):.0f} ({max(r.vals('added_threads')):.0f})"
            ),
        }
        markdown += [
            "",
            f"**{label}**",
            "",
            throughput_table(rows, extra),
        ]
        added = max(ours.vals("added_threads"))
        targets += [
            ratio_verdict(f"{label}: throughput vs asyncio per-key Locks", speed(aio, ours), 1.0),
            ratio_verdict(f"{label}: throughput vs TPE per-key chaining", speed(chain, ours), 2.0),
            verdict(
                f"{label}: threads the coordinator added (max over reps)",
                added,
                c + 10,
                at_least=False,
                unit="",
                fmt=".0f",
            )
            + f" (process peak {max(ours.vals('peak_threads')):.0f})",
        ]
    return Section(markdown, targets)


# -- scenario 6: create + close; no thread until the first item --------------------------------------


def setup_coordinator(one_item: bool, body: Callable[[int], Any], m: int) -> dict[str, float]:
    t0 = perf()
    for _ in range(m):
        c = WorkCoordinator(body, opts(CONCURRENCY))
        if one_item:
            c.submit(0).result()
        c.close()
    wall = perf() - t0
    check_threads("create + close")
    return {"wall": wall, "us_each": wall / m * 1e6}


def setup_tpe(one_item: bool, m: int) -> dict[str, float]:
    t0 = perf()
    for _ in range(m):
        pool = ThreadPoolExecutor(CONCURRENCY)
        if one_item:
            pool.submit(noop, 0).result()
        pool.shutdown(wait=True)
    wall = perf() - t0
    return {"wall": wall, "us_each": wall / m * 1e6}


def thread_census(early: list[str]) -> list[list[str]]:
    """OS threads and library threads before, after construction, after one item, after close.

    Appends to `early` the library threads alive right after construction, per kind.
    """
    lines = []
    builders: list[tuple[str, Callable[[], Any]]] = [
        ("WorkCoordinator(8), sync body", lambda: WorkCoordinator(noop, opts(CONCURRENCY))),
        ("WorkCoordinator(8), async body", lambda: WorkCoordinator(anoop, opts(CONCURRENCY))),
        ("ResultCoordinator(8)", lambda: ResultCoordinator(ident, opts(CONCURRENCY))),
        (
            "KeyedWorkCoordinator(8)",
            lambda: KeyedWorkCoordinator(lambda i: i % 10, noop, opts(CONCURRENCY)),
        ),
    ]

    def count() -> str:
        return f"{threading.active_count()} ({len(library_threads())})"

    for label, build in builders:
        gc.collect()
        before = count()
        c = build()
        built = count()
        names = sorted(t.name for t in library_threads())
        c.submit(0).result()
        first = count()
        c.close()
        closed = count()
        check_threads(f"closing {label}")
        lines.append([label, before, built, first, closed])
        if names:
            early.append(f"{label}: {', '.join(names)}")
    return lines


def scenario_6(sizes: Sizes, reps: int) -> Section:
    m, c = sizes.setups, CONCURRENCY
    # The census runs first, in a fresh interpreter: nothing else has started a thread yet.
    early: list[str] = []
    census = thread_census(early)
    ours = Row(
        f"WorkCoordinator({c}): create + close, unused",
        partial(setup_coordinator, False, noop),
        m,
        ours=True,
    )
    rows = [
        ours,
        Row(f"ThreadPoolExecutor({c}): create + shutdown, unused", partial(setup_tpe, False), m),
        Row(
            f"WorkCoordinator({c}, async body): create + close, unused",
            partial(setup_coordinator, False, anoop),
            m,
        ),
        Row(
            f"WorkCoordinator({c}): create + submit(0).result() + close",
            partial(setup_coordinator, True, noop),
            m,
        ),
        Row(
            f"ThreadPoolExecutor({c}): create + submit(f, 0).result() + shutdown",
            partial(setup_tpe, True),
            m,
        ),
    ]
    interleave(rows, reps, warm_n=20)
    lines = [
        [
            f"**{row.label}**" if row.ours else row.label,
            f"{row.median('us_each'):,.1f}",
            fmt_range(row.vals("us_each"), ",.1f"),
        ]
        for row in rows
    ]
    return Section(
        [
            f"### 6. Create + close: {m:,} sequential runners per repetition (row total / {m:,})",
            "",
            md_table(["runner (one at a time)", "µs each (median)", "min-max"], lines),
            "",
            (
                "Threads (OS threads in this process, library `ephemeral-actors-` threads in"
                " brackets), counted right after each step; nothing waits for threads to"
                " appear or end:"
            ),
            "",
            md_table(
                [
                    "coordinator",
                    "before",
                    "after construction",
                    "after submit(0).result()",
                    "after close()",
                ],
                census,
            ),
        ],
        [
            verdict(
                "create + close of an unused WorkCoordinator, median",
                ours.median("us_each"),
                50.0,
                at_least=False,
                unit=" µs",
                fmt=".1f",
            )
            + f" (TPE create + shutdown {rows[1].median('us_each'):.1f} µs)",
            "target: no thread until the first item:"
            + (
                " met (no library thread after construction, for every kind)"
                if not early
                else f" MISSED (library threads right after construction: {'; '.join(early)})"
            ),
        ],
    )


# -- scenario 7: RSS over 10^6 items ----------------------------------------------------------------


def growth_run(n: int) -> dict[str, float]:
    """Enqueue n no-op items through WorkCoordinator(8)'s default window; RSS on the way."""
    gc.collect()
    peak = Peak(interval=0.05)
    c = WorkCoordinator(noop, opts(CONCURRENCY))
    enqueue = c.enqueue
    t0 = perf()
    for i in range(n):
        enqueue(i)
    c.complete()
    c.drain()
    wall = perf() - t0
    drained, _ = proc_status()  # drained, not yet closed
    res = peak.stop()
    done = c.total_completed
    c.close()
    check_threads("closing the growth-run WorkCoordinator")
    del c
    gc.collect()
    closed, _ = proc_status()
    if done != n:
        raise RuntimeError(f"growth run completed {done} of {n}")
    return {
        "wall": wall,
        "start_mb": res["base_rss_mb"],
        "peak_mb": res["peak_rss_mb"],
        "growth_mb": res["peak_growth_mb"],
        "end_mb": drained / 1024,
        "retained_mb": closed / 1024 - res["base_rss_mb"],
    }


def growth_probe(n: int) -> dict[str, float]:
    """In a fresh interpreter: one growth run; the peak also from VmHWM (between samples)."""
    out = growth_run(n)
    out["growth_mb"] = max(out["growth_mb"], vm_hwm_kib() / 1024 - out["start_mb"])
    return out


def run_probe(n: int) -> dict[str, float] | None:
    proc = subprocess.run(
        [sys.executable, __file__, "--growth-probe", str(n)],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    payload = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@JSON@@")]
    return json.loads(payload[-1][len("@@JSON@@") :]) if payload and proc.returncode == 0 else None


def scenario_7(sizes: Sizes, reps: int) -> Section:
    rows = [Row(f"{n:,} items", growth_run, n) for n in sizes.growth]
    interleave(rows, reps, warm_n=WARM_ITEMS)
    progress("fresh-interpreter probes")
    probes = [run_probe(n) for n in sizes.growth]
    lines = []
    for row, probe in zip(rows, probes, strict=True):
        lines.append(
            [
                row.label,
                f"{row.median() / row.n * 1e6:.2f} ({fmt_range([w / row.n * 1e6 for w in row.vals()], '.2f')})",
                f"{row.median('start_mb'):.1f}",
                f"{row.median('peak_mb'):.1f}",
                f"{row.median('end_mb'):.1f}",
                f"{row.median('growth_mb'):.1f} ({fmt_range(row.vals('growth_mb'), '.1f')})",
                "failed" if probe is None else f"{probe['growth_mb']:.1f}",
                f"{row.median('retained_mb'):.1f}",
            ]
        )
    small, large = probes[0], probes[-1]
    if small is None or large is None:
        flat = "target: RSS flat: not measured (a fresh-interpreter probe failed)"
    else:
        extra = large["growth_mb"] - small["growth_mb"]
        per_item = extra * 1e6 / (sizes.growth[-1] - sizes.growth[0])
        flat = (
            verdict(
                f"RSS flat: peak growth at {sizes.growth[-1]:,} items over that at"
                f" {sizes.growth[0]:,} (fresh interpreters)",
                extra,
                5.0,
                at_least=False,
                unit=" MB",
                fmt=".1f",
            )
            + f" (= {max(per_item, 0.0):.1f} bytes per extra item)"
        )
    return Section(
        [
            (
                f"### 7. Growth: no-op items through `WorkCoordinator({CONCURRENCY}).enqueue`,"
                " default window"
            ),
            "",
            (
                "RSS: start = right before the run (after `gc.collect()`), peak = highest VmRSS"
                " sample (every 50 ms), end = drained but not closed, retained = after"
                " `close()` + `gc.collect()`; medians over repetitions. The interleaved runs"
                " share one process and reuse each other's freed heap, so their growth reads"
                " low; the fresh-interpreter column is one extra run per size in a new"
                " process, over its post-import RSS, with VmHWM catching peaks between samples."
            ),
            "",
            md_table(
                [
                    "items",
                    "µs/item (min-max)",
                    "start MB",
                    "peak MB",
                    "end MB",
                    "peak growth MB (min-max)",
                    "growth, fresh interpreter MB",
                    "retained MB",
                ],
                lines,
            ),
        ],
        [flat],
    )


# -- scenario 8: bursts into a warm, idle runner (no target) ---------------------------------------

BURST = 64
BURST_GAP = 0.02
"""Seconds between bursts: every worker has gone idle (parked, or blocked on its queue)."""


class BurstRunner:
    """One warm runner: `burst()` hands over BURST items and returns once all have ended."""

    def __init__(self, kind: str) -> None:
        self.starts: list[float] = []
        starts = self.starts

        def body(_: int) -> None:
            starts.append(perf())
            time.sleep(0.001)

        if kind == "ours":
            coordinator = WorkCoordinator(body, opts(BURST))
            submit = coordinator.submit
            self.burst = lambda: wait([submit(i) for i in range(BURST)])
            self.close = coordinator.close
        elif kind == "tpe":
            pool = ThreadPoolExecutor(BURST)
            self.burst = lambda: wait([pool.submit(body, i) for i in range(BURST)])
            self.close = lambda: pool.shutdown(wait=True)
        else:
            q: queue.SimpleQueue[Any] = queue.SimpleQueue()
            done = threading.Semaphore(0)

            def worker() -> None:
                while (item := q.get()) is not _STOP:
                    body(item)
                    done.release()

            threads = [threading.Thread(target=worker, daemon=True) for _ in range(BURST)]
            for thread in threads:
                thread.start()

            def burst() -> None:
                for i in range(BURST):
                    q.put(i)
                for _ in range(BURST):
                    done.acquire()

            def close() -> None:
                for _ in threads:
                    q.put(_STOP)
                for thread in threads:
                    thread.join()

            self.burst, self.close = burst, close


def run_bursts(kind: str, n: int) -> dict[str, float]:
    """One untimed burst starts every thread; then `n` timed bursts, BURST_GAP apart."""
    runner = BurstRunner(kind)
    runner.burst()
    walls: list[float] = []
    lasts: list[float] = []
    for _ in range(n):
        time.sleep(BURST_GAP)
        runner.starts.clear()
        t0 = perf()
        runner.burst()
        walls.append(perf() - t0)
        lasts.append(max(runner.starts) - t0)
    runner.close()
    if kind == "ours":
        check_threads("closing a WorkCoordinator")
    return {"wall": statistics.median(walls), "last_start": statistics.median(lasts)}


def scenario_8(sizes: Sizes, reps: int) -> Section:
    n = sizes.bursts
    rows = [
        Row(
            f"WorkCoordinator({BURST}): submit x {BURST} + wait",
            partial(run_bursts, "ours"),
            n,
            ours=True,
        ),
        Row(f"ThreadPoolExecutor({BURST}): submit x {BURST} + wait", partial(run_bursts, "tpe"), n),
        Row(f"floor: SimpleQueue + {BURST} idle threads", partial(run_bursts, "floor"), n),
    ]
    interleave(rows, reps, warm_n=2)
    ours = rows[0]
    lines = [
        [
            f"**{row.label}**" if row.ours else row.label,
            f"{row.median() * 1e3:.2f} ({fmt_range([v * 1e3 for v in row.vals()], '.2f')})",
            f"{row.median('last_start') * 1e3:.2f} ({fmt_range([v * 1e3 for v in row.vals('last_start')], '.2f')})",
            "" if row.ours else str(speed(row, ours)),
        ]
        for row in rows
    ]
    return Section(
        [
            (
                f"### 8. Bursts into a warm, idle runner: {BURST} x `time.sleep(0.001)` at"
                f" concurrency {BURST}, {n} bursts per runner per repetition (no target)"
            ),
            "",
            (
                f"Every runner has run one untimed burst, so its {BURST} threads exist, and each"
                f" burst follows {BURST_GAP * 1e3:.0f} ms of quiet, so every thread has gone idle"
                " (a coordinator's workers park). Burst: from the first item handed over until"
                " every item has ended (1 ms at best); last start: until the last body began."
                " Cells: median over repetitions of each repetition's median burst (min-max)."
            ),
            "",
            md_table(
                ["runner", "burst ms", "last start ms", "speed us/peer (burst)"],
                lines,
            ),
        ],
        [],
    )


# -- driver ----------------------------------------------------------------------------------------


SCENARIOS: dict[str, Callable[[Sizes, int], Section]] = {
    "1": scenario_1,
    "2": scenario_2,
    "2a": scenario_2a,
    "3": scenario_3,
    "3p": scenario_3p,
    "4": scenario_4,
    "5": scenario_5,
    "6": scenario_6,
    "7": scenario_7,
    "8": scenario_8,
}


def cpu_steal_ticks() -> int | None:
    """Ticks the hypervisor ran someone else while this VM wanted its CPUs (Linux only)."""
    try:
        fields = Path("/proc/stat").read_text(encoding="ascii").split("\n", 1)[0].split()
    except OSError:
        return None
    steal_column = 8  # cpu user nice system idle iowait irq softirq steal ...
    return int(fields[steal_column]) if len(fields) > steal_column else None


def steal_note(before: int | None, seconds: float) -> str:
    """What share of the machine's CPU time the hypervisor took during `seconds`.

    On a shared VM this is the noise no interleaving removes: a run with steal time is
    slower for every row, and more so for rows that hand the GIL around most.
    """
    after = cpu_steal_ticks()
    if before is None or after is None or seconds <= 0:
        return ""
    share = (after - before) / (os.sysconf("SC_CLK_TCK") * (os.cpu_count() or 1) * seconds)
    return f"; CPU steal {share:.0%}"


def run_scenario(key: str, sizes: Sizes, reps: int) -> dict[str, Any]:
    progress(f"scenario {key}")
    earlier = len(leftover_warnings())
    t0 = perf()
    steal = cpu_steal_ticks()
    section = SCENARIOS[key](sizes, reps)
    took = perf() - t0
    return {
        "text": section.text()
        + f"\n\n_(scenario {key} took {took:.0f} s{steal_note(steal, took)})_",
        "targets": section.targets,
        "warnings": leftover_warnings()[earlier:],
    }


def run_child(key: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", key, "--repeat", str(args.repeat)]
    if args.quick:
        cmd.append("--quick")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    payload = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@JSON@@")]
    if proc.returncode != 0 or not payload:
        line = f"scenario {key}: FAILED (exit {proc.returncode})"
        return {
            "text": f"### {key}. FAILED (exit {proc.returncode})",
            "targets": [line],
            "warnings": [],
        }
    return json.loads(payload[-1][len("@@JSON@@") :])


def _dist_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 repetitions")
    parser.add_argument("--repeat", type=int, help="repetitions per row (default 5; --quick 3)")
    parser.add_argument("--only", nargs="+", choices=list(SCENARIOS), help="scenarios to run")
    parser.add_argument(
        "--in-process", action="store_true", help="run every scenario in this interpreter"
    )
    parser.add_argument("--child", choices=list(SCENARIOS), help=argparse.SUPPRESS)
    parser.add_argument("--growth-probe", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 3 if args.quick else 5
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    sizes = QUICK if args.quick else FULL

    if args.growth_probe is not None:
        print("@@JSON@@" + json.dumps(growth_probe(args.growth_probe)))
        return 0
    if args.child:
        print("@@JSON@@" + json.dumps(run_scenario(args.child, sizes, args.repeat)))
        return 0

    mode = f"{'quick' if args.quick else 'full'}, {args.repeat} repetitions per row"
    print(header("## ephemeral_actors side-by-side benchmark (issue 11 targets)", mode))
    print(
        f"  aiometer  {_dist_version('aiometer')}   load average at start {os.getloadavg()[0]:.2f}"
    )
    print(
        "  rows interleaved, order rotating per repetition; medians (min-max), never the"
        " best run; speed us/peer = peer time / our time (above 1: ours is faster)"
    )
    outputs = []
    for key in args.only or list(SCENARIOS):
        out = run_scenario(key, sizes, args.repeat) if args.in_process else run_child(key, args)
        outputs.append(out)
        print()
        print(out["text"], flush=True)
    print()
    print("## Targets")
    print()
    for out in outputs:
        for line in out["targets"]:
            print(f"- {line}")
    warnings = [w for out in outputs for w in out["warnings"]]
    if not args.in_process:
        check_threads("the whole benchmark")
        warnings += leftover_warnings()
    print()
    print(
        f"threads: {len(warnings)} leftover warning(s)"
        if warnings
        else "threads: no ephemeral-actors- thread left after any run"
    )
    for line in warnings:
        print(f"  {line}")
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
