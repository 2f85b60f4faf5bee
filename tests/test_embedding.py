"""Coordinators inside a Pykka actor system: ownership, bodies that ask actors, deadlock rules."""

from __future__ import annotations

import threading
from typing import Any

import pykka
import pytest

from ephemeral_actors import CoordinatorOptions, KeyedWorkCoordinator, ResultCoordinator
from ephemeral_actors.messages import Enqueue, GetStats
from ephemeral_actors.testing import library_threads
from tests.conftest import WAIT


class PriceBook(pykka.ThreadingActor):
    """A user actor that bodies ask: it owns some state."""

    use_daemon_thread = True

    def __init__(self) -> None:
        super().__init__()
        self.prices = {"apple": 3, "pear": 5}

    def on_receive(self, message: Any) -> Any:
        return self.prices[message]


class Shop(pykka.ThreadingActor):
    """A user actor that owns a keyed coordinator for its whole life."""

    use_daemon_thread = True

    def __init__(self, done: threading.Event) -> None:
        super().__init__()
        self.done = done
        self.orders: KeyedWorkCoordinator[tuple[str, int], str] | None = None
        self.seen: list[tuple[str, int]] = []

    def on_start(self) -> None:
        self.orders = KeyedWorkCoordinator(
            lambda o: o[0], self.seen.append, CoordinatorOptions(name="shop-orders")
        )

    def on_stop(self) -> None:
        assert self.orders is not None
        self.orders.close()
        self.done.set()

    def on_receive(self, message: Any) -> Any:
        assert self.orders is not None
        if message == "stats":
            return self.orders.actor_ref.ask(GetStats(), timeout=WAIT)
        self.orders.actor_ref.tell(Enqueue(message))
        return None


def test_an_actor_owns_a_coordinator_from_on_start_to_on_stop():
    """A coordinator started in on_start and closed in on_stop leaves nothing behind."""
    before = set(library_threads())
    done = threading.Event()
    shop = Shop.start(done)
    for i in range(20):
        shop.tell(("alice" if i % 2 else "bob", i))
    stats = shop.ask("stats", timeout=WAIT)
    assert stats.total_enqueued == 20
    shop.stop(timeout=WAIT)
    assert done.wait(WAIT)
    for thread in set(library_threads()) - before:
        thread.join(WAIT)
    assert not set(library_threads()) - before


def test_a_body_may_ask_another_actor():
    """Bodies can be clients of user actors: the body asks, the actor answers."""
    book = PriceBook.start()
    try:
        with ResultCoordinator(
            lambda fruit: book.ask(fruit, timeout=WAIT), CoordinatorOptions(max_concurrency=4)
        ) as prices:
            futures = [prices.submit(f) for f in ("apple", "pear", "apple")]
        assert [f.get(timeout=WAIT) for f in futures] == [3, 5, 3]
    finally:
        book.stop(timeout=WAIT)


class Cashier(pykka.ThreadingActor):
    """Submits work whose body asks the cashier itself: the deadlock rule in action."""

    use_daemon_thread = True

    def __init__(self) -> None:
        super().__init__()
        self.register: ResultCoordinator[int, int] | None = None

    def on_start(self) -> None:
        me = self.actor_ref
        self.register = ResultCoordinator(lambda n: me.ask(("price", n), timeout=WAIT))

    def on_stop(self) -> None:
        assert self.register is not None
        self.register.close(WAIT)

    def on_receive(self, message: Any) -> Any:
        assert self.register is not None
        kind, n = message
        if kind == "price":
            return n * 10
        future = self.register.submit(n)
        if kind == "blocking":
            # Wrong: this actor waits on a body that needs this very actor.
            return future.get(timeout=0.3)
        # Right: hand the future back; the asker waits, this actor stays free.
        return future


def test_blocking_an_actor_on_a_future_that_needs_it_deadlocks():
    """The rule: never block an actor on a future that needs that same actor."""
    cashier = Cashier.start()
    try:
        with pytest.raises(pykka.Timeout):
            cashier.ask(("blocking", 4), timeout=WAIT)
        outcome = cashier.ask(("handing back", 4), timeout=WAIT)
        assert outcome.get(timeout=WAIT) == 40
    finally:
        cashier.stop(timeout=WAIT)
