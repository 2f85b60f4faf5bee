"""Prometheus metrics: a real prometheus_client registry and HTTP endpoint are scraped."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import logging
import math
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from ephemeral_actors import (
    ActorStats,
    CoordinatorOptions,
    CoordinatorRegistry,
    CoordinatorStats,
    KeyedWorkCoordinator,
    OperationCancelledError,
    OperationSnapshot,
    SignalBus,
    SignalCancelledError,
    SignalEvent,
    WorkCoordinator,
    current_operation,
)
from ephemeral_actors.metrics import ObservableCoordinator, coordinators_of
from ephemeral_actors.metrics.prometheus import (
    DEFAULT_BUCKETS,
    CoordinatorCollector,
    register_coordinators,
)
from ephemeral_actors.testing import crash_worker
from tests.conftest import WAIT, PinnedBus, run_all


@pytest.fixture
def metrics() -> CollectorRegistry:
    return CollectorRegistry()


def fails_on_multiples_of_five(n: int) -> None:
    if n % 5 == 0:
        raise ValueError(f"payload {n} is bad")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse an exposition into {(sample name, sorted labels): value}."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


# -- gauges and counters ---------------------------------------------------------------


def test_scrape_exports_every_counter_per_coordinator(make, metrics):
    """One scrape has each coordinator's gauges and counters, labelled by name, exactly."""
    work = make(fails_on_multiples_of_five, name="work", max_concurrency=3)
    keyed = make(fails_on_multiples_of_five, key=lambda n: n % 4, name="keyed", max_concurrency=2)
    run_all(work, list(range(20)))
    run_all(keyed, list(range(12)))
    metrics.register(CoordinatorCollector([work, keyed]))

    found = samples(generate_latest(metrics).decode())

    expected = {
        "work": {"enqueued": 20, "completed": 16, "failed": 4, "max_concurrency": 3},
        "keyed": {"enqueued": 12, "completed": 9, "failed": 3, "max_concurrency": 2},
    }
    for name, numbers in expected.items():
        assert (
            value(found, "ephemeral_coordinator_enqueued_total", coordinator=name)
            == numbers["enqueued"]
        )
        assert (
            value(found, "ephemeral_coordinator_completed_total", coordinator=name)
            == numbers["completed"]
        )
        assert (
            value(found, "ephemeral_coordinator_failed_total", coordinator=name)
            == numbers["failed"]
        )
        assert value(found, "ephemeral_coordinator_cancelled_total", coordinator=name) == 0
        assert (
            value(found, "ephemeral_coordinator_max_concurrency", coordinator=name)
            == numbers["max_concurrency"]
        )
        assert value(found, "ephemeral_coordinator_pending", coordinator=name) == 0
        assert value(found, "ephemeral_coordinator_active", coordinator=name) == 0
        assert value(found, "ephemeral_coordinator_worker_restarts_total", coordinator=name) == 0
        assert value(found, "ephemeral_coordinator_signals_dropped_total", coordinator=name) == 0
        assert value(found, "ephemeral_coordinator_drained", coordinator=name) == 1
        assert value(found, "ephemeral_coordinator_intake_closed", coordinator=name) == 1
        assert value(found, "ephemeral_coordinator_paused", coordinator=name) == 0
        stats = (work if name == "work" else keyed).stats()
        assert (
            value(found, "ephemeral_coordinator_tracked_operations", coordinator=name)
            == stats.tracked_operations
        )
    assert (
        value(found, "ephemeral_coordinator_active_keys", coordinator="keyed") == keyed.active_keys
    )
    assert value(found, "ephemeral_coordinator_active_keys", coordinator="work") is None


