"""Coroutine bodies and the asyncio facade (SPEC sections 2, 4 and 9)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from ephemeral_actors import (
    CoordinatorClosedError,
    CoordinatorOptions,
    KeyedWorkCoordinator,
    ResultCoordinator,
    WorkCoordinator,
    current_operation,
)
from ephemeral_actors.testing import library_threads
from tests.conftest import WAIT
from tests.coordinators.test_work import Tracker, gated

SHARED_LOOP_NAME = "ephemeral-actors-shared-loop"


@pytest.fixture
def make() -> Iterator[Callable[..., Any]]:
    made: list[Any] = []

    def factory(body: Callable[[Any], Any], *, cls: type = WorkCoordinator, **options: Any) -> Any:
        c = cls(body, CoordinatorOptions(**options))
        made.append(c)
        return c

    yield factory
    for c in made:
        c.close(timeout=WAIT)


def run_on_own_loop(main: Callable[[], Awaitable[Any]], unblock: Callable[[], None]) -> Any:
    """Run `main()` under asyncio.run on a fresh thread and fail, not hang, if its loop blocks.

    If the loop is still busy after WAIT seconds, `unblock()` releases whatever the
    library is blocked on so the thread can end, and the test fails.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(main())  # type: ignore[arg-type]
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="test-asyncio-main")
    thread.start()
    thread.join(WAIT)
    if thread.is_alive():
        unblock()
        thread.join(WAIT)
        pytest.fail("the caller's event loop was blocked")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


async def tick_until(count: int, progress: list[int]) -> None:
    """Yield to the loop `count` times, counting each turn in `progress[0]`."""
    for _ in range(count):
        progress[0] += 1
        await asyncio.sleep(0)


# -- where coroutine bodies run -----------------------------------------------------------


def test_coroutine_bodies_run_on_the_shared_loop_thread(make):
    """An async def body runs on the library's shared event-loop thread."""
    seen: list[tuple[str, bool]] = []

    async def body(item: int) -> None:
        await asyncio.sleep(0)
        seen.append((threading.current_thread().name, asyncio.get_running_loop().is_running()))

    c = make(body, max_concurrency=4)
    for i in range(10):
        c.enqueue(i)
    c.complete()
    c.drain(WAIT)
    assert c.total_completed == 10
    assert seen == [(SHARED_LOOP_NAME, True)] * 10


def test_thousand_sleeping_coroutines_need_a_handful_of_threads(make):
    """1,000 concurrently waiting coroutine bodies run on a few library threads, not 1,000."""
    n = 1000
    lock = threading.Lock()
    state = {"running": 0, "peak": 0}
    all_running = threading.Event()
    release: list[asyncio.Event] = []
    loops: list[asyncio.AbstractEventLoop] = []

    async def body(item: int) -> None:
        with lock:
            if not release:
                loops.append(asyncio.get_running_loop())
                release.append(asyncio.Event())
            event = release[0]
            state["running"] += 1
            state["peak"] = max(state["peak"], state["running"])
            if state["running"] == n:
                all_running.set()
        try:
            await asyncio.wait_for(event.wait(), WAIT)
        finally:
            with lock:
                state["running"] -= 1

    before = set(library_threads())
    c = make(body, max_concurrency=n, max_tracked_operations=n)
    for i in range(n):
        c.enqueue(i)
    assert all_running.wait(WAIT), f"only {state['running']} bodies ran at once"
    assert c.active_count == n
    new_threads = [t.name for t in library_threads() if t not in before]
    loops[0].call_soon_threadsafe(release[0].set)
    assert len(new_threads) <= 6, new_threads
    c.complete()
    c.drain(WAIT)
    assert c.total_completed == n
    assert state["peak"] == n


# -- asyncio intake -------------------------------------------------------------------


