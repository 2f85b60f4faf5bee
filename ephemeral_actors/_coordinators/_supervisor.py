"""The supervisor actor and the coordinator state it alone owns.

Message flow (docs/concepts.md draws it):

* **Intake.** `enqueue` computes the key in the caller's thread, then posts one
  `accept` message to the supervisor's mailbox. If the supervisor is idle the caller
  runs its turn right there (see `ephemeral_actors._mailbox`): the item joins the
  backlog, a worker slot is given out, and the `(operation, item)` pair is posted to
  a worker's mailbox. The caller gets its operation id at the end of that turn.
* **Workers.** A worker (a thread for plain bodies, a task on the event loop for
  coroutine bodies) runs what its mailbox holds and posts each outcome back to the
  supervisor. The worker that reports is idle again and, being awake, is the first
  one the supervisor hands the next item to: a busy coordinator wakes no thread.
* **Supervisor.** Only its turn writes the backlog, window, counters, worker set,
  marks and waiters. Control calls, state queries, signal routing, timers and the
  Pykka `tell`/`ask` messages of `ephemeral_actors.messages` are all messages to it.
  At the end of every turn it answers the requests of the turn (and resolves its
  futures), so a reader sees every write of a call that returned. A single counter
  is read from its field; several at one instant are an ask (`stats()`).
* **Callbacks.** `on_sample` and observers run on the coordinator's callbacks actor
  (a thread of its own, started with the first callback), never in the supervisor's
  turn; it reports back when they returned, which is when `drain()` may return.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import itertools
import logging
import queue
import sys
import threading
import types
import weakref
from asyncio import Future as _AsyncioFuture
from asyncio.events import _get_running_loop
from collections import deque
from concurrent.futures import InvalidStateError
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

import pykka
from pykka._envelope import Envelope

from ephemeral_actors import messages as m
from ephemeral_actors._admission import Admission
from ephemeral_actors._coordinators._attempts import Attempts
from ephemeral_actors._coordinators._backlog import Backlog, FifoBacklog
from ephemeral_actors._coordinators._callbacks import Callbacks
from ephemeral_actors._coordinators._completions import CompletionStream, deliver
from ephemeral_actors._coordinators._exit import forget_at_exit, track_until_exit
from ephemeral_actors._coordinators._failures import FailureLog, label_of
from ephemeral_actors._coordinators._future import OperationFuture
from ephemeral_actors._coordinators._key import STABLE_KEY_TYPES, file_key
from ephemeral_actors._coordinators._limits import SCHEDULE_CLOCK
from ephemeral_actors._coordinators._loops import LoopBinding, bind_running_loop, loop_lost
from ephemeral_actors._coordinators._requests import (
    BLOCK,
    FORCE,
    PROBE,
    TRY,
    TRY_OWN,
    Call,
    Draw,
    Intake,
    Scheduled,
    Wait,
    resolve,
)
from ephemeral_actors._coordinators._schedule import Schedule, scheduled_request
from ephemeral_actors._coordinators._signaling import SignalRouter
from ephemeral_actors._coordinators._source import SOURCE_GRACE, AsyncFeeder, SourceThread
from ephemeral_actors._coordinators._spawner import Spawner, start_worker
from ephemeral_actors._coordinators._window import CLOCK, SET_ASIDE, Window, snapshot_of
from ephemeral_actors._coordinators._workers import (
    CANCELLED,
    COMPLETED,
    FAILED,
    RUNNING,
    AsyncWorker,
    ThreadWorker,
    WorkerBase,
)
from ephemeral_actors._deadline import deadline_after, remaining
from ephemeral_actors._dispatch import _StopFlag, call_later, give_back
from ephemeral_actors._errors import (
    CoordinatorClosedError,
    CoordinatorFaultedError,
    CoordinatorFullError,
    DynamicConcurrencyDisabledError,
    OperationCancelledError,
    SignalCancelledError,
    WorkerCrashError,
)
from ephemeral_actors._exc import copy_error as _copy_error
from ephemeral_actors._exc import detach as _detach
from ephemeral_actors._ids import next_operation_id
from ephemeral_actors._mailbox import (
    BUSY,
    CHECK_OWNERSHIP,
    Mailbox,
    Reply,
    _get_ident,
    _in_turn,
    _leave_checked,
    check_owner,
    handle_envelope,
    interrupts_caller,
)
from ephemeral_actors._operation import Operation, running_operation
from ephemeral_actors._options import resolve_concurrency
from ephemeral_actors._owned import claim, owned_deque, owned_list
from ephemeral_actors._pykka_registry import register, stopped, unregister
from ephemeral_actors._records import (
    ActorStats,
    CoordinatorStats,
    OperationSnapshot,
)
from ephemeral_actors._runtime import SHARED_LOOP
from ephemeral_actors._validate import check_int

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ephemeral_actors._options import CoordinatorOptions
    from ephemeral_actors._signals import SignalEvent, SignalPropagation

__all__ = ["BLOCK", "FORCE", "TRY", "CoordinatorState", "Core", "Supervisor"]

logger = logging.getLogger("ephemeral_actors")


class CoordinatorState(enum.Enum):
    """Lifecycle of a coordinator; transitions only move down this list."""

    RUNNING = "running"
    """Accepting and processing work."""
    COMPLETING = "completing"
    """Intake closed by `complete()`; the backlog is still processed."""
    CANCELLED = "cancelled"
    """Intake closed, backlog dropped, running operations asked to cancel."""
    FAULTED = "faulted"
    """The supervisor actor died; waiters were released with `CoordinatorFaultedError`."""
    CLOSED = "closed"
    """All actors and threads stopped; queries answer the final state."""

    # Members are singletons compared by identity, so an identity hash is exact; Enum's
    # own __hash__ is a Python call, paid at every state change (dict and set lookups).
    __hash__ = object.__hash__


_CLOSED_AT_ONCE: Final = object()
"""`_on_begin_close`'s answer when the whole close fitted in its turn."""
_OPEN: Final = CoordinatorState.RUNNING
"""Read on every turn: a module constant is ten times cheaper than `Enum.MEMBER`."""
_COMPLETING: Final = CoordinatorState.COMPLETING
_ORDER = {s: i for i, s in enumerate(CoordinatorState)}
_PROCESSING = frozenset({CoordinatorState.RUNNING, CoordinatorState.COMPLETING})


def _item_preparer(backend: Any) -> Callable[[Any], Any] | None:
    """What intake calls on each item offered to a coordinator that runs on `backend`.

    The backend's `prepare_item` (it returns what the wrapped body will receive), else
    its `check_item` (it raises for a bad item, which then goes on as given).
    """
    prepare = getattr(backend, "prepare_item", None)
    if prepare is not None:
        return cast("Callable[[Any], Any]", prepare)
    check = getattr(backend, "check_item", None)
    if check is None:
        return None

    def checked(item: Any) -> Any:
        check(item)
        return item

    return checked


def _is_coroutine_function(fn: Any) -> bool:
    if type(fn) is types.FunctionType:
        # The common case, read straight from the code flags (inspect's checks cost
        # microseconds, paid by every coordinator built).
        return bool(fn.__code__.co_flags & inspect.CO_COROUTINE)
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    return call is not None and inspect.iscoroutinefunction(call)


# -- the supervisor actor -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Prepared:
    """An actor's `Enqueue`/`Submit` whose item was prepared in the sender's thread."""

    request: Intake
    submit: bool


def _intake_arguments(
    item: Any, priority: int = 0, delay: float | None = None
) -> tuple[Any, int, float | None]:
    """A proxy's `enqueue`/`submit` arguments, bound as `Supervisor.enqueue` takes them."""
    return item, priority, delay


class _Inbox:
    """Pykka's view of the supervisor's mailbox: `tell`/`ask` envelopes become messages."""

    __slots__ = ("core",)

    def __init__(self, core: Core) -> None:
        self.core = core

    def put(self, envelope: Any, /) -> None:
        # Runs in the sender's thread. An item's user code (key selector, describe, a
        # backend's item check) runs here, never in the supervisor's turn: the item
        # travels on as a prepared request (SPEC 14).
        message = envelope.message
        kind = type(message)
        if kind is m.Enqueue or kind is m.Submit:
            item, priority, delay = message.item, message.priority, message.delay
        elif kind is pykka.messages.ProxyCall and message.attr_path in (
            ("enqueue",),
            ("submit",),
        ):
            try:
                item, priority, delay = _intake_arguments(*message.args, **message.kwargs)
            except TypeError:  # the turn's call raises it to the asker, as Pykka would
                self.core.mailbox.post(envelope)
                return
            kind = m.Enqueue if message.attr_path == ("enqueue",) else m.Submit
        else:
            self.core.mailbox.post(envelope)
            return
        future: OperationFuture[Any] | None = OperationFuture() if kind is m.Submit else None
        try:
            request = self.core.prepare_actor_intake(item, future, priority, delay)
        except BaseException as exc:
            # A tell has nobody to raise to; an ask gets it. Either way it never reaches
            # Pykka, which would stop the actor (for a BaseException, every actor).
            if envelope.reply_to is not None:
                envelope.reply_to.set_exception((type(exc), exc, exc.__traceback__))
            else:
                logger.exception(
                    f"coordinator {self.core.name!r} rejected {kind.__name__}: "
                    "preparing its item raised"
                )
            return
        prepared = _Prepared(request, kind is m.Submit)
        self.core.mailbox.post(Envelope(prepared, reply_to=envelope.reply_to))

    def empty(self) -> bool:
        return not len(self.core.mailbox)


class _ClosedInbox(_Inbox):
    """A closed coordinator's inbox (`Core._refer_back_weakly` swaps the class in).

    It holds the core weakly: a tell that passed Pykka's liveness test just before the
    close, and came after the facade and the core were gone, is refused as Pykka
    refuses a stopped actor's. Open inboxes never pay for the test.
    """

    __slots__ = ()

    def put(self, envelope: Any, /) -> None:
        try:
            self.core.__class__  # noqa: B018 - a dead proxy raises on any access
        except ReferenceError:
            raise pykka.ActorDeadError("the coordinator's supervisor is stopped") from None
        super().put(envelope)


def _snapshots_of(ops: list[Operation]) -> list[OperationSnapshot]:
    """The snapshots of `ops` (in the supervisor's turn: it owns their records)."""
    return [snapshot_of(op, False) for op in ops]


_SUPERVISOR_URNS = itertools.count(1)


class Supervisor(pykka.Actor):
    """The coordinator's supervisor actor: control, queries, supervision.

    Other actors talk to it with the messages of `ephemeral_actors.messages`, or
    through a proxy (`coordinator.proxy()`), whose methods mirror those messages.
    It has no thread of its own: its turns run on the thread that finds it idle.
    A `tell` (or a proxy's `.defer()`) the coordinator rejects is logged, never
    raised: raising would stop the supervisor.
    """

    def __init__(self, core: Core) -> None:
        # pykka.Actor.__init__, except that `actor_stopped` makes its Event (a
        # Condition, a lock, a deque) only if someone waits on it: most coordinators
        # are closed without anybody waiting for their supervisor to stop.
        self._core = core
        # A counter-based URN, as for pool actors: unique within the process, and a
        # uuid4 (os.urandom, a UUID object, formatting) was a tenth of building an
        # unused coordinator.
        self.actor_urn = f"urn:ephemeral-actors:Supervisor:{next(_SUPERVISOR_URNS)}"
        self.actor_inbox = self._create_actor_inbox()
        self.actor_stopped = _StopFlag()  # type: ignore[assignment]
        self._actor_ref = pykka.ActorRef(self)

    def _create_actor_inbox(self) -> Any:  # type: ignore[override]
        return _Inbox(self._core)

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return OperationFuture()

    def _start_actor_loop(self) -> None:
        # Turns run on the threads that post (and on the shared dispatcher when a turn
        # runs long): nothing to start.
        return

    def __repr__(self) -> str:
        return f"<Supervisor {self._core.name}>"

    def on_receive(self, message: Any) -> Any:
        return self._core.receive_public(message)

    # Proxy surface: one method per public message.

    def enqueue(self, item: Any, priority: int = 0, delay: float | None = None) -> int:
        """Accept `item` (past the backlog bound: an actor cannot wait); its op id."""
        return self._core.enqueue_in_turn(item, None, priority, delay).id

    def submit(self, item: Any, priority: int = 0, delay: float | None = None) -> pykka.Future[Any]:
        """Accept `item`; a future of its outcome."""
        future: OperationFuture[Any] = OperationFuture()
        self._core.enqueue_in_turn(item, future, priority, delay)
        return future

    def stats(self) -> CoordinatorStats:
        """Every counter, read at one instant."""
        return self._core.stats_in_turn()

    def get_snapshot(self) -> tuple[OperationSnapshot, ...]:
        """The operation window, oldest first."""
        return self._core.snapshot_in_turn(with_results=self._core.capture_results)

    def pause(self) -> None:
        """Stop starting new operations."""
        self._core.pause()

    def resume(self) -> None:
        """Start operations again."""
        self._core.resume()

    def complete(self) -> None:
        """Close intake; the backlog is still processed."""
        self._core.complete()

    def cancel(self) -> None:
        """Close intake, drop the backlog, ask running operations to cancel."""
        self._core.cancel()

    def set_max_concurrency(self, limit: int) -> None:
        """Change the global concurrency limit."""
        self._core.set_max_concurrency(limit)

    def pin(self, op_id: int) -> bool:
        """Protect an operation from window trims; True if found."""
        return self._core.set_pinned(op_id, True)

    def unpin(self, op_id: int) -> bool:
        """Let an operation be trimmed again; True if found."""
        return self._core.set_pinned(op_id, False)

    def evict(self, op_id: int) -> bool:
        """Drop an operation from the window now; True if found."""
        return self._core.evict(op_id)

    def _stop(self) -> None:
        # pykka.Actor._stop, with the registry's debug messages formatted only when
        # logged (`_pykka_registry`): closing a coordinator ends here.
        stopped(self)
        try:
            self.on_stop()
        except Exception:  # Pykka's own handling of a failing on_stop
            self._handle_failure(*sys.exc_info())

    def on_stop(self) -> None:
        if not self._core.closing:
            self._core.fault(None)


