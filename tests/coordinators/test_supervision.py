"""Supervision with limits (SPEC 14): restarts, escalation to a faulted coordinator."""

from __future__ import annotations

import gc
import logging
import queue
import threading
import weakref
from typing import NoReturn

import pytest

from ephemeral_actors import (
    CoordinatorFaultedError,
    CoordinatorOptions,
    KeyedWorkCoordinator,
    WorkCoordinator,
    WorkerCrashError,
)
from ephemeral_actors._coordinators import _supervisor
from ephemeral_actors._mailbox import Mailbox
from ephemeral_actors.testing import crash_worker, use_schedule_clock
from tests.conftest import WAIT, traceback_length


def crash_on_negative(item: int) -> int:
    if item < 0:
        crash_worker()
    return item


@pytest.mark.parametrize("keyed", [False, True], ids=["work", "keyed"])
def test_max_restarts_zero_faults_on_the_first_crash(keyed):
    """The crashing item fails with WorkerCrashError; every other waiter gets
    CoordinatorFaultedError; intake raises it; queries keep answering."""
    gate = threading.Event()

    def body(item: int) -> None:
        if item == 0:
            assert gate.wait(WAIT)
        crash_on_negative(item)

    if keyed:
        c = KeyedWorkCoordinator(lambda item: item, body, max_concurrency=2, max_restarts=0)
    else:
        c = WorkCoordinator(body, max_concurrency=2, max_restarts=0)
    try:
        slow = c.submit(0)  # holds one slot until the gate opens
        crashing = c.submit(-1)
        with pytest.raises(WorkerCrashError):
            crashing.result(timeout=WAIT)
        assert c.is_faulted
        # SPEC 14: a pending item's future is released with CoordinatorFaultedError.
        with pytest.raises(CoordinatorFaultedError):
            c.enqueue(5)
        s = c.stats()
        assert s.worker_restarts == 1
        assert s.total_failed == 1
        gate.set()
        assert slow.result(timeout=WAIT) is None  # a running body still finishes and counts
        with pytest.raises(CoordinatorFaultedError):
            c.drain(WAIT)
        s = c.stats()
        assert s.total_enqueued == s.total_completed + s.total_failed + s.total_cancelled
        assert len(c.get_snapshot()) == 2
        assert {a.role for a in c.actor_stats()} >= {"supervisor", "worker", "callbacks"}
    finally:
        gate.set()
        c.close(WAIT)


def test_pending_futures_are_released_when_the_coordinator_faults():
    """Items waiting in the backlog when the coordinator faults end with CoordinatorFaultedError
    and count as cancelled."""
    hold, crash = threading.Event(), threading.Event()

    def body(item: str) -> None:
        if item == "hold":
            assert hold.wait(WAIT)
        elif item == "crash":
            assert crash.wait(WAIT)
            crash_worker()

    c = WorkCoordinator(body, max_concurrency=2, max_restarts=0)
    try:
        held = c.submit("hold")
        crashing = c.submit("crash")
        waiting = [c.submit("later") for _ in range(3)]
        assert c.pending_count == 3
        crash.set()
        with pytest.raises(WorkerCrashError):
            crashing.result(timeout=WAIT)
        for future in waiting:
            with pytest.raises(CoordinatorFaultedError):
                future.result(timeout=WAIT)
        hold.set()
        assert held.result(timeout=WAIT) is None
        s = c.stats()
        assert (s.total_completed, s.total_failed, s.total_cancelled) == (1, 1, 3)
    finally:
        hold.set()
        crash.set()
        c.close(WAIT)


def test_crashes_within_the_window_escalate_past_max_restarts():
    """max_restarts=2: two crashes are restarted, the third faults the coordinator."""
    c = WorkCoordinator(crash_on_negative, CoordinatorOptions(max_concurrency=1, max_restarts=2))
    try:
        for attempt in range(2):
            with pytest.raises(WorkerCrashError):
                c.submit(-1).result(timeout=WAIT)
            assert not c.is_faulted, attempt
            assert c.submit(attempt).result(timeout=WAIT) is None  # replaced: work goes on
        with pytest.raises(WorkerCrashError):
            c.submit(-1).result(timeout=WAIT)
        assert c.is_faulted
        assert c.stats().worker_restarts == 3
    finally:
        c.close(WAIT)


