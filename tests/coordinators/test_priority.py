"""Priorities (SPEC 16): lower numbers start first, equal ones FIFO, per-key order kept."""

from __future__ import annotations

import asyncio
import enum
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ephemeral_actors import KeyedWorkCoordinator, ResultCoordinator, WorkCoordinator
from ephemeral_actors.messages import Enqueue, Submit
from tests.conftest import WAIT

PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
priorities = st.integers(-3, 3)


class Level(enum.IntEnum):
    """Priorities as an IntEnum, as users like to write them."""

    URGENT = -1
    NORMAL = 0


def drain(c: Any) -> None:
    c.complete()
    c.drain(WAIT)


@PROPERTY
@given(ranks=st.lists(priorities, max_size=25))
def test_items_start_by_priority_then_fifo(ranks: list[int]) -> None:
    """Held back by pause, items start in (priority, enqueue order)."""
    started: list[int] = []
    c = WorkCoordinator(started.append, max_concurrency=1)
    try:
        c.pause()
        for index, rank in enumerate(ranks):
            c.enqueue(index, priority=rank)
        c.resume()
        drain(c)
    finally:
        c.close(WAIT)
    assert started == sorted(range(len(ranks)), key=lambda i: (ranks[i], i))


@PROPERTY
@given(items=st.lists(st.tuples(st.integers(0, 3), priorities), max_size=25))
def test_keyed_priorities_never_break_per_key_order(items: list[tuple[int, int]]) -> None:
    """Per key, enqueue order; across keys, the started item has the lowest head priority."""
    started: list[int] = []
    c = KeyedWorkCoordinator(lambda i: items[i][0], started.append, max_concurrency=1)
    try:
        c.pause()
        for index, (_, rank) in enumerate(items):
            c.enqueue(index, priority=rank)
        c.resume()
        drain(c)
    finally:
        c.close(WAIT)
    assert sorted(started) == list(range(len(items)))
    queues: dict[int, list[int]] = {}
    for index, (key, _) in enumerate(items):
        queues.setdefault(key, []).append(index)
    for index in started:
        key, rank = items[index]
        # It is the head of its key, and no other key's head has a lower priority.
        assert queues[key][0] == index, f"item {index} overtook its key's order"
        heads = [q[0] for q in queues.values() if q]
        assert rank == min(items[h][1] for h in heads), (index, heads)
        queues[key].pop(0)


@PROPERTY
@given(
    ranks=st.lists(priorities, min_size=1, max_size=20),
    data=st.data(),
)
def test_cancelled_prioritised_items_never_start(ranks: list[int], data: st.DataObject) -> None:
    """cancel_operation or future.cancel() of a pending prioritised item: it never starts."""
    started: list[int] = []
    c = WorkCoordinator(started.append, max_concurrency=1)
    try:
        c.pause()
        handles: list[Any] = []
        for index, rank in enumerate(ranks):
            if index % 2:
                handles.append(c.submit(index, priority=rank))
            else:
                handles.append(c.enqueue(index, priority=rank))
        doomed = data.draw(st.sets(st.sampled_from(range(len(ranks)))), label="cancelled")
        for index in doomed:
            handle = handles[index]
            if isinstance(handle, int):
                assert c.cancel_operation(handle)
            else:
                assert handle.cancel()
        s = c.stats()
        assert s.pending_count == len(ranks) - len(doomed)
        assert s.total_cancelled == len(doomed)
        c.resume()
        drain(c)
        s = c.stats()
    finally:
        c.close(WAIT)
    kept = [i for i in range(len(ranks)) if i not in doomed]
    assert started == sorted(kept, key=lambda i: (ranks[i], i))
    assert s.total_enqueued == s.total_completed + s.total_cancelled
    assert s.total_completed == len(kept)


