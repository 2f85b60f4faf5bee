"""Order events per customer: in order within a customer, parallel across customers.

Each customer's events (created, paid, shipped, ...) must apply in order, so the key is
the customer and `max_concurrency_per_key=1`. Fair scheduling makes `try_enqueue`
refuse a customer that already has 5 events waiting; the producer spills that
customer's events to an overflow list (keeping their order) and hands them in later
with `enqueue`, which never rejects for fairness. A busy customer never holds up the
others: there is no head-of-line blocking.

Run: python examples/keyed_orders.py
"""

from __future__ import annotations

import threading
import time
from typing import NamedTuple

from ephemeral_actors import CoordinatorOptions, KeyedWorkCoordinator


class OrderEvent(NamedTuple):
    customer: str
    seq: int
    kind: str


STEPS = ("created", "paid", "packed", "shipped", "delivered")
QUIET_EVENTS = 25
applied: dict[str, list[int]] = {}
flood_progress: list[int] = []  # cust-flood events applied when the quiet ones were done
lock = threading.Lock()


def apply_event(event: OrderEvent) -> None:
    time.sleep(0.005)  # stands in for a database write
    with lock:
        applied.setdefault(event.customer, []).append(event.seq)
        quiet = sum(len(seqs) for customer, seqs in applied.items() if customer != "cust-flood")
        if event.customer != "cust-flood" and quiet == QUIET_EVENTS:
            flood_progress.append(len(applied.get("cust-flood", [])))


def event_stream() -> list[OrderEvent]:
    """Five quiet customers, interleaved, and one that floods us mid-way."""
    stream = [
        OrderEvent(f"cust-{c}", seq, STEPS[seq % len(STEPS)]) for seq in range(5) for c in "abcde"
    ]
    flood = [OrderEvent("cust-flood", seq, "address-changed") for seq in range(30)]
    return stream[:10] + flood + stream[10:]


def main() -> None:
    options = CoordinatorOptions(
        name="orders",
        max_concurrency=4,
        max_concurrency_per_key=1,
        enable_fair_scheduling=True,
        fair_scheduling_threshold=5,
    )
    overflow: list[OrderEvent] = []
    spilled: set[str] = set()
    with KeyedWorkCoordinator(lambda e: e.customer, apply_event, options) as orders:
        for event in event_stream():
            # Once a customer spilled, its later events spill too: order is per key.
            if event.customer in spilled or not orders.try_enqueue(event):
                spilled.add(event.customer)
                overflow.append(event)
        print(f"fair scheduling: {len(overflow)} events of {sorted(spilled)} spilled to overflow")
        print(
            f"keys with a child actor: {orders.active_keys}, "
            f"cust-flood pending: {orders.get_pending_count_for_key('cust-flood')}"
        )
        for event in overflow:
            orders.enqueue(event)  # waits only for backlog space, never for fairness
    stats = orders.stats()
    print(f"{stats.total_completed} events applied, {stats.total_failed} failed")
    print(
        f"quiet customers were done when cust-flood had applied {flood_progress[0]} of 30 "
        "(no head-of-line blocking)"
    )
    print(f"cust-a operations in the window: {len(orders.get_snapshot_for_key('cust-a'))}")
    in_order = {customer: seqs == sorted(seqs) for customer, seqs in sorted(applied.items())}
    for customer, ok in in_order.items():
        verdict = "in order" if ok else "OUT OF ORDER"
        print(f"  {customer:<11} {len(applied[customer]):2d} events  {verdict}")
    print("per-key order check:", "ok" if all(in_order.values()) else "FAILED")


if __name__ == "__main__":
    main()
