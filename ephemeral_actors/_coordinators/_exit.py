"""Nothing lost at exit (SPEC section 15).

A script that enqueues work and never closes its coordinator must not exit with
that work silently dropped. Like `concurrent.futures.thread`, an exit hook runs in
`threading._shutdown()` (through `threading._register_atexit`), before the
interpreter joins its threads and before `atexit` handlers: the worker threads
(daemons) and the shared event loop still run, so accepted work can finish.

Each core that was never closed gets at most `exit_timeout` seconds (all counted from
the start of the hook, so the exit waits for the longest one, not their sum). What
is unfinished then is cancelled and counted in `total_cancelled`: the backlog is
dropped, and running operations are recorded as cancelled (their bodies are asked
to cancel; a body that never returns is abandoned with its daemon thread). One
WARNING per such coordinator names it with its pending/active counts. The hook
never raises, so the exit status is the program's.

The registry holds cores weakly, not facades: a facade may be garbage-collected
while its actors (which hold the core) still run, and those cores are finished
here too; a core nothing holds any more has no work left to lose.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING

from ephemeral_actors._coordinators._requests import Wait
from ephemeral_actors._coordinators._workers import CANCELLED, RUNNING
from ephemeral_actors._deadline import remaining
from ephemeral_actors._errors import OperationCancelledError

if TYPE_CHECKING:
    from ephemeral_actors._coordinators._supervisor import Core

__all__ = ["finish_at_exit", "forget_at_exit", "track_until_exit"]

logger = logging.getLogger("ephemeral_actors")

_LIVE: weakref.WeakSet[Core] = weakref.WeakSet()
_hook_lock = threading.Lock()
_hooked = False


def track_until_exit(core: Core) -> None:
    """Remember `core` (weakly) until it is closed; install the exit hook once."""
    global _hooked  # noqa: PLW0603 - one hook per process
    _LIVE.add(core)
    if _hooked:
        return
    with _hook_lock:
        if not _hooked:
            # Private, but it is what concurrent.futures.thread uses for the same job: a
            # plain atexit handler would run after the threads were joined. RuntimeError:
            # already shutting down, nothing can be waited for any more.
            with contextlib.suppress(RuntimeError):
                threading._register_atexit(_at_exit)  # type: ignore[attr-defined]
            _hooked = True


def _forget_all_in_child() -> None:
    # A forked child (a ProcessPoolExecutor worker, say) inherits the parent's cores but
    # none of their threads: their work is the parent's to finish. Without this, the
    # child's own exit (multiprocessing runs threading._shutdown) would wait
    # exit_timeout for work that can never run there.
    _LIVE.clear()


os.register_at_fork(after_in_child=_forget_all_in_child)


def forget_at_exit(core: Core) -> None:
    """`core` was closed: the exit hook has nothing to do for it."""
    _LIVE.discard(core)


def _at_exit() -> None:
    start = time.monotonic()
    for core in list(_LIVE):
        try:
            finish_at_exit(core, start + core.options.exit_timeout)
        except BaseException:  # the exit status stays the program's
            logger.exception(f"coordinator {core.name!r}: finishing its work at exit failed")


def _is_idle(core: Core) -> bool:
    return core.npending == 0 and core.running == 0


def finish_at_exit(core: Core, deadline: float) -> bool:
    """Let `core` finish its accepted work until `deadline`; cancel the rest.

    Returns:
        True if nothing had to be cancelled.
    """
    if core.closing or core.closed_event.is_set():
        return True
    if core.call(_is_idle, core):  # an ask: both counters at one instant
        return True
    waiter = Wait(0, lambda: _is_idle(core))
    core.mailbox.post((core._on_wait, waiter))
    if waiter.wait(remaining(deadline)):
        return True
    core.call(core._on_forget_wait, waiter)
    if waiter.done:
        return True
    pending, active = core.call(_on_cancel_at_exit, core)
    if pending + active:
        logger.warning(
            "coordinator %r: %d pending and %d active operation(s) did not finish within "
            "exit_timeout=%s s at interpreter exit; cancelled them (close() the coordinator "
            "to decide yourself)",
            core.name,
            pending,
            active,
            core.options.exit_timeout,
            extra={
                "coordinator": core.name,
                "operation_id": None,
                "key": None,
                "error_type": None,
                "event": "coordinator.exit_cancelled",
            },
        )
    return False


def _on_cancel_at_exit(core: Core) -> tuple[int, int]:
    """Cancel the backlog and record running operations as cancelled (supervisor's turn)."""
    pending, active = core.npending, core.running
    core._on_cancel(None)
    error = OperationCancelledError("cancelled at interpreter exit (exit_timeout elapsed)")
    for worker in list(core.workers):
        ops = [worker.current, *(e[0] for e in getattr(worker, "inbox", ()) if e is not None)]
        for op in ops:
            if op is not None and op._outcome == RUNNING:
                # The body may never return; the process will not wait for it.
                core._finish(op, CANCELLED, error)
        worker.current = None
    return pending, active
