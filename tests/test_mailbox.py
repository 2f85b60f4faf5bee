"""The actor runtime's mailbox: turns, the `now` fast path, and their order."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest

from ephemeral_actors._mailbox import BUSY, THROUGHPUT, Mailbox
from tests.conftest import WAIT

if TYPE_CHECKING:
    from collections.abc import Callable


class Owner:
    """Stands for an actor: the mailbox only uses it to mark whose turn runs."""


def test_post_runs_the_turn_in_the_caller_when_idle():
    owner = Owner()
    seen: list[tuple[str, bool]] = []
    ends: list[int] = []
    box = Mailbox(owner, lambda m: seen.append((m, box.in_turn())), lambda: ends.append(1))
    assert box.post("a") is True
    assert seen == [("a", True)]
    assert ends == [1]
    assert not box.in_turn()


def test_now_never_overtakes_mail_already_queued():
    """A sender between its append and its flag check: the fast path must go behind it."""
    handled: list[str] = []
    box = Mailbox(Owner(), handled.append, lambda: None)
    box._queue.append("earlier")  # appended; its sender has not tried the flag yet
    assert box.now(lambda: handled.append("now")) is BUSY
    box.post("later")  # what a caller told BUSY does
    assert handled == ["earlier", "later"]


def _hold_a_turn(box: Mailbox) -> tuple[threading.Event, threading.Thread]:
    """Run a turn of `box` on another thread until the returned event is set."""
    inside = threading.Event()
    release = threading.Event()

    def held() -> None:
        inside.set()
        assert release.wait(WAIT)

    thread = threading.Thread(target=box.now, args=(held,))
    thread.start()
    assert inside.wait(WAIT)
    return release, thread


def test_mail_sent_during_a_turn_waits_for_it_and_runs_before_the_flag_is_free():
    """While one thread is in the actor's turn, another thread's mail only queues; the
    thread in the turn handles it, in order, before the flag is free again."""
    handled: list[str] = []
    ends: list[int] = []
    box = Mailbox(Owner(), handled.append, lambda: ends.append(len(handled)))
    release, thread = _hold_a_turn(box)
    assert box.post("first") is False  # the turn is taken: it only queues
    assert box.post("second") is False
    assert handled == []
    release.set()
    thread.join(WAIT)
    assert handled == ["first", "second"]
    assert ends == [0, 2]  # the held turn ended, then the turn that ran the queued mail
    assert not box.in_turn()
    assert box.now(lambda: "free again") == "free again"


def test_now_runs_the_handler_in_a_turn_and_answers_with_its_value():
    owner = Owner()
    ends: list[bool] = []
    box = Mailbox(owner, lambda m: None, lambda: ends.append(box.in_turn()))
    assert box.now(lambda a, b: (a, b, box.in_turn()), 1, 2) == (1, 2, True)
    assert ends == [True]  # the turn ended inside the turn, as every turn does
    assert not box.in_turn()
    assert box.processed == 1


def test_now_is_busy_while_another_thread_runs_a_turn():
    box = Mailbox(Owner(), lambda m: None, lambda: None)
    release, thread = _hold_a_turn(box)
    assert box.now(lambda: "ran") is BUSY
    release.set()
    thread.join(WAIT)
    assert box.now(lambda: "ran") == "ran"


def test_now_runs_mail_that_arrived_during_its_turn():
    handled: list[str] = []
    box = Mailbox(Owner(), handled.append, lambda: None)

    def handler() -> str:
        posted = threading.Event()
        thread = threading.Thread(target=lambda: (box.post("meanwhile"), posted.set()))
        thread.start()
        assert posted.wait(WAIT)
        thread.join(WAIT)
        assert handled == []  # the turn is this thread's: the mail waits for it
        return "done"

    assert box.now(handler) == "done"
    assert handled == ["meanwhile"]


def test_now_passes_a_handler_crash_to_crashed_or_to_the_caller():
    crashes: list[BaseException] = []
    ends: list[int] = []
    box = Mailbox(Owner(), lambda m: None, lambda: ends.append(1), crashed=crashes.append)
    boom = RuntimeError("boom")

    def fail() -> None:
        raise boom

    assert box.now(fail) is None
    assert crashes == [boom]
    assert ends == [1]
    assert not box.in_turn()
    plain = Mailbox(Owner(), lambda m: None, lambda: None)
    with pytest.raises(RuntimeError) as raised:
        plain.now(fail)
    assert raised.value is boom
    assert plain.now(lambda: "free again") == "free again"  # the flag was released


def test_turns_never_overlap_and_no_message_is_lost_when_many_threads_post() -> None:
    """The flag is a test-and-set: of threads racing for it, exactly one runs the turn."""
    import sys  # noqa: PLC0415
    import time  # noqa: PLC0415

    inside = [0]
    overlaps: list[int] = []
    handled: list[int] = []

    def handle(message: int) -> None:
        inside[0] += 1
        if inside[0] != 1:
            overlaps.append(message)
        if message % 97 == 0:
            time.sleep(0)  # let other threads in mid-turn
        handled.append(message)
        inside[0] -= 1

    box = Mailbox(Owner(), handle, lambda: None)
    start = threading.Barrier(8)

    def sender(base: int) -> None:
        start.wait(WAIT)
        for i in range(2_000):
            box.post(base + i)
            if i % 50 == 0:
                box.now(lambda: None)  # the written-out turn races for the flag too

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=sender, args=(n * 10_000,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
    finally:
        sys.setswitchinterval(interval)
    assert not box._queue  # the last turn ran whatever was posted while it ended
    assert overlaps == []
    assert sorted(handled) == sorted(n * 10_000 + i for n in range(8) for i in range(2_000))
    assert not box.in_turn()


def test_an_interrupt_at_a_handlers_entry_is_the_owners_crash_and_the_message_is_still_handled():
    """What escapes `handle` (which never raises) is an interrupt that struck as the
    handler was entered: the message was taken but not handled. It goes to `crashed`,
    the turn ends, the flag is free, and the message is handled after the crash, before
    the mail behind it (a request from another thread is answered, not stranded).
    Without `crashed` the interrupt propagates, once that mail has run. (Until 0.2 the
    message was lost: its sender waited for ever.)"""

    def handler(handled: list[str]) -> Callable[[str], None]:
        interrupts = ["interrupted"]  # as a real interrupt: once

        def handle(message: str) -> None:
            if message in interrupts:
                interrupts.remove(message)
                raise KeyboardInterrupt
            handled.append(message)

        return handle

    crashes: list[BaseException] = []
    handled: list[str] = []
    box = Mailbox(Owner(), handler(handled), lambda: None, crashed=crashes.append)
    box._queue.extend(["before", "interrupted", "after"])  # as if posted during a turn
    assert box._run() is True
    assert handled == ["before", "interrupted", "after"]
    assert [type(c) for c in crashes] == [KeyboardInterrupt]
    assert box.now(lambda: "free") == "free"
    assert box._requeued is None  # nothing of a handled message is kept

    plain_handled: list[str] = []
    plain = Mailbox(Owner(), handler(plain_handled), lambda: None)
    plain._queue.extend(["before", "interrupted", "after"])
    with pytest.raises(KeyboardInterrupt):
        plain._run()
    assert plain_handled == ["before", "interrupted", "after"]
    assert plain.now(lambda: "free") == "free"


def test_a_message_whose_handler_raises_twice_is_dropped_not_retried_for_ever():
    """A handler that breaks the contract and raises on every try: its message is
    handled again once, then dropped, and the mail behind it runs."""

    def handle(message: str) -> None:
        if message == "poison":
            raise KeyboardInterrupt
        handled.append(message)

    crashes: list[BaseException] = []
    handled: list[str] = []
    box = Mailbox(Owner(), handle, lambda: None, crashed=crashes.append)
    box._queue.extend(["before", "poison", "after"])
    assert box._run() is True
    assert handled == ["before", "after"]
    assert [type(c) for c in crashes] == [KeyboardInterrupt, KeyboardInterrupt]
    assert box._requeued is None

    handled.clear()
    plain = Mailbox(Owner(), handle, lambda: None)
    plain._queue.extend(["before", "poison", "after"])
    with pytest.raises(KeyboardInterrupt):
        plain._run()
    assert handled == ["before", "after"]
    assert plain.now(lambda: "free") == "free"


def test_a_turn_past_its_bound_hands_the_rest_off_from_inside_the_turn():
    """After THROUGHPUT messages with mail left, the hand-off is arranged in the turn (the
    owner may write its state there), the caller is let go, and the continuation runs
    the rest in order."""
    handled: list[int] = []
    handoffs: list[tuple[bool, Callable[[], object]]] = []
    extra = THROUGHPUT + 40

    def handle(message: int) -> None:
        if message == -1:
            for item in range(extra):
                box.post(item)  # queued behind this turn
            return
        handled.append(message)

    box = Mailbox(
        Owner(), handle, lambda: None, handoff=lambda run: handoffs.append((box.in_turn(), run))
    )
    box.post(-1)
    assert [in_turn for in_turn, _ in handoffs] == [True]
    assert handled == list(range(THROUGHPUT - 1))  # the first message was the -1
    assert len(box) == extra - (THROUGHPUT - 1)
    handoffs[0][1]()
    assert handled == list(range(extra))
    assert len(box) == 0


def test_a_hand_off_that_looks_while_the_turn_still_holds_the_flag_leaves_the_mail_to_it():
    """The dispatcher may look before the bounded turn has given the flag back: it finds
    the flag taken, and the thread of that turn runs the mail instead of stranding it.
    (Guards the race; the hand-off of the base ran only after the turn.)"""
    handled: list[int] = []

    def handle(message: int) -> None:
        if message == -1:
            for item in range(THROUGHPUT + 40):
                box.post(item)
            return
        handled.append(message)

    def early(run: Callable[[], object]) -> None:
        looker = threading.Thread(target=run)
        looker.start()
        looker.join(WAIT)

    box = Mailbox(Owner(), handle, lambda: None, handoff=early)
    box.post(-1)
    assert handled == list(range(THROUGHPUT + 40))
    assert len(box) == 0
