"""A coordinator's signal wiring: emission, cancel/defer/resume, async handlers, the bus.

Signals reach a coordinator by *push*, never by polling a window per item:

* its own bodies' signals, when it has no shared bus, are observed as they are
  emitted;
* with a shared bus, the coordinator subscribes with its cancel/defer/resume
  patterns (replaying what the bus already holds) and the bus actor calls it for
  every matching event before `emit()` returns.

An observed event leaves a *mark*. A cancel mark makes dispatch cancel the items it
reaches; a defer mark holds dispatch (like a pause) and arms a re-check timer. A
mark counts while its signal is present in either window (SPEC 10.4): an
operation's signal while that operation is in this coordinator's window and has not
retracted it, a bus event while the bus holds it. An operation's own signal on a
shared bus counts in both ways, so the bus evicting its copy does not withdraw it
while the operation is still in the window. The dispatch path only tests whether
the mark lists are empty. Marks that are no longer present are dropped whenever a
list has doubled since it was last pruned, so an idle coordinator keeps marks in
proportion to the signals present, not to the signals ever emitted.

A defer signal carrying `defer_for` (SPEC 16) leaves a *timed* mark: it defers until
its emit time + `defer_for` whatever `max_defer_attempts` says, and only a resume
signal ends it sooner; after that it no longer defers. While only timed marks hold
the deferral, the re-check timer is armed at the earliest end, not every
`defer_check_interval`: nothing polls.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from typing import TYPE_CHECKING

from ephemeral_actors._dispatch import DISPATCHER, Timer, call_later
from ephemeral_actors._operation import _current
from ephemeral_actors._owned import checked_writes
from ephemeral_actors._runtime import SHARED_LOOP
from ephemeral_actors._signals import SignalConstraints, SignalEvent, compile_patterns
from ephemeral_actors._signals._event import check_signal_name

if TYPE_CHECKING:
    import threading

    from ephemeral_actors._coordinators._supervisor import Core
    from ephemeral_actors._operation import Operation
    from ephemeral_actors._options import CoordinatorOptions
    from ephemeral_actors._signals import SignalBus, SignalPropagation, Subscription

__all__ = ["SignalRouter"]

logger = logging.getLogger("ephemeral_actors")

_PRUNE_FLOOR = 32
"""A mark list is pruned once it is longer than this, or twice its last pruned length."""

_handling: contextvars.ContextVar[SignalRouter | None] = contextvars.ContextVar(
    "ephemeral_actors_signal_handler", default=None
)
"""The router (so the coordinator) whose `on_signal_async` handler runs in this context
(self-waits). The router, not its core: once closed, the router holds its core weakly."""


@dataclass(slots=True)
class _Mark:
    """An observed cancel or defer signal, present until both its sources let go of it.

    `op` is the operation of this coordinator that emitted it (None for other
    emitters), `bus` the shared bus it was seen on (None without one).
    """

    event: SignalEvent
    op: Operation | None
    expires: float
    bus: SignalBus | None = None
    until: float | None = None
    """Timed defer marks: the `time.monotonic()` at which the deferral ends."""

    def present(self, now: float) -> bool:
        if self.until is not None:
            # Only time (or a resume signal, which drops the mark) ends a timed deferral.
            return now < self.until
        op = self.op
        if op is not None and op._in_window:
            signals = op._signals
            if signals is not None and any(e is self.event for e in signals):
                return True
        # A bus event counts while the bus still holds it: clearing or evicting it from
        # the bus window withdraws it here too (unless its operation still holds it).
        bus = self.bus
        return bus is not None and now <= self.expires and bus.holds(self.event)


@checked_writes(attrgetter("core"), "_observe", "cancelling_signal", "_on_recheck", "_end_deferral")
class SignalRouter:
    """Signal state of one coordinator, owned by its supervisor: `_on_*` run in its turn."""

    # Fields that start out the same in every router are class-level until first set:
    # every coordinator builds a router, and most never see a signal.
    cancel_prune_at = _PRUNE_FLOOR
    defer_prune_at = _PRUNE_FLOOR
    resumed_at: datetime | None = None
    defer_timer: Timer | None = None
    defer_attempts = 0
    uses_dispatcher = False
    subscription: Subscription | None = None
    async_running = 0
    async_closed = False

    def __init__(self, core: Core, options: CoordinatorOptions) -> None:
        self.core = core
        cancel = options.cancel_on_signals
        defer = options.defer_on_signals
        resume = options.resume_on_signals
        drain = options.drain_on_signals
        clear = options.clear_on_signals
        # Most coordinators route no signal: None needs no compiling (nor a call each).
        self.cancel = None if cancel is None else compile_patterns(cancel)
        self.defer = (
            None if defer is None or options.max_defer_attempts == 0 else compile_patterns(defer)
        )
        self.resume = None if resume is None else compile_patterns(resume)
        self.drain = None if drain is None else compile_patterns(drain)
        self.clear = None if clear is None else compile_patterns(clear)
        self.clear_patterns = clear or ()
        self.constraints = options.signal_constraints or SignalConstraints.DEFAULT
        self.on_signal = options.on_signal
        self.on_signal_async = options.on_signal_async
        self.bus = options.signals
        self.max_attempts = options.max_defer_attempts
        self.interval = options.defer_check_interval
        self.cancel_marks: list[_Mark] = []
        self.defer_marks: list[_Mark] = []
        # on_signal_async: a bounded queue drained on the shared loop.
        self.async_limit = options.max_concurrent_signal_handlers
        self.async_bound = options.max_queued_signals
        self.async_queue: collections.deque[SignalEvent] = collections.deque()

    @property
    def routes(self) -> bool:
        """True if any cancel/defer/resume/drain pattern is configured."""
        return (
            self.cancel is not None
            or self.defer is not None
            or self.resume is not None
            or self.drain is not None
        )

    def start(self) -> None:
        """Subscribe to the shared bus (after the core is fully built)."""
        bus = self.bus
        if bus is None or not self.routes:
            return
        options = self.core.options
        patterns = [
            *(options.cancel_on_signals or ()),
            *((options.defer_on_signals or ()) if self.defer is not None else ()),
            *(options.resume_on_signals or ()),
            *(options.drain_on_signals or ()),
        ]
        # Subscribed from the constructing thread (the bus replays into `observe_bus`,
        # which asks the supervisor), kept in the supervisor's turn: its owner's.
        subscription = bus.subscribe(patterns, self.observe_bus, replay=True)
        self.core.call(self._on_subscribed, subscription)

    def _on_subscribed(self, subscription: Subscription) -> None:
        self.subscription = subscription

    # -- emission -------------------------------------------------------------------------

    def emit(
        self,
        op: Operation,
        name: str,
        cause: SignalPropagation | SignalEvent | None,
        defer_for: float | None = None,
    ) -> bool:
        """Record `name` on `op`, route it, and hand it to callbacks and the bus."""
        check_signal_name("name", name)
        constraints = self.constraints
        now = datetime.now(UTC)
        if cause is not None:
            reason = constraints.should_block(name, cause)
            if reason is not None:
                constraints.notify_blocked(SignalEvent(name, op.id, op.key, now), reason)
                return False
        event = SignalEvent(
            name, op.id, op.key, now, constraints.propagation_for(name, cause), defer_for
        )
        core = self.core
        # The running operation's signals belong to its body; the tuple is replaced
        # whole so the supervisor (snapshots, marks) always reads a consistent one.
        op._signals = (*op._signals, event) if op._signals else (event,)
        op._snapshot = None
        core.call(self._on_emitted, event, op)
        if self.on_signal is not None:
            try:
                self.on_signal(event)
            except BaseException:
                logger.exception(f"on_signal of coordinator {core.name!r} raised")
        if self.on_signal_async is not None:
            self._queue_async(event)
        if self.bus is not None:
            try:
                self.bus.publish(event)
            except RuntimeError:
                logger.warning(
                    f"coordinator {core.name!r}: signal {name!r} not published, bus closed"
                )
            else:
                if self.clear is not None and self.clear(name):
                    # clear_on_signals (.NET v1.x): this operation's signal clears the bus
                    # events matching the same patterns, itself included. In the emitting
                    # thread: the bus is another actor, never called from our turn.
                    for pattern in self.clear_patterns:
                        with contextlib.suppress(RuntimeError):  # closed meanwhile
                            self.bus.clear_pattern(pattern)
        return True

    # -- routing (in the supervisor's turn) ---------------------------------------------------

    def _on_emitted(self, event: SignalEvent, op: Operation) -> None:
        self.core.signals_emitted += 1
        if self.bus is None and self.routes:
            self._observe(event, op)

    def observe_bus(self, event: SignalEvent) -> None:
        """Bus subscription callback: a message to the supervisor, answered before emit returns."""
        self.core.call(self._on_bus_event, event)

    def _on_bus_event(self, event: SignalEvent) -> None:
        if not self.async_closed:  # a late delivery after close() is ignored
            self._observe(event, None)

    def _observe(self, event: SignalEvent, op: Operation | None) -> None:
        signal = event.signal
        bus = self.bus
        expires = time.monotonic() + (bus.max_age if bus is not None and op is None else 0.0)
        core = self.core
        source = bus if op is None else None
        if op is None and event.operation_id is not None:
            # One of our operations' signals, seen on the shared bus: it also counts
            # while that operation holds it in our window (SPEC 10.4, issue 13 #16).
            own = core.window.get(event.operation_id)
            if own is not None and own._signals and any(e is event for e in own._signals):
                op = own
        if self.drain is not None and self.drain(signal):
            core._on_complete(None)  # drain_on_signals: intake closes, the backlog runs
        if self.cancel is not None and self.cancel(signal):
            self.cancel_marks.append(_Mark(event, op, expires, source))
            if len(self.cancel_marks) > self.cancel_prune_at:
                self.cancel_marks = self._present(self.cancel_marks)
                self.cancel_prune_at = max(_PRUNE_FLOOR, 2 * len(self.cancel_marks))
            core.refresh_fast_paths()
            core.request_cancel_running()
            core._dispatch()  # idle workers cancel the backlog as it reaches dispatch
        if self.resume is not None and self.resume(signal):
            self.resumed_at = event.timestamp
            self.defer_marks = [m for m in self.defer_marks if m.event.timestamp > event.timestamp]
            if not self.defer_marks:
                self._end_deferral()
        newer = self.resumed_at is None or event.timestamp > self.resumed_at
        if self.defer is not None and self.defer(signal) and newer:
            until = self._defer_until(event, bus if op is None else None)
            if until is not None and until <= time.monotonic():
                return  # a timed deferral that is already over (a replayed bus event)
            self.defer_marks.append(_Mark(event, op, expires, source, until))
            if len(self.defer_marks) > self.defer_prune_at:
                # An empty list does not end the deferral here: the re-check does.
                self.defer_marks = self._present(self.defer_marks)
                self.defer_prune_at = max(_PRUNE_FLOOR, 2 * len(self.defer_marks))
            if not core.deferring:
                core.deferring = True
                core.refresh_fast_paths()
                self.defer_attempts = 0
                self._arm(self.interval if until is None else until - time.monotonic())
            elif until is None:
                # An untimed mark needs its re-checks (max_defer_attempts) on time.
                timer = self.defer_timer
                if timer is None or timer.deadline > time.monotonic() + self.interval:
                    self._arm(self.interval)

    @staticmethod
    def _defer_until(event: SignalEvent, bus: SignalBus | None) -> float | None:
        """When a timed defer mark for `event` ends (monotonic), or None if untimed."""
        defer_for = event.defer_for
        if defer_for is None:
            return None
        # Until its *emit* time + defer_for. An operation's signal is observed as it is
        # emitted; a bus event replayed at subscription may be older: the bus, which
        # received it, says how much of its time is gone.
        elapsed = 0.0 if bus is None else bus._elapsed(event)
        return time.monotonic() + defer_for - elapsed

    @staticmethod
    def _present(marks: list[_Mark]) -> list[_Mark]:
        now = time.monotonic()
        return [m for m in marks if m.present(now)]

    def cancelling_signal(self) -> str | None:
        """The name of a present cancel signal, forgetting marks that are gone."""
        marks = self._present(self.cancel_marks)
        self.cancel_marks = marks
        if not marks:
            self.core.refresh_fast_paths()
        return marks[-1].event.signal if marks else None

    def _arm(self, delay: float) -> None:
        if self.defer_timer is not None:
            self.defer_timer.cancel()
            self.defer_timer = None
        if self.core.closing:
            return
        self.defer_timer = call_later(self, max(0.0, delay), self._recheck_due)

    def _recheck_due(self) -> None:
        """Timer callback (a dispatcher thread): timers are messages to the owner."""
        self.core.mailbox.post((self._on_recheck, None))

    def _on_recheck(self, _: object) -> None:
        """Is the deferral still warranted?"""
        core = self.core
        self.defer_timer = None
        if not core.deferring:
            return
        now = time.monotonic()
        marks = [m for m in self.defer_marks if m.present(now)]
        self.defer_prune_at = max(_PRUNE_FLOOR, 2 * len(marks))
        self.defer_attempts += 1
        untimed = any(m.until is None for m in marks)
        if untimed and self.defer_attempts >= self.max_attempts:
            # Out of attempts the work runs anyway; only a newer defer signal defers again.
            # Timed marks are not counted in attempts: they hold until their end.
            self.resumed_at = datetime.now(UTC)
            marks = [m for m in marks if m.until is not None]
            untimed = False
        self.defer_marks = marks
        if not marks:
            self._end_deferral()
        elif untimed:
            self._arm(self.interval)
        else:
            self._arm(min(m.until for m in marks if m.until is not None) - now)

    def _end_deferral(self) -> None:
        core = self.core
        if self.defer_timer is not None:
            self.defer_timer.cancel()
            self.defer_timer = None
        if core.deferring:
            core.deferring = False
            core.refresh_fast_paths()
            core._dispatch()

    # -- on_signal_async --------------------------------------------------------------------

    def _queue_async(self, event: SignalEvent) -> None:
        self.core.mailbox.post((self._on_queue_async, event))

    def _on_queue_async(self, event: SignalEvent) -> None:
        core = self.core
        if self.async_closed or len(self.async_queue) >= self.async_bound:
            core.signals_dropped += 1
            return
        self.async_queue.append(event)
        if self.async_running >= self.async_limit:
            return
        self.async_running += 1
        core.hold_shared_loop()
        SHARED_LOOP.spawn(self._drain_async())

    def _on_next_async(self, _: object) -> SignalEvent | None:
        if not self.async_queue or self.async_closed:
            self.async_running -= 1
            return None
        return self.async_queue.popleft()

    async def _drain_async(self) -> None:
        core = self.core
        handler = self.on_signal_async
        assert handler is not None
        # The handler runs in a context of its own: the emitter's current operation
        # must not leak into it (current_operation() raises there). It is marked as
        # this coordinator's handler, so drain() there raises and close() there does
        # not wait for the handler itself (SPEC 15, issue 13 #8).
        _current.set(None)
        _handling.set(self)
        while True:
            event = core.call(self._on_next_async, None)
            if event is None:
                return
            try:
                await handler(event)
            except asyncio.CancelledError:
                raise
            except BaseException:
                logger.exception(f"on_signal_async of coordinator {core.name!r} raised")

    def in_handler(self) -> bool:
        """True if the caller runs inside this coordinator's `on_signal_async` handler."""
        return _handling.get() is self

    # -- lifecycle --------------------------------------------------------------------------

    def _on_close(self, _: object) -> tuple[int, bool]:
        if self.defer_timer is not None:
            self.defer_timer.cancel()
            self.defer_timer = None
        self.async_closed = True
        self.core.signals_dropped += len(self.async_queue)
        self.async_queue.clear()
        release, self.uses_dispatcher = self.uses_dispatcher, False
        return self.async_running, release

    def close(self, deadline: float | None) -> list[threading.Thread]:
        """Unsubscribe, stop timers, count still-queued async events as dropped.

        Handlers already running may finish until `deadline` (monotonic); after that
        they are abandoned to the shared loop, which outlives them only as long as
        they run.

        Returns:
            Shared threads that are now ending (for the caller to join).
        """
        core = self.core
        running, release = core.call(self._on_close, None)
        if running:
            core.wait_for(lambda: self.async_running == 0, deadline)
        subscription = core.call(self._on_unsubscribed, None)
        if subscription is not None:
            # Without waiting: a bus whose subscriber blocks, or whose actor died, must
            # not hold up close(); late deliveries are ignored.
            subscription.unsubscribe(wait=False)
        return DISPATCHER.release() if release else []

    def _on_unsubscribed(self, _: object) -> Subscription | None:
        subscription, self.subscription = self.subscription, None
        return subscription