def test_values_are_read_at_scrape_time(make, metrics):
    """Each scrape reads stats() anew: pending work shows up, then its completion."""
    work = make(lambda _n: None, name="live", max_concurrency=2)
    metrics.register(CoordinatorCollector(work))
    work.pause()
    for n in range(5):
        work.enqueue(n)

    assert metrics.get_sample_value("ephemeral_coordinator_pending", {"coordinator": "live"}) == 5
    assert metrics.get_sample_value("ephemeral_coordinator_paused", {"coordinator": "live"}) == 1
    assert metrics.get_sample_value("ephemeral_coordinator_drained", {"coordinator": "live"}) == 0

    work.resume()
    work.complete()
    work.drain(WAIT)
    assert metrics.get_sample_value("ephemeral_coordinator_pending", {"coordinator": "live"}) == 0
    assert (
        metrics.get_sample_value("ephemeral_coordinator_completed_total", {"coordinator": "live"})
        == 5
    )


def test_worker_restarts_are_counted(make, metrics):
    """A crashed worker actor shows as one worker restart and one failure."""

    def body(n: int) -> None:
        if n == 2:
            crash_worker()

    work = make(body, name="crashy", max_concurrency=2)
    run_all(work, list(range(6)))
    metrics.register(CoordinatorCollector([work]))
    labels = {"coordinator": "crashy"}
    assert metrics.get_sample_value("ephemeral_coordinator_worker_restarts_total", labels) == 1
    assert metrics.get_sample_value("ephemeral_coordinator_failed_total", labels) == 1


def test_actor_statistics_are_exported_per_role(make, metrics):
    """SPEC 14: actors alive, mailbox depth and messages processed, labelled by role."""
    keyed = KeyedWorkCoordinator(lambda n: n % 3, lambda n: None, name="by-key")
    try:
        run_all(keyed, list(range(9)))
        metrics.register(CoordinatorCollector([keyed]))
        rows = {row.role: row for row in keyed.actor_stats()}
        assert set(rows) == {"supervisor", "worker", "key", "callbacks"}
        for role, row in rows.items():
            labels = {"coordinator": "by-key", "role": role}
            assert metrics.get_sample_value("ephemeral_coordinator_actors", labels) == row.actors
            assert (
                metrics.get_sample_value("ephemeral_coordinator_actor_mailbox_depth", labels)
                == row.mailbox_depth
            )
            processed = metrics.get_sample_value(
                "ephemeral_coordinator_actor_messages_processed_total", labels
            )
            assert processed is not None
            assert processed >= row.messages_processed  # read at scrape time, later
        assert rows["key"].actors == 3
        assert rows["worker"].messages_processed == 9
    finally:
        keyed.close(WAIT)


BUS_FAMILIES = (
    "ephemeral_signal_bus_actors",
    "ephemeral_signal_bus_actor_mailbox_depth",
    "ephemeral_signal_bus_actor_messages_processed",
)


def bus_samples(metrics: CollectorRegistry) -> dict[str, dict[str, float]]:
    """{bus label: {metric name: value}} of every signal bus series in one scrape."""
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(generate_latest(metrics).decode()):
        for sample in family.samples:
            if sample.name.startswith("ephemeral_signal_bus_"):
                assert sample.labels["role"] == "bus"
                found.setdefault(sample.labels["bus"], {})[sample.name] = sample.value
    return found


def test_signal_bus_actor_stats_are_exported_once_per_bus(make, metrics):
    """SPEC 14: each bus in view (the coordinators' own and those given) is one series,
    labelled by its name, with exactly what its actor_stats() says; a scrape sends the
    bus no message."""
    shared = SignalBus(name="shared")
    extra = SignalBus()
    try:
        alone = make(lambda _n: None, name="alone")
        payments = make(lambda _n: current_operation().signal("paid"), name="pay", signals=shared)
        emails = make(lambda _n: None, name="emails", signals=shared)
        run_all(payments, [1, 2, 3])
        shared.emit("deploy.started")
        shared.sense()
        extra.emit("audit")
        metrics.register(CoordinatorCollector([alone, payments, emails], buses=[extra, shared]))

        before = {"shared": shared.actor_stats(), f"unnamed-{id(extra):x}": extra.actor_stats()}
        found = bus_samples(metrics)
        assert found == {
            label: {
                "ephemeral_signal_bus_actors": stats.actors,
                "ephemeral_signal_bus_actor_mailbox_depth": stats.mailbox_depth,
                "ephemeral_signal_bus_actor_messages_processed_total": stats.messages_processed,
            }
            for label, stats in before.items()
        }
        assert before["shared"].messages_processed >= 2  # emit and sense, at least
        assert bus_samples(metrics) == found  # scraping is no message to the bus
        assert shared.actor_stats() == before["shared"]
    finally:
        shared.close()
        extra.close()


