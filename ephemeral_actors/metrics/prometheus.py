"""Prometheus metrics for coordinators (extra `ephemeral_actors[prometheus]`).

`CoordinatorCollector` is a `prometheus_client` custom collector: it reads each
coordinator's `stats()` when Prometheus scrapes, so it starts no thread and costs
nothing between scrapes. Every coordinator sample is labelled `coordinator="<name>"`;
the signal buses' samples are labelled `bus="<name>"` instead.

```python
from prometheus_client import start_http_server

from ephemeral_actors.metrics.prometheus import register_coordinators

register_coordinators(registry)   # a CoordinatorRegistry, or [coordinator, ...]
start_http_server(9100)           # http://localhost:9100/metrics
```

A coordinator's bus (its `signals` option) is found by the collector; a bus no
coordinator in the source uses can be added with `buses=`:

```python
register_coordinators(registry, buses=[audit_bus])
```

Exported (with the default namespace `ephemeral`):

| metric | type | from |
|---|---|---|
| `ephemeral_coordinator_pending` | gauge | `pending_count` |
| `ephemeral_coordinator_active` | gauge | `active_count` |
| `ephemeral_coordinator_max_concurrency` | gauge | `max_concurrency` |
| `ephemeral_coordinator_tracked_operations` | gauge | `tracked_operations` |
| `ephemeral_coordinator_paused` | gauge (0/1) | `is_paused` |
| `ephemeral_coordinator_intake_closed` | gauge (0/1) | `is_completed` |
| `ephemeral_coordinator_drained` | gauge (0/1) | `is_drained` |
| `ephemeral_coordinator_active_keys` | gauge | `active_keys` (keyed coordinators) |
| `ephemeral_coordinator_enqueued_total` | counter | `total_enqueued` |
| `ephemeral_coordinator_completed_total` | counter | `total_completed` |
| `ephemeral_coordinator_failed_total` | counter | `total_failed` |
| `ephemeral_coordinator_cancelled_total` | counter | `total_cancelled` |
| `ephemeral_coordinator_worker_restarts_total` | counter | `worker_restarts` |
| `ephemeral_coordinator_signals_dropped_total` | counter | `signals_dropped` |
| `ephemeral_coordinator_signals_emitted_total` | counter | `signals_emitted` (if in the stats) |
| `ephemeral_coordinator_abandoned_threads_total` | counter | `abandoned_threads` (if present) |
| `ephemeral_coordinator_rate_limit_per_second` | gauge | the configured rate, by `scope` |
| `ephemeral_coordinator_rate_limit_burst` | gauge | `rate_burst` |
| `ephemeral_coordinator_rate_limit_tokens` | gauge | starts the global bucket allows now |
| `ephemeral_coordinator_rate_limit_waiting` | gauge | items held back now, by `scope` |
| `ephemeral_coordinator_rate_limit_holds_total` | counter | waits for a token so far, by `scope` |
| `ephemeral_coordinator_rate_limited_keys` | gauge | keys waiting for their next token now |
| `ephemeral_coordinator_actors` | gauge | `actor_stats()`: `actors`, by `role` |
| `ephemeral_coordinator_actor_mailbox_depth` | gauge | `mailbox_depth`, by `role` |
| `ephemeral_coordinator_actor_messages_processed_total` | counter | `messages_processed` |
| `ephemeral_signal_bus_actors` | gauge | `SignalBus.actor_stats()`: `actors`, by `bus` |
| `ephemeral_signal_bus_actor_mailbox_depth` | gauge | the bus's `mailbox_depth` |
| `ephemeral_signal_bus_actor_messages_processed_total` | counter | its `messages_processed` |
| `ephemeral_operation_duration_seconds` | histogram | each ended operation, by `outcome` |
| `ephemeral_operation_retries_total` | counter | `attempts - 1` of ended operations, by `outcome` |

The duration histogram is fed by the coordinator's observer hook
(`coordinator.add_observer(callback)`, called once with the final snapshot of every
operation that ran). The collector attaches itself to each coordinator the first
time it sees it — at construction for coordinators given directly, at the first
scrape after creation for a registry's coordinators — so it counts the operations
that end from then on. Its `outcome` label is `completed`, `failed` or `cancelled`
(the body ended with `OperationCancelledError`); items cancelled before they started
have no duration and appear only in `cancelled_total`. An object without the hook
(a test double, an adapter) gets gauges and counters but no histogram series.
The rate-limit series (SPEC 16) come from `CoordinatorStats.rate_limit`, read in the
same `stats()` call, and exist only for coordinators with `rate_limit` (label
`scope="coordinator"`, and the tokens gauge) or, keyed, `rate_limit_per_key`
(`scope="key"`, and the throttled keys gauge). `waiting{scope="coordinator"}` counts
the items in the backlog while a free slot waits for a token (0 when the limit is
not what holds them), `waiting{scope="key"}` the items of keys waiting for their
token; `holds_total` counts each such wait once. A growing `holds_total` with
`waiting` above zero means the rate limit, not `max_concurrency`, sets the pace.
The retries counter comes from the same hook: each ended operation adds the retries
it took (`OperationSnapshot.attempts - 1`), under the outcome it finally had, so
`retries_total{outcome="completed"}` counts retries that saved an operation (an
operation still waiting for its next attempt is counted when it ends).
The actor series (SPEC 14) are read from `actor_stats()` at each scrape, one sample
per role: `supervisor`, `worker`, `callbacks` and, keyed, `key` for a coordinator;
`bus` for a signal bus. A coordinator without `actor_stats()` (an adapter) has none.
The buses exported are those given with `buses=` and the `signals` option of each
coordinator exported, each bus once per scrape however many coordinators share it
(buses are told apart by identity). A bus's `bus` label is its `name`, or
`unnamed-<hex id>` for a bus built without one: unique while the bus lives, but new
at every run, so name the buses you keep metrics of. Two distinct buses with one
name would clash like two coordinators with one name: the first is exported and a
warning is logged (once per name). A closed bus keeps answering (`actors` 0).
Reading a bus's `actor_stats()` sends it no message, so scrapes leave its
`messages_processed` alone.

Added in version 0.1.0.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import re
import threading
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from ephemeral_actors._errors import OperationCancelledError
from ephemeral_actors._signals import SignalBus
from ephemeral_actors.metrics import (
    CoordinatorSource,
    ObservableCoordinator,
    _bus_label,
    _buses_in_view,
    _check_source,
    coordinators_of,
)

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
except ImportError as exc:  # pragma: no cover - exercised in a test with the module hidden
    raise ImportError(
        "ephemeral_actors.metrics.prometheus needs prometheus-client; "
        "install it with: pip install 'ephemeral_actors[prometheus]'"
    ) from exc

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from ephemeral_actors._records import (
        ActorStats,
        CoordinatorStats,
        OperationSnapshot,
        RateLimitStats,
    )

__all__ = ("DEFAULT_BUCKETS", "CoordinatorCollector", "register_coordinators")

logger = logging.getLogger("ephemeral_actors")

DEFAULT_BUCKETS: Final[tuple[float, ...]] = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    math.inf,
)
"""Upper bounds (seconds) of the duration histogram's buckets: 1 ms to 1 min, then +Inf."""

