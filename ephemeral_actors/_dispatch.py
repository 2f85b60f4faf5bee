"""A Pykka runtime whose actors share a small, process-wide pool of threads.

A `pykka.ThreadingActor` is one OS thread (about 25 KiB, and waking ten thousand of
them takes seconds). For actors cheap enough to create by the thousand (the public
`PoolActor`; the library's own per-key children, `KeyChild`, are cheaper still and
run in their supervisor's turn), `PoolActor` keeps Pykka's actor semantics —
per-actor FIFO, one message at a time per actor, `ask`/`tell` failure handling,
`stop()` as a poison pill — but its mailbox is drained by the threads of a
`SharedDispatcher` in slices.

It is built on Pykka's documented runtime extension points (`_create_actor_inbox`,
`_create_future`, `_start_actor_loop`) and reuses Pykka's own loop pieces
(`_actor_loop_setup`, `_handle_receive`, `_handle_failure`, `_actor_loop_teardown`).
Its running loop mirrors Pykka's `_actor_loop_running` message by message, but the
inbox ends a slice by raising `_Yield` from `get()`, and after a BaseException the
blocking `ActorRegistry.stop_all()` runs off the pool (see `_actor_loop_running`).
`tests/test_dispatch.py` pins the pieces we reuse for the Pykka versions we support,
and `tests/pykka_suite` runs Pykka's own test suite against `PoolActor`.

The dispatcher also runs timers (`call_later`), so the library's shared threads stay
within the budget of SPEC section 2: the loop thread plus these two.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import pykka

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "DISPATCHER",
    "PoolActor",
    "SharedDispatcher",
    "Timer",
    "TimerOwner",
    "call_later",
    "give_back",
]

logger = logging.getLogger("ephemeral_actors")
_pykka_logger = logging.getLogger("pykka")
"""Messages Pykka's own actor loop logs keep Pykka's logger, as before the loop was ours."""

_SLICE = 64
"""Messages one actor may handle before others get a turn (fairness across actors)."""


class _Yield(BaseException):
    """Raised by the inbox to end a slice: the mailbox is empty or the budget is spent."""


class Timer:
    """A cancellable callback scheduled with `SharedDispatcher.call_later`."""

    __slots__ = ("callback", "cancelled", "deadline", "owner")

    def __init__(
        self,
        deadline: float,
        callback: Callable[[], object],
        owner: SharedDispatcher | None = None,
    ) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False
        self.owner = owner

    def cancel(self) -> None:
        """Do not run the callback (idempotent; harmless once it ran)."""
        if not self.cancelled:
            self.cancelled = True
            if self.owner is not None:
                self.owner._cancelled()


class SharedDispatcher:
    """A reference-counted pool of threads that runs pool actors and timers."""

    def __init__(self, threads: int = 2, name: str = "ephemeral-actors-shared-dispatch") -> None:
        self._size = threads
        self._name = name
        self._cv = threading.Condition(threading.Lock())
        self._runq: collections.deque[PoolActor] = collections.deque()
        self._timers: list[tuple[float, int, Timer]] = []
        self._dead_timers = 0  # cancelled timers still in `_timers`
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._refs = 0
        self._generation = 0

    def reset_after_fork(self) -> None:
        """Forget the parent's threads, run queue and timers in a forked child.

        None of the parent's threads exist in the child, and one of them may have held
        the condition's lock at the fork: the child's first `acquire` starts new ones.
        """
        self._cv = threading.Condition(threading.Lock())
        self._runq = collections.deque()
        self._timers = []
        self._dead_timers = 0
        self._threads = []
        self._refs = 0
        self._generation += 1

    def __repr__(self) -> str:
        return (
            f"<SharedDispatcher refs={self._refs} threads={len(self._threads)} "
            f"queued={len(self._runq)} timers={len(self._timers)}>"
        )

    def acquire(self) -> None:
        """Take a reference; the pool threads run while any reference is held."""
        with self._cv:
            self._refs += 1
            while len(self._threads) < self._size:
                thread = threading.Thread(
                    target=self._work,
                    args=(self._generation,),
                    name=f"{self._name}-{len(self._threads) + 1}",
                    daemon=True,
                )
                self._threads.append(thread)
                thread.start()

    def release(self) -> list[threading.Thread]:
        """Drop a reference; at zero, return the threads that will exit (to join).

        Threads finish the actors already queued (stop messages, usually) first.
        """
        with self._cv:
            if self._refs <= 0:
                logger.error("SharedDispatcher released more often than acquired; ignored")
                return []
            self._refs -= 1
            if self._refs:
                return []
            leaving, self._threads = self._threads, []
            self._generation += 1
            self._timers.clear()
            self._cv.notify_all()
            return leaving

    def schedule(self, actor: PoolActor) -> None:
        """Queue `actor` for a slice on a pool thread."""
        with self._cv:
            self._runq.append(actor)
            self._cv.notify()

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        """Run `callback` on a pool thread after `delay` seconds."""
        timer = Timer(time.monotonic() + delay, callback, self)
        with self._cv:
            heapq.heappush(self._timers, (timer.deadline, next(self._seq), timer))
            self._cv.notify()
        return timer

    def _cancelled(self) -> None:
        # A cancelled timer would stay in the heap until its deadline: with long delays
        # and frequent re-arming that is unbounded. Once most of the heap is dead,
        # rebuild it without the dead (amortised O(1) per cancel).
        with self._cv:
            self._dead_timers += 1
            timers = self._timers
            if self._dead_timers > 64 and self._dead_timers * 2 > len(timers):
                timers[:] = [entry for entry in timers if not entry[2].cancelled]
                heapq.heapify(timers)
                self._dead_timers = 0

    def _next_job_locked(self, generation: int) -> PoolActor | Timer | None:
        while True:
            timers = self._timers
            now = time.monotonic()
            if timers and timers[0][0] <= now:
                timer = heapq.heappop(timers)[2]
                if not timer.cancelled:
                    return timer
                self._dead_timers -= 1
                continue
            if self._runq:
                return self._runq.popleft()
            if generation != self._generation:
                return None
            self._cv.wait(timers[0][0] - now if timers else None)

    def _work(self, generation: int) -> None:
        while True:
            with self._cv:
                job = self._next_job_locked(generation)
            if job is None:
                return
            try:
                if isinstance(job, Timer):
                    job.callback()
                else:
                    job._run_slice()
            except BaseException:
                logger.exception(f"dispatcher job {job!r} failed")


DISPATCHER = SharedDispatcher()


class TimerOwner(Protocol):
    """An actor that holds a reference on `DISPATCHER` while it has used a timer."""

    uses_dispatcher: bool


def call_later(owner: TimerOwner, delay: float, callback: Callable[[], object]) -> Timer:
    """`DISPATCHER.call_later`, taking `owner`'s reference on the dispatcher first if needed.

    Timers need the dispatcher's threads: an owner takes its reference with its first
    timer, not when it is built, so building a coordinator starts no thread. Call it in
    `owner`'s turn (it writes `owner.uses_dispatcher`).
    """
    if not owner.uses_dispatcher:
        owner.uses_dispatcher = True
        DISPATCHER.acquire()
    return DISPATCHER.call_later(delay, callback)


def give_back(owner: TimerOwner) -> list[threading.Thread]:
    """Return `owner`'s reference on the dispatcher, if it took one; threads to join."""
    if not owner.uses_dispatcher:
        return []
    owner.uses_dispatcher = False
    return DISPATCHER.release()


