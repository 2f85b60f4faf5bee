"""`wait_idle()`: wait until nothing is pending or active, intake open (SPEC section 15).

Like `queue.Queue.join()`: a crawler whose bodies enqueue the links they find cannot
`complete()` and `drain()` (intake must stay open for the bodies), but it can wait
until the work, and the work it made, has run out. The wait is a `Wait` request
answered in the supervisor's turn (`Core._check_waiters`) once no item is pending,
none runs and every ended one has been through the callbacks, or once the
coordinator faulted.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ephemeral_actors._coordinators._requests import Wait

if TYPE_CHECKING:
    from ephemeral_actors._coordinators._supervisor import Core

__all__ = ["wait_idle", "wait_idle_async"]


def _waiter(core: Core) -> Wait:
    def idle() -> bool:  # evaluated in the supervisor's turn
        return core.unsettled == 0 or core.fault_error is not None

    return Wait(0, idle, settled=True)


def _timed_out(core: Core, timeout: float | None) -> TimeoutError:
    return TimeoutError(
        f"coordinator {core.name!r} was not idle within {timeout} s "
        f"({core.npending} pending, {core.running} active)"
    )


def _raise_fault(core: Core) -> None:
    if core.fault_error is not None:
        raise core.faulted()


def wait_idle(core: Core, timeout: float | None) -> None:
    """Block until `core` is idle; TimeoutError after `timeout` seconds."""
    core._check_self_wait("wait_idle()")
    waiter = _waiter(core)
    core.mailbox.post((core._on_wait, waiter))
    if not waiter.wait(timeout):
        core.call(core._on_forget_wait, waiter)
        if not waiter.done:
            raise _timed_out(core, timeout)
    _raise_fault(core)


async def wait_idle_async(core: Core, timeout: float | None) -> None:  # noqa: ASYNC109
    """`wait_idle` for asyncio: waits without blocking the event loop."""
    core._check_self_wait("wait_idle_async()", blocking=False)
    waiter = _waiter(core)
    core.mailbox.post((core._on_wait, waiter))
    try:
        await asyncio.wait_for(waiter.wait_async(), timeout)
    except BaseException as exc:
        core.call(core._on_forget_wait, waiter)
        if not waiter.done:
            if isinstance(exc, TimeoutError):
                raise _timed_out(core, timeout) from None
            raise
    _raise_fault(core)
