"""The readers of a `from_iterable` source: a task on the coordinator's loop, or a thread.

Each accepts what the source yields, as `enqueue` would, until the source ends or
raises (re-raised from `drain()`). A source may wait for its next item for ever (a
consumer waiting for messages), so `close()` does not wait for it to yield: it
cancels the task of an async source (issue 13, finding 3), and a cancellation that
`close()` asked for is not a source error. The thread of a synchronous source cannot
be interrupted inside the source's `next()`; `close()` waits for it only briefly
there (`SOURCE_GRACE`), and the thread ends when `next()` returns, accepting nothing
more (intake is closed by then).

With coroutine bodies, an in-memory collection (a list, a range, ...) is read this
way too, on the loop the bodies run on (the caller's or the shared one): iterating it
cannot block that loop, and intake then needs no thread of its own and no hand-off
between threads.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import AsyncIterable
from typing import TYPE_CHECKING, Any, Final

from ephemeral_actors._coordinators._requests import BLOCK
from ephemeral_actors._errors import CoordinatorClosedError, CoordinatorFaultedError
from ephemeral_actors._runtime import SHARED_LOOP

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from ephemeral_actors._coordinators._supervisor import Core

__all__ = ["IN_MEMORY", "SOURCE_GRACE", "AsyncFeeder", "SourceThread"]

IN_MEMORY: Final = frozenset(
    {
        list,
        tuple,
        range,
        set,
        frozenset,
        dict,
        collections.deque,
        type({}.keys()),
        type({}.values()),
        type({}.items()),
    }
)
"""Types of sources whose iteration never blocks; exact types only, since a subclass
may override `__iter__`."""


SOURCE_GRACE: Final = 0.1
"""Seconds `close()` waits for a source thread that is inside the source's `next()`: a
source that is about to yield gets to end its thread cleanly; one that waits for
input is left to return in its own time."""

_ITEMS_BETWEEN_YIELDS: Final = 32
"""The reader yields to its loop at least once per this many items: accepting an item
with backlog space does not suspend, and neither may the source, so a large backlog
would otherwise be filled in one step while the loop's other tasks wait."""


async def _each(collection: Iterable[Any]) -> AsyncIterator[Any]:
    """An in-memory collection (`IN_MEMORY`) as an async iterable: reading it never waits."""
    for item in collection:
        yield item


class AsyncFeeder:
    """Feeds a coordinator from a source read on a loop; `stop()` cancels it from any thread.

    The source is an async iterable, or an in-memory collection (`IN_MEMORY`) when the
    bodies are coroutines. `join`/`is_alive` mirror `threading.Thread`, so `close()`
    treats it like the thread that reads a synchronous source.
    """

    def __init__(self, core: Core, source: AsyncIterable[Any] | Iterable[Any]) -> None:
        self.core = core
        self.source = source
        self.stopped = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[Any] | None = None
        self.ended = threading.Event()

    def start(self) -> None:
        """Run on the coordinator's loop: the caller's, like the bodies, or the shared one.

        On the shared loop it holds a reference until the core closes.
        """
        binding = self.core.loop
        if binding is not None and binding.spawn(self._feed):
            return
        self.core.uses_shared_loop()
        SHARED_LOOP.spawn(self._feed())

    def stop(self) -> None:
        """Cancel the task, wherever the source is waiting (idempotent)."""
        # Stored before `task` is read; `_feed` stores `task` before reading `stopped`.
        # Whichever runs second sees the other's store, so the task is either cancelled
        # here or never starts reading.
        self.stopped = True
        loop, task = self.loop, self.task
        if loop is not None and task is not None:
            # A closed loop means the task is gone already.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)

    def join(self, timeout: float | None) -> None:
        """Wait until the task has ended (or `timeout` seconds passed)."""
        self.ended.wait(timeout)

    def is_alive(self) -> bool:
        """True while the task runs."""
        return not self.ended.is_set()

    async def _feed(self) -> None:
        core = self.core
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        try:
            if self.stopped:
                return
            source = self.source
            items = source if isinstance(source, AsyncIterable) else _each(source)
            accepted = 0
            async for item in items:
                await core.accept_async(item, None)
                accepted += 1
                if not accepted % _ITEMS_BETWEEN_YIELDS:
                    await asyncio.sleep(0)  # see `_ITEMS_BETWEEN_YIELDS`
        except (CoordinatorClosedError, CoordinatorFaultedError):
            pass
        except asyncio.CancelledError as exc:
            # Cancelled by close(): not an error of the source, and the task ends here.
            # Cancelled by anything else (the loop shutting down): an interrupt.
            if not self.stopped:
                core.source_failed(exc)
                core.cancel()
        except BaseException as exc:  # re-raised from drain()
            core.source_failed(exc)
            if not isinstance(exc, Exception):
                # An interrupt (KeyboardInterrupt, SystemExit) means stop: cancel what
                # is queued and running instead of finishing it first.
                core.cancel()
        finally:
            self.source = None  # type: ignore[assignment]
            try:
                core.source_finished()
            finally:
                self.ended.set()
                # A kept error of the source (`drain()` raises it) holds this frame in
                # its traceback: the frame must not keep the coordinator alive.
                del core, self


class SourceThread(threading.Thread):
    """Reads a synchronous source into a coordinator, whose `next()` may block.

    `in_source` is True while the thread runs the source's own code (`iter()` and
    each `next()`): `close()` reads it to tell a reader that is about to find intake
    closed from one that waits inside the source, which it cannot interrupt.
    """

    def __init__(self, core: Core, source: Iterable[Any]) -> None:
        super().__init__(name=f"ephemeral-actors-{core.name}-source", daemon=True)
        self.core = core
        self.source: Iterable[Any] | None = source
        self.in_source = False

    def run(self) -> None:
        core = self.core
        source = self.source
        self.source = None  # the thread's frame holds it while it reads; nothing after
        assert source is not None
        try:
            self.in_source = True
            items = iter(source)
            del source
            while True:
                self.in_source = True
                try:
                    item = next(items)
                except StopIteration:
                    break
                finally:
                    self.in_source = False
                core.accept(item, None, None, BLOCK)
                del item  # no payload kept while the source waits for the next one
        except (CoordinatorClosedError, CoordinatorFaultedError):
            pass
        except BaseException as exc:  # re-raised from drain()
            core.source_failed(exc)
            if not isinstance(exc, Exception):
                # An interrupt (KeyboardInterrupt, SystemExit, task cancellation) means
                # stop: cancel what is queued and running instead of finishing it first.
                core.cancel()
        finally:
            self.in_source = False
            core.source_finished()
            del core, self  # as at the end of `AsyncFeeder._feed`
