"""`KeyedWorkCoordinator`: per-key ordered work on per-key child actors (SPEC section 5).

Each key with pending or running work has a child actor (`KeyChild`, a `PoolActor`
on the shared dispatcher, so children cost no thread). The child holds its key's
FIFO queue and running count. When it may start one more item (fewer than
`max_concurrency_per_key` running and an item waiting) it stands in the core's
*ready queue*, which is how it asks the supervisor for a global slot; workers
pull from the ready queue. A busy key is simply not in the ready queue, so it
never holds a global slot while waiting and never blocks other keys — no
head-of-line blocking.

A child whose key has been idle for `key_idle_timeout` is reaped: stopped and
forgotten, so memory follows active keys. A key seen again gets a new child.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Unpack, overload

from ephemeral_actors._coordinators._arguments import split_keyed_arguments
from ephemeral_actors._coordinators._base import CoordinatorBase
from ephemeral_actors._coordinators._core import Core
from ephemeral_actors._dispatch import DISPATCHER, PoolActor, Timer
from ephemeral_actors._options import merge_options

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Awaitable, Callable, Iterable

    from ephemeral_actors._operation import Operation
    from ephemeral_actors._options import CoordinatorOptions, OptionsKwargs
    from ephemeral_actors._records import OperationSnapshot

__all__ = ["KeyChild", "KeyedWorkCoordinator"]

T = TypeVar("T")
K = TypeVar("K")


@dataclass(frozen=True, slots=True)
class GetKeyState:
    """Ask a `KeyChild` for `(pending, running)` of its key."""


class KeyChild(PoolActor):
    """The child actor of one key: its FIFO queue and running count.

    The queue and count are still written in the supervisor's turn (the supervisor
    owns its children's registry and, for now, their queues); the child answers state
    queries and holds the key's identity and lifecycle.
    """

    __slots__ = ("core", "idle_since", "in_ready", "key", "queue", "running")

    def __init__(self, core: KeyedCore, key: Any) -> None:
        super().__init__()
        self.core = core
        self.key = key
        self.queue: collections.deque[tuple[Operation, Any]] | None = None
        self.running = 0
        self.in_ready = False
        self.idle_since = 0.0

    def on_receive(self, message: Any) -> Any:
        if type(message) is GetKeyState:
            queue = self.queue
            return (len(queue) if queue else 0, self.running)
        return super().on_receive(message)

    def __repr__(self) -> str:
        pending = len(self.queue) if self.queue else 0
        return f"<KeyChild key={self.key!r} pending={pending} running={self.running}>"


class KeyedCore(Core):
    """The core with per-key children, a ready queue and idle-key reaping."""

    def __init__(
        self,
        key_selector: Callable[[Any], Any],
        body: Callable[[Any], Any],
        options: CoordinatorOptions,
    ) -> None:
        if not callable(key_selector):
            raise TypeError(
                f"key_selector must be callable, got {type(key_selector).__name__} {key_selector!r}"
            )
        self.key_of = key_selector
        self.per_key = options.max_concurrency_per_key
        self.fair_threshold = (
            options.fair_scheduling_threshold if options.enable_fair_scheduling else 0
        )
        self.idle_timeout = options.key_idle_timeout
        self.children: dict[Any, KeyChild] = {}
        self.ready: collections.deque[KeyChild] = collections.deque()
        self.idle_keys: dict[Any, KeyChild] = {}
        self.reap_timer: Timer | None = None
        super().__init__(body, options, kind="keyed")
        DISPATCHER.acquire()

    def key_pending(self, raw_key: Any) -> int:
        child = self.children.get(raw_key)
        return len(child.queue) if child is not None and child.queue else 0

    def _push(self, op: Operation, item: Any) -> None:
        key = op._raw_key
        child = self.children.get(key)
        if child is None:
            child = self.children[key] = KeyChild.spawn(self, key)
        elif child.running == 0 and not child.queue:
            self.idle_keys.pop(key, None)
        queue = child.queue
        if queue is None:
            queue = child.queue = collections.deque()
        queue.append((op, item))
        self.npending += 1
        if not child.in_ready and child.running < self.per_key:
            child.in_ready = True
            self.ready.append(child)

    def _pop(self) -> tuple[Operation, Any] | None:
        ready = self.ready
        while ready:
            child = ready.popleft()
            child.in_ready = False
            queue = child.queue
            if not queue or child.running >= self.per_key:
                continue
            entry = queue.popleft()
            child.running += 1
            self.npending -= 1
            if queue:
                if child.running < self.per_key:
                    child.in_ready = True
                    ready.append(child)  # to the back: keys take turns
            else:
                child.queue = None
            return entry
        return None

    def _take_all(self) -> list[tuple[Operation, Any]]:
        dropped: list[tuple[Operation, Any]] = []
        now = time.monotonic()
        for child in self.children.values():
            if child.queue:
                dropped.extend(child.queue)
                child.queue = None
                if child.running == 0:
                    self._went_idle(child, now)
            child.in_ready = False
        self.ready.clear()
        self.npending = 0
        return dropped

    def _op_ended(self, op: Operation) -> None:
        child = self.children.get(op._raw_key)
        if child is None:  # pragma: no cover - a running key is never reaped
            return
        child.running -= 1
        if child.queue:
            if not child.in_ready:
                child.in_ready = True
                self.ready.append(child)
        elif child.running == 0:
            self._went_idle(child, time.monotonic())

    def _went_idle(self, child: KeyChild, now: float) -> None:
        child.idle_since = now
        self.idle_keys[child.key] = child
        if self.reap_timer is None and not self.closing:
            self.reap_timer = DISPATCHER.call_later(self.idle_timeout, self._reap_due)

    # -- reaping ---------------------------------------------------------------------------

    def _reap_due(self) -> None:
        """Timer callback (a dispatcher thread): timers are messages to the owner."""
        self.mailbox.post((self._on_reap, None))

    def _on_reap(self, _: object) -> int:
        """Stop the children of keys idle for `key_idle_timeout`; return how many."""
        reaped: list[KeyChild] = []
        self.reap_timer = None
        cutoff = time.monotonic() - self.idle_timeout
        idle = self.idle_keys
        while idle:
            key, child = next(iter(idle.items()))
            if child.idle_since > cutoff:
                delay = child.idle_since - cutoff
                if not self.closing:
                    self.reap_timer = DISPATCHER.call_later(delay, self._reap_due)
                break
            del idle[key]
            del self.children[key]
            reaped.append(child)
        for child in reaped:
            if not child.stop_if_idle():
                child.actor_ref.stop(block=False)
        return len(reaped)

    def reap_idle(self) -> int:
        """Stop the children of keys idle for `key_idle_timeout`; return how many."""
        return int(self.call(self._on_reap, None))

    def _on_release_children(self, _: object) -> list[KeyChild]:
        if self.reap_timer is not None:
            self.reap_timer.cancel()
            self.reap_timer = None
        children = list(self.children.values())
        self.children.clear()
        self.idle_keys.clear()
        self.ready.clear()
        return children

    def actor_stats_in_turn(self) -> list[tuple[str, int, int, int]]:
        rows = super().actor_stats_in_turn()
        rows.insert(2, ("key", len(self.children), 0, self.key_messages))
        return rows

    key_messages = 0

    def _release_runtime(self, deadline: float | None) -> None:
        children: list[KeyChild] = self.call(self._on_release_children, None)
        for child in children:
            if not child.stop_if_idle():
                child.actor_ref.stop(block=False)
        for thread in DISPATCHER.release():
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        super()._release_runtime(deadline)


class KeyedWorkCoordinator(CoordinatorBase[T], Generic[T, K]):
    """A coordinator that keeps the items of each key in order.

    Items with equal keys start in enqueue order, at most
    `max_concurrency_per_key` at a time; different keys run in parallel up to
    `max_concurrency`. A busy key never blocks the others.

    Build it as `KeyedWorkCoordinator(key_selector, body, options=None, **option_fields)`
    or, in the order `for_each` uses, `KeyedWorkCoordinator(body, options=None,
    key=key_selector, **option_fields)`. Passing both forms, or a key selector that
    is a coroutine function, raises `TypeError`.

    Example:
        ```python
        def apply(event):
            ...

        with KeyedWorkCoordinator(lambda e: e.account_id, apply) as ledger:
            for event in events:
                ledger.enqueue(event)  # each account's events apply in order
        ```
    """

    _kind = "keyed"

    @overload
    def __init__(
        self,
        key_selector: Callable[[T], K],
        body: Callable[[T], Any] | Callable[[T], Awaitable[Any]],
        options: CoordinatorOptions | None = None,
        **option_fields: Unpack[OptionsKwargs],
    ) -> None: ...
    @overload
    def __init__(
        self,
        body: Callable[[T], Any] | Callable[[T], Awaitable[Any]],
        options: CoordinatorOptions | None = None,
        *,
        key: Callable[[T], K],
        **option_fields: Unpack[OptionsKwargs],
    ) -> None: ...
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Build from `(key_selector, body, options=None, **option_fields)` or `(body, key=...)`.

        Raises:
            TypeError: Both forms at once, a coroutine-function key selector, or an
                unknown option keyword.
        """
        key_selector, body, options, option_fields = split_keyed_arguments(
            args, kwargs, where="KeyedWorkCoordinator"
        )
        self._key_selector = key_selector
        super().__init__(body, merge_options(options, option_fields, where="KeyedWorkCoordinator"))

    def _make_core(self, body: Callable[[T], Any], options: CoordinatorOptions) -> Core:
        return KeyedCore(self._key_selector, body, options)

    @overload
    @classmethod
    def from_iterable(
        cls,
        source: Iterable[T] | AsyncIterable[T],
        key_selector: Callable[[T], K],
        body: Callable[[T], Any] | Callable[[T], Awaitable[Any]],
        options: CoordinatorOptions | None = None,
        **option_fields: Unpack[OptionsKwargs],
    ) -> KeyedWorkCoordinator[T, K]: ...
    @overload
    @classmethod
    def from_iterable(
        cls,
        source: Iterable[T] | AsyncIterable[T],
        body: Callable[[T], Any] | Callable[[T], Awaitable[Any]],
        options: CoordinatorOptions | None = None,
        *,
        key: Callable[[T], K],
        **option_fields: Unpack[OptionsKwargs],
    ) -> KeyedWorkCoordinator[T, K]: ...
    @classmethod
    def from_iterable(
        cls, source: Iterable[Any] | AsyncIterable[Any], *args: Any, **kwargs: Any
    ) -> KeyedWorkCoordinator[Any, Any]:
        """Build a keyed coordinator fed from `source` (see `WorkCoordinator.from_iterable`).

        Takes the same two forms as the constructor: `(source, key_selector, body, ...)`
        or `(source, body, key=key_selector, ...)`.
        """
        coordinator = cls(*args, **kwargs)
        coordinator._start_source(source)
        return coordinator

    def try_enqueue(self, item: T) -> bool:
        """Accept `item` if that needs no waiting.

        Returns False for a full or closed coordinator, when `key_selector` raises,
        and — with fair scheduling on — when the item's key already has
        `fair_scheduling_threshold` pending items.
        """
        return super().try_enqueue(item)

    @property
    def active_keys(self) -> int:
        """Keys that currently have a child actor (pending, running or recently idle)."""
        core = self._keyed
        return int(core.call(lambda: len(core.children)))

    @property
    def _keyed(self) -> KeyedCore:
        core = self._core
        assert isinstance(core, KeyedCore)
        return core

    def get_pending_count_for_key(self, key: K) -> int:
        """Items of `key` accepted and not yet started (0 for unknown keys).

        `key` is compared as the key selector returns it (`7`, not `"7"`); snapshot
        and signal queries per key compare `str(key)`, as snapshots hold it.
        """
        core = self._keyed
        return int(core.call(core.key_pending, key))

    def has_signal_for_key(self, key: K, name: str) -> bool:
        """True if an operation of `key` in the window emitted `name`."""
        wanted = str(key)
        return bool(self.get_signals(lambda e: e.key == wanted and e.signal == name))

    def count_signals_for_key(self, key: K) -> int:
        """How many signals the window's operations of `key` emitted."""
        return len(self.get_signals_by_key(key))

    def get_snapshot_for_key(self, key: K) -> tuple[OperationSnapshot, ...]:
        """The window's operations of `key`, oldest first."""
        wanted = str(key)
        return tuple(s for s in self.get_snapshot() if s.key == wanted)