def test_enqueue_async_waits_for_space_without_blocking_the_loop(make):
    """enqueue_async on a full backlog lets other tasks run, then returns an id once space frees."""
    tracker, gate = Tracker(), threading.Event()
    c = make(gated(tracker, gate), max_concurrency=1, max_tracked_operations=1)
    c.enqueue(0)
    tracker.wait_for(lambda: tracker.current == 1)
    c.enqueue(1)  # the backlog is now full

    async def main() -> tuple[int, int, int]:
        ticks = [0]
        producer = asyncio.create_task(c.enqueue_async(2))
        await tick_until(50, ticks)  # the loop keeps turning while the producer waits
        waiting_ticks = ticks[0]
        assert not producer.done()
        assert c.total_enqueued == 2
        gate.set()
        op_id = await asyncio.wait_for(producer, WAIT)
        return op_id, waiting_ticks, c.total_enqueued

    op_id, waiting_ticks, enqueued = run_on_own_loop(main, gate.set)
    assert waiting_ticks == 50
    assert isinstance(op_id, int) and op_id > 0
    assert enqueued == 3
    c.complete()
    c.drain(WAIT)
    assert c.total_completed == 3


def _full_result_coordinator(make: Callable[..., Any]) -> tuple[Any, Tracker, threading.Event]:
    """A ResultCoordinator whose one slot and one-item backlog are both taken."""
    tracker, gate = Tracker(), threading.Event()
    run = gated(tracker, gate)

    def body(item: Any) -> Any:
        run(item)
        return item

    c = make(body, cls=ResultCoordinator, max_concurrency=1, max_tracked_operations=1)
    c.enqueue(0)
    tracker.wait_for(lambda: tracker.current == 1)
    c.enqueue(1)  # the backlog is now full
    return c, tracker, gate


def test_submit_async_waits_for_space_then_returns_the_result(make):
    """A submit_async that waits for space is accepted once space frees, then gets its result."""
    c, _, gate = _full_result_coordinator(make)

    async def main() -> tuple[Any, int]:
        submit = asyncio.create_task(c.submit_async("late"))
        await tick_until(20, [0])
        assert not submit.done()
        enqueued_while_waiting = c.total_enqueued
        gate.set()
        return await asyncio.wait_for(submit, WAIT), enqueued_while_waiting

    result, enqueued_while_waiting = run_on_own_loop(main, gate.set)
    assert (result, enqueued_while_waiting) == ("late", 2)
    c.complete()
    c.drain(WAIT)
    assert (c.total_enqueued, c.total_completed) == (3, 3)


@pytest.mark.parametrize("method", ["enqueue_async", "submit_async"])
def test_async_intake_raises_when_intake_closes_while_waiting(make, method):
    """An enqueue_async or submit_async waiting for space gets CoordinatorClosedError when
    intake closes."""
    c, _, gate = _full_result_coordinator(make)

    async def main() -> None:
        waiting = asyncio.create_task(getattr(c, method)("late"))
        await tick_until(10, [0])
        assert not waiting.done()
        c.cancel()
        with pytest.raises(CoordinatorClosedError):
            await asyncio.wait_for(waiting, WAIT)

    try:
        run_on_own_loop(main, c.cancel)
    finally:
        gate.set()
    c.drain(WAIT)
    assert c.total_enqueued == 2


def _cancel_a_submit(c: Any, gate: threading.Event, ready: Callable[[], Awaitable[None]]) -> None:
    """On a loop of its own, start `c.submit_async("x")`, cancel it once `ready()`
    returned, and check that the cancel reaches the caller; then open `gate`."""

    async def main() -> None:
        submit = asyncio.create_task(c.submit_async("x"))
        await ready()
        submit.cancel()
        with pytest.raises(asyncio.CancelledError):
            await submit

    try:
        run_on_own_loop(main, gate.set)
    finally:
        gate.set()


def test_cancelling_a_submit_async_that_waits_for_space_withdraws_it(make):
    """Cancelled while waiting for space, a submit_async is never enqueued."""
    c, _, gate = _full_result_coordinator(make)
    _cancel_a_submit(c, gate, lambda: tick_until(10, [0]))
    c.wait_idle(WAIT)  # space freed with intake still open: a request left waiting would go in
    assert (c.total_enqueued, c.total_completed, c.total_cancelled) == (2, 2, 0)


