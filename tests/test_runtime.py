"""The shared event loop: references, tasks, and who joins its thread."""

from __future__ import annotations

import asyncio
import threading
import time

from ephemeral_actors._runtime import SharedLoop
from tests.conftest import WAIT


def test_release_that_waited_for_the_last_task_returns_the_loop_thread():
    """The last release waits for running tasks; when the last one ends, the loop stops.

    The releaser must get that loop's thread to join, even though the task's end (not
    the release) stopped the loop. It used to get None: close() returned with the old
    loop still shutting down, and a process backend could hand the next coordinator's
    job to that dying loop, whose result nobody read (an item in flight for good).
    """
    shared = SharedLoop("ephemeral-actors-test-loop")
    shared.acquire()
    started = threading.Event()
    finishers: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def task() -> None:
        finish = asyncio.Event()
        finishers.append((asyncio.get_running_loop(), finish))
        started.set()
        await finish.wait()

    shared.spawn(task())
    assert started.wait(WAIT)
    loop_thread = shared._thread
    assert loop_thread is not None
    released: list[threading.Thread | None] = []
    releaser = threading.Thread(target=lambda: released.append(shared.release()))
    releaser.start()
    # Once the reference count is 0 and the lock is free again, the releaser is parked
    # in its wait for the task (it holds the lock everywhere else until it returns).
    deadline = time.monotonic() + WAIT
    while shared._refs and time.monotonic() < deadline:
        time.sleep(0.001)
    with shared._lock:
        assert shared._refs == 0
        assert shared._tasks == 1
        assert not released
    loop, finish = finishers[0]
    loop.call_soon_threadsafe(finish.set)
    releaser.join(WAIT)
    assert released == [loop_thread]
    loop_thread.join(WAIT)
    assert not loop_thread.is_alive()


def test_release_without_tasks_returns_the_loop_thread():
    shared = SharedLoop("ephemeral-actors-test-loop")
    shared.acquire()
    thread = shared._thread
    assert shared.release() is thread
    assert thread is not None
    thread.join(WAIT)
    assert not thread.is_alive()


def test_release_of_a_reference_that_is_not_the_last_returns_none():
    shared = SharedLoop("ephemeral-actors-test-loop")
    shared.acquire()
    shared.acquire()
    assert shared.release() is None
    thread = shared._thread
    assert shared.release() is thread
    assert thread is not None
    thread.join(WAIT)
