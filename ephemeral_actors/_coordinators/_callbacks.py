"""The callbacks actor: user callbacks run here, never in a library actor's turn.

`on_sample` and observers run on a thread of their own, started with the first
callback: a slow `on_sample` delays only the next callback and `drain()` (which
waits until every ended operation's callbacks returned), never a control call, a
read or dispatch. When it has delivered an operation, it tells the supervisor.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING

from ephemeral_actors._mailbox import Parking

if TYPE_CHECKING:
    from ephemeral_actors._coordinators._supervisor import Core
    from ephemeral_actors._operation import Operation

__all__ = ["Callbacks"]


class Callbacks:
    """Runs user callbacks (observers, `on_sample`) off the supervisor's turn.

    A thread of its own, started with the first callback: a slow `on_sample` delays
    only the next callback and `drain()`, never a control call, a read or dispatch.
    """

    def __init__(self, core: Core) -> None:
        self.core = core
        self.inbox: deque[Operation | None] = deque()
        self.parking = Parking()
        self.processed = 0
        self.stopping = False
        """True once the stop message is posted: later operations are not delivered."""
        self.thread = threading.Thread(
            target=self.run, name=f"ephemeral-actors-{core.name}-callbacks", daemon=True
        )

    def start(self) -> None:
        """Start the thread, once the supervisor has recorded this actor (`Core._new_worker`)."""
        self.thread.start()

    def post(self, op: Operation | None) -> None:
        if op is None:
            self.stopping = True
        self.inbox.append(op)
        self.parking.wake()

    def run(self) -> None:
        inbox = self.inbox
        core = self.core
        while True:
            if not inbox:
                self.parking.wait_for(inbox)
            # Everything that ended meanwhile, as one batch: `on_sample` is still called
            # once per operation, but the batch shares one snapshot of the window (taken
            # after all of them ended) instead of asking the supervisor for one each.
            batch: list[Operation] = []
            stop = False
            while inbox:
                op = inbox.popleft()
                if op is None:
                    stop = True
                    break
                batch.append(op)
            if batch:
                core.deliver_callbacks(batch)
                self.processed += len(batch)
                core.mailbox.post((core._on_settled, len(batch)))
            if stop:
                return