def test_crashes_older_than_the_window_do_not_count():
    """Crashes leave the count once they are older than restart_window."""
    now = [1000.0]
    with use_schedule_clock(lambda: now[0]):
        c = WorkCoordinator(crash_on_negative, max_concurrency=1, max_restarts=1, restart_window=10)
    try:
        with pytest.raises(WorkerCrashError):
            c.submit(-1).result(timeout=WAIT)
        now[0] += 11  # the first crash has left the window
        with pytest.raises(WorkerCrashError):
            c.submit(-1).result(timeout=WAIT)
        assert not c.is_faulted
        now[0] += 1
        with pytest.raises(WorkerCrashError):
            c.submit(-1).result(timeout=WAIT)
        assert c.is_faulted  # two crashes within 10 s, max_restarts=1
    finally:
        c.close(WAIT)


def test_stopped_key_actors_are_restarted_and_count_toward_max_restarts():
    """A per-key child stopped from outside is restarted with its mailbox, and the
    restart counts as a crashed worker's does: past `max_restarts` within the window
    the coordinator faults (SPEC 14: children are watched too)."""
    c = KeyedWorkCoordinator(lambda item: item, lambda _: None, max_restarts=1)
    try:
        for key in ("a", "b"):
            c.submit(key).result(timeout=WAIT)
        children = c._core.backlog.children
        assert children["a"].actor_ref.stop(timeout=WAIT) is True
        assert not c.is_faulted
        assert c.stats().worker_restarts == 1
        assert c.submit("a").result(timeout=WAIT) is None  # its heir works on
        assert children["b"].actor_ref.stop(timeout=WAIT) is True
        assert c.is_faulted  # two restarts within 60 s, max_restarts=1
        assert c.stats().worker_restarts == 2
        with pytest.raises(CoordinatorFaultedError, match="restarted too often"):
            c.enqueue("c")
    finally:
        c.close(WAIT)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("max_restarts", -1, ValueError),
        ("max_restarts", 1.5, TypeError),
        ("restart_window", 0, ValueError),
        ("restart_window", "60", TypeError),
    ],
)
def test_restart_options_are_validated(field, value, error):
    """Bad supervision options name the field and the value."""
    with pytest.raises(error, match=field):
        CoordinatorOptions(**{field: value})


@pytest.mark.parametrize("call", ["enqueue", "enqueue_many"])
def test_an_interrupt_in_a_turn_the_main_thread_runs_reaches_the_caller(make, monkeypatch, call):
    """Ctrl-C may land in a supervisor turn that `enqueue` runs in the main thread. The
    caller gets its `KeyboardInterrupt` (it used to become a `CoordinatorFaultedError`);
    the supervisor, whose state may be half-updated, dies of it, so the coordinator is
    faulted and later calls say so."""
    c = make(lambda _: None)
    c.pause()

    def interrupted(*_: object) -> NoReturn:
        raise KeyboardInterrupt  # where the signal handler would raise it

    monkeypatch.setattr(_supervisor, "Operation", interrupted)  # the intake turn makes the record
    with pytest.raises(KeyboardInterrupt):
        if call == "enqueue":
            c.enqueue(1)
        else:
            c.enqueue_many([1, 2, 3])
    monkeypatch.undo()
    assert c.is_faulted
    with pytest.raises(CoordinatorFaultedError):
        c.enqueue(2)


def test_an_interrupt_is_raised_only_after_the_mail_behind_it_ran(make):
    """A turn interrupted in the main thread: the mail that came meanwhile still runs
    (a request behind it is answered, not stranded), then the interrupt is raised."""
    from ephemeral_actors._coordinators._requests import Call  # noqa: PLC0415

    c = make(lambda _: None)
    core = c._core
    mailbox = core.mailbox

    def interrupted(_: object) -> None:
        raise KeyboardInterrupt

    behind = Call(lambda: "answered", ())
    # Queued as if posted during a turn in progress, then run as that turn would.
    mailbox._queue.append((interrupted, None))
    mailbox._queue.append((core._on_call, behind))
    with pytest.raises(KeyboardInterrupt):
        mailbox._run()
    assert behind.done
    assert behind.result() == "answered"
    assert c.is_faulted