_NAMESPACE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")

# (metric suffix, CoordinatorStats attribute, help text)
_GAUGES: Final = (
    ("pending", "pending_count", "Items accepted and not yet started."),
    ("active", "active_count", "Operations running now."),
    ("max_concurrency", "max_concurrency", "The current global concurrency limit."),
    (
        "tracked_operations",
        "tracked_operations",
        "Operations in the window (running and recently ended).",
    ),
    ("paused", "is_paused", "1 while pause() holds new operations back."),
    ("intake_closed", "is_completed", "1 once complete(), cancel() or close() closed intake."),
    ("drained", "is_drained", "1 once intake is closed and nothing is pending or active."),
)
_COUNTERS: Final = (
    ("enqueued", "total_enqueued", "Items accepted."),
    ("completed", "total_completed", "Operations that ended successfully."),
    ("failed", "total_failed", "Operations whose body raised."),
    (
        "cancelled",
        "total_cancelled",
        "Items dropped by cancel() or a signal, and bodies that acknowledged cancellation.",
    ),
    (
        "worker_restarts",
        "worker_restarts",
        "Crashed workers replaced, stopped key children restarted.",
    ),
    ("signals_dropped", "signals_dropped", "Signal events on_signal_async had no room for."),
)
_OPTIONAL_COUNTERS: Final = (
    ("signals_emitted", "signals_emitted", "Signals emitted by this coordinator's operations."),
    (
        "abandoned_threads",
        "abandoned_threads",
        "Bodies abandoned past twice their item_timeout (each ends when it returns).",
    ),
)
# (metric suffix, help text, labelled by scope: "coordinator" or "key")
_RATE_GAUGES: Final = (
    (
        "rate_limit_per_second",
        "The configured rate limit, in starts per second, by scope.",
        True,
    ),
    ("rate_limit_burst", "Tokens each rate-limit bucket holds when full (rate_burst).", False),
    (
        "rate_limit_tokens",
        "Starts the coordinator-wide rate limit allows right now.",
        False,
    ),
    (
        "rate_limit_waiting",
        "Items held back by a rate limit now (waiting for a token), by scope.",
        True,
    ),
    ("rate_limited_keys", "Keys waiting for their next rate-limit token now.", False),
)
_OUTCOMES: Final = ("completed", "failed", "cancelled")
# Actor statistics (SPEC 14): (metric suffix, ActorStats attribute, is a counter, help
# of the coordinator family, help of the signal bus family).
_ACTOR_FAMILIES: Final = (
    (
        "actors",
        "actors",
        False,
        "Actors of a role alive now (supervisor, worker, key, callbacks).",
        "Actors of a signal bus alive now (role bus; 0 once closed).",
    ),
    (
        "actor_mailbox_depth",
        "mailbox_depth",
        False,
        "Messages waiting in the mailboxes of a role's actors now.",
        "Messages waiting in a signal bus's mailbox now.",
    ),
    (
        "actor_messages_processed",
        "messages_processed",
        True,
        "Messages a role's actors have handled since the coordinator was built.",
        "Messages a signal bus has handled since it was built.",
    ),
)


