"""Read-only observation of coordinators: what metrics exporters and the console share.

Exporters live in submodules, each behind its own extra, so importing this package
needs nothing beyond the library itself:

* `ephemeral_actors.metrics.prometheus` — a Prometheus collector (extra
  `ephemeral_actors[prometheus]`).

This module holds what they have in common: `ObservableCoordinator`, the few
read-only methods an observer uses, and `coordinators_of()`, which turns "a
registry, one coordinator or several" into the coordinators to read *now*.

Observers only read: `stats()` (rate limits included), the window queries and the
signal queries are state queries the supervisor actor answers in its turn (SPEC 14;
a caller that finds it idle runs that turn itself), so a reading is consistent at
one instant and never touches another actor's state from another thread. Observing
a busy (or closed) coordinator costs it one short turn per query.

Signal buses (SPEC 14: the bus is an actor too) are observed beside the coordinators:
`_buses_in_view()` finds the bus each coordinator publishes to (its `options.signals`)
and `_bus_label()` names a bus the same way on every screen and in every metric.
Reading a bus's `actor_stats()` sends it no message.

Added in version 0.1.0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

from ephemeral_actors._errors import RegistryClosedError, UnknownCoordinatorError
from ephemeral_actors._registry import CoordinatorRegistry
from ephemeral_actors._signals import SignalBus

if TYPE_CHECKING:
    from ephemeral_actors._records import CoordinatorStats, OperationSnapshot
    from ephemeral_actors._signals import SignalEvent

__all__ = ("CoordinatorSource", "ObservableCoordinator", "coordinators_of")


@runtime_checkable
class ObservableCoordinator(Protocol):
    """What observers read of a coordinator; every coordinator kind has it.

    `WorkCoordinator`, `KeyedWorkCoordinator` and `ResultCoordinator` all satisfy
    this protocol, and so does any object of yours that answers the same questions
    (a test double, or an adapter over another queue you want on the same screen).
    """

    @property
    def name(self) -> str:
        """The coordinator's name, the `coordinator` label of every metric."""
        ...

    def stats(self) -> CoordinatorStats:
        """Every counter and state flag, read at one instant."""
        ...

    def get_failed(self) -> tuple[OperationSnapshot, ...]:
        """Operations in the window that ended with an error."""
        ...

    def get_signals(
        self, predicate: Callable[[SignalEvent], bool] | None = None
    ) -> tuple[SignalEvent, ...]:
        """Signals of the operations in the window, oldest first."""
        ...


CoordinatorSource: TypeAlias = (
    CoordinatorRegistry | ObservableCoordinator | Iterable[ObservableCoordinator]
)
"""Where observers find coordinators: a registry, one coordinator, or several.

A `CoordinatorRegistry` is read live: every coordinator it has *created* (and not yet
closed) at the moment of reading; registered names that nobody asked for yet are not
built just to be observed.
"""


def coordinators_of(source: CoordinatorSource) -> tuple[ObservableCoordinator, ...]:
    """Return the coordinators `source` stands for at this moment.

    Args:
        source: A `CoordinatorRegistry` (its created coordinators, in creation order),
            one coordinator, or an iterable of coordinators (taken as given; pass a
            list or tuple, since an iterator is used up by the first call).

    Returns:
        The coordinators, in order. A closed registry has none.

    Raises:
        TypeError: `source` is none of the above, or an element of the iterable
            has no `stats()`.

    Example:
        ```python
        for coordinator in coordinators_of(registry):
            print(coordinator.name, coordinator.stats().pending_count)
        ```
    """
    if isinstance(source, CoordinatorRegistry):
        found: list[ObservableCoordinator] = []
        for name in source.created:
            try:
                coordinator: ObservableCoordinator = source.get(name)
            except (RegistryClosedError, UnknownCoordinatorError):
                # The registry closed between `created` and `get`: nothing to show.
                continue
            found.append(coordinator)
        return tuple(found)
    if isinstance(source, ObservableCoordinator):
        return (source,)
    if isinstance(source, Iterable):
        coordinators = tuple(source)
        for coordinator in coordinators:
            if not isinstance(coordinator, ObservableCoordinator):
                raise TypeError(
                    "expected coordinators (objects with name, stats(), get_failed() and "
                    f"get_signals()), got {type(coordinator).__name__} {coordinator!r}"
                )
        return coordinators
    raise TypeError(
        "expected a CoordinatorRegistry, a coordinator or an iterable of coordinators, "
        f"got {type(source).__name__} {source!r}"
    )


def _check_source(source: object) -> CoordinatorSource:
    """Validate `source` once, up front, and freeze an iterable into a tuple.

    Observers call this at construction so that a bad argument fails there, not at
    the first scrape or refresh, and so that a generator is not used up by it.
    """
    if isinstance(source, CoordinatorRegistry | ObservableCoordinator):
        return source
    if isinstance(source, Iterable) and not isinstance(source, str | bytes):
        frozen = tuple(source)
        coordinators_of(frozen)  # type-checks every element
        return frozen
    raise TypeError(
        "expected a CoordinatorRegistry, a coordinator or an iterable of coordinators, "
        f"got {type(source).__name__} {source!r}"
    )


def _bus_of(coordinator: object) -> SignalBus | None:
    """The signal bus `coordinator` publishes to (its `options.signals`), if any.

    Read defensively: an adapter or a test double may have no `options`, or options
    of its own, and is then simply a coordinator without a bus.
    """
    bus = getattr(getattr(coordinator, "options", None), "signals", None)
    return bus if isinstance(bus, SignalBus) else None


def _buses_in_view(
    coordinators: Iterable[object], given: Iterable[SignalBus] = ()
) -> tuple[SignalBus, ...]:
    """The buses an observer shows: `given` ones first, then the coordinators' own.

    Each bus appears once, however many coordinators share it: buses are compared by
    identity (two buses are never equal otherwise, and a bus need not be named).
    """
    found: dict[int, SignalBus] = {}
    for bus in (*given, *(_bus_of(c) for c in coordinators)):
        if bus is not None:
            found.setdefault(id(bus), bus)
    return tuple(found.values())


def _bus_label(bus: SignalBus) -> str:
    """How observers name `bus`: its `name`, or `unnamed-<hex id>` without one.

    The id keeps two unnamed buses apart for as long as they live, but differs from
    one run to the next: name a bus whose metrics you keep.
    """
    return bus.name or f"unnamed-{id(bus):x}"