def test_plain_priority_keeps_the_deque_and_a_priority_switches_to_a_heap() -> None:
    """Default priorities never build the heap; it goes away again once emptied."""
    c = WorkCoordinator(lambda _: None, max_concurrency=1)
    try:
        backlog = c._core.backlog
        c.pause()
        c.enqueue(1)
        c.enqueue(2, priority=0)
        assert backlog.ranked is None
        assert c._core.schedule is None
        c.enqueue(3, priority=-1)
        assert backlog.ranked is not None
        assert not backlog.items
        c.resume()
        drain(c)
        assert backlog.ranked is None
    finally:
        c.close(WAIT)


def test_int_enum_priorities_are_accepted() -> None:
    """An IntEnum member is an int priority."""
    started: list[str] = []
    c = WorkCoordinator(started.append, max_concurrency=1)
    try:
        c.pause()
        c.enqueue("normal", priority=Level.NORMAL)
        c.enqueue("urgent", priority=Level.URGENT)
        c.resume()
        drain(c)
    finally:
        c.close(WAIT)
    assert started == ["urgent", "normal"]


@pytest.mark.parametrize("bad", [True, False, 1.0, "1", None])
def test_priority_must_be_an_int(make: Any, bad: object) -> None:
    """A non-int priority (a bool included) raises TypeError naming `priority`."""
    c = make(lambda _: None)
    for call in (
        lambda: c.enqueue(1, priority=bad),
        lambda: c.try_enqueue(1, priority=bad),
        lambda: c.submit(1, priority=bad),
        lambda: asyncio.run(c.enqueue_async(1, priority=bad)),
        lambda: asyncio.run(c.submit_async(1, priority=bad)),
        lambda: Enqueue(1, bad),
        lambda: Submit(1, priority=bad),
    ):
        with pytest.raises(TypeError, match="priority"):
            call()
    assert c.total_enqueued == 0


def test_every_intake_form_takes_a_priority() -> None:
    """try_enqueue, submit, the async forms and the actor messages all rank by priority."""
    started: list[str] = []
    c = ResultCoordinator(lambda x: started.append(x) or x, max_concurrency=1)
    try:
        c.pause()
        ref = c.actor_ref
        ref.ask(Enqueue("e5", 5), timeout=WAIT)  # positional, as the messages take fields
        assert c.try_enqueue("t4", priority=4)
        future = c.submit("s3", priority=3)
        asyncio.run(c.enqueue_async("a2", priority=2))
        answer = ref.ask(Submit("m1", priority=1), timeout=WAIT)
        ref.ask(Enqueue("plain"), timeout=WAIT)  # one field still works

        async def submit_first() -> Any:
            task = asyncio.ensure_future(c.submit_async("b0", priority=-1))
            async with asyncio.timeout(WAIT):
                while c.stats().total_enqueued < 7:  # noqa: ASYNC110 - another actor's counter
                    await asyncio.sleep(0.001)
            await asyncio.to_thread(c.resume)
            return await task

        assert asyncio.run(submit_first()) == "b0"
        assert future.result(WAIT) == "s3"
        assert answer.get(timeout=WAIT) == "m1"
        drain(c)
    finally:
        c.close(WAIT)
    assert started == ["b0", "plain", "m1", "a2", "s3", "t4", "e5"]


def test_keyed_ready_keys_compete_by_head_priority() -> None:
    """A busy key's urgent item waits for its key; another key's item does not wait for it."""
    release = threading.Event()

    def body(item: str) -> None:
        if item == "a-block":
            release.wait(WAIT)

    c = KeyedWorkCoordinator(lambda s: s[0], body, max_concurrency=2)
    try:
        names = {c.enqueue("a-block"): "a-block"}
        c.pause()
        names[c.enqueue("b-low", priority=5)] = "b-low"
        names[c.enqueue("a-urgent", priority=-5)] = "a-urgent"  # behind a-block: key order
        names[c.enqueue("c-mid", priority=0)] = "c-mid"
        c.resume()  # one global slot is free: c-mid (0) takes it before b-low (5)
        release.set()
        drain(c)
        # The window is in start (dispatch) order.
        order = [names[s.id] for s in c.get_snapshot()]
    finally:
        c.close(WAIT)
    assert order[:2] == ["a-block", "c-mid"]
    assert set(order[2:]) == {"a-urgent", "b-low"}
