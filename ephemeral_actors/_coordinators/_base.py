"""The facade every coordinator kind shares (SPEC section 4).

The facade holds no state of its own: intake goes straight into the core (the hot
path), control goes to the supervisor actor as messages, and reads take a
lock-protected look at the supervisor's state, so they keep answering after
`close()` and cannot deadlock when called from a callback on the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import warnings
from collections.abc import AsyncIterable, Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar, cast

from ephemeral_actors._coordinators import _idle, _loops
from ephemeral_actors._coordinators._future import OperationFuture
from ephemeral_actors._coordinators._key import keys_of
from ephemeral_actors._coordinators._offer import offer as _offer
from ephemeral_actors._coordinators._requests import BLOCK, TRY
from ephemeral_actors._coordinators._source import IN_MEMORY, AsyncFeeder, SourceThread
from ephemeral_actors._coordinators._supervisor import CoordinatorState, Core
from ephemeral_actors._errors import (
    CoordinatorClosedError,
    CoordinatorFaultedError,
    CoordinatorNotCompletedError,
)
from ephemeral_actors._options import CoordinatorOptions, default_options
from ephemeral_actors._signals import matches
from ephemeral_actors._signals._event import check_signal_name
from ephemeral_actors._validate import check_seconds_or_none

if TYPE_CHECKING:
    from types import TracebackType

    import pykka

    from ephemeral_actors._admission import Admission
    from ephemeral_actors._coordinators._supervisor import Supervisor
    from ephemeral_actors._records import ActorStats, CoordinatorStats, OperationSnapshot
    from ephemeral_actors._signals import SignalEvent
    from ephemeral_actors.actors import SupervisorProxy

__all__ = ["CoordinatorBase"]

T = TypeVar("T")


def check_options(options: object) -> CoordinatorOptions:
    """Return `options`, or the defaults for None; reject anything else by name."""
    if options is None:
        return default_options()
    if not isinstance(options, CoordinatorOptions):
        raise TypeError(
            f"options must be a CoordinatorOptions or None, got {type(options).__name__}"
        )
    return options


class CoordinatorBase(Generic[T]):
    """Intake, counters, window, control and lifecycle shared by every coordinator."""

    _kind = "coordinator"
    _capture_results = False

    def __init__(self, body: Callable[[T], Any], options: CoordinatorOptions | None = None) -> None:
        self._core = self._make_core(body, check_options(options))
        self._has_source = False
        try:
            self._core.start()
        except BaseException:
            self._core.close(None)
            raise

    def _make_core(self, body: Callable[[T], Any], options: CoordinatorOptions) -> Core:
        return Core(body, options, kind=self._kind, capture_results=self._capture_results)

    def _start_source(self, source: object, *, caller_waits: bool = False) -> None:
        """Start reading `source` into this coordinator.

        An async iterable is read by a task on the loop the bodies run on; so is an
        in-memory collection (`IN_MEMORY`) when the bodies are coroutines, since reading
        it cannot block that loop and needs no hand-off between threads. With plain
        bodies the supervisor reads such a collection itself, in its turns, as backlog
        space frees (`Core.draw_source`); with a key selector too when the caller waits
        for the whole run (`for_each`, `caller_waits`), which computes the keys first,
        since the selector may not run in the supervisor's turn. Any other iterable may
        block in `next()`: a thread reads it.
        """
        core = self._core
        self._has_source = True
        core.set_source_open()
        if isinstance(source, AsyncIterable) or (core.is_async and type(source) in IN_MEMORY):
            feeder = AsyncFeeder(core, cast("AsyncIterable[Any] | Iterable[Any]", source))
            core.feeder = feeder
            feeder.start()
        elif core.draws_collections and type(source) in IN_MEMORY:
            # Read by the supervisor itself, in its turns: no thread.
            core.draw_source(iter(cast("Iterable[Any]", source)))
        elif caller_waits and core.draws_keyed and type(source) in IN_MEMORY:
            # The caller waits for the whole run anyway, so it computes the keys before
            # the supervisor draws the items. A selector that raises ends the source
            # after the items before that one, and `drain()` re-raises it, as when a
            # reader thread computes the keys.
            assert core.key_of is not None
            try:
                keyed, failure = keys_of(core.key_of, cast("Iterable[Any]", source))
                core.draw_source(iter(keyed), keyed=True, then=failure)
            except BaseException:
                self.close()  # an interrupt while the keys were computed: nothing runs
                raise
        elif isinstance(source, Iterable):
            core.feeder = SourceThread(core, source)
            core.feeder.start()
        else:
            self.close()
            raise TypeError(
                f"source must be an iterable or async iterable, got {type(source).__name__}"
            )

    def __repr__(self) -> str:
        return repr(self._core).replace(self._core.kind, type(self).__name__, 1)

    def __del__(self) -> None:
        # The actors hold the core, not this facade: dropping the facade loses no work
        # (it finishes, at the latest at interpreter exit), but an unclosed coordinator
        # with work is a leak worth a ResourceWarning, as an unclosed file is.
        core = self.__dict__.get("_core")
        if core is None or core.closing:
            return
        # Nobody can close it any more: it closes itself once its work is done, so its
        # threads do not outlive the work (issue 13, finding 14).
        core.mailbox.post((core._on_orphaned, None))
        # Two counters read apart (not an ask: this may run in any thread, in a
        # garbage collection): enough to decide on a warning.
        pending, active = core.npending, core.running
        if pending + active > 0:
            warnings.warn(
                f"unclosed coordinator {core.name!r} with {pending} pending and {active} "
                "active operation(s) was garbage-collected; its work goes on until it ends "
                "(at the latest at interpreter exit): close() it, or use it with 'with'",
                ResourceWarning,
                stacklevel=2,
            )

    # -- intake ------------------------------------------------------------------------

    def enqueue(
        self,
        item: T,
        *,
        timeout: float | None = None,
        priority: int = 0,
        delay: float | None = None,
    ) -> int:
        """Accept `item` and return its operation id.

        Blocks while the backlog (`max_tracked_operations` pending items) is full.

        Args:
            item: The work item; it is passed to the body and never retained in records.
            timeout: Seconds to wait for backlog space; `None` waits as long as it takes.
            priority: Lower numbers start first; equal priorities start in enqueue
                order. In a keyed coordinator a key's items keep their enqueue order
                whatever their priorities; ready keys compete by the priority of
                their next item.
            delay: Seconds (or a `timedelta`) after acceptance before the item may
                start; it counts as pending meanwhile and can be cancelled.

        Returns:
            The positive 63-bit operation id.

        Raises:
            CoordinatorFullError: The backlog stayed full for `timeout` seconds.
            CoordinatorClosedError: `complete()`, `cancel()` or `close()` was called.
            CoordinatorFaultedError: The supervisor actor died.
            TypeError: `priority` is not an int, or `delay` not seconds.
        """
        if timeout is not None:
            timeout = check_seconds_or_none("timeout", timeout)
        core = self._core
        accept = core.accept_default
        # `Core.accept`'s own test, here: a frame less for every plain item.
        if accept is not None and priority.__class__ is int and not priority and delay is None:
            op = accept(item, None, timeout, BLOCK)
        else:
            op = core.accept(item, None, timeout, BLOCK, priority, delay)
        assert op is not None
        return op.id

    def try_enqueue(self, item: T, *, priority: int = 0, delay: float | None = None) -> bool:
        """Accept `item` if that needs no waiting; never raises for a full or closed coordinator.

        `priority` and `delay` are as for `enqueue` (a bad value raises).

        Returns:
            True if the item was accepted.
        """
        return self._core.accept(item, None, None, TRY, priority, delay) is not None

    def offer(self, item: T) -> Admission:
        """Accept `item` if that needs no waiting, or say why not; never blocks or raises.

        From one of this coordinator's own bodies it is never refused for space.

        Returns:
            `Admission.ACCEPTED` (the only truthy member), or the reason for refusing:
            `CLOSED` (intake closed for good), `KEY_ERROR` (the key selector raised or
            returned an unhashable key), `UNFAIR` (fair scheduling: the key has
            `fair_scheduling_threshold` pending) or `FULL` (the backlog is full; retry
            later). When several apply, the first in that order is given.

        Added in version 0.2.0.
        """
        return _offer(self._core, item)

    def enqueue_many(self, items: Iterable[T]) -> int:
        """Accept every item of `items`, waiting for backlog space as `enqueue` does.

        An in-memory collection (a list, tuple, range, set, dict or deque) goes to the
        supervisor as one message, which takes its items as space frees; any other
        iterable is read here, one `enqueue` per item. In a keyed coordinator the key
        selector runs here, in the caller's thread, for every item of such a collection
        before the first is accepted; if it raises, the items before that one are
        accepted and its exception is raised.

        Returns:
            How many items were accepted. If intake closes part-way, the items
            accepted so far are counted and the rest are not taken from `items`.

        Raises:
            CoordinatorClosedError: Intake was closed before the first item.
        """
        if not isinstance(items, Iterable):
            raise TypeError(f"items must be an iterable, got {type(items).__name__} {items!r}")
        core = self._core
        if type(items) in IN_MEMORY:
            # One message for the whole collection: the supervisor reads it as space frees.
            if core.draws_collections:
                return core.accept_collection(iter(items))
            if core.draws_keyed:
                # Every key computed first, here, as `enqueue` computes it; the
                # supervisor then draws the items with their keys. If the selector
                # raises, the items before that one are accepted and its exception is
                # raised, as a loop of `enqueue` would do.
                assert core.key_of is not None
                keyed, failure = keys_of(core.key_of, items)
                if failure is not None and not keyed:
                    raise failure
                # Even an empty collection goes: a closed coordinator refuses it.
                return core.accept_collection(iter(keyed), keyed=True, then=failure)
        count = 0
        accept = core.accept
        try:
            for item in items:
                accept(item, None, None, BLOCK)
                count += 1
        except (CoordinatorClosedError, CoordinatorFaultedError):
            if count == 0:
                raise
        return count

    def submit(
        self, item: T, *, priority: int = 0, delay: float | None = None
    ) -> OperationFuture[Any]:
        """Accept `item` and return a future of its outcome (the *ask* form).

        Blocks while the backlog is full, like `enqueue`; `priority` and `delay` are
        as for `enqueue`.

        Returns:
            An `OperationFuture`: a `concurrent.futures.Future` and a `pykka.Future`
            that resolves when the operation ends, to `None` (or the body's result in
            a `ResultCoordinator`), or raises the body's exception. `await` it,
            `result()`/`get()` it, pass it to `concurrent.futures.wait`, or
            `cancel()` the item while it is pending.
        """
        future: OperationFuture[Any] = OperationFuture()
        core = self._core
        accept = core.accept_default
        if accept is not None and priority.__class__ is int and not priority and delay is None:
            accept(item, future, None, BLOCK)
        else:
            core.accept(item, future, None, BLOCK, priority, delay)
        return future

    async def enqueue_async(self, item: T, *, priority: int = 0, delay: float | None = None) -> int:
        """`enqueue` for asyncio: waits for backlog space without blocking the loop."""
        op = await self._core.accept_async(item, None, priority, delay)
        return op.id

    async def submit_async(self, item: T, *, priority: int = 0, delay: float | None = None) -> Any:
        """Accept `item` and await its outcome without blocking the event loop.

        `priority` and `delay` are as for `enqueue`.

        Returns:
            `None`, or the body's result in a `ResultCoordinator`.

        Raises:
            BaseException: Whatever the body raised.
        """
        outcome = asyncio.get_running_loop().create_future()
        core = self._core
        # One await for the whole call: a request that waits for backlog space does not
        # wake this task when it is accepted, only the outcome does (or a refusal).
        request = core.accept_reply(item, outcome, priority, delay)
        try:
            return await outcome
        except asyncio.CancelledError:
            if request is not None and not request.done:
                core._withdraw(request)  # still waiting for space: not enqueued
            raise

    # -- counters and state ------------------------------------------------------------

    @property
    def pending_count(self) -> int:
        """Items accepted and not yet started."""
        return self._core.npending

    @property
    def active_count(self) -> int:
        """Operations running now."""
        return self._core.running

    @property
    def total_enqueued(self) -> int:
        """Items ever accepted."""
        return self._core.enqueued

    @property
    def total_completed(self) -> int:
        """Operations that ended successfully."""
        return self._core.completed

    @property
    def total_failed(self) -> int:
        """Operations whose body raised (cancellations are counted apart)."""
        return self._core.failed

    @property
    def total_cancelled(self) -> int:
        """Items dropped by `cancel()` or a signal, and bodies that acknowledged cancellation."""
        return self._core.cancelled

    @property
    def is_completed(self) -> bool:
        """True once intake is closed by `complete()`, `cancel()` or `close()`."""
        return self._core.state is not CoordinatorState.RUNNING

    @property
    def is_drained(self) -> bool:
        """True once completed with nothing pending or active."""
        core = self._core
        return bool(core.call(core.is_drained_now))

    @property
    def is_paused(self) -> bool:
        """True while `pause()` holds new operations back."""
        return self._core.paused

    @property
    def max_concurrency(self) -> int:
        """The current global concurrency limit."""
        return self._core.limit

    @property
    def name(self) -> str:
        """The coordinator's name (`options.name`, or a generated one)."""
        return self._core.name

    @property
    def options(self) -> CoordinatorOptions:
        """The options the coordinator was built with."""
        return self._core.options

    @property
    def actor_ref(self) -> pykka.ActorRef[Supervisor]:
        """The supervisor actor's `pykka.ActorRef`, for `tell`/`ask` with `messages`."""
        return self._core.supervisor_ref

    def proxy(self) -> SupervisorProxy:
        """A typed Pykka proxy of the supervisor actor (see `ephemeral_actors.actors`).

        Calls go through the supervisor's mailbox and return `pykka.Future`s, so it
        suits code running inside other actors.
        """
        # SupervisorProxy only types the proxy (pykka.typing style): the object is
        # Pykka's own ActorProxy.
        return cast("SupervisorProxy", self.actor_ref.proxy())

    def add_observer(self, callback: Callable[[OperationSnapshot], None]) -> None:
        """Call `callback(snapshot)` for every operation that ran, once it has ended.

        It runs on the worker thread right after the operation is recorded (no lock
        held), so keep it short; exceptions are logged. Operations cancelled before
        they started (dropped backlog, cancel signals) are not reported. Metrics
        exporters use this for duration histograms.
        """
        self._core.add_observer(callback)

    def remove_observer(self, callback: Callable[[OperationSnapshot], None]) -> bool:
        """Stop calling `callback`; True if it was registered."""
        return self._core.remove_observer(callback)

    @property
    def is_faulted(self) -> bool:
        """True once the coordinator faulted (SPEC 14).

        It faults when its supervisor actor dies, or when workers crash more than
        `max_restarts` times within `restart_window` seconds.
        """
        return self._core.is_faulted

    def actor_stats(self) -> tuple[ActorStats, ...]:
        """One record per actor role behind this coordinator (SPEC 14).

        Roles: `"supervisor"`, `"worker"`, `"callbacks"`, and `"key"` for keyed
        coordinators; each is listed with `actors=0` when none is alive. It keeps
        answering after `close()`.
        """
        return self._core.actor_stats()

    def cancel_operation(self, op_id: int) -> bool:
        """Cancel one item by id (SPEC 16).

        A pending item is dropped: it counts in `total_cancelled` and its `submit`
        future is cancelled. A running one is asked to cancel (cooperatively, see
        `Operation.raise_if_cancelled`). Synchronous control: it has taken effect
        when it returns.

        Returns:
            False if no such item is pending or running (unknown, or already ended).
        """
        return self._core.cancel_operation(op_id)

    def stats(self) -> CoordinatorStats:
        """Every counter and state flag, read at one instant."""
        return self._core.stats()

    # -- window ------------------------------------------------------------------------

    def get_snapshot(self) -> tuple[OperationSnapshot, ...]:
        """Every operation in the window, oldest first."""
        core = self._core
        return core.snapshot(with_results=self._capture_results)

    def get_running(self) -> tuple[OperationSnapshot, ...]:
        """Operations in the window that have not ended."""
        return tuple(s for s in self.get_snapshot() if s.completed is None)

    def get_completed(self) -> tuple[OperationSnapshot, ...]:
        """Operations in the window that ended, successfully or not."""
        return tuple(s for s in self.get_snapshot() if s.completed is not None)

    def get_failed(self) -> tuple[OperationSnapshot, ...]:
        """Operations that ended with an error (failed or cancelled), oldest start first.

        Besides the window's, the most recent `max_tracked_failures` such operations
        are kept after the window's size trim dropped them; they still leave with
        `max_operation_lifetime` and `evict`.
        """
        return self._core.failed_snapshot(with_results=self._capture_results)

    def pin(self, op_id: int) -> bool:
        """Keep operation `op_id` in the window through size and age trims.

        Returns:
            True if the operation was in the window.
        """
        return self._core.set_pinned(op_id, True)

    def unpin(self, op_id: int) -> bool:
        """Let operation `op_id` be trimmed again; True if it was in the window."""
        return self._core.set_pinned(op_id, False)

    def evict(self, op_id: int) -> bool:
        """Remove operation `op_id` from the window now, even pinned or running.

        Counters do not change; a running operation still finishes and counts.

        Returns:
            True if the operation was in the window.
        """
        return self._core.evict(op_id)

    # -- signals (SPEC 10.7) --------------------------------------------------------------

    def get_signals(
        self, predicate: Callable[[SignalEvent], bool] | None = None
    ) -> tuple[SignalEvent, ...]:
        """Signals of the operations in the window (optionally filtered), oldest first.

        Signals leave with their operation when the window trims or evicts it.
        """
        if predicate is not None and not callable(predicate):
            raise TypeError(
                f"predicate must be callable or None, got {type(predicate).__name__} {predicate!r}"
            )
        core = self._core
        return core.signals(predicate)

    def get_signals_by_key(self, key: object) -> tuple[SignalEvent, ...]:
        """Signals emitted by operations of `key` (compared as `str(key)`)."""
        wanted = str(key)
        return self.get_signals(lambda e: e.key == wanted)

    def get_signals_since(self, since: datetime) -> tuple[SignalEvent, ...]:
        """Signals with `timestamp >= since` (an aware datetime)."""
        _check_aware("since", since)
        return self.get_signals(lambda e: e.timestamp >= since)

    def get_signals_by_time_range(self, start: datetime, end: datetime) -> tuple[SignalEvent, ...]:
        """Signals with `start <= timestamp <= end`."""
        _check_aware("start", start)
        _check_aware("end", end)
        return self.get_signals(lambda e: start <= e.timestamp <= end)

    def get_signals_by_name(self, name: str) -> tuple[SignalEvent, ...]:
        """Signals called exactly `name`."""
        check_signal_name("name", name)
        return self.get_signals(lambda e: e.signal == name)

    def get_signals_by_pattern(self, pattern: str) -> tuple[SignalEvent, ...]:
        """Signals matching one pattern (`*`, `?`; commas are literal here)."""
        check_signal_name("pattern", pattern)
        return self.get_signals(lambda e: matches(e.signal, pattern))

    def has_signal(self, name: str) -> bool:
        """True if an operation in the window emitted `name`."""
        return bool(self.get_signals_by_name(name))

    def has_signal_matching(self, pattern: str) -> bool:
        """True if an operation in the window emitted a signal matching `pattern`."""
        return bool(self.get_signals_by_pattern(pattern))

    def count_signals(self, name: str | None = None) -> int:
        """How many signals (called `name`, if given) the window's operations emitted."""
        return len(self.get_signals() if name is None else self.get_signals_by_name(name))

    def count_signals_matching(self, pattern: str) -> int:
        """How many of the window's signals match `pattern`."""
        return len(self.get_signals_by_pattern(pattern))

    # -- control -----------------------------------------------------------------------

    def pause(self) -> None:
        """Stop starting new operations; running ones go on and intake continues."""
        self._core.pause()

    def resume(self) -> None:
        """Start operations again after `pause()`."""
        self._core.resume()

    def set_max_concurrency(self, limit: int) -> None:
        """Change the global concurrency limit.

        Raising takes effect at once. Lowering lets running operations finish and
        starts nothing new until fewer than `limit` run, also under a sustained backlog.

        Raises:
            DynamicConcurrencyDisabledError: The options did not enable it.
            ValueError: `limit` is below 1.
        """
        self._core.set_max_concurrency(limit)

    def complete(self) -> None:
        """Stop intake; queued items are still processed. Idempotent."""
        self._core.complete()

    def cancel(self) -> None:
        """Stop intake, drop the backlog and ask running operations to cancel. Idempotent.

        Dropped items count in `total_cancelled`; cancellation of running operations is
        cooperative (see `Operation.raise_if_cancelled`).
        """
        self._core.cancel()

    def drain(self, timeout: float | None = None) -> None:
        """Wait until every accepted item has ended and `on_sample` has seen it.

        Args:
            timeout: Seconds to wait; `None` waits as long as it takes.

        Raises:
            CoordinatorNotCompletedError: Neither `complete()` was called nor the
                coordinator was built `from_iterable`.
            TimeoutError: Not drained within `timeout`.
            CoordinatorFaultedError: The supervisor died.
            BaseException: The source of a `from_iterable` coordinator raised this.
        """
        timeout = check_seconds_or_none("timeout", timeout)
        self._check_drainable()
        self._core.wait_settled(timeout)
        error = self._core.raised_source_error()
        if error is not None:
            # The core keeps the error, and its traceback will hold this frame: the
            # frame must not hold the coordinator (a cycle the collector would free).
            del self
            raise error

    async def drain_async(self) -> None:
        """`drain` for asyncio: waits without blocking the event loop."""
        self._check_drainable()
        await self._core.wait_settled_async()
        error = self._core.raised_source_error()
        if error is not None:
            del self  # as in `drain`
            raise error

    def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until nothing is pending or active; intake stays open.

        Like `queue.Queue.join()`: for work that makes work (bodies that enqueue more
        items), where `complete()` + `drain()` cannot be used. Items accepted while it
        waits are waited for too. It also returns once the coordinator faulted.

        Args:
            timeout: Seconds to wait; `None` waits as long as it takes.

        Raises:
            TimeoutError: Still busy after `timeout` seconds.
            RuntimeError: Called from one of this coordinator's own bodies or callbacks
                (or on the event loop its bodies run on), where it would wait for itself.
            CoordinatorFaultedError: The coordinator faulted.

        Added in version 0.2.0.
        """
        _idle.wait_idle(self._core, check_seconds_or_none("timeout", timeout))

    async def wait_idle_async(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - SPEC 15 signature
        """`wait_idle` for asyncio: waits without blocking the event loop.

        Added in version 0.2.0.
        """
        await _idle.wait_idle_async(self._core, check_seconds_or_none("timeout", timeout))

    def _check_drainable(self) -> None:
        core = self._core
        if core.state is CoordinatorState.RUNNING and not self._has_source:
            raise CoordinatorNotCompletedError(
                f"drain() on coordinator {core.name!r} needs complete() first "
                "(or a coordinator built with from_iterable)"
            )

    def close(self, timeout: float | None = None) -> None:
        """Cancel, then stop every actor and thread of this coordinator.

        Returns within `timeout` even if a body never returns; such a body's thread
        is abandoned (it is a daemon thread, and it is logged) and exits when the body
        returns. Counters and queries keep answering with the final state.
        """
        self._core.close(check_seconds_or_none("timeout", timeout))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self.complete()
                self.drain()
        finally:
            self.close()

    async def __aenter__(self) -> Self:
        # A coroutine body's coordinator made outside this loop binds to it now.
        _loops.rebind(self._core)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self.complete()
                await self.drain_async()
        finally:
            await run_blocking(self.close)


def _check_aware(name: str, value: object) -> None:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__} {value!r}")
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (timestamps are UTC), got {value!r}")


async def run_blocking(fn: Callable[[], None]) -> None:
    """Run `fn` on a short-lived thread of ours and await it without blocking the loop.

    `asyncio.to_thread` would park a thread in the loop's default executor that
    outlives the call; this one ends with `fn`.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def target() -> None:
        outcome: BaseException | None = None
        try:
            fn()
        except BaseException as exc:
            outcome = exc
        # A caller that was cancelled may have closed its loop meanwhile: nobody to tell.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, done, outcome)

    thread = threading.Thread(target=target, name="ephemeral-actors-closer", daemon=True)
    thread.start()
    # Cancelled, we leave at once and `fn` finishes on its thread, which ends with it:
    # joining it here would block the event loop until then (issue 13, finding 5).
    await done
    thread.join()  # it is ending: `fn` has returned


def _settle(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)
