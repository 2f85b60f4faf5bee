"""`offer(item) -> Admission`: every reason, their precedence, and bodies (SPEC 15)."""

from __future__ import annotations

import threading

import pytest

from ephemeral_actors import Admission, KeyedWorkCoordinator, WorkCoordinator
from tests.conftest import WAIT


def test_accepted_then_full_for_a_full_backlog(make):
    """A free backlog answers ACCEPTED; once full, FULL (never blocking)."""
    gate = threading.Event()
    work = make(lambda _: gate.wait(WAIT), max_concurrency=1, max_tracked_operations=2)
    answers = [work.offer(i) for i in range(4)]
    gate.set()
    # One runs, two wait (the bound), the fourth finds the backlog full.
    assert answers == [Admission.ACCEPTED] * 3 + [Admission.FULL]
    assert work.total_enqueued == 3


def test_closed_after_complete_and_after_close(make):
    """After complete() (or close()) the answer is CLOSED, not FULL."""
    gate = threading.Event()
    work = make(lambda _: gate.wait(WAIT), max_concurrency=1, max_tracked_operations=1)
    work.offer(1)
    work.offer(2)
    assert work.offer(3) is Admission.FULL
    work.complete()
    # Full *and* closed: CLOSED wins.
    assert work.offer(3) is Admission.CLOSED
    gate.set()
    work.close(WAIT)
    assert work.offer(4) is Admission.CLOSED


def test_unfair_beats_full(make):
    """A key over the fairness threshold answers UNFAIR even when the backlog is full too."""
    gate = threading.Event()
    keyed = make(
        lambda _: gate.wait(WAIT),
        key=lambda item: item[0],
        max_concurrency=1,
        max_tracked_operations=3,
        enable_fair_scheduling=True,
        fair_scheduling_threshold=2,
    )
    assert [keyed.offer(x) for x in ("a1", "a2", "a3", "b1")] == [Admission.ACCEPTED] * 4
    # Backlog full (3 pending) and key "a" at its threshold (2 pending).
    assert keyed.offer("a4") is Admission.UNFAIR
    assert keyed.offer("c1") is Admission.FULL
    gate.set()


def test_key_error_and_its_precedence(make):
    """A raising or unhashable selector answers KEY_ERROR, but CLOSED once closed."""

    def selector(item: object) -> object:
        if item == "boom":
            raise ValueError(item)
        return [] if item == "list" else item

    keyed = make(lambda _: None, key=selector)
    assert keyed.offer("boom") is Admission.KEY_ERROR
    assert keyed.offer("list") is Admission.KEY_ERROR
    assert keyed.try_enqueue("list") is False  # try_enqueue stays a bool
    keyed.complete()
    assert keyed.offer("boom") is Admission.CLOSED


def test_offer_from_a_body_is_never_full():
    """A body offering into its own full backlog is accepted (work that makes work)."""
    answers: list[Admission] = []
    done = threading.Event()

    def body(n: int) -> None:
        if n == 0:
            answers.extend(work.offer(i) for i in range(1, 6))
            done.set()

    gate = threading.Event()
    with WorkCoordinator(
        lambda n: body(n) if n == 0 else gate.wait(WAIT),
        max_concurrency=1,
        max_tracked_operations=1,
    ) as work:
        work.enqueue(0)
        assert done.wait(WAIT)
        gate.set()
    assert answers == [Admission.ACCEPTED] * 5
    assert work.total_completed == 6


@pytest.mark.parametrize("kind", ["work", "keyed"])
def test_accepted_items_run(kind):
    """An ACCEPTED item is a normal operation: it runs and counts."""
    ran: list[int] = []
    coordinator = (
        WorkCoordinator(ran.append)
        if kind == "work"
        else KeyedWorkCoordinator(lambda i: i % 2, ran.append)
    )
    with coordinator:
        assert all(coordinator.offer(i) for i in range(10))
    assert sorted(ran) == list(range(10))
