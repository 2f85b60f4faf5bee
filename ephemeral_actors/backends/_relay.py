"""What remote backends share: a recording `current_operation()` and its local replay.

A body that runs in another process cannot touch the real `Operation`. It gets a
`RecordingOperation` instead, which notes everything the body does to its operation
(signals, caused signals, retractions) as numbered events and pushes each one to the
coordinator's process as it happens (how is up to the backend). The complete list
also travels back with the body's outcome, so nothing is lost if the live path is
slow or broken. On the local side, a `Call` applies each event to the real
`Operation` exactly once, in order, whichever path delivered it first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import threading
import traceback
from typing import TYPE_CHECKING, Any, TypeAlias

from ephemeral_actors._errors import OperationCancelledError
from ephemeral_actors._signals import matches
from ephemeral_actors._signals._event import check_signal_name

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ephemeral_actors._operation import Operation
    from ephemeral_actors._signals import SignalEvent, SignalPropagation

__all__ = ["Call", "Event", "RecordingOperation", "portable_error"]

logger = logging.getLogger("ephemeral_actors")

Event: TypeAlias = tuple[int, str, str, Any]
"""(sequence number, kind, name or pattern, cause) of one thing a remote body did."""


class RecordingOperation:
    """`current_operation()` for a body running in another process.

    It records what the body does to its operation and hands each record to `push`,
    which subclasses override to send it home. `cancelled` is False unless a
    subclass knows better.

    Attributes:
        id: The local operation's id.
        key: The local operation's key (`str(key)` in keyed coordinators, else None).
        events: Everything recorded so far, in order.
    """

    __slots__ = ("_names", "events", "id", "key")

    where = "in another process"
    """How `repr()` says where the body runs."""

    def __init__(self, op_id: int, key: str | None) -> None:
        self.id = op_id
        self.key = key
        self._names: list[str] = []
        self.events: list[Event] = []

    def __repr__(self) -> str:
        return f"<Operation id={self.id} key={self.key!r} running {self.where}>"

    @property
    def cancelled(self) -> bool:
        """Whether cancellation was requested; this base class cannot know (False)."""
        return False

    def raise_if_cancelled(self) -> None:
        """Raise `OperationCancelledError` if `cancelled` is True."""
        if self.cancelled:
            raise OperationCancelledError(f"operation {self.id} was cancelled")

    def signal(self, name: str) -> bool:
        """Emit `name`; always True here (constraints are applied when it is replayed)."""
        self._record("signal", check_signal_name("name", name), None)
        self._names.append(name)
        return True

    def emit_caused(self, name: str, cause: SignalPropagation | SignalEvent) -> bool:
        """Emit `name` caused by `cause`; True here, the local replay applies constraints."""
        self._record("caused", check_signal_name("name", name), cause)
        self._names.append(name)
        return True

    def retract(self, name: str) -> bool:
        """Retract this body's signals called `name`; True if it had emitted one."""
        self._record("retract", check_signal_name("name", name), None)
        found = name in self._names
        self._names = [n for n in self._names if n != name]
        return found

    def retract_matching(self, pattern: str) -> int:
        """Retract this body's signals matching `pattern`; how many it had emitted."""
        self._record("retract_matching", pattern, None)
        kept = [n for n in self._names if not matches(n, pattern)]
        removed = len(self._names) - len(kept)
        self._names = kept
        return removed

    def has_signal(self, name: str) -> bool:
        """True if this body emitted `name` and has not retracted it."""
        return name in self._names

    def _record(self, kind: str, name: str, cause: Any) -> None:
        event: Event = (len(self.events), kind, name, cause)
        self.events.append(event)
        self.push(event)

    def push(self, event: Event) -> None:
        """Send `event` to the coordinator's process now, if the backend can (best effort)."""


class Call:
    """One body in flight: applies its events to the local operation once each, in order."""

    __slots__ = ("closed", "held", "lock", "next", "op")

    def __init__(self, op: Operation) -> None:
        self.op = op
        self.lock = threading.Lock()
        self.next = 0
        self.held: dict[int, Event] = {}
        self.closed = False

    def offer(self, events: Iterable[Event], *, final: bool = False) -> None:
        """Apply every event not applied yet; `final` ends the call (later offers no-op)."""
        with self.lock:
            if self.closed:
                return
            for event in events:
                seq = event[0]
                if seq >= self.next:
                    self.held[seq] = event
            while self.next in self.held:
                self._apply(self.held.pop(self.next))
                self.next += 1
            if final:
                self.closed = True
                self.held.clear()

    def _apply(self, event: Event) -> None:
        _seq, kind, name, cause = event
        op = self.op
        try:
            if kind == "signal":
                op.signal(name)
            elif kind == "caused":
                op.emit_caused(name, cause)
            elif kind == "retract":
                op.retract(name)
            elif kind == "retract_matching":
                op.retract_matching(name)
        except Exception:
            logger.exception(f"could not replay {kind} {name!r} of remote operation {op.id}")


def portable_error(
    exc: BaseException, where: str, dumps: Callable[[Any], bytes] = pickle.dumps
) -> BaseException:
    """`exc` with its remote traceback as a note, or a stand-in if it cannot be pickled.

    Args:
        exc: What the body raised.
        where: Where it ran, for the note and the stand-in ("a Ray worker").
        dumps: The pickler the backend sends it home with.
    """
    with contextlib.suppress(Exception):
        trace = "".join(traceback.format_tb(exc.__traceback__))
        exc.add_note(f"Raised on {where} (pid {os.getpid()}):\n{trace.rstrip()}")
    try:
        # A round trip, because some exceptions pickle but fail to unpickle (a custom
        # __init__ signature); the bytes are our own.
        pickle.loads(dumps(exc))  # noqa: S301
    except Exception as why:
        try:
            text = str(exc)
        except Exception:
            text = "<unprintable>"
        name = f"{type(exc).__module__}.{type(exc).__qualname__}"
        return RuntimeError(
            f"the body raised {name}: {text} (the exception could not be sent back from "
            f"{where}: {type(why).__name__}: {why})"
        )
    return exc
