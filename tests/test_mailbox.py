"""The actor runtime's mailbox: turns, the begin/finish fast path, and their order."""

from __future__ import annotations

import threading

import pytest

from ephemeral_actors._mailbox import BUSY, Mailbox
from tests.conftest import WAIT


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


def test_begin_never_overtakes_mail_already_queued():
    """A sender between its append and its flag check: the fast path must go behind it."""
    handled: list[str] = []
    box = Mailbox(Owner(), handled.append, lambda: None)
    box._queue.append("earlier")  # appended; its sender has not tried the flag yet
    assert box.begin() is BUSY
    box.post("later")
    assert handled == ["earlier", "later"]


def test_begin_and_finish_make_a_turn_and_run_what_arrived_meanwhile():
    """Between begin and finish this thread owns the actor; mail sent meanwhile by another
    thread waits for the turn and is handled by finish, in order, before the flag is free."""
    owner = Owner()
    handled: list[str] = []
    ends: list[int] = []
    box = Mailbox(owner, handled.append, lambda: ends.append(len(handled)))
    token = box.begin()
    assert token is not BUSY
    assert box.in_turn()
    posted = threading.Event()

    def other() -> None:
        assert box.post("from another thread") is False  # the turn is taken: it only queues
        posted.set()

    thread = threading.Thread(target=other)
    thread.start()
    assert posted.wait(WAIT)
    thread.join(WAIT)
    assert handled == []
    box.finish(token)
    assert handled == ["from another thread"]
    assert ends == [0, 1]  # the begun turn ended, then the turn that ran the queued mail
    assert not box.in_turn()
    again = box.begin()  # the flag is free again
    assert again is not BUSY
    box.finish(again)
    assert not box.in_turn()


def test_now_runs_the_handler_in_a_turn_and_answers_with_its_value():
    owner = Owner()
    ends: list[bool] = []
    box = Mailbox(owner, lambda m: None, lambda: ends.append(box.in_turn()))
    assert box.now(lambda a, b: (a, b, box.in_turn()), 1, 2) == (1, 2, True)
    assert ends == [True]  # the turn ended inside the turn, as every turn does
    assert not box.in_turn()
    assert box.processed == 1


def test_now_is_busy_while_another_thread_runs_a_turn_or_mail_waits():
    handled: list[str] = []
    box = Mailbox(Owner(), handled.append, lambda: None)
    token = box.begin()
    answer: list[object] = []
    thread = threading.Thread(target=lambda: answer.append(box.now(lambda: "ran")))
    thread.start()
    thread.join(WAIT)
    assert answer == [BUSY]
    box.finish(token)
    box._queue.append("earlier")  # a sender between its append and its flag check
    assert box.now(lambda: "ran") is BUSY
    box.post("later")
    assert handled == ["earlier", "later"]


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
