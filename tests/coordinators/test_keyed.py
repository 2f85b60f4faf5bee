"""KeyedWorkCoordinator: per-key order, per-key limits, no head-of-line blocking (SPEC 5)."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pykka
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pykka._envelope import Envelope

from ephemeral_actors import (
    CoordinatorClosedError,
    CoordinatorOptions,
    KeyedWorkCoordinator,
    for_each,
)
from ephemeral_actors._coordinators._keyed import _NO_MAIL, GetKeyState
from ephemeral_actors.testing import library_threads, use_schedule_clock
from tests.conftest import WAIT


@pytest.fixture
def make() -> Iterator[Callable[..., KeyedWorkCoordinator[Any, Any]]]:
    made: list[KeyedWorkCoordinator[Any, Any]] = []

    def factory(
        key: Callable[[Any], Any], body: Callable[[Any], Any], **options: Any
    ) -> KeyedWorkCoordinator[Any, Any]:
        c = KeyedWorkCoordinator(key, body, CoordinatorOptions(**options))
        made.append(c)
        return c

    yield factory
    for c in made:
        c.close(timeout=WAIT)


def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll a condition the library offers no event for (key reaping)."""
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


@settings(max_examples=40, deadline=None)
@given(
    items=st.lists(st.tuples(st.integers(0, 6), st.integers()), max_size=120),
    per_key=st.integers(1, 1),
    limit=st.integers(1, 6),
    bulk=st.booleans(),
    bound=st.sampled_from([3, 200]),
)
def test_items_of_a_key_start_in_enqueue_order(items, per_key, limit, bulk, bound):
    """Whatever the interleaving of keys, each key's items start in enqueue order,
    one `enqueue` at a time or all in one `enqueue_many`, with room or waiting for it."""
    started: dict[int, list[int]] = {}
    lock = threading.Lock()

    def body(item: tuple[int, int, int]) -> None:
        key, seq, _ = item
        with lock:
            started.setdefault(key, []).append(seq)

    tagged = [(key, seq, value) for seq, (key, value) in enumerate(items)]
    options = CoordinatorOptions(
        max_concurrency=limit, max_concurrency_per_key=per_key, max_tracked_operations=bound
    )
    with KeyedWorkCoordinator(lambda i: i[0], body, options) as c:
        if bulk:
            assert c.enqueue_many(tagged) == len(tagged)
        else:
            for item in tagged:
                c.enqueue(item)
    for key, seqs in started.items():
        assert seqs == [seq for (k, seq, _) in tagged if k == key]
    assert c.total_completed == len(items)


def test_per_key_limit_is_reached_and_never_exceeded(make):
    """max_concurrency_per_key > 1 runs that many of a key at once, and no more."""
    lock = threading.Condition()
    running: dict[str, int] = {}
    peak: dict[str, int] = {}
    gate = threading.Event()

    def body(item: tuple[str, int]) -> None:
        key = item[0]
        with lock:
            running[key] = running.get(key, 0) + 1
            peak[key] = max(peak.get(key, 0), running[key])
            lock.notify_all()
        assert gate.wait(WAIT)
        with lock:
            running[key] -= 1

    c = make(lambda i: i[0], body, max_concurrency=8, max_concurrency_per_key=3)
    for i in range(10):
        c.enqueue(("a", i))
        c.enqueue(("b", i))
    with lock:
        assert lock.wait_for(lambda: running.get("a") == 3 and running.get("b") == 3, WAIT)
    assert c.active_count == 6
    assert c.get_pending_count_for_key("a") == 7
    gate.set()
    c.complete()
    c.drain(WAIT)
    assert peak == {"a": 3, "b": 3}


def test_a_slow_key_does_not_delay_other_keys(make):
    """A key blocked in its body never holds up other keys (no head-of-line blocking)."""
    gate = threading.Event()
    others_done = threading.Event()
    done: list[str] = []

    def body(item: tuple[str, int]) -> None:
        key, n = item
        if key == "slow":
            assert gate.wait(WAIT)
        done.append(key)
        if done.count("fast") == 50:
            others_done.set()

    c = make(lambda i: i[0], body, max_concurrency=2)
    for n in range(5):
        c.enqueue(("slow", n))
    for n in range(50):
        c.enqueue(("fast", n))
    assert others_done.wait(WAIT), "fast key waited behind the slow key"
    assert c.get_pending_count_for_key("slow") == 4
    gate.set()
    c.complete()
    c.drain(WAIT)


