"""An event loop's inbox: callbacks from other threads wake the loop once per burst."""

from __future__ import annotations

import asyncio
import functools
import gc
import threading
import weakref
from typing import Any

import pytest

from ephemeral_actors import CoordinatorOptions, ResultCoordinator
from ephemeral_actors._loop_inbox import _inboxes, post_to_loop


class CountingLoop(asyncio.SelectorEventLoop):
    """A stdlib loop that counts its cross-thread wake-ups."""

    def __init__(self) -> None:
        super().__init__()
        self.threadsafe_calls = 0

    def call_soon_threadsafe(self, callback: Any, *args: Any, context: Any = None) -> Any:
        self.threadsafe_calls += 1
        return super().call_soon_threadsafe(callback, *args, context=context)


def _from_thread(fn: Any) -> None:
    thread = threading.Thread(target=fn)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()


def test_a_burst_of_posts_wakes_the_loop_once_and_keeps_their_order() -> None:
    loop = CountingLoop()
    try:
        ran: list[int] = []
        _from_thread(lambda: [post_to_loop(loop, ran.append, i) for i in range(1000)])
        assert loop.threadsafe_calls == 1
        loop.run_until_complete(asyncio.sleep(0))
        assert ran == list(range(1000))
    finally:
        loop.close()


def test_a_post_runs_before_a_later_call_soon_threadsafe_of_the_same_thread() -> None:
    loop = asyncio.new_event_loop()
    try:
        ran: list[str] = []

        def post_then_call() -> None:
            post_to_loop(loop, ran.append, "posted")
            loop.call_soon_threadsafe(ran.append, "called")
            post_to_loop(loop, ran.append, "posted again")

        _from_thread(post_then_call)
        loop.run_until_complete(asyncio.sleep(0))
        # A later post may join the drain already due, ahead of the plain call: only
        # what was posted before the call is promised to run before it.
        assert ran.index("posted") < ran.index("called")
        assert sorted(ran) == ["called", "posted", "posted again"]
    finally:
        loop.close()


def test_posts_made_while_the_loop_drains_wake_it_again() -> None:
    loop = CountingLoop()
    try:
        ran: list[int] = []
        posted = threading.Event()

        def first(i: int) -> None:
            ran.append(i)
            # Another thread posts while this drain runs: it must not wait for a
            # wake-up that never comes.
            threading.Thread(
                target=lambda: (post_to_loop(loop, ran.append, 2), posted.set())
            ).start()
            assert posted.wait(30)

        _from_thread(lambda: post_to_loop(loop, first, 1))
        loop.run_until_complete(asyncio.sleep(0))
        loop.run_until_complete(asyncio.sleep(0))
        assert ran == [1, 2]
        assert loop.threadsafe_calls == 2
    finally:
        loop.close()


def test_a_drain_runs_only_what_was_posted_before_it_began() -> None:
    """Posts that keep coming do not hold the loop in one callback."""
    loop = asyncio.new_event_loop()
    try:
        ran: list[str] = []

        def repost(n: int) -> None:
            ran.append(f"inbox {n}")
            if n < 3:
                # Posted from another thread during the drain: it goes to the next one.
                _from_thread(lambda: post_to_loop(loop, repost, n + 1))

        def first() -> None:
            loop.call_soon(ran.append, "other")  # queued behind this drain, ahead of the next

        _from_thread(lambda: (post_to_loop(loop, first), post_to_loop(loop, repost, 1)))
        for _ in range(5):
            loop.run_until_complete(asyncio.sleep(0))
        # Without the bound, the first drain would have run all three ahead of "other".
        assert ran == ["inbox 1", "other", "inbox 2", "inbox 3"]
    finally:
        loop.close()


def test_a_failing_callback_is_reported_and_the_rest_still_run() -> None:
    loop = asyncio.new_event_loop()
    try:
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        ran: list[int] = []

        def fail() -> None:
            raise ValueError("boom")

        _from_thread(
            lambda: (
                post_to_loop(loop, ran.append, 1),
                post_to_loop(loop, fail),
                post_to_loop(loop, ran.append, 2),
            )
        )
        loop.run_until_complete(asyncio.sleep(0))
        assert ran == [1, 2]
        assert len(reported) == 1
        assert isinstance(reported[0]["exception"], ValueError)
    finally:
        loop.close()


