"""Limits on caused emissions, so signal chains cannot run away or loop."""

from __future__ import annotations

import enum
import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from ephemeral_actors._signals._event import SignalEvent, SignalPropagation, check_signal_name
from ephemeral_actors._validate import check_int

__all__ = ["Cause", "SignalBlockReason", "SignalConstraints"]

logger = logging.getLogger("ephemeral_actors")

Cause: TypeAlias = SignalPropagation | SignalEvent | None
"""What caused an emission: a path, an event (its propagation is used), or nothing."""


class SignalBlockReason(enum.Enum):
    """Why `SignalConstraints.should_block` refused a caused emission."""

    MAX_DEPTH_EXCEEDED = "max_depth_exceeded"
    """The cause's path is already `max_depth` signals long."""
    CYCLE_DETECTED = "cycle_detected"
    """The signal already appears on the cause's path."""
    TERMINAL_SIGNAL_REACHED = "terminal_signal_reached"
    """The cause's path ends in one of `terminal_signals`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalConstraints:
    """Rules applied to caused emissions (`Operation.emit_caused`).

    Attributes:
        max_depth: A cause whose path has this many signals may cause no more; >= 1.
        block_cycles: Refuse a signal that already appears on the cause's path.
        terminal_signals: Signals that may cause nothing further.
        leaf_signals: Signals whose events carry no propagation.
        on_blocked: Called as `on_blocked(event, reason)` for each refused emission;
            exceptions are logged, never propagated.
    """

    DEFAULT: ClassVar[SignalConstraints]
    """The defaults: depth 10, cycles blocked."""
    STRICT: ClassVar[SignalConstraints]
    """Depth 5, cycles blocked."""
    NONE: ClassVar[SignalConstraints]
    """No limits: unbounded depth, cycles allowed."""

    max_depth: int = 10
    block_cycles: bool = True
    terminal_signals: frozenset[str] = frozenset()
    leaf_signals: frozenset[str] = frozenset()
    on_blocked: Callable[[SignalEvent, SignalBlockReason], None] | None = None

    def __post_init__(self) -> None:
        check_int("max_depth", self.max_depth, minimum=1)
        if not isinstance(self.block_cycles, bool):
            raise TypeError(
                "block_cycles must be a bool, "
                f"got {type(self.block_cycles).__name__} {self.block_cycles!r}"
            )
        # Frozen: object.__setattr__ is the documented way to normalise in __post_init__.
        for field in ("terminal_signals", "leaf_signals"):
            object.__setattr__(self, field, _signal_set(field, getattr(self, field)))
        if self.on_blocked is not None and not callable(self.on_blocked):
            raise TypeError(
                "on_blocked must be callable or None, "
                f"got {type(self.on_blocked).__name__} {self.on_blocked!r}"
            )

    def should_block(self, signal: str, cause: Cause) -> SignalBlockReason | None:
        """Return why emitting `signal` as caused by `cause` is refused, or None.

        Checks run in this order: no cause allows; a cause path of `max_depth` or
        more signals; `signal` already on the path (when `block_cycles`); a path
        ending in a terminal signal.

        Args:
            signal: The signal about to be emitted.
            cause: None, a `SignalPropagation`, or a `SignalEvent`. An event without
                propagation (a leaf or a plain emit) counts as a root path of its
                own signal, so it still takes part in the cycle and terminal checks.

        Returns:
            The first reason that applies, or None if the emission is allowed.

        Raises:
            TypeError: `signal` is not a str, or `cause` has the wrong type.
            ValueError: `signal` is empty.
        """
        check_signal_name("signal", signal)
        path = _cause_path(cause)
        if path is None:
            return None
        if path.depth >= self.max_depth:
            return SignalBlockReason.MAX_DEPTH_EXCEEDED
        if self.block_cycles and path.contains(signal):
            return SignalBlockReason.CYCLE_DETECTED
        if path.path[-1] in self.terminal_signals:
            return SignalBlockReason.TERMINAL_SIGNAL_REACHED
        return None

    def propagation_for(self, signal: str, cause: Cause) -> SignalPropagation | None:
        """Return the propagation the event for `signal` should carry.

        A root emission (no cause) starts a path of depth 1; a caused one extends the
        cause's path (read as in `should_block`); a leaf signal carries none.

        Raises:
            TypeError: `signal` is not a str, or `cause` has the wrong type.
            ValueError: `signal` is empty.
        """
        check_signal_name("signal", signal)
        path = _cause_path(cause)
        if signal in self.leaf_signals:
            return None
        return SignalPropagation.root(signal) if path is None else path.extend(signal)

    def notify_blocked(self, event: SignalEvent, reason: SignalBlockReason) -> None:
        """Call `on_blocked(event, reason)`; log whatever it raises, never propagate it.

        `BaseException` is caught too: this runs on actor threads, where an escaping
        `KeyboardInterrupt` or `SystemExit` would make Pykka stop every actor in the
        process.
        """
        if self.on_blocked is None:
            return
        try:
            self.on_blocked(event, reason)
        except BaseException:
            logger.exception(
                f"on_blocked raised for signal {event.signal!r} ({reason.name}); ignored"
            )


def _cause_path(cause: object) -> SignalPropagation | None:
    if cause is None or isinstance(cause, SignalPropagation):
        return cause
    if isinstance(cause, SignalEvent):
        if cause.propagation is None:
            return SignalPropagation.root(cause.signal)
        return cause.propagation
    raise TypeError(
        "cause must be a SignalPropagation, a SignalEvent or None, "
        f"got {type(cause).__name__} {cause!r}"
    )


def _signal_set(field: str, value: object) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError(
            f"{field} must be a set of signal names, got {type(value).__name__} {value!r}"
        )
    return frozenset(check_signal_name(f"{field} entry", name) for name in value)


# Presets are assigned after the helpers they need exist; ClassVar keeps them out
# of the dataclass fields and slots.
SignalConstraints.DEFAULT = SignalConstraints()
SignalConstraints.STRICT = SignalConstraints(max_depth=5)
SignalConstraints.NONE = SignalConstraints(max_depth=sys.maxsize, block_cycles=False)