"""The pool every coordinator's timers and turn hand-offs, and every `PoolActor`, share."""


def _reset_after_fork() -> None:
    # Locks a vanished parent thread may have held at the fork would block the child
    # for good: the dispatcher's, the stop flags', and Pykka's registry lock (every
    # coordinator registers its supervisor there). Issue 13, finding 6.
    global _EVENT_LOCK  # noqa: PLW0603
    DISPATCHER.reset_after_fork()
    _EVENT_LOCK = threading.Lock()
    pykka.ActorRegistry._actor_refs_lock = threading.RLock()


os.register_at_fork(after_in_child=_reset_after_fork)


class _StopFlag:
    """`actor_stopped` for pool actors: a flag that makes its `threading.Event` on demand.

    An Event is a Condition, a lock and a deque (about a kilobyte); per-key children
    exist by the hundred thousand and almost nobody waits on their flag. Code written
    for `ThreadingActor` does wait on it (`ref.actor_stopped.wait(5)`, as Pykka's own
    tests do), so `wait()` creates the Event the first time someone waits.
    """

    __slots__ = ("_event", "_set")

    def __init__(self) -> None:
        self._set = False
        self._event: threading.Event | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        # Store the flag before reading `_event`; `wait` stores `_event` before reading
        # the flag. Whichever runs second sees the other's store, so a waiter is never
        # left behind an Event nobody sets.
        self._set = True
        event = self._event
        if event is not None:
            event.set()

    def clear(self) -> None:
        self._set = False
        event = self._event
        if event is not None:
            event.clear()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the flag is set or `timeout` passes; return the flag, as Event does."""
        if self._set:
            return True
        event = self._event
        if event is None:
            with _EVENT_LOCK:
                event = self._event
                if event is None:
                    event = self._event = threading.Event()
        if self.is_set():  # set() may have read `_event` before it existed
            event.set()
        return event.wait(timeout)


_EVENT_LOCK = threading.Lock()
"""Guards creating a `_StopFlag`'s Event, so two first waiters share one (rarely taken)."""


