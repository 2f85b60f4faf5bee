"""The signal bus: a bounded, time-limited window of events owned by one actor.

**The actor.** `_BusState` owns the window (the events and their index) and the
subscriptions; only its turn writes them, and no lock guards them. It runs on a
`_mailbox.Mailbox`: every public call (`emit`/`publish`, `subscribe`, `unsubscribe`,
the `clear*` family, `sense`/`detect`/`count`, `close`) is one message, a request
answered at the end of the turn that handled it. The turn runs on whichever thread
finds the bus idle (usually the caller's), so building a bus starts no thread and
closing one has none to stop. A Pykka face (`_BusActor`, `SignalBus._ref`) posts
Pykka envelopes into the same mailbox; stopping it closes the bus.

**Reads.** `sense`, `detect` and `count` ask the actor for the live events (the turn
never runs the caller's predicate; the caller filters). `holds(event)` is the one
read that sends no message: coordinators call it from their own turn, so it reads
an immutable `_View` the bus publishes at the end of every turn that changed the
window. The view maps `id(event)` to the event's window entry in two dicts, a
large `old` one rebuilt every `compact_every` publishes (or on a clear) and a small
`young` one copied at the end of each turn, so a publish costs O(sqrt(capacity))
amortised, never a copy of the whole window; the published `lo` (the oldest
sequence number still in the window) withdraws evicted events, and every entry
carries its receive time so age counts exactly. Both dicts hold at most the window
plus one compaction interval of evicted entries: nothing grows per emit beyond
`max_capacity`.

**Subscribers are actors too, run by the emitter.** User code never runs in the
bus's turn. The turn that handles a publish appends the event, with a `Reply`, to
the mailbox of every matching subscription (a `_Route`), in window order, and
answers with those deliveries; the emitting thread then runs each route's turn
itself: it calls the callback for everything in that route's queue, its own event
and any other emitter's queued behind, one at a time, in window order. A thread
that finds a route busy on another thread waits for that thread to deliver its
event. So when `emit()` returns every matching callback has returned, each
subscription sees events one at a time in window order, and a slow callback delays
only the emitters whose events it must see, never the bus's turn, other emits or
reads. Replay on `subscribe` is the same: the turn queues the window's matching
events ahead of any live event, and the subscribing thread delivers them.

**Calling back in.** A callback may call the same bus (emit, subscribe,
unsubscribe, clear, sense, close): the bus's turn is never held by a callback, so
there is nothing to deadlock on. A callback's emit that matches a route this very
thread is delivering (its own, or one further up the stack) is delivered nested,
at once and in order. A thread inside a subscriber callback never *waits* for a
route another thread is delivering (two callbacks on two threads waiting for each
other would deadlock): that event is delivered by the thread already delivering,
right after its current callback, and the nested `emit` returns without waiting.

**Unsubscribe.** When `unsubscribe()` returns: no event emitted afterwards is
queued for the subscription; no queued event is delivered to it any more; and no
callback of it is running on another thread. Two exceptions, where waiting could
deadlock: a callback unsubscribing its own subscription is itself still running
(it returns normally); and an `unsubscribe()` called from inside any subscriber
callback does not wait for a callback of that subscription running on another
thread at that moment, which finishes its current event and is then called no
more. `unsubscribe(wait=False)` only sends the request.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import itertools
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

import pykka
from pykka._envelope import Envelope

from ephemeral_actors._mailbox import (
    CHECK_OWNERSHIP,
    Mailbox,
    Reply,
    check_owner,
    handle_envelope,
    interrupts_caller,
)
from ephemeral_actors._owned import owned_deque, owned_dict
from ephemeral_actors._records import ActorStats
from ephemeral_actors._signals._event import (
    SignalEvent,
    SignalPropagation,
    check_length,
    check_signal_name,
)
from ephemeral_actors._signals._pattern import compile_patterns, matches
from ephemeral_actors._validate import check_int, check_seconds

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Self

__all__ = ["SignalBus", "Subscription"]

logger = logging.getLogger("ephemeral_actors")

Callback = Callable[[SignalEvent], None]

# (sequence number, received_at on the bus clock, event). Age is measured from when the
# bus received the event, so events published with another clock's timestamps age
# correctly; the sequence number orders the window for `holds`.
_Entry = tuple[int, float, SignalEvent]

_EMPTY: dict[int, _Entry] = {}

_CRASH_ATTEMPTS = 8
"""How often `_BusState._crashed` tries to close the bus when interrupted while doing it."""


class _View(NamedTuple):
    """What the bus publishes at the end of a turn; immutable, read from any thread."""

    lo: int
    """Sequence number of the oldest event in the window (the next one if empty)."""
    old: dict[int, _Entry]
    """id(event) -> entry; never mutated once published."""
    young: dict[int, _Entry]
    """Entries added since `old` was built, newer than any in `old`; a private copy."""
    size: int
    """Events in the window, expired ones not yet pruned included (for `repr`)."""
    closed: bool


def _entry_of(view: _View, event: SignalEvent) -> _Entry | None:
    """`event`'s entry in `view` (this very object, by identity), or None."""
    key = id(event)
    entry = view.young.get(key) or view.old.get(key)
    return entry if entry is not None and entry[2] is event else None