def test_a_second_interrupt_while_the_supervisor_logs_its_crash_still_leaves_it_faulted(
    make, monkeypatch
):
    """A repeating signal can strike again while the supervisor dies of the first
    interrupt (its log records are written then), here in the intake turn an
    `enqueue` runs. The fault and the torn turn are recorded before anything is
    logged, so the coordinator is faulted all the same and `close()` reconciles its
    counters; the second interrupt is dropped, the first reaches the caller. (Before,
    the second one escaped the crash path first thing, and the coordinator was left
    neither faulted nor known to be torn.)"""
    import logging  # noqa: PLC0415

    c = make(lambda _: None)
    c.pause()
    second = [KeyboardInterrupt("second")]

    class InterruptedOnce(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if second:
                raise second.pop()

    def interrupted(*_: object) -> NoReturn:
        raise KeyboardInterrupt("first")  # where the signal handler would raise it

    handler = InterruptedOnce(level=logging.ERROR)
    logger = logging.getLogger("ephemeral_actors")
    logger.addHandler(handler)
    monkeypatch.setattr(_supervisor, "Operation", interrupted)  # the intake turn makes the record
    try:
        with pytest.raises(KeyboardInterrupt, match="first"):
            c.enqueue(1)
    finally:
        logger.removeHandler(handler)
        monkeypatch.undo()
    assert not second, "the crash path logged nothing"
    assert c.is_faulted
    assert c._core.mailbox.torn
    with pytest.raises(CoordinatorFaultedError):
        c.enqueue(2)


def _interrupted_after_queueing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next intake turn is interrupted after it queued its item, before counting it.

    Where the signal handler would raise it: the record's sequence number is stored
    between the backlog append and the `enqueued` count (`Core.accept_plain`).
    """
    first = [KeyboardInterrupt("first")]
    operation = _supervisor.Operation
    slot = operation._seq  # type: ignore[attr-defined]

    class Interrupted(operation):
        __slots__ = ()

        @property
        def _seq(self) -> int:
            return slot.__get__(self)  # type: ignore[no-any-return]

        @_seq.setter
        def _seq(self, value: int) -> None:
            if value and first:  # 0 is the record's own initial value
                raise first.pop()
            slot.__set__(self, value)

    monkeypatch.setattr(_supervisor, "Operation", Interrupted)


def _settled(c: object) -> bool:
    s = c.stats()  # type: ignore[attr-defined]
    return bool(s.total_enqueued == s.total_completed + s.total_failed + s.total_cancelled)


def test_a_second_interrupt_as_the_crash_path_begins_still_leaves_it_faulted(make, monkeypatch):
    """A repeating signal strikes again at the first call of the crash path, before the
    supervisor recorded anything of the first interrupt. The crash path tries again, so
    the coordinator is faulted all the same; the item the torn turn queued but never
    counted is counted at `close()`, and the first interrupt reaches the caller. (Before,
    the second one escaped: the coordinator ran on, neither faulted nor known to be torn,
    and its item was counted as completed but never as accepted.)"""
    c = make(lambda _: None)
    second = [KeyboardInterrupt("second")]
    interrupts_caller = _supervisor.interrupts_caller

    def interrupted_again(error: BaseException) -> bool:
        if second:
            raise second.pop()
        return interrupts_caller(error)

    _interrupted_after_queueing(monkeypatch)
    monkeypatch.setattr(_supervisor, "interrupts_caller", interrupted_again)
    with pytest.raises(KeyboardInterrupt, match="first"):
        c.enqueue(1)
    monkeypatch.undo()
    assert not second
    assert c.is_faulted
    c.close()
    assert _settled(c)
    assert c.stats().total_enqueued == 1


def test_a_second_interrupt_at_the_crash_path_entry_still_settles_the_counters(make, monkeypatch):
    """The one place a second interrupt still escapes the crash path: the entry of
    `Core._crashed` itself, before its first statement. The turn was marked torn
    before that call, so the coordinator, which is not faulted and runs the queued
    item, still reconciles its counters at `close()` (with a warning), instead of
    counting an item completed that it never counted accepted."""
    c = make(lambda _: None)
    second = [KeyboardInterrupt("second")]
    crashed = _supervisor.Core._crashed

    def interrupted_at_entry(self: _supervisor.Core, error: BaseException) -> None:
        if second:
            raise second.pop()
        crashed(self, error)

    _interrupted_after_queueing(monkeypatch)
    monkeypatch.setattr(_supervisor.Core, "_crashed", interrupted_at_entry)
    with pytest.raises(KeyboardInterrupt, match="second"):
        c.enqueue(1)
    monkeypatch.undo()
    assert c._core.mailbox.torn
    c.close()
    assert _settled(c)
    assert c.stats().total_enqueued == 1


def test_an_item_a_torn_turn_started_without_a_worker_fails_at_close(make, monkeypatch):
    """Ctrl-C in a turn of the main thread after it took a submitted item from the
    backlog and recorded its start, before a worker had it: no worker will ever report
    it. At `close()` its record says failed and its future (held by another thread,
    say) gets the fault, instead of a wait for ever; the counters say failed."""
    from ephemeral_actors._coordinators._workers import ThreadWorker  # noqa: PLC0415

    c = make(lambda _: None, max_concurrency=1)
    c.pause()
    future = c.submit(1)
    post = ThreadWorker.post

    def interrupted(self: ThreadWorker, entry: object) -> None:
        if entry is not None and threading.current_thread() is threading.main_thread():
            monkeypatch.setattr(ThreadWorker, "post", post)
            raise KeyboardInterrupt  # where the signal handler would raise it
        post(self, entry)

    monkeypatch.setattr(ThreadWorker, "post", interrupted)
    with pytest.raises(KeyboardInterrupt):
        c.resume()  # its turn starts the item
    assert c.is_faulted
    assert not future.done()
    c.close()
    with pytest.raises(CoordinatorFaultedError, match="no worker"):
        future.result(timeout=WAIT)
    stats = c.stats()
    assert (stats.total_enqueued, stats.total_completed, stats.total_failed) == (1, 0, 1)
    (record,) = c.get_failed()
    assert record.id == future.operation_id
    assert isinstance(record.error, CoordinatorFaultedError)


def test_a_request_whose_handler_an_interrupt_stops_is_answered_with_the_fault(make):
    """Ctrl-C inside the handler of another thread's request (here the state query
    itself): the supervisor dies of it, and the request, which its handler never got
    to queue for an answer, is answered with the fault instead of being stranded."""
    from ephemeral_actors._coordinators._requests import Call  # noqa: PLC0415

    c = make(lambda _: None)
    core = c._core
    mailbox = core.mailbox

    def interrupted() -> None:
        raise KeyboardInterrupt  # where the signal handler would raise it

    stranded = Call(interrupted, ())
    behind = Call(lambda: "answered", ())
    mailbox._queue.append((core._on_call, stranded))  # as if posted during a turn
    mailbox._queue.append((core._on_call, behind))
    with pytest.raises(KeyboardInterrupt):
        mailbox._run()
    assert stranded.done
    with pytest.raises(CoordinatorFaultedError):
        stranded.result()
    assert behind.done
    assert behind.result() == "answered"
    assert c.is_faulted


def test_replies_an_interrupt_left_unsent_go_out_at_the_next_turns_end(make):
    """An interrupt that stops the loop answering a turn's requests leaves the rest
    listed; the next turn's end answers them (an answer is never sent twice)."""
    from ephemeral_actors._coordinators._requests import Call  # noqa: PLC0415

    c = make(lambda _: None)
    core = c._core
    first, second = Call(lambda: 1, ()), Call(lambda: 2, ())
    for request in (first, second):
        request.value = request.fn()
    interrupts = [KeyboardInterrupt()]
    finish = first._finish

    class Interrupting:
        """A reply whose first answer is interrupted at its start, then goes through."""

        done = False

        def _finish(self) -> None:
            if interrupts:
                raise interrupts.pop()
            finish()
            self.done = True

    interrupting = Interrupting()
    with pytest.raises(KeyboardInterrupt):  # raised at the end of the turn
        core.mailbox.now(core.replies.extend, [interrupting, second])
    assert not second.done, "the loop was stopped before the second answer"
    assert interrupting.done is False
    assert c.stats() is not None  # any later turn
    assert interrupting.done and first.done and second.done
    assert core.replies == []


