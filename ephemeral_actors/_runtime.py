"""Process-wide runtime shared by all coordinators: the event loop for coroutine bodies.

The loop runs on one thread named `ephemeral-actors-shared-loop`. It is reference
counted: the first coordinator that needs it starts it and it stops once the last
one has released it *and* every task it still runs for them has returned, so a
program that closes its coordinators ends with no thread of ours left.

After `os.fork()` the child has none of the parent's threads, so the loop is reset
there (no loop, no references, a fresh lock that no vanished thread can hold): the
child's first coordinator starts a loop of its own (issue 13, finding 6).
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import TYPE_CHECKING, Any

from ephemeral_actors._deadline import remaining

if TYPE_CHECKING:
    from collections.abc import Coroutine

__all__ = ["SHARED_LOOP", "SharedLoop"]


class SharedLoop:
    """A reference-counted event loop on its own daemon thread."""

    def __init__(self, name: str = "ephemeral-actors-shared-loop") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._refs = 0
        self._tasks = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def reset_after_fork(self) -> None:
        """Forget the parent's loop in a forked child (its thread does not exist there)."""
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._refs = 0
        self._tasks = 0
        self._loop = None
        self._thread = None

    def __repr__(self) -> str:
        state = "running" if self._loop is not None else "stopped"
        return f"<SharedLoop {state} refs={self._refs} tasks={self._tasks}>"

    def acquire(self) -> asyncio.AbstractEventLoop:
        """Take a reference, starting the loop thread if needed; return the loop."""
        with self._lock:
            self._refs += 1
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()
                thread = threading.Thread(
                    target=self._run, args=(loop, ready), name=self._name, daemon=True
                )
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    def release(self, deadline: float | None = None) -> threading.Thread | None:
        """Drop a reference; return the loop's thread if it is now stopping (to join).

        When this was the last reference, wait (until `deadline`, a `time.monotonic()`
        value) for the tasks still returning, such as workers going idle, so the loop
        can stop now rather than after the caller has left. A task still running at
        the deadline was abandoned; the loop then stops when it returns.
        """
        with self._lock:
            if self._refs <= 0:
                return None  # taken before a fork, released in the child: already reset
            self._refs -= 1
            loop, thread = self._loop, self._thread
            on_loop = threading.current_thread() is thread
            while not self._refs and self._tasks and self._loop is not None and not on_loop:
                left = remaining(deadline)
                if left == 0:
                    break
                self._idle.wait(left)
            stopping = self._maybe_stop_locked()
            if stopping is None and loop is not None and self._loop is not loop:
                # The last task stopped the loop while we waited (`_task_done`): it is
                # still shutting down, so the caller joins it too. Returning None here let
                # close() return with the old loop alive, and a backend could hand the next
                # coordinator's job to that dying loop, whose result nobody then read.
                return thread
            return stopping

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` as a task on the loop; the loop stays up until it returns.

        Must be called while holding a reference.
        """
        with self._lock:
            loop = self._loop
            assert loop is not None, "spawn() without acquire()"
            self._tasks += 1
        loop.call_soon_threadsafe(self._start_task, coro)

    def _start_task(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        task.add_done_callback(self._task_done)

    def _task_done(self, _task: asyncio.Task[None]) -> None:
        with self._lock:
            self._tasks -= 1
            if not self._refs:
                self._idle.notify_all()
            self._maybe_stop_locked()

    def _maybe_stop_locked(self) -> threading.Thread | None:
        if self._refs or self._tasks or self._loop is None:
            return None
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        loop.call_soon_threadsafe(loop.stop)
        return thread

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


SHARED_LOOP = SharedLoop()
"""The loop every coordinator with coroutine bodies shares."""

os.register_at_fork(after_in_child=SHARED_LOOP.reset_after_fork)
