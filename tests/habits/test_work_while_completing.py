"""Work that makes work while its coordinator completes (SPEC 15, issue-free change).

`complete()` closes intake to everyone but the coordinator's own running bodies: what
they make is part of the work already accepted, so `complete()` + `drain()` (the end
of a `with` block) waits for it instead of failing the body that makes it. Outsiders
are still refused, and `cancel()`/`close()` refuse the bodies too.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ephemeral_actors import (
    Admission,
    CoordinatorClosedError,
    KeyedWorkCoordinator,
    ResultCoordinator,
    WorkCoordinator,
)
from tests.conftest import WAIT


def test_a_with_block_waits_for_the_tree_its_bodies_make():
    """The crawler shape: one seed, bodies enqueue the rest; the block's end waits."""
    seen: list[int] = []

    def visit(node: int) -> None:
        seen.append(node)
        if node < 100:
            tree.enqueue(2 * node + 1)
            tree.enqueue(2 * node + 2)

    with WorkCoordinator(visit, max_concurrency=4, max_tracked_operations=5) as tree:
        tree.enqueue(0)
    assert sorted(seen) == list(range(201))
    stats = tree.stats()
    assert (stats.total_enqueued, stats.total_completed, stats.total_failed) == (201, 201, 0)


def test_bodies_submit_offer_and_enqueue_many_while_completing():
    """Every intake call of a body is accepted once `complete()` has been called."""
    completing, made = threading.Event(), threading.Event()
    answers: dict[str, object] = {}

    def body(item: object) -> object:
        if item == "seed":
            assert completing.wait(WAIT)
            answers["submit"] = work.submit("child").result(timeout=WAIT)
            answers["offer"] = work.offer("offered")
            answers["try_enqueue"] = work.try_enqueue("tried")
            answers["enqueue_many"] = work.enqueue_many(["a", "b"])
            answers["enqueue_many []"] = work.enqueue_many([])
            made.set()
        return item

    work = ResultCoordinator(body, max_concurrency=2)
    work.enqueue("seed")
    work.complete()
    assert work.is_completed
    completing.set()
    work.drain(WAIT)
    assert made.is_set()
    assert answers == {
        "submit": "child",
        "offer": Admission.ACCEPTED,
        "try_enqueue": True,
        "enqueue_many": 2,
        "enqueue_many []": 0,
    }
    stats = work.stats()
    assert (stats.total_enqueued, stats.total_completed) == (6, 6)
    work.close(WAIT)


def test_outsiders_are_still_refused_while_bodies_run(make):
    """Only the coordinator's own bodies get past a closed intake."""
    release = threading.Event()

    def body(_: object) -> None:
        assert release.wait(WAIT)

    work = make(body)
    work.enqueue(1)
    work.complete()
    try:
        with pytest.raises(CoordinatorClosedError, match="completing"):
            work.enqueue(2)
        assert work.offer(3) is Admission.CLOSED
        with pytest.raises(CoordinatorClosedError):
            work.enqueue_many([4, 5])
    finally:
        release.set()
    work.drain(WAIT)
    assert work.total_enqueued == 1


def test_a_cancelled_coordinator_refuses_its_bodies(make):
    """`cancel()` (and so `close()`) stops the making of work too."""
    cancelled, refused = threading.Event(), threading.Event()

    def body(item: int) -> None:
        if item == 0:
            assert cancelled.wait(WAIT)
            with pytest.raises(CoordinatorClosedError, match="cancelled"):
                work.enqueue(1)
            with pytest.raises(CoordinatorClosedError, match="cancelled"):
                work.enqueue_many([2, 3])
            with pytest.raises(CoordinatorClosedError, match="cancelled"):
                work.enqueue_many([])
            assert work.offer(4) is Admission.CLOSED
            refused.set()

    work = make(body)
    work.enqueue(0)
    work.cancel()
    cancelled.set()
    assert refused.wait(WAIT)
    work.close(WAIT)
    assert work.total_enqueued == 1


def test_keyed_bodies_enqueue_while_completing():
    """A keyed coordinator's bodies too: each key's follow-up runs, in order."""
    order: list[tuple[str, int]] = []

    def apply(event: tuple[str, int]) -> None:
        order.append(event)
        account, step = event
        if step < 3:
            ledger.enqueue((account, step + 1))

    with KeyedWorkCoordinator(lambda event: event[0], apply, max_concurrency=2) as ledger:
        ledger.enqueue(("alice", 0))
        ledger.enqueue(("bob", 0))
    for account in ("alice", "bob"):
        assert [step for key, step in order if key == account] == [0, 1, 2, 3]