def test_signal_bus_series_carry_its_mailbox_depth(metrics):
    """The bus series are the bus's actor_stats(), whatever its figures: a deep mailbox
    shows; a closed bus is still exported, with no actor alive."""
    with PinnedBus(ActorStats("bus", 1, 7, 42), name="deep") as deep:
        collector = register_coordinators([], metrics, buses=deep)
        assert bus_samples(metrics) == {
            "deep": {
                "ephemeral_signal_bus_actors": 1,
                "ephemeral_signal_bus_actor_mailbox_depth": 7,
                "ephemeral_signal_bus_actor_messages_processed_total": 42,
            }
        }
    closed = SignalBus(name="closed")
    closed.close()
    metrics.unregister(collector)
    metrics.register(CoordinatorCollector([], buses=(closed,)))
    assert bus_samples(metrics)["closed"]["ephemeral_signal_bus_actors"] == 0


def test_describe_lists_the_signal_bus_families(make, metrics):
    """describe() names every family collect() yields, the bus families included."""
    with SignalBus(name="described") as bus:
        work = make(lambda _n: None, name="described", signals=bus)
        collector = CoordinatorCollector([work])
        described = [family.name for family in collector.describe()]
        collected = [family.name for family in collector.collect()]
        assert set(BUS_FAMILIES) <= set(described)
        assert set(collected) <= set(described)
        assert len(described) == len(set(described))
        bus_families = [f for f in collector.collect() if f.name in BUS_FAMILIES]
        assert [len(f.samples) for f in bus_families] == [1, 1, 1]


def test_two_buses_with_one_name_export_the_first_and_warn_once(metrics, caplog):
    """Two distinct buses named alike would clash: the first is exported, with one warning."""
    with (
        PinnedBus(ActorStats("bus", 1, 1, 10), name="twin") as first,
        PinnedBus(ActorStats("bus", 1, 2, 20), name="twin") as second,
    ):
        metrics.register(CoordinatorCollector([], buses=[first, second]))
        with caplog.at_level(logging.WARNING, logger="ephemeral_actors"):
            assert bus_samples(metrics)["twin"]["ephemeral_signal_bus_actor_mailbox_depth"] == 1
            generate_latest(metrics)
    warnings = [
        r for r in caplog.records if getattr(r, "event", None) == "metrics.duplicate_bus_name"
    ]
    assert len(warnings) == 1


@pytest.mark.parametrize("buses", [42, "bus", [object()], (None,)])
def test_bad_buses_are_rejected(buses):
    """buses= takes a SignalBus or SignalBuses; anything else fails at construction."""
    with pytest.raises(TypeError, match=r"buses must be a SignalBus.*got"):
        CoordinatorCollector([], buses=buses)


def test_dropped_signals_are_exported(make, metrics):
    """Signals on_signal_async had no room for appear as signals_dropped_total."""
    gate = threading.Event()
    started = threading.Event()

    async def handler(_event: SignalEvent) -> None:
        started.set()
        while not gate.is_set():  # noqa: ASYNC110 - a test gate crossing threads
            await asyncio.sleep(0.001)

    def body(_n: int) -> None:
        op = current_operation()
        op.signal("first")
        assert started.wait(WAIT)
        for n in range(5):
            op.signal(f"more.{n}")

    work = make(
        body,
        name="chatty",
        on_signal_async=handler,
        max_concurrent_signal_handlers=1,
        max_queued_signals=2,
    )
    run_all(work, [1])
    metrics.register(CoordinatorCollector([work]))
    dropped = metrics.get_sample_value(
        "ephemeral_coordinator_signals_dropped_total", {"coordinator": "chatty"}
    )
    assert dropped == work.stats().signals_dropped == 3
    if hasattr(work.stats(), "signals_emitted"):
        emitted = metrics.get_sample_value(
            "ephemeral_coordinator_signals_emitted_total", {"coordinator": "chatty"}
        )
        assert emitted == 6
    gate.set()