class _PoolInbox:
    """A mailbox that schedules its actor on the dispatcher when mail arrives."""

    __slots__ = ("_budget", "_lock", "_queue", "_scheduled", "actor", "closed")

    def __init__(self, actor: PoolActor) -> None:
        self.actor = actor
        self._queue: collections.deque[Any] | None = None
        self._lock = threading.Lock()
        self._scheduled = True  # until started: mail waits for _start_actor_loop
        self._budget = 0
        self.closed = False

    def put(self, envelope: Any, /) -> None:
        with self._lock:
            if self.closed:
                # The actor stopped between the sender's is_alive() check and now;
                # ThreadingActor would leave such an ask unanswered forever.
                _fail_dead(envelope, self.actor)
                return
            if self._queue is None:
                self._queue = collections.deque()
            self._queue.append(envelope)
            if self._scheduled:
                return
            self._scheduled = True
        self.actor.dispatcher.schedule(self.actor)

    def get(self) -> Any:
        if self._budget <= 0:
            raise _Yield
        self._budget -= 1
        with self._lock:
            queue = self._queue
            if not queue:
                raise _Yield
            return queue.popleft()

    def empty(self) -> bool:
        return not self._queue

    def begin_slice(self) -> None:
        self._budget = _SLICE

    def end_slice(self) -> bool:
        """Give the thread back; return True if the actor must run again."""
        with self._lock:
            if self._queue:
                return True
            self._queue = None  # idle actors hold no deque
            self._scheduled = False
            return False

    def close_if_idle(self) -> bool:
        """Close an actor that has no mail and is not running; True if it was closed."""
        with self._lock:
            if self._queue or self._scheduled or self.closed:
                return False
            self.closed = True
            self._scheduled = True
            return True

    def close(self) -> None:
        with self._lock:
            self.closed = True

    def start(self) -> bool:
        """Let mail schedule the actor; True if mail already waits."""
        with self._lock:
            if self._queue:
                return True
            self._scheduled = False
            return False


def _stop_all_elsewhere() -> None:
    """Run Pykka's blocking `ActorRegistry.stop_all()` on a thread that is not a pool thread.

    It keeps `stop_all`'s guarantee (registered actors stop one by one, last started
    first) without holding a pool thread, which the stops themselves need.
    """
    threading.Thread(target=_stop_all, name="ephemeral-actors-stop-all", daemon=True).start()


def _stop_all() -> None:
    try:
        pykka.ActorRegistry.stop_all()
    except Exception:
        logger.exception("stopping every registered actor after a BaseException failed")


def _fail_dead(envelope: Any, actor: PoolActor) -> None:
    if envelope.reply_to is not None:
        error = pykka.ActorDeadError(f"{actor.actor_ref} stopped before handling the message")
        envelope.reply_to.set_exception((pykka.ActorDeadError, error, None))


