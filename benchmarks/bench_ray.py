"""RayBackend: what running bodies on Ray through a coordinator costs over plain Ray.

Starts one local Ray (on this script's main thread) and prints:

  (a) 200 bodies sleeping 50 ms at max_concurrency=32: in-process WorkCoordinator,
      plain Ray (`ray.get([f.remote(x) for x in items])`), and WorkCoordinator with
      RayBackend — target: RayBackend wall <= 1.2x plain Ray's;
  (b) 2,000 tiny bodies (return x): plain Ray vs RayBackend (tasks) at
      max_concurrency=32, and the per-item overhead the backend adds;
  (c) one item at a time (max_concurrency=1), 300 tiny items: the round trip of a
      plain Ray task, a RayBackend task and a RayBackend pool actor.

Each task asks Ray for `--task-cpus` CPUs (default 1, Ray's default), so a 2-CPU Ray
runs 2 bodies at once whatever max_concurrency says; `--task-cpus 0.0625` lets 32
sleeping bodies run at once (Ray then starts more worker processes).

    python benchmarks/bench_ray.py [--quick] [--repeat N] [--ray-cpus N] [--task-cpus X]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from typing import Any

from _common import Row, check_threads, header, run_rows, table

from ephemeral_actors import CoordinatorOptions, ResultCoordinator, WorkCoordinator

try:
    import ray

    from ephemeral_actors.backends import RayBackend
except ImportError:
    sys.exit("bench_ray.py needs Ray: pip install 'ephemeral_actors[ray]'")

LIMIT = 32
SLEEP = 0.05


def sleep_50ms(x: int) -> int:
    time.sleep(SLEEP)
    return x


def tiny(x: int) -> int:
    return x


def run_coordinator(body: Any, options: CoordinatorOptions, n: int) -> float:
    gc.collect()
    start = time.perf_counter()
    coordinator: WorkCoordinator[int] = WorkCoordinator(body, options)
    for i in range(n):
        coordinator.enqueue(i)
    coordinator.complete()
    coordinator.drain()
    coordinator.close()
    wall = time.perf_counter() - start
    check_threads("a coordinator run")
    return wall


def run_plain(remote_fn: Any, n: int) -> float:
    gc.collect()
    start = time.perf_counter()
    results = ray.get([remote_fn.remote(x) for x in range(n)])
    wall = time.perf_counter() - start
    assert len(results) == n
    return wall


def sequential_ms(call: Any, n: int) -> float:
    """Median milliseconds of `call(i)` over `n` calls, one at a time."""
    times = []
    for i in range(n):
        start = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def fmt_rows(rows: list[Row]) -> list[list[str]]:
    return [
        [
            r.label,
            f"{r.wall:.3f}",
            f"{min(r.walls):.3f}-{max(r.walls):.3f}",
            f"{r.rate:,.0f}",
        ]
        for r in rows
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller N, one repeat")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (median reported)")
    parser.add_argument("--ray-cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--task-cpus", type=float, default=1.0)
    args = parser.parse_args(argv)
    repeat = 1 if args.quick else args.repeat
    n_sleep = 50 if args.quick else 200
    n_tiny = 500 if args.quick else 2000
    n_seq = 50 if args.quick else 300

    print("starting Ray ...", file=sys.stderr)
    t0 = time.perf_counter()
    ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - t0
    task_options = {"num_cpus": args.task_cpus, "max_retries": 0}
    backend = RayBackend(ray_remote_options=task_options)
    backend.start()
    plain_sleep = ray.remote(**task_options)(sleep_50ms)
    plain_tiny = ray.remote(**task_options)(tiny)

    print(
        header(
            "bench_ray: RayBackend vs plain Ray vs in-process", "quick" if args.quick else "full"
        )
    )
    print(
        f"  ray       {ray.__version__}, local instance with {args.ray_cpus} CPUs "
        f"(ray.init {init_s:.1f} s), {args.task_cpus:g} CPU per task, max_retries=0"
    )

    # (a) sleeping bodies
    in_process = CoordinatorOptions(max_concurrency=LIMIT)
    on_ray = CoordinatorOptions(max_concurrency=LIMIT, backend=backend)
    rows_a = [
        Row(
            "in-process WorkCoordinator",
            n_sleep,
            lambda n: run_coordinator(sleep_50ms, in_process, n),
        ),
        Row("plain Ray ray.get([f.remote(x) ...])", n_sleep, lambda n: run_plain(plain_sleep, n)),
        Row(
            "WorkCoordinator + RayBackend",
            n_sleep,
            lambda n: run_coordinator(sleep_50ms, on_ray, n),
        ),
    ]
    print(f"(a) {n_sleep} x 50 ms sleeping bodies, max_concurrency={LIMIT} ...", file=sys.stderr)
    run_rows(rows_a, repeat, warmup=2 * LIMIT)
    slots = min(LIMIT, int(args.ray_cpus / args.task_cpus))
    print()
    print(
        f"(a) {n_sleep} bodies sleeping 50 ms, max_concurrency={LIMIT} "
        f"(Ray runs {slots} at once: ideal {n_sleep * SLEEP / slots:.2f} s)"
    )
    print(table(["runner", "wall s", "min-max", "items/s"], fmt_rows(rows_a)))
    ratio_a = rows_a[2].wall / rows_a[1].wall
    verdict = "met" if ratio_a <= 1.2 else "MISSED"
    print(f"  RayBackend wall / plain Ray wall = {ratio_a:.2f}x (target <= 1.20x: {verdict})")

    # (b) tiny bodies
    rows_b = [
        Row("plain Ray ray.get([f.remote(x) ...])", n_tiny, lambda n: run_plain(plain_tiny, n)),
        Row("WorkCoordinator + RayBackend", n_tiny, lambda n: run_coordinator(tiny, on_ray, n)),
        Row(
            "in-process WorkCoordinator (reference)",
            n_tiny,
            lambda n: run_coordinator(tiny, in_process, n),
        ),
    ]
    print(f"(b) {n_tiny} tiny bodies ...", file=sys.stderr)
    run_rows(rows_b, repeat, warmup=200)
    print()
    print(f"(b) {n_tiny} tiny bodies (return x), max_concurrency={LIMIT}")
    print(table(["runner", "wall s", "min-max", "items/s"], fmt_rows(rows_b)))
    overhead_ms = (rows_b[1].wall - rows_b[0].wall) / n_tiny * 1000
    print(
        f"  RayBackend adds {overhead_ms:.3f} ms per item over plain Ray "
        f"({rows_b[1].wall / rows_b[0].wall:.2f}x the wall)"
    )

    # (c) one at a time
    print(f"(c) {n_seq} sequential round trips ...", file=sys.stderr)
    seq_rows: list[list[str]] = []
    plain_ms = sequential_ms(lambda i: ray.get(plain_tiny.remote(i)), n_seq)
    seq_rows.append(["plain Ray task: ray.get(f.remote(x))", f"{plain_ms:.2f}"])
    pool = RayBackend(actors=1)
    for label, b in (("RayBackend task", backend), ("RayBackend pool actor (actors=1)", pool)):
        c: ResultCoordinator[int, int] = ResultCoordinator(
            tiny, CoordinatorOptions(max_concurrency=1, backend=b)
        )
        for i in range(20):  # warm up (and start the pool actor)
            c.submit(i).get()
        ms = sequential_ms(lambda i, c=c: c.submit(i).get(), n_seq)
        c.close()
        seq_rows.append([f"{label} via submit().get()", f"{ms:.2f}"])
    pool.shutdown()
    print()
    print(f"(c) {n_seq} tiny items one at a time (max_concurrency=1): median round trip")
    print(table(["runner", "ms"], seq_rows))

    backend.shutdown()
    ray.shutdown()
    check_threads("the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