def test_registry_source_scrapes_created_coordinators_only(metrics):
    """With a CoordinatorRegistry, each scrape covers the coordinators created so far."""
    with CoordinatorRegistry() as registry:
        registry.register_work("first", lambda _n: None, CoordinatorOptions(max_concurrency=1))
        registry.register_work("second", lambda _n: None, CoordinatorOptions(max_concurrency=1))
        metrics.register(CoordinatorCollector(registry))
        assert "coordinator=" not in generate_latest(metrics).decode()

        registry.get("first").enqueue(1)
        text = generate_latest(metrics).decode()
        assert 'coordinator="first"' in text
        assert 'coordinator="second"' not in text

        registry.get("second")
        text = generate_latest(metrics).decode()
        assert 'coordinator="first"' in text
        assert 'coordinator="second"' in text
    # A closed registry has no coordinators left to report.
    assert "coordinator=" not in generate_latest(metrics).decode()


def test_http_endpoint_serves_the_metrics(make, metrics):
    """A real prometheus_client HTTP server serves the collector's metrics on /metrics."""
    work = make(fails_on_multiples_of_five, name="served", max_concurrency=2)
    run_all(work, list(range(10)))
    register_coordinators([work], metrics)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=metrics)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=WAIT) as response:
            assert response.status == 200
            body = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT)
    found = samples(body)
    assert value(found, "ephemeral_coordinator_completed_total", coordinator="served") == 8
    assert value(found, "ephemeral_coordinator_failed_total", coordinator="served") == 2


def test_register_twice_is_rejected(make, metrics):
    """Registering a second collector with the same names fails, as prometheus_client does."""
    work = make(lambda _n: None, name="once")
    register_coordinators([work], metrics)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        register_coordinators([work], metrics)
    register_coordinators([work], metrics, namespace="other")  # another prefix is fine
    assert (
        metrics.get_sample_value("other_coordinator_enqueued_total", {"coordinator": "once"}) == 0
    )


def test_registration_does_not_read_the_coordinators(metrics):
    """describe() lets prometheus_client register the collector without calling stats()."""

    class Exploding(FakeCoordinator):
        def stats(self) -> CoordinatorStats:
            raise AssertionError("stats() read at registration")

    metrics.register(CoordinatorCollector([Exploding("quiet")]))


def test_duplicate_names_export_the_first_and_warn_once(make, metrics, caplog):
    """Two coordinators with one name give one series and a single warning."""
    a = make(lambda _n: None, name="same")
    b = make(lambda _n: None, name="same")
    run_all(a, [1, 2])
    metrics.register(CoordinatorCollector([a, b]))
    with caplog.at_level(logging.WARNING, logger="ephemeral_actors"):
        generate_latest(metrics)
        generate_latest(metrics)
    assert (
        metrics.get_sample_value("ephemeral_coordinator_enqueued_total", {"coordinator": "same"})
        == 2
    )
    warnings = [r for r in caplog.records if getattr(r, "event", None) == "metrics.duplicate_name"]
    assert len(warnings) == 1


