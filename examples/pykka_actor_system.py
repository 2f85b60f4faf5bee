"""A coordinator inside a Pykka actor system.

The `Warehouse` actor owns a `KeyedWorkCoordinator` (built in `on_start`, closed in
`on_stop`) that applies stock moves one SKU at a time, and drives it with messages
from `ephemeral_actors.messages`: `tell(Enqueue(...))` never blocks the actor,
`ask(GetStats())` answers a `CoordinatorStats`. It also shows the deadlock rule: never
block an actor on a future whose work needs that same actor.

Run: python examples/pykka_actor_system.py
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pykka

from ephemeral_actors import CoordinatorOptions, KeyedWorkCoordinator
from ephemeral_actors.messages import Enqueue, GetStats, Submit

STOCK: dict[str, int] = {}  # stands in for a database; one writer per SKU at a time
AUDITED: dict[str, int] = {}


@dataclass(frozen=True)  # messages cross actors: immutable
class Move:
    sku: str
    delta: int


@dataclass(frozen=True)
class Audit:
    sku: str
    warehouse: pykka.ActorRef[Any]  # the body asks this actor for the level


@dataclass(frozen=True)
class Level:
    sku: str


def apply(message: Move | Audit) -> None:
    if isinstance(message, Audit):  # a body that needs the Warehouse actor to answer
        AUDITED[message.sku] = message.warehouse.ask(Level(message.sku), block=True, timeout=5)
    else:
        STOCK[message.sku] = STOCK.get(message.sku, 0) + message.delta


class Warehouse(pykka.ThreadingActor):
    def on_start(self) -> None:
        options = CoordinatorOptions(name="stock-moves", max_concurrency=4)
        self.moves = KeyedWorkCoordinator(lambda m: m.sku, apply, options)

    def on_stop(self) -> None:
        self.moves.complete()
        self.moves.drain(timeout=10)
        self.moves.close()

    def on_receive(self, message: Any) -> Any:
        supervisor = self.moves.actor_ref
        if isinstance(message, Move):
            supervisor.tell(Enqueue(message))  # never blocks; accepted even past the bound
        elif message == "stats":
            return supervisor.ask(GetStats())  # the supervisor never needs us: safe
        elif isinstance(message, Level):
            return STOCK.get(message.sku, 0)
        elif isinstance(message, Audit):
            outcome = supervisor.ask(Submit(message))  # a pykka.Future of the outcome
            if message.sku == "blocking":  # WRONG: wait here for a body that asks us
                try:
                    return outcome.get(timeout=0.3)
                except pykka.Timeout:
                    return "timed out: the body was waiting for this same actor"
            return outcome  # RIGHT: hand the future out; the caller waits outside
        return None


def main() -> None:
    warehouse = Warehouse.start()
    for n in range(60):
        warehouse.tell(Move(f"sku-{n % 3}", delta=5 if n % 2 else -2))
    stats = warehouse.ask("stats", block=True)  # mailbox order: every Enqueue was handled first
    print(f"accepted through tell(Enqueue): {stats.total_enqueued}")
    print("blocking audit:", warehouse.ask(Audit("blocking", warehouse)))
    warehouse.ask(Audit("sku-1", warehouse)).get(timeout=5)  # get() outside any actor
    print(f"audit of sku-1 after its moves, via the returned future: {AUDITED['sku-1']}")
    warehouse.stop()  # on_stop completes, drains and closes the coordinator
    print("stock:", dict(sorted(STOCK.items())))
    expected = {f"sku-{k}": sum(5 if n % 2 else -2 for n in range(k, 60, 3)) for k in range(3)}
    print("per-SKU totals check:", "ok" if expected == STOCK else "FAILED")


if __name__ == "__main__":
    main()