def test_cancelling_a_submit_async_after_acceptance_leaves_the_operation_running(make):
    """Cancelling the await of an accepted item's outcome does not cancel the item."""
    tracker, gate = Tracker(), threading.Event()
    c = make(gated(tracker, gate), cls=ResultCoordinator, max_concurrency=1)

    async def running() -> None:
        await asyncio.sleep(0)
        tracker.wait_for(lambda: tracker.current == 1)  # accepted and running

    _cancel_a_submit(c, gate, running)
    c.complete()
    c.drain(WAIT)
    assert (c.total_enqueued, c.total_completed, c.total_cancelled) == (1, 1, 0)


def test_cancelling_a_submit_async_whose_coroutine_body_runs_on_the_same_loop():
    """The outcome of a coroutine body on the caller's loop is set in the reporting turn
    itself; a submit cancelled meanwhile gets nothing set, and the operation still counts."""

    async def main() -> tuple[int, int, int]:
        release = asyncio.Event()
        running = asyncio.Event()

        async def body(x: int) -> int:
            running.set()
            await release.wait()
            return x

        async with ResultCoordinator(body, max_concurrency=1) as c:
            task = asyncio.create_task(c.submit_async(1))
            await asyncio.wait_for(running.wait(), WAIT)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            release.set()
            assert await asyncio.wait_for(c.submit_async(2), WAIT) == 2
            return c.total_completed, c.total_cancelled, c.total_failed

    assert asyncio.run(main()) == (2, 0, 0)


def test_submit_async_returns_the_result():
    """await submit_async(item) yields the body's result in a ResultCoordinator."""

    async def main() -> list[Any]:
        async with ResultCoordinator(lambda x: x * 2) as c:
            return await asyncio.gather(*(c.submit_async(i) for i in range(20)))

    assert asyncio.run(main()) == [i * 2 for i in range(20)]


def test_submit_async_returns_coroutine_body_result(make):
    """submit_async with a coroutine body awaits the result computed on the shared loop."""

    async def body(x: int) -> tuple[int, str]:
        await asyncio.sleep(0)
        return x + 1, threading.current_thread().name

    c = make(body, cls=ResultCoordinator)

    async def main() -> Any:
        return await asyncio.wait_for(c.submit_async(41), WAIT)

    assert asyncio.run(main()) == (42, SHARED_LOOP_NAME)


def test_submit_async_on_a_work_coordinator_returns_none(make):
    """submit_async resolves to None for a plain WorkCoordinator."""
    c = make(lambda x: x * 2)

    async def main() -> Any:
        return await asyncio.wait_for(c.submit_async(3), WAIT)

    assert asyncio.run(main()) is None
    assert c.total_completed == 1


def test_submit_async_raises_the_body_exception(make):
    """submit_async raises whatever the body raised, sync or async."""

    async def failing(x: int) -> None:
        raise LookupError(f"no {x}")

    sync_c = make(lambda x: {}[x], cls=ResultCoordinator)
    async_c = make(failing, cls=ResultCoordinator)

    async def main() -> None:
        with pytest.raises(KeyError):
            await asyncio.wait_for(sync_c.submit_async("missing"), WAIT)
        with pytest.raises(LookupError, match="no 5"):
            await asyncio.wait_for(async_c.submit_async(5), WAIT)

    asyncio.run(main())
    assert sync_c.total_failed == 1
    assert async_c.total_failed == 1


# -- drain_async and async with ------------------------------------------------------------


def test_drain_async_waits_without_blocking_the_loop(make):
    """drain_async lets other tasks run while work is outstanding and returns once drained."""
    tracker, gate = Tracker(), threading.Event()
    c = make(gated(tracker, gate), max_concurrency=2)
    for i in range(4):
        c.enqueue(i)
    c.complete()

    async def main() -> int:
        ticks = [0]
        drainer = asyncio.create_task(c.drain_async())
        await tick_until(50, ticks)
        assert not drainer.done()
        gate.set()
        await asyncio.wait_for(drainer, WAIT)
        return ticks[0]

    assert run_on_own_loop(main, gate.set) == 50
    assert c.is_drained
    assert c.total_completed == 4