def test_namespace_prefixes_every_metric(make, metrics):
    """namespace= changes the prefix; an empty namespace means none."""
    work = make(lambda _n: None, name="ns")
    metrics.register(CoordinatorCollector([work], namespace="shop"))
    metrics.register(CoordinatorCollector([work], namespace=""))
    assert metrics.get_sample_value("shop_coordinator_pending", {"coordinator": "ns"}) == 0
    assert metrics.get_sample_value("coordinator_pending", {"coordinator": "ns"}) == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"namespace": "no spaces"}, ValueError, "namespace"),
        ({"namespace": "9starts_with_digit"}, ValueError, "namespace"),
        ({"namespace": 3}, TypeError, "namespace"),
        ({"buckets": ()}, ValueError, "buckets"),
        ({"buckets": (1.0, 0.5)}, ValueError, "increasing"),
        ({"buckets": (0.0, 1.0)}, ValueError, "positive"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, error, match):
    """Bad namespaces and buckets fail at construction with a message naming them."""
    with pytest.raises(error, match=match):
        CoordinatorCollector([], **kwargs)


@pytest.mark.parametrize("source", [42, "work", [object()]])
def test_bad_sources_are_rejected(source):
    """Anything but a registry or coordinators is a TypeError at construction."""
    with pytest.raises(TypeError, match="coordinator"):
        CoordinatorCollector(source)


def test_a_generator_source_is_frozen_once(make, metrics):
    """An iterator of coordinators is taken once, so later scrapes still see them all."""
    work = make(lambda _n: None, name="gen")
    metrics.register(CoordinatorCollector(c for c in [work]))
    generate_latest(metrics)
    assert metrics.get_sample_value("ephemeral_coordinator_pending", {"coordinator": "gen"}) == 0


def test_coordinators_of_reads_each_kind_of_source(make):
    """coordinators_of() accepts a registry, one coordinator, or several."""
    work = make(lambda _n: None, name="single")
    assert coordinators_of(work) == (work,)
    assert coordinators_of([work, work]) == (work, work)
    assert isinstance(work, ObservableCoordinator)
    with CoordinatorRegistry() as registry:
        registry.register_work("r", lambda _n: None)
        assert coordinators_of(registry) == ()
        created = registry.get("r")
        assert coordinators_of(registry) == (created,)
    assert coordinators_of(registry) == ()


# -- the duration histogram (observer hook) ---------------------------------------------


class FakeCoordinator:
    """An ObservableCoordinator with the observer hook, fed by the test."""

    def __init__(self, name: str) -> None:
        self._name = name
        self.observers: list[Callable[[OperationSnapshot], None]] = []

    @property
    def name(self) -> str:
        return self._name

    def stats(self) -> CoordinatorStats:
        return CoordinatorStats(
            name=self._name,
            pending_count=0,
            active_count=0,
            total_enqueued=0,
            total_completed=0,
            total_failed=0,
            total_cancelled=0,
            max_concurrency=1,
            tracked_operations=0,
            signals_dropped=0,
            worker_restarts=0,
            is_completed=False,
            is_drained=False,
            is_paused=False,
        )

    def get_failed(self) -> tuple[OperationSnapshot, ...]:
        return ()

    def get_signals(self, predicate: Any = None) -> tuple[SignalEvent, ...]:
        return ()

    def add_observer(self, callback: Callable[[OperationSnapshot], None]) -> None:
        self.observers.append(callback)

    def remove_observer(self, callback: Callable[[OperationSnapshot], None]) -> bool:
        self.observers.remove(callback)
        return True

    def end(self, duration: float, error: BaseException | None = None) -> None:
        started = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
        snapshot = OperationSnapshot(
            1,
            started,
            started + dt.timedelta(seconds=duration),
            None,
            error is not None,
            error,
            duration,
            (),
            False,
        )
        for observer in self.observers:
            observer(snapshot)


