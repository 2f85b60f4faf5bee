"""Attempts and abandoned threads in the Prometheus collector and the console (SPEC 16)."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from rich.console import Console

from ephemeral_actors import RetryPolicy, WorkCoordinator, current_operation
from ephemeral_actors.console import _plain_line, _row, render_table, summary
from ephemeral_actors.metrics.prometheus import CoordinatorCollector
from tests.conftest import WAIT


class Flaky(Exception):
    """Fails the first attempts of an item."""


@pytest.fixture
def observed() -> Iterator[Any]:
    """A drained coordinator with one abandoned body, retried items and a final failure.

    Items: 0 hangs past twice its deadline (abandoned, then retried: attempt 2 is quick);
    1 fails once then succeeds; 2 fails every attempt.
    """
    gate = threading.Event()
    runs: dict[int, int] = {}

    def body(item: int) -> None:
        op_id = current_operation().id
        runs[op_id] = runs.get(op_id, 0) + 1
        if item == 0 and runs[op_id] == 1:
            gate.wait(WAIT)
        elif (item == 1 and runs[op_id] == 1) or item == 2:
            raise Flaky(item)

    c = WorkCoordinator(
        body,
        name="resilient",
        item_timeout=0.05,
        retry=RetryPolicy(attempts=2, backoff=0.001, jitter=0.0),
        max_concurrency=2,
    )
    metrics = CollectorRegistry()
    metrics.register(CoordinatorCollector([c]))
    try:
        for item in (0, 1, 2):
            c.enqueue(item)
        c.complete()
        c.drain(WAIT)
        yield c, metrics
    finally:
        gate.set()
        c.close(WAIT)


def settled(metrics: CollectorRegistry, name: str, labels: dict[str, str], want: float) -> float:
    """The sample once it reaches `want` (observers run just after drain() returns)."""
    deadline = threading.Event()
    for _ in range(int(WAIT / 0.01)):
        got = metrics.get_sample_value(name, labels) or 0.0
        if got == want:
            return got
        deadline.wait(0.01)
    return metrics.get_sample_value(name, labels) or 0.0


def test_prometheus_exports_abandoned_threads_and_retries(observed):
    """abandoned_threads_total comes from the stats; retries_total sums attempts - 1."""
    c, metrics = observed
    assert c.stats().abandoned_threads == 1
    text = generate_latest(metrics).decode()
    assert 'ephemeral_coordinator_abandoned_threads_total{coordinator="resilient"} 1.0' in text
    completed = {"coordinator": "resilient", "outcome": "completed"}
    failed = {"coordinator": "resilient", "outcome": "failed"}
    # Items 0 and 1 were saved by one retry each; item 2 failed after its one retry.
    assert settled(metrics, "ephemeral_operation_retries_total", completed, 2.0) == 2.0
    assert settled(metrics, "ephemeral_operation_retries_total", failed, 1.0) == 1.0


def test_summary_shows_abandoned_threads_and_the_last_attempt(observed):
    """The summary's first line counts abandoned threads; a failure names its attempt."""
    c, _ = observed
    text = summary(c)
    first, *rest = text.splitlines()
    assert first.endswith(", 1 abandoned threads")
    assert any(line.strip().startswith("failed op") and "Flaky" in line for line in rest)
    assert any("(attempt 2)" in line for line in rest)


def test_live_view_line_and_table_show_abandoned_threads(observed):
    """The plain live-view line and the rich table's caption show abandoned threads."""
    c, _ = observed
    assert " abandoned=1 " in _plain_line(_row(c, None), 1.0)
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(render_table(c))
    assert "resilient: 1 abandoned thread" in console.file.getvalue()  # type: ignore[attr-defined]


def test_nothing_extra_without_deadlines_or_retries():
    """A coordinator without the options shows no abandoned count and no attempt suffix."""

    def body(_item: int) -> None:
        raise Flaky

    with WorkCoordinator(body, name="plain") as c:
        c.enqueue(1)
        c.complete()
        c.drain(WAIT)
        text = summary(c)
        assert "abandoned" not in text
        assert "attempt" not in text
        assert "abandoned" not in _plain_line(_row(c, None), 1.0)
