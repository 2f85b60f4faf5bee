"""Signal events and the causal path that led to them.

Both records are frozen and hold only strings, ints, a datetime and tuples, so
they can cross actor boundaries without copying.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ephemeral_actors._validate import check_seconds

__all__ = [
    "MAX_NAME_LENGTH",
    "SignalEvent",
    "SignalPropagation",
    "check_length",
    "check_signal_name",
]

MAX_NAME_LENGTH = 1024
"""The longest signal name or pattern the library accepts, in characters.

Names are often built from request data (a URL, a user name): the bound keeps one
hostile name from making every match, window and bus entry arbitrarily expensive.
"""


def check_length(argument: str, value: str) -> str:
    """Return `value` if it is at most `MAX_NAME_LENGTH` characters long.

    Raises:
        ValueError: `value` is longer; the message names `argument` and the bound,
            and shows only the start of `value`.
    """
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(
            f"{argument} must be at most {MAX_NAME_LENGTH} characters, "
            f"got {len(value)} characters: {value[:40]!r}..."
        )
    return value


def check_signal_name(argument: str, value: object) -> str:
    """Return `value` if it is a non-empty str of at most `MAX_NAME_LENGTH` characters.

    Raises:
        TypeError: `value` is not a str.
        ValueError: `value` is empty or longer than `MAX_NAME_LENGTH`.
    """
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a str, got {type(value).__name__} {value!r}")
    if not value:
        raise ValueError(f"{argument} must be a non-empty signal name, got {value!r}")
    return check_length(argument, value)


@dataclass(frozen=True, slots=True)
class SignalPropagation:
    """The chain of signals that caused an emission, oldest first.

    Example: `SignalPropagation.root("a").extend("b")` has path `("a", "b")`,
    depth 2, and prints as `a -> b`.
    """

    path: tuple[str, ...]
    """Signal names from the root cause to the latest signal; never empty."""

    def __post_init__(self) -> None:
        path = self.path
        if not isinstance(path, tuple):
            raise TypeError(f"path must be a tuple of str, got {type(path).__name__} {path!r}")
        if not path:
            raise ValueError("path must hold at least one signal name, got ()")
        for name in path:
            check_signal_name("path entry", name)

    @classmethod
    def root(cls, signal: str) -> SignalPropagation:
        """Start a path at `signal` (depth 1).

        Raises:
            TypeError: `signal` is not a str.
            ValueError: `signal` is empty or longer than `MAX_NAME_LENGTH`.
        """
        return cls((check_signal_name("signal", signal),))

    def extend(self, signal: str) -> SignalPropagation:
        """Return a new path with `signal` appended; this one is unchanged.

        Raises:
            TypeError: `signal` is not a str.
            ValueError: `signal` is empty or longer than `MAX_NAME_LENGTH`.
        """
        return SignalPropagation((*self.path, check_signal_name("signal", signal)))

    @property
    def depth(self) -> int:
        """The number of signals in the path."""
        return len(self.path)

    def contains(self, signal: str) -> bool:
        """Return whether `signal` is anywhere on the path."""
        return signal in self.path

    def __str__(self) -> str:
        return " -> ".join(self.path)


@dataclass(frozen=True, slots=True)
class SignalEvent:
    """One emitted signal: its name, where it came from, and when.

    Attributes:
        signal: The signal name.
        operation_id: The emitting operation's id, or None for signals emitted
            outside an operation (for example with `SignalBus.emit`).
        key: The emitting operation's key as `str(key)`, or None.
        timestamp: When the signal was emitted, as a timezone-aware UTC datetime.
            An aware datetime in another zone is converted to UTC.
        propagation: The causal path for caused emissions, or None.
        defer_for: Seconds a matching `defer_on_signals` pattern defers work from
            `timestamp` on (overriding `max_defer_attempts`), or None for a plain
            deferral. Added in 0.2.
    """

    signal: str
    operation_id: int | None
    key: str | None
    timestamp: dt.datetime
    propagation: SignalPropagation | None = None
    defer_for: float | None = None

    def __post_init__(self) -> None:
        check_signal_name("signal", self.signal)
        if self.defer_for is not None:
            # Frozen: the documented way to normalise a field (a timedelta to seconds).
            object.__setattr__(self, "defer_for", check_seconds("defer_for", self.defer_for))
        operation_id = self.operation_id
        if operation_id is not None and (
            isinstance(operation_id, bool) or not isinstance(operation_id, int)
        ):
            raise TypeError(
                "operation_id must be an int or None, "
                f"got {type(operation_id).__name__} {operation_id!r}"
            )
        if self.key is not None and not isinstance(self.key, str):
            raise TypeError(
                f"key must be a str or None, got {type(self.key).__name__} {self.key!r}"
            )
        timestamp = self.timestamp
        if not isinstance(timestamp, dt.datetime):
            raise TypeError(
                f"timestamp must be a datetime, got {type(timestamp).__name__} {timestamp!r}"
            )
        if timestamp.utcoffset() is None:
            raise ValueError(f"timestamp must be timezone-aware, got {timestamp!r}")
        if timestamp.tzinfo is not dt.UTC:
            # Frozen: this is the documented way to normalise a field in __post_init__.
            object.__setattr__(self, "timestamp", timestamp.astimezone(dt.UTC))
        if self.propagation is not None and not isinstance(self.propagation, SignalPropagation):
            raise TypeError(
                "propagation must be a SignalPropagation or None, "
                f"got {type(self.propagation).__name__} {self.propagation!r}"
            )

    @property
    def depth(self) -> int:
        """The propagation depth: 0 without propagation (leaf or plain emits)."""
        return 0 if self.propagation is None else self.propagation.depth

    def is_(self, name: str) -> bool:
        """Return whether this event's signal is exactly `name`."""
        return self.signal == name

    def starts_with(self, prefix: str) -> bool:
        """Return whether this event's signal starts with `prefix`."""
        return self.signal.startswith(prefix)

    def would_cycle(self, name: str) -> bool:
        """Return whether emitting `name` as caused by this event would repeat a signal."""
        return self.propagation is not None and self.propagation.contains(name)
