"""Rate limits in `stats()`, the Prometheus collector and the console (SPEC 16).

Every coordinator here is built under a fake schedule clock the test moves by hand, so
what the limits hold back at each step is exact: tokens come only when the test
advances the clock (then `resume()` dispatches at the new time).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from rich.console import Console

from ephemeral_actors import (
    CoordinatorStats,
    KeyedWorkCoordinator,
    RateLimitStats,
    WorkCoordinator,
)
from ephemeral_actors._coordinators._limits import TokenBucket
from ephemeral_actors.console import _plain_line, _row, render_table, summary
from ephemeral_actors.metrics.prometheus import CoordinatorCollector
from ephemeral_actors.testing import use_schedule_clock
from tests.conftest import WAIT, FakeClock, settle


def advance(c: Any, clock: FakeClock, started: list[Any], seconds: float) -> CoordinatorStats:
    clock.now += seconds
    c.resume()  # a dispatch at the new time
    return settle(c, started)


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    fake = FakeClock()
    with use_schedule_clock(fake):
        yield fake


@pytest.fixture
def limited(clock: FakeClock) -> Iterator[tuple[Any, list[int]]]:
    """A coordinator limited to 2 starts/s with a burst of 2, six items accepted."""
    started: list[int] = []
    c = WorkCoordinator(
        started.append, name="paced", max_concurrency=4, rate_limit=2.0, rate_burst=2
    )
    yield from _with_six_items(c, started)


@pytest.fixture
def keyed(clock: FakeClock) -> Iterator[tuple[Any, list[int]]]:
    """Keyed, 1 start/s per key: items 0-5 over keys 0 and 1."""
    started: list[int] = []
    c = KeyedWorkCoordinator(
        started.append,
        key=lambda i: i % 2,
        name="per-key",
        max_concurrency=4,
        rate_limit_per_key=1.0,
    )
    yield from _with_six_items(c, started)


def _with_six_items(c: Any, started: list[int]) -> Iterator[tuple[Any, list[int]]]:
    """Enqueue items 0-5, let the limit settle, hand the coordinator over, close it."""
    try:
        for i in range(6):
            c.enqueue(i)
        settle(c, started)
        yield c, started
    finally:
        c.close(WAIT)


# -- the state query -----------------------------------------------------------------------


def test_stats_say_what_the_global_limit_holds_back(limited, clock):
    """The burst starts; the rest wait in the backlog for tokens, and each wait counts once."""
    c, started = limited
    s = c.stats()
    assert (len(started), s.pending_count) == (2, 4)
    assert s.rate_limit == RateLimitStats(
        rate_limit=2.0,
        rate_limit_per_key=None,
        rate_burst=2,
        tokens=0,
        waiting=4,
        holds=1,
        throttled_keys=0,
        key_waiting=0,
        key_holds=0,
    )
    s = advance(c, clock, started, 0.5)  # one token
    assert (len(started), s.rate_limit.waiting, s.rate_limit.holds) == (3, 3, 2)
    s = advance(c, clock, started, 10.0)  # a full bucket: two starts
    assert (len(started), s.rate_limit.waiting, s.rate_limit.holds) == (5, 1, 3)
    assert s.rate_limit.tokens == 0
    s = advance(c, clock, started, 10.0)
    assert (len(started), s.pending_count, s.rate_limit.waiting) == (6, 0, 0)
    assert s.rate_limit.tokens == 1  # the last start took one of the two
    s = advance(c, clock, started, 10.0)
    assert (s.rate_limit.tokens, s.rate_limit.holds) == (2, 3)


def test_nothing_waits_for_a_token_while_paused_or_after_cancel(limited, clock):
    """Paused, the limit is not what holds the backlog; cancelled, nothing waits at all."""
    c, _started = limited
    c.pause()
    assert c.stats().rate_limit.waiting == 0
    c.resume()
    assert c.stats().rate_limit.waiting == 4
    c.cancel()
    s = c.stats()
    assert (s.pending_count, s.rate_limit.waiting, s.rate_limit.holds) == (0, 0, 1)


def test_stats_say_which_keys_wait_for_their_token(keyed, clock):
    """Per key: one start each, then both keys wait; their items are counted."""
    c, started = keyed
    s = c.stats()
    assert sorted(started) == [0, 1]
    limits = s.rate_limit
    assert (limits.rate_limit, limits.rate_limit_per_key, limits.rate_burst) == (None, 1.0, 1)
    assert (limits.throttled_keys, limits.key_waiting, limits.key_holds) == (2, 4, 2)
    assert (limits.tokens, limits.waiting, limits.holds) == (None, 0, 0)
    s = advance(c, clock, started, 1.0)
    limits = s.rate_limit
    assert sorted(started) == [0, 1, 2, 3]
    assert (limits.throttled_keys, limits.key_waiting, limits.key_holds) == (2, 2, 4)
    s = advance(c, clock, started, 1.0)
    limits = s.rate_limit
    assert (s.pending_count, limits.throttled_keys, limits.key_waiting) == (0, 0, 0)


def test_a_bucket_counts_the_starts_it_allows_now():
    """available(): a full bucket allows its burst; each start takes one; time refills."""
    bucket = TokenBucket(2.0, 3)
    assert bucket.available(10.0) == 3
    bucket.take(10.0)
    bucket.take(10.0)
    assert bucket.available(10.0) == 1
    bucket.take(10.0)
    assert bucket.available(10.0) == 0
    assert bucket.available(10.5) == 1  # one interval later, one token
    assert bucket.available(11.5) == 3  # never more than the burst
    assert bucket.available(12.0) == 3


def test_no_record_without_a_rate_limit(clock):
    """A plain coordinator, and one whose schedule exists only for delays, report None."""
    with WorkCoordinator(lambda _: None) as plain:
        assert plain.stats().rate_limit is None
    with WorkCoordinator(lambda _: None) as delayed:
        delayed.enqueue(1, delay=30.0)
        assert delayed.stats().rate_limit is None
        delayed.cancel()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rate=st.sampled_from([0.5, 1.0, 3.0]),
    burst=st.integers(1, 3),
    steps=st.lists(
        st.one_of(st.integers(1, 4), st.sampled_from([0.2, 0.5, 1.0, 3.0])), max_size=12
    ),
)
def test_the_gauges_agree_with_the_counters_at_every_step(
    rate: float, burst: int, steps: list[int | float]
) -> None:
    """Whatever the interleaving of intake and time: waiting is the whole backlog exactly
    when no token is left, tokens stay within the burst, holds only grow and never
    outnumber the starts that ended a wait."""
    clock = FakeClock()
    started: list[int] = []
    with use_schedule_clock(clock):
        c = WorkCoordinator(started.append, max_concurrency=8, rate_limit=rate, rate_burst=burst)
    holds = 0
    try:
        for step in steps:
            if isinstance(step, int):
                c.enqueue_many(range(step))
                s = settle(c, started)
            else:
                s = advance(c, clock, started, step)
            limits = s.rate_limit
            assert limits is not None
            assert 0 <= limits.tokens <= burst
            if s.pending_count:
                assert limits.tokens == 0  # the bucket is what keeps them pending
                assert limits.waiting == s.pending_count
            else:
                assert limits.waiting == 0
            assert holds <= limits.holds <= max(0, len(started) - burst) + 1
            holds = limits.holds
    finally:
        c.close(WAIT)


# -- the Prometheus collector -------------------------------------------------------------


def test_prometheus_exports_the_limits_by_scope(keyed, limited):
    """The per-key scope of the keyed coordinator, the global one of the other; nothing
    for a coordinator without a limit."""
    per_key, _ = keyed
    paced, _ = limited
    with WorkCoordinator(lambda _: None, name="free") as free:
        metrics = CollectorRegistry()
        metrics.register(CoordinatorCollector([per_key, paced, free]))

        def sample(name: str, **labels: str) -> float | None:
            return metrics.get_sample_value(f"ephemeral_coordinator_{name}", labels)

        assert sample("rate_limit_per_second", coordinator="per-key", scope="coordinator") is None
        assert sample("rate_limit_tokens", coordinator="per-key") is None
        assert sample("rate_limit_per_second", coordinator="per-key", scope="key") == 1.0
        assert sample("rate_limit_waiting", coordinator="per-key", scope="key") == 4.0
        assert sample("rate_limit_holds_total", coordinator="per-key", scope="key") == 2.0
        assert sample("rate_limited_keys", coordinator="per-key") == 2.0
        assert sample("rate_limit_burst", coordinator="per-key") == 1.0

        assert sample("rate_limit_per_second", coordinator="paced", scope="coordinator") == 2.0
        assert sample("rate_limit_per_second", coordinator="paced", scope="key") is None
        assert sample("rate_limit_tokens", coordinator="paced") == 0.0
        assert sample("rate_limit_waiting", coordinator="paced", scope="coordinator") == 4.0
        assert sample("rate_limit_holds_total", coordinator="paced", scope="coordinator") == 1.0
        assert sample("rate_limited_keys", coordinator="paced") is None

        text = generate_latest(metrics).decode()
        assert 'coordinator="free"' in text
        assert not [
            line
            for line in text.splitlines()
            if "rate_limit" in line and 'coordinator="free"' in line
        ]


def test_prometheus_follows_the_limit_between_scrapes(limited, clock):
    """Values are read at each scrape: a token later, one item fewer waits."""
    c, started = limited
    metrics = CollectorRegistry()
    metrics.register(CoordinatorCollector([c]))
    labels = {"coordinator": "paced", "scope": "coordinator"}
    assert metrics.get_sample_value("ephemeral_coordinator_rate_limit_waiting", labels) == 4.0
    advance(c, clock, started, 0.5)
    assert metrics.get_sample_value("ephemeral_coordinator_rate_limit_waiting", labels) == 3.0
    assert metrics.get_sample_value("ephemeral_coordinator_rate_limit_holds_total", labels) == 2.0


# -- the console ---------------------------------------------------------------------------


def test_summary_has_a_rate_limit_line(keyed, limited):
    """The summary says, per coordinator with a limit, what waits now and the holds so far."""
    per_key, _ = keyed
    paced, _ = limited
    lines = summary([paced, per_key]).splitlines()
    assert "  rate limit (burst 2) 2/s: 4 waiting, 1 holds, 0 tokens" in lines
    assert "  rate limit 1/s per key: 2 keys (4 items) waiting, 2 holds" in lines


def test_live_view_line_and_table_show_what_is_throttled(limited):
    """The plain line counts throttled items; the table's caption has the limit's line."""
    c, _ = limited
    assert " throttled=4 " in _plain_line(_row(c, None), 1.0)
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(render_table(c))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert "paced: rate limit (burst 2) 2/s: 4 waiting, 1 holds, 0 tokens" in out


def test_nothing_about_limits_when_nothing_is_held(clock):
    """No limit, or a limit holding nothing back: no line, no caption, no count."""
    with WorkCoordinator(lambda _: None, name="free") as free:
        assert "rate limit" not in summary(free)
        assert "throttled" not in _plain_line(_row(free, None), 1.0)
    with WorkCoordinator(lambda _: None, name="idle", rate_limit=5.0) as idle:
        console = Console(file=io.StringIO(), width=120, color_system=None)
        console.print(render_table(idle))
        assert "rate limit" not in console.file.getvalue()  # type: ignore[attr-defined]
        assert "throttled" not in _plain_line(_row(idle, None), 1.0)
        assert "  rate limit 5/s: 0 waiting, 0 holds, 1 tokens" in summary(idle).splitlines()
