"""The demo behind `python -m ephemeral_actors demo`.

It simulates an image-thumbnail service: uploads arrive in bursts, a few files are
corrupt (the body raises), some are slow, and the coordinator shows what is pending,
running, done and failed while it works.
"""

from __future__ import annotations

import random
import sys
import threading
import time

from ephemeral_actors._coordinators._work import WorkCoordinator
from ephemeral_actors._options import CoordinatorOptions

__all__ = ["run_demo"]


class CorruptImageError(ValueError):
    """The demo's simulated bad upload."""


def _make_thumbnail(upload: tuple[int, float, bool]) -> None:
    _number, seconds, corrupt = upload
    time.sleep(seconds)  # stands in for decoding and resizing
    if corrupt:
        raise CorruptImageError("truncated JPEG stream")


def _line(coordinator: WorkCoordinator[tuple[int, float, bool]], started: float) -> str:
    s = coordinator.stats()
    rate = (s.total_completed + s.total_failed) / max(time.monotonic() - started, 1e-9)
    return (
        f"pending={s.pending_count:4d}  active={s.active_count:2d}  "
        f"completed={s.total_completed:4d}  failed={s.total_failed:3d}  "
        f"window={s.tracked_operations:3d}  {rate:6.1f} items/s"
    )


def run_demo(*, items: int = 400, plain: bool = False, seed: int = 7) -> int:
    """Run the demo workload, printing live counters and a final summary.

    Args:
        items: How many uploads to process.
        plain: Print one line per update instead of redrawing one line.
        seed: Seed for the simulated workload, so runs are comparable.

    Returns:
        The process exit code (0).
    """
    if items < 1:
        raise ValueError(f"items must be >= 1, got {items!r}")
    rng = random.Random(seed)
    uploads = [(n, rng.choice((0.01, 0.03, 0.08, 0.25)), rng.random() < 0.04) for n in range(items)]
    options = CoordinatorOptions(name="thumbnails", max_concurrency=16, max_tracked_operations=64)
    started = time.monotonic()
    print(f"ephemeral_actors demo: {items} uploads, 16 workers, window of 64 operations")
    with WorkCoordinator(_make_thumbnail, options) as thumbnails:
        done = threading.Event()

        def show() -> None:
            while not done.wait(0.2):
                text = _line(thumbnails, started)
                if plain:
                    print(text, flush=True)
                else:
                    sys.stdout.write("\r" + text)
                    sys.stdout.flush()

        viewer = threading.Thread(target=show, name="demo-view", daemon=True)
        viewer.start()
        for burst in range(0, items, 50):
            for upload in uploads[burst : burst + 50]:
                thumbnails.enqueue(upload)
        thumbnails.complete()
        thumbnails.drain()
        done.set()
        viewer.join()
        final = _line(thumbnails, started)
        failures = thumbnails.get_failed()
    print(("" if plain else "\r") + final)
    stats = thumbnails.stats()
    print(
        f"\nsummary: {stats.total_enqueued} accepted, {stats.total_completed} completed, "
        f"{stats.total_failed} failed, {stats.total_cancelled} cancelled "
        f"in {time.monotonic() - started:.2f} s"
    )
    for failure in failures[-3:]:
        print(f"  failed op {failure.id}: {failure.error!r} after {failure.duration:.3f} s")
    return 0