# -- subscriptions: the bus's routes and their delivery mailboxes ---------------------------

_delivering = threading.local()
"""`depth`: how many subscriber callbacks (of any bus) this thread is inside."""


def _in_callback() -> bool:
    return getattr(_delivering, "depth", 0) > 0


class _Delivery(Reply):
    """One event for one subscription; answered once its callback returned (or was skipped)."""

    __slots__ = ("event",)

    def __init__(self, event: SignalEvent) -> None:
        super().__init__()
        self.event = event


class _Route:
    """A subscription as the bus routes to it: a matcher, and a mailbox of deliveries.

    The bus's turn appends to `queue` and writes `active`; the thread holding `flag`
    (a test-and-set, as in `Mailbox`) pops and calls the callback, outside every
    library actor's turn.
    """

    __slots__ = ("active", "callback", "deliverer", "flag", "matcher", "queue", "sid")

    def __init__(self, sid: int, matcher: Callable[[str], bool], callback: Callback) -> None:
        self.sid = sid
        self.matcher = matcher
        self.callback = callback
        self.queue: collections.deque[_Delivery] = collections.deque()
        self.flag = threading.Lock()
        self.deliverer: int | None = None  # thread ident holding `flag`
        self.active = True

    def step(self) -> None:
        """Deliver the oldest queued event (caller holds `flag`)."""
        delivery = self.queue.popleft()
        try:
            if self.active:
                _delivering.depth = getattr(_delivering, "depth", 0) + 1
                try:
                    self.callback(delivery.event)
                finally:
                    _delivering.depth -= 1
        except BaseException:
            # BaseException too: the emitter must never see a subscriber's failure.
            logger.exception(
                f"Signal subscriber {self.callback!r} raised for {delivery.event.signal!r}; ignored"
            )
        finally:
            delivery.set(None)

    def run(self, *, blocking: bool) -> bool:
        """Take `flag` and deliver everything queued; False if another thread holds it."""
        me = threading.get_ident()
        while True:
            if not self.flag.acquire(blocking):
                return False
            self.deliverer = me
            try:
                while self.queue:
                    self.step()
            finally:
                self.deliverer = None
                self.flag.release()
            # A delivery queued after the last check found the flag taken and left it to
            # us; whoever takes the flag now delivers it.
            if not self.queue:
                return True
            blocking = False

    def deliver(self, mine: _Delivery) -> None:
        """Return once `mine` is delivered (or, from inside a callback, handed on)."""
        if self.deliverer == threading.get_ident():
            # This thread is inside this route's callback: deliver nested, in order.
            while not mine.done and self.queue:
                self.step()
            return
        while not mine.done:
            if self.run(blocking=False):
                continue
            # Another thread is delivering this route; it delivers `mine` too.
            if _in_callback():
                return  # waiting for another thread from a callback could deadlock
            mine.wait(None)

    def settle(self) -> None:
        """After unsubscribe: wait out a callback running elsewhere, drop what is queued."""
        if self.deliverer == threading.get_ident() or _in_callback():
            return
        self.run(blocking=True)


