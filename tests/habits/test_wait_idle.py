"""`wait_idle()` and work that makes work (SPEC 15)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ephemeral_actors import CoordinatorFaultedError, CoordinatorOptions, WorkCoordinator
from ephemeral_actors._coordinators._requests import Wait
from ephemeral_actors.testing import crash_worker
from tests.conftest import WAIT


def test_bodies_enqueuing_into_a_full_backlog_drain_and_wait_idle_returns():
    """A tree of work made by bodies fills a tiny backlog, yet all of it runs."""
    seen: list[int] = []

    def body(n: int) -> None:
        seen.append(n)
        if n < 100:
            work.enqueue(2 * n + 1)
            work.enqueue(2 * n + 2)

    work = WorkCoordinator(body, max_concurrency=2, max_tracked_operations=1)
    try:
        work.enqueue(0)
        work.wait_idle(WAIT)
        assert sorted(seen) == list(range(201))
        assert work.pending_count == work.active_count == 0
        assert not work.is_completed  # intake stays open
        assert work.try_enqueue(1000)
        work.wait_idle(WAIT)
        assert work.total_completed == 202
    finally:
        work.close(WAIT)


def test_async_bodies_enqueue_async_into_a_full_backlog():
    """`await enqueue_async` from coroutine bodies never waits for space they must free."""

    async def main() -> int:
        async def body(n: int) -> None:
            await asyncio.sleep(0)
            if n < 60:
                await work.enqueue_async(2 * n + 1)
                await work.enqueue_async(2 * n + 2)

        async with WorkCoordinator(body, max_concurrency=4, max_tracked_operations=1) as work:
            await work.enqueue_async(0)
            await work.wait_idle_async(WAIT)
            return work.total_completed

    assert asyncio.run(main()) == 121


def test_wait_idle_times_out_with_a_builtin_timeout_error(make):
    """A body that does not return makes wait_idle raise TimeoutError after its timeout."""
    gate = threading.Event()
    work = make(lambda _: gate.wait(WAIT))
    work.enqueue(1)
    with pytest.raises(TimeoutError, match="not idle"):
        work.wait_idle(0.05)
    gate.set()
    work.wait_idle(WAIT)


def test_wait_idle_async_times_out(make):
    """wait_idle_async raises TimeoutError after its timeout and leaves no waiter behind."""
    gate = threading.Event()
    work = make(lambda _: gate.wait(WAIT))
    work.enqueue(1)

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await work.wait_idle_async(0.05)

    asyncio.run(main())
    gate.set()
    work.wait_idle(WAIT)


def test_wait_idle_on_an_idle_coordinator_returns_at_once(make):
    """Nothing accepted: idle already."""
    make(lambda _: None).wait_idle(WAIT)


def test_waiting_from_a_body_raises_at_once(make):
    """wait_idle() inside the coordinator's own body raises RuntimeError, not hang."""
    errors: list[BaseException] = []

    def body(_: object) -> None:
        try:
            work.wait_idle(WAIT)
        except RuntimeError as exc:
            errors.append(exc)

    work = make(body)
    work.enqueue(1)
    work.wait_idle(WAIT)
    assert len(errors) == 1
    assert "wait for itself" in str(errors[0])


def test_wait_idle_async_from_an_async_body_raises_at_once():
    """wait_idle_async() inside its own coroutine body raises RuntimeError."""
    errors: list[BaseException] = []

    async def body(_: object) -> None:
        try:
            await work.wait_idle_async(WAIT)
        except RuntimeError as exc:
            errors.append(exc)

    work = WorkCoordinator(body)
    try:
        work.enqueue(1)
        work.wait_idle(WAIT)
    finally:
        work.close(WAIT)
    assert len(errors) == 1


def test_wait_idle_from_a_callback_raises_at_once():
    """wait_idle() in on_sample (the coordinator's callbacks actor) raises RuntimeError."""
    errors: list[BaseException] = []

    def on_sample(_window: object) -> None:
        try:
            work.wait_idle(WAIT)
        except RuntimeError as exc:
            errors.append(exc)

    work = WorkCoordinator(lambda _: None, CoordinatorOptions(on_sample=on_sample))
    try:
        work.enqueue(1)
        work.complete()
        work.drain(WAIT)
    finally:
        work.close(WAIT)
    assert len(errors) == 1


def test_blocking_wait_on_the_bodies_own_loop_raises():
    """A blocking wait_idle() on the loop the bodies run on would stop them: RuntimeError."""

    async def main() -> None:
        async def body(_: object) -> None:
            await asyncio.sleep(0)

        work = WorkCoordinator(body)
        try:
            work.enqueue(1)
            with pytest.raises(RuntimeError, match="event loop"):
                work.wait_idle(WAIT)
            await work.wait_idle_async(WAIT)
        finally:
            work.close()  # from the loop's thread: returns without waiting

    asyncio.run(main())


def test_a_fault_ends_wait_idle_while_work_is_still_running():
    """A busy turn skips checking waits for settled work, but never once the coordinator
    faulted: `wait_idle()` raises then, although an item still runs."""

    gate = threading.Event()
    started = threading.Event()

    def body(item: int) -> None:
        if item == 0:
            started.set()
            assert gate.wait(WAIT)
        else:
            crash_worker()

    work = WorkCoordinator(body, max_concurrency=2, max_restarts=0)
    outcome: list[BaseException | None] = []

    def wait() -> None:
        try:
            work.wait_idle(WAIT)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    try:
        work.enqueue(0)
        assert started.wait(WAIT)
        waiting = threading.Thread(target=wait)
        waiting.start()
        work.enqueue(1)  # crashes its worker: max_restarts=0 faults the coordinator
        waiting.join(WAIT)
        assert not waiting.is_alive()
        assert work.active_count == 1  # item 0 still runs, yet the wait ended
        assert len(outcome) == 1
        assert isinstance(outcome[0], CoordinatorFaultedError)
    finally:
        gate.set()
        work.close(WAIT)


def test_a_wait_for_running_work_is_answered_while_a_settled_wait_is_pending():
    """Waits of both kinds at once: the one that can end while work runs is not held
    back by the one that cannot (close() waits for running work this way)."""

    gate = threading.Event()
    started = threading.Event()

    def body(_: int) -> None:
        started.set()
        assert gate.wait(WAIT)

    work = WorkCoordinator(body, max_concurrency=1)
    core = work._core
    try:
        work.enqueue(0)
        assert started.wait(WAIT)
        settled = Wait(0, lambda: core.unsettled == 0, settled=True)
        core.call(core._on_wait, settled)
        assert not settled.done
        # Answered in the turn that files it, while an operation is unsettled.
        assert core.wait_for(lambda: core.running == 1, time.monotonic() + WAIT)
        assert not settled.done
        gate.set()
        assert settled.wait(WAIT)
    finally:
        gate.set()
        work.close(WAIT)
