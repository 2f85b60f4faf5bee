"""The spawner actor: it starts worker threads so that the supervisor's turn need not.

`threading.Thread.start` returns only once the new thread has run: about 90 µs here,
most of it waiting for the scheduler. Started in the supervisor's turn, each new
worker held the turn (and whoever ran it, often the caller of `enqueue`) for that
long, so a coordinator of 64 workers took some 6 ms to reach its concurrency while
the caller stood still and every report that came meanwhile found the turn taken
and parked its worker.

The supervisor starts its first worker itself (an idle coordinator's first item
waits for one thread start, not two) and this actor, on a thread of its own, every
later one: the turn only records the worker, posts its item and posts the worker
here. The threads still come up one after another (each start needs the GIL), but
no turn waits for them.

Only the supervisor posts here, in its turn. A worker whose thread cannot be started
(the process is out of threads), here or in the turn, is reported to the supervisor as
dead, which fails its item and counts a restart, as for any worker that dies.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING

from ephemeral_actors._errors import WorkerCrashError
from ephemeral_actors._mailbox import Parking

if TYPE_CHECKING:
    from ephemeral_actors._coordinators._supervisor import Core
    from ephemeral_actors._coordinators._workers import ThreadWorker

__all__ = ["Spawner", "start_worker"]


def start_worker(core: Core, worker: ThreadWorker) -> None:
    """Start `worker`'s thread; if it cannot start, tell the supervisor it died.

    In the supervisor's turn (its first worker) or on the spawner's thread: either
    way a message, handled after the turn that gave the worker its item.
    """
    try:
        worker.start()
    except Exception as exc:
        error = WorkerCrashError(f"could not start the worker's thread: {exc!r}")
        core.mailbox.post((core._on_worker_died, (worker, error)))


class Spawner:
    """Starts worker threads off the supervisor's turn; made with the second worker."""

    __slots__ = ("core", "inbox", "parking", "thread")

    def __init__(self, core: Core) -> None:
        self.core = core
        self.inbox: deque[ThreadWorker | None] = deque()
        self.parking = Parking()
        self.thread = threading.Thread(
            target=self.run, name=f"ephemeral-actors-{core.name}-spawner", daemon=True
        )

    def start(self) -> None:
        """Start the thread, once the supervisor has recorded this actor."""
        self.thread.start()

    def post(self, worker: ThreadWorker | None) -> None:
        """Queue `worker` to be started; None: stop once everything queued is started."""
        self.inbox.append(worker)
        parking = self.parking
        if parking.parked:
            parking.wake()

    def run(self) -> None:
        inbox = self.inbox
        wait_for = self.parking.wait_for
        while True:
            if not inbox:
                wait_for(inbox)
            worker = inbox.popleft()
            if worker is None:
                return
            try:
                start_worker(self.core, worker)
            except ReferenceError:
                return  # a start that failed after its coordinator was closed and freed

    def join(self, timeout: float | None) -> bool:
        """Wait for the thread; True if it is gone (or never started)."""
        thread = self.thread
        if thread.ident is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()