def test_histogram_buckets_durations_by_outcome(metrics):
    """Observed operations land in cumulative buckets, split by outcome, with sum and count."""
    fake = FakeCoordinator("timed")
    collector = CoordinatorCollector([fake], buckets=(0.1, 1.0))
    metrics.register(collector)
    assert len(fake.observers) == 1  # attached at construction, once
    for seconds in (0.05, 0.1, 0.5, 3.0):
        fake.end(seconds)
    fake.end(0.2, ValueError("boom"))
    fake.end(0.0, SignalCancelledError("overload"))
    fake.end(0.4, OperationCancelledError("stop"))

    found = samples(generate_latest(metrics).decode())
    name = "ephemeral_operation_duration_seconds"

    def bucket(outcome: str, le: str) -> float | None:
        return value(found, f"{name}_bucket", coordinator="timed", outcome=outcome, le=le)

    assert [bucket("completed", le) for le in ("0.1", "1.0", "+Inf")] == [2, 3, 4]
    assert value(found, f"{name}_count", coordinator="timed", outcome="completed") == 4
    assert math.isclose(
        value(found, f"{name}_sum", coordinator="timed", outcome="completed") or 0, 3.65
    )
    assert [bucket("failed", le) for le in ("0.1", "1.0", "+Inf")] == [0, 1, 1]
    assert [bucket("cancelled", le) for le in ("0.1", "1.0", "+Inf")] == [1, 2, 2]

    generate_latest(metrics)
    assert len(fake.observers) == 1  # scrapes do not attach again
    collector.close()
    assert fake.observers == []


def test_default_buckets_end_with_inf():
    """The default buckets span 1 ms to a minute and end with +Inf."""
    assert DEFAULT_BUCKETS[0] == 0.001
    assert DEFAULT_BUCKETS[-1] == math.inf
    assert list(DEFAULT_BUCKETS) == sorted(DEFAULT_BUCKETS)


def duration_counts(metrics: CollectorRegistry, name: str) -> tuple[float, float]:
    """(completed, failed) histogram counts of coordinator `name`, once they settle.

    The core calls observers on the worker thread just after the operation is
    recorded, which can be a moment after drain() returned; wait for the counts to
    stop changing rather than read them once.
    """

    def read() -> tuple[float, float]:
        counts = [
            metrics.get_sample_value(
                "ephemeral_operation_duration_seconds_count",
                {"coordinator": name, "outcome": outcome},
            )
            or 0.0
            for outcome in ("completed", "failed")
        ]
        return counts[0], counts[1]

    deadline = time.monotonic() + WAIT
    last = read()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = read()
        if now == last:
            return now
        last = now
    return last


@pytest.mark.skipif(
    not hasattr(WorkCoordinator, "add_observer"),
    reason="the core's observer hook (coordinator.add_observer) is not there yet",
)
def test_histogram_counts_every_ended_operation_of_a_real_coordinator(make, metrics):
    """With the core's observer hook, the histogram counts each ended operation exactly once."""
    work = make(fails_on_multiples_of_five, name="exact", max_concurrency=4)
    metrics.register(CoordinatorCollector([work]))
    run_all(work, list(range(50)))
    assert duration_counts(metrics, "exact") == (40, 10)


@pytest.mark.skipif(
    not hasattr(WorkCoordinator, "add_observer"),
    reason="the core's observer hook (coordinator.add_observer) is not there yet",
)
def test_registry_coordinators_are_observed_from_the_first_scrape(metrics):
    """A registry's coordinator is observed from the first scrape after it was created."""
    with CoordinatorRegistry() as registry:
        registry.register_work("lazy", lambda _n: None, CoordinatorOptions(max_concurrency=2))
        metrics.register(CoordinatorCollector(registry))
        work = registry.get("lazy")
        generate_latest(metrics)  # attaches the observer
        run_all(work, list(range(7)))
        assert duration_counts(metrics, "lazy") == (7, 0)


# -- the optional dependency --------------------------------------------------------------


def test_missing_prometheus_client_names_the_extra(monkeypatch):
    """Without prometheus_client, importing the module says which extra to install."""
    monkeypatch.delitem(sys.modules, "ephemeral_actors.metrics.prometheus")
    for module in [m for m in sys.modules if m.split(".")[0] == "prometheus_client"]:
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=r"ephemeral_actors\[prometheus\]"):
        importlib.import_module("ephemeral_actors.metrics.prometheus")