def test_futures_an_interrupt_left_unresolved_are_resolved_at_the_next_turns_end(make, caplog):
    """An interrupt that stops the loop resolving a turn's futures (those not the
    coordinator's own: asyncio and Pykka futures) leaves the rest listed; the next turn's
    end resolves them. The one being resolved when it struck is tried again, and a
    second try at a future already resolved is not blamed on its caller."""
    c = make(lambda _: None)
    core = c._core

    class Future:
        """A Pykka-style future (`resolve`'s last case); `strike`: interrupted once,
        as it is entered or once set."""

        def __init__(self, strike: str = "") -> None:
            self.strike = strike
            self.values: list[object] = []

        def set(self, value: object) -> None:
            if self.strike == "entered":
                self.strike = ""
                raise KeyboardInterrupt
            if self.values:
                raise queue.Full  # as a Pykka future set twice
            self.values.append(value)
            if self.strike == "set":
                self.strike = ""
                raise KeyboardInterrupt

    for strike in ("entered", "set"):
        first, struck, last = Future(), Future(strike), Future()
        outcomes = [(first, True, 1), (struck, True, 2), (last, True, 3)]
        with pytest.raises(KeyboardInterrupt):  # raised at the end of the turn
            core.mailbox.now(core.outcomes.extend, outcomes)
        assert first.values == [1]
        assert struck.values == ([2] if strike == "set" else [])
        assert last.values == [], "the loop was stopped before the last future"
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ephemeral_actors"):
            assert c.stats() is not None  # any later turn
        assert (first.values, struck.values, last.values) == ([1], [2], [3])
        assert core.outcomes == []
        assert "already resolved" not in caplog.text