def test_async_bodies_enqueue_async_while_an_async_block_ends():
    """`async with`: its end completes and drains, and the bodies' items are waited for."""
    seen: list[int] = []

    async def main() -> None:
        async def visit(node: int) -> int:
            seen.append(node)
            await asyncio.sleep(0)
            if node == 0:
                assert await tree.submit_async(-1) == -1  # a leaf, in another slot
            if 0 <= node < 30:
                await tree.enqueue_async(2 * node + 1)
                await tree.enqueue_async(2 * node + 2)
            return node

        async with ResultCoordinator(visit, max_concurrency=3) as tree:
            await tree.enqueue_async(0)

    asyncio.run(asyncio.wait_for(main(), WAIT))
    assert sorted(seen) == list(range(-1, 61))


INTAKE_CALLS = ("enqueue", "submit", "try_enqueue", "offer", "enqueue_many")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fan_out=st.lists(st.integers(0, 3), min_size=1, max_size=12),
    calls=st.lists(st.sampled_from(INTAKE_CALLS), min_size=1, max_size=5),
    concurrency=st.integers(1, 4),
    bound=st.integers(1, 6),
    keyed=st.booleans(),
    ending=st.sampled_from(["complete", "cancel"]),
    end_after=st.integers(0, 6),
)
def test_work_made_while_ending_is_never_lost(
    fan_out, calls, concurrency, bound, keyed, ending, end_after
):
    """A tree of work, made by its bodies with every intake call, ended by `complete()`
    or `cancel()` at a random moment: each item a body made was accepted or refused
    (never lost), every accepted one ended exactly once, the counters say so, and
    after `complete()` nothing was refused and the whole tree ran."""
    lock = threading.Lock()
    ran: list[int] = []
    refused: list[int] = []
    started = threading.Event()
    gate = threading.Event()

    def children_of(node: int) -> list[int]:
        # Only the tree's nodes make work (the outsiders' items are negative).
        width = fan_out[node % len(fan_out)] if 0 <= node < 60 else 0
        return [node * 4 + 1 + i for i in range(width)]

    def make_children(node: int) -> None:
        children = children_of(node)
        how = calls[node % len(calls)]
        for child in children if how != "enqueue_many" else [children]:
            try:
                if how == "enqueue":
                    work.enqueue(child)
                    accepted = True
                elif how == "submit":
                    work.submit(child)
                    accepted = True
                elif how == "try_enqueue":
                    accepted = work.try_enqueue(child)
                elif how == "offer":
                    accepted = bool(work.offer(child))
                else:
                    assert work.enqueue_many(child) == len(child)  # or raises
                    accepted = True
            except CoordinatorClosedError:
                accepted = False
            if not accepted:
                with lock:
                    refused.extend(child if isinstance(child, list) else [child])

    def visit(node: int) -> None:
        with lock:
            ran.append(node)
        if node == 0:
            started.set()
            assert gate.wait(WAIT)  # the ending comes while the root runs
        make_children(node)

    options = {"max_concurrency": concurrency, "max_tracked_operations": bound}
    if keyed:
        work = KeyedWorkCoordinator(lambda node: node % 3, visit, **options)
    else:
        work = WorkCoordinator(visit, **options)
    try:
        work.enqueue(0)
        assert started.wait(WAIT)
        # Outsiders' items before the ending (refused once the backlog is full: the
        # root, which would free it, waits for the ending).
        outsiders = sum(work.try_enqueue(item) for item in range(-end_after, 0))
        (work.complete if ending == "complete" else work.cancel)()
        gate.set()
        work.drain(WAIT)
        stats = work.stats()
    finally:
        gate.set()
        work.close(WAIT)
    assert len(ran) == len(set(ran)), "an item ran twice"
    ended = stats.total_completed + stats.total_failed + stats.total_cancelled
    assert stats.total_enqueued == ended
    assert stats.total_failed == 0
    assert stats.total_completed == len(ran)
    made = {node for node in ran if node >= 0}
    if ending == "complete":
        assert refused == []
        assert stats.total_cancelled == 0
        expected = {0}
        frontier = [0]
        while frontier:  # the whole tree, as the bodies would make it
            children = children_of(frontier.pop())
            expected.update(children)
            frontier.extend(children)
        assert made == expected
    else:
        # cancel(): the root's children are refused (intake is closed to the bodies
        # too), so the tree stops at its root; the outsiders' items ran (in a free
        # slot) or were cancelled.
        assert made == {0}
        assert sorted(refused) == children_of(0)
        assert stats.total_enqueued == 1 + outsiders
