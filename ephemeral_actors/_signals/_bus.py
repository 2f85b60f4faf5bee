"""The signal bus: a bounded, time-limited window of events behind one actor.

Message flow: while the bus runs, every public call becomes one `ask` to the actor,
which owns the window and the subscriptions, so writes, reads and deliveries are
serialised on the bus thread. Subscriber callbacks run on that thread, inside the
ask of the `emit`/`publish` that triggered them, which is what makes `emit`
synchronous: when it returns, the event is in the window and every matching
callback has returned.

Deadlock rule: a callback that calls back into the same bus (emit, subscribe,
sense, ...) is already on the bus thread, so an `ask` would wait for itself. Such
calls are detected by thread identity and applied directly instead. A callback
that blocks on *another* bus whose callbacks call back into this one can still
deadlock; don't build such cycles.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import enum
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import pykka

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

_thread_counter = itertools.count(1)
_subscription_ids = itertools.count(1)

Callback = Callable[[SignalEvent], None]
# (received_at on the bus clock, event). Age is measured from when the bus received
# the event, so events published with another clock's timestamps age correctly.
_Entry = tuple[float, SignalEvent]


class _State(enum.Enum):
    RUNNING = "running"
    CLOSED = "closed"


# Messages to the bus actor. Each is answered through `ask`; none is ever told.
@dataclass(frozen=True, slots=True)
class _Publish:
    event: SignalEvent


@dataclass(frozen=True, slots=True)
class _Subscribe:
    subscription_id: int
    matcher: Callable[[str], bool]
    callback: Callback
    replay: bool


@dataclass(frozen=True, slots=True)
class _Unsubscribe:
    subscription_id: int


@dataclass(frozen=True, slots=True)
class _Live:
    pass


@dataclass(frozen=True, slots=True)
class _Clear:
    predicate: Callable[[SignalEvent], bool]


_Message = _Publish | _Subscribe | _Unsubscribe | _Live | _Clear


class _Window:
    """The state the bus actor owns; only ever touched on the bus thread."""

    def __init__(self, capacity: int, max_age: float, clock: Callable[[], float]) -> None:
        self.entries: collections.deque[_Entry] = collections.deque(maxlen=capacity)
        self.capacity = capacity
        # Which events are in the window, readable from any thread (SignalBus.holds):
        # coordinators holding a cancel or defer mark ask it without messaging the
        # actor, so a cleared or evicted signal stops counting at once.
        self.present: collections.Counter[SignalEvent] = collections.Counter()
        self.lock = threading.Lock()
        self.max_age = max_age
        self.clock = clock
        self.subscribers: dict[int, tuple[Callable[[str], bool], Callback]] = {}
        self.thread: threading.Thread | None = None

    def handle(self, message: _Message) -> Any:
        match message:
            case _Publish(event):
                return self.publish(event)
            case _Subscribe(subscription_id, matcher, callback, replay):
                self.subscribers[subscription_id] = (matcher, callback)
                if replay:
                    for event in self.live():
                        if matcher(event.signal):
                            _deliver(callback, event)
                return None
            case _Unsubscribe(subscription_id):
                self.subscribers.pop(subscription_id, None)
                return None
            case _Live():
                return self.live()
            case _Clear(predicate):
                return self.clear(predicate)

    def publish(self, event: SignalEvent) -> None:
        self.prune()
        with self.lock:
            if len(self.entries) == self.capacity:
                self._forget(self.entries[0][1])
            # deque(maxlen=capacity) drops the oldest entry when full.
            self.entries.append((self.clock(), event))
            self.present[event] += 1
        for subscription_id, (matcher, callback) in tuple(self.subscribers.items()):
            # An earlier callback may have unsubscribed this one; unsubscribe is
            # synchronous, so it must not see this event.
            if subscription_id in self.subscribers and matcher(event.signal):
                _deliver(callback, event)

    def live(self) -> tuple[SignalEvent, ...]:
        self.prune()
        return tuple(event for _, event in self.entries)

    def clear(self, predicate: Callable[[SignalEvent], bool]) -> int:
        self.prune()
        kept = [entry for entry in self.entries if not predicate(entry[1])]
        removed = len(self.entries) - len(kept)
        with self.lock:
            for _received, event in self.entries:
                if predicate(event):
                    self._forget(event)
            self.entries.clear()
            self.entries.extend(kept)
        return removed

    def prune(self) -> None:
        cutoff = self.clock() - self.max_age
        entries = self.entries
        if entries and entries[0][0] < cutoff:
            with self.lock:
                while entries and entries[0][0] < cutoff:
                    self._forget(entries.popleft()[1])

    def _forget(self, event: SignalEvent) -> None:
        count = self.present[event] - 1
        if count > 0:
            self.present[event] = count
        else:
            del self.present[event]

    def holds(self, event: SignalEvent) -> bool:
        with self.lock:
            return event in self.present


def _deliver(callback: Callback, event: SignalEvent) -> None:
    try:
        callback(event)
    except BaseException:
        # BaseException too: one escaping the actor's handler would make Pykka stop
        # every actor in the process (ActorRegistry.stop_all).
        logger.exception(f"Signal subscriber {callback!r} raised for {event.signal!r}; ignored")


class _BusActor(pykka.ThreadingActor):
    use_daemon_thread: ClassVar[bool] = True

    def __init__(self, window: _Window, label: str) -> None:
        super().__init__()
        self._window = window
        self._label = label

    def _start_actor_loop(self) -> None:
        # Pykka names threads after the class; a recognisable name helps anyone
        # reading a thread dump or checking that close() left nothing behind.
        thread = threading.Thread(
            target=self._actor_loop,
            name=f"ephemeral-actors-bus-{next(_thread_counter)}{self._label}",
            daemon=self.use_daemon_thread,
        )
        self._window.thread = thread
        thread.start()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Message):
            return self._window.handle(message)
        return super().on_receive(message)


class SignalBus:
    """A shared, bounded, time-limited window of signal events, run by an actor.

    The window never holds more than `max_capacity` events (when full, the oldest
    is dropped) and no read returns an event older than `max_age` seconds, counted
    from when the bus received it. Every method is thread-safe.

    Calls from inside a subscriber callback of the same bus are applied directly
    on the bus thread instead of waiting on it (see the module docstring).

    Args:
        max_capacity: Most events kept; >= 1.
        max_age: Seconds an event stays readable; > 0 (int, float or timedelta).
        name: Used in the thread name, logs and `repr`.
        _clock: Seconds since the epoch, for tests; defaults to `time.time`.

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
        self._window = _Window(self._max_capacity, self._max_age, self._clock)
        self._lock = threading.Lock()
        self._state = _State.RUNNING
        self._stopped: pykka.Future[Any] | None = None
        self._ref = _BusActor.start(self._window, f"-{name}" if name else "")

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
        """True once `close()` has been called."""
        return self._state is _State.CLOSED

    # Writes

    def emit(
        self,
        name: str,
        *,
        key: str | None = None,
        operation_id: int | None = None,
        propagation: SignalPropagation | None = None,
    ) -> SignalEvent:
        """Emit signal `name`, timestamped now on the bus clock.

        When this returns the event is in the window and every matching subscriber
        callback has returned.

        Returns:
            The event that was published.

        Raises:
            TypeError: An argument has the wrong type.
            ValueError: `name` is empty or longer than 1,024 characters.
            RuntimeError: The bus is closed.
        """
        timestamp = dt.datetime.fromtimestamp(self._clock(), tz=dt.UTC)
        check_signal_name("name", name)
        event = SignalEvent(name, operation_id, key, timestamp, propagation)
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
        self._call(_Publish(event))

    def subscribe(
        self, pattern: str | Iterable[str], callback: Callback, *, replay: bool = False
    ) -> Subscription:
        """Call `callback(event)` for every later event whose signal matches `pattern`.

        `pattern` follows `matches_any`: comma lists and several entries are allowed.
        Callbacks run on the bus thread; what they raise is logged, never passed to
        the emitter.

        Args:
            pattern: One or more patterns.
            callback: Called with each matching event.
            replay: Also deliver the matching events already in the window, oldest
                first, before this returns. No event is missed or delivered twice
                between the replay and live delivery.

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
        subscription = Subscription(self, next(_subscription_ids), pattern)
        self._call(_Subscribe(subscription._id, matcher, callback, replay))
        return subscription

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

    # Reads: answered by the actor while running, from the final state after close.

    def sense(
        self, predicate: Callable[[SignalEvent], bool] | None = None
    ) -> tuple[SignalEvent, ...]:
        """Return the events in the window, oldest first, optionally filtered.

        `predicate` runs in the caller's thread, never on the bus thread.

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

    # Lifecycle

    def close(self) -> None:
        """Stop the bus actor and its thread. Idempotent.

        Reads keep answering with the final window (still subject to `max_age`);
        writes and `subscribe` raise `RuntimeError`. Called from a subscriber
        callback, the thread ends once the current delivery has finished.
        """
        on_bus_thread = self._on_bus_thread()
        with self._lock:
            if self._state is _State.RUNNING:
                # Queued under the lock, behind every ask already sent, so nothing
                # accepted before close() is missing from the final state.
                self._stopped = self._ref.stop(block=False)
                self._transition(_State.CLOSED)
            stopped = self._stopped
        if on_bus_thread:
            return
        assert stopped is not None
        assert self._window.thread is not None
        stopped.get()
        self._window.thread.join()

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
        # Never asks the actor: repr appears in logs written from any thread,
        # including the bus thread itself. The count may include expired events
        # that the next read will prune.
        held = len(self._window.entries)
        return (
            f"<{self._describe()} {self._state.value} count={held} "
            f"max_capacity={self._max_capacity} max_age={self._max_age}>"
        )

    # Internals

    def _transition(self, to: _State) -> None:
        allowed = {_State.RUNNING: {_State.CLOSED}, _State.CLOSED: set[_State]()}
        if to not in allowed[self._state]:
            raise RuntimeError(f"SignalBus cannot go from {self._state.value} to {to.value}")
        self._state = to

    def _describe(self) -> str:
        return "SignalBus" if self._name is None else f"SignalBus {self._name!r}"

    def _on_bus_thread(self) -> bool:
        return threading.current_thread() is self._window.thread

    def _call(self, message: _Message, *, closed: Callable[[], Any] | None = None) -> Any:
        """Apply `message` on the bus thread; when closed, return `closed()` or raise."""
        on_bus_thread = self._on_bus_thread()
        future: pykka.Future[Any] | None = None
        with self._lock:
            running = self._state is _State.RUNNING
            if running and not on_bus_thread:
                # Sent under the lock so close() cannot queue its stop in front of it.
                future = self._ref.ask(message, block=False)
        if not running:
            if closed is None:
                raise RuntimeError(f"{self._describe()} is closed")
            return closed()
        if future is None:
            return self._window.handle(message)
        try:
            return future.get()
        except pykka.ActorDeadError as exc:
            # Only someone else's ActorRegistry.stop_all() can stop the actor early.
            raise RuntimeError(f"{self._describe()} is closed: its actor was stopped") from exc

    def holds(self, event: SignalEvent) -> bool:
        """True if `event` is in the window (not cleared or evicted); thread-safe.

        Answers without messaging the bus actor, so it is safe to call under other
        locks. Age is pruned when the bus next handles a message; callers that care
        about `max_age` check it themselves.
        """
        return self._window.holds(event)

    def _clear(self, predicate: Callable[[SignalEvent], bool]) -> int:
        removed: int = self._call(_Clear(predicate))
        return removed

    def _live(self) -> tuple[SignalEvent, ...]:
        events: tuple[SignalEvent, ...] = self._call(_Live(), closed=self._final_live)
        return events

    def _final_live(self) -> tuple[SignalEvent, ...]:
        # The window is the final state once the actor has handled its last
        # message. Off the bus thread, wait for that; on it (close() called from a
        # callback) we are that last message. Reads never prune it, so concurrent
        # readers need no lock.
        if not self._on_bus_thread():
            assert self._stopped is not None
            self._stopped.get()
        cutoff = self._clock() - self._max_age
        return tuple(event for received, event in self._window.entries if received >= cutoff)


