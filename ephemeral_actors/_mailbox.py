"""The actor runtime: mailboxes whose turns run on whichever thread finds them idle.

An actor here is a mailbox, a behaviour (`handle`) and a *scheduled* flag. A sender
appends its message; if that flips the flag from idle to scheduled, the sender runs
the actor's **turn** itself: it handles every message in the mailbox (its own and
whatever other threads added meanwhile), calls `end_turn` (the owner answers the
requests of the turn; the bus also publishes its read model there), clears the flag
and leaves. A sender that finds the actor scheduled only appends: the thread running
the turn handles its message. One thread at a time runs an actor's turn, so the actor's
state needs no lock; but the actor is not pinned to a thread (Akka and Proto.Actor
dispatchers, flat combining).

Why caller-runs rather than a dispatcher thread per actor: in CPython, waking a
parked thread costs tens of microseconds and a GIL hand-off; appending to a deque
costs well under one. An idle `submit()` runs the supervisor's turn in the caller's
thread and never wakes anyone; a busy actor batches: the thread in its turn drains
what everyone else appended.

A turn is bounded (`THROUGHPUT` messages): past that, the rest is handed to a shared
dispatcher thread, so a caller is never captured by other threads' traffic.

The flag is a one-token deque: taking the token (`pop`) is the atomic test-and-set,
putting it back (`append`) the release, and nobody ever blocks on it. A
`threading.Lock` used the same way (`acquire(False)`) parses its arguments as keywords
and costs four times as much, twice per item.

Who runs a turn: the mailbox's `holder` is the thread ident of the thread in its turn
(0 outside turns), which is what `in_turn` asks. The supervisor's two written-out
per-item turns store it only before the calls that may ask (see `Core.accept_plain`).
Ownership check mode also keeps, per thread, the innermost actor whose turn it runs
(turns nest when one actor's turn posts to another idle actor), so a write is allowed
only in its owner's own, innermost turn.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import threading
import weakref
from asyncio.events import _get_running_loop
from typing import TYPE_CHECKING, Any, Final

import pykka

from ephemeral_actors._loop_inbox import post_to_loop

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = [
    "BUSY",
    "CHECK_OWNERSHIP",
    "THROUGHPUT",
    "Mailbox",
    "Parking",
    "Reply",
    "call_on_loop",
    "check_owner",
    "handle_envelope",
    "interrupts_caller",
    "post_unless_gone",
]

logger = logging.getLogger("ephemeral_actors")

THROUGHPUT: Final = 512
"""Messages one turn handles before the rest is handed to a dispatcher thread."""

CHECK_OWNERSHIP: Final = os.environ.get("EPHEMERAL_ACTORS_CHECK_OWNERSHIP", "") not in ("", "0")
"""Ownership check mode (SPEC 14): read once, at import."""

_get_ident = threading.get_ident
_in_turn: dict[int, object] = {}
"""Ownership check mode only: thread ident -> the actor whose turn that thread runs
(innermost, when turns nest). Outside that mode nothing writes it: every turn would
pay two dict writes for a question only the checks ask."""


def _leave_checked(ident: int, previous: object) -> None:
    """Ownership check mode: the turn of thread `ident` ended; `previous` is innermost again."""
    if previous is None:
        _in_turn.pop(ident, None)
    else:
        _in_turn[ident] = previous


def check_owner(owner: object, what: str) -> None:
    """In ownership check mode, fail unless this thread runs `owner`'s turn.

    Raises:
        AssertionError: `what` (a field of `owner`) is written outside its owner's turn.
    """
    current = _in_turn.get(_get_ident())
    # A closed coordinator's parts hold it through a weak proxy, which only `==` sees
    # through (to the identity of what it refers to).
    if current is not owner and not (type(owner) is weakref.ProxyType and owner == current):
        raise AssertionError(
            # `__repr__()`, not `!r`: a weak proxy forwards the call to what it refers to.
            f"{what} of {owner.__repr__()} written outside its owner's turn "
            f"(thread {threading.current_thread().name!r})"
        )


def interrupts_caller(error: BaseException) -> bool:
    """True if `error`, raised in an actor's turn, is the calling thread's interrupt.

    Python runs signal handlers in the main thread between any two bytecodes, so Ctrl-C
    can raise `KeyboardInterrupt` in the middle of a turn that thread runs (an
    `enqueue` begins one). The actor's state may be half-written, so the actor still
    dies of it; but the interrupt is the caller's: its owner records it on the mailbox
    (`Mailbox.interrupt`), which raises it to the caller once the turn and any mail
    that came meanwhile have run, instead of it turning into the actor's fault. An
    `Exception` in a turn is a bug, never this.
    """
    return (
        not isinstance(error, Exception) and threading.current_thread() is threading.main_thread()
    )


class Reply:
    """A request's answer, set in the owner's turn and read by the sender.

    A sender that ran the turn itself finds it done on return; any other sender
    waits on a lock made only then (the slow path), or on an asyncio future.
    """

    __slots__ = ("done", "error", "value", "waiter")

    def __init__(self) -> None:
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None
        self.waiter: Any = None

    def set(self, value: Any) -> None:
        """Answer with `value` (owner's turn)."""
        self.value = value
        self._finish()

    def fail(self, error: BaseException) -> None:
        """Answer with `error` (owner's turn)."""
        self.error = error
        self._finish()

    def _finish(self) -> None:
        # Idempotent: an interrupt can stop the owner's loop over its replies, which
        # then runs again at the end of its next turn (`Core._end_turn`).
        self.done = True
        waiter = self.waiter
        if waiter is None:
            return
        self.waiter = None
        if type(waiter) is tuple:
            loop, fut = waiter
            call_on_loop(loop, _wake_future, fut)
        else:
            waiter.release()

    def wait(self, timeout: float | None) -> bool:
        """Block until answered; False on timeout (the request may still be answered)."""
        if self.done:
            return True
        lock = threading.Lock()
        lock.acquire()
        self.waiter = lock
        if self._answered():
            return True
        if timeout is None:
            lock.acquire()
            return True
        return lock.acquire(timeout=max(0.0, timeout)) or self.done

    async def wait_async(self) -> None:
        """Await the answer without blocking the event loop."""
        if self.done:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self.waiter = (loop, fut)
        if self._answered():
            return
        await fut

    def _answered(self) -> bool:
        # Re-read after publishing the waiter: the owner may have answered in between.
        return self.done

    def result(self) -> Any:
        """The value, or raise the error (call once done)."""
        if self.error is not None:
            raise self.error
        return self.value


class Parking:
    """Where an actor that owns a thread waits for mail, woken only on the empty→non-empty edge.

    One thread posts at a time (the actor's supervisor, in its turn) and one waits (the
    actor's own thread), so the flag needs no lock: a poster that appends and then sees
    the waiter parked releases it; a waiter that parks and then sees mail does not wait.
    """

    __slots__ = ("_wakeup", "parked")

    def __init__(self) -> None:
        self.parked = False
        self._wakeup = threading.Lock()
        self._wakeup.acquire()

    def wake(self) -> None:
        """Call after appending: release the waiter if it is parked."""
        if self.parked:
            self.parked = False
            # Released twice (the waiter saw the mail before parking): a wake-up is then
            # pending, and the waiter re-checks its mailbox after any wake-up.
            try:  # noqa: SIM105 - a hot path: suppress() costs ~0.8 µs
                self._wakeup.release()
            except RuntimeError:
                pass

    def wait_for(self, mail: collections.deque[Any]) -> None:
        """Return once `mail` is non-empty (on the actor's own thread)."""
        while not mail:
            self.parked = True
            if not mail:
                self._wakeup.acquire()
            self.parked = False


def handle_envelope(
    actor: Any, envelope: Any, rejected: Callable[[Any, BaseException], None]
) -> None:
    """Handle a Pykka `tell`/`ask` envelope in the turn of a mailbox actor.

    Pykka's semantics, minus what a thread-less actor cannot afford: an ask to a stopped
    actor gets `ActorDeadError` (a stop request, `None`); an ask whose handler raises gets
    the exception; a tell whose handler raises is passed to `rejected` (which logs it),
    never re-raised, since Pykka would stop the actor — for a BaseException, every actor.
    """
    reply_to = envelope.reply_to
    if actor.actor_stopped.is_set():
        if reply_to is not None:
            if isinstance(envelope.message, pykka.messages._ActorStop):
                reply_to.set(None)
                return
            error = pykka.ActorDeadError(f"{actor.actor_ref} stopped")
            reply_to.set_exception((pykka.ActorDeadError, error, None))
        return
    try:
        response = actor._handle_receive(envelope.message)
    except BaseException as exc:
        if reply_to is not None:
            reply_to.set_exception((type(exc), exc, exc.__traceback__))
        else:
            rejected(envelope.message, exc)
        return
    if reply_to is not None:
        reply_to.set(response)


def call_on_loop(loop: Any, callback: Callable[..., None], *args: Any) -> None:
    """Run `callback(*args)` on `loop`, from any thread, to settle an asyncio future.

    On the loop's own thread (a turn run by a coroutine body or its caller) it runs
    here: setting a future only schedules its callbacks. From other threads it goes to
    the loop's inbox, which wakes the loop once per burst (`_loop_inbox`). A closed
    loop drops it: its caller is gone.
    """
    if _get_running_loop() is loop:
        callback(*args)
        return
    post_to_loop(loop, callback, *args)


def _wake_future(fut: Any) -> None:
    if not fut.done():
        fut.set_result(None)


def _weakly(ref: Callable[[], object], method: Callable[..., Any]) -> Callable[..., Any]:
    """`method`, if a bound method of `ref()`'s object, calling it without holding it."""
    if getattr(method, "__self__", None) is not ref():
        return method  # not the owner's: it holds no cycle through the owner
    func = method.__func__  # type: ignore[attr-defined]

    def call(*args: Any) -> Any:
        return func(ref(), *args)

    return call


def post_unless_gone(owner: Any, message: Any) -> None:
    """Post `message` to `owner.mailbox` (a timer's ring), unless `owner` is gone.

    A closed coordinator's parts hold it through a weak proxy (`Mailbox.weaken` and
    `Core._refer_back_weakly`); a timer that fired as it closed may ring after it was
    freed, and then there is nobody to tell.
    """
    try:
        mailbox = owner.mailbox
    except ReferenceError:
        return
    mailbox.post(message)


BUSY: Final = object()
"""`Mailbox.now`'s answer when the actor is in a turn elsewhere or has mail."""


class Mailbox:
    """An actor's mailbox and turn runner.

    Args:
        owner: The actor (used by ownership checks and in logs).
        handle: Called in the turn with each message, in arrival order; must not raise.
        end_turn: Called at the end of every turn, still inside it.
        handoff: Called in a turn that reached `THROUGHPUT` messages with mail left
            (so it may write its owner's state, such as taking a reference on a
            dispatcher), with a zero-argument callable for another thread (a
            dispatcher) to run the rest of the mail; never called back at once. None:
            the turn goes on.
        crashed: Called with what a handler run by `now` raised (the owner's crash);
            None: it propagates to the caller of `now`.
    """

    __slots__ = (
        "_crashed",
        "_end_turn",
        "_flag",
        "_handle",
        "_handoff",
        "_handoff_pending",
        "_queue",
        "_requeued",
        "_take",
        "_weak_owner",
        "holder",
        "interrupt",
        "owner",
        "processed",
        "torn",
    )

    def __init__(
        self,
        owner: object,
        handle: Callable[[Any], None],
        end_turn: Callable[[], None],
        handoff: Callable[[Callable[[], object]], None] | None = None,
        crashed: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.owner: object = owner
        self._weak_owner: Callable[[], object] | None = None  # set by `weaken`
        self._crashed = crashed
        self._queue: collections.deque[Any] = collections.deque()
        self._flag: collections.deque[bool] = collections.deque((True,))
        # Pops one message per step with no interrupt point between the pop and the
        # store of what it popped (`_run`); `map` over `repeat`, unlike `iter(popleft,
        # sentinel)`, compares nothing. It raises IndexError when empty: `_run` asks first.
        self._take: Iterator[Any] = map(collections.deque.popleft, itertools.repeat(self._queue))
        self._requeued: Any = None  # a message an interrupt stopped at its handler's entry
        self.holder = 0
        """The ident of the thread in this actor's turn; 0 outside turns. (Set for the
        whole of every turn run here; the supervisor's written-out turns set it before
        any call that may ask `in_turn`.)"""
        self._handle = handle
        self._end_turn = end_turn
        self._handoff = handoff
        self._handoff_pending = False  # handed off, and the dispatcher has not looked yet
        self.processed = 0
        self.torn = False
        """A turn died part-way (its handler raised, or an interrupt struck in it): the
        owner's state may be half-updated. Set first thing where the turn catches it,
        before any call (a call is where Python raises a second interrupt), so it stands
        however the crash handling that follows is cut short."""
        self.interrupt: BaseException | None = None
        """An interrupt a turn of the main thread died of, to raise there once the turn
        and the mail after it have run (see `interrupts_caller`)."""

    def __len__(self) -> int:
        return len(self._queue)

    def _owner(self) -> object:
        weak = self._weak_owner
        return self.owner if weak is None else weak()

    def weaken(self) -> None:
        """Refer to the owner only weakly from now on (its turns still run as before).

        The owner holds its mailbox, and the mailbox its owner's bound methods: a
        reference cycle, which only the garbage collector can free. An owner that is
        done with its hot paths (a closed coordinator) calls this, so that it is freed
        by reference counting as soon as nothing else holds it. Its later turns (state
        queries on a closed coordinator) reach it through a weak reference instead.
        """
        if self._weak_owner is not None:
            return
        ref = weakref.ref(self.owner)
        self._weak_owner = ref
        self.owner = None
        self._handle = _weakly(ref, self._handle)
        self._end_turn = _weakly(ref, self._end_turn)
        if self._handoff is not None:
            self._handoff = _weakly(ref, self._handoff)
        if self._crashed is not None:
            self._crashed = _weakly(ref, self._crashed)

    def post(self, message: Any) -> bool:
        """Append `message`; run the turn here if the actor was idle.

        Returns:
            True if this call ran the turn (so the message has been handled).
        """
        self._queue.append(message)
        if self._flag:
            return self._run()
        return False

    def now(self, handler: Callable[..., Any], *args: Any) -> Any:
        """`handler(*args)` in a turn this thread begins now; `BUSY` if it cannot begin one.

        The hot paths (intake, a worker's outcome report, a state query) run a turn per
        call, with no message and no reply. The supervisor's two per-item turns
        (`Core.accept_plain`, `Core.report_and_take`) write this method out once more,
        handler included: a change to the turn protocol here is made there too. Mail
        that came before the flag goes first: this thread runs it, and the answer is
        `BUSY` (the caller posts behind it). A handler that raises is the owner's crash,
        passed to `crashed` (the answer is then None); without `crashed` it propagates.
        """
        queue = self._queue
        flag = self._flag
        if queue or not flag:
            return BUSY
        ident = _get_ident()
        # Read before the flag: between taking it and the turn's `try` nothing may call.
        previous = _in_turn.get(ident) if CHECK_OWNERSHIP else None
        owner = self._owner() if CHECK_OWNERSHIP else None  # a call: before the flag too
        try:
            flag.pop()
        except IndexError:  # another thread took it between the test and the pop
            return BUSY
        except BaseException:
            flag.append(True)  # an interrupt as the pop returned: see `_run`
            raise
        self.holder = ident
        answer: Any = BUSY
        try:
            try:
                if CHECK_OWNERSHIP:
                    _in_turn[ident] = owner
                if not queue:
                    answer = handler(*args)
            except BaseException as exc:
                self.torn = True
                answer = None
                if self._crashed is None:
                    raise
                self._crashed(exc)
            finally:
                # The end of the turn, written out (as `_run` writes it out): a call here
                # per turn is what this method exists to save.
                self.processed += 1
                try:
                    self._end_turn()
                finally:
                    self.holder = 0
                    flag.append(True)
                    if CHECK_OWNERSHIP:
                        _leave_checked(ident, previous)
        finally:
            if queue and flag:  # mail that came during the turn (or before it)
                self._run()
        if self.interrupt is not None:
            self.raise_interrupt()
        return answer

    def _resume(self) -> None:
        """The dispatcher's part of a hand-off: run the mail a bounded turn left."""
        self._handoff_pending = False
        self._run()

    def raise_interrupt(self) -> None:
        """Raise the recorded interrupt if this is the main thread (see `interrupt`)."""
        error = self.interrupt
        if error is not None and threading.current_thread() is threading.main_thread():
            self.interrupt = None
            raise error

    def in_turn(self) -> bool:
        """True if this thread is running this actor's turn."""
        return self.holder == _get_ident()

    def _run(self) -> bool:
        """Take the flag if it is free and run turns until the mailbox is empty.

        Returns:
            True if this call ran at least one turn.

        Ctrl-C: Python raises `KeyboardInterrupt` in the main thread wherever a call
        returns or a function starts, so it can land between taking the flag and the
        `try` that gives it back, or between giving it back and looking for mail that
        came meanwhile. Hence the shape of every turn here and in `Core`: the thread
        ident (and, in ownership check mode, the thread's innermost turn) is read before
        the flag is taken, the pop sits in a `try` of its own that puts the token back,
        and the `holder` store and the turn's `try` follow with no call between; the
        release (`holder = 0`, `append`) comes first in the turn's `finally`, and the
        look for mail is in a `finally` too. An interrupt inside the turn is the owner's
        crash (`crashed`), as any other exception from a handler. One that strikes as a
        handler is entered finds the message taken but not handled: it goes back to the
        front of the mailbox and is handled after the crash (a request from another
        thread is answered, not stranded). The message is taken by a `for` over `_take`
        because nothing can be raised between that pop and the store of its result.
        """
        queue = self._queue
        flag = self._flag
        handle = self._handle
        handoff = self._handoff
        take = self._take
        ident = _get_ident()
        previous = _in_turn.get(ident) if CHECK_OWNERSHIP else None  # see `now`
        owner = self._owner() if CHECK_OWNERSHIP else None
        ran = handed_off = False
        try:
            while queue:
                try:
                    flag.pop()
                except IndexError:  # another thread's turn runs the mail
                    break
                except BaseException:
                    # Raised as the pop returned: the token is this thread's. Give it back.
                    flag.append(True)
                    raise
                self.holder = ident
                ran = True
                count = 0
                try:
                    if CHECK_OWNERSHIP:
                        _in_turn[ident] = owner
                    while queue:
                        # `message = queue.popleft()` could lose the message: an interrupt
                        # can be raised as the pop returns. FOR_ITER and the store are no
                        # such point (the loop only takes one: the queue is not empty).
                        for message in take:  # noqa: B007 - used after the break
                            break
                        try:
                            handle(message)
                        except BaseException:
                            # `handle` never raises: this struck as it was entered, before
                            # the message was handled. It goes back to the front, to be
                            # handled after the crash (once: a second raise drops it).
                            if message is self._requeued:
                                self._requeued = None
                            else:
                                self._requeued = message
                                queue.appendleft(message)
                            raise
                        if message is self._requeued:
                            self._requeued = None  # handled: no payload is kept
                        count += 1
                        if count >= THROUGHPUT and handoff is not None and queue:
                            # Arranged inside the turn: the owner's part of it writes the
                            # owner's state. The dispatcher may look before this turn ends
                            # and find the flag taken: `_resume` then clears the pending
                            # mark and this thread runs the mail after all (below).
                            self._handoff_pending = True
                            handoff(self._resume)
                            handed_off = True
                            break
                except BaseException as exc:
                    # `handle` never raises: this is an interrupt between two messages.
                    self.torn = True
                    if self._crashed is None:
                        raise
                    self._crashed(exc)
                finally:
                    self.processed += count
                    try:
                        self._end_turn()
                    finally:
                        self.holder = 0
                        flag.append(True)
                        if CHECK_OWNERSHIP:
                            _leave_checked(ident, previous)
                if handed_off:
                    # The rest goes to a dispatcher thread, so that this caller is not
                    # captured by other threads' traffic; it takes the flag as any
                    # sender would (a sender that finds it free first runs the mail).
                    break
        finally:
            if queue and flag and not (handed_off and self._handoff_pending):
                # An interrupt as the flag was given back skipped the look for mail that
                # came during the turn (its senders left it to this thread), or the
                # dispatcher looked while this turn still held the flag.
                self._run()
        if self.interrupt is not None:
            self.raise_interrupt()
        return ran