def test_fair_scheduling_rejects_a_crowded_key_only_in_try_enqueue(make):
    """With fair scheduling, try_enqueue refuses a key at the threshold; enqueue never does."""
    gate = threading.Event()
    c = make(
        lambda i: i[0],
        lambda _: gate.wait(WAIT),
        max_concurrency=1,
        enable_fair_scheduling=True,
        fair_scheduling_threshold=3,
    )
    c.enqueue(("busy", 0))
    accepted = [c.try_enqueue(("crowded", n)) for n in range(5)]
    assert accepted == [True, True, True, False, False]
    assert c.try_enqueue(("other", 0)) is True
    c.enqueue(("crowded", 99))
    assert c.get_pending_count_for_key("crowded") == 4
    gate.set()
    c.complete()
    c.drain(WAIT)
    assert c.total_completed == 6


def test_unknown_keys_answer_empty(make):
    """Per-key queries for a key never seen answer 0 and empty."""
    c = make(lambda i: i, lambda _: None)
    assert c.get_pending_count_for_key("nobody") == 0
    assert c.get_snapshot_for_key("nobody") == ()


def test_key_selector_failure_rejects_the_item(make):
    """A raising key selector: enqueue raises it, try_enqueue returns False, nothing counted."""

    def key(item: Any) -> Any:
        if item == "bad":
            raise LookupError("no key")
        return item

    c = make(key, lambda _: None)
    with pytest.raises(LookupError):
        c.enqueue("bad")
    assert c.try_enqueue("bad") is False
    assert c.total_enqueued == 0


def test_snapshot_key_is_str_of_key(make):
    """OperationSnapshot.key is str(key), and per-key snapshots filter by it."""
    c = make(lambda i: i[0], lambda _: None)
    c.enqueue((7, "x"))
    c.enqueue((8, "y"))
    c.complete()
    c.drain(WAIT)
    (snap,) = c.get_snapshot_for_key(7)
    assert snap.key == "7"


def test_errors_are_isolated_per_key(make):
    """A failing item fails alone; the key's later items and other keys carry on."""
    seen: list[tuple[str, int]] = []

    def body(item: tuple[str, int]) -> None:
        if item == ("a", 1):
            raise ValueError("bad item")
        seen.append(item)

    c = make(lambda i: i[0], body)
    for n in range(3):
        c.enqueue(("a", n))
        c.enqueue(("b", n))
    c.complete()
    c.drain(WAIT)
    assert [i for i in seen if i[0] == "a"] == [("a", 0), ("a", 2)]
    assert (c.total_completed, c.total_failed) == (5, 1)


def test_idle_keys_are_reaped_and_a_returning_key_works(make):
    """Keys idle past key_idle_timeout lose their child actor; a returning key gets a new one."""
    c = make(lambda i: i, lambda _: None, key_idle_timeout=0.05)
    for k in range(20):
        c.submit(k).get(timeout=WAIT)
    wait_until(lambda: c.active_keys == 0)
    assert c.submit(3).get(timeout=WAIT) is None
    assert c.total_completed == 21


def test_passivation_times_idle_keys_with_the_injected_clock(make):
    """Idle time is measured on the coordinator's monotonic clock (`use_schedule_clock`),
    so a test moves it instead of sleeping or patching `time.monotonic`. The reap is
    asked for as the passivation timer asks for it: a message to the supervisor."""
    now = [500.0]
    with use_schedule_clock(lambda: now[0]):
        c = make(lambda i: i, lambda _: None, key_idle_timeout=60.0)
    for k in range(5):
        c.submit(k).get(timeout=WAIT)
    c.wait_idle(WAIT)
    core = c._core
    now[0] += 59.0
    assert core.call(core.backlog.on_reap, None) == 0
    assert c.active_keys == 5
    now[0] += 2.0
    assert core.call(core.backlog.on_reap, None) == 5
    assert c.active_keys == 0
    assert c.submit(3).get(timeout=WAIT) is None  # a returning key gets a new child


def test_an_idle_key_holds_no_mailbox_of_its_own_until_its_next_item(make):
    """A key's child gives its deque back when the key goes idle (a deque holds over
    half a kilobyte, and idle keys live on for key_idle_timeout), and takes a new one
    with the key's next item: whichever way the key went idle, its later items run,
    in order."""
    seen: list[tuple[str, int]] = []
    gate = threading.Event()

    def body(item: tuple[str, int]) -> None:
        if item == ("gate", 0):
            assert gate.wait(WAIT)
        seen.append(item)

    c = make(lambda item: item[0], body, max_concurrency=1)
    children = c._core.backlog.children
    # Idle after its item ran.
    c.submit(("ran", 0)).get(timeout=WAIT)
    assert children["ran"].mailbox is _NO_MAIL
    # Idle after its only item, waiting for the one slot, was cancelled by id.
    c.enqueue(("gate", 0))
    doomed = c.enqueue(("lone", 0))
    assert c.cancel_operation(doomed) is True
    assert children["lone"].mailbox is _NO_MAIL
    gate.set()
    c.wait_idle(WAIT)
    for n in (1, 2, 3):
        c.enqueue(("ran", n))
    c.submit(("lone", 1)).get(timeout=WAIT)
    c.wait_idle(WAIT)
    assert [n for key, n in seen if key == "ran"] == [0, 1, 2, 3]
    assert [n for key, n in seen if key == "lone"] == [1]
    assert all(child.mailbox is _NO_MAIL for child in children.values())
    assert (c.total_completed, c.total_cancelled) == (6, 1)