def test_a_request_an_interrupt_stops_at_its_handlers_entry_is_still_answered(make, monkeypatch):
    """Ctrl-C in the main thread as it enters the handler of another thread's request
    (mail it runs after its own turn): the request was taken from the mailbox but not
    handled. The supervisor dies of the interrupt, and the request is then handled, so
    its sender gets an answer (here the fault) instead of waiting for ever."""
    c = make(lambda _: None)
    core = c._core
    mailbox = core.mailbox
    receive = mailbox._handle
    raised: list[object] = []

    def interrupted_on_entry(message: object) -> None:
        if not raised and mailbox.holder == threading.main_thread().ident:
            raised.append(message)
            raise KeyboardInterrupt  # where the signal handler would raise it
        receive(message)

    mailbox._handle = interrupted_on_entry
    outcome: list[object] = []
    posted = threading.Event()
    post = Mailbox.post

    def post_and_tell(self: Mailbox, message: object) -> bool:
        ran = post(self, message)
        if self is mailbox and threading.current_thread() is thread:
            posted.set()  # the other thread's request is in the mailbox
        return ran

    monkeypatch.setattr(Mailbox, "post", post_and_tell)

    def other_thread() -> None:
        try:
            outcome.append(c.stats())
        except CoordinatorFaultedError as exc:
            outcome.append(exc)

    def main_thread_turn() -> None:
        thread.start()
        # The other thread finds this turn in progress and posts its request.
        assert posted.wait(WAIT), "the other thread's request was never posted"

    # A daemon: a lost request must fail the test, not hang the run.
    thread = threading.Thread(target=other_thread, daemon=True)
    with pytest.raises(KeyboardInterrupt):
        mailbox.now(main_thread_turn)  # its mail runs as the turn ends
    thread.join(WAIT)
    assert not thread.is_alive(), "the request was lost: its sender still waits"
    assert raised
    assert len(outcome) == 1
    assert c.is_faulted


def test_refused_calls_to_a_faulted_coordinator_keep_nothing_of_their_callers():
    """Each refused call gets an error of its own: raising the one the core keeps
    would prepend each caller's frames to its traceback, so it would grow with every
    call and keep the items those frames hold (records keep no payload)."""

    class Payload:
        pass

    c = WorkCoordinator(crash_on_negative, max_concurrency=1, max_restarts=0)
    try:
        with pytest.raises(WorkerCrashError):
            c.submit(-1).result(timeout=WAIT)
        assert c.is_faulted
        lengths = []
        for _ in range(20):
            item = Payload()
            kept = weakref.ref(item)
            with pytest.raises(CoordinatorFaultedError, match="faulted") as raised:
                c.enqueue(item)  # type: ignore[arg-type]
            assert raised.value is not c._core.fault_error
            lengths.append(traceback_length(raised.value))
            del item, raised  # the error we were given holds our frame, and the item
            gc.collect()  # that error and the frames that raised it make a small cycle
            assert kept() is None  # the error the core keeps holds none of them
        for _ in range(3):
            with pytest.raises(CoordinatorFaultedError) as raised:
                c.wait_idle(WAIT)
            assert raised.value is not c._core.fault_error
            lengths.append(traceback_length(raised.value))
        assert len(set(lengths[:20])) == 1, lengths
        assert len(set(lengths[20:])) == 1, lengths
    finally:
        c.close(WAIT)