def test_async_with_completes_drains_and_closes():
    """Leaving `async with` normally processes everything and stops the coordinator's threads."""
    seen: list[int] = []
    before = set(library_threads())

    async def main() -> WorkCoordinator[int]:
        async with WorkCoordinator(seen.append, CoordinatorOptions(max_concurrency=4)) as c:
            assert isinstance(c, WorkCoordinator)
            for i in range(50):
                await c.enqueue_async(i)
            assert set(library_threads()) - before
        return c

    c = asyncio.run(main())
    assert sorted(seen) == list(range(50))
    assert c.is_drained
    assert c.total_completed == 50
    assert set(library_threads()) - before == set()
    with pytest.raises(CoordinatorClosedError):
        c.enqueue(99)


def test_async_with_closes_on_exception():
    """An exception inside `async with` cancels and closes the coordinator, and propagates."""
    tracker, gate = Tracker(), threading.Event()
    before = set(library_threads())

    async def main() -> None:
        async with WorkCoordinator(
            gated(tracker, gate), CoordinatorOptions(max_concurrency=1)
        ) as c:
            holder.append(c)
            c.enqueue(0)
            c.enqueue(1)
            c.enqueue(2)
            tracker.wait_for(lambda: tracker.current == 1)
            gate.set()
            raise LookupError("inside")

    holder: list[WorkCoordinator[Any]] = []
    with pytest.raises(LookupError, match="inside"):
        asyncio.run(main())
    (c,) = holder
    assert c.is_completed
    s = c.stats()
    assert s.total_completed + s.total_cancelled == 3
    assert set(library_threads()) - before == set()


# -- inside coroutine bodies ----------------------------------------------------------------


def test_current_operation_inside_async_bodies(make):
    """Interleaved coroutine bodies each see their own operation across awaits."""
    seen: dict[int, list[int]] = {}
    arrived: list[int] = []
    both_here: list[asyncio.Event] = []

    async def body(item: int) -> None:
        first = current_operation().id
        if not both_here:
            both_here.append(asyncio.Event())
        arrived.append(item)
        if len(arrived) == 2:
            both_here[0].set()
        # Both bodies are suspended at this point before either goes on.
        await asyncio.wait_for(both_here[0].wait(), WAIT)
        await asyncio.sleep(0)
        seen[item] = [first, current_operation().id]

    c = make(body, max_concurrency=2)
    ids = {c.enqueue(i): i for i in range(2)}
    c.complete()
    c.drain(WAIT)
    assert c.total_completed == 2, c.get_failed()
    for op_id, item in ids.items():
        assert seen[item] == [op_id, op_id]


def test_current_operation_keeps_its_identity_across_awaits(make):
    """current_operation() in an async body is the operation enqueue returned, before and after awaits."""
    seen: list[tuple[int, int, str | None]] = []

    async def body(item: int) -> None:
        op = current_operation()
        await asyncio.sleep(0)
        seen.append((op.id, current_operation().id, current_operation().key))

    c = make(body)
    op_id = c.enqueue(1)
    c.complete()
    c.drain(WAIT)
    assert seen == [(op_id, op_id, None)]