class PoolActor(pykka.Actor):
    """A Pykka actor without a thread of its own: its mailbox is drained by a dispatcher.

    Semantics match `pykka.ThreadingActor`: messages are handled one at a time in
    arrival order; an exception from a `tell` handler stops the actor and calls
    `on_failure`, one from an `ask` goes to the asker; `stop()` is a poison pill;
    messages to a stopped actor fail with `ActorDeadError`.

    Differences: pool actors are not added to `pykka.ActorRegistry` unless started
    with `start()` (its list costs O(n) per removal, and per-key children come and go
    by the thousand); their `actor_urn` is a counter-based URN, not a uuid4
    (`urn:ephemeral-actors:<class>:<n>`, unique within the process); after a
    BaseException the stop of every registered actor runs on a helper thread, so the
    failing actor's thread is free before the others have stopped; and a handler must
    not block on another pool actor's future — with every pool thread blocked that way
    the pool stalls.
    """

    dispatcher: ClassVar[SharedDispatcher] = DISPATCHER
    _urns = itertools.count(1)

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        # Pykka's Actor.__init__, minus the uuid4 and the threading.Event, which cost
        # microseconds and a kilobyte per actor; the fields are the same four.
        self.actor_urn = f"urn:ephemeral-actors:{type(self).__name__}:{next(self._urns)}"
        self.actor_inbox = _PoolInbox(self)
        self.actor_stopped = _StopFlag()  # type: ignore[assignment]
        self._actor_ref = pykka.ActorRef(self)
        self._setup_done = False
        self._registered = False

    @staticmethod
    def _create_actor_inbox() -> Any:
        msg = "PoolActor builds its inbox in __init__"  # pragma: no cover
        raise NotImplementedError(msg)  # pragma: no cover

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return pykka.ThreadingFuture()

    @classmethod
    def spawn(cls, *args: Any, **kwargs: Any) -> Any:
        """Create and start an actor without registering it in `pykka.ActorRegistry`.

        Returns:
            The actor instance (its `actor_ref` is the handle to share).
        """
        actor = cls(*args, **kwargs)
        actor._start_actor_loop()
        return actor

    @classmethod
    def start(cls, *args: Any, **kwargs: Any) -> pykka.ActorRef[Any]:
        """Start a registered actor, exactly like `pykka.Actor.start`."""
        actor = cls(*args, **kwargs)
        actor._registered = True
        pykka.ActorRegistry.register(actor.actor_ref)
        actor._start_actor_loop()
        return actor.actor_ref

    def _start_actor_loop(self) -> None:
        inbox: _PoolInbox = self.actor_inbox  # type: ignore[assignment]
        if type(self).on_start is not pykka.Actor.on_start or inbox.start():
            # on_start (or early mail) needs a slice; otherwise nothing runs until mail.
            inbox._scheduled = True
            self.dispatcher.schedule(self)
        else:
            self._setup_done = True

    def _run_slice(self) -> None:
        inbox: _PoolInbox = self.actor_inbox  # type: ignore[assignment]
        if not self._setup_done:
            self._setup_done = True
            self._actor_loop_setup()
        if not self.actor_stopped.is_set():
            inbox.begin_slice()
            try:
                self._actor_loop_running()
            except _Yield:
                if inbox.end_slice():
                    self.dispatcher.schedule(self)
                return
        # The actor stopped: later tells see the flag; queued asks get ActorDeadError.
        inbox.close()
        inbox._budget = sys.maxsize
        self._actor_loop_teardown()

    def _actor_loop_running(self) -> None:
        # Pykka's loop (`pykka.Actor._actor_loop_running`), the same message by message,
        # except after a BaseException. Pykka then stops this actor and calls the
        # blocking `ActorRegistry.stop_all()`, which waits until every registered
        # actor has handled a stop message. A pool actor's stop message is handled on
        # a pool thread, so a pool thread blocked there waits for the other pool
        # threads; when as many registered pool actors raise at once as there are
        # pool threads, each waits for the others and the pool is deadlocked for good
        # (issue 13, finding 24). So the same blocking stop_all runs on a thread of
        # its own, and this pool thread goes back to work.
        inbox = self.actor_inbox
        while not self.actor_stopped.is_set():
            envelope = inbox.get()  # raises _Yield (outside the try) to end the slice
            try:
                response = self._handle_receive(envelope.message)
                if envelope.reply_to is not None:
                    envelope.reply_to.set(response)
            except Exception:
                if envelope.reply_to is not None:
                    _pykka_logger.info(
                        f"Exception returned from {self} to caller:", exc_info=sys.exc_info()
                    )
                    envelope.reply_to.set_exception()
                else:
                    self._handle_failure(*sys.exc_info())
                    try:
                        self.on_failure(*sys.exc_info())
                    except Exception:
                        self._handle_failure(*sys.exc_info())
            except BaseException:
                _pykka_logger.debug(f"{sys.exc_info()[1]!r} in {self}. Stopping all actors.")
                self._stop()
                _stop_all_elsewhere()

    def _stop(self) -> None:
        # Pykka's _stop, but an unregistered (spawned) actor skips the registry's
        # linear search, and the log line is only formatted when it will be shown.
        if self._registered:
            pykka.ActorRegistry.unregister(self.actor_ref)
        self.actor_stopped.set()
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(f"Stopped {self}")
        try:
            self.on_stop()
        except Exception:
            self._handle_failure(*sys.exc_info())

    def stop_if_idle(self) -> bool:
        """Stop the actor here and now if it has no mail and is not running.

        The owner of many idle actors uses this instead of a poison pill each, which
        would cost a message and a pool slice per actor. `on_stop` runs in the
        caller's thread.

        Returns:
            True if the actor was stopped; False if it is busy (send `stop()` instead).
        """
        inbox: _PoolInbox = self.actor_inbox  # type: ignore[assignment]
        if not inbox.close_if_idle():
            return False
        self._stop()
        return True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.actor_urn}>"