STALE_FAST_PATHS: list[str] = []
"""Ownership check mode: what `Core.check_fast_paths` found (the test suite fails on it)."""

_CRASH_ATTEMPTS: Final = 8
"""How often `Core._crashed` tries to record the fault when interrupted while doing it."""

_FIELDS_NOT_OWNED = frozenset(
    {
        # Set once while the core is built, or handles the facade keeps (not actor state).
        "feeder",
        "loop_refs",
        "closed_event",
    }
)


class Core:
    """The supervisor's state and behaviour; every `_on_*` method runs in its turn."""

    # Slots, not a `__dict__`: a core has about seventy fields, past what CPython's
    # shared-key instance dicts hold, so with a dict every hot-path field read took the
    # dict-lookup path and building a core resized its dict four times. Slotted, a
    # field read is an indexed load, and an unused coordinator is 4 µs cheaper to build.
    __slots__ = (
        "__weakref__",
        "_built",
        "accept_default",
        "accept_unchecked",
        "async_probe",
        "attempts",
        "backend",
        "backend_cancel",
        "backlog",
        "body",
        "bound",
        "callbacks",
        "cancel_on_failure",
        "cancelled",
        "capture_results",
        "closed_event",
        "closing",
        "completed",
        "crashes",
        "deferring",
        "describe",
        "draws_collections",
        "draws_keyed",
        "enqueued",
        "failed",
        "failures",
        "fair_threshold",
        "fault_error",
        "feeder",
        "fifo",
        "holds_shared_loop",
        "idle",
        "is_async",
        "key_of",
        "kind",
        "lifetime",
        "limit",
        "loop",
        "loop_refs",
        "low_water",
        "mailbox",
        "max_restarts",
        "name",
        "now",
        "npending",
        "observers",
        "on_sample",
        "options",
        "orphaned",
        "outcomes",
        "outcomes_sent",
        "paused",
        "plain_end",
        "plain_start",
        "prepare_item",
        "processing",
        "replies",
        "restart_window",
        "retired_processed",
        "router",
        "running",
        "schedule",
        "schedule_clock",
        "signals_dropped",
        "signals_emitted",
        "source_error",
        "source_open",
        "source_traceback",
        "space_waiters",
        "spawner",
        "state",
        "streams",
        "supervisor",
        "supervisor_ref",
        "unsettled",
        "uses_dispatcher",
        "waiters",
        "waiters_settled",
        "window",
        "worker_numbers",
        "worker_restarts",
        "workers",
    )

    def __init__(
        self,
        body: Callable[[Any], Any],
        options: CoordinatorOptions,
        *,
        kind: str,
        capture_results: bool = False,
        backlog: Backlog | None = None,
        key_selector: Callable[[Any], Any] | None = None,
    ) -> None:
        if not callable(body):
            raise TypeError(f"body must be callable, got {type(body).__name__} {body!r}")
        # First, and past the ownership check's __setattr__, which reads it.
        object.__setattr__(self, "_built", False)
        self.retired_processed = 0
        self.options = options
        self.kind = kind
        self.name = options.name or f"{kind}-{next_operation_id() & 0xFFFFFF:06x}"
        self.is_async = _is_coroutine_function(body)
        # The default limit follows the user's body (a coroutine body: I/O-bound work).
        limit = resolve_concurrency(options, is_async=self.is_async)
        self.backend = options.backend
        if self.backend is not None and type(self.backend).__name__ != "InProcessBackend":
            # A backend turns the body into a callable that runs it elsewhere: a plain
            # one blocks its worker thread, a coroutine function runs on the loop.
            body = self.backend.wrap(body, is_async=self.is_async)
            self.is_async = _is_coroutine_function(body)
        self.body = body
        # Optional backend hooks (SPEC 17): check an item before it is accepted, or
        # prepare what the wrapped body will receive (in the sender's thread), and
        # withdraw a running operation's remote work.
        self.prepare_item = None if self.backend is None else _item_preparer(self.backend)
        self.backend_cancel: Callable[[int], bool] | None = (
            None if self.backend is None else getattr(self.backend, "cancel", None)
        )
        self.capture_results = capture_results
        self.bound = options.max_tracked_operations
        # Blocked producers are let in once the backlog is down to this, not at every
        # freed slot: one wake-up then admits a burst instead of one item per wake-up.
        self.low_water = self.bound - max(1, self.bound // 4)
        self.lifetime = options.max_operation_lifetime
        self.on_sample = options.on_sample
        self.max_restarts = options.max_restarts
        self.restart_window = options.restart_window

        self.state = CoordinatorState.RUNNING
        self.processing = True  # state in _PROCESSING, kept as a bool for the hot path
        self.closing = False
        self.fault_error: CoordinatorFaultedError | None = None

        self.npending = 0
        self.window = Window(options.max_tracked_operations, options.max_operation_lifetime)
        self.backlog: Backlog = FifoBacklog() if backlog is None else backlog
        # A plain FIFO backlog's deque, which the busy turn pops without a call (None
        # for any other backlog). It holds every pending item while no priority is in
        # play; with one, it is empty and the backlog's own `pop` takes over.
        self.fifo = self.backlog.items if type(self.backlog) is FifoBacklog else None
        self.fair_threshold = self.backlog.fair_threshold
        self.key_of = key_selector
        # What `accept` calls for an item without a priority or a delay (None: the
        # general path for every item). Items with a label take the general path.
        self.accept_default: Callable[[Any, Any, float | None, int], Operation | None] | None = (
            None
            if options.describe is not None
            else self.accept_plain
            if key_selector is None
            else self.accept_keyed
        )
        self.accept_unchecked = self.accept_default
        # The async intake's fast path (`accept_async`): not for labelled items, nor for
        # a backend's, whose payload would be prepared twice when the probe is refused.
        self.async_probe = options.describe is None and self.prepare_item is None
        # `enqueue_many` and sources of in-memory collections go as one `Draw` (plain
        # items only: a key selector, label or backend check is user code, which runs
        # outside the turn). Coroutine bodies keep their per-item intake: a draw's
        # turn may run on their loop, and a large one would hold it (`AsyncFeeder`).
        self.draws_collections = self.async_probe and key_selector is None and not self.is_async
        # A keyed `enqueue_many` draws too, its keys computed by the sender beforehand.
        self.draws_keyed = self.async_probe and key_selector is not None and not self.is_async
        if self.accept_default is not None and self.prepare_item is not None:
            # A keyed item's key comes from the item as given, not as prepared: keyed
            # items of a backend take the general path, which keeps both.
            self.accept_default = None if key_selector is not None else self.accept_checked
        self.now = CLOCK.get()
        self.running = 0
        self.limit = limit
        self.paused = False
        self.deferring = False
        self.enqueued = 0
        self.completed = 0
        self.failed = 0
        self.cancel_on_failure = False
        self.cancelled = 0
        self.unsettled = 0
        self.signals_dropped = 0
        self.signals_emitted = 0
        self.worker_restarts = 0
        self.crashes: deque[float] = deque()
        # Deadlines and retries (SPEC 16); None keeps the dispatch path free of them.
        self.attempts: Attempts | None = None
        if options.item_timeout is not None or options.retry is not None:
            self.attempts = Attempts(self, options.item_timeout, options.retry)

        self.workers: list[WorkerBase] = []
        self.spawner: Spawner | None = None
        """Starts every worker thread but the first (`_spawner`); made with the second."""
        self.idle: list[WorkerBase] = []
        self.worker_numbers = 0
        self.space_waiters: deque[Intake | Draw] = deque()
        self.waiters: list[Wait] = []
        # Every waiter waits for all accepted work to settle: none can be answered while
        # `unsettled` (and no fault), so a busy turn need not check them.
        self.waiters_settled = True
        self.replies: list[Reply] = []
        # (future, True: result / False: error / None: cancelled, value)
        self.outcomes: list[tuple[Any, bool | None, Any]] = []
        self.outcomes_sent = 0  # see `_end_turn`
        self.callbacks: Callbacks | None = None
        self.observers: tuple[Callable[[OperationSnapshot], None], ...] = ()
        self.uses_dispatcher = False

        self.source_open = False
        self.source_error: BaseException | None = None
        self.source_traceback: types.TracebackType | None = None
        """`source_error`'s traceback as the source left it (`source_failed`)."""
        self.feeder: SourceThread | AsyncFeeder | None = None
        self.loop_refs = 0
        self.closed_event = _StopFlag()  # an Event made only if close() has to wait
        self.orphaned = False  # the facade was garbage-collected without close()
        self.describe = options.describe
        self.failures = FailureLog(options.max_tracked_failures, options.max_operation_lifetime)
        self.streams: list[CompletionStream] = []
        self.loop: LoopBinding | None = None

        self.mailbox = Mailbox(self, self._receive, self._end_turn, self._handoff, self._crashed)
        self.holds_shared_loop = False
        if self.is_async:
            # Bound to the caller's running loop, or to the shared one with the first
            # item (hold_shared_loop): building a coordinator starts no thread.
            self.loop = bind_running_loop()
        self.router = SignalRouter(self, options)
        if CHECK_OWNERSHIP:
            # The structures built above without an owner get one (a keyed backlog
            # names its core itself).
            for part in (self.window, self.failures, self.backlog):
                if hasattr(type(part), "owner"):
                    claim(part, self)
            # Its containers check their writes too. Swapped in here, not built so:
            # outside the mode a factory call per container cost 9 % of creating and
            # closing an unused coordinator (valgrind).
            self.crashes = owned_deque(self)
            self.workers = owned_list(self)
            self.idle = owned_list(self)
            self.space_waiters = owned_deque(self)
            self.waiters = owned_list(self)
        # Delays and rate limits (SPEC 16) read a monotonic clock; built without a rate
        # limit, the schedule only comes with the first delayed item.
        self.schedule_clock = SCHEDULE_CLOCK.get()
        self.schedule: Schedule | None = None
        if options.rate_limit is not None or (
            options.rate_limit_per_key is not None and key_selector is not None
        ):
            self.schedule = Schedule(self)
        # The core holds the actor itself: an ActorRef only keeps a weak reference, and
        # this actor has no thread to keep it alive.
        self.plain_end = self.plain_start = False
        self.refresh_fast_paths()
        self.supervisor = Supervisor(self)
        self.supervisor_ref: pykka.ActorRef[Supervisor] = self.supervisor.actor_ref
        register(self.supervisor_ref)
        self._built = True
        track_until_exit(self)

    if CHECK_OWNERSHIP:

        def __setattr__(self, name: str, value: Any) -> None:
            if self._built and name not in _FIELDS_NOT_OWNED:
                check_owner(self, f"Core.{name}")
            object.__setattr__(self, name, value)

    def start(self) -> None:
        """Finish construction: things that may call back into a fully built core."""
        self.router.start()

    def refresh_fast_paths(self) -> None:
        """Recompute the busy turn's two flags; call after changing any field they read.

        `report_and_take` runs once per item and used to test nine fields to decide
        whether an outcome is plain and whether the next item may start at once; these
        change only on control calls, signals and the first delayed item. Ownership
        check mode verifies at every turn that no change was left out
        (`check_fast_paths`).
        """
        # An outcome with nothing but the counters and the window to update.
        self.plain_end = (
            self.attempts is None
            and not self.streams
            and not self.observers
            and self.on_sample is None
        )
        # The next item may start in the finishing turn with no check but the limit.
        self.plain_start = (
            not self.paused
            and self.processing
            and not self.deferring
            and not self.router.cancel_marks
            and self.schedule is None
        )

    def check_fast_paths(self) -> None:
        """Ownership check mode: fail if a flag of `refresh_fast_paths` is stale.

        Also recorded in `STALE_FAST_PATHS`: a turn run by a timer on the dispatcher
        thread logs what it raises, and the test suite fails on the record instead.
        """
        flags = (self.plain_end, self.plain_start)
        self.refresh_fast_paths()
        if (self.plain_end, self.plain_start) != flags:
            message = (
                f"coordinator {self.name!r}: stale fast-path flags {flags}; a change to a "
                "field they read did not call refresh_fast_paths()"
            )
            STALE_FAST_PATHS.append(message)
            raise AssertionError(message)

    def hold_shared_loop(self) -> None:
        """Take this coordinator's reference on the shared loop, once (before a spawn)."""
        if not self.holds_shared_loop:
            self.holds_shared_loop = True
            self.uses_shared_loop()

    def uses_shared_loop(self) -> None:
        """Hold a reference on the shared event loop until `close()`."""
        SHARED_LOOP.acquire()
        self.loop_refs += 1

    # -- the turn ----------------------------------------------------------------------

    def _receive(self, message: Any) -> None:
        """Handle one message (the mailbox calls this in the turn; it never raises)."""
        if type(message) is tuple:
            handler, arg = message
            try:
                handler(arg)
            except BaseException as exc:
                self.mailbox.torn = True  # before any call: see `Mailbox.torn`
                self._crashed(exc)
                if isinstance(arg, Reply):
                    self._answer_stranded(arg)
            return
        if type(message) is Envelope:
            self._receive_envelope(message)
            return
        logger.error(f"coordinator {self.name!r}: unexpected message {message!r}")

    def _answer_stranded(self, request: Reply) -> None:
        """Answer a request whose handler the supervisor's crash stopped (an interrupt).

        Its sender would otherwise wait for ever: the handler may have died before
        queueing the answer. It gets the answer the handler had set, or the fault.
        """
        if request.done or any(reply is request for reply in self.replies):
            return
        if request.error is None and request.value is None:
            request.error = self.faulted()
        self.replies.append(request)

    def _receive_envelope(self, envelope: Envelope[Any]) -> None:
        handle_envelope(self.supervisor, envelope, self._rejected)

    def _rejected(self, message: Any, error: BaseException) -> None:
        kind = type(message).__name__
        if type(message) is _Prepared:
            kind = "Submit" if message.submit else "Enqueue"
        logger.error(f"coordinator {self.name!r} rejected {kind}", exc_info=error)

    def _crashed(self, error: BaseException) -> None:
        """A handler raised: a bug in the supervisor. It dies, and the coordinator faults.

        An interrupt in its turn (Ctrl-C in the thread running it) is no bug, but it may
        have stopped the turn half-way: the supervisor dies of it just the same. Its
        caller marked the turn torn first (`Mailbox.torn`), with no call before the
        mark, so `close()` reconciles the counters even if what follows is cut short.
        """
        # A repeating signal can strike again anywhere in here, at any call: the state
        # is recorded first and retried until it stands (every step is idempotent), and
        # the log comes last. The second interrupt is dropped: the first one reaches the
        # caller. A bug in the fault path itself is raised, unless the supervisor dies
        # of an interrupt (which is what its caller must see).
        interrupted = False
        for _ in range(_CRASH_ATTEMPTS):
            try:
                interrupted = interrupts_caller(error)
                if interrupted:
                    self.mailbox.interrupt = error  # raised to the caller once the turn ends
                # A written-out turn (`accept_plain`, `report_and_take`) stores its holder
                # only when it needs it: the fault below may ask.
                self.mailbox.holder = _get_ident()
                with contextlib.suppress(Exception):  # an interrupt is retried, as above
                    actor = self.supervisor
                    if not actor.actor_stopped.is_set():
                        unregister(self.supervisor_ref)
                        actor.actor_stopped.set()
                self._fault(error)
                break
            except BaseException as again:
                if not (interrupted or interrupts_caller(again)):
                    raise
        if interrupted:
            with contextlib.suppress(BaseException):
                logger.error(
                    f"coordinator {self.name!r}: interrupted ({type(error).__name__}) "
                    "during a turn of its supervisor, whose state may be half-updated: "
                    "it faults"
                )
        else:
            logger.error(f"coordinator {self.name!r}: supervisor handler raised", exc_info=error)

    def _end_turn(self) -> None:
        # The written-out turns (`accept_plain`, `report_and_take`) skip this call unless
        # one of these four has work: a new duty here goes into their test too.
        if CHECK_OWNERSHIP:
            self.check_fast_paths()
        if self.orphaned:
            self._close_if_orphaned_and_idle()
        if self.waiters and (
            not self.unsettled or not self.waiters_settled or self.fault_error is not None
        ):
            self._check_waiters()
        replies = self.replies
        if replies:
            # Cleared after the loop, not before: an interrupt that stops it leaves the
            # rest listed for the next turn's end (`_finish` is idempotent).
            for reply in replies:
                reply._finish()
            self.replies = []
        outcomes = self.outcomes
        if outcomes:
            # As the answers above: the list is cleared only after the loop, so an
            # interrupt that stops it leaves the rest for the next turn's end (a future's
            # waiter is never left waiting). `outcomes_sent` is 1 + the index of the
            # outcome being resolved (0: no loop stopped half-way); that one may have been
            # resolved just before the stop, so a second try at it is no caller's doing.
            # Resolving one can run callbacks that append more: read to the end.
            retried = self.outcomes_sent - 1
            index = max(retried, 0)
            while index < len(outcomes):
                future, ok, value = outcomes[index]
                index += 1
                self.outcomes_sent = index
                try:
                    if ok and type(future) is OperationFuture:
                        future.set(value)  # resolve's usual case, without its frame
                    elif (
                        ok
                        and type(future) is _AsyncioFuture
                        and (future.get_loop() is _get_running_loop())
                    ):
                        # A `submit_async` whose body ran on its own loop: `resolve`'s
                        # on-the-loop case, without its three frames.
                        if not future.done():
                            future.set_result(value)
                    elif ok is None:
                        future._set_cancelled()
                    else:
                        resolve(future, ok, value)
                except (InvalidStateError, queue.Full):
                    if index - 1 != retried:
                        self._resolved_elsewhere(future)
            self.outcomes = []
            self.outcomes_sent = 0

    def _resolved_elsewhere(self, future: Any) -> None:
        # The caller resolved the future itself (`set_result` is public API): its value
        # stands, the operation's outcome is in the counters and its record, and the
        # turn goes on (it used to end here, and took the reporting worker with it).
        logger.warning(
            f"coordinator {self.name!r}: the future of operation "
            f"{getattr(future, 'operation_id', '?')} was already resolved by its caller; "
            "the operation's own outcome is in its record"
        )

    def _handoff(self, run: Callable[[], object]) -> None:
        call_later(self, 0.0, run)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` in the supervisor's turn and return its answer (an ask)."""
        mailbox = self.mailbox
        if mailbox.in_turn():
            # Called from the supervisor's own turn (its flag is ours): just run it.
            return fn(*args)
        # Idle with no mail: the turn is this thread's, so no request, no message and no
        # reply (as for intake). An exception is the caller's, as with a request; any
        # other (an interrupt) is the supervisor's crash, raised here as well.
        answer = mailbox.now(self._call_here, fn, args)
        if answer is not BUSY:
            if answer is None:
                raise self.faulted()
            value, error = answer
            if error is not None:
                raise error
            return value
        request = Call(fn, args)
        self.mailbox.post((self._on_call, request))
        if not request.done:
            request.wait(None)
        return request.result()

    def _call_here(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        try:
            return fn(*args), None
        except Exception as exc:
            return None, exc
        except BaseException as exc:
            self.mailbox.torn = True  # before any call: see `Mailbox.torn`
            self._crashed(exc)
            return None, exc

    def _on_call(self, request: Call) -> None:
        try:
            request.value = request.fn(*request.args)
        except Exception as exc:
            request.error = exc
        self.replies.append(request)

    # -- reading state -----------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"<{self.kind} {self.name!r} {self.state.value} pending={self.npending} "
            f"active={self.running} completed={self.completed} failed={self.failed} "
            f"cancelled={self.cancelled} limit={self.limit}>"
        )

    def is_drained_now(self) -> bool:
        return (
            self.state is not _OPEN
            and not self.source_open
            and not self.npending
            and self.running == 0
        )

    def stats(self) -> CoordinatorStats:
        return cast("CoordinatorStats", self.call(self.stats_in_turn))

    def stats_in_turn(self) -> CoordinatorStats:
        if self.window:
            self.window.trim(self.now())
        return CoordinatorStats(
            name=self.name,
            pending_count=self.npending,
            active_count=self.running,
            total_enqueued=self.enqueued,
            total_completed=self.completed,
            total_failed=self.failed,
            total_cancelled=self.cancelled,
            max_concurrency=self.limit,
            tracked_operations=len(self.window),
            signals_dropped=self.signals_dropped,
            signals_emitted=self.signals_emitted,
            worker_restarts=self.worker_restarts,
            is_completed=self.state is not CoordinatorState.RUNNING,
            is_drained=self.is_drained_now(),
            is_paused=self.paused,
            is_deferred=self.deferring,
            abandoned_threads=self.attempts.abandoned if self.attempts is not None else 0,
            rate_limit=self.schedule.rate_stats() if self.schedule is not None else None,
        )

    def closed_error(self) -> Exception:
        if self.fault_error is not None:
            return self.faulted()
        return CoordinatorClosedError(
            f"coordinator {self.name!r} is {self.state.value} and accepts no more items"
        )

    def on_own_loop(self) -> bool:
        """True if the caller runs on the thread of the caller's loop this core's bodies use."""
        loop = self.loop
        return loop is not None and loop.thread_id == threading.get_ident()

    def in_own_body(self) -> bool:
        """True if the calling code runs inside one of this coordinator's bodies or callbacks."""
        op = running_operation()
        if op is not None and op._core is self:
            return True
        callbacks = self.callbacks
        if callbacks is not None and callbacks.thread is threading.current_thread():
            return True
        return self.router.in_handler()

    # -- intake ------------------------------------------------------------------------

    def accept(  # noqa: PLR0917 - the hot path passes every argument positionally
        self,
        item: Any,
        future: Any,
        timeout: float | None,
        mode: int,
        priority: int = 0,
        delay: float | None = None,
    ) -> Operation | None:
        """Accept `item` (the hot path of `enqueue`): one message to the supervisor.

        `mode` is `BLOCK` (wait for backlog space, up to `timeout`), `FORCE` (accept past
        the bound: actor messages, whose sender must not wait) or `TRY` (answer None
        instead of waiting or raising; fair scheduling applies). A body of this
        coordinator never waits for, nor is refused, backlog space it would free itself.
        `priority` and `delay` (SPEC 16) are validated here, in the caller's thread.
        """
        accept = self.accept_default
        if accept is not None and priority.__class__ is int and not priority and delay is None:
            return accept(item, future, timeout, mode)
        request = self._new_request(item, future, mode, priority, delay)
        if self.key_of is not None or self.prepare_item is not None:
            try:
                self.prepare_intake(request)
            except Exception:
                if mode == TRY:
                    return None
                raise
        return self.post_intake(request, timeout)

    def accept_checked(
        self, item: Any, future: Any, timeout: float | None, mode: int
    ) -> Operation | None:
        """`accept_plain` for a backend's item, checked and prepared first."""
        assert self.prepare_item is not None
        assert self.accept_unchecked is not None
        try:
            item = self.prepare_item(item)  # TypeError for an item the backend cannot ship
        except Exception:
            if mode == TRY:
                return None
            raise
        return self.accept_unchecked(item, future, timeout, mode)

    def accept_keyed(
        self, item: Any, future: Any, timeout: float | None, mode: int
    ) -> Operation | None:
        """`accept` for a keyed item with no priority, delay, label or backend check."""
        key_of = self.key_of
        assert key_of is not None
        try:
            raw_key = key_of(item)
            # `file_key`, written out for a key of a stable type (its own capture).
            if type(raw_key) in STABLE_KEY_TYPES:
                key = str(raw_key)
            else:
                raw_key, key = file_key(raw_key)
        except Exception:
            if mode == TRY:
                return None
            raise
        if mode < TRY or not self.fair_threshold:
            return self.accept_plain(item, future, timeout, mode, key, raw_key)
        return self._accept_posted(item, future, timeout, mode, key, raw_key)

    def _accept_posted(  # noqa: PLR0917 - the fallback of the hot path: positional
        self,
        item: Any,
        future: Any,
        timeout: float | None,
        mode: int,
        key: str | None,
        raw_key: Any,
    ) -> Operation | None:
        """The general path of a plain or keyed item: an intake message, and its answer."""
        if mode == PROBE:
            return None  # no message: the async caller awaits the general path instead
        request = Intake(item, future, mode)
        if key is not None:
            request.raw_key = raw_key
            request.key = key
        return self.post_intake(request, timeout)

    def _new_request(
        self, item: Any, future: Any, mode: int, priority: object, delay: object
    ) -> Intake:
        """The intake request of `item`, labelled (in the sender's thread: user code)."""
        if priority.__class__ is int and not priority and delay is None:
            request = Intake(item, future, mode)  # the plain path: nothing to validate
        else:
            request = scheduled_request(item, future, mode, priority, delay)
        if self.describe is not None:
            request.label = label_of(self, item)
        return request

    def post_intake(self, request: Intake, timeout: float | None) -> Operation | None:
        """Send a prepared intake request to the supervisor and wait for its answer."""
        mode = request.mode
        own = self.in_running_body()
        if own or self.on_own_loop():
            request.mode = FORCE if mode == BLOCK else TRY_OWN if mode == TRY else mode
            request.own = own
        self.mailbox.post((self._on_accept, request))
        if not request.done and not request.wait(timeout):
            self._withdraw(request)
        return cast("Operation | None", request.result())

    def in_running_body(self) -> bool:
        """True if the caller is a running body of this coordinator (not a callback).

        Its items are part of the work already accepted (SPEC 15, work that makes work):
        they go past the backlog bound (only the bodies can free the space), and a
        completing coordinator still takes them (`_completing_takes`), so `complete()` +
        `drain()` (the end of a `with` block) waits for them instead of failing the body
        that makes them. A caller on the bodies' loop outside a body skips the bound only.
        """
        op = running_operation()
        return op is not None and op._core is self

    def _completing_takes(self, request: Intake | Draw) -> bool:
        """Whether a coordinator whose intake is not open still takes `request`.

        Only while completing, and only from one of its running bodies (`in_running_body`).
        """
        return request.own and self.state is _COMPLETING

    def prepare_intake(self, request: Intake) -> None:
        """Check or prepare the item and compute its key (in the sender's thread).

        Both are user code (a backend's check, the key selector): they run here, never
        in the supervisor's turn, which then files the item with the key it is given.
        """
        item = request.item
        if self.prepare_item is not None:
            # TypeError for an item the backend cannot ship, before its key is asked for.
            request.item = self.prepare_item(item)
        if self.key_of is not None:
            request.raw_key, request.key = self._capture_key(item)  # the item as given

    def _capture_key(self, item: Any) -> tuple[Any, str]:
        """`item`'s key, as filed and as shown (in the sender's thread: user code)."""
        assert self.key_of is not None
        return file_key(self.key_of(item))

    async def accept_async(
        self, item: Any, future: Any, priority: int = 0, delay: float | None = None
    ) -> Operation:
        request = self._intake_from_loop(item, future, priority, delay)
        if not isinstance(request, Intake):
            return request
        try:
            await request.wait_async()
        except asyncio.CancelledError:
            self._withdraw(request)
            if request.error is None and request.value is not None:
                return cast("Operation", request.value)  # accepted just before the cancel
            raise
        return cast("Operation", request.result())

    def accept_reply(
        self, item: Any, outcome: asyncio.Future[Any], priority: int = 0, delay: float | None = None
    ) -> Intake | None:
        """`submit_async`'s intake: None once accepted, else the request still waiting.

        A waiting request does not wake its task when it is accepted: the task awaits
        only `outcome`. If the request is refused instead (intake closed), the refusal
        settles `outcome`: the request is its own waiter (`Intake.release`), so a waiting
        `submit_async` costs no object beyond its request and its future. Raises what a
        refusal in this call raises.
        """
        request = self._intake_from_loop(item, outcome, priority, delay)
        if not isinstance(request, Intake):
            return None
        if request.done:
            request.result()  # raises the refusal
            return None
        request.waiter = request
        if request._answered():
            # Answered between the test and the store, so `_finish` may have seen no
            # waiter: settle here. Both may settle; `outcome` keeps the first.
            request.release()
        return request

    def _intake_from_loop(
        self, item: Any, future: Any, priority: int, delay: float | None
    ) -> Operation | Intake:
        """An async intake: the item's operation if a probe took it, else its posted request."""
        if self.async_probe and priority.__class__ is int and not priority and delay is None:
            # The item's turn begun here, as `enqueue` begins it, when the supervisor is
            # idle with space: no request, no message and no wait (half of the cost of
            # an async intake). Refused (busy, full or closed), it is posted below as
            # `_new_request` would make it for this item (no label, priority, delay or
            # preparation), with the key already computed: the selector runs once.
            raw_key, key = (None, None) if self.key_of is None else self._capture_key(item)
            # Producers already waiting for space: the probe's turn would refuse this
            # item too (a gathered `submit_async` of thousands finds them for nearly
            # every call). A hint read outside the turn, which re-checks everything: a
            # stale answer costs a probe, or sends a request the turn then accepts.
            if not self.space_waiters:
                op = self.accept_plain(item, future, None, PROBE, key, raw_key)
                if op is not None:
                    return op
            request = Intake(item, future, BLOCK)
            if key is not None:
                request.raw_key = raw_key
                request.key = key
        else:
            request = self._new_request(item, future, BLOCK, priority, delay)
            self.prepare_intake(request)
        # Awaiting space does not block the loop (its bodies go on), so only a body
        # itself skips the wait here, not every caller on the bodies' loop.
        if self.in_running_body():
            request.mode = FORCE
            request.own = True
        self.mailbox.post((self._on_accept, request))
        return request

    def _withdraw(self, request: Intake | Draw) -> None:
        """The sender stopped waiting: take its request back unless it was answered."""
        self.call(self._on_withdraw, request)

    def _on_withdraw(self, request: Intake | Draw) -> None:
        if request in self.space_waiters:
            self.space_waiters.remove(request)
            request.waiter = None  # its sender stopped waiting (and a `submit_async`'s is itself)
            if isinstance(request, Draw):
                request.items = None
                request.value = request.accepted
            else:
                request.error = CoordinatorFullError(
                    f"coordinator {self.name!r} backlog stayed full ({self.bound} pending)"
                )
            request.done = True

    # -- in-memory collections ---------------------------------------------------------

    def accept_collection(
        self, items: Iterator[Any], *, keyed: bool = False, then: Exception | None = None
    ) -> int:
        """`enqueue_many` of an in-memory collection (`IN_MEMORY`): one `Draw` message.

        `items` iterates a list, range, dict, ...: reading it runs no user code and
        cannot block, so the supervisor reads it in its own turns, each item in the turn
        that accepts it. Waits until `items` is exhausted, as `enqueue` waits for space.
        A keyed coordinator's sender computes the keys first (`keys_of`): `items` then
        yields `(item, shown key, filed key)` (`keyed`), and `then` is the selector's
        failure that ended them, raised once they are accepted.

        Returns:
            How many items were accepted.

        Raises:
            CoordinatorClosedError: Intake closed before the first item was accepted.
            CoordinatorFaultedError: The coordinator faulted before the first item.
            Exception: What reading `items` raised (a collection changed meanwhile).
        """
        own = self.in_running_body()
        mode = FORCE if own or self.on_own_loop() else BLOCK
        request = Draw(items, mode, own=own, keyed=keyed, then=then)
        self.mailbox.post((self._on_draw, request))
        try:
            if not request.done:
                request.wait(None)
        except BaseException:
            self._withdraw(request)  # an interrupt: draw no more
            raise
        return cast("int", request.result())

    def draw_source(
        self, items: Iterator[Any], *, keyed: bool = False, then: Exception | None = None
    ) -> None:
        """Read a `from_iterable` source that is an in-memory collection: no reader thread.

        Keyed, as for `accept_collection`; a `then` ends the source, and `drain()` raises it.
        """
        self.mailbox.post((self._on_draw, Draw(items, BLOCK, source=True, keyed=keyed, then=then)))

    def _on_draw(self, request: Draw) -> None:
        if not (self.state is _OPEN or self._completing_takes(request)):
            self._end_draw(request)
            return
        waiters = self.space_waiters
        try:
            if request.mode == FORCE:
                ended = self._draw(request, None)
            elif waiters or self.npending >= self.bound:
                waiters.append(request)
                return
            else:
                ended = self._draw(request, self.bound - self.npending)
                if not ended:
                    waiters.append(request)
            if ended:
                self._end_draw(request)
            if self.running < self.limit:
                self._dispatch()
        except BaseException as exc:
            # The supervisor dies of this (an interrupt in its turn, say). Waiting, the
            # request is released with the others; not yet, nothing else would answer it.
            if request.items is not None and request not in waiters:
                request.items = None
                request.error = exc
                self.replies.append(request)
            raise

    def _draw(self, request: Draw, room: int | None) -> bool:
        """Accept up to `room` items (None: all) of `request`; True if it has no more."""
        items = request.items
        assert items is not None  # dropped only when the draw ends
        taken: list[Any] = []
        try:
            # One C call reads them; on an error it keeps what it read before.
            taken.extend(itertools.islice(items, room))
        except Exception as exc:  # a dict or set changed while read
            # Raised to the caller, and kept for `drain()` if a source: without this
            # turn's frame, which would tie the error and the core in a cycle (the
            # caller's raise says where the collection was given).
            request.error = exc.with_traceback(None)
        backlog = self.backlog
        enqueued = self.enqueued
        if request.keyed:
            for item, key, raw_key in taken:
                op = Operation(self, key, raw_key)
                backlog.append((op, item))
                enqueued += 1
                op._seq = enqueued
        else:
            for item in taken:
                op = Operation(self, None, None)
                backlog.append((op, item))
                enqueued += 1
                op._seq = enqueued
        count = len(taken)
        self.enqueued = enqueued
        self.npending += count
        self.unsettled += count
        request.accepted += count
        if request.error is not None:
            return True
        if room is None or count < room:
            # Exhausted: an error met while the items were prepared ends it now, after
            # the items before it (a draw that intake closed first never gets here).
            request.error = request.then
            return True
        return False

    def _end_draw(self, request: Draw) -> None:
        """`request` is exhausted, failed, or intake closed: answer it, or end the source."""
        request.items = None
        error = request.error
        if request.source:
            if error is not None:
                self.source_failed(error)
            self._on_source_finished(None)
            return
        if error is None:
            if request.accepted or self.state is _OPEN or self._completing_takes(request):
                request.value = request.accepted
            else:
                request.error = self.closed_error()
        self.replies.append(request)

    def _on_accept(self, request: Intake) -> None:
        mode = request.mode
        self.replies.append(request)
        if not (self.state is _OPEN or self._completing_takes(request)):
            if mode < TRY:
                request.error = self.closed_error()
            request.reason = Admission.CLOSED
            return
        if (
            mode >= TRY
            and self.fair_threshold
            and self.key_pending(request.raw_key) >= self.fair_threshold
        ):
            request.reason = Admission.UNFAIR
            return
        if self.npending >= self.bound and mode in (BLOCK, TRY):
            if mode == TRY:
                request.reason = Admission.FULL
                return
            self.replies.pop()
            self.space_waiters.append(request)
            return
        self._admit(request)

    def accept_plain(  # noqa: PLR0917 - the hot path passes every argument positionally
        self,
        item: Any,
        future: Any,
        timeout: float | None,
        mode: int,
        key: str | None = None,
        raw_key: Any = None,
    ) -> Operation | None:
        """`accept` for an item with no priority, delay, label or backend check.

        The intake turn of every such item, begun here if the supervisor is idle with
        no mail: `Mailbox.now` with `_admitted` written out (the two frames and the
        argument tuple they cost were a tenth of the intake). If no turn could begin,
        or the item needs the general path (closed, full, producers waiting), an
        intake message decides (`_accept_posted`); with `PROBE`, the answer is None
        and the caller takes the general path itself (`accept_async`).
        """
        mailbox = self.mailbox
        mail = mailbox._queue
        flag = mailbox._flag
        if mail or not flag:
            return self._accept_posted(item, future, timeout, mode, key, raw_key)
        if CHECK_OWNERSHIP:
            # Read before the flag: between taking it and the turn's `try` nothing may call.
            ident = _get_ident()
            previous = _in_turn.get(ident)
        try:
            flag.pop()
        except IndexError:  # taken by another thread since the test
            return self._accept_posted(item, future, timeout, mode, key, raw_key)
        except BaseException:
            flag.append(True)  # Ctrl-C as the pop returned (see `Mailbox._run`)
            raise
        # `holder` is stored only before a call that may ask whether it runs in this
        # turn (`_dispatch`, `_end_turn`, `_crashed`): the record, the backlog and the
        # counters never ask, and the thread ident and two stores were a sixteenth of
        # an `enqueue`'s instructions.
        op = None
        try:
            try:
                if CHECK_OWNERSHIP:
                    mailbox.holder = ident
                    _in_turn[ident] = self
                    self.check_fast_paths()
                if (
                    not mail  # mail that came before the flag goes first: the general path
                    and self.state is _OPEN
                    and self.npending < self.bound
                    and not self.space_waiters
                ):
                    if future is None:
                        op = Operation(self, key, raw_key)
                    else:
                        op = self._new_operation(key, raw_key, future)
                    self.backlog.append((op, item))
                    self.npending += 1
                    op._seq = self.enqueued = self.enqueued + 1
                    self.unsettled += 1
                    if self.running < self.limit:
                        mailbox.holder = _get_ident()
                        self._dispatch()
            except BaseException as exc:
                mailbox.torn = True  # before any call: see `Mailbox.torn`
                op = None
                self._crashed(exc)
            finally:
                mailbox.processed += 1
                try:
                    # `_end_turn` has nothing to do in most of these turns: skip its frame.
                    if self.outcomes or self.replies or self.waiters or self.orphaned:
                        mailbox.holder = _get_ident()
                        self._end_turn()
                finally:
                    mailbox.holder = 0
                    flag.append(True)
                    if CHECK_OWNERSHIP:
                        _leave_checked(ident, previous)
        finally:
            if mail and flag:
                mailbox._run()
        if op is None:
            if mailbox.interrupt is not None:
                mailbox.raise_interrupt()  # Ctrl-C in this turn: the caller's
            return self._accept_posted(item, future, timeout, mode, key, raw_key)
        return op

    def _admit(self, request: Intake) -> None:
        op = self._new_operation(request.key, request.raw_key, request.future)
        op._label = request.label
        if type(request) is Intake:
            self.backlog.push(op, request.item)
        else:
            self._admit_scheduled(op, cast("Scheduled", request))
        request.item = None  # the request outlives the turn; the item must not
        request.value = op
        self._admitted(op)

    def _new_operation(self, key: str | None, raw_key: Any, future: Any) -> Operation:
        op = Operation(self, key, raw_key)
        if future is not None:
            op._reply = future
            if type(future) is OperationFuture:
                future.operation_id = op.id
                future._canceller = op._cancel_pending  # a bound method: cheaper than a partial
        return op

    def _admitted(self, op: Operation) -> None:
        """Count `op`, now waiting, and start what may start."""
        self.npending += 1
        self.enqueued += 1
        op._seq = self.enqueued
        self.unsettled += 1
        if self.running < self.limit:
            self._dispatch()

    def _admit_scheduled(self, op: Operation, request: Scheduled) -> None:
        """An item with a priority or a delay joins the backlog, or waits out its delay."""
        if request.delay is None:
            self.backlog.push(op, request.item, request.priority)
            return
        if self.schedule is None:
            self.schedule = Schedule(self)
            self.refresh_fast_paths()
        self.schedule.delay(op, request.item, request.priority, request.delay)

    def _admit_waiting(self) -> None:
        """Backlog space was freed: accept parked producers in arrival order."""
        waiters = self.space_waiters
        drew = False
        while waiters and self.npending < self.bound:
            request = waiters[0]
            if isinstance(request, Draw):
                drew = True
                if self._draw(request, self.bound - self.npending):
                    waiters.popleft()
                    self._end_draw(request)
                else:
                    waiters.rotate(-1)  # a collection takes its turn, as one producer
                continue
            waiters.popleft()
            if request.waiter is request:
                # A `submit_async` (its own waiter): its task awaits only the outcome,
                # so its acceptance wakes nobody, and needs no answer at the turn's end
                # (only the reference to itself dropped, which `_finish` would drop).
                request.waiter = None
                request.done = True
            else:
                self.replies.append(request)
            self._admit(request)
        if drew and self.running < self.limit:
            self._dispatch()

    def _release_space_waiters(self) -> None:
        waiters = self.space_waiters
        while waiters:
            request = waiters.popleft()
            if isinstance(request, Draw):
                self._end_draw(request)
                continue
            request.item = None
            request.error = self.closed_error()
            self.replies.append(request)

    # -- dispatch ----------------------------------------------------------------------

    def request_cancel_running(self) -> None:
        """Ask every running operation to cancel (cooperatively)."""
        for worker in self.workers:
            current = worker.current
            if current is not None:
                self._ask_to_cancel(current)
            inbox = getattr(worker, "inbox", ())
            for entry in inbox:
                if entry is not None:
                    self._ask_to_cancel(entry[0])

    def _ask_to_cancel(self, op: Operation) -> None:
        op._cancel = True
        if self.backend_cancel is not None:
            try:
                self.backend_cancel(op.id)
            except Exception:
                logger.exception(f"coordinator {self.name!r}: the backend's cancel() raised")

    def _dispatch(self) -> None:
        """Give every item that may start now to a worker."""
        if self.paused or not self.processing:
            return
        router = self.router
        schedule = self.schedule
        fifo = self.fifo
        # npending counts every admitted item not yet started (backlog, children,
        # delays, retries): at 0 there is nothing to pop, so no pop and no signal check.
        while self.running < self.limit and self.npending:
            # One cancel check per item, before it is taken: the bus may clear or evict
            # the cancel signal at any moment, so a second check after taking could
            # disagree with the first and start an item during a deferral (issue 13, #15).
            signal = router.cancelling_signal() if router.cancel_marks else None
            if signal is None and self.deferring:
                return
            if schedule is not None:
                entry = schedule.pop()
            elif fifo:
                entry = fifo.popleft()  # a plain FIFO backlog's deque: no frame
            else:
                entry = self.backlog.pop()
            if entry is None:
                return
            self.npending -= 1
            op = entry[0]
            op._started = self.now()
            self.window.add(op)
            self.running += 1
            if self.space_waiters and self.npending <= self.low_water:
                self._admit_waiting()
            if signal is not None:
                if schedule is not None:
                    schedule.unstarted(op)
                self._finish(op, CANCELLED, SignalCancelledError(signal))
                op._ended = op._started
                continue
            worker = self.idle.pop() if self.idle else self._new_worker()
            worker.current = op
            if self.attempts is not None:
                self.attempts.started(op, entry[1], worker)
            worker.post(entry)

    def _new_worker(self) -> WorkerBase:
        self.worker_numbers += 1
        if self.is_async:
            async_worker = AsyncWorker(self, self.worker_numbers)
            self.workers.append(async_worker)
            async_worker.start()
            return async_worker
        worker = ThreadWorker(self, self.worker_numbers)
        # Recorded before its thread starts: whatever stops this turn half-way (Ctrl-C
        # in the main thread), `close()` still finds the thread and ends it.
        workers = self.workers
        workers.append(worker)
        if len(workers) == 1:
            # The first, here: an idle coordinator's first item waits for one start.
            start_worker(self, worker)
            return worker
        # Any other starts off this turn (`_spawner`): a start holds its thread ~90 µs.
        spawner = self.spawner
        if spawner is None:
            spawner = self.spawner = Spawner(self)
            spawner.start()
        spawner.post(worker)
        return worker

    def key_pending(self, raw_key: Any) -> int:
        """Items of `raw_key` waiting (a state query for keyed coordinators)."""
        pending = self.backlog.key_pending(raw_key)
        if self.schedule is not None:
            pending += self.schedule.key_pending(raw_key)
        if self.attempts is not None:
            pending += self.attempts.key_waiting(raw_key)
        return pending

    def _remove_pending(self, op_id: int) -> Operation | None:
        """Take a waiting item back by id (backlog, delay, or retry backoff)."""
        op = self.backlog.remove(op_id)
        if op is None and self.schedule is not None:
            op = self.schedule.remove(op_id)
        if op is None and self.attempts is not None:
            op = self.attempts.forget(op_id)
        return op

    def cancel_pending(self, op: Operation) -> bool:
        """Drop `op` if it has not started (its future's `cancel()`); True if dropped."""
        return bool(self.call(self._on_cancel_pending, op))

    def _on_cancel_pending(self, op: Operation) -> bool:
        if op._in_window or op._outcome != RUNNING or self._remove_pending(op.id) is None:
            return False
        self._dropped(op)
        op._reply = None  # the future resolves itself as cancelled
        return True

    def _dropped(self, op: Operation) -> None:
        op._raw_key = None
        self.npending -= 1
        op._outcome = CANCELLED
        if self.streams:
            deliver(self, op)
        self.cancelled += 1
        self.unsettled -= 1
        if self.space_waiters and self.npending <= self.low_water:
            self._admit_waiting()

    def cancel_operation(self, op_id: int) -> bool:
        check_int("op_id", op_id, minimum=1)
        return bool(self.call(self._on_cancel_operation, op_id))

    def _on_cancel_operation(self, op_id: int) -> bool:
        """SPEC 16: drop a pending item, or ask a running one to cancel."""
        op = self.window.get(op_id)
        if op is None:
            op = next(
                (w.current for w in self.workers if w.current and w.current.id == op_id), None
            )
        if op is not None:
            if op._outcome != RUNNING:
                return False
            op._timed_out = False  # an explicit cancel counts as one, even past a deadline
            self._ask_to_cancel(op)
            return True
        op = self._remove_pending(op_id)
        if op is None:
            return False
        self._dropped(op)
        reply, op._reply = op._reply, None
        if type(reply) is OperationFuture:
            self.outcomes.append((reply, None, None))
        elif reply is not None:
            error = OperationCancelledError(f"operation {op_id} was cancelled before it started")
            self.outcomes.append((reply, False, error))
        return True

    # -- outcomes ----------------------------------------------------------------------

    def report(
        self, worker: WorkerBase, op: Operation, outcome: int, error: BaseException | None
    ) -> None:
        """A worker's outcome, handled in a turn run right here if the supervisor is idle.

        Otherwise it is a message: whoever runs the turn handles it with the others.
        """
        if self.mailbox.now(self._on_done, worker, op, outcome, error) is BUSY:
            self.mailbox.post((self._on_report, (worker, op, outcome, error)))

    def report_and_take(
        self, worker: WorkerBase, op: Operation, outcome: int, error: BaseException | None
    ) -> tuple[Operation, Any] | None:
        """`report`, and the worker's next item if the same turn could start one for it.

        The worker runs the item it is given without going through its mailbox; None: it
        reads its mailbox as usual (where a dispatch may have put an item meanwhile).
        """
        # `Mailbox.now`, written out as `accept_plain` writes it: this is the turn of
        # every item a busy coordinator runs.
        mailbox = self.mailbox
        mail = mailbox._queue
        flag = mailbox._flag
        if mail or not flag:
            mailbox.post((self._on_report, (worker, op, outcome, error)))
            return None
        if CHECK_OWNERSHIP:
            # Read before the flag: between taking it and the turn's `try` nothing may call.
            ident = _get_ident()
            previous = _in_turn.get(ident)
        try:
            flag.pop()
        except IndexError:  # taken by another thread since the test
            mailbox.post((self._on_report, (worker, op, outcome, error)))
            return None
        except BaseException:
            flag.append(True)  # an interrupt as the pop returned (see `Mailbox._run`)
            raise
        # `holder` only before a call that may ask whether it runs in this turn, as in
        # `accept_plain`: the record, window and backlog work below never asks.
        entry = None
        behind = False
        try:
            try:
                if CHECK_OWNERSHIP:
                    mailbox.holder = ident
                    _in_turn[ident] = self
                    self.check_fast_paths()
                # The turn itself, once per item, written out (a frame less): a plain
                # completion (no error, retry, stream or callback) and a plain start.
                # Anything else takes `_on_done`, which handles every case.
                if mail:
                    behind = True  # mail that came before the flag goes first: posted after it
                elif (
                    error is not None
                    or worker.current is not op
                    or op._outcome != RUNNING
                    or worker.retired  # also when abandoned: an abandoned worker is retired
                    or not self.plain_end
                ):
                    mailbox.holder = _get_ident()
                    self._on_done(worker, op, outcome, error)
                else:
                    ended = self.now()
                    op._ended = ended
                    op._outcome = outcome
                    backlog = self.backlog
                    if backlog.tracks_ended:
                        backlog.ended(op)
                    op._raw_key = None  # the key may be the item itself: no payload is kept
                    self.completed += 1
                    self.unsettled -= 1
                    window = self.window
                    # Past the age bound, over the size bound, or a set-aside record ended.
                    if ended >= window.expiry or op._in_window == SET_ASIDE:
                        window.reconsider(ended, op)
                    reply = op._reply
                    if reply is not None:
                        op._reply = None
                        if type(reply) is not OperationFuture:
                            value = op._result if self.capture_results else None
                            self.outcomes.append((reply, True, value))
                            reply = None
                    # `running` still counts `op`: it drops only if no item takes its slot,
                    # so a reader sees no dip between one item and the next on this path.
                    if self.npending and self.running <= self.limit and self.plain_start:
                        fifo = self.fifo  # the FIFO backlog's deque, popped without a frame
                        entry = fifo.popleft() if fifo else backlog.pop()
                    if entry is None:
                        self.running -= 1
                        worker.current = None
                        self.idle.append(worker)
                        mailbox.holder = _get_ident()
                        self._dispatch()
                    else:
                        self.npending -= 1
                        started = entry[0]
                        started._started = ended  # the same turn: one clock read serves both
                        window.add(started)
                        worker.current = started
                        if self.space_waiters and self.npending <= self.low_water:
                            mailbox.holder = _get_ident()
                            self._admit_waiting()
                        if self.running < self.limit and self.npending:
                            mailbox.holder = _get_ident()
                            self._dispatch()
                    if reply is not None:
                        mailbox.holder = _get_ident()
                        # The future, resolved here rather than from `outcomes` at the end of
                        # the turn (a tuple and a loop saved per item), but still after every
                        # write of the turn: whoever it wakes reads counters that count this
                        # operation.
                        try:
                            reply.set(op._result if self.capture_results else None)
                        except InvalidStateError:
                            self._resolved_elsewhere(reply)
            except BaseException as exc:
                mailbox.torn = True  # before any call: see `Mailbox.torn`
                entry = None
                self._crashed(exc)
            finally:
                mailbox.processed += 1
                try:
                    # `_end_turn` has nothing to do in most of these turns: skip its frame.
                    if self.outcomes or self.replies or self.waiters or self.orphaned:
                        mailbox.holder = _get_ident()
                        self._end_turn()
                finally:
                    mailbox.holder = 0
                    flag.append(True)
                    if CHECK_OWNERSHIP:
                        _leave_checked(ident, previous)
        finally:
            if mail and flag:
                mailbox._run()
        if behind:
            mailbox.post((self._on_report, (worker, op, outcome, error)))
        return entry

    def _on_report(self, report: tuple[WorkerBase, Operation, int, BaseException | None]) -> None:
        self._on_done(*report)

    def _on_done(
        self, worker: WorkerBase, op: Operation, outcome: int, error: BaseException | None
    ) -> None:
        if worker.abandoned:
            return  # a late outcome: the deadline already ended (or retried) this attempt
        if worker.current is op:
            worker.current = None
        if op._outcome == RUNNING:
            self._finish(op, outcome, error)
            if (
                outcome == FAILED
                and type(error) is WorkerCrashError
                and self.backend is not None
                and self._restarted_too_often()
            ):
                return  # a backend's worker died (a process): a crash, supervised as one
        if not worker.retired:
            self.idle.append(worker)
        self._dispatch()

    def _finish(self, op: Operation, outcome: int, error: BaseException | None) -> None:
        """Record how `op` ended; callbacks then settle it (or it settles now)."""
        if self.attempts is not None and self.attempts.ended(op, outcome, error):
            return  # retried: pending again, counted once when it finally ends
        reply = op._reply
        if error is None:
            op._finish(outcome, None, self.now())
        elif reply is None:
            op._finish(outcome, _detach(error), self.now())
        else:
            # The caller's future gets the original with its traceback; the window keeps
            # a traceback-free twin, so no frame (and no payload) is retained by us. An
            # exception that cannot be copied is shared, without its traceback.
            twin = _copy_error(error)
            op._finish(outcome, _detach(twin) if twin is error else twin, self.now())
        self.running -= 1
        self.backlog.ended(op)
        op._raw_key = None  # the key may be the item itself: no payload is kept
        if outcome == COMPLETED:
            self.completed += 1
        elif outcome == FAILED:
            self.failed += 1
            if logger.isEnabledFor(logging.WARNING):
                self._log_failure(op)
            if self.cancel_on_failure and not isinstance(error, OperationCancelledError):
                # `fail_fast`: in the turn that records the failure, so no item starts
                # after it (an observer's cancel would come a thread hand-off later).
                self._on_cancel(None)
        else:
            self.cancelled += 1
        if op._error is not None and self.failures.bound:
            self.failures.add(op)
        if self.streams:
            deliver(self, op)
        window = self.window
        ended = op._ended or 0.0
        # Inlined: trim() itself returns at once here on most items (within the bound,
        # nothing old enough), and this runs once per item.
        if ended >= window.expiry or op._in_window == SET_ASIDE:
            window.reconsider(ended, op)
        if reply is not None:
            # Resolved at the end of the turn, after every write of it: whoever
            # the future wakes reads counters that already include this operation.
            op._reply = None
            if outcome == COMPLETED:
                self.outcomes.append((reply, True, op._result if self.capture_results else None))
            else:
                assert error is not None
                self.outcomes.append((reply, False, error))
        if self.observers or self.on_sample is not None:
            callbacks = self.callbacks
            if callbacks is None and not self.closed_event.is_set():
                callbacks = self.callbacks = Callbacks(self)
                callbacks.start()
            # Once close() stopped the callbacks actor, an operation that ends late (a
            # body close(timeout) abandoned) would queue behind the stop message and
            # never settle, and drain() would wait for it for good (issue 13, #4).
            if callbacks is not None and not callbacks.stopping:
                callbacks.post(op)
                return
        self.unsettled -= 1

    def _log_failure(self, op: Operation) -> None:
        # The exception's message may quote the item, so only its type is logged; the
        # snapshot holds the exception itself.
        error_type = type(op._error).__name__
        logger.warning(
            "operation %d of coordinator %r failed with %s",
            op.id,
            self.name,
            error_type,
            extra={
                "coordinator": self.name,
                "operation_id": op.id,
                "key": op.key,
                "error_type": error_type,
                "event": "operation.failed",
            },
        )

    def _on_loop_lost(self, worker: AsyncWorker) -> None:
        loop_lost(self, worker)

    def _on_settled(self, count: int) -> None:
        self.unsettled -= count

    # -- callbacks (on the callbacks actor's thread) -------------------------------------

    def add_observer(self, callback: Callable[[OperationSnapshot], None]) -> None:
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        self.call(self._on_add_observer, callback)

    def remove_observer(self, callback: Callable[[OperationSnapshot], None]) -> bool:
        return bool(self.call(self._on_remove_observer, callback))

    # The new tuple is built in the turn from the one it replaces: built by the caller,
    # two callers adding at once would each drop the other's observer.
    def _on_add_observer(self, callback: Callable[[OperationSnapshot], None]) -> None:
        self.observers = (*self.observers, callback)
        self.refresh_fast_paths()

    def _on_remove_observer(self, callback: Callable[[OperationSnapshot], None]) -> bool:
        kept = tuple(o for o in self.observers if o is not callback)
        removed = len(kept) != len(self.observers)
        self.observers = kept
        self.refresh_fast_paths()
        return removed

    def deliver_callbacks(self, ops: list[Operation]) -> None:
        """Call, for each of `ops` in order, the observers, then `on_sample`.

        The observers get the operation's snapshot, `on_sample` the window; both are
        asked for once for the whole batch.
        """
        observers = self.observers
        snapshots = self.call(_snapshots_of, ops) if observers else None
        callback = self.on_sample
        window = self.call(self.snapshot_in_turn, False) if callback is not None else ()
        for index in range(len(ops)):
            if snapshots is not None:
                snapshot = snapshots[index]
                for observer in observers:
                    try:
                        observer(snapshot)
                    except BaseException:
                        logger.exception(f"observer of coordinator {self.name!r} raised")
            if callback is not None:
                try:
                    callback(window)
                except BaseException:
                    logger.exception(f"on_sample of coordinator {self.name!r} raised")

    # -- window ------------------------------------------------------------------------

    def snapshot(self, *, with_results: bool) -> tuple[OperationSnapshot, ...]:
        return cast("tuple[OperationSnapshot, ...]", self.call(self.snapshot_in_turn, with_results))

    def failed_snapshot(self, *, with_results: bool) -> tuple[OperationSnapshot, ...]:
        return cast("tuple[OperationSnapshot, ...]", self.call(self._failed_in_turn, with_results))

    def _failed_in_turn(self, with_results: bool) -> tuple[OperationSnapshot, ...]:
        now = self.now()
        if self.window:
            self.window.trim(now)
        return tuple(snapshot_of(op, with_results) for op in self.failures.failed(self.window, now))

    def snapshot_in_turn(self, with_results: bool) -> tuple[OperationSnapshot, ...]:
        return self.window.snapshot(self.now(), with_results)

    def signals(
        self, predicate: Callable[[SignalEvent], bool] | None = None
    ) -> tuple[SignalEvent, ...]:
        return cast("tuple[SignalEvent, ...]", self.call(self._signals_in_turn, predicate))

    def _signals_in_turn(
        self, predicate: Callable[[SignalEvent], bool] | None
    ) -> tuple[SignalEvent, ...]:
        return self.window.signals(self.now(), predicate)

    # -- control (the supervisor's message handlers) ------------------------------------

    def receive_public(self, message: Any) -> Any:
        """Apply one message of `ephemeral_actors.messages` (a Pykka tell/ask, in the turn)."""
        handler = _HANDLERS.get(type(message))
        if handler is None:
            raise TypeError(
                f"coordinator {self.name!r} does not understand {type(message).__name__!r}; "
                "see ephemeral_actors.messages"
            )
        return handler(self, message)

    def prepare_actor_intake(
        self,
        item: Any,
        future: OperationFuture[Any] | None,
        priority: int = 0,
        delay: float | None = None,
    ) -> Intake:
        """The intake request of an actor's message, built in the sender's thread.

        Mode FORCE: an actor cannot wait for backlog space.
        """
        request = self._new_request(item, future, FORCE, priority, delay)
        self.prepare_intake(request)
        return request

    def accept_prepared(self, request: Intake) -> Operation:
        """Accept a prepared request in the turn, past the backlog bound."""
        self._on_accept(request)
        self.replies.remove(request)
        return cast("Operation", request.result())

    def enqueue_in_turn(
        self,
        item: Any,
        future: OperationFuture[Any] | None,
        priority: int = 0,
        delay: float | None = None,
    ) -> Operation:
        """Accept `item` from a message that reached the turn unprepared.

        `_Inbox.put` prepares every `Enqueue`, `Submit` and proxy `enqueue`/`submit` it
        can bind in the sender's thread; this serves what reaches `on_receive` or the
        proxy surface another way.
        """
        return self.accept_prepared(self.prepare_actor_intake(item, future, priority, delay))

    def pause(self) -> None:
        self.call(self._on_pause, True)

    def resume(self) -> None:
        self.call(self._on_pause, False)

    def _on_pause(self, paused: bool) -> None:
        self.paused = paused
        self.refresh_fast_paths()
        if not paused:
            self._dispatch()

    def set_max_concurrency(self, limit: int) -> None:
        if not self.options.enable_dynamic_concurrency:
            raise DynamicConcurrencyDisabledError(
                f"coordinator {self.name!r} was built without enable_dynamic_concurrency=True"
            )
        check_int("max_concurrency", limit, minimum=1)
        self.call(self._on_set_limit, limit)

    def _on_set_limit(self, limit: int) -> None:
        self.limit = limit
        self._dispatch()

    def complete(self) -> None:
        self.call(self._on_complete, None)

    def _on_complete(self, _: object) -> None:
        if self.state is CoordinatorState.RUNNING:
            self._set_state(CoordinatorState.COMPLETING)
            self._intake_closed()

    def source_finished(self) -> None:
        """The `from_iterable` source ended (or raised): intake is complete."""
        self.call(self._on_source_finished, None)

    def _on_source_finished(self, _: object) -> None:
        self.source_open = False
        self._on_complete(None)

    def fail_fast(self) -> None:
        """Cancel on the first body failure (`for_each(fail_fast=True)`)."""
        self.call(self._on_fail_fast, None)

    def _on_fail_fast(self, _: object) -> None:
        self.cancel_on_failure = True

    def set_source_open(self) -> None:
        self.call(self._on_source_open, None)

    def _on_source_open(self, _: object) -> None:
        self.source_open = True

    def cancel(self) -> None:
        self.call(self._on_cancel, None)

    def _on_cancel(self, _: object) -> None:
        if _ORDER[self.state] >= _ORDER[CoordinatorState.CANCELLED]:
            return
        self._set_state(CoordinatorState.CANCELLED)
        self._drop_backlog(
            lambda: OperationCancelledError(f"coordinator {self.name!r} was cancelled")
        )
        self.request_cancel_running()
        self._intake_closed()

    def _set_state(self, new: CoordinatorState) -> None:
        """Move to `new`; states only move forward (FAULTED may still be CLOSED)."""
        if _ORDER[new] < _ORDER[self.state]:
            raise AssertionError(f"coordinator {self.name!r}: {self.state.value} -> {new.value}")
        self.state = new
        self.processing = new in _PROCESSING
        self.refresh_fast_paths()

    def _drop_backlog(self, make_error: Callable[[], BaseException]) -> None:
        dropped = self.backlog.take_all()
        if self.attempts is not None:
            dropped += self.attempts.forget_all()
        if self.schedule is not None:
            dropped += self.schedule.take_all()
        self.npending = 0
        for op, _item in dropped:
            op._outcome = CANCELLED
            op._raw_key = None
            if self.streams:
                deliver(self, op)
            if op._reply is not None:
                self.outcomes.append((op._reply, False, make_error()))
                op._reply = None
        self.cancelled += len(dropped)
        self.unsettled -= len(dropped)

    def _intake_closed(self) -> None:
        self._release_space_waiters()

    def set_pinned(self, op_id: int, pinned: bool) -> bool:
        check_int("op_id", op_id, minimum=1)
        return cast("bool", self.call(self._on_pin, op_id, pinned))

    def _on_pin(self, op_id: int, pinned: bool) -> bool:
        op = self.window.get(op_id)
        if op is None:
            return False
        op._pinned = pinned
        op._snapshot = None
        if not pinned:
            self.window.reconsider(self.now(), op)
        return True

    def evict(self, op_id: int) -> bool:
        check_int("op_id", op_id, minimum=1)
        return cast("bool", self.call(self._on_evict, op_id))

    def _on_evict(self, op_id: int) -> bool:
        return self.failures.evict(op_id) | self.window.evict(op_id)

    # -- waiting -----------------------------------------------------------------------

    def _check_waiters(self) -> None:
        settled = self.is_drained_now() and self.unsettled == 0
        kept: list[Wait] = []
        for waiter in self.waiters:
            if waiter.until is not None:
                if not waiter.until():
                    kept.append(waiter)
                    continue
            elif self.fault_error is not None:
                waiter.error = self.faulted()
            elif not (settled if waiter.idle < 0 else self.running <= waiter.idle):
                kept.append(waiter)
                continue
            self.replies.append(waiter)
        self.waiters = kept
        self.waiters_settled = all(waiter.settled for waiter in kept)

    def _on_wait(self, waiter: Wait) -> None:
        # Answered at the end of this turn if already true.
        self.waiters_settled = waiter.settled and (self.waiters_settled or not self.waiters)
        self.waiters.append(waiter)

    def _on_forget_wait(self, waiter: Wait) -> None:
        if waiter in self.waiters:
            self.waiters.remove(waiter)

    def _check_self_wait(self, what: str, *, blocking: bool = True) -> None:
        # A blocking wait on the thread of the loop the bodies run on would stop them.
        if self.in_own_body() or (blocking and self.on_own_loop()):
            raise RuntimeError(
                f"{what} called from inside coordinator {self.name!r}'s own body or "
                "callback (or on the event loop its bodies run on) would wait for itself"
            )

    def wait_settled(self, timeout: float | None) -> None:
        self._check_self_wait("drain()")
        waiter = Wait(-1, settled=True)
        self.mailbox.post((self._on_wait, waiter))
        if not waiter.wait(timeout):
            self.call(self._on_forget_wait, waiter)
            if not waiter.done:
                raise TimeoutError(
                    f"coordinator {self.name!r} did not drain within {timeout} s "
                    f"({self.npending} pending, {self.running} active)"
                )
        waiter.result()

    async def wait_settled_async(self) -> None:
        self._check_self_wait("drain_async()", blocking=False)
        waiter = Wait(-1, settled=True)
        self.mailbox.post((self._on_wait, waiter))
        try:
            await waiter.wait_async()
        except asyncio.CancelledError:
            self.call(self._on_forget_wait, waiter)
            raise
        waiter.result()

    def wait_idle(self, deadline: float | None, own: int) -> bool:
        """Wait until at most `own` operations run (the caller's own); True if reached."""
        waiter = Wait(own)
        self.mailbox.post((self._on_wait, waiter))
        if waiter.wait(remaining(deadline)):
            return True
        self.call(self._on_forget_wait, waiter)
        return waiter.done

    def wait_for(self, until: Callable[[], bool], deadline: float | None) -> bool:
        """Wait until `until()` (evaluated in the turn) is true; False at `deadline`."""
        waiter = Wait(0, until)
        self.mailbox.post((self._on_wait, waiter))
        if waiter.wait(remaining(deadline)):
            return True
        self.call(self._on_forget_wait, waiter)
        return waiter.done

    # -- supervision -------------------------------------------------------------------

    def _on_worker_died(self, report: tuple[WorkerBase, BaseException]) -> None:
        """Forget a dead worker, fail its in-flight item, and start work again."""
        worker, error = report
        op = worker.current
        logger.error(
            "coordinator %r: worker died (%s); replacing it",
            self.name,
            type(error).__name__,
            extra={
                "coordinator": self.name,
                "operation_id": op.id if op is not None else None,
                "key": op.key if op is not None else None,
                "error_type": type(error).__name__,
                "event": "worker.restarted",
            },
        )
        if worker.retired:
            return
        worker.retired = True
        self.retired_processed += worker.processed
        self.workers.remove(worker)
        if worker in self.idle:
            self.idle.remove(worker)
        # Items already in the dead worker's mailbox fail with it; its current item is
        # still there if its thread never started, and fails with the reported error.
        inbox = getattr(worker, "inbox", None)
        if inbox:
            for entry in reversed(inbox):
                if entry is not None and entry[0]._outcome == RUNNING:
                    cause = error if entry[0] is op else WorkerCrashError("worker died")
                    self._finish(entry[0], FAILED, _detach(cause))
            inbox.clear()
        if op is not None and op._outcome == RUNNING:
            self._finish(op, FAILED, _detach(error))
        if self._restarted_too_often():
            return
        self._dispatch()

    def _restarted_too_often(self) -> bool:
        """Count a restart; fault the coordinator past `max_restarts` (True if it did).

        Every restart the supervisor makes counts: a crashed worker's, and a per-key
        child's that was stopped from outside (`KeyedBacklog.restart`).
        """
        self.worker_restarts += 1
        # The schedule's clock: a test moves it (`use_schedule_clock`), not global time.
        now = self.schedule_clock()
        crashes = self.crashes
        crashes.append(now)
        while crashes and crashes[0] < now - self.restart_window:
            crashes.popleft()
        if len(crashes) > self.max_restarts:
            # Escalation (Akka's OneForOneStrategy past maxNrOfRetries): the failure is
            # no longer the worker's or the child's, it is the coordinator's.
            self._fault(
                WorkerCrashError(
                    f"{len(crashes)} restarts within {self.restart_window} s "
                    f"(max_restarts={self.max_restarts})"
                ),
                escalated=True,
            )
            return True
        return False

    def fault(self, error: BaseException | None) -> None:
        """The supervisor died: release every waiter with `CoordinatorFaultedError`."""
        if self.mailbox.in_turn():
            self._fault(error)
        else:
            self.call(self._fault, error)

    def source_failed(self, error: BaseException) -> None:
        """Keep what the source raised, for `drain()` to raise (see `raised_source_error`).

        A message from the source's thread (or a call in the turn that read the source).
        """
        self.call(self._on_source_failed, error)

    def _on_source_failed(self, error: BaseException) -> None:
        self.source_traceback = error.__traceback__
        self.source_error = error

    def raised_source_error(self) -> BaseException | None:
        """What the source raised, with its traceback as the source left it.

        Raising an exception prepends the raising frames to its traceback: raised as
        kept, the error would grow with every `drain()` and hold each caller's frames.
        """
        error = self.source_error
        if error is None:
            return None
        return error.with_traceback(self.source_traceback)

    def faulted(self) -> CoordinatorFaultedError:
        """A new error saying the coordinator faulted, for one caller to raise.

        Never `fault_error` itself: raising an exception prepends the raising frames to
        its traceback, so the one kept here would grow with every refused call and hold
        each caller's frames, and the items in them, for as long as the coordinator.
        """
        return CoordinatorFaultedError(str(self.fault_error))

    def _fault(self, error: BaseException | None, *, escalated: bool = False) -> None:
        cause = f": {error!r}" if error is not None else ""
        what = "its actors were restarted too often" if escalated else "its supervisor actor died"
        fault = CoordinatorFaultedError(f"coordinator {self.name!r} faulted, {what}{cause}")
        if self.state is CoordinatorState.CLOSED or self.fault_error is not None:
            self._log_fault(what, error)
            return
        # The fault first, the log after it (see `_crashed`).
        self.fault_error = fault
        self._set_state(CoordinatorState.FAULTED)
        self._drop_backlog(lambda: CoordinatorFaultedError(str(fault)))
        self.on_sample = None
        self.observers = ()
        self.refresh_fast_paths()
        self._intake_closed()
        self._log_fault(what, error)

    def _log_fault(self, what: str, error: BaseException | None) -> None:
        logger.error(
            "coordinator %r faulted: %s%s",
            self.name,
            what,
            f" ({type(error).__name__})" if error is not None else "",
            extra={
                "coordinator": self.name,
                "operation_id": None,
                "key": None,
                "error_type": type(error).__name__ if error is not None else None,
                "event": "supervisor.faulted",
            },
        )

    @property
    def is_faulted(self) -> bool:
        return self.fault_error is not None

    def close(self, timeout: float | None) -> bool:
        """Stop everything; False if another call closed it (having waited for that)."""
        deadline = deadline_after(timeout)
        first = self.call(self._on_begin_close, None)
        if first is _CLOSED_AT_ONCE:
            self.closed_event.set()
            forget_at_exit(self)
            return True
        own = self.in_own_body() or self.on_own_loop()
        if not first:
            if not own:
                self.closed_event.wait(remaining(deadline))
            return False
        if own:
            # Waiting here would wait for ourselves: cancel now, finish on a thread of
            # ours that ends once the running bodies (this one included) have returned.
            self.cancel()
            threading.Thread(
                target=self._finish_close,
                args=(None,),
                name=f"ephemeral-actors-{self.name}-closer",
                daemon=True,
            ).start()
            return True
        self._finish_close(deadline)
        return True

    def _on_orphaned(self, _: object) -> None:
        self.orphaned = True

    def _close_if_orphaned_and_idle(self) -> None:
        if self.closing or self.npending or self.running or self.source_open:
            return
        if sys.is_finalizing():
            # The facade was collected as the interpreter shut down (it sat in a
            # reference cycle): no new thread runs any more, so starting the closer
            # would wait for ever, and the process takes every thread with it anyway.
            return
        self.closing = True
        # Not in this turn: closing waits for threads. A thread of ours finishes it and
        # ends with it.
        threading.Thread(
            target=self._finish_close,
            args=(None,),
            name=f"ephemeral-actors-{self.name}-closer",
            daemon=True,
        ).start()

    def _on_begin_close(self, _: object) -> bool | object:
        if self.closing:
            return False
        self.closing = True
        if self._has_nothing_to_stop():
            # Nothing was ever started (no worker, callback thread, timer, loop task,
            # source or subscription): everything close() does fits in this one turn.
            self._on_cancel(None)
            self.router._on_close(None)
            self.backlog.close()
            self.supervisor._stop()
            self._on_closed(None)
            return _CLOSED_AT_ONCE
        return True

    def _has_nothing_to_stop(self) -> bool:
        router = self.router
        return (
            not self.workers
            and not self.running
            and self.callbacks is None
            and self.feeder is None
            and not self.loop_refs
            and self.loop is None
            and not self.uses_dispatcher
            and self.schedule is None
            and self.attempts is None
            and router.subscription is None
            and not router.uses_dispatcher
            and not router.async_running
            and not getattr(self.backlog, "uses_dispatcher", False)
            and self.backend is None
        )

    def _finish_close(self, deadline: float | None) -> None:
        try:
            self._close(deadline)
        finally:
            # Whatever failed on the way, the shared runtime references are returned
            # and the state says closed, so nothing leaks and queries keep answering.
            self.call(self._on_closed, None)
            self._release_runtime(deadline)
            self.closed_event.set()
            forget_at_exit(self)

    def _on_closed(self, _: object) -> None:
        if self.state is not CoordinatorState.CLOSED:
            self._set_state(CoordinatorState.CLOSED)
        if self.mailbox.torn:
            # The interrupted turn may have taken an item out of the backlog and stopped
            # before a worker had it, or queued an item and stopped before counting it
            # (the fault then cancelled it). Every worker has ended: an item no outcome
            # counts now never ends, so it is counted as failed, and an item cancelled
            # uncounted is counted as accepted, and both are said, rather than left for
            # `stats()` to disagree with itself.
            self._fail_stranded()
            lost = self.enqueued - (self.completed + self.failed + self.cancelled)
            if lost > 0:
                self.failed += lost
                logger.warning(
                    f"coordinator {self.name!r}: {lost} item(s) lost by the turn the "
                    "interrupt stopped are counted as failed"
                )
            elif lost < 0:
                self.enqueued -= lost
                logger.warning(
                    f"coordinator {self.name!r}: {-lost} item(s) queued by the turn the "
                    "interrupt stopped, before it counted them, are counted as accepted"
                )
            self.npending = self.running = self.unsettled = 0
        self._refer_back_weakly()

    def _refer_back_weakly(self) -> None:
        """Closed: the parts that point back at the core do so weakly from now on.

        The core holds its mailbox, router, supervisor actor and intake shortcuts, and
        each of them held the core: reference cycles, so a closed coordinator waited for
        the garbage collector (an eighth of creating and closing an unused one went to
        collecting it). Now a closed coordinator is freed with its facade, used or not:
        its workers are gone, and the records it keeps for queries, which held the core
        too, refer back weakly as well. While anything holds the core, every path
        reaches it as before: the facade's calls run the same turns, and an
        `ActorRef`'s `tell` and `ask` refuse a stopped actor before they reach its
        inbox. An operation whose coordinator is gone answers as `Operation` says.
        """
        self.mailbox.weaken()
        core = weakref.proxy(self)
        self.router.core = core
        supervisor = self.supervisor
        supervisor._core = core
        inbox = cast("_Inbox", supervisor.actor_inbox)
        inbox.core = core
        inbox.__class__ = _ClosedInbox
        self.backlog.refer_back_weakly(core)
        # Its other actors and timers, whose threads and timers have ended or been
        # cancelled by now (one `close()` abandoned finds the core gone and stops).
        for part in (self.spawner, self.feeder, self.callbacks, self.schedule):
            if part is not None:
                part.core = core
        if self.attempts is not None:
            self.attempts.core = self.attempts.alarm.core = core
        # The records it keeps for queries. One still running (a body `close()`
        # abandoned) keeps its strong link: that body may still call into its coordinator.
        if self.window.size or self.failures.ops:
            for op in itertools.chain(self.window, self.failures.ops.values()):
                if op._ended is not None:
                    op._core = core
        # Refused on the general path, as on this one: intake is closed for good.
        self.accept_default = self.accept_unchecked = None

    def _fail_stranded(self) -> None:
        """After a torn turn, fail what started but no worker will report (closing turn).

        The interrupted turn may have taken an item and recorded its start, then stopped
        before a worker had it: its record would say running for ever, and whoever waits
        on its future would wait for ever. It gets the fault (counted with the rest of
        what the torn turn lost); a record that never reached the window cannot be found.
        """
        message = (
            f"coordinator {self.name!r} faulted: the turn an interrupt stopped "
            "left this operation with no worker"
        )
        now = self.now()
        for op in self.window:
            if op._outcome != RUNNING:
                continue
            # Two errors: the one its caller raises gathers a traceback, the record's must not.
            op._finish(FAILED, CoordinatorFaultedError(message), now)
            reply = op._reply
            if reply is not None:
                op._reply = None
                self.outcomes.append((reply, False, CoordinatorFaultedError(message)))
        self.window.note_ended()  # kept until a trim, as before; set-aside ones too

    def _release_runtime(self, deadline: float | None) -> None:
        """Return this coordinator's references on the process-wide runtime (once)."""
        for thread in self.call(self._on_close_backlog, None):
            thread.join(remaining(deadline))
        for _ in range(self.loop_refs):
            loop_thread = SHARED_LOOP.release(deadline)
            if loop_thread is not None and loop_thread is not threading.current_thread():
                loop_thread.join(remaining(deadline))
        self.loop_refs = 0

    def _on_close_backlog(self, _: object) -> list[threading.Thread]:
        threads = self.backlog.close()
        if self.attempts is not None:
            threads += self.attempts.close()
        if self.schedule is not None:
            threads += self.schedule.close()
        return threads

    def _on_stop_workers(self, _: object) -> list[WorkerBase]:
        workers = list(self.workers)
        for worker in workers:
            worker.post(None)
            worker.retired = True
            self.retired_processed += worker.processed
        self.workers.clear()
        self.idle.clear()
        if self.spawner is not None:
            # After every worker's stop: it starts whatever is queued first, and each
            # worker it starts ends on the stop posted to it above.
            self.spawner.post(None)
        callbacks = self.callbacks
        if callbacks is not None:
            callbacks.post(None)
        return workers

    def _close(self, deadline: float | None) -> None:
        self.cancel()
        if isinstance(self.feeder, AsyncFeeder):
            self.feeder.stop()  # its source may await for ever (issue 13, #3)
        own = 1 if (op := running_operation()) is not None and op._core is self else 0
        if not self.wait_idle(deadline, own):
            logger.warning(
                f"coordinator {self.name!r}: close() abandoned {self.running - own} running "
                "operation(s) that did not return in time; their threads end when they return"
            )
        workers: list[WorkerBase] = self.call(self._on_stop_workers, None)
        actor = self.supervisor
        if not actor.actor_stopped.is_set():
            with contextlib.suppress(pykka.ActorDeadError):
                self.supervisor_ref.stop(block=True, timeout=remaining(deadline))
        spawner = self.spawner
        if spawner is not None:
            # First: it may still be starting a worker joined below (a worker whose
            # thread has not started counts as gone).
            spawner.join(remaining(deadline))
        for worker in workers:
            worker.join(remaining(deadline))
        callbacks = self.callbacks
        if (
            callbacks is not None
            and callbacks.thread.ident is not None  # else an interrupt stopped its start
            and callbacks.thread is not threading.current_thread()
        ):
            callbacks.thread.join(remaining(deadline))
        feeder = self.feeder
        if feeder is not None and feeder is not threading.current_thread():
            wait = remaining(deadline)
            if isinstance(feeder, SourceThread) and feeder.in_source:
                # Inside the source's next(), which nothing can interrupt, and nothing it
                # yields can be accepted now: a moment for a source about to yield, then
                # its thread is left to end when next() returns.
                wait = SOURCE_GRACE if wait is None else min(wait, SOURCE_GRACE)
            feeder.join(wait)
            if isinstance(feeder, SourceThread) and feeder.is_alive() and feeder.in_source:
                logger.info(
                    f"coordinator {self.name!r}: close() left the reader of its source waiting "
                    "in the source's next(); the thread accepts nothing more and ends when "
                    "next() returns"
                )
            elif feeder.is_alive():
                logger.warning(
                    f"coordinator {self.name!r}: close() abandoned its source, which did not "
                    "yield in time"
                )
        release = getattr(self.body, "close", None) if self.backend is not None else None
        if callable(release):
            # A backend's wrapped body may hold remote resources (e.g. Ray actors).
            try:
                release()
            except Exception:
                logger.exception(f"coordinator {self.name!r}: closing its backend failed")
        for ending in self.router.close(deadline):
            ending.join(remaining(deadline))
        if self.uses_dispatcher:
            for thread in self.call(self._on_release_dispatcher, None):
                thread.join(remaining(deadline))

    def _on_release_dispatcher(self, _: object) -> list[threading.Thread]:
        return give_back(self)

    # -- signals (filled in by the signals layer) --------------------------------------

    def emit_signal(
        self,
        op: Operation,
        name: str,
        cause: SignalPropagation | SignalEvent | None,
        defer_for: float | None = None,
    ) -> bool:
        return self.router.emit(op, name, cause, defer_for)

    # -- actor statistics --------------------------------------------------------------

    def actor_stats(self) -> tuple[ActorStats, ...]:
        rows = self.call(self.actor_stats_in_turn)
        return tuple(ActorStats(*row) for row in rows)

    def actor_stats_in_turn(self) -> list[tuple[str, int, int, int]]:
        workers = self.workers
        rows = [
            (
                "supervisor",
                0 if self.closed_event.is_set() else 1,
                # This request is in the mailbox too; it is being answered, not waiting.
                max(0, len(self.mailbox)),
                self.mailbox.processed,
            ),
            (
                "worker",
                len(workers),
                sum(w.depth() for w in workers),
                sum(w.processed for w in workers) + self.retired_processed,
            ),
        ]
        key_stats = getattr(self.backlog, "actor_stats", None)
        if key_stats is not None:
            rows.append(key_stats())
        callbacks = self.callbacks
        rows.append(
            (
                "callbacks",
                1 if callbacks is not None and callbacks.thread.is_alive() else 0,
                len(callbacks.inbox) if callbacks is not None else 0,
                callbacks.processed if callbacks is not None else 0,
            )
        )
        return rows


def _submit_in_turn(core: Core, msg: m.Submit) -> OperationFuture[Any]:
    future: OperationFuture[Any] = OperationFuture()
    core.enqueue_in_turn(msg.item, future, msg.priority, msg.delay)
    return future


def _accept_prepared(core: Core, msg: _Prepared) -> Any:
    op = core.accept_prepared(msg.request)
    return msg.request.future if msg.submit else op.id


_HANDLERS: dict[type, Callable[[Core, Any], Any]] = {
    _Prepared: _accept_prepared,
    m.Enqueue: lambda core, msg: core.enqueue_in_turn(msg.item, None, msg.priority, msg.delay).id,
    m.Submit: _submit_in_turn,
    m.GetStats: lambda core, _msg: core.stats_in_turn(),
    m.GetSnapshot: lambda core, _msg: core.snapshot_in_turn(core.capture_results),
    m.Pause: lambda core, _msg: core.pause(),
    m.Resume: lambda core, _msg: core.resume(),
    m.Complete: lambda core, _msg: core.complete(),
    m.Cancel: lambda core, _msg: core.cancel(),
    m.SetMaxConcurrency: lambda core, msg: core.set_max_concurrency(msg.limit),
    m.Pin: lambda core, msg: core.set_pinned(msg.op_id, True),
    m.Unpin: lambda core, msg: core.set_pinned(msg.op_id, False),
    m.Evict: lambda core, msg: core.evict(msg.op_id),
}
"""The supervisor's behaviour for the public messages (Pykka tell/ask)."""
