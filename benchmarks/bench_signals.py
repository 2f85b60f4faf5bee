"""Signals: what they cost when nothing matches, and what emitting costs.

Prints, from one run:

  * dispatch throughput of a coordinator with three cancel/defer/resume patterns
    configured (nothing matching) vs none — target >= 0.9x;
  * `Operation.signal()` from a body: no listener, an `on_signal` callback, and a
    shared bus with one pattern subscriber — per-emit cost;
  * `matches()` per call (exact, glob) against `fnmatch.fnmatchcase` as a peer.

    python benchmarks/bench_signals.py [--quick] [--repeat N]
"""

from __future__ import annotations

import fnmatch
import timeit

from _common import Row, check_threads, fmt_rate, header, parse_quick, run_rows, table, time_through

from ephemeral_actors import (
    CoordinatorOptions,
    SignalBus,
    WorkCoordinator,
    current_operation,
    matches,
)

LIMIT = 8


def noop(item: int) -> None:
    """A body that does nothing."""


def emit_one(item: int) -> None:
    """A body that emits one signal."""
    current_operation().signal("work.done")


def run(body: object, options: CoordinatorOptions, n: int) -> float:
    return time_through(lambda: WorkCoordinator(body, options), n)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    n, repeat, mode = parse_quick(argv, __doc__)
    print(header("ephemeral_actors signals benchmark", mode))

    plain = CoordinatorOptions(max_concurrency=LIMIT)
    patterns = CoordinatorOptions(
        max_concurrency=LIMIT,
        cancel_on_signals=["overload", "shutdown.*"],
        defer_on_signals="rate-limit",
        resume_on_signals="rate-limit.cleared",
    )
    bus = SignalBus(name="bench")
    subscription = bus.subscribe("work.*", lambda _event: None)
    rows = [
        Row("no patterns, no-op body", n, lambda k: run(noop, plain, k)),
        Row("3 cancel/defer/resume patterns", n, lambda k: run(noop, patterns, k)),
        Row("emit per item, no listener", n, lambda k: run(emit_one, plain, k)),
        Row(
            "emit per item, on_signal",
            n,
            lambda k: run(emit_one, CoordinatorOptions(max_concurrency=LIMIT, on_signal=noop), k),
        ),
        Row(
            "emit per item, bus + 1 subscriber",
            n,
            lambda k: run(emit_one, CoordinatorOptions(max_concurrency=LIMIT, signals=bus), k),
        ),
    ]
    run_rows(rows, repeat, warmup=min(n, 2_000))
    subscription.unsubscribe()
    bus.close()
    check_threads("signals benchmark")
    base = rows[0]
    print(f"\ncoordinator throughput, {n:,} items, max_concurrency={LIMIT}, median of {repeat}")
    print(
        table(
            ["runner", "items/s", "wall s", "vs no patterns", "extra us/item"],
            [
                [
                    r.label,
                    fmt_rate(r.rate),
                    f"{r.wall:.3f}",
                    f"{r.ratio(base):.2f}x",
                    f"{(r.wall - base.wall) / n * 1e6:+.1f}",
                ]
                for r in rows
            ],
        )
    )
    calls = 20_000 if mode == "quick" else 200_000
    cases = [
        ("matches exact", lambda: matches("rate-limit", "rate-limit")),
        ("matches glob", lambda: matches("rate-limit.cleared", "rate-*.clear?d")),
        (
            "fnmatchcase glob (peer)",
            lambda: fnmatch.fnmatchcase("rate-limit.cleared", "rate-*.clear?d"),
        ),
    ]
    print(f"\npattern matching, {calls:,} calls each")
    print(
        table(
            ["call", "ns/call"],
            [
                [label, f"{timeit.timeit(fn, number=calls) / calls * 1e9:.0f}"]
                for label, fn in cases
            ],
        )
    )
    ratio = rows[1].ratio(base)
    verdict = "met" if ratio >= 0.9 else "MISSED"
    print(f"\ntarget patterns configured >= 0.9x none: {ratio:.2f}x {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
