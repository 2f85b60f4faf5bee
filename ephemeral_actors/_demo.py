"""The demo behind `python -m ephemeral_actors demo`: a small shop, watched live.

Events arrive in bursts. Two of every three are orders, processed by a
`KeyedWorkCoordinator` keyed by customer (each customer's orders run one at a
time, in arrival order; different customers run in parallel); the rest are
emails, sent by a `WorkCoordinator`. Both coordinators come from one
`CoordinatorRegistry` and share one `SignalBus`.

What happens on the way:

* a few cards are declined and a few mailboxes bounce: those bodies emit a signal
  (`payment.declined`, `email.bounced`) and raise, so they are recorded as failed
  operations (their exception *type* is logged, never the message);
* a third of the way through, the payment API starts answering "429 Too Many
  Requests" for a while. The body that sees it emits `rate-limit`; the orders
  coordinator (`defer_on_signals="rate-limit"`) stops starting orders — the live
  view shows orders piling up as pending while emails carry on — until a watchdog
  sees the API healthy again and emits `rate-limit.cleared` on the bus
  (`resume_on_signals`), which releases the backlog at once.

`console.live_view` draws both coordinators while this runs; a summary follows.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import random
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any

from ephemeral_actors._operation import current_operation
from ephemeral_actors._options import CoordinatorOptions
from ephemeral_actors._registry import CoordinatorRegistry
from ephemeral_actors._signals import SignalBus, SignalEvent
from ephemeral_actors.console import _wrap_line, live_view, summary

if TYPE_CHECKING:
    from collections.abc import Callable

    from ephemeral_actors._coordinators._base import CoordinatorBase

__all__ = ["run_demo"]

ARRIVALS_PER_SECOND = 40.0
"""How fast events arrive; the demo takes about `items / 40` seconds plus the limit."""

_BURST = 10

_WIDTH = 80
"""Columns the printed summary fits in (lines wrap between words)."""


class PaymentDeclinedError(RuntimeError):
    """The card was declined (simulated)."""


class RateLimitedError(RuntimeError):
    """The payment API answered 429 Too Many Requests (simulated)."""


class MailboxUnavailableError(RuntimeError):
    """The recipient's mailbox bounced the email (simulated)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Order:
    """One order event; only the coordinator's metadata about it is ever recorded."""

    number: int
    customer: str
    seconds: float
    declined: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Email:
    """One email event."""

    number: int
    seconds: float
    bounces: bool


class PaymentApi:
    """A payment API that rate-limits once: after `limit_at` charges, for `cooldown` s."""

    def __init__(self, limit_at: int, cooldown: float) -> None:
        self._lock = threading.Lock()
        self._charges = 0
        self._limit_at = limit_at
        self._cooldown = cooldown
        self._limited_until = 0.0

    def charge(self) -> int:
        """Charge a card; the HTTP status the API answered."""
        with self._lock:
            self._charges += 1
            now = time.monotonic()
            if self._charges == self._limit_at:
                self._limited_until = now + self._cooldown
            return 429 if now < self._limited_until else 200

    def healthy(self) -> bool:
        """What a health probe of the API would say."""
        with self._lock:
            return time.monotonic() >= self._limited_until


class _Shop:
    """The demo's bodies and the bookkeeping that checks per-customer order."""

    def __init__(self, api: PaymentApi) -> None:
        self.api = api
        self._lock = threading.Lock()
        self.processed: dict[str, list[int]] = collections.defaultdict(list)

    def process_order(self, order: Order) -> None:
        with self._lock:
            self.processed[order.customer].append(order.number)
        time.sleep(order.seconds)  # stands in for checking stock and pricing
        if order.declined:
            current_operation().signal("payment.declined")
            raise PaymentDeclinedError(f"card of {order.customer} declined")
        if self.api.charge() == 429:
            # Every order behind this one would get a 429 too: tell the coordinator,
            # which defers new orders as soon as this returns.
            current_operation().signal("rate-limit")
            raise RateLimitedError("429 Too Many Requests")

    @staticmethod
    def send_email(email: Email) -> None:
        time.sleep(email.seconds)  # stands in for talking to the mail server
        if email.bounces:
            current_operation().signal("email.bounced")
            raise MailboxUnavailableError(f"550 mailbox unavailable (email {email.number})")

    def in_arrival_order(self) -> bool:
        with self._lock:
            return all(numbers == sorted(numbers) for numbers in self.processed.values())