# -- the bus actor -------------------------------------------------------------------------


class _Request(Reply):
    """A call to the bus: `handler(arg)` in its turn; answered at the end of the turn."""

    __slots__ = ("arg", "handler")

    def __init__(self, handler: Callable[[Any], Any], arg: Any) -> None:
        super().__init__()
        self.handler = handler
        self.arg = arg


class _Inbox:
    """Pykka's view of the bus's mailbox: `tell`/`ask` envelopes become messages."""

    __slots__ = ("mailbox",)

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox

    def put(self, envelope: Any, /) -> None:
        self.mailbox.post(envelope)

    def empty(self) -> bool:
        return not len(self.mailbox)


class _BusActor(pykka.Actor):
    """The bus's Pykka face: no thread; its envelopes are messages in the bus's mailbox."""

    def __init__(self, state: _BusState) -> None:
        self._state = state  # before Actor.__init__, which builds the inbox
        super().__init__()

    def _create_actor_inbox(self) -> Any:  # type: ignore[override]
        return _Inbox(self._state.mailbox)

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return pykka.ThreadingFuture()

    def _start_actor_loop(self) -> None:
        return  # turns run on the threads that post: nothing to start

    def __repr__(self) -> str:
        return f"<_BusActor {self._state.label}>"

    def on_stop(self) -> None:
        # Stopped through Pykka (its ref, or ActorRegistry.stop_all()): the bus is closed.
        self._state.close(": its actor was stopped")