def test_cooperative_cancellation_is_seen_inside_an_async_body(make):
    """cancel() sets current_operation().cancelled in a running coroutine body."""
    started = threading.Event()
    observed: list[bool] = []

    async def body(item: int) -> None:
        op = current_operation()
        started.set()
        deadline = time.monotonic() + WAIT
        # Operation.cancelled is a flag with no event to await: a body polls it.
        while not op.cancelled and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        observed.append(op.cancelled)
        op.raise_if_cancelled()

    c = make(body, max_concurrency=1)
    future = c.submit(1)
    queued = c.submit(2)
    assert started.wait(WAIT)
    c.cancel()
    c.drain(WAIT)
    assert observed == [True]
    s = c.stats()
    assert (s.total_cancelled, s.total_failed, s.total_completed) == (2, 0, 0)
    for f in (future, queued):
        with pytest.raises(Exception, match="cancel"):
            f.get(timeout=WAIT)


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_async_body_base_exception_is_recorded_and_loop_keeps_serving(make, exc_type):
    """An async body raising KeyboardInterrupt/SystemExit fails its item; the shared loop serves others."""

    async def doubled(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    async def bad(_: int) -> None:
        await asyncio.sleep(0)
        raise exc_type

    other = make(doubled, cls=ResultCoordinator)
    assert other.submit(1).get(timeout=WAIT) == 2
    c = make(bad)
    for i in range(3):
        c.enqueue(i)
    c.complete()
    c.drain(WAIT)
    assert (c.total_failed, c.total_completed) == (3, 0)
    assert all(isinstance(s.error, exc_type) for s in c.get_failed())
    assert other.submit(21).get(timeout=WAIT) == 42
    assert any(t.name == SHARED_LOOP_NAME for t in library_threads())
    late = make(doubled, cls=ResultCoordinator)
    assert late.submit(5).get(timeout=WAIT) == 10


def test_sync_body_returning_a_coroutine_fails_mentioning_async_def(make):
    """A plain callable returning a coroutine fails; submit raises a TypeError naming 'async def'."""

    async def real(x: int) -> int:
        return x

    # A lambda, not `real` itself: a plain function that happens to return a coroutine.
    c = make(lambda x: real(x))  # noqa: PLW0108
    with pytest.raises(TypeError, match="async def"):
        c.submit(1).get(timeout=WAIT)
    (snap,) = c.get_failed()
    assert "async def" in str(snap.error)


def test_async_keyed_bodies_keep_per_key_order(make):
    """Coroutine bodies in a keyed coordinator keep per-key order on the shared loop."""
    seen: dict[int, list[int]] = {}

    async def body(item: tuple[int, int]) -> None:
        await asyncio.sleep(0)
        seen.setdefault(item[0], []).append(item[1])

    c = KeyedWorkCoordinator(lambda i: i[0], body, CoordinatorOptions(max_concurrency=8))
    try:
        for seq in range(60):
            c.enqueue((seq % 3, seq))
        c.complete()
        c.drain(WAIT)
    finally:
        c.close(WAIT)
    assert seen == {k: list(range(k, 60, 3)) for k in range(3)}


# -- async sources ------------------------------------------------------------------------


def test_from_iterable_with_an_async_generator_source():
    """An async generator feeds a coordinator; drain_async returns once it is exhausted."""
    seen: list[int] = []

    async def source() -> AsyncIterator[int]:
        for i in range(100):
            if i % 10 == 0:
                await asyncio.sleep(0)
            yield i

    async def body(item: int) -> None:
        seen.append(item)

    c = WorkCoordinator.from_iterable(source(), body, CoordinatorOptions(max_tracked_operations=8))
    try:

        async def main() -> None:
            await asyncio.wait_for(c.drain_async(), WAIT)

        asyncio.run(main())
        assert sorted(seen) == list(range(100))
        assert c.is_completed and c.is_drained
    finally:
        c.close(WAIT)


def test_async_source_raising_halfway_reraises_from_drain_async():
    """An async source that raises part-way re-raises from drain_async; earlier items still ran."""
    seen: list[int] = []

    async def source() -> AsyncIterator[int]:
        for i in range(5):
            await asyncio.sleep(0)
            yield i
        raise ConnectionError("feed broke")

    c = ResultCoordinator.from_iterable(source(), lambda x: seen.append(x) or x)
    try:

        async def main() -> None:
            await asyncio.wait_for(c.drain_async(), WAIT)

        with pytest.raises(ConnectionError, match="feed broke"):
            asyncio.run(main())
        assert sorted(seen) == list(range(5))
        assert c.total_completed == 5
        with pytest.raises(ConnectionError):
            c.drain(WAIT)
    finally:
        c.close(WAIT)


# -- keyed intake from asyncio -------------------------------------------------------------

_SPINS = 50
"""Key-selector calls for one item after which a test stops the library's retry loop."""


class SpinDetector:
    """A key selector that counts its calls per item and ends a busy retry loop after _SPINS."""

    def __init__(self, on_spin: Callable[[], None] | None = None) -> None:
        self.calls: dict[Any, int] = {}
        self.raising = {"bad"}
        self.on_spin = on_spin or self.raising.clear

    def __call__(self, item: Any) -> Any:
        """Count the call; raise for the items in `raising`, else key by the first element."""
        self.calls[item] = self.calls.get(item, 0) + 1
        if self.calls[item] == _SPINS:
            self.on_spin()
        if item in self.raising:
            raise LookupError(f"no key for {item!r}")
        return item[0]


@pytest.mark.parametrize("method", ["enqueue_async", "submit_async"])
def test_async_intake_raises_the_key_selector_error(method):
    """enqueue_async/submit_async raise what the key selector raised, as enqueue does."""
    selector = SpinDetector()
    c = KeyedWorkCoordinator(selector, lambda _: None)
    try:
        with pytest.raises(LookupError, match="no key"):
            c.enqueue("bad")

        async def main() -> None:
            await asyncio.wait_for(getattr(c, method)("bad"), WAIT)

        with pytest.raises(LookupError, match="no key"):
            asyncio.run(main())
        assert selector.calls["bad"] == 2, "the selector was retried in a busy loop"
        assert c.total_enqueued == 0
    finally:
        c.close(WAIT)


def test_enqueue_async_never_rejects_for_fairness():
    """enqueue_async, like enqueue, accepts an item whose key is at the fair-scheduling threshold."""
    selector = SpinDetector()
    c = KeyedWorkCoordinator(
        selector,
        lambda _: None,
        CoordinatorOptions(enable_fair_scheduling=True, fair_scheduling_threshold=1),
    )
    selector.on_spin = c.resume  # a spinning enqueue_async would only end once the key drains
    try:
        c.pause()
        c.enqueue(("a", 1))
        assert c.try_enqueue(("a", 2)) is False
        assert c.enqueue(("a", 3)) > 0

        async def main() -> int:
            return await asyncio.wait_for(c.enqueue_async(("a", 4)), WAIT)

        assert asyncio.run(main()) > 0
        assert selector.calls[("a", 4)] == 1, "enqueue_async spun until the key drained"
        assert c.get_pending_count_for_key("a") == 3
        c.resume()
        c.complete()
        c.drain(WAIT)
    finally:
        c.close(WAIT)


def test_async_source_key_selector_error_comes_out_of_drain():
    """A keyed coordinator fed by an async source re-raises a key-selector error from drain."""
    selector = SpinDetector()

    async def source() -> AsyncIterator[Any]:
        yield ("a", 1)
        yield "bad"
        yield ("a", 2)

    c = KeyedWorkCoordinator.from_iterable(source(), selector, lambda _: None)
    try:
        with pytest.raises(LookupError, match="no key"):
            c.drain(WAIT)
        assert selector.calls["bad"] == 1, "the shared loop spun on the selector"
    finally:
        c.close(WAIT)


def test_sync_source_key_selector_error_comes_out_of_drain():
    """A keyed coordinator fed by a plain iterable re-raises a key-selector error from drain."""
    selector = SpinDetector(on_spin=lambda: None)  # a sync feeder cannot spin
    c = KeyedWorkCoordinator.from_iterable(
        iter([("a", 1), "bad", ("a", 2)]), selector, lambda _: None
    )
    try:
        with pytest.raises(LookupError, match="no key"):
            c.drain(WAIT)
        assert selector.calls["bad"] == 1
        assert c.total_enqueued == 1
    finally:
        c.close(WAIT)


def test_enqueue_async_into_a_full_keyed_backlog_runs_the_selector_once():
    """An async intake that must wait for space computes the item's key once, not per attempt."""
    calls: list[Any] = []

    def selector(item: tuple[str, int]) -> str:
        calls.append(item)
        return item[0]

    c = KeyedWorkCoordinator(selector, lambda _: None, CoordinatorOptions(max_tracked_operations=1))
    try:
        c.pause()
        c.enqueue(("a", 1))  # the backlog is now full

        async def main() -> int:
            producer = asyncio.create_task(c.enqueue_async(("b", 2)))
            await tick_until(10, [0])
            assert not producer.done()
            c.resume()
            return await asyncio.wait_for(producer, WAIT)

        assert asyncio.run(main()) > 0
        assert calls == [("a", 1), ("b", 2)]
        c.complete()
        c.drain(WAIT)
        assert c.total_completed == 2
    finally:
        c.close(WAIT)