class _Durations:
    """Bucket counts, sum and count of one (coordinator, outcome) series."""

    __slots__ = ("count", "counts", "retries", "total")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.count = 0
        self.total = 0.0
        self.retries = 0


class CoordinatorCollector:
    """A Prometheus collector of per-coordinator gauges, counters and durations.

    Register it on a `prometheus_client.CollectorRegistry` (or use
    `register_coordinators()`); every scrape then reads `stats()` of each
    coordinator. Nothing runs between scrapes.

    Args:
        source: A `CoordinatorRegistry` (every coordinator it has created, read at
            each scrape), one coordinator, or an iterable of coordinators (frozen
            into a tuple here).
        namespace: Prefix of every metric name (`""` for none).
        buckets: Upper bounds, in seconds, of the duration histogram's buckets;
            sorted, positive, `+Inf` appended if missing.
        buses: Signal buses to export besides those the coordinators use (their
            `signals` option, found at each scrape): one `SignalBus` or an iterable
            of them (frozen into a tuple here).

    Raises:
        TypeError: `source` is not a registry or coordinators, `namespace` is not
            a str, or `buses` is not a `SignalBus` or an iterable of them.
        ValueError: `namespace` is not a valid metric name prefix, or `buckets` is
            empty or unsorted or not positive.

    Example:
        ```python
        from prometheus_client import CollectorRegistry, generate_latest

        metrics = CollectorRegistry()
        metrics.register(CoordinatorCollector([orders, emails]))
        print(generate_latest(metrics).decode())
        ```

    Two coordinators with the same name would give two series with the same
    labels, which Prometheus rejects; the collector exports the first and logs a
    warning (once per name) for the others. Name your coordinators (and your
    buses: the same goes for two buses with one name).
    """

    def __init__(
        self,
        source: CoordinatorSource,
        *,
        namespace: str = "ephemeral",
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        buses: SignalBus | Iterable[SignalBus] | None = None,
    ) -> None:
        self._source = _check_source(source)
        self._buses = _check_buses(buses)
        if not isinstance(namespace, str):
            raise TypeError(f"namespace must be a str, got {type(namespace).__name__}")
        if namespace and not _NAMESPACE.fullmatch(namespace):
            raise ValueError(f"namespace must be a valid metric name prefix, got {namespace!r}")
        self._prefix = f"{namespace}_" if namespace else ""
        self._bounds = _check_buckets(buckets)
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], _Durations] = {}
        # coordinator -> its observer callback; weak so a closed, dropped coordinator
        # is not kept alive by the metrics.
        self._observed: weakref.WeakKeyDictionary[Any, Callable[[OperationSnapshot], None]] = (
            weakref.WeakKeyDictionary()
        )
        self._warned: set[str] = set()
        self._warned_buses: set[str] = set()
        self._attach(coordinators_of(self._source))

    def __repr__(self) -> str:
        return (
            f"<CoordinatorCollector prefix={self._prefix!r} observed={len(self._observed)} "
            f"duration_series={len(self._series)}>"
        )

    # -- the duration histogram ----------------------------------------------------------

    def _attach(self, coordinators: Iterable[ObservableCoordinator]) -> None:
        for coordinator in coordinators:
            add = getattr(coordinator, "add_observer", None)
            if add is None:
                continue
            with self._lock:
                if coordinator in self._observed:
                    continue
                callback = self._observer(coordinator.name)
                self._observed[coordinator] = callback
            add(callback)

    def _observer(self, name: str) -> Callable[[OperationSnapshot], None]:
        bounds = self._bounds
        lock = self._lock
        series = self._series

        def observe(snapshot: OperationSnapshot) -> None:
            # Runs on the coordinator's thread for every ended operation: one short
            # lock hold, no allocation after the first operation of each outcome.
            duration = snapshot.duration or 0.0
            outcome = _outcome(snapshot)
            index = bisect.bisect_left(bounds, duration)
            with lock:
                durations = series.get((name, outcome))
                if durations is None:
                    durations = series[name, outcome] = _Durations(len(bounds))
                durations.counts[index] += 1
                durations.count += 1
                durations.total += duration
                durations.retries += getattr(snapshot, "attempts", 1) - 1

        return observe

    def close(self) -> None:
        """Detach from every coordinator's observer hook (if it has `remove_observer`).

        The collector keeps exporting gauges and counters; only new durations stop
        being counted. Unregister it from the Prometheus registry to stop exporting.
        """
        with self._lock:
            attached = list(self._observed.items())
            self._observed.clear()
        for coordinator, callback in attached:
            remove = getattr(coordinator, "remove_observer", None)
            if remove is not None:
                remove(callback)

    # -- the prometheus_client Collector protocol ---------------------------------------

    def describe(self) -> list[Metric]:
        """The metric families this collector exports, without samples.

        `prometheus_client` calls this on registration to detect name clashes,
        instead of running a full `collect()`.
        """
        return list(self._families(with_optional=True).values())

    def collect(self) -> Iterator[Metric]:
        """Read every coordinator's `stats()` now and yield the metric families."""
        coordinators = self._unique(coordinators_of(self._source))
        self._attach(coordinators)
        readings: list[tuple[ObservableCoordinator, CoordinatorStats]] = [
            (coordinator, coordinator.stats()) for coordinator in coordinators
        ]
        with_optional = any(
            hasattr(stats, attribute)
            for _, stats in readings
            for _, attribute, _ in _OPTIONAL_COUNTERS
        )
        families = self._families(with_optional=with_optional)
        for coordinator, stats in readings:
            labels = [coordinator.name]
            for suffix, attribute, _help in (*_GAUGES, *_COUNTERS):
                family = families[suffix]
                assert isinstance(family, GaugeMetricFamily | CounterMetricFamily)
                family.add_metric(labels, float(getattr(stats, attribute)))
            for suffix, attribute, _help in _OPTIONAL_COUNTERS:
                value = getattr(stats, attribute, None)
                if value is not None and suffix in families:
                    family = families[suffix]
                    assert isinstance(family, CounterMetricFamily)
                    family.add_metric(labels, float(value))
            # Actor statistics (SPEC 14): optional, so adapters without actors still work.
            actor_stats = getattr(coordinator, "actor_stats", None)
            if callable(actor_stats):
                for row in actor_stats():
                    _add_actor_row(families, "", coordinator.name, row)
            rate = getattr(stats, "rate_limit", None)
            if rate is not None:
                self._add_rate_limit(families, coordinator.name, rate)
            active_keys = getattr(coordinator, "active_keys", None)
            if isinstance(active_keys, int):
                keys = families["active_keys"]
                assert isinstance(keys, GaugeMetricFamily)
                keys.add_metric(labels, float(active_keys))
        for label, bus in self._unique_buses(_buses_in_view(coordinators, self._buses)):
            _add_actor_row(families, "bus_", label, bus.actor_stats())
        histogram = families["duration"]
        assert isinstance(histogram, HistogramMetricFamily)
        bounds = self._bounds
        # Durations are exported for the coordinators this scrape saw, like everything
        # else: a coordinator that a registry closed disappears from the scrape.
        present = {coordinator.name for coordinator in coordinators}
        with self._lock:
            series = sorted(
                (key, list(d.counts), d.total, d.retries)
                for key, d in self._series.items()
                if key[0] in present
            )
        retries = families["retries"]
        assert isinstance(retries, CounterMetricFamily)
        for (name, outcome), counts, total, retried in series:
            retries.add_metric([name, outcome], float(retried))
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip(bounds, counts, strict=True):
                cumulative += count
                buckets.append((_bound_label(bound), float(cumulative)))
            histogram.add_metric([name, outcome], buckets, total)
        yield from families.values()

    @staticmethod
    def _add_rate_limit(families: dict[str, Metric], name: str, rate: RateLimitStats) -> None:
        """The rate-limit samples of one coordinator, for each limit it has."""

        def add(suffix: str, labels: list[str], value: float) -> None:
            family = families[suffix]
            assert isinstance(family, GaugeMetricFamily | CounterMetricFamily)
            family.add_metric(labels, value)

        add("rate_limit_burst", [name], float(rate.rate_burst))
        if rate.rate_limit is not None:
            scope = [name, "coordinator"]
            add("rate_limit_per_second", scope, rate.rate_limit)
            add("rate_limit_tokens", [name], float(rate.tokens or 0))
            add("rate_limit_waiting", scope, float(rate.waiting))
            add("rate_limit_holds", scope, float(rate.holds))
        if rate.rate_limit_per_key is not None:
            scope = [name, "key"]
            add("rate_limit_per_second", scope, rate.rate_limit_per_key)
            add("rate_limit_waiting", scope, float(rate.key_waiting))
            add("rate_limit_holds", scope, float(rate.key_holds))
            add("rate_limited_keys", [name], float(rate.throttled_keys))

    def _families(self, *, with_optional: bool) -> dict[str, Metric]:
        base = f"{self._prefix}coordinator_"
        families: dict[str, Metric] = {}
        for suffix, _attribute, help_text in _GAUGES:
            families[suffix] = GaugeMetricFamily(base + suffix, help_text, labels=["coordinator"])
        families["active_keys"] = GaugeMetricFamily(
            base + "active_keys",
            "Keys with a child actor: pending, running or recently idle (keyed coordinators).",
            labels=["coordinator"],
        )
        # Actor statistics (SPEC 14). A bus gets families of its own rather than
        # samples in the coordinators': it belongs to no coordinator (several may share
        # it), so it has a `bus` label where they have `coordinator`.
        bus_base = f"{self._prefix}signal_bus_"
        for suffix, _attribute, counter, help_text, bus_help in _ACTOR_FAMILIES:
            kind = CounterMetricFamily if counter else GaugeMetricFamily
            families[suffix] = kind(base + suffix, help_text, labels=["coordinator", "role"])
            families[f"bus_{suffix}"] = kind(bus_base + suffix, bus_help, labels=["bus", "role"])
        # Rate limits (SPEC 16): samples only for coordinators that have a limit.
        for suffix, help_text, scoped in _RATE_GAUGES:
            labels = ["coordinator", "scope"] if scoped else ["coordinator"]
            families[suffix] = GaugeMetricFamily(base + suffix, help_text, labels=labels)
        families["rate_limit_holds"] = CounterMetricFamily(
            base + "rate_limit_holds",
            "Times a rate limit held an item back that could have started (a free slot, "
            "no token), each wait counted once, by scope.",
            labels=["coordinator", "scope"],
        )
        counters = (*_COUNTERS, *(_OPTIONAL_COUNTERS if with_optional else ()))
        for suffix, _attribute, help_text in counters:
            families[suffix] = CounterMetricFamily(base + suffix, help_text, labels=["coordinator"])
        families["duration"] = HistogramMetricFamily(
            f"{self._prefix}operation_duration_seconds",
            "Duration of operations that ended, from dispatch to end, by outcome.",
            labels=["coordinator", "outcome"],
        )
        families["retries"] = CounterMetricFamily(
            f"{self._prefix}operation_retries",
            "Retries (attempts after the first) of operations that ended, by outcome.",
            labels=["coordinator", "outcome"],
        )
        return families

    def _unique(
        self, coordinators: tuple[ObservableCoordinator, ...]
    ) -> tuple[ObservableCoordinator, ...]:
        seen: set[str] = set()
        unique: list[ObservableCoordinator] = []
        for coordinator in coordinators:
            name = coordinator.name
            if name in seen:
                if name not in self._warned:
                    self._warned.add(name)
                    logger.warning(
                        f"metrics: two coordinators are named {name!r}; only the first is exported",
                        extra={"coordinator": name, "event": "metrics.duplicate_name"},
                    )
                continue
            seen.add(name)
            unique.append(coordinator)
        return tuple(unique)

    def _unique_buses(self, buses: tuple[SignalBus, ...]) -> list[tuple[str, SignalBus]]:
        """Each bus with its label; a bus whose label is taken is left out, with a warning."""
        labelled: dict[str, SignalBus] = {}
        for bus in buses:
            label = _bus_label(bus)
            if label in labelled:
                if label not in self._warned_buses:
                    self._warned_buses.add(label)
                    logger.warning(
                        f"metrics: two signal buses are named {label!r}; only the first "
                        "is exported",
                        extra={"bus": label, "event": "metrics.duplicate_bus_name"},
                    )
                continue
            labelled[label] = bus
        return list(labelled.items())


