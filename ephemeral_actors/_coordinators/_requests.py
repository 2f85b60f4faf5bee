"""Requests: messages to the supervisor whose sender waits for the answer.

A request is a `Reply` (see `ephemeral_actors._mailbox`) carrying its arguments. The
supervisor answers it in its turn; the answer is released at the end of that turn,
after every write of the turn, so the sender reads state that includes its call.
Every wait with a deadline in the library goes through `Reply.wait`, and counts it down
with `ephemeral_actors._deadline`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

from ephemeral_actors._mailbox import Reply, call_on_loop

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = [
    "BLOCK",
    "FORCE",
    "PROBE",
    "TRY",
    "TRY_OWN",
    "Call",
    "Draw",
    "Intake",
    "Scheduled",
    "Wait",
    "resolve",
]

BLOCK: Final = 0
"""Wait for backlog space (up to a timeout)."""
FORCE: Final = 1
"""Accept past the backlog bound: actor messages and bodies of the same coordinator."""
TRY: Final = 2
"""Answer None instead of waiting or raising; fair scheduling applies."""
TRY_OWN: Final = 3
"""`TRY` from a body of the same coordinator: never refused for space (SPEC 15)."""
PROBE: Final = 4
"""Accept in a turn the caller begins at once, or answer None with no message sent:
the fast path of the async intake, whose general path awaits instead of blocking."""


class Intake(Reply):
    """One `enqueue`/`try_enqueue`/`submit`: the item travels to the supervisor in it."""

    __slots__ = ("future", "item", "key", "label", "mode", "own", "raw_key", "reason")

    def __init__(self, item: Any, future: Any, mode: int) -> None:
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None
        self.waiter: Any = None
        self.item = item
        self.future = future
        self.mode = mode
        self.own = False
        """Sent by a running body of the same coordinator: accepted while it completes."""
        self.key: str | None = None
        self.raw_key: Any = None
        self.label: str | None = None
        self.reason: Any = None  # the Admission of a refused TRY, set in the turn

    def release(self) -> None:
        """A `submit_async` request is its own waiter (`Reply._finish` calls this).

        Accepted, it wakes nobody: its task awaits the outcome, in `future` (an asyncio
        future). Refused (intake closed), the refusal settles that future.
        """
        error = self.error
        if error is not None:
            resolve(self.future, False, error)


class Draw(Reply):
    """An in-memory collection whose items the supervisor draws into the backlog itself.

    `enqueue_many` of a list (or range, dict, ...) sends one of these instead of an
    intake per item: the supervisor accepts as many items as the backlog has room for
    in the turn it arrives, and the rest in later turns as space frees, taking each
    from `items` in the turn that accepts it. Its sender waits once, for the count
    accepted when `items` is exhausted or intake closed. A `source` draw (`for_each`,
    `from_iterable`) has no sender waiting: its end completes intake instead. A `keyed`
    draw's items are `(item, key, raw_key)` triples whose keys the sender computed (the
    key selector is user code, which runs outside the turn), and `then` the selector's
    error that stopped the sender, raised once the items before it are drawn.
    """

    __slots__ = ("accepted", "items", "keyed", "mode", "own", "source", "then")

    def __init__(
        self,
        items: Iterator[Any],
        mode: int,
        *,
        source: bool = False,
        own: bool = False,
        keyed: bool = False,
        then: Exception | None = None,
    ) -> None:
        super().__init__()
        self.items: Iterator[Any] | None = items
        self.mode = mode
        self.source = source
        self.own = own  # as `Intake.own`
        self.keyed = keyed
        self.then = then
        """Raised once `items` is exhausted: the error that cut them short when the
        sender prepared them (a key selector's)."""
        self.accepted = 0


class Scheduled(Intake):
    """An intake whose item has a priority or a delay (SPEC 16); plain items use `Intake`."""

    __slots__ = ("delay", "priority")

    def __init__(
        self, item: Any, future: Any, mode: int, priority: int, delay: float | None
    ) -> None:
        super().__init__(item, future, mode)
        self.priority = priority
        self.delay = delay


class Call(Reply):
    """A control call or state query: `fn(*args)` in the supervisor's turn."""

    __slots__ = ("args", "fn")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        super().__init__()
        self.fn = fn
        self.args = args


class Wait(Reply):
    """Wait until drained (`idle` = -1), until at most `idle` run, or until `until()`.

    `settled`: the wait cannot end while an accepted operation is unsettled, unless the
    coordinator faulted (`drain`, `wait_idle`). The supervisor then skips checking it
    in the turns of a busy coordinator.
    """

    __slots__ = ("idle", "settled", "until")

    def __init__(
        self, idle: int, until: Callable[[], bool] | None = None, *, settled: bool = False
    ) -> None:
        super().__init__()
        self.idle = idle
        self.until = until
        self.settled = settled


def _set_future(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


def resolve(reply: Any, ok: bool, value: Any) -> None:
    """Settle a submit future (a Pykka future, or an asyncio future) from any thread."""
    if isinstance(reply, asyncio.Future):
        call_on_loop(reply.get_loop(), _set_future, reply, ok, value)
    elif ok:
        reply.set(value)
    else:
        reply.set_exception((type(value), value, value.__traceback__))
