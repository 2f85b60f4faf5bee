"""Soak test: millions of items with random keys, signals, failures and control changes.

Runs for minutes (not in CI). Three coordinators share one `SignalBus` and run side by
side, each fed by its own producer thread through blocking `enqueue` (backpressure):

  work   WorkCoordinator, sync bodies
  keyed  KeyedWorkCoordinator, sync bodies, random keys out of --keys (so per-key child
         actors are created and reaped all the time: key_idle_timeout is 1 s)
  async  WorkCoordinator, coroutine bodies on the shared event loop

Bodies fail at random (--fail-rate), emit a signal now and then, and honour cancellation.
A chaos thread acts at random moments: it emits cancel signals (a cancel "storm" lasts
the bus's max_age), defer signals followed by resume signals, pauses and resumes a
coordinator, and moves `max_concurrency` up and down.

Every second the sampler records RSS (VmRSS from /proc/self/status), the process's thread
count, the library's threads and the throughput. At the end it prints a table over time,
checks that nothing was lost (every accepted item ended and was counted), that `close()`
left no library thread, and gives a verdict: memory is *flat* when the median RSS of the
last quarter of the run is within --flat-pct of the median of the first quarter (the
same test for the thread count).

    python benchmarks/soak.py                  # 2,000,000 items
    python benchmarks/soak.py --minutes 3      # run for 3 minutes instead
    python benchmarks/soak.py --items 200000   # a quick smoke run

Figures from a run are in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from _common import rss_kib, table

from ephemeral_actors import (
    CoordinatorClosedError,
    CoordinatorOptions,
    KeyedWorkCoordinator,
    SignalBus,
    WorkCoordinator,
    current_operation,
)
from ephemeral_actors.testing import library_threads

CANCEL, DEFER, RESUME, NOTE = "soak.cancel", "soak.defer", "soak.resume", "soak.note"
LIMITS = (1, 2, 4, 8, 16)
"""The limits the chaos thread sets on sync coordinators (the async one stays at 64)."""


class SoakError(Exception):
    """What a failing body raises."""


@dataclass
class Sample:
    t: float
    rss_mib: float
    threads: int
    library_threads: int
    ended: int
    active_keys: int
    objects: int


def make_body(fail_rate: float, signal_rate: float) -> Any:
    rand = random.random

    def body(item: Any) -> None:
        op = current_operation()
        r = rand()
        if r < fail_rate:
            raise SoakError("random failure")
        if r > 1.0 - signal_rate:
            op.signal(NOTE)
        op.raise_if_cancelled()

    return body


def make_async_body(fail_rate: float, signal_rate: float) -> Any:
    sync = make_body(fail_rate, signal_rate)

    async def body(item: Any) -> None:
        if item[1] % 64 == 0:
            await asyncio.sleep(0)
        sync(item)

    return body


def build(args: argparse.Namespace, bus: SignalBus) -> dict[str, Any]:
    def options(name: str, limit: int) -> CoordinatorOptions:
        return CoordinatorOptions(
            name=f"soak-{name}",
            max_concurrency=limit,
            enable_dynamic_concurrency=True,
            max_tracked_operations=500,
            key_idle_timeout=1.0,
            signals=bus,
            cancel_on_signals=CANCEL,
            defer_on_signals=DEFER,
            resume_on_signals=RESUME,
            max_defer_attempts=5,
            defer_check_interval=0.05,
        )

    body = make_body(args.fail_rate, args.signal_rate)
    return {
        "work": WorkCoordinator(body, options("work", args.concurrency)),
        "keyed": KeyedWorkCoordinator(
            lambda item: item[0], body, options("keyed", args.concurrency)
        ),
        "async": WorkCoordinator(
            make_async_body(args.fail_rate, args.signal_rate), options("async", 64)
        ),
    }


def produce(c: Any, budget: int, deadline: float, keys: int, stop: threading.Event) -> None:
    rng = random.Random()
    n = 0
    while n < budget and not stop.is_set():
        if n % 4096 == 0 and time.monotonic() > deadline:
            break
        try:
            c.enqueue((rng.randrange(keys), n))
        except CoordinatorClosedError:
            break
        n += 1


def chaos(
    coords: dict[str, Any],
    bus: SignalBus,
    stop: threading.Event,
    log: list[str],
    peaks: dict[str, int],
    delay: float,
) -> None:
    rng = random.Random()
    names = list(coords)
    start = time.monotonic()
    if stop.wait(delay):
        return
    while not stop.wait(rng.uniform(0.5, 3.0)):
        action = rng.choice(["cancel", "defer", "pause", "limit", "limit"])
        at = f"{time.monotonic() - start:6.1f}s"
        if action == "cancel":
            bus.emit(CANCEL)
            log.append(f"{at} cancel signal")
        elif action == "defer":
            bus.emit(DEFER)
            if stop.wait(rng.uniform(0.05, 0.4)):
                break
            bus.emit(RESUME)
            log.append(f"{at} defer, then resume")
        elif action == "pause":
            c = coords[rng.choice(names)]
            c.pause()
            stop.wait(rng.uniform(0.05, 0.3))
            c.resume()
            log.append(f"{at} pause/resume {c.name}")
        else:
            c = coords[rng.choice(names)]
            limit = rng.choice(LIMITS) if c.name != "soak-async" else 64
            c.set_max_concurrency(limit)
            peaks[c.name] = max(peaks.get(c.name, 0), limit)
            log.append(f"{at} {c.name} max_concurrency={limit}")


def ended(c: Any) -> int:
    s = c.stats()
    return s.total_completed + s.total_failed + s.total_cancelled


def sample(t0: float, coords: dict[str, Any]) -> Sample:
    return Sample(
        t=time.monotonic() - t0,
        rss_mib=rss_kib() / 1024,
        threads=threading.active_count(),
        library_threads=len(library_threads()),
        ended=sum(ended(c) for c in coords.values()),
        active_keys=coords["keyed"].active_keys,
        objects=len(gc.get_objects()),
    )


def quarter_medians(values: list[float]) -> tuple[float, float]:
    q = max(1, len(values) // 4)
    return statistics.median(values[:q]), statistics.median(values[-q:])


def report(samples: list[Sample], flat_pct: float, thread_bound: int, warmup: float) -> bool:
    every = max(1, len(samples) // 30)  # about 30 rows whatever the length
    rows = []
    previous = samples[0]
    for i, s in enumerate(samples[1:], start=1):
        if i % every and i != len(samples) - 1:
            continue
        rate = (s.ended - previous.ended) / max(s.t - previous.t, 1e-9)
        rows.append(
            [
                f"{s.t:7.1f}",
                f"{s.rss_mib:.1f}",
                f"{s.objects:,}",
                str(s.threads),
                str(s.library_threads),
                f"{s.active_keys:,}",
                f"{s.ended:,}",
                f"{rate:,.0f}",
            ]
        )
        previous = s
    print(
        table(
            [
                "t (s)",
                "RSS MiB",
                "gc objects",
                "threads",
                "library",
                "keys",
                "items ended",
                "items/s",
            ],
            rows,
        )
    )
    # The first sample is taken before any work, the last after drain; warm-up excluded.
    body = [s for s in samples[1:-1] if s.t > warmup]
    if len(body) < 8:
        body = samples[1:-1]
    rss_first, rss_last = quarter_medians([s.rss_mib for s in body])
    obj_first, obj_last = quarter_medians([float(s.objects) for s in body])
    rss_change = (rss_last - rss_first) / rss_first * 100
    obj_change = (obj_last - obj_first) / obj_first * 100
    rss_flat = abs(rss_change) <= flat_pct
    obj_flat = abs(obj_change) <= flat_pct
    peak_threads = max(s.library_threads for s in body)
    threads_ok = peak_threads <= thread_bound
    print()
    print(
        f"RSS         (after {warmup:g} s warm-up) first-quarter median {rss_first:.1f} MiB, last-quarter median "
        f"{rss_last:.1f} MiB ({rss_change:+.1f}%), peak {max(s.rss_mib for s in body):.1f} MiB: "
        f"{'flat' if rss_flat else 'NOT FLAT'} (threshold {flat_pct:g}%)"
    )
    print(
        f"gc objects  first-quarter median {obj_first:,.0f}, last-quarter median "
        f"{obj_last:,.0f} ({obj_change:+.1f}%): {'flat' if obj_flat else 'not flat'} "
        "(informational: they follow the active keys)"
    )
    print(
        f"threads     library threads first {body[0].library_threads}, peak {peak_threads}, "
        f"last {body[-1].library_threads}; bound {thread_bound} (workers up to the highest "
        f"limit set, one supervisor per coordinator, the bus, <= 4 shared): "
        f"{'bounded' if threads_ok else 'OVER BOUND'}"
    )
    # gc objects follow the number of active keys, which moves with the keyed
    # coordinator's throughput under chaos: informational, not part of the verdict.
    return rss_flat and threads_ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2_000_000, help="items in total")
    parser.add_argument(
        "--minutes", type=float, default=None, help="run this long instead (items unbounded)"
    )
    parser.add_argument(
        "--keys", type=int, default=10_000, help="key space of the keyed coordinator"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=10.0,
        help="seconds before chaos starts; excluded from the verdict (workers for the "
        "highest limit are started during it)",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="initial max_concurrency")
    parser.add_argument("--fail-rate", type=float, default=0.01)
    parser.add_argument("--signal-rate", type=float, default=0.001)
    parser.add_argument("--flat-pct", type=float, default=10.0, help="flatness threshold, %%")
    parser.add_argument(
        "--malloc-arena-max",
        type=int,
        default=None,
        help="re-run under MALLOC_ARENA_MAX=N (glibc); see docs/reliability.md",
    )
    args = parser.parse_args()
    if args.malloc_arena_max is not None and os.environ.get("MALLOC_ARENA_MAX") != str(
        args.malloc_arena_max
    ):
        env = {**os.environ, "MALLOC_ARENA_MAX": str(args.malloc_arena_max)}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)

    baseline_threads = threading.active_count()
    bus = SignalBus(max_capacity=1000, max_age=0.5, name="soak")
    coords = build(args, bus)
    stop = threading.Event()
    if args.minutes is not None:
        deadline = time.monotonic() + args.minutes * 60
        budget = sys.maxsize
    else:
        deadline = float("inf")
        budget = args.items // len(coords)
    chaos_log: list[str] = []
    peaks = {c.name: c.max_concurrency for c in coords.values()}
    producers = [
        threading.Thread(
            target=produce, args=(c, budget, deadline, args.keys, stop), name=f"producer-{n}"
        )
        for n, c in coords.items()
    ]
    chaos_thread = threading.Thread(
        target=chaos, args=(coords, bus, stop, chaos_log, peaks, args.warmup), name="chaos"
    )
    # Warm-up: run the sync coordinators at the highest limit the chaos thread may set,
    # so their worker threads exist before measuring (workers are started on demand and
    # kept until close()); then back to the initial limit.
    sync = [c for n, c in coords.items() if n != "async"]
    for c in sync:
        c.set_max_concurrency(max(LIMITS))
        peaks[c.name] = max(LIMITS)
    warm = True
    t0 = time.monotonic()
    samples = [sample(t0, coords)]
    for t in producers:
        t.start()
    chaos_thread.start()
    mode = f"{args.minutes:g} min" if args.minutes is not None else f"{args.items:,} items"
    print(f"soak: {mode}, {len(coords)} coordinators, {args.keys:,} keys", file=sys.stderr)
    while any(t.is_alive() for t in producers):
        time.sleep(1.0)
        samples.append(sample(t0, coords))
        if warm and samples[-1].t >= args.warmup / 2:
            warm = False
            for c in sync:
                c.set_max_concurrency(args.concurrency)
        s = samples[-1]
        print(
            f"  {s.t:6.0f}s  rss {s.rss_mib:6.1f} MiB  threads {s.threads:3d}  "
            f"ended {s.ended:>11,}  keys {s.active_keys:>6,}",
            file=sys.stderr,
        )
    stop.set()
    chaos_thread.join()
    for c in coords.values():
        c.complete()
    for c in coords.values():
        c.drain(120)
    samples.append(sample(t0, coords))
    wall = time.monotonic() - t0

    arenas = os.environ.get("MALLOC_ARENA_MAX", "glibc default")
    print(
        f"\nsoak run: {mode}, {wall:.0f} s wall, chaos actions: {len(chaos_log)}, "
        f"MALLOC_ARENA_MAX={arenas}"
    )
    stats = {n: c.stats() for n, c in coords.items()}
    rows = []
    lost = False
    for n, s in stats.items():
        done = s.total_completed + s.total_failed + s.total_cancelled
        lost |= done != s.total_enqueued or s.pending_count or s.active_count
        rows.append(
            [
                n,
                f"{s.total_enqueued:,}",
                f"{s.total_completed:,}",
                f"{s.total_failed:,}",
                f"{s.total_cancelled:,}",
                str(s.worker_restarts),
                f"{s.signals_emitted:,}",
                f"{s.total_enqueued / wall:,.0f}",
            ]
        )
    print(
        table(
            [
                "coordinator",
                "enqueued",
                "completed",
                "failed",
                "cancelled",
                "restarts",
                "signals",
                "items/s",
            ],
            rows,
        )
    )
    print(
        f"nothing lost: {'yes' if not lost else 'NO'} (enqueued == completed + failed + cancelled)"
    )
    print()
    # Worker threads: sync coordinators only (coroutine workers are tasks on the loop).
    sync_peaks = sum(peaks[c.name] for n, c in coords.items() if n != "async")
    flat = report(samples, args.flat_pct, sync_peaks + len(coords) + 1 + 4, args.warmup)

    for c in coords.values():
        c.close(30)
    bus.close()
    time.sleep(0.5)
    leftover = [t.name for t in library_threads() if t.is_alive()]
    print(
        f"after close(): {len(leftover)} library threads "
        f"({threading.active_count()} threads in the process, {baseline_threads} at start)"
        + (f": {leftover}" if leftover else "")
    )
    ok = flat and not lost and not leftover
    print(f"verdict: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
