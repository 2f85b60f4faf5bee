"""Helpers shared by the benchmarks: timing rows, RSS sampling, thread checks, reporting."""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from ephemeral_actors.testing import library_threads

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "Row",
    "RssSampler",
    "check_threads",
    "fmt_range",
    "fmt_rate",
    "header",
    "leftover_warnings",
    "parse_quick",
    "rss_kib",
    "run_rows",
    "table",
    "time_through",
]


# -- timing ---------------------------------------------------------------------------


@dataclass
class Row:
    """One line of a results table: a runner and its wall times over the repeats."""

    label: str
    items: int
    run: Callable[[int], float]
    """Runs the workload on `items` items and returns the timed wall seconds."""
    walls: list[float] = field(default_factory=list)

    @property
    def wall(self) -> float:
        """Median wall time in seconds."""
        return statistics.median(self.walls)

    @property
    def rate(self) -> float:
        """Items per second at the median wall time."""
        return self.items / self.wall

    def ratio(self, peer: Row) -> float:
        """Throughput of this row over `peer`'s (>1 means this row is faster)."""
        return self.rate / peer.rate


def run_rows(rows: list[Row], repeat: int, *, warmup: int = 0) -> None:
    """Run every row `repeat` times, interleaved, so machine noise spreads over all rows.

    With `warmup`, each row first runs once on that many items, untimed.
    """
    if warmup:
        for row in rows:
            row.run(warmup)
    for _ in range(repeat):
        for row in rows:
            row.walls.append(row.run(row.items))


def time_through(build: Callable[[], Any], n: int) -> float:
    """Wall seconds to build a coordinator, enqueue `range(n)`, complete, drain and close it.

    Close is inside the timing: for keyed coordinators it retires the per-key actors.
    """
    gc.collect()
    start = time.perf_counter()
    coordinator = build()
    for item in range(n):
        coordinator.enqueue(item)
    coordinator.complete()
    coordinator.drain()
    coordinator.close()
    wall = time.perf_counter() - start
    if coordinator.total_completed + coordinator.total_failed != n:
        raise RuntimeError(f"{coordinator!r} ended {coordinator.total_completed} of {n} items")
    return wall


def parse_quick(argv: list[str] | None, doc: str) -> tuple[int, int, str]:
    """The `--quick`/`--repeat` command line of the smaller benchmarks: (n, repeat, mode)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 items, one repeat")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (median reported)")
    args = parser.parse_args(argv)
    if args.quick:
        return 10_000, 1, "quick"
    return 100_000, args.repeat, "full"


# -- memory ---------------------------------------------------------------------------


def rss_kib() -> int:
    """Resident set size of this process now, in KiB (VmRSS from /proc/self/status)."""
    with Path("/proc/self/status").open(encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS line in /proc/self/status")


def _maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


class RssSampler:
    """Peak RSS growth over a block, sampled by a thread every `interval` seconds.

    The baseline is taken on entry, right after a `gc.collect()`. The peak is the
    highest sample, or the process's `ru_maxrss` if that rose during the block
    (`ru_maxrss` is exact but only moves when the process-wide peak is exceeded, so it
    catches spikes shorter than the sampling interval).
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.baseline = 0
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._maxrss_before = 0

    def __enter__(self) -> Self:
        gc.collect()
        self.baseline = self.peak = rss_kib()
        self._maxrss_before = _maxrss_kib()
        self._thread = threading.Thread(target=self._sample, name="bench-rss-sampler")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self._record(rss_kib())
        maxrss = _maxrss_kib()
        if maxrss > self._maxrss_before:
            self.peak = max(self.peak, maxrss)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._record(rss_kib())

    def _record(self, kib: int) -> None:
        self.samples += 1
        self.peak = max(self.peak, kib)

    @property
    def growth_mb(self) -> float:
        """Peak growth over the baseline, in MB (10^6 bytes)."""
        return (self.peak - self.baseline) * 1024 / 1e6


# -- checks and reporting ---------------------------------------------------------------


_leftovers: list[str] = []


def check_threads(where: str, grace: float = 1.0) -> None:
    """Warn if any `ephemeral-actors-` thread is alive right after `where`.

    The warning also says whether the threads ended within `grace` seconds (a thread
    that outlives `close()` briefly) or not (a leak).
    """
    names = sorted(t.name for t in library_threads())
    if not names:
        return
    start = time.perf_counter()
    while library_threads() and time.perf_counter() - start < grace:
        time.sleep(0.0005)
    waited = time.perf_counter() - start
    fate = (
        f"still alive after {grace:g} s"
        if library_threads()
        else f"gone {waited * 1000:.1f} ms later"
    )
    line = f"WARNING: ephemeral-actors thread(s) alive right after {where}: {names} ({fate})"
    _leftovers.append(line)
    print(line, file=sys.stderr)


def leftover_warnings() -> list[str]:
    """Every leftover-thread warning printed so far."""
    return list(_leftovers)


def _dist_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def header(title: str, mode: str) -> str:
    """The report's header: date, machine, interpreter and library versions."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return "\n".join(
        [
            title,
            f"  date      {datetime.now(UTC):%Y-%m-%d %H:%M} UTC   mode: {mode}",
            f"  machine   {os.cpu_count()} CPUs ({usable} usable), {platform.platform()}",
            (
                f"  python    {platform.python_implementation()} {platform.python_version()}"
                f"   pykka {_dist_version('pykka')}"
                f"   ephemeral-actors {_dist_version('ephemeral-actors')}"
            ),
        ]
    )


def fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}"


def fmt_range(values: list[float], fmt: str = ".3f") -> str:
    return f"{min(values):{fmt}}-{max(values):{fmt}}"


def table(headings: list[str], rows: list[list[str]], *, indent: str = "  ") -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [headings, *rows]) for i in range(len(headings))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return indent + "  ".join([first, *rest]).rstrip()

    rule = indent + "  ".join("-" * w for w in widths)
    return "\n".join([line(headings), rule, *(line(r) for r in rows)])
