"""Your event loop: coroutine bodies on the loop the coordinator was made in (SPEC 15).

A coordinator with a coroutine body that is built, or entered with `async with`,
while an event loop runs in that thread binds to that loop: its workers are tasks
there, so objects bound to the loop (an `asyncio.Queue`, an `httpx.AsyncClient`)
work in bodies, as they do in a `TaskGroup`. Built outside a running loop, it uses
the library's shared loop (`ephemeral_actors._runtime.SHARED_LOOP`).

The binding is written in the supervisor's turn (or before the core is built) and
read in it: a worker is started on whatever loop is bound when it gets mail.
Waking a worker from another thread goes through `call_soon_threadsafe`; on the
loop's own thread it is a plain `create_task`.

The loop may close while work remains (`asyncio.run` returning with items still
queued). `asyncio.run` cancels every task it leaves: a worker whose own task is
cancelled reports it, and the supervisor cancels the coordinator (the backlog is
dropped and counted, intake closes). A loop closed without cancelling its tasks
is found when a worker can no longer be started on it; the result is the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
from typing import TYPE_CHECKING, Any

from ephemeral_actors._coordinators._workers import CANCELLED, RUNNING
from ephemeral_actors._errors import OperationCancelledError

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator

    from ephemeral_actors._coordinators._supervisor import Core
    from ephemeral_actors._coordinators._workers import AsyncWorker

__all__ = ["LoopBinding", "bind_running_loop", "loop_lost", "rebind", "shared_loop_only"]

logger = logging.getLogger("ephemeral_actors")

_BIND: contextvars.ContextVar[bool] = contextvars.ContextVar("ephemeral_actors_bind", default=True)


@contextlib.contextmanager
def shared_loop_only() -> Iterator[None]:
    """Build coordinators on the shared loop even inside a running loop.

    For blocking calls such as `for_each`, which wait on the loop's thread: bodies
    bound to that loop could never run while it waits.
    """
    token = _BIND.set(False)
    try:
        yield
    finally:
        _BIND.reset(token)


class LoopBinding:
    """The caller's event loop a coordinator's coroutine bodies run on."""

    __slots__ = ("loop", "tasks", "thread_id")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.thread_id = threading.get_ident()  # the loop runs in the binding thread
        # asyncio keeps only weak references to tasks: these keep running workers alive.
        self.tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<LoopBinding {self.loop!r} tasks={len(self.tasks)}>"

    def spawn(self, run: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Start `run()` as a task on the loop; False if the loop is closed."""
        loop = self.loop
        if loop.is_closed():
            return False
        if threading.get_ident() == self.thread_id:
            self._start(run)
            return True
        try:
            loop.call_soon_threadsafe(self._start, run)
        except RuntimeError:  # closed between the check and the call
            return False
        return True

    def _start(self, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = self.loop.create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


def bind_running_loop() -> LoopBinding | None:
    """A binding to the loop running in this thread, or None outside a running loop."""
    if not _BIND.get():
        return None
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return LoopBinding(loop)


def rebind(core: Core) -> None:
    """`async with` entry: bind `core` to the running loop unless it is bound already."""
    if not core.is_async or core.loop is not None:
        return
    binding = bind_running_loop()
    if binding is not None:
        core.call(_on_rebind, core, binding)


def _on_rebind(core: Core, binding: LoopBinding) -> None:
    # Workers already running on the shared loop finish their item there; each one
    # starts on the new loop the next time it gets mail. The shared loop reference is
    # kept until close(): its tasks may still be returning.
    if core.loop is None:
        core.loop = binding


def loop_lost(core: Core, worker: AsyncWorker) -> None:
    """`worker`'s loop closed or is closing (supervisor's turn): cancel what is left.

    The worker is retired (nothing more is posted to it); items in its mailbox end
    cancelled; the coordinator is cancelled, which drops and counts its backlog and
    asks the other running operations to cancel (their tasks are being cancelled
    by the closing loop too).
    """
    if not worker.retired:
        worker.retired = True
        core.retired_processed += worker.processed
        if worker in core.workers:
            core.workers.remove(worker)
        if worker in core.idle:
            core.idle.remove(worker)
    for entry in list(worker.inbox):
        if entry is not None and entry[0]._outcome == RUNNING:
            core._finish(entry[0], CANCELLED, _loop_closed_error())
    worker.inbox.clear()
    if worker.current is not None and worker.current._outcome != RUNNING:
        worker.current = None
    if core.processing:
        logger.warning(
            "coordinator %r: the event loop its bodies run on closed with %d pending and "
            "%d active; cancelling them",
            core.name,
            core.npending,
            core.running,
            extra={
                "coordinator": core.name,
                "operation_id": None,
                "key": None,
                "error_type": None,
                "event": "loop.closed",
            },
        )
        core._on_cancel(None)


def _loop_closed_error() -> OperationCancelledError:
    return OperationCancelledError("the event loop running this operation closed")