def register_coordinators(
    source: CoordinatorSource,
    registry: CollectorRegistry = REGISTRY,
    *,
    namespace: str = "ephemeral",
    buckets: Sequence[float] = DEFAULT_BUCKETS,
    buses: SignalBus | Iterable[SignalBus] | None = None,
) -> CoordinatorCollector:
    """Build a `CoordinatorCollector` for `source` and register it on `registry`.

    Args:
        source: A `CoordinatorRegistry`, one coordinator, or coordinators.
        registry: The Prometheus registry; the process-wide default
            `prometheus_client.REGISTRY` unless given.
        namespace: Prefix of every metric name.
        buckets: Upper bounds of the duration histogram's buckets, in seconds.
        buses: Signal buses to export besides the coordinators' own (their
            `signals` option): one `SignalBus` or several.

    Returns:
        The registered collector (`registry.unregister(collector)` removes it).

    Raises:
        TypeError: `source` or `buses` is not what it should be.
        ValueError: The registry already has metrics with these names (register
            once, or use another `namespace`).

    Example:
        ```python
        from prometheus_client import start_http_server

        register_coordinators(app_registry)
        start_http_server(9100)
        ```
    """
    collector = CoordinatorCollector(source, namespace=namespace, buckets=buckets, buses=buses)
    registry.register(collector)
    return collector