class _Watchdog:
    """Waits for `rate-limit`, probes the API until healthy, then emits `rate-limit.cleared`.

    It loops rather than acting once: an order that got its 429 just before the
    limit ended may emit `rate-limit` after the clearance, and a newer defer signal
    defers again, so each one is answered with its own clearance.
    """

    def __init__(self, bus: SignalBus, api: PaymentApi, stop: threading.Event) -> None:
        self.bus = bus
        self.api = api
        self.stop = stop
        self.hit = threading.Event()
        self.first_hit: float | None = None
        self.first_clear: float | None = None
        self.subscription = bus.subscribe("rate-limit", self._on_rate_limit)

    def _on_rate_limit(self, _event: SignalEvent) -> None:
        # Runs on the emitting thread inside emit(): record and wake, never block here.
        if self.first_hit is None:
            self.first_hit = time.monotonic()
        self.hit.set()

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.hit.wait(0.05):
                continue
            self.hit.clear()
            while not self.api.healthy():  # probe the API's health endpoint
                if self.stop.wait(0.05):
                    return
            self.bus.emit("rate-limit.cleared")
            if self.first_clear is None:
                self.first_clear = time.monotonic()


class _LogCounter(logging.Handler):
    """Counts the library's structured log records by their `event` field."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.events: collections.Counter[str] = collections.Counter()
        self.fields: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if isinstance(event, str):
            self.events[event] += 1
            self.fields.update(
                f
                for f in ("coordinator", "operation_id", "key", "error_type")
                if hasattr(record, f)
            )


class _SignalTally:
    """Counts every signal a coordinator's bodies emit, through its `on_signal` hook.

    The coordinators' windows keep only the latest operations, so counting the
    signals still in a window undercounts a long run; this sees each emission once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # on_signal runs on whichever worker emitted
        self.counts: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )

    def counter(self, coordinator: str) -> Callable[[SignalEvent], None]:
        """The `on_signal` callback that counts for `coordinator`."""

        def count(event: SignalEvent) -> None:
            with self._lock:
                self.counts[coordinator][event.signal] += 1

        return count

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Coordinator name -> signal -> count, as `console.summary` takes it."""
        with self._lock:
            return {name: dict(counts) for name, counts in self.counts.items()}


def _say(text: str, out: IO[str]) -> None:
    print("\n".join(_wrap_line(text, _WIDTH)), file=out)


def _workload(items: int, rng: random.Random) -> list[Order | Email]:
    """Two orders for every email; about 4% of cards declined, 5% of mailboxes bouncing.

    At least one of each failure happens whenever there is an order and an email,
    so even a short run shows both in its summary.
    """
    customers = max(4, items // 12)
    numbers = range(items)
    order_numbers = [n for n in numbers if n % 3 != 2]
    email_numbers = [n for n in numbers if n % 3 == 2]
    declined = set(rng.sample(order_numbers, min(len(order_numbers), max(1, items * 4 // 150))))
    bounced = set(rng.sample(email_numbers, min(len(email_numbers), max(1, items * 5 // 300))))
    events: list[Order | Email] = []
    for number in numbers:
        if number % 3 == 2:
            events.append(Email(number, rng.choice((0.01, 0.02, 0.04)), number in bounced))
        else:
            customer = f"customer-{rng.randrange(customers):02d}"
            seconds = rng.choice((0.02, 0.04, 0.06, 0.12))
            events.append(Order(number, customer, seconds, number in declined))
    return events


def _customer_of(order: Order) -> str:
    return order.customer


def run_demo(
    *, items: int = 400, plain: bool = False, seed: int = 7, file: IO[str] | None = None
) -> int:
    """Run the demo workload with a live view, then print a summary.

    Args:
        items: How many events (orders and emails) to process; >= 1.
        plain: Print plain lines (one per coordinator per second) instead of a
            live table; the table also needs rich (`ephemeral_actors[cli]`).
        seed: Seed of the simulated workload, so runs are comparable.
        file: Where to write; `sys.stdout` by default.

    Returns:
        The process exit code (0).

    Raises:
        ValueError: `items` is below 1.
    """
    if isinstance(items, bool) or not isinstance(items, int) or items < 1:
        raise ValueError(f"items must be an int >= 1, got {items!r}")
    out: IO[str] = sys.stdout if file is None else file
    events = _workload(items, random.Random(seed))
    orders_total = sum(isinstance(e, Order) for e in events)
    api = PaymentApi(limit_at=max(2, orders_total // 3), cooldown=min(2.0, 0.5 + items / 270))
    shop = _Shop(api)

    _say(
        f"ephemeral_actors demo: {items} events — {orders_total} orders (one at a time per "
        f"customer) and {items - orders_total} emails, on a shared signal bus; a few fail, "
        "and the payment API rate-limits once",
        out,
    )
    out.flush()
    counter = _LogCounter()
    library_logger = logging.getLogger("ephemeral_actors")
    library_logger.addHandler(counter)
    started = time.monotonic()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    coordinators: list[CoordinatorBase[Any]] = []
    tally = _SignalTally()
    try:
        with SignalBus(name="demo") as bus, CoordinatorRegistry() as registry:
            registry.register_keyed(
                "orders",
                _customer_of,
                shop.process_order,
                CoordinatorOptions(
                    max_concurrency=6,
                    signals=bus,
                    defer_on_signals=("rate-limit",),
                    resume_on_signals=("rate-limit.cleared",),
                    defer_check_interval=0.1,
                    max_defer_attempts=100,  # without a clearance, orders resume after ~10 s
                    on_signal=tally.counter("orders"),
                ),
            )
            registry.register_work(
                "emails",
                shop.send_email,
                CoordinatorOptions(
                    max_concurrency=3, signals=bus, on_signal=tally.counter("emails")
                ),
            )
            orders, emails = registry.get("orders"), registry.get("emails")
            coordinators = [orders, emails]
            watchdog = _Watchdog(bus, api, stop)
            threads = [
                threading.Thread(
                    target=watchdog.run, name="ephemeral-actors-demo-watchdog", daemon=True
                ),
                threading.Thread(
                    target=live_view,
                    args=(registry,),
                    kwargs={
                        "refresh": 1.0 if plain else 0.25,
                        "plain": True if plain else None,
                        "stop": stop,
                        "file": out,
                        "bus": bus,
                    },
                    name="ephemeral-actors-demo-view",
                    daemon=True,
                ),
            ]
            for thread in threads:
                thread.start()
            for first in range(0, items, _BURST):
                for event in events[first : first + _BURST]:
                    (orders if isinstance(event, Order) else emails).enqueue(event)
                time.sleep(_BURST / ARRIVALS_PER_SECOND)
            for coordinator in coordinators:
                coordinator.complete()
            for coordinator in coordinators:
                coordinator.drain()
            stop.set()  # the view draws its last frame before the coordinators close
            for thread in threads:
                thread.join()
            watchdog.subscription.unsubscribe()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        library_logger.removeHandler(counter)

    elapsed = time.monotonic() - started
    totals = [c.stats() for c in coordinators]
    print(file=out)
    _say(
        f"summary: {sum(s.total_enqueued for s in totals)} accepted, "
        f"{sum(s.total_completed for s in totals)} completed, "
        f"{sum(s.total_failed for s in totals)} failed, "
        f"{sum(s.total_cancelled for s in totals)} cancelled in {elapsed:.2f} s",
        out,
    )
    # Closed coordinators and a closed bus still answer with their final state.
    # Signal totals come from the tally: the windows hold only the latest 200 each.
    text = summary(
        coordinators,
        bus=bus,
        failures=3,
        signal_counts=tally.snapshot(),
        short_ids=True,
        width=_WIDTH,
    )
    print(text, file=out)
    if watchdog.first_hit is not None and watchdog.first_clear is not None:
        _say(
            f"rate limit: orders deferred {watchdog.first_clear - watchdog.first_hit:.2f} s, "
            "from the first 'rate-limit' until 'rate-limit.cleared'",
            out,
        )
    else:
        _say("rate limit: not reached (too few orders)", out)
    in_order = "ok" if shop.in_arrival_order() else "VIOLATED"
    _say(f"per-customer order: {in_order}", out)
    logged = ", ".join(f"{name} x{n}" for name, n in sorted(counter.events.items())) or "none"
    fields = ", ".join(sorted(counter.fields)) or "-"
    _say(f"structured log records: {logged} (fields: {fields}; never payloads)", out)
    out.flush()
    return 0