def test_the_idle_mailbox_refuses_mail():
    """The mailbox idle children share stays empty: writing to it is a bug, and raises."""
    for write in (_NO_MAIL.append, _NO_MAIL.appendleft):
        with pytest.raises(RuntimeError, match="idle key"):
            write(1)
    with pytest.raises(RuntimeError, match="idle key"):
        _NO_MAIL.extend([1])
    assert len(_NO_MAIL) == 0
    assert not _NO_MAIL


def test_an_idle_key_whose_child_is_stopped_from_outside_works_on(make):
    """A stopped idle child's heir takes over its (given back) mailbox; the key's next
    item still runs."""
    c = make(lambda i: i, lambda _: None)
    c.submit("k").get(timeout=WAIT)
    c.wait_idle(WAIT)
    child = c._core.backlog.children["k"]
    assert child.actor_ref.stop(timeout=WAIT) is True
    heir = c._core.backlog.children["k"]
    assert heir is not child
    assert heir.mailbox is _NO_MAIL
    assert c.submit("k").get(timeout=WAIT) is None
    assert c.total_completed == 2


def test_close_stops_every_child_addressed_or_not(make):
    """close() stops every key's child, whether or not anything ever addressed it.

    Children make their stop flag and ActorRef only when asked; close sets the flags
    that exist and every other child reads as stopped from then on (an ask to a
    child whose ref was made gets ActorDeadError).
    """
    c = make(lambda i: i, lambda _: None)
    for k in range(3):
        c.submit(k).get(timeout=WAIT)
    children = dict(c._core.backlog.children)
    assert set(children) >= {0, 1, 2}
    addressed = children[0].actor_ref  # makes its flag and ref
    assert "_stopped" not in children[1].__dict__  # no flag made
    c.close(WAIT)
    assert all(child.actor_stopped.is_set() for child in children.values())
    assert children[1].actor_stopped.wait(0)
    with pytest.raises(pykka.ActorDeadError):
        addressed.ask(GetKeyState(), timeout=WAIT)


def test_a_key_actor_outliving_its_coordinator_refuses_mail():
    """A closed coordinator's backlog holds the core weakly, so a child's ref can outlive
    both: what reaches the child's inbox then is refused as Pykka refuses a stopped
    actor's mail, not with the ReferenceError of the dead link."""
    c = KeyedWorkCoordinator(lambda i: i, lambda _: None)  # no fixture: it must be freed
    c.submit("k").get(timeout=WAIT)
    child = c._core.backlog.children["k"]
    inbox = child.actor_ref.actor_inbox  # reached directly: a tell checks liveness first
    core = weakref.ref(c._core)
    c.close(WAIT)
    del c
    gc.collect()  # records of items that ran still refer to their core
    assert core() is None
    with pytest.raises(pykka.ActorDeadError):
        inbox.put(Envelope(GetKeyState()))


def test_threads_do_not_grow_with_keys(make):
    """Thousands of keys run on max_concurrency workers plus the shared dispatcher."""
    c = make(lambda i: i, lambda _: None, max_concurrency=4, max_tracked_operations=50)
    for k in range(5000):
        c.enqueue(k)
    c.complete()
    c.drain(WAIT)
    assert c.active_keys == 5000
    assert len(library_threads()) <= 4 + 10


def test_cancel_drops_every_key_backlog(make):
    """cancel() drops the pending items of all keys and counts them."""
    gate, started = threading.Event(), threading.Event()

    def body(_: Any) -> None:
        started.set()
        assert gate.wait(WAIT)

    c = make(lambda i: i[0], body, max_concurrency=1)
    for n in range(4):
        c.enqueue(("a", n))
        c.enqueue(("b", n))
    assert started.wait(WAIT)
    c.cancel()
    gate.set()
    c.drain(WAIT)
    assert c.total_cancelled == 7
    assert c.get_pending_count_for_key("a") == 0


def test_counters_add_up_across_keys(make):
    """The counter invariant holds over many keys with failures."""

    def body(i: int) -> None:
        if i % 5 == 0:
            raise ValueError

    c = make(lambda i: i % 13, body, max_concurrency=4)
    for i in range(1000):
        c.enqueue(i)
    c.complete()
    c.drain(WAIT)
    s = c.stats()
    assert s.total_enqueued == s.total_completed + s.total_failed == 1000
    assert s.total_failed == 200


