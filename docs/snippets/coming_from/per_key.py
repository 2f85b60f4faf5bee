"""Job 3: per-key ordered work: each account's events apply in order, accounts in parallel.

Each function is one peer's way; each returns the events applied per account, in the
order they were applied. The docs page "Coming from concurrent.futures /
asyncio.TaskGroup / aiometer" shows them side by side (tests/test_coming_from.py
runs this file).
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    account: str
    seq: int


class Ledger:
    """Records the order in which each account's events were applied."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.applied: dict[str, list[int]] = collections.defaultdict(list)

    def apply(self, event: Event) -> None:
        time.sleep(0.001 * (event.seq % 3))  # uneven work: a later event could overtake
        with self.lock:
            self.applied[event.account].append(event.seq)

    async def aapply(self, event: Event) -> None:
        await asyncio.sleep(0.001 * (event.seq % 3))
        self.applied[event.account].append(event.seq)


# --8<-- [start:futures]
def with_thread_pool(events: list[Event], ledger: Ledger) -> None:
    from concurrent.futures import ThreadPoolExecutor

    # One single-thread lane per hash bucket keeps each account in order, but
    # accounts sharing a lane wait for each other (head-of-line blocking).
    lanes = [ThreadPoolExecutor(max_workers=1) for _ in range(4)]
    for event in events:
        lanes[hash(event.account) % len(lanes)].submit(ledger.apply, event)
    for lane in lanes:
        lane.shutdown(wait=True)


# --8<-- [end:futures]


# --8<-- [start:taskgroup]
async def with_task_group(events: list[Event], ledger: Ledger) -> None:
    limit = asyncio.Semaphore(4)  # the global bound; one task per account keeps order
    queues: dict[str, asyncio.Queue[Event | None]] = {}

    async def run_account(queue: asyncio.Queue[Event | None]) -> None:
        while (event := await queue.get()) is not None:
            async with limit:
                await ledger.aapply(event)

    async with asyncio.TaskGroup() as group:
        for event in events:
            if event.account not in queues:
                queues[event.account] = asyncio.Queue()
                group.create_task(run_account(queues[event.account]))
            queues[event.account].put_nowait(event)
        for queue in queues.values():
            queue.put_nowait(None)  # no more events: let the account's task end


# --8<-- [end:taskgroup]


# --8<-- [start:aiometer]
async def with_aiometer(events: list[Event], ledger: Ledger) -> None:
    import aiometer

    # No notion of keys: group a batch known up front, run each group in order.
    by_account: dict[str, list[Event]] = collections.defaultdict(list)
    for event in events:
        by_account[event.account].append(event)

    async def run_account(account_events: list[Event]) -> None:
        for event in account_events:
            await ledger.aapply(event)

    await aiometer.run_on_each(run_account, list(by_account.values()), max_at_once=4)


# --8<-- [end:aiometer]


# --8<-- [start:ephemeral]
def with_ephemeral_actors(events: list[Event], ledger: Ledger) -> None:
    from ephemeral_actors import KeyedWorkCoordinator

    with KeyedWorkCoordinator(
        ledger.apply, key=lambda event: event.account, max_concurrency=4
    ) as accounts:
        for event in events:  # a busy account never holds up the others
            accounts.enqueue(event)


# --8<-- [end:ephemeral]


def check(ledger: Ledger, events: list[Event]) -> None:
    expected: dict[str, list[int]] = collections.defaultdict(list)
    for event in events:
        expected[event.account].append(event.seq)
    assert dict(ledger.applied) == dict(expected), ledger.applied


def main() -> None:
    events = [Event(f"account-{n % 5}", n) for n in range(60)]
    for run in (with_thread_pool, with_ephemeral_actors):
        ledger = Ledger()
        run(events, ledger)
        check(ledger, events)
    ledger = Ledger()
    asyncio.run(with_task_group(events, ledger))
    check(ledger, events)
    print("per-key order: all agree")


if __name__ == "__main__":
    main()
