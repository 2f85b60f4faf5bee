"""Completion streams: `ResultCoordinator.as_completed()` (SPEC section 16).

A stream covers everything accepted before the call. At the call (in the
supervisor's turn) it takes the items that already ended and are still in the
window, in end order, and remembers the intake rank (`Operation._seq`) of the last
item accepted; every later end of an item at or below that rank (a completion, a
failure, a cancellation, a dropped backlog item) is delivered to it, in the order
the supervisor records them, which is completion order. Each delivery is a
resolved `OperationFuture`; the stream is done once every item it waits for ended.

Items are not given a future each when they are accepted: `enqueue` stays as cheap
as it was, and only a coordinator with a stream open pays for one per ending item.

The queue of delivered futures belongs to the consumer (the iterating thread or
task); the supervisor only appends to it, and wakes an asyncio consumer through its
loop's inbox (one wake-up per burst of deliveries).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
from typing import TYPE_CHECKING, Any

from ephemeral_actors._coordinators._future import OperationFuture
from ephemeral_actors._coordinators._workers import CANCELLED, COMPLETED, RUNNING
from ephemeral_actors._deadline import deadline_after, remaining
from ephemeral_actors._mailbox import call_on_loop

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from ephemeral_actors._coordinators._supervisor import Core
    from ephemeral_actors._operation import Operation

__all__ = ["CompletionStream", "as_completed", "as_completed_async", "deliver"]

logger = logging.getLogger("ephemeral_actors")


class CompletionStream:
    """Resolved futures of the items one `as_completed` call waits for."""

    __slots__ = ("expected", "futures", "total", "watermark", "woken")

    def __init__(self, watermark: int, expected: int) -> None:
        self.watermark = watermark
        self.expected = expected  # items still to be delivered by the supervisor
        self.total = expected  # futures the consumer will get, fixed when it opens
        self.futures: queue.SimpleQueue[OperationFuture[Any]] = queue.SimpleQueue()
        self.woken: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def put(self, future: OperationFuture[Any]) -> None:
        self.futures.put(future)
        woken = self.woken
        if woken is not None:
            loop, event = woken
            call_on_loop(loop, event.set)  # dropped if the loop has closed: no consumer


def _future_of(core: Core, op: Operation) -> OperationFuture[Any]:
    future: OperationFuture[Any] = OperationFuture()
    future.operation_id = op.id
    outcome = op._outcome
    if outcome == COMPLETED:
        future.set_result(op._result if core.capture_results else None)
    elif outcome == CANCELLED:
        # Dropped, signal-cancelled or acknowledged a cancel request: a cancelled
        # future, as concurrent.futures reports one (the record keeps the reason).
        future._set_cancelled()
    else:
        future.set_exception(op._error)
    return future


def deliver(core: Core, op: Operation) -> None:
    """`op` ended: give its future to every stream waiting for it (supervisor's turn)."""
    streams = core.streams
    seq = op._seq
    for stream in streams:
        if seq <= stream.watermark:
            stream.put(_future_of(core, op))
            stream.expected -= 1
    if any(s.expected <= 0 for s in streams):
        core.streams = [s for s in streams if s.expected > 0]
        core.refresh_fast_paths()


def _on_open(core: Core, stream: CompletionStream) -> None:
    """Open a stream (supervisor's turn): what already ended now, the rest as it ends."""
    records = {op.id: op for op in core.window if op._outcome != RUNNING and op._ended is not None}
    # Failed and cancelled records outlive the window in the failure log: a stream
    # opened after a large batch still reports its failures.
    for op_id, op in core.failures.ops.items():
        records.setdefault(op_id, op)
    ended = sorted(records.values(), key=lambda op: (op._ended or 0.0, op._seq))
    for op in ended:
        stream.put(_future_of(core, op))
    # Accepted before the call, ended, and without a record any more (trimmed from the
    # window, or dropped before it started): nothing is left to yield for them, and
    # keeping every result for a stream nobody had opened yet would be unbounded. Say
    # so rather than yield fewer futures silently.
    missing = core.completed + core.failed + core.cancelled - len(ended)
    if missing > 0:
        logger.warning(
            "as_completed() on coordinator %r leaves out %d item(s) that ended before the "
            "call and whose records had left the window (max_tracked_operations=%d, "
            "max_tracked_failures=%d); open the stream before those items end, or raise "
            "those bounds",
            core.name,
            missing,
            core.window.bound,
            core.failures.bound,
        )
    stream.watermark = core.enqueued
    stream.expected = core.npending + core.running
    stream.total = len(ended) + stream.expected
    if stream.expected > 0:
        core.streams = [*core.streams, stream]
        core.refresh_fast_paths()


def _on_close(core: Core, stream: CompletionStream) -> None:
    if stream in core.streams:
        core.streams = [s for s in core.streams if s is not stream]
        core.refresh_fast_paths()


def _timed_out(core: Core, left: int, timeout: float | None) -> TimeoutError:
    return TimeoutError(
        f"as_completed() on coordinator {core.name!r}: {left} item(s) not done within {timeout} s"
    )


def as_completed(core: Core, timeout: float | None) -> Iterator[OperationFuture[Any]]:
    """Open a stream now and yield its futures in completion order."""
    stream = CompletionStream(0, 0)
    core.call(_on_open, core, stream)
    return _iterate(core, stream, deadline_after(timeout), timeout)


def _iterate(
    core: Core, stream: CompletionStream, deadline: float | None, timeout: float | None
) -> Iterator[OperationFuture[Any]]:
    total = stream.total
    try:
        for done in range(total):
            left = remaining(deadline)
            try:
                yield stream.futures.get(timeout=left)
            except queue.Empty:
                raise _timed_out(core, total - done, timeout) from None
    finally:
        core.call(_on_close, core, stream)


def as_completed_async(core: Core, timeout: float | None) -> AsyncIterator[OperationFuture[Any]]:
    """`as_completed` for `async for`: the stream opens now, waits do not block the loop."""
    stream = CompletionStream(0, 0)
    core.call(_on_open, core, stream)
    return _iterate_async(core, stream, deadline_after(timeout), timeout)


async def _iterate_async(
    core: Core,
    stream: CompletionStream,
    deadline: float | None,
    timeout: float | None,  # noqa: ASYNC109 - only named in the TimeoutError message
) -> AsyncIterator[OperationFuture[Any]]:
    event = asyncio.Event()
    # From now on the supervisor wakes this task; what it delivered before is queued.
    stream.woken = (asyncio.get_running_loop(), event)
    total = stream.total
    try:
        for done in range(total):
            while True:
                with contextlib.suppress(queue.Empty):
                    future = stream.futures.get_nowait()
                    break
                event.clear()
                if not stream.futures.empty():
                    continue
                left = remaining(deadline)
                try:
                    await asyncio.wait_for(event.wait(), left)
                except TimeoutError:
                    raise _timed_out(core, total - done, timeout) from None
            yield future
    finally:
        core.call(_on_close, core, stream)