def test_keyed_for_each_keeps_key_order():
    """for_each(key=...) processes every item with per-key order."""
    seen: list[tuple[int, int]] = []
    stats = for_each(
        [(i % 3, i) for i in range(90)],
        seen.append,
        CoordinatorOptions(max_concurrency=4),
        key=lambda x: x[0],
    )
    assert stats.total_completed == 90
    for k in range(3):
        assert [i for (kk, i) in seen if kk == k] == list(range(k, 90, 3))


def test_key_selector_must_be_callable():
    """A non-callable key selector is a TypeError naming the argument."""
    with pytest.raises(TypeError, match="key_selector"):
        KeyedWorkCoordinator("id", lambda _: None)  # type: ignore[arg-type]


# -- enqueue_many ------------------------------------------------------------------------


def test_enqueue_many_of_a_collection_is_one_message_with_keys_from_the_caller(make):
    """A keyed `enqueue_many` of a list is one message (SPEC 14); the selector runs in
    the caller's thread, never in the supervisor's turn (user code stays off it)."""
    selector_threads: set[threading.Thread] = set()

    def key(item: int) -> int:
        selector_threads.add(threading.current_thread())
        return item % 7

    c = make(key, lambda _: None, max_tracked_operations=1000)
    c.pause()
    before = c.actor_stats()[0].messages_processed
    assert c.enqueue_many(list(range(300))) == 300
    # A read is itself a message, counted by the next read: the first read, the draw.
    assert c.actor_stats()[0].messages_processed - before == 2
    assert c.pending_count == 300
    assert c.get_pending_count_for_key(3) == len(range(3, 300, 7))
    assert selector_threads == {threading.current_thread()}
    c.resume()
    c.complete()
    c.drain(WAIT)
    assert c.total_completed == 300
    assert {s.key for s in c.get_snapshot()} == {str(k) for k in range(7)}


@pytest.mark.parametrize("bad", [LookupError("no key"), "unhashable"])
def test_enqueue_many_accepts_the_items_before_a_key_that_fails_then_raises(make, bad):
    """A selector that raises (or returns an unhashable key) part-way: the items before
    it are accepted and run, the rest are not, and the error is raised, as a loop of
    `enqueue` would do."""
    ran: list[int] = []

    def key(item: int) -> Any:
        if item == 5:
            if isinstance(bad, Exception):
                raise bad
            return [item]
        return item % 2

    c = make(key, ran.append, max_concurrency=1)
    expected = LookupError if isinstance(bad, Exception) else TypeError
    with pytest.raises(expected):
        c.enqueue_many(list(range(10)))
    assert c.total_enqueued == 5
    c.complete()
    c.drain(WAIT)
    assert ran == [0, 1, 2, 3, 4]


def test_enqueue_many_waits_for_space_and_keeps_every_key_in_order(make):
    """Past the backlog bound the rest is drawn as space frees: per-key order kept, the
    bound never passed."""
    ran: list[tuple[int, int]] = []
    pending_seen: list[int] = []

    def body(item: tuple[int, int]) -> None:
        ran.append(item)
        pending_seen.append(c.pending_count)

    c = make(lambda i: i[0], body, max_concurrency=2, max_tracked_operations=4)
    items = [(n % 5, n) for n in range(200)]
    assert c.enqueue_many(items) == 200
    c.complete()
    c.drain(WAIT)
    assert sorted(ran) == sorted(items)
    for key in range(5):
        assert [n for k, n in ran if k == key] == [n for k, n in items if k == key]
    assert max(pending_seen) <= 4


def test_enqueue_many_after_close_raises_and_counts_nothing(make):
    c = make(lambda i: i, lambda _: None)
    c.cancel()
    with pytest.raises(CoordinatorClosedError):
        c.enqueue_many(list(range(10)))
    with pytest.raises(CoordinatorClosedError):
        c.enqueue_many([])  # as in a plain coordinator: a collection is refused whole
    assert c.total_enqueued == 0


def test_a_body_enqueue_many_never_waits_for_space_it_frees(make):
    """From a body, a keyed collection is taken at once, past the bound (SPEC 15)."""
    counts: list[int] = []

    def body(item: int) -> None:
        if item == 0:
            counts.append(c.enqueue_many(list(range(1, 50))))

    c = make(lambda i: i % 3, body, max_concurrency=1, max_tracked_operations=2)
    c.enqueue(0)
    c.complete()
    c.drain(WAIT)
    assert counts == [49]
    assert c.total_completed == 50