def _check_buses(buses: object) -> tuple[SignalBus, ...]:
    """Validate `buses` once, up front, and freeze an iterable into a tuple."""
    if buses is None:
        return ()
    if isinstance(buses, SignalBus):
        return (buses,)
    if isinstance(buses, Iterable) and not isinstance(buses, str | bytes):
        frozen = tuple(buses)
        for bus in frozen:
            if not isinstance(bus, SignalBus):
                raise TypeError(
                    "buses must be a SignalBus or an iterable of SignalBus, got an element "
                    f"{type(bus).__name__} {bus!r}"
                )
        return frozen
    raise TypeError(
        "buses must be a SignalBus, an iterable of SignalBus or None, "
        f"got {type(buses).__name__} {buses!r}"
    )


def _add_actor_row(families: dict[str, Metric], kind: str, label: str, row: ActorStats) -> None:
    """One `actor_stats()` row: `kind` is "" for a coordinator's, "bus_" for a bus's."""
    for suffix, attribute, _counter, _help, _bus_help in _ACTOR_FAMILIES:
        family = families[kind + suffix]
        assert isinstance(family, GaugeMetricFamily | CounterMetricFamily)
        family.add_metric([label, row.role], float(getattr(row, attribute)))


def _check_buckets(buckets: Sequence[float]) -> tuple[float, ...]:
    bounds = [float(b) for b in buckets]
    if not bounds:
        raise ValueError("buckets must not be empty")
    if any(b <= 0 or math.isnan(b) for b in bounds):
        raise ValueError(f"buckets must be positive, got {tuple(buckets)!r}")
    if any(a >= b for a, b in itertools.pairwise(bounds)):
        raise ValueError(f"buckets must be strictly increasing, got {tuple(buckets)!r}")
    if bounds[-1] != math.inf:
        bounds.append(math.inf)
    return tuple(bounds)


def _bound_label(bound: float) -> str:
    return "+Inf" if bound == math.inf else repr(bound)


def _outcome(snapshot: OperationSnapshot) -> str:
    error = snapshot.error
    if error is None:
        return "completed"
    # Signal-cancelled items and bodies that acknowledged cancellation both end with
    # an OperationCancelledError (SignalCancelledError is one).
    if isinstance(error, OperationCancelledError):
        return "cancelled"
    return "failed"