class Subscription:
    """A live subscription to a `SignalBus`, returned by `SignalBus.subscribe`."""

    __slots__ = ("_active", "_bus", "_id", "pattern")

    def __init__(self, bus: SignalBus, subscription_id: int, pattern: str | Iterable[str]) -> None:
        self._bus = bus
        self._id = subscription_id
        self._active = True
        self.pattern = pattern
        """The pattern given to `subscribe`."""

    @property
    def active(self) -> bool:
        """False once `unsubscribe()` has returned or the bus is closed."""
        return self._active and not self._bus.is_closed

    def unsubscribe(self, *, wait: bool = True) -> None:
        """Stop delivery. Idempotent; no callback runs for this subscription afterwards.

        On a closed bus this does nothing: nothing is delivered there anyway.

        Args:
            wait: With False, only send the request to the bus actor: a callback that
                is running, or already queued, may still run. Use it where waiting on
                the bus could block (the subscriber must then ignore late events).
        """
        if not wait:
            self._active = False
            with contextlib.suppress(pykka.ActorDeadError):  # a dead bus delivers nothing
                self._bus._ref.tell(_Unsubscribe(self._id))
            return
        self._bus._call(_Unsubscribe(self._id), closed=lambda: None)
        self._active = False

    def __repr__(self) -> str:
        state = "active" if self.active else "inactive"
        return f"<Subscription {self.pattern!r} {state} on {self._bus!r}>"