class _BusState:
    """The bus actor: owns the window and the subscriptions; `_on_*` run in its turn."""

    _built = False

    def __init__(
        self, capacity: int, max_age: float, clock: Callable[[], float], label: str
    ) -> None:
        self.label = label
        self.max_age = max_age
        self.clock = clock
        self.entries: collections.deque[_Entry] = owned_deque(self, maxlen=capacity)
        self.next_seq = 0
        # Rebuilding `old` costs O(capacity), copying `young` O(compact_every): sqrt
        # balances them.
        self.compact_every = max(16, math.isqrt(capacity))
        self.old: dict[int, _Entry] = _EMPTY
        self.young: dict[int, _Entry] = {}
        self.changed = False
        self.routes: dict[int, _Route] = owned_dict(self)
        self.closed: str | None = None  # once closed, the note its errors carry
        self.replies: list[_Request] = []
        # The bus's watcher is its crash handler: a turn that dies half-way closes the bus.
        self.mailbox = Mailbox(self, self._receive, self._end_turn, None, self._crashed)
        self.view = _View(0, _EMPTY, _EMPTY, 0, False)
        # The state holds the actor: an ActorRef keeps only a weak reference to it, and
        # this actor has no thread to keep it alive.
        self.actor = _BusActor(self)
        self._built = True

    if CHECK_OWNERSHIP:

        def __setattr__(self, name: str, value: Any) -> None:
            if self._built:
                check_owner(self, f"SignalBus.{name}")
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return f"<bus actor {self.label}>"

    # -- the turn ----------------------------------------------------------------------------

    def _receive(self, message: Any) -> None:
        """Handle one message (the mailbox calls this in the turn; it never raises)."""
        if type(message) is _Request:
            try:
                message.value = message.handler(message.arg)
            except Exception as exc:  # the caller's error (a closed bus), raised to it
                message.error = exc
            except BaseException as exc:
                # An interrupt in the handler: the window may be half-written.
                self.mailbox.torn = True  # before any call: see `Mailbox.torn`
                self._crashed(exc)
                message.error = self._closed_error()
            self.replies.append(message)
        elif type(message) is Envelope:
            self._receive_envelope(message)
        else:
            logger.error(f"{self.label}: unexpected message {message!r}")

    def _receive_envelope(self, envelope: Envelope[Any]) -> None:
        handle_envelope(self.actor, envelope, self._rejected)

    def _rejected(self, message: Any, error: BaseException) -> None:
        # A tell has nobody to raise to; raising would end this turn's thread.
        logger.error(f"{self.label} rejected {type(message).__name__}", exc_info=error)

    def _crashed(self, error: BaseException) -> None:
        """A turn died half-way (an interrupt, or a bug): the bus closes, as a faulted actor.

        Its window may be half-written, so it accepts nothing more: writes and
        `subscribe` raise `RuntimeError` saying the bus crashed, reads answer with the
        window as it stands. An interrupt of the calling thread (Ctrl-C in a turn the
        main thread ran) is still raised to that caller once the turn has ended.
        """
        # A repeating signal can strike again in here: every step is idempotent and
        # retried until it stands, and the log comes last (as `Core._crashed`).
        interrupted = False
        for _ in range(_CRASH_ATTEMPTS):
            try:
                interrupted = interrupts_caller(error)
                if interrupted:
                    self.mailbox.interrupt = error
                self.close(f": its actor crashed ({type(error).__name__})")
                actor = self.actor
                if not actor.actor_stopped.is_set():
                    pykka.ActorRegistry.unregister(actor.actor_ref)
                    actor.actor_stopped.set()
                break
            except BaseException as again:
                if not (interrupted or interrupts_caller(again)):
                    raise
        if interrupted:
            with contextlib.suppress(BaseException):
                logger.error(
                    f"{self.label}: interrupted ({type(error).__name__}) during a turn of "
                    "its actor, whose window may be half-updated: the bus is closed"
                )
        else:
            logger.error(f"{self.label}: its actor crashed; the bus is closed", exc_info=error)

    def _end_turn(self) -> None:
        # Each duty is marked done only after it is done: an interrupt that stops one
        # leaves it for the next turn's end (`_publish` and `_finish` are idempotent).
        if self.changed:
            self._publish()
            self.changed = False
        replies = self.replies
        if replies:
            for reply in replies:
                reply._finish()
            self.replies = []

    def _publish(self) -> None:
        entries = self.entries
        young = self.young
        if len(young) >= self.compact_every:
            # Rebuilt, not merged: evicted entries fall out of the index here.
            self.old = {id(entry[2]): entry for entry in entries}
            self.young = young = {}
        self.view = _View(
            entries[0][0] if entries else self.next_seq,
            self.old,
            dict(young) if young else _EMPTY,
            len(entries),
            self.closed is not None,
        )

    def _prune(self, cutoff: float) -> None:
        entries = self.entries
        if entries and entries[0][1] < cutoff:
            while entries and entries[0][1] < cutoff:
                entries.popleft()
            self.changed = True

    def _live(self, now: float) -> list[_Entry]:
        cutoff = now - self.max_age
        self._prune(cutoff)
        # The clock may step back, so an entry behind a fresh one can still be old.
        return [entry for entry in self.entries if entry[1] >= cutoff]

    def _refuse_if_closed(self) -> None:
        if self.closed is not None:
            raise self._closed_error()

    def _closed_error(self) -> RuntimeError:
        return RuntimeError(f"{self.label} is closed{self.closed or ''}")

    def close(self, note: str) -> None:
        """Close the bus (in its turn); `note` is added to the error writes raise."""
        if self.closed is not None:
            return
        self.closed = note
        self.changed = True
        # Nothing is published after close: drop the callbacks (and what they hold).
        # Deliveries already queued are still made by their emitters.
        self.routes.clear()
        # The mailbox and the actor referred back to this state, which holds both:
        # cycles that left a closed bus to the garbage collector. Reads after close
        # reach it as before while anything holds the bus.
        self.mailbox.weaken()
        self.actor._state = weakref.proxy(self)

    # -- handlers (in the turn) --------------------------------------------------------------

    def _on_publish(self, event: SignalEvent) -> tuple[tuple[_Route, _Delivery], ...]:
        self._refuse_if_closed()
        now = self.clock()
        self._prune(now - self.max_age)
        seq = self.next_seq
        self.next_seq = seq + 1
        entry = (seq, now, event)
        self.entries.append(entry)  # deque(maxlen=capacity) drops the oldest when full
        self.young[id(event)] = entry
        self.changed = True
        deliveries = []
        signal = event.signal
        for route in self.routes.values():
            if route.matcher(signal):
                delivery = _Delivery(event)
                route.queue.append(delivery)
                deliveries.append((route, delivery))
        return tuple(deliveries)

    def _on_subscribe(self, args: tuple[_Route, bool]) -> _Delivery | None:
        self._refuse_if_closed()
        route, replay = args
        self.routes[route.sid] = route
        last = None
        if replay:
            # Queued in this turn, so ahead of every later publish: nothing is missed
            # or delivered twice between the replay and live delivery.
            matcher = route.matcher
            for _seq, _received, event in self._live(self.clock()):
                if matcher(event.signal):
                    last = _Delivery(event)
                    route.queue.append(last)
        return last

    def _on_unsubscribe(self, sid: int) -> None:
        route = self.routes.pop(sid, None)
        if route is not None:
            route.active = False

    def _on_live(self, _: object) -> tuple[SignalEvent, ...]:
        return tuple(entry[2] for entry in self._live(self.clock()))

    def _on_clear(self, predicate: Callable[[SignalEvent], bool]) -> int:
        self._refuse_if_closed()
        live = self._live(self.clock())
        kept = [entry for entry in live if not predicate(entry[2])]
        removed = len(live) - len(kept)
        if len(kept) != len(self.entries):
            self.entries.clear()
            self.entries.extend(kept)
            self.old = {id(entry[2]): entry for entry in kept}
            self.young = {}
            self.changed = True
        return removed

    def _on_close(self, _: object) -> None:
        self.close("")
        actor = self.actor
        if not actor.actor_stopped.is_set():
            pykka.ActorRegistry.unregister(actor.actor_ref)
            actor.actor_stopped.set()

    # -- asking, from any thread -------------------------------------------------------------

    def ask(self, handler: Callable[[Any], Any], arg: Any) -> Any:
        """Run `handler(arg)` in the bus's turn and return its answer."""
        request = _Request(handler, arg)
        self.mailbox.post(request)
        if not request.done:
            request.wait(None)
        return request.result()

    def tell(self, handler: Callable[[Any], Any], arg: Any) -> None:
        """Send `handler(arg)` to the bus's turn without waiting for it."""
        self.mailbox.post(_Request(handler, arg))


