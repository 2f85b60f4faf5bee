"""An event loop's inbox: callbacks from other threads, one wake-up per burst.

Settling an asyncio future from a worker thread needs the future's own loop, and
`call_soon_threadsafe` wakes that loop with a write to its self-pipe: a system call
in the poster, a `read` and an extra pass of the loop's `select` on the other side,
and a thread switch, for every future. When results come faster than the loop runs
(a `gather` over thousands of `submit_async` calls), those wake-ups were most of the
cost of an item: four context switches per item, against a tenth of one here.

So each loop has an inbox (a deque), and posting to it wakes the loop only on the
empty→non-empty edge, as the actors' mailboxes wake their threads: the first post of
a burst schedules one `drain` with `call_soon_threadsafe`; later posts only append,
until the loop runs the drain, which takes everything posted so far. Callbacks keep
the order in which they were posted, and a callback posted before a plain
`call_soon_threadsafe` of the same thread still runs before it: a drain is already
scheduled ahead of it, or the poster schedules one, in that order.

Who owns what: posters only append and set `scheduled`; only the loop's thread pops.
A race between two posters can schedule two drains; the second finds little or
nothing to do, which is harmless. A loop that has closed refuses the drain: its
callers are gone, so what was posted is dropped.
"""

from __future__ import annotations

import collections
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

__all__ = ["post_to_loop"]


class LoopInbox:
    """The callbacks posted to one event loop from other threads, not yet run.

    It holds no reference to its loop (the registry is keyed weakly by the loop, and a
    value that referred to its key would keep it alive for ever).
    """

    __slots__ = ("mail", "scheduled")

    def __init__(self) -> None:
        self.mail: collections.deque[tuple[Callable[..., object], tuple[Any, ...]]] = (
            collections.deque()
        )
        self.scheduled = False

    def post(
        self,
        loop: asyncio.AbstractEventLoop,
        callback: Callable[..., object],
        args: tuple[Any, ...],
    ) -> None:
        self.mail.append((callback, args))
        if self.scheduled:
            if not loop.is_closed():
                return  # a drain is due: it takes this one too
            # Closed with a drain pending, which will never run: nobody awaits what was
            # posted, and holding it would keep the loop alive.
            self.scheduled = False
            self.mail.clear()
            return
        self.scheduled = True
        try:
            loop.call_soon_threadsafe(self.drain, loop)
        except RuntimeError:
            # The loop has closed: nobody will run these, and nobody awaits them.
            self.scheduled = False
            self.mail.clear()

    def drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run what was posted (on the loop's thread), a burst at a time."""
        # Cleared first: a post from now on schedules another drain, so nothing posted
        # after the count below waits for a wake-up that never comes.
        self.scheduled = False
        mail = self.mail
        # At most what is here now: posters that keep posting must not hold the loop
        # in one callback; the rest is in the next drain, which their posts scheduled.
        for _ in range(len(mail)):
            callback, args = mail.popleft()
            try:
                callback(*args)
            except (SystemExit, KeyboardInterrupt):
                if mail and not self.scheduled:
                    self.scheduled = True
                    loop.call_soon(self.drain, loop)
                raise
            except BaseException as exc:
                # As asyncio's own handles report a callback's error; the rest still run.
                loop.call_exception_handler(
                    {"message": f"exception in callback {callback!r}", "exception": exc}
                )


_inboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopInbox] = (
    weakref.WeakKeyDictionary()
)


def post_to_loop(
    loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: Any
) -> None:
    """Run `callback(*args)` on `loop` soon, from any thread; dropped if it has closed."""
    try:
        inbox = _inboxes.get(loop)
        if inbox is None:
            inbox = _inboxes.setdefault(loop, LoopInbox())
    except TypeError:  # a loop that cannot be weakly referenced: one wake-up per call
        try:  # noqa: SIM105 - a hot path; contextlib.suppress costs an object and two calls
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            pass
        return
    inbox.post(loop, callback, args)