def test_an_interrupt_in_a_callback_leaves_the_rest_for_the_next_drain() -> None:
    loop = asyncio.new_event_loop()
    try:
        ran: list[int] = []

        def interrupt() -> None:
            raise KeyboardInterrupt

        _from_thread(
            lambda: (
                post_to_loop(loop, ran.append, 1),
                post_to_loop(loop, interrupt),
                post_to_loop(loop, ran.append, 2),
            )
        )
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(asyncio.sleep(0))
        loop.run_until_complete(asyncio.sleep(0))
        assert ran == [1, 2]
    finally:
        loop.close()


def test_a_closed_loop_drops_posts_and_is_not_kept_alive() -> None:
    loop = asyncio.new_event_loop()
    loop.close()
    ran: list[int] = []
    _from_thread(functools.partial(post_to_loop, loop, ran.append, 1))
    assert ran == []
    inbox = _inboxes.get(loop)
    assert inbox is not None
    assert not inbox.mail  # nothing held for a loop nobody runs
    gone = weakref.ref(loop)
    del loop, inbox
    gc.collect()
    assert gone() is None


def test_a_loop_closed_with_a_drain_pending_drops_later_posts() -> None:
    loop = asyncio.new_event_loop()
    ran: list[int] = []
    _from_thread(functools.partial(post_to_loop, loop, ran.append, 1))  # a drain is due
    loop.close()  # before it ran
    _from_thread(functools.partial(post_to_loop, loop, ran.append, 2))
    inbox = _inboxes.get(loop)
    assert inbox is not None
    assert not inbox.mail
    assert ran == []
    gone = weakref.ref(loop)
    del loop, inbox
    gc.collect()
    assert gone() is None


class _UnreferenceableLoop:
    """A loop-like object that refuses weak references (a C loop without `__weakref__`)."""

    __slots__ = ("calls", "closed")

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.closed = False

    def call_soon_threadsafe(self, callback: Any, *args: Any) -> None:
        if self.closed:
            raise RuntimeError("Event loop is closed")
        self.calls.append((callback, *args))


def test_a_loop_without_weak_references_gets_one_call_per_post() -> None:
    loop: Any = _UnreferenceableLoop()
    post_to_loop(loop, print, 1)
    post_to_loop(loop, print, 2)
    assert loop.calls == [(print, 1), (print, 2)]  # no inbox: it could not be keyed
    loop.closed = True
    post_to_loop(loop, print, 3)  # dropped, as a closed loop's posts are
    assert loop.calls == [(print, 1), (print, 2)]


def test_results_of_a_burst_of_submit_async_wake_the_loop_once() -> None:
    """The outcomes of sync bodies reach their `submit_async` callers in one wake-up."""
    n = 100

    async def main() -> tuple[list[int], int]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, CountingLoop)
        gate = threading.Event()

        def body(x: int) -> int:
            assert gate.wait(30)
            return x * 2

        c = ResultCoordinator(body, CoordinatorOptions(max_concurrency=4))
        try:
            tasks = [asyncio.ensure_future(c.submit_async(i)) for i in range(n)]
            await asyncio.sleep(0)  # each task runs to its await: all accepted
            assert c.total_enqueued == n
            before = loop.threadsafe_calls
            gate.set()
            # Block the loop while every outcome arrives (sync bodies run on workers).
            c.wait_idle(timeout=30)
            assert c.total_completed == n
            wakes = loop.threadsafe_calls - before
            return list(await asyncio.gather(*tasks)), wakes
        finally:
            c.close()

    with asyncio.Runner(loop_factory=CountingLoop) as runner:
        results, wakes = runner.run(main())
    assert results == [2 * i for i in range(n)]
    assert wakes <= 2  # one per burst (a second if two workers raced): not one per item