_subscription_ids = itertools.count(1)  # next() is atomic under the GIL


class SignalBus:
    """A shared, bounded, time-limited window of signal events, owned by an actor.

    The window never holds more than `max_capacity` events (when full, the oldest
    is dropped) and no read returns an event older than `max_age` seconds, counted
    from when the bus received it on a monotonic clock (a step of the wall clock
    neither ages events early nor keeps them past their time). Every method is
    thread-safe. The bus has no thread of its own: its turns run on the threads that
    call it, and subscriber callbacks run on the emitting (or subscribing) thread,
    outside the bus's turn.
    See the module docstring for delivery order, callbacks that call back in, and
    exactly what `unsubscribe()` guarantees.

    Args:
        max_capacity: Most events kept; >= 1.
        max_age: Seconds an event stays readable; > 0 (int, float or timedelta).
        name: Used in logs, errors and `repr`.
        _clock: Seconds since the epoch, for tests: it then also measures ages.
            Defaults to `time.time` for timestamps, with ages on `time.monotonic`.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: An argument is out of range.
    """

    def __init__(
        self,
        max_capacity: int = 1000,
        max_age: float | dt.timedelta = 60.0,
        *,
        name: str | None = None,
        _clock: Callable[[], float] | None = None,
    ) -> None:
        self._max_capacity = check_int("max_capacity", max_capacity, minimum=1)
        self._max_age = check_seconds("max_age", max_age)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {type(name).__name__} {name!r}")
        self._name = name
        self._clock = time.time if _clock is None else _clock
        # Ages are differences of receive times: a monotonic clock, unless a test injects
        # one clock for both.
        self._age_clock = time.monotonic if _clock is None else _clock
        self._state = _BusState(
            self._max_capacity, self._max_age, self._age_clock, self._describe()
        )
        self._ref: pykka.ActorRef[_BusActor] = self._state.actor.actor_ref
        pykka.ActorRegistry.register(self._ref)

    @property
    def name(self) -> str | None:
        """The name given at construction."""
        return self._name

    @property
    def max_capacity(self) -> int:
        """Most events the window keeps."""
        return self._max_capacity

    @property
    def max_age(self) -> float:
        """Seconds an event stays readable."""
        return self._max_age

    @property
    def is_closed(self) -> bool:
        """True once `close()` has returned (or the bus actor was stopped)."""
        return self._state.view.closed

    # Writes

    def emit(
        self,
        name: str,
        *,
        key: str | None = None,
        operation_id: int | None = None,
        propagation: SignalPropagation | None = None,
        defer_for: float | None = None,
    ) -> SignalEvent:
        """Emit signal `name`, timestamped now on the bus clock.

        When this returns the event is in the window and every matching subscriber
        callback has returned (called from inside a callback, see the module
        docstring for the one exception).

        With `defer_for` (seconds, > 0), coordinators whose `defer_on_signals` match
        `name` defer new work until now + `defer_for`, however many re-checks that
        takes, unless a `resume_on_signals` match ends it sooner (added in 0.2).

        Returns:
            The event that was published.

        Raises:
            TypeError: An argument has the wrong type.
            ValueError: `name` is empty or longer than 1,024 characters.
            RuntimeError: The bus is closed.
        """
        timestamp = dt.datetime.fromtimestamp(self._clock(), tz=dt.UTC)
        check_signal_name("name", name)
        event = SignalEvent(name, operation_id, key, timestamp, propagation, defer_for)
        self.publish(event)
        return event

    def publish(self, event: SignalEvent) -> None:
        """Publish an already-built event, as `emit` does.

        Coordinators use this to put their operations' signals on a shared bus.

        Raises:
            TypeError: `event` is not a `SignalEvent`.
            RuntimeError: The bus is closed.
        """
        if not isinstance(event, SignalEvent):
            raise TypeError(f"event must be a SignalEvent, got {type(event).__name__} {event!r}")
        state = self._state
        deliveries: tuple[tuple[_Route, _Delivery], ...] = state.ask(state._on_publish, event)
        # After the bus's turn, on this thread: a slow callback holds up this emit
        # only, never the bus.
        for route, delivery in deliveries:
            route.deliver(delivery)

    def subscribe(
        self, pattern: str | Iterable[str], callback: Callback, *, replay: bool = False
    ) -> Subscription:
        """Call `callback(event)` for every later event whose signal matches `pattern`.

        `pattern` follows `matches_any`: comma lists and several entries are allowed.
        Callbacks run on the emitting thread after the bus has recorded the event,
        one event at a time per subscription, in window order; what they raise is
        logged, never passed to the emitter.

        Args:
            pattern: One or more patterns.
            callback: Called with each matching event.
            replay: Also deliver the matching events already in the window, oldest
                first, on this thread before this returns. No event is missed or
                delivered twice between the replay and live delivery.

        Returns:
            A `Subscription`; its `unsubscribe()` stops delivery.

        Raises:
            TypeError: `pattern` is not a str or a sequence of str, or `callback` is
                not callable.
            ValueError: `pattern` holds no pattern at all, or one longer than 1,024
                characters.
            RuntimeError: The bus is closed.
        """
        if not isinstance(pattern, str) and isinstance(pattern, Iterable):
            pattern = tuple(pattern)  # a one-shot iterator would be spent by compiling
        matcher = compile_patterns(pattern, argument="pattern")
        if matcher is None:
            raise ValueError(f"pattern must name at least one signal pattern, got {pattern!r}")
        if not callable(callback):
            raise TypeError(
                f"callback must be callable, got {type(callback).__name__} {callback!r}"
            )
        route = _Route(next(_subscription_ids), matcher, callback)
        state = self._state
        last: _Delivery | None = state.ask(state._on_subscribe, (route, replay))
        if last is not None:
            route.deliver(last)
        return Subscription(self, route, pattern)

    def clear(self) -> int:
        """Remove every event; return how many were removed.

        Raises:
            RuntimeError: The bus is closed.
        """
        return self._clear(lambda _: True)

    def clear_pattern(self, pattern: str) -> int:
        """Remove events whose signal matches one `pattern` (as `matches`; commas literal).

        Returns:
            How many events were removed.

        Raises:
            TypeError: `pattern` is not a str.
            ValueError: `pattern` is longer than 1,024 characters.
            RuntimeError: The bus is closed.
        """
        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be a str, got {type(pattern).__name__} {pattern!r}")
        check_length("pattern", pattern)
        return self._clear(lambda event: matches(event.signal, pattern))

    def clear_operation(self, operation_id: int) -> int:
        """Remove events emitted by operation `operation_id`; return how many.

        Raises:
            TypeError: `operation_id` is not an int.
            RuntimeError: The bus is closed.
        """
        if isinstance(operation_id, bool) or not isinstance(operation_id, int):
            raise TypeError(
                f"operation_id must be an int, got {type(operation_id).__name__} {operation_id!r}"
            )
        return self._clear(lambda event: event.operation_id == operation_id)

    def clear_key(self, key: str) -> int:
        """Remove events carrying `key`; return how many.

        Raises:
            TypeError: `key` is not a str.
            RuntimeError: The bus is closed.
        """
        if not isinstance(key, str):
            raise TypeError(f"key must be a str, got {type(key).__name__} {key!r}")
        return self._clear(lambda event: event.key == key)

    # Reads: answered by the actor, before and after close.

    def sense(
        self, predicate: Callable[[SignalEvent], bool] | None = None
    ) -> tuple[SignalEvent, ...]:
        """Return the events in the window, oldest first, optionally filtered.

        `predicate` runs in the caller's thread, never in the bus's turn.

        Raises:
            TypeError: `predicate` is neither None nor callable.
        """
        if predicate is not None and not callable(predicate):
            raise TypeError(
                f"predicate must be callable or None, got {type(predicate).__name__} {predicate!r}"
            )
        events = self._live()
        return events if predicate is None else tuple(filter(predicate, events))

    def detect(self, name_or_predicate: str | Callable[[SignalEvent], bool]) -> bool:
        """Return whether any event in the window matches.

        Args:
            name_or_predicate: A signal pattern (as `matches`, so an exact name
                unless it holds `*` or `?`), or a predicate on events.

        Raises:
            TypeError: The argument is neither a str nor callable.
            ValueError: The pattern is longer than 1,024 characters.
        """
        if isinstance(name_or_predicate, str):
            pattern = check_length("name_or_predicate", name_or_predicate)
            return any(matches(event.signal, pattern) for event in self._live())
        if callable(name_or_predicate):
            return any(map(name_or_predicate, self._live()))
        raise TypeError(
            "name_or_predicate must be a str or callable, "
            f"got {type(name_or_predicate).__name__} {name_or_predicate!r}"
        )

    @property
    def count(self) -> int:
        """The number of events in the window."""
        return len(self._live())

    def holds(self, event: SignalEvent) -> bool:
        """True if this very `event` object is in the window now; sends no message.

        Cleared, evicted and aged-out events are not held. Reads the view the bus
        published at the end of its last turn, so it is cheap, exact as of every
        call that has returned, and safe to call from another actor's turn.
        `event` is compared by identity: pass the object the bus delivered,
        published or returned from `sense`.
        """
        view = self._state.view
        entry = _entry_of(view, event)
        return (
            entry is not None
            and entry[0] >= view.lo
            and entry[1] >= self._age_clock() - self._max_age
        )

    def _elapsed(self, event: SignalEvent) -> float:
        """Seconds since the bus received `event`, on its age clock (read of the view).

        An event no longer in the window falls back to its timestamp on the bus clock.
        """
        entry = _entry_of(self._state.view, event)
        if entry is None:
            return max(0.0, self._clock() - event.timestamp.timestamp())
        return max(0.0, self._age_clock() - entry[1])

    def actor_stats(self) -> ActorStats:
        """The bus actor's statistics (SPEC 14): role "bus"; answers after close too."""
        mailbox = self._state.mailbox
        return ActorStats("bus", 0 if self.is_closed else 1, len(mailbox), mailbox.processed)

    # Lifecycle

    def close(self) -> None:
        """Close the bus. Idempotent; there is no thread to stop.

        Reads keep answering with the final window (still subject to `max_age`);
        writes and `subscribe` raise `RuntimeError`. Callbacks already running on
        other threads are not waited for (their emitters wait for them). Safe to
        call from a subscriber callback.
        """
        state = self._state
        state.ask(state._on_close, None)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        # Never asks the actor: repr appears in logs written from any thread. The
        # count may include expired events that the next read will prune.
        view = self._state.view
        state = "closed" if view.closed else "running"
        return (
            f"<{self._describe()} {state} count={view.size} "
            f"max_capacity={self._max_capacity} max_age={self._max_age}>"
        )

    # Internals

    def _describe(self) -> str:
        return "SignalBus" if self._name is None else f"SignalBus {self._name!r}"

    def _clear(self, predicate: Callable[[SignalEvent], bool]) -> int:
        state = self._state
        removed: int = state.ask(state._on_clear, predicate)
        return removed

    def _live(self) -> tuple[SignalEvent, ...]:
        state = self._state
        events: tuple[SignalEvent, ...] = state.ask(state._on_live, None)
        return events


class Subscription:
    """A live subscription to a `SignalBus`, returned by `SignalBus.subscribe`."""

    __slots__ = ("_active", "_bus", "_route", "pattern")

    def __init__(self, bus: SignalBus, route: _Route, pattern: str | Iterable[str]) -> None:
        self._bus = bus
        self._route = route
        self._active = True
        self.pattern = pattern
        """The pattern given to `subscribe`."""

    @property
    def active(self) -> bool:
        """False once `unsubscribe()` has returned or the bus is closed."""
        return self._active and not self._bus.is_closed

    def unsubscribe(self, *, wait: bool = True) -> None:
        """Stop delivery. Idempotent.

        When this returns no event is delivered to this subscription any more and
        none of its callbacks is running on another thread, except where waiting
        could deadlock: see "Unsubscribe" in the module docstring.

        Args:
            wait: With False, only send the request to the bus actor: a callback that
                is running, or already queued, may still run. Use it where waiting on
                a callback could block (the subscriber must then ignore late events).
        """
        state = self._bus._state
        route = self._route
        self._active = False
        if not wait:
            state.tell(state._on_unsubscribe, route.sid)
            return
        state.ask(state._on_unsubscribe, route.sid)
        route.settle()

    def __repr__(self) -> str:
        state = "active" if self.active else "inactive"
        return f"<Subscription {self.pattern!r} {state} on {self._bus!r}>"
